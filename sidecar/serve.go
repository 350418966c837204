package sidecar

import (
	"bufio"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/replicant-dev/replicant/mysql"
)

// BackupStatusTrailer is the HTTP trailer /xbackup ends with: "ok" only when
// mariadb-backup finished successfully. A stream without it is incomplete, whatever
// the bytes look like, and a clone must not use it.
const BackupStatusTrailer = "X-Replicant-Backup-Status"

// BackupGTIDTrailer and BackupVersionTrailer carry, after a successful stream, the
// GTID position the backup ends at and the server's version (from mariadb-backup's
// xtrabackup_info), for a backup's manifest.
const (
	BackupGTIDTrailer    = "X-Replicant-Backup-Gtid"
	BackupVersionTrailer = "X-Replicant-Backup-Server-Version"
)

// BackupFormatHeader says what the /xbackup stream is: FormatXbstream (mariadb-backup,
// MariaDB) or FormatTar (a directory made by MySQL's CLONE LOCAL). A stream without it
// is an xbstream (sidecars before MySQL backups).
const BackupFormatHeader = "X-Replicant-Backup-Format"

// The /xbackup stream formats.
const (
	FormatXbstream = "xbstream"
	FormatTar      = "tar"
)

// ServeConfig is what `replicant sidecar serve` needs.
type ServeConfig struct {
	Listen  string // :8080
	Datadir string
	// DefaultsFile is the server's my.cnf, for mariadb-backup (empty: its default search).
	DefaultsFile string
	// ServerAddr is where the local server listens (127.0.0.1:3306 in a pod).
	ServerAddr string
	// BackupUser and BackupPassword are the MySQL account mariadb-backup uses, and the
	// HTTP basic auth credentials /xbackup demands.
	BackupUser     string
	BackupPassword string
	// AdminUser and AdminPassword are replicant's admin account: the sidecar fences
	// its server with it when the write lease runs out (lease.go). Without it the
	// sidecar refuses leases, and the controller opens no writes on this server.
	AdminUser     string
	AdminPassword string
	// FenceCheck is how often the lease is checked (default 100 ms).
	FenceCheck time.Duration
	// BackupBinary is mariadb-backup (default: found on PATH).
	BackupBinary string
	// Flavor is mariadb (the default: /xbackup runs mariadb-backup) or mysql (/xbackup
	// has the server CLONE itself into ScratchDir and streams that directory).
	Flavor string
	// ScratchDir, on MySQL, is a directory the server can write and this sidecar can
	// read and empty (a volume both containers mount): CLONE LOCAL writes a full copy
	// of the data there, so it needs free space as large as the datadir.
	ScratchDir string
	// Mysqld and MysqldOptions run the image's mysqld (see CloneInstanceConfig): on
	// MySQL a backup's copy is started privately to check it and read its GTID set.
	Mysqld        []string
	MysqldOptions []string
	// PreStopWait bounds how long /pre-stop holds a writable server's shutdown while
	// the controller hands its role over, and how long the sidecar keeps serving after
	// SIGTERM while the server still runs (default 25 s, within the pod's default
	// 30 s grace period).
	PreStopWait time.Duration
	Log         logr.Logger
}

// Server serves /xbackup, /binlogs, /healthz, /readyz, /metrics and /status.
type Server struct {
	cfg     ServeConfig
	busy    atomic.Bool
	db      *mysql.Server
	admin   *mysql.Server // nil without admin credentials
	leases  leaseKeeper
	metrics *serveMetrics
	handler http.Handler
	// binlogSummaries serves /binlogs, for binlog archiving.
	binlogSummaries binlogSummaries
}

type serveMetrics struct {
	registry *prometheus.Registry
	served   *prometheus.CounterVec
	bytes    prometheus.Counter
	duration prometheus.Histogram
}

func newServeMetrics() *serveMetrics {
	m := &serveMetrics{
		registry: prometheus.NewRegistry(),
		served: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "replicant_sidecar_backups_total", Help: "Backups streamed by /xbackup, by result (ok, failed, refused).",
		}, []string{"result"}),
		bytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "replicant_sidecar_backup_bytes_total", Help: "Bytes streamed by /xbackup.",
		}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "replicant_sidecar_backup_duration_seconds", Help: "Duration of streamed backups.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 14),
		}),
	}
	m.registry.MustRegister(m.served, m.bytes, m.duration,
		prometheus.NewGoCollector(), prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{}))
	return m
}

