package backup

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/go-logr/logr"
	"github.com/klauspost/compress/zstd"
	"gocloud.dev/blob"
	"gocloud.dev/gcerrors"

	"github.com/replicant-dev/replicant/mysql"
	"github.com/replicant-dev/replicant/sidecar"
)

// BinlogsDir holds the archived binlogs, beside the backups' directories:
// binlogs/<server_id>-<created>-<file>.zst, committed by its .json record written
// after it. Files of every master the cluster had are kept side by side; their
// records say which stretch of history each holds.
const BinlogsDir = "binlogs"

// ArchivedBinlog is the record of one archived binlog file.
type ArchivedBinlog struct {
	// Key names the objects, without extension: binlogs/<server>-<created>-<file>.
	Key    string `json:"key"`
	Name   string `json:"name"`
	Source string `json:"source"`
	mysql.BinlogSummary
	Size        int64     `json:"size"`
	StoredBytes int64     `json:"storedBytes"`
	SHA256      string    `json:"sha256"`
	Archived    time.Time `json:"archived"`
}

func binlogKey(s mysql.BinlogSummary, name string) string {
	return fmt.Sprintf("%s/%d-%s-%s", BinlogsDir, s.ServerID, s.Created.UTC().Format(nameLayout), name)
}

// Binlogs returns the records of the committed archived binlogs, oldest first (by
// their last transaction).
func (c *Cluster) Binlogs(ctx context.Context) ([]ArchivedBinlog, error) {
	var out []ArchivedBinlog
	it := c.bucket.List(&blob.ListOptions{Prefix: BinlogsDir + "/"})
	for {
		obj, err := it.Next(ctx)
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("list %s: %s", c.where.Child(BinlogsDir), cleanError(err))
		}
		if !strings.HasSuffix(obj.Key, ".json") || obj.Key == ReachObject {
			continue
		}
		data, err := c.bucket.ReadAll(ctx, obj.Key)
		if err != nil {
			return nil, fmt.Errorf("read %s: %s", c.where.Child(obj.Key), cleanError(err))
		}
		var rec ArchivedBinlog
		if err := json.Unmarshal(data, &rec); err != nil {
			return nil, fmt.Errorf("%s is not readable: %w", c.where.Child(obj.Key), err)
		}
		out = append(out, rec)
	}
	sort.SliceStable(out, func(i, j int) bool {
		if !out[i].LastTime.Equal(out[j].LastTime) {
			return out[i].LastTime.Before(out[j].LastTime)
		}
		return out[i].Key < out[j].Key
	})
	return out, nil
}

// ReachObject records, after an archiving run that left nothing behind (the master's
// open binlog held no transaction), that the archive held every transaction written
// before Time: a restore to a time before it needs no newer binlog.
const ReachObject = BinlogsDir + "/reach.json"

// ArchiveReach is the content of ReachObject.
type ArchiveReach struct {
	Time     time.Time     `json:"time"`
	Position mysql.GTIDSet `json:"position"`
}

// ArchiveOptions says where binlogs are archived from.
type ArchiveOptions struct {
	// Source is the master's sidecar (http://<sts>-master.<ns>.svc:8080).
	Source         string
	User, Password string
	// Flush closes the master's open binlog first when it holds transactions, so the
	// archive is at most one archiving interval behind.
	Flush bool
	Log   logr.Logger
}

// ArchiveResult is what one archiving run did.
type ArchiveResult struct {
	Uploaded []ArchivedBinlog
	// Skipped counts closed files already archived (or whose transactions are).
	Skipped int
	// Newest is the time of the newest archived transaction, the archive's reach.
	Newest time.Time
}

