package backup

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"github.com/klauspost/compress/zstd"
	"gocloud.dev/blob"

	"github.com/replicant-dev/replicant/sidecar"
)

// Compression is how backups are stored: zstd compresses a database's files about as
// well as gzip at several times its speed on every core, and decompresses faster than
// a restore can write, so neither a backup nor a restore waits on it.
const Compression = "zstd"

// TakeOptions says where a backup comes from.
type TakeOptions struct {
	Namespace, StatefulSet string
	// Sources are sidecars tried in order, the first that answers is streamed: the
	// healthy replicas' Service first, the master's last.
	Sources        []string
	User, Password string
	Flavor         string
	// IdleTimeout gives up a donor that sends nothing for that long (default 5m).
	IdleTimeout time.Duration
	// ProbeTimeout bounds "does this source answer" (default 3s).
	ProbeTimeout time.Duration
	// BusyWait is how long a donor busy with another stream (a clone) is waited for
	// (default 10m).
	BusyWait time.Duration
	// ProgressEvery is how often progress is logged (default 10s).
	ProgressEvery time.Duration
	Now           func() time.Time
	Log           logr.Logger
}

func (o *TakeOptions) defaults() {
	if o.IdleTimeout == 0 {
		o.IdleTimeout = 5 * time.Minute
	}
	if o.ProbeTimeout == 0 {
		o.ProbeTimeout = 3 * time.Second
	}
	if o.BusyWait == 0 {
		o.BusyWait = 10 * time.Minute
	}
	if o.ProgressEvery == 0 {
		o.ProgressEvery = 10 * time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Flavor == "" {
		o.Flavor = "mariadb"
	}
}

// StepError says which step of a backup failed.
type StepError struct {
	Step string // "source", "stream", "upload", "commit"
	Err  error
}

func (e *StepError) Error() string { return e.Step + ": " + e.Err.Error() }
func (e *StepError) Unwrap() error { return e.Err }

// Take streams a backup from the first source that answers, compresses and uploads
// it, and commits it by writing its manifest last. A failure at any step leaves no
// manifest, so nothing half-written is ever listed or restored; what was uploaded is
// removed on a best-effort basis (Prune removes what is left).
func (c *Cluster) Take(ctx context.Context, opts TakeOptions) (Manifest, error) {
	opts.defaults()
	log := opts.Log
	source := ""
	for i, s := range opts.Sources {
		if sidecar.Answers(ctx, s, opts.ProbeTimeout) {
			source = s
			if i > 0 {
				log.Info("the earlier sources do not answer: backing up from this one", "source", s, "skipped", opts.Sources[:i])
			}
			break
		}
	}
	if source == "" {
		return Manifest{}, &StepError{"source", fmt.Errorf("no source answers (tried %v)", opts.Sources)}
	}
	start := opts.Now().UTC()
	m := Manifest{Name: start.Format(nameLayout), Namespace: opts.Namespace, StatefulSet: opts.StatefulSet,
		Source: source, Flavor: opts.Flavor, Compression: Compression, Start: start}
	log = log.WithValues("backup", c.where.Child(m.Name).String(), "source", source)
	log.Info("backup started")

	stream, err := sidecar.RequestBackup(ctx, source, opts.User, opts.Password, opts.IdleTimeout)
	for waited := time.Duration(0); errors.Is(err, sidecar.ErrDonorBusy) && waited < opts.BusyWait; waited += 2 * time.Second {
		if waited == 0 {
			log.Info("the source is streaming another backup: waiting for it", "atMost", opts.BusyWait)
		}
		select {
		case <-ctx.Done():
			return Manifest{}, &StepError{"stream", ctx.Err()}
		case <-time.After(2 * time.Second):
		}
		stream, err = sidecar.RequestBackup(ctx, source, opts.User, opts.Password, opts.IdleTimeout)
	}
	if err != nil {
		return Manifest{}, &StepError{"stream", err}
	}
	defer stream.Close()

	m.Format = stream.Format()
	dataKey := m.Name + "/" + m.DataObject()
	uploadCtx, cancelUpload := context.WithCancel(ctx)
	defer cancelUpload()
	w, err := c.bucket.NewWriter(uploadCtx, dataKey, &blob.WriterOptions{ContentType: "application/zstd"})
	if err != nil {
		return Manifest{}, &StepError{"upload", fmt.Errorf("%s: %s", c.where.Child(dataKey), cleanError(err))}
	}
	stored := &hashCounter{w: w, h: sha256.New()}
	enc, err := zstd.NewWriter(stored, zstd.WithEncoderLevel(zstd.SpeedDefault))
	if err != nil {
		return Manifest{}, &StepError{"upload", err}
	}
	stop := progress(log, opts.ProgressEvery, stream.Bytes, stored.n.Load)
	_, copyErr := io.CopyBuffer(enc, stream, make([]byte, 1<<20))
	stop()
	abort := func(step string, err error) (Manifest, error) {
		enc.Close()
		cancelUpload() // an aborted write stores nothing
		w.Close()
		c.bucket.Delete(context.WithoutCancel(ctx), dataKey)
		return Manifest{}, &StepError{step, err}
	}
	if copyErr != nil {
		return abort("stream", fmt.Errorf("after %d bytes: %w", stream.Bytes(), copyErr))
	}
	info, err := stream.Finish()
	if err != nil {
		return abort("stream", err)
	}
	if err := enc.Close(); err != nil {
		return abort("upload", fmt.Errorf("%s: %s", c.where.Child(dataKey), cleanError(err)))
	}
	if err := w.Close(); err != nil {
		return abort("upload", fmt.Errorf("%s: %s", c.where.Child(dataKey), cleanError(err)))
	}
	m.GTID, m.ServerVersion = info.GTID, info.ServerVersion
	m.StreamBytes, m.StoredBytes, m.SHA256 = stream.Bytes(), stored.n.Load(), sha256Hex(stored.h.Sum(nil))
	m.End = opts.Now().UTC()
	data, _ := json.MarshalIndent(m, "", "  ")
	if err := c.bucket.WriteAll(ctx, m.Name+"/"+ManifestObject, data, &blob.WriterOptions{ContentType: "application/json"}); err != nil {
		c.bucket.Delete(context.WithoutCancel(ctx), dataKey)
		return Manifest{}, &StepError{"commit", fmt.Errorf("%s: %s", c.where.Child(m.Name, ManifestObject), cleanError(err))}
	}
	log.Info("backup committed", "gtid", m.GTID, "streamBytes", m.StreamBytes, "storedBytes", m.StoredBytes,
		"seconds", m.End.Sub(m.Start).Seconds())
	return m, nil
}

// hashCounter passes writes through, hashing and counting them.
type hashCounter struct {
	w io.Writer
	h hash.Hash
	n atomic.Int64
}

func (h *hashCounter) Write(p []byte) (int, error) {
	n, err := h.w.Write(p)
	h.h.Write(p[:n])
	h.n.Add(int64(n))
	return n, err
}

// progress logs bytes read and stored every so often until stopped.
func progress(log logr.Logger, every time.Duration, read, stored func() int64) (stop func()) {
	done := make(chan struct{})
	start := time.Now()
	go func() {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				n := read()
				log.Info("backing up", "bytes", n, "stored", stored(),
					"MiB/s", fmt.Sprintf("%.1f", float64(n)/(1<<20)/time.Since(start).Seconds()))
			}
		}
	}()
	return func() { close(done) }
}

