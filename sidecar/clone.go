package sidecar

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
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
	// StateFile is the controller's state of the cluster (its ConfigMap, mounted
	// optionally): when it names a master, the cluster has had data, and pod 0 on an
	// empty volume must not start an empty server that could be taken for it.
	StateFile      string
	BackupUser     string
	BackupPassword string
	// BackupBinary and StreamBinary default to mariadb-backup and mbstream.
	BackupBinary, StreamBinary string
	// ProbeTimeout bounds "does this source answer" (default 3s).
	ProbeTimeout time.Duration
	// ProgressEvery is how often progress is logged (default 5s).
	ProgressEvery time.Duration
	Log           logr.Logger
}

// Decision is what the clone step chose, for logs and tests.
type Decision string

const (
	DecisionKeep         Decision = "keep existing data"
	DecisionFromReplicas Decision = "clone from a replica"
	DecisionFromMaster   Decision = "clone from the master"
	DecisionRestore      Decision = "restore from init-uri"
	DecisionStartEmpty   Decision = "start empty (ordinal 0)"
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
	if cfg.InitURI != "" {
		log.Info("decision: restore from init-uri", "uri", cfg.InitURI)
		return DecisionRestore, fmt.Errorf("restoring from %s (replicant.dev/init-uri) is not supported by this release yet", cfg.InitURI)
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

func (cfg *CloneConfig) defaults() {
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
}

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

// answers reports whether a sidecar answers /readyz at base (its server is up).
func (cfg *CloneConfig) answers(ctx context.Context, base string) bool {
	if base == "" {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.ProbeTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(base, "/")+"/readyz", nil)
	if err != nil {
		return false
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// cloneFrom streams a backup from source into a work directory inside the datadir,
// prepares it, records the GTID position it ends at, and moves it into place. On any
// failure the work directory is removed and the datadir is as before.
func cloneFrom(ctx context.Context, cfg CloneConfig, source string) (err error) {
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
	n, err := fetch(ctx, cfg, source, work)
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

// fetch streams GET <source>/xbackup into mbstream -x in dir and checks the trailer.
func fetch(ctx context.Context, cfg CloneConfig, source, dir string) (int64, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(source, "/")+"/xbackup", nil)
	if err != nil {
		return 0, err
	}
	req.SetBasicAuth(cfg.BackupUser, cfg.BackupPassword)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return 0, fmt.Errorf("source answered %s: %s", resp.Status, strings.TrimSpace(string(body)))
	}
	extract := exec.CommandContext(ctx, cfg.StreamBinary, "-x", "-C", dir)
	stdinR, stdin, err := streamPipe()
	if err != nil {
		return 0, err
	}
	extract.Stdin = stdinR
	var stderr strings.Builder
	extract.Stderr = &stderr
	err = extract.Start()
	stdinR.Close() // the child holds its own copy
	if err != nil {
		stdin.Close()
		return 0, fmt.Errorf("start %s: %w", cfg.StreamBinary, err)
	}
	counter := &countingReader{r: resp.Body}
	stopProgress := cfg.progress(counter)
	_, copyErr := io.CopyBuffer(stdin, counter, make([]byte, 1<<20))
	stdin.Close()
	waitErr := extract.Wait()
	stopProgress()
	n := counter.n.Load()
	switch {
	case copyErr != nil:
		return n, fmt.Errorf("stream: %w", copyErr)
	case waitErr != nil:
		return n, fmt.Errorf("mbstream: %v: %s", waitErr, lastLines(stderr.String(), 5))
	case resp.Trailer.Get(BackupStatusTrailer) != "ok":
		return n, fmt.Errorf("the source did not finish the backup (status %q)", resp.Trailer.Get(BackupStatusTrailer))
	}
	return n, nil
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

// backupGTID reads the GTID position the backup ends at (xtrabackup_binlog_info:
// "<binlog file>\t<position>\t<gtid>").
func backupGTID(dir string) (string, error) {
	data, err := os.ReadFile(filepath.Join(dir, "xtrabackup_binlog_info"))
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
