package sidecar

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
)

// CloneConfig is what `replicant sidecar clone` needs.
type CloneConfig struct {
	Datadir string
	PodName string
	// ReplicasURL and MasterURL are the sidecars behind <sts>-replicas and <sts>-master
	// (http://<sts>-replicas.<namespace>.svc:8080).
	ReplicasURL, MasterURL string
	InitURI                string
	// Restore opens InitURI's backup (the backup package provides it); without it a
	// restore is refused with a clear error.
	Restore OpenBackupFunc
	// Replay, for a restore to a point in time (replicant.dev/restore-to), brings the
	// prepared datadir from the backup's position to that point and returns the GTID
	// position reached (the backup package provides it).
	Replay ReplayFunc
	// StateFile is the controller's state of the cluster (its ConfigMap, mounted
	// optionally): when it names a master, the cluster has had data, and pod 0 on an
	// empty volume must not start an empty server that could be taken for it.
	StateFile string
	// SidecarPort is the donors' sidecar port, for the recorded master's address
	// (default 8080).
	SidecarPort    int
	BackupUser     string
	BackupPassword string
	// BackupBinary and StreamBinary default to mariadb-backup and mbstream.
	BackupBinary, StreamBinary string
	// ProbeTimeout bounds "does this source answer" (default 3s).
	ProbeTimeout time.Duration
	// IdleTimeout fails a clone whose source sent nothing for that long (default 5m):
	// a donor stuck on a lock must not hold this pod, and the donor's single backup
	// slot, for ever. Closing the stream stops the donor's backup.
	IdleTimeout time.Duration
	// ProgressEvery is how often progress is logged (default 5s).
	ProgressEvery time.Duration
	Log           logr.Logger

	// Flavor is mariadb (the default: mariadb-backup through the donor's sidecar) or
	// mysql (MySQL's CLONE plugin from the donor's server, found through its sidecar).
	Flavor string
	// CloneUser and ClonePassword log in to a MySQL donor (replicant's replication
	// account, which has BACKUP_ADMIN there).
	CloneUser, ClonePassword string
	// Mysqld and MysqldOptions run the image's mysqld for a MySQL clone (see
	// CloneInstanceConfig).
	Mysqld        []string
	MysqldOptions []string
}

// Decision is what the clone step chose, for logs and tests.
type Decision string

const (
	DecisionKeep         Decision = "keep existing data"
	DecisionFromReplicas Decision = "clone from a replica"
	DecisionFromMaster   Decision = "clone from the master"
	// DecisionFromRecordedMaster: <sts>-master did not answer (a user's own Service
	// of that name, left alone, may not carry the sidecar's port), so the clone goes
	// to the master's pod address the controller recorded in its state.
	DecisionFromRecordedMaster Decision = "clone from the recorded master's pod"
	DecisionRestore            Decision = "restore from init-uri"
	DecisionStartEmpty         Decision = "start empty (ordinal 0)"
)

// cloneMarker, present in the datadir, means a clone was being moved into place when
// it stopped: what is there is partial and is removed before anything else.
const cloneMarker = ".replicant-incomplete-clone"

// tmpPrefix names the clone's work directory inside the datadir volume (same
// filesystem, so moving the result into place is a rename).
const tmpPrefix = ".replicant-clone-"