// OpenStream returns the decompressed data of a committed backup (its Format). finished, once
// the stream has been read to its end, verifies the stored object's size and checksum
// against the manifest: a restore uses the data only when it returns nil.
func (c *Cluster) OpenStream(ctx context.Context, m Manifest) (io.ReadCloser, func() error, error) {
	key := m.Name + "/" + m.DataObject()
	r, err := c.bucket.NewReader(ctx, key, nil)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %s", c.where.Child(key), cleanError(err))
	}
	sum := &hashCounter{w: io.Discard, h: sha256.New()}
	dec, err := zstd.NewReader(io.TeeReader(r, sum))
	if err != nil {
		r.Close()
		return nil, nil, err
	}
	finished := func() error {
		// The decoder may stop before the object's last bytes: count them too.
		if _, err := io.Copy(sum, r); err != nil {
			return fmt.Errorf("%s: %s", c.where.Child(key), cleanError(err))
		}
		if got := sha256Hex(sum.h.Sum(nil)); sum.n.Load() != m.StoredBytes || got != m.SHA256 {
			return fmt.Errorf("%s is not what was backed up: %d bytes with SHA-256 %s, the manifest says %d bytes with %s",
				c.where.Child(key), sum.n.Load(), got, m.StoredBytes, m.SHA256)
		}
		return nil
	}
	return &decodingReader{dec: dec, obj: r, verify: finished}, finished, nil
}

type decodingReader struct {
	dec    *zstd.Decoder
	obj    *blob.Reader
	verify func() error
}

// Read decodes; when decoding fails, a checksum that does not match is the better
// reason to give.
func (d *decodingReader) Read(p []byte) (int, error) {
	n, err := d.dec.Read(p)
	if err != nil && err != io.EOF {
		if verr := d.verify(); verr != nil {
			err = verr
		}
	}
	return n, err
}
func (d *decodingReader) Close() error {
	d.dec.Close()
	return d.obj.Close()
}