// Archive uploads the master's closed binlog files that the archive lacks, each
// compressed, checked against its size, and committed by its record. A file whose
// every transaction is already archived (a new master's files from when it
// replicated) is skipped.
func (c *Cluster) Archive(ctx context.Context, opts ArchiveOptions) (ArchiveResult, error) {
	var res ArchiveResult
	// Whole seconds, as binlogs time transactions, and one back: a transaction
	// stamped in the second the listing was asked is not claimed.
	asked := time.Now().UTC().Truncate(time.Second).Add(-time.Second)
	listing, err := sidecar.ListBinlogs(ctx, opts.Source, opts.User, opts.Password, opts.Flush)
	if err != nil {
		return res, &StepError{"source", err}
	}
	archived, err := c.Binlogs(ctx)
	if err != nil {
		return res, &StepError{"list", err}
	}
	have := map[string]bool{}
	covered := mysql.GTIDSet{}
	for _, a := range archived {
		have[a.Key] = true
		covered = covered.Union(a.End)
		if a.LastTime.After(res.Newest) {
			res.Newest = a.LastTime
		}
	}
	for _, f := range listing.Files {
		if !f.Summary.Closed {
			continue
		}
		key := binlogKey(f.Summary, f.Name)
		if have[key] || f.Summary.Transactions == 0 || covered.Contains(f.Summary.End) {
			res.Skipped++
			continue
		}
		rec, err := c.archiveOne(ctx, opts, f, key)
		if err != nil {
			return res, err
		}
		opts.Log.Info("binlog archived", "file", f.Name, "server", f.Summary.ServerID, "from", f.Summary.Start.String(),
			"to", f.Summary.End.String(), "transactions", f.Summary.Transactions, "bytes", f.Size, "stored", rec.StoredBytes)
		res.Uploaded = append(res.Uploaded, rec)
		covered = covered.Union(f.Summary.End)
		if f.Summary.LastTime.After(res.Newest) {
			res.Newest = f.Summary.LastTime
		}
	}
	if n := len(listing.Files); n > 0 && !listing.Files[n-1].Summary.Closed && listing.Files[n-1].Summary.Transactions == 0 {
		reach := ArchiveReach{Time: asked, Position: listing.Files[n-1].Summary.Start}
		data, _ := json.Marshal(reach)
		if err := c.bucket.WriteAll(ctx, ReachObject, data, &blob.WriterOptions{ContentType: "application/json"}); err != nil {
			return res, &StepError{"commit", fmt.Errorf("%s: %s", c.where.Child(ReachObject), cleanError(err))}
		}
		if asked.After(res.Newest) {
			res.Newest = asked
		}
	}
	return res, nil
}

// ArchiveStatus is what the binlog archive holds, for people: how many files, and
// the time up to which it holds every transaction (zero when it holds nothing).
type ArchiveStatus struct {
	Files int
	Reach time.Time
}

// ArchiveStatus reads the archive's records.
func (c *Cluster) ArchiveStatus(ctx context.Context) (ArchiveStatus, error) {
	var st ArchiveStatus
	binlogs, err := c.Binlogs(ctx)
	if err != nil {
		return st, err
	}
	st.Files = len(binlogs)
	for _, b := range binlogs {
		if b.LastTime.After(st.Reach) {
			st.Reach = b.LastTime
		}
	}
	r, err := c.reach(ctx)
	if err != nil {
		return st, err
	}
	if r != nil && r.Time.After(st.Reach) {
		st.Reach = r.Time
	}
	return st, nil
}

// reach reads ReachObject (nil when there is none).
func (c *Cluster) reach(ctx context.Context) (*ArchiveReach, error) {
	data, err := c.bucket.ReadAll(ctx, ReachObject)
	if gcerrors.Code(err) == gcerrors.NotFound {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %s", c.where.Child(ReachObject), cleanError(err))
	}
	var r ArchiveReach
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("%s is not readable: %w", c.where.Child(ReachObject), err)
	}
	return &r, nil
}