// NewServer validates cfg and builds the HTTP handler.
func NewServer(cfg ServeConfig) (*Server, error) {
	if cfg.BackupUser == "" || cfg.BackupPassword == "" {
		return nil, errors.New("backup credentials are empty: REPLICANT_BACKUP_USER and REPLICANT_BACKUP_PASSWORD come from the credentials Secret")
	}
	if cfg.BackupBinary == "" {
		cfg.BackupBinary = "mariadb-backup"
	}
	if cfg.ServerAddr == "" {
		cfg.ServerAddr = "127.0.0.1:3306"
	}
	if cfg.PreStopWait <= 0 {
		cfg.PreStopWait = 25 * time.Second
	}
	db, err := mysql.Open(mysql.Config{Addr: cfg.ServerAddr, User: cfg.BackupUser, Password: cfg.BackupPassword,
		ConnectTimeout: time.Second, QueryTimeout: 2 * time.Second}, nil)
	if err != nil {
		return nil, err
	}
	if cfg.FenceCheck <= 0 {
		cfg.FenceCheck = 100 * time.Millisecond
	}
	s := &Server{cfg: cfg, db: db, metrics: newServeMetrics()}
	if cfg.AdminUser != "" && cfg.AdminPassword != "" {
		if s.admin, err = mysql.Open(mysql.Config{Addr: cfg.ServerAddr, User: cfg.AdminUser, Password: cfg.AdminPassword,
			ConnectTimeout: time.Second, QueryTimeout: 2 * time.Second}, nil); err != nil {
			return nil, err
		}
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /xbackup", s.xbackup)
	mux.HandleFunc("GET /binlogs", s.binlogList)
	mux.HandleFunc("GET /binlogs/{name}", s.binlogFile)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") })
	mux.HandleFunc("GET /readyz", s.readyz)
	mux.HandleFunc("GET /donor", s.donor)
	mux.HandleFunc("GET /status", s.status)
	mux.HandleFunc("GET /pre-stop", s.preStop)
	mux.HandleFunc("PUT "+LeasePath, s.lease)
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.metrics.registry, promhttp.HandlerOpts{}))
	s.handler = mux
	return s, nil
}

// Handler is the HTTP handler (tests serve it on a loopback listener).
func (s *Server) Handler() http.Handler { return s.handler }

// Close releases the server's connections.
func (s *Server) Close() error {
	if s.admin != nil {
		s.admin.Close()
	}
	return s.db.Close()
}

// KeepFenced fences the server whenever it is writable without a write lease, until
// ctx ends (Run does it; tests that serve Handler call it themselves).
func (s *Server) KeepFenced(ctx context.Context) { s.keepFenced(ctx, s.cfg.FenceCheck) }

// Run serves until ctx ends, then shuts down gracefully (a running backup is ended).
func (s *Server) Run(ctx context.Context) error {
	srv := &http.Server{Addr: s.cfg.Listen, Handler: s.handler, ReadHeaderTimeout: 10 * time.Second,
		BaseContext: nil}
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe() }()
	fenceCtx, stopFencing := context.WithCancel(context.Background())
	defer stopFencing()
	go s.KeepFenced(fenceCtx)
	s.cfg.Log.Info("serving", "address", s.cfg.Listen)
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	// The pod is stopping: the server container's preStop hook calls /pre-stop now,
	// so serve on while the server runs (bounded).
	s.waitServerStopped(s.cfg.PreStopWait)
	shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	srv.Shutdown(shutdown)
	srv.Close() // ends streams still running: their request contexts stop mariadb-backup
	return nil
}

// waitServerStopped returns once the local server stops answering, or after limit.
func (s *Server) waitServerStopped(limit time.Duration) {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) && s.db.Ping(context.Background()) == nil {
		time.Sleep(250 * time.Millisecond)
	}
}