// Restorer opens the backup an init-uri names (<backups directory>/<name>, or
// <backups directory>/latest) for a restore: the sidecar's clone step installs it
// like a clone, all or nothing, and uses it only once its checksum matched.
func Restorer(initURI, flavor string, log logr.Logger) sidecar.OpenBackupFunc {
	return func(ctx context.Context) (io.ReadCloser, func() error, error) {
		loc, err := ParseURI(initURI)
		if err != nil {
			return nil, nil, err
		}
		dir, name := loc.Parent()
		c, err := Open(ctx, dir)
		if err != nil {
			return nil, nil, err
		}
		m, err := c.Find(ctx, name)
		if err == nil {
			err = m.restorableAs(flavor)
		}
		if err != nil {
			c.Close()
			return nil, nil, err
		}
		log.Info("restoring", "backup", c.where.Child(m.Name).String(), "gtid", m.GTID, "serverVersion", m.ServerVersion, "storedBytes", m.StoredBytes)
		stream, finished, err := c.OpenStream(ctx, m)
		if err != nil {
			c.Close()
			return nil, nil, err
		}
		return &closeBoth{ReadCloser: stream, also: c}, finished, nil
	}
}

// restorableAs refuses a backup of another flavor: neither server reads the other's
// files.
func (m Manifest) restorableAs(flavor string) error {
	if flavor == "" {
		flavor = "mariadb"
	}
	if backupFlavor := cmp.Or(m.Flavor, "mariadb"); backupFlavor != flavor {
		return fmt.Errorf("backup %s was taken of a %s server (%s); this StatefulSet runs %s, which cannot use it: name a backup of a %s cluster",
			m.Name, backupFlavor, m.ServerVersion, flavor, flavor)
	}
	return nil
}

type closeBoth struct {
	io.ReadCloser
	also io.Closer
}

func (c *closeBoth) Close() error {
	err := c.ReadCloser.Close()
	c.also.Close()
	return err
}

// PointInTimeRestorer restores to restoreTo (replicant.dev/restore-to): initURI names
// the cluster's backups directory (a trailing /latest is dropped) or one backup to
// start from. The plan (which backup, which binlogs) is made before anything is
// downloaded, so a gap in the archive fails at once, naming it.
func PointInTimeRestorer(initURI, restoreTo string, opts ReplayOptions) (sidecar.OpenBackupFunc, sidecar.ReplayFunc) {
	var plan struct {
		c      *Cluster
		base   Manifest
		steps  []ReplayStep
		target RestoreTarget
	}
	open := func(ctx context.Context) (io.ReadCloser, func() error, error) {
		target, err := ParseRestoreTarget(restoreTo)
		if err != nil {
			return nil, nil, fmt.Errorf("replicant.dev/restore-to: %w", err)
		}
		loc, err := ParseURI(initURI)
		if err != nil {
			return nil, nil, err
		}
		dir, name := loc.Parent()
		c, err := Open(ctx, dir)
		if err != nil {
			return nil, nil, err
		}
		var base Manifest
		if name != Latest {
			base, err = c.Find(ctx, name)
		}
		if name == Latest || errors.Is(err, ErrNoBackup) { // the URI is the directory
			if name != Latest {
				c.Close()
				if c, err = Open(ctx, loc); err != nil {
					return nil, nil, err
				}
			}
			base, plan.steps, err = c.PlanRestore(ctx, target)
		} else if err == nil {
			plan.steps, err = c.PlanReplayFrom(ctx, base, target)
		}
		if err == nil {
			err = base.restorableAs(opts.Flavor)
		}
		if err != nil {
			c.Close()
			return nil, nil, err
		}
		plan.c, plan.base, plan.target = c, base, target
		opts.Log.Info("restoring to a point in time", "backup", c.where.Child(base.Name).String(), "gtid", base.GTID,
			"target", target.String(), "binlogs", len(plan.steps))
		stream, finished, err := c.OpenStream(ctx, base)
		if err != nil {
			c.Close()
			return nil, nil, err
		}
		return &closeBoth{ReadCloser: stream, also: noClose{}}, finished, nil
	}
	replay := func(ctx context.Context, datadir string) (string, error) {
		if plan.c == nil {
			return "", errors.New("no restore plan: the backup was not opened")
		}
		defer plan.c.Close()
		pos, err := plan.c.Replay(ctx, datadir, plan.base, plan.steps, plan.target, opts)
		if err != nil {
			return "", err
		}
		return pos.String(), nil
	}
	return open, replay
}

type noClose struct{}

func (noClose) Close() error { return nil }