func (c *Cluster) archiveOne(ctx context.Context, opts ArchiveOptions, f sidecar.ListedBinlog, key string) (ArchivedBinlog, error) {
	rec := ArchivedBinlog{Key: key, Name: f.Name, Source: opts.Source, BinlogSummary: f.Summary, Size: f.Size}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // an early return aborts the upload: nothing is committed
	in, err := sidecar.OpenBinlog(ctx, opts.Source, opts.User, opts.Password, f.Name)
	if err != nil {
		return rec, &StepError{"stream", err}
	}
	defer in.Close()
	w, err := c.bucket.NewWriter(ctx, key+".zst", &blob.WriterOptions{ContentType: "application/zstd"})
	if err != nil {
		return rec, &StepError{"upload", fmt.Errorf("%s: %s", c.where.Child(key+".zst"), cleanError(err))}
	}
	stored := &countingWriter{w: w}
	sum := sha256.New()
	zw, err := zstd.NewWriter(io.MultiWriter(stored, sum))
	if err != nil {
		return rec, &StepError{"upload", err}
	}
	n, err := io.Copy(zw, in)
	if err == nil && n != f.Size {
		err = fmt.Errorf("%s: got %d bytes of %d", f.Name, n, f.Size)
	}
	if err != nil {
		return rec, &StepError{"stream", err}
	}
	if err := zw.Close(); err != nil {
		return rec, &StepError{"upload", err}
	}
	if err := w.Close(); err != nil {
		return rec, &StepError{"upload", fmt.Errorf("%s: %s", c.where.Child(key+".zst"), cleanError(err))}
	}
	rec.StoredBytes, rec.SHA256, rec.Archived = stored.n, sha256Hex(sum.Sum(nil)), time.Now().UTC()
	data, _ := json.MarshalIndent(rec, "", "  ")
	if err := c.bucket.WriteAll(ctx, key+".json", data, &blob.WriterOptions{ContentType: "application/json"}); err != nil {
		return rec, &StepError{"commit", fmt.Errorf("%s: %s", c.where.Child(key+".json"), cleanError(err))}
	}
	return rec, nil
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// OpenBinlog reads one archived binlog back, decompressed; Close reports a checksum
// or size mismatch (a damaged object is never replayed silently: read to the end,
// then Close, before using what was read).
func (c *Cluster) OpenBinlog(ctx context.Context, rec ArchivedBinlog) (io.ReadCloser, error) {
	r, err := c.bucket.NewReader(ctx, rec.Key+".zst", nil)
	if err != nil {
		return nil, fmt.Errorf("open %s: %s", c.where.Child(rec.Key+".zst"), cleanError(err))
	}
	sum := sha256.New()
	zr, err := zstd.NewReader(io.TeeReader(r, sum))
	if err != nil {
		r.Close()
		return nil, err
	}
	return &binlogReader{zr: zr, r: r, sum: sum, rec: rec, where: c.where.Child(rec.Key + ".zst").String()}, nil
}

type binlogReader struct {
	zr    *zstd.Decoder
	r     *blob.Reader
	sum   interface{ Sum([]byte) []byte }
	rec   ArchivedBinlog
	where string
	n     int64
}

func (b *binlogReader) Read(p []byte) (int, error) {
	n, err := b.zr.Read(p)
	b.n += int64(n)
	return n, err
}

func (b *binlogReader) Close() error {
	io.Copy(io.Discard, b.r) // the checksum covers the whole object
	b.zr.Close()
	b.r.Close()
	if got := sha256Hex(b.sum.Sum(nil)); got != b.rec.SHA256 || b.n != b.rec.Size {
		return fmt.Errorf("%s does not match its record: %d bytes (want %d), sha256 %s (want %s)", b.where, b.n, b.rec.Size, got, b.rec.SHA256)
	}
	return nil
}

// RestoreTarget is a point in time to restore to: a time (every transaction written
// before it) or a GTID position (every transaction up to and including it).
type RestoreTarget struct {
	Time time.Time
	GTID mysql.GTIDSet
}

// ParseRestoreTarget reads replicant.dev/restore-to: an RFC 3339 time
// (2026-12-05T10:00:00Z) or a GTID position (0-100-1234).
func ParseRestoreTarget(s string) (RestoreTarget, error) {
	s = strings.TrimSpace(s)
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return RestoreTarget{Time: t.UTC()}, nil
	}
	if g, err := mysql.ParseGTIDSet(s); err == nil && !g.Empty() {
		pos := g.Position()
		if len(pos.GTIDs()) == len(g.GTIDs()) {
			return RestoreTarget{GTID: pos}, nil
		}
		return RestoreTarget{}, fmt.Errorf("%q names two GTIDs of one domain: a position has one per domain", s)
	}
	return RestoreTarget{}, fmt.Errorf("%q is neither an RFC 3339 time (2026-12-05T10:00:00Z) nor a GTID position (0-100-1234)", s)
}