// preStop answers the server container's preStop hook (kubelet GETs it before it
// sends mariadbd SIGTERM). It returns once the server is read-only: on a master pod
// being deleted (or removed by a scale-down), that is when the controller has handed
// the master role to a replica, so the deletion is a graceful takeover instead of a
// failover. A replica is read-only already and returns at once; a server that does not
// answer needs no hand-over; the wait is bounded, so a pod whose controller is down
// still stops.
func (s *Server) preStop(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	deadline := start.Add(s.cfg.PreStopWait)
	log := s.cfg.Log.WithName("pre-stop")
	for {
		readOnly, err := s.db.ReadOnly(r.Context())
		switch {
		case err != nil:
			log.Info("server not answering: nothing to hand over", "error", err.Error())
			io.WriteString(w, "server not answering\n")
			return
		case readOnly:
			log.Info("server is read-only: it may stop", "waited", time.Since(start).String())
			io.WriteString(w, "read-only\n")
			return
		case time.Now().After(deadline):
			log.Info("still writable: stopping anyway, the controller will fail over", "waited", time.Since(start).String())
			io.WriteString(w, "still writable after "+s.cfg.PreStopWait.String()+"\n")
			return
		}
		select {
		case <-r.Context().Done():
			return
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	if err := s.db.Ping(r.Context()); err != nil {
		http.Error(w, "server not answering: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	io.WriteString(w, "ok\n")
}

// donor answers where a MySQL clone connects to this server (CLONE INSTANCE speaks
// to the server's own port, not through this sidecar): its host:port as the caller
// reaches it. A server listening on the pod's loopback is reached at the address the
// caller used for this sidecar (the pod's IP).
func (s *Server) donor(w http.ResponseWriter, r *http.Request) {
	host, port, err := net.SplitHostPort(s.cfg.ServerAddr)
	if err != nil {
		http.Error(w, "server address: "+err.Error(), http.StatusInternalServerError)
		return
	}
	if host == "127.0.0.1" || host == "localhost" || host == "::1" {
		if local, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
			if h, _, err := net.SplitHostPort(local.String()); err == nil {
				host = h
			}
		}
	}
	io.WriteString(w, net.JoinHostPort(host, port)+"\n")
}

// CloneRecord is what a clone leaves in the datadir (CloneRecordFile): where the data
// came from and the GTID position it ends at, from which replication must start.
type CloneRecord struct {
	Source   string    `json:"source"`
	GTID     string    `json:"gtid"`
	Finished time.Time `json:"finished"`
}

// CloneRecordFile is the clone record's name in the datadir.
const CloneRecordFile = "replicant-clone.json"

// status reports the clone record of this server's datadir, if it was cloned: the
// controller reads it to set gtid_slave_pos before starting replication.
func (s *Server) status(w http.ResponseWriter, _ *http.Request) {
	out := map[string]any{"backupRunning": s.busy.Load()}
	if data, err := os.ReadFile(filepath.Join(s.cfg.Datadir, CloneRecordFile)); err == nil {
		var rec CloneRecord
		if json.Unmarshal(data, &rec) == nil {
			out["clone"] = rec
		}
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(out)
}

func (s *Server) authorized(r *http.Request) bool {
	user, password, ok := r.BasicAuth()
	// Both comparisons always run, in constant time, so timing tells nothing.
	userOK := subtle.ConstantTimeCompare([]byte(user), []byte(s.cfg.BackupUser))
	passwordOK := subtle.ConstantTimeCompare([]byte(password), []byte(s.cfg.BackupPassword))
	return ok && userOK&passwordOK == 1
}

func (s *Server) xbackup(w http.ResponseWriter, r *http.Request) {
	log := s.cfg.Log.WithValues("client", r.RemoteAddr)
	if !s.authorized(r) {
		s.metrics.served.WithLabelValues("refused").Inc()
		log.Info("backup refused: bad credentials")
		w.Header().Set("WWW-Authenticate", `Basic realm="replicant"`)
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	if !s.busy.CompareAndSwap(false, true) {
		s.metrics.served.WithLabelValues("refused").Inc()
		log.Info("backup refused: another one is streaming")
		w.Header().Set("Retry-After", "10")
		http.Error(w, "a backup is already streaming from this server; retry later", http.StatusTooManyRequests)
		return
	}
	defer s.busy.Store(false)

	start := time.Now()
	stream := s.streamBackup
	if s.cfg.Flavor == "mysql" {
		stream = s.streamCloneBackup
	}
	n, err := stream(r.Context(), w, log)
	s.metrics.bytes.Add(float64(n))
	s.metrics.duration.Observe(time.Since(start).Seconds())
	if err != nil {
		s.metrics.served.WithLabelValues("failed").Inc()
		w.Header().Set(BackupStatusTrailer, "failed")
		log.Error(err, "backup failed", "bytes", n, "seconds", time.Since(start).Seconds())
		return
	}
	s.metrics.served.WithLabelValues("ok").Inc()
	w.Header().Set(BackupStatusTrailer, "ok")
	log.Info("backup streamed", "bytes", n, "seconds", time.Since(start).Seconds())
}

// streamBackup runs mariadb-backup --backup --stream=xbstream into w. The password
// reaches mariadb-backup through a private defaults file, never its command line.
func (s *Server) streamBackup(ctx context.Context, w http.ResponseWriter, log logr.Logger) (int64, error) {
	work, err := os.MkdirTemp("", "replicant-xbackup-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(work)
	host, port, _ := strings.Cut(s.cfg.ServerAddr, ":")
	// The credentials file includes the server's own my.cnf when one is named
	// (mariadb-backup takes either --defaults-file or --defaults-extra-file first).
	creds := filepath.Join(work, "client.cnf")
	text := fmt.Sprintf("[mariadb-backup]\nuser=%s\npassword=%s\nhost=%s\nport=%s\n",
		quoteOption(s.cfg.BackupUser), quoteOption(s.cfg.BackupPassword), host, port)
	option := "--defaults-extra-file="
	if s.cfg.DefaultsFile != "" {
		text = "!include " + s.cfg.DefaultsFile + "\n" + text
		option = "--defaults-file="
	}
	if err := os.WriteFile(creds, []byte(text), 0o600); err != nil {
		return 0, err
	}
	// --extra-lsndir keeps a copy of xtrabackup_info here: the position and version
	// the stream's trailers report.
	args := []string{option + creds, "--backup", "--stream=xbstream",
		"--target-dir=" + filepath.Join(work, "target"), "--extra-lsndir=" + filepath.Join(work, "info"),
		"--datadir=" + s.cfg.Datadir}
	cmd := exec.CommandContext(ctx, s.cfg.BackupBinary, args...)
	// A client that goes away cancels ctx: stop mariadb-backup, then kill it if needed.
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 5 * time.Second
	stdout, stdoutW, err := streamPipe()
	if err != nil {
		return 0, err
	}
	defer stdout.Close()
	cmd.Stdout = stdoutW
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return 0, err
	}
	if err := os.MkdirAll(filepath.Join(work, "target"), 0o700); err != nil {
		return 0, err
	}
	err = cmd.Start()
	stdoutW.Close() // the child holds its own copy; EOF comes when it exits
	if err != nil {
		return 0, fmt.Errorf("start %s: %w", s.cfg.BackupBinary, err)
	}
	tail := newLineTail(20)
	var stderrDone sync.WaitGroup
	stderrDone.Add(1)
	go func() { defer stderrDone.Done(); tail.consume(stderr) }()

	startStream(w, FormatXbstream)
	n, copyErr := copyFlushing(w, stdout)
	stderrDone.Wait()
	waitErr := cmd.Wait()
	switch {
	case ctx.Err() != nil:
		return n, fmt.Errorf("client went away after %d bytes; mariadb-backup stopped", n)
	case waitErr != nil:
		return n, fmt.Errorf("mariadb-backup: %v: %s", waitErr, tail.String())
	case copyErr != nil:
		return n, fmt.Errorf("stream to client: %w", copyErr)
	}
	if data, err := readBackupMeta(filepath.Join(work, "info"), "info"); err == nil {
		info := ParseBackupInfo(string(data))
		w.Header().Set(BackupGTIDTrailer, info.GTID)
		w.Header().Set(BackupVersionTrailer, info.ServerVersion)
	}
	return n, nil
}

// startStream sends /xbackup's headers: its format, and the trailers it ends with.
func startStream(w http.ResponseWriter, format string) {
	w.Header().Set("Trailer", strings.Join([]string{BackupStatusTrailer, BackupGTIDTrailer, BackupVersionTrailer}, ", "))
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set(BackupFormatHeader, format)
	w.WriteHeader(http.StatusOK)
}

// BackupInfo is what xtrabackup_info says of a backup that matters afterwards.
type BackupInfo struct {
	GTID          string
	ServerVersion string
	// Format is the stream's (FormatXbstream or FormatTar).
	Format string
}

// ParseBackupInfo reads xtrabackup_info ("key = value" lines; the position is
// "binlog_pos = filename 'f', position 'p', GTID of the last change 'g'").
func ParseBackupInfo(text string) BackupInfo {
	var info BackupInfo
	for _, line := range strings.Split(text, "\n") {
		key, value, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		switch strings.TrimSpace(key) {
		case "server_version":
			info.ServerVersion = strings.TrimSpace(value)
		case "binlog_pos":
			if _, g, ok := strings.Cut(value, "GTID of the last change '"); ok {
				info.GTID, _, _ = strings.Cut(g, "'")
			}
		}
	}
	return info
}

// copyFlushing copies with a large buffer and flushes each chunk to the client.
func copyFlushing(w http.ResponseWriter, r io.Reader) (int64, error) {
	flusher, _ := w.(http.Flusher)
	buf := make([]byte, 1<<20)
	var n int64
	for {
		k, err := r.Read(buf)
		if k > 0 {
			if _, werr := w.Write(buf[:k]); werr != nil {
				io.Copy(io.Discard, r) // let mariadb-backup finish writing, then fail
				return n, werr
			}
			n += int64(k)
			if flusher != nil {
				flusher.Flush()
			}
		}
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}

// quoteOption quotes a value for a my.cnf file.
func quoteOption(v string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(v) + `"`
}

// lineTail keeps the last lines of a process's stderr for error messages.
type lineTail struct {
	mu    sync.Mutex
	max   int
	lines []string
}

func newLineTail(max int) *lineTail { return &lineTail{max: max} }

func (t *lineTail) consume(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		t.mu.Lock()
		t.lines = append(t.lines, sc.Text())
		if len(t.lines) > t.max {
			t.lines = t.lines[1:]
		}
		t.mu.Unlock()
	}
}

func (t *lineTail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.Join(t.lines, "\n")
}