// Clone runs the decision table of DESIGN.md and carries out its decision.
func Clone(ctx context.Context, cfg CloneConfig) (Decision, error) {
	cfg.defaults()
	log := cfg.Log
	if err := cleanInterrupted(cfg.Datadir, log); err != nil {
		return "", err
	}
	if present, what := dataPresent(cfg.Datadir); present {
		log.Info("decision: keep the data already in the datadir", "found", what)
		return DecisionKeep, nil
	}
	if cfg.answers(ctx, cfg.ReplicasURL) {
		log.Info("decision: clone from a healthy replica", "source", cfg.ReplicasURL)
		return DecisionFromReplicas, cloneFrom(ctx, cfg, cfg.ReplicasURL)
	}
	log.Info("no replica answers", "source", cfg.ReplicasURL)
	if cfg.answers(ctx, cfg.MasterURL) {
		log.Info("decision: clone from the master", "source", cfg.MasterURL)
		return DecisionFromMaster, cloneFrom(ctx, cfg, cfg.MasterURL)
	}
	log.Info("the master does not answer", "source", cfg.MasterURL)
	if url := cfg.recordedMasterURL(); url != "" && cfg.answers(ctx, url) {
		log.Info("decision: clone from the master's pod, as the controller recorded it", "source", url)
		return DecisionFromRecordedMaster, cloneFrom(ctx, cfg, url)
	}
	if cfg.InitURI != "" {
		log.Info("decision: restore from init-uri", "uri", cfg.InitURI)
		if cfg.Restore == nil {
			return DecisionRestore, fmt.Errorf("restoring from %s (replicant.dev/init-uri): this build cannot read buckets", cfg.InitURI)
		}
		if cfg.Flavor == "mysql" {
			return DecisionRestore, restoreCopy(ctx, cfg, cfg.InitURI, cfg.Restore)
		}
		return DecisionRestore, install(ctx, cfg, cfg.InitURI, cfg.Restore)
	}
	ordinal, err := Ordinal(cfg.PodName)
	if err != nil {
		return "", err
	}
	if ordinal == 0 {
		if master := recordedMaster(cfg.StateFile); master != "" {
			return "", fmt.Errorf("%s has no data and %w: no replica answers at %s, no master at %s, no init-uri, and this cluster already had a master (%s, recorded in %s): an empty server would look like a new cluster, so it does not start; failing so that Kubernetes retries. If the cluster's data is gone for good, delete that ConfigMap to start anew",
				cfg.PodName, ErrNothingToClone, cfg.ReplicasURL, cfg.MasterURL, master, cfg.StateFile)
		}
		log.Info("decision: start empty; the server image initialises the datadir", "pod", cfg.PodName)
		return DecisionStartEmpty, nil
	}
	return "", fmt.Errorf("%s has no data and %w: no replica answers at %s, no master at %s, no init-uri; failing so that Kubernetes retries",
		cfg.PodName, ErrNothingToClone, cfg.ReplicasURL, cfg.MasterURL)
}

// recordedMaster is the master the controller's state file names ("" when there is
// no file, as for a cluster that never had a master).
func recordedMaster(stateFile string) string {
	if stateFile == "" {
		return ""
	}
	data, err := os.ReadFile(stateFile)
	if err != nil {
		return ""
	}
	var st struct {
		Master string `json:"master"`
	}
	if json.Unmarshal(data, &st) != nil {
		return "(unreadable state)"
	}
	return st.Master
}

// recordedMasterURL is the sidecar of the master the state file records, by the
// address its replicas replicate from ("" when none is recorded, or it is this pod).
func (cfg *CloneConfig) recordedMasterURL() string {
	if cfg.StateFile == "" {
		return ""
	}
	data, err := os.ReadFile(cfg.StateFile)
	if err != nil {
		return ""
	}
	var st struct {
		Master       string `json:"master"`
		MasterSource string `json:"masterSource"`
	}
	if json.Unmarshal(data, &st) != nil || st.MasterSource == "" || st.Master == cfg.PodName {
		return ""
	}
	return fmt.Sprintf("http://%s", net.JoinHostPort(st.MasterSource, strconv.Itoa(cfg.SidecarPort)))
}

func (cfg *CloneConfig) defaults() {
	if cfg.SidecarPort == 0 {
		cfg.SidecarPort = 8080
	}
	if cfg.BackupBinary == "" {
		cfg.BackupBinary = "mariadb-backup"
	}
	if cfg.StreamBinary == "" {
		cfg.StreamBinary = "mbstream"
	}
	if cfg.ProbeTimeout == 0 {
		cfg.ProbeTimeout = 3 * time.Second
	}
	if cfg.ProgressEvery == 0 {
		cfg.ProgressEvery = 5 * time.Second
	}
	if cfg.IdleTimeout == 0 {
		cfg.IdleTimeout = 5 * time.Minute
	}
}