func (t RestoreTarget) String() string {
	if !t.GTID.Empty() {
		return t.GTID.String()
	}
	return t.Time.Format(time.RFC3339)
}

// ReplayStep is one archived binlog to replay, from the position already restored
// (exclusive: mariadb-binlog --start-position) up to Stop (inclusive; nil: to the
// file's end or the target).
type ReplayStep struct {
	Binlog ArchivedBinlog
	From   mysql.GTIDSet
	Stop   mysql.GTIDSet
}

// ErrArchiveGap: the archive lacks binlogs between a backup and the target.
var ErrArchiveGap = fmt.Errorf("the binlog archive has a gap")

// PlanRestore chooses the newest committed backup before target and the archived
// binlogs that take it there, in order. Across failovers the archive holds the
// files of several masters, overlapping; at each step the file that reaches
// furthest is taken (a later master's file holds the history the cluster kept). A
// missing stretch of history is ErrArchiveGap naming it, never skipped; a target
// beyond the archive's newest transaction is an error too (archiving runs on a
// schedule: retry after the next run).
func (c *Cluster) PlanRestore(ctx context.Context, target RestoreTarget) (Manifest, []ReplayStep, error) {
	backups, err := c.List(ctx)
	if err != nil {
		return Manifest{}, nil, err
	}
	var base Manifest
	found := false
	for _, m := range backups {
		pos, err := mysql.ParseGTIDSet(m.GTID)
		if err != nil {
			continue
		}
		if (!target.GTID.Empty() && target.GTID.Reaches(pos)) || (target.GTID.Empty() && !m.End.After(target.Time)) {
			base, found = m, true
		}
	}
	if !found {
		return Manifest{}, nil, fmt.Errorf("%s: %w before %s (the oldest is %s)", c.where, ErrNoBackup, target, oldest(backups))
	}
	binlogs, err := c.Binlogs(ctx)
	if err != nil {
		return base, nil, err
	}
	reach, err := c.reach(ctx)
	if err != nil {
		return base, nil, err
	}
	steps, err := planReplay(base, binlogs, reach, target)
	return base, steps, err
}

// PlanReplayFrom chooses the archived binlogs that take base to target.
func (c *Cluster) PlanReplayFrom(ctx context.Context, base Manifest, target RestoreTarget) ([]ReplayStep, error) {
	pos, err := mysql.ParseGTIDSet(base.GTID)
	if err != nil {
		return nil, fmt.Errorf("backup %s: its GTID %q: %w", base.Name, base.GTID, err)
	}
	if (!target.GTID.Empty() && !target.GTID.Reaches(pos)) || (target.GTID.Empty() && base.End.After(target.Time)) {
		return nil, fmt.Errorf("backup %s (ending %s at %s) is after %s: name an earlier backup, or the directory", base.Name, base.End.Format(time.RFC3339), base.GTID, target)
	}
	binlogs, err := c.Binlogs(ctx)
	if err != nil {
		return nil, err
	}
	reach, err := c.reach(ctx)
	if err != nil {
		return nil, err
	}
	return planReplay(base, binlogs, reach, target)
}

func oldest(backups []Manifest) string {
	if len(backups) == 0 {
		return "none"
	}
	return backups[0].Name + ", ending " + backups[0].End.Format(time.RFC3339)
}

// planReplay chains archived binlogs from the backup's position to the target.
//
// The archive holds files of every master the cluster had, and may hold a stretch
// twice (a file a new master wrote while it still replicated) or a tail the cluster
// later discarded (a transaction written to the old master's binlog, archived, and
// never acknowledged before it died: the new master numbers its own transactions
// from the same sequence numbers). Sequence numbers alone cannot tell those apart,
// time can: the history the cluster kept is the one that goes on later. So at each
// step, among the files that start at or before the position reached and bring
// something beyond it, the one whose last transaction is newest is replayed (ties:
// the furthest, then the last archived); a file whose history ended before the one
// already replayed is never taken up again; and a file is replayed only up to the
// start of a file that begins inside it and goes on later (a new master's first file
// after a failover), whose transactions then follow.
func planReplay(base Manifest, binlogs []ArchivedBinlog, reach *ArchiveReach, target RestoreTarget) ([]ReplayStep, error) {
	start, err := mysql.ParseGTIDSet(base.GTID)
	if err != nil {
		return nil, fmt.Errorf("backup %s: its GTID %q: %w", base.Name, base.GTID, err)
	}
	pos := start.Position()
	var steps []ReplayStep
	var replayedUntil time.Time // the newest transaction time replayed so far
	for guard := 0; guard <= 2*len(binlogs); guard++ {
		if !target.GTID.Empty() && pos.Reaches(target.GTID) {
			return steps, nil
		}
		if target.GTID.Empty() && len(steps) > 0 && !replayedUntil.Before(target.Time) {
			return steps, nil
		}
		if target.GTID.Empty() && reach != nil && pos.Reaches(reach.Position.Position()) && !reach.Time.Before(target.Time) {
			return steps, nil // nothing was written between here and the target
		}
		var next *ArchivedBinlog
		for i := range binlogs {
			b := &binlogs[i]
			if !pos.Reaches(b.Start.Position()) || pos.Reaches(b.End.Position()) || b.LastTime.Before(replayedUntil) {
				continue // starts after a stretch we lack, brings nothing new, or is a history left behind
			}
			if next == nil || laterHistory(*b, *next) {
				next = b
			}
		}
		if next == nil {
			return steps, gapError(pos, binlogs, target, len(steps) > 0)
		}
		step := ReplayStep{Binlog: *next, From: pos}
		end := next.End.Position()
		// A file that begins inside this one and goes on later takes over at its start.
		for i := range binlogs {
			b := &binlogs[i]
			bs := b.Start.Position()
			if b.Key == next.Key || pos.Reaches(bs) || !end.Reaches(bs) || bs.Reaches(end) || !b.LastTime.After(next.LastTime) {
				continue
			}
			if step.Stop.Empty() || step.Stop.Reaches(bs) {
				step.Stop = bs
			}
		}
		steps = append(steps, step)
		if !step.Stop.Empty() {
			pos = step.Stop
			// Only the file's head was replayed: its times up to the cut are not known,
			// so the time bound stays where it was.
			continue
		}
		pos = pos.Furthest(end)
		if next.LastTime.After(replayedUntil) {
			replayedUntil = next.LastTime
		}
	}
	return steps, fmt.Errorf("planning the replay to %s did not end", target)
}

// laterHistory reports whether a goes on later than b (see planReplay).
func laterHistory(a, b ArchivedBinlog) bool {
	if !a.LastTime.Equal(b.LastTime) {
		return a.LastTime.After(b.LastTime)
	}
	if c := a.End.Position().Ahead(b.End.Position()); c != 0 {
		return c > 0
	}
	return a.Archived.After(b.Archived)
}

func gapError(pos mysql.GTIDSet, binlogs []ArchivedBinlog, target RestoreTarget, replayedSome bool) error {
	// The nearest file beyond pos names where the archive resumes.
	var resume *ArchivedBinlog
	for i := range binlogs {
		b := &binlogs[i]
		if pos.Reaches(b.Start.Position()) {
			continue
		}
		if resume == nil || resume.Start.Position().Ahead(b.Start.Position()) > 0 {
			resume = b
		}
	}
	if resume != nil {
		return fmt.Errorf("%w: it holds nothing after %s; it resumes at %s (%s of server %d, archived %s): the transactions after %s up to %s are missing, so %s cannot be reached",
			ErrArchiveGap, pos, resume.Start.Position(), resume.Name, resume.ServerID, resume.Archived.Format(time.RFC3339), pos, resume.Start.Position(), target)
	}
	reach := "no binlog after the backup"
	if replayedSome {
		reach = "nothing after " + pos.String()
	}
	return fmt.Errorf("the binlog archive does not reach %s yet: it holds %s (archiving runs on a schedule; retry after its next run)", target, reach)
}