// cloneClient bounds connecting and waiting for the answer; the stream itself is
// bounded by the idle watchdog (a whole clone may rightly take hours).
var cloneClient = &http.Client{Transport: &http.Transport{
	Proxy:                 http.ProxyFromEnvironment,
	DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
	TLSHandshakeTimeout:   10 * time.Second,
	ResponseHeaderTimeout: 5 * time.Minute, // the donor answers once its backup runs
}}

// dataPresent: a datadir with the system schema (mysql/) holds an initialised server.
func dataPresent(datadir string) (bool, string) {
	if info, err := os.Stat(filepath.Join(datadir, "mysql")); err == nil && info.IsDir() {
		return true, filepath.Join(datadir, "mysql")
	}
	return false, ""
}

// cleanInterrupted removes what an interrupted clone left: its work directories, and
// when it was interrupted while moving into place, every partial file of the datadir.
func cleanInterrupted(datadir string, log logr.Logger) error {
	entries, err := os.ReadDir(datadir)
	if err != nil {
		return fmt.Errorf("read datadir: %w", err)
	}
	partial := false
	for _, e := range entries {
		if e.Name() == cloneMarker {
			partial = true
		}
	}
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, tmpPrefix) || (partial && name != "lost+found" && name != cloneMarker) {
			log.Info("removing what an interrupted clone left", "path", filepath.Join(datadir, name))
			if err := os.RemoveAll(filepath.Join(datadir, name)); err != nil {
				return fmt.Errorf("clean interrupted clone: %w", err)
			}
		}
	}
	if partial {
		return os.Remove(filepath.Join(datadir, cloneMarker))
	}
	return nil
}

func (cfg *CloneConfig) answers(ctx context.Context, base string) bool {
	return Answers(ctx, base, cfg.ProbeTimeout)
}

// cloneFrom streams a backup from the sidecar at source into the datadir (install),
// or on MySQL has the CLONE plugin copy the server behind that sidecar.
func cloneFrom(ctx context.Context, cfg CloneConfig, source string) error {
	if cfg.Flavor == "mysql" {
		donor, err := DonorAddress(ctx, source, cfg.ProbeTimeout)
		if err != nil {
			return err
		}
		_, err = CloneInstance(ctx, CloneInstanceConfig{Datadir: cfg.Datadir, Donor: donor, User: cfg.CloneUser,
			Password: cfg.ClonePassword, Mysqld: cfg.Mysqld, MysqldOptions: cfg.MysqldOptions, Log: cfg.Log})
		return err
	}
	return install(ctx, cfg, source, func(ctx context.Context) (io.ReadCloser, func() error, error) {
		stream, err := RequestBackup(ctx, source, cfg.BackupUser, cfg.BackupPassword, cfg.IdleTimeout)
		if err != nil {
			return nil, nil, err
		}
		return stream, func() error { _, err := stream.Finish(); return err }, nil
	})
}

// ReplayFunc replays archived binlogs into a prepared datadir and returns the GTID
// position it reached.
type ReplayFunc func(ctx context.Context, datadir string) (gtid string, err error)

// OpenBackupFunc opens an xbstream to install; finished, called after its io.EOF,
// says whether the stream was whole.
type OpenBackupFunc func(ctx context.Context) (stream io.ReadCloser, finished func() error, err error)

// install extracts an xbstream into a work directory inside the datadir, prepares
// it, records the GTID position it ends at, and moves it into place. On any failure
// the work directory is removed and the datadir is as before.
func install(ctx context.Context, cfg CloneConfig, source string, open OpenBackupFunc) (err error) {
	work, err := os.MkdirTemp(cfg.Datadir, tmpPrefix)
	if err != nil {
		return fmt.Errorf("clone: %w", err)
	}
	defer func() {
		if err != nil {
			os.RemoveAll(work)
		}
	}()
	start := time.Now()
	n, err := extract(ctx, cfg, open, work)
	if err != nil {
		return fmt.Errorf("clone from %s failed after %d bytes (the datadir is unchanged; Kubernetes retries): %w", source, n, err)
	}
	cfg.Log.Info("backup received", "bytes", n, "seconds", time.Since(start).Seconds())
	prepareStart := time.Now()
	if out, err := exec.CommandContext(ctx, cfg.BackupBinary, "--prepare", "--target-dir="+work).CombinedOutput(); err != nil {
		return fmt.Errorf("mariadb-backup --prepare: %v: %s", err, lastLines(string(out), 10))
	}
	cfg.Log.Info("backup prepared", "seconds", time.Since(prepareStart).Seconds())
	gtid, err := backupGTID(work)
	if err != nil {
		return err
	}
	if cfg.Replay != nil {
		if gtid, err = cfg.Replay(ctx, work); err != nil {
			return fmt.Errorf("point-in-time recovery from %s (the datadir is unchanged; Kubernetes retries): %w", source, err)
		}
	}
	rec, _ := json.Marshal(CloneRecord{Source: source, GTID: gtid, Finished: time.Now().UTC()})
	if err := os.WriteFile(filepath.Join(work, CloneRecordFile), rec, 0o644); err != nil {
		return err
	}
	if err := chownToServerUser(work); err != nil {
		return err
	}
	if err := moveIntoPlace(work, cfg.Datadir); err != nil {
		return err
	}
	cfg.Log.Info("clone complete", "source", source, "gtid", gtid, "bytes", n, "seconds", time.Since(start).Seconds())
	return nil
}

// extract opens the stream and feeds it to mbstream -x in dir.
func extract(ctx context.Context, cfg CloneConfig, open OpenBackupFunc, dir string) (int64, error) {
	return receive(ctx, cfg, open, func(ctx context.Context, stream io.Reader) error {
		cmd := exec.CommandContext(ctx, cfg.StreamBinary, "-x", "-C", dir)
		stdinR, stdin, err := streamPipe()
		if err != nil {
			return err
		}
		cmd.Stdin = stdinR
		var stderr strings.Builder
		cmd.Stderr = &stderr
		err = cmd.Start()
		stdinR.Close() // the child holds its own copy
		if err != nil {
			stdin.Close()
			return fmt.Errorf("start %s: %w", cfg.StreamBinary, err)
		}
		_, copyErr := io.CopyBuffer(stdin, stream, make([]byte, 1<<20))
		stdin.Close()
		waitErr := cmd.Wait()
		switch {
		case copyErr != nil:
			return fmt.Errorf("stream: %w", copyErr)
		case waitErr != nil:
			return fmt.Errorf("mbstream: %v: %s", waitErr, lastLines(stderr.String(), 5))
		}
		return nil
	})
}

// receive opens a backup stream and hands it to consume (counted, its progress
// logged), then asks the source whether the stream was whole. What the source says of
// its stream (cut short, or not what was stored) is often the cause of what failed
// in consume, so it is added to consume's error.
func receive(ctx context.Context, cfg CloneConfig, open OpenBackupFunc, consume func(context.Context, io.Reader) error) (int64, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, finished, err := open(ctx)
	if err != nil {
		return 0, err
	}
	defer stream.Close()
	counter := &countingReader{r: stream}
	stopProgress := cfg.progress(counter)
	err = consume(ctx, counter)
	stopProgress()
	n := counter.n.Load()
	if err == nil {
		return n, finished()
	}
	if ferr := finished(); ferr != nil {
		err = fmt.Errorf("%w; the source: %v", err, ferr)
	}
	return n, err
}

// watchIdle cancels when counter has not grown for timeout; the returned func stops
// the watch and says whether it fired.
func watchIdle(c *countingReader, timeout time.Duration, cancel context.CancelFunc) (fired func() bool) {
	done := make(chan struct{})
	var hit atomic.Bool
	go func() {
		tick := time.NewTicker(min(timeout/4, time.Second))
		defer tick.Stop()
		last, since := c.n.Load(), time.Now()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
			}
			if n := c.n.Load(); n != last {
				last, since = n, time.Now()
			} else if time.Since(since) >= timeout {
				hit.Store(true)
				cancel()
				return
			}
		}
	}()
	var once sync.Once
	return func() bool {
		once.Do(func() { close(done) })
		return hit.Load()
	}
}

type countingReader struct {
	r io.Reader
	n atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	k, err := c.r.Read(p)
	c.n.Add(int64(k))
	return k, err
}

// progress logs bytes and rate every ProgressEvery until the returned stop is called.
func (cfg *CloneConfig) progress(c *countingReader) func() {
	done := make(chan struct{})
	start := time.Now()
	go func() {
		t := time.NewTicker(cfg.ProgressEvery)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				n := c.n.Load()
				cfg.Log.Info("cloning", "bytes", n, "MiB/s", fmt.Sprintf("%.1f", float64(n)/(1<<20)/time.Since(start).Seconds()))
			}
		}
	}()
	return func() { close(done) }
}

// readBackupMeta reads one of the files mariadb-backup leaves beside a backup:
// mariadb_backup_<name> since MariaDB 11 (found by e2e: clones from an 11.8 donor
// failed for want of xtrabackup_binlog_info), xtrabackup_<name> before.
func readBackupMeta(dir, name string) ([]byte, error) {
	data, err := os.ReadFile(filepath.Join(dir, "mariadb_backup_"+name))
	if errors.Is(err, fs.ErrNotExist) {
		data, err = os.ReadFile(filepath.Join(dir, "xtrabackup_"+name))
	}
	return data, err
}

// backupGTID reads the GTID position the backup ends at (binlog_info:
// "<binlog file>\t<position>\t<gtid>").
func backupGTID(dir string) (string, error) {
	data, err := readBackupMeta(dir, "binlog_info")
	if err != nil {
		return "", fmt.Errorf("the backup has no binlog position (is log_bin on at the source?): %w", err)
	}
	fields := strings.Fields(string(data))
	if len(fields) < 3 {
		return "", nil // the source had written nothing yet
	}
	return fields[2], nil
}

// chownToServerUser gives the files to the image's mysql user when running as root,
// so that the server (uid 999 in the official images) can use them.
func chownToServerUser(dir string) error {
	if os.Geteuid() != 0 {
		return nil
	}
	u, err := user.Lookup("mysql")
	if err != nil {
		return nil // no such user in this image: the files stay as they are
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return filepath.Walk(dir, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, uid, gid)
	})
}

// moveIntoPlace renames the prepared backup's entries into the datadir (the volume's
// root cannot itself be renamed). The marker makes an interruption detectable, and
// mysql/ (what makes a datadir count as present) moves last.
func moveIntoPlace(work, datadir string) error {
	marker := filepath.Join(datadir, cloneMarker)
	if err := os.WriteFile(marker, nil, 0o600); err != nil {
		return err
	}
	entries, err := os.ReadDir(work)
	if err != nil {
		return err
	}
	var last []string
	for _, e := range entries {
		if e.Name() == "mysql" {
			last = append(last, e.Name())
			continue
		}
		if err := os.Rename(filepath.Join(work, e.Name()), filepath.Join(datadir, e.Name())); err != nil {
			return fmt.Errorf("move clone into place: %w", err)
		}
	}
	for _, name := range last {
		if err := os.Rename(filepath.Join(work, name), filepath.Join(datadir, name)); err != nil {
			return fmt.Errorf("move clone into place: %w", err)
		}
	}
	if err := os.Remove(work); err != nil {
		return err
	}
	return os.Remove(marker)
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// ErrNothingToClone is returned when a pod past ordinal 0 has no source.
var ErrNothingToClone = errors.New("nothing to clone from")
