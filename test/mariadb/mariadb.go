// Package mariadb starts real database servers for tests: mariadbd (Debian's
// mariadb-server) or, with Options.Flavor "mysql", mysqld from the MySQL root
// filesystem the Makefile builds (Debian sid's mysql-server-core, run through that
// filesystem's own dynamic loader, so paths stay the host's). Each server gets its own
// loopback address and port 3306 like a pod, a throw-away datadir and the my.cnf
// fragment replicant's own `sidecar config` writes. Tests can stop, kill (SIGKILL) and
// restart a server; everything stops and is removed when the test ends, whatever its
// outcome.
package mariadb

import (
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/replicant-dev/replicant/sidecar"
)

// RootPassword is the password of root@'%' on every test server.
const RootPassword = "test-root-password"

// Server is one running (or stopped) mariadbd.
type Server struct {
	t       testing.TB
	Name    string // pod-like name, e.g. db-1
	Host    string // 127.0.x.y
	Port    int
	Dir     string // holds datadir, conf.d, socket, logs
	Datadir string
	Config  sidecar.ServerConfig

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
	db   *sql.DB
}

// Options of Start.
type Options struct {
	// Flavor is mariadb (the default) or mysql.
	Flavor     string
	Durability string // default semi-sync
	// Cluster is the StatefulSet-like name: servers are <Cluster>-0, -1, ...
	Cluster string
	// ExtraConfig is appended to the [mysqld] section of every server's my.cnf.
	ExtraConfig string
	// ReportHostIsAddress makes each server report its own IP as report_host (there is
	// no DNS for <pod>.<service>.<namespace> on loopback).
	ReportHostIsAddress bool
}

// Flavors lists the flavors every flavor-dependent test runs on.
var Flavors = []string{"mariadb", "mysql"}

// templates holds one initialised datadir per flavor and test process; servers start
// from copies of it (initialising takes seconds, a copy milliseconds).
var (
	templatesMu sync.Mutex
	templates   = map[string]*template{}
)

type template struct {
	once sync.Once
	root string // removed by Main
	dir  string // the initialised datadir inside it
	err  error
}

func templateFor(flavor string) (string, error) {
	templatesMu.Lock()
	tpl := templates[flavor]
	if tpl == nil {
		tpl = &template{}
		templates[flavor] = tpl
	}
	templatesMu.Unlock()
	tpl.once.Do(func() {
		dir, err := os.MkdirTemp("", "replicant-template-")
		if err != nil {
			tpl.err = err
			return
		}
		tpl.root = dir // removed by Main, also when the bootstrap fails
		// A private tmpdir: test packages run in parallel, and a shared /tmp let one
		// bootstrap trip over another's temporary tables.
		tmp := filepath.Join(dir, "tmp")
		datadir := filepath.Join(dir, "data")
		if err := os.Mkdir(tmp, 0o700); err != nil {
			tpl.err = err
			return
		}
		var cmd *exec.Cmd
		if flavor == "mysql" {
			cmd = mysqldCommand("--no-defaults", "--initialize-insecure", "--datadir="+datadir, "--user="+currentUser(),
				"--tmpdir="+tmp, "--secure-file-priv="+tmp, "--log-error="+filepath.Join(dir, "initialize.log"))
		} else {
			cmd = exec.Command("mariadb-install-db", "--no-defaults", "--datadir="+datadir, "--user="+currentUser(),
				"--auth-root-authentication-method=socket", "--skip-test-db", "--tmpdir="+tmp)
		}
		if out, err := cmd.CombinedOutput(); err != nil {
			log, _ := os.ReadFile(filepath.Join(dir, "initialize.log"))
			tpl.err = fmt.Errorf("initialise a %s datadir (`make deps mysql-rootfs`): %v\n%s%s", flavor, err, out, log)
			return
		}
		// A copy must not keep the template's server UUID: MySQL replicas refuse a
		// source with their own. Each server makes its own at its first start.
		_ = os.Remove(filepath.Join(datadir, "auto.cnf"))
		tpl.dir = datadir
	})
	return tpl.dir, tpl.err
}

// MySQLRoot is the MySQL root filesystem: $REPLICANT_MYSQL_ROOTFS, else bin/mysql-rootfs
// of this checkout (a link the Makefile's mysql-rootfs target makes into its cache).
func MySQLRoot() string {
	if dir := os.Getenv("REPLICANT_MYSQL_ROOTFS"); dir != "" {
		return dir
	}
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "bin", "mysql-rootfs")
}

// mysqldCommand runs the root filesystem's mysqld with its own dynamic loader and
// libraries: sid's mysqld needs a newer C library than the host's, and a chroot
// would hide the host's paths (datadirs, sockets) from it.
func mysqldCommand(args ...string) *exec.Cmd {
	cmd := MySQLCommand()
	return exec.Command(cmd[0], append(cmd[1:], args...)...)
}

// MySQLCommand is how to run the root filesystem's mysqld here (its first option
// may be --no-defaults, as for mysqld itself).
func MySQLCommand() []string {
	root := MySQLRoot()
	libs := filepath.Join(root, "usr", "lib", "x86_64-linux-gnu")
	return []string{filepath.Join(libs, "ld-linux-x86-64.so.2"), "--library-path", libs, filepath.Join(root, "usr", "sbin", "mysqld")}
}

// MySQLProgram is how to run another program of the root filesystem here (rel such
// as usr/bin/mysqlbinlog): the dynamic loader and library path (Wrapper), then the
// program.
func MySQLProgram(rel string) (wrapper []string, program string) {
	cmd := MySQLCommand()
	return cmd[:3], filepath.Join(MySQLRoot(), rel)
}

// MySQLOptions are the options that mysqld needs here for what the image provides
// at its usual paths (its files live inside the root filesystem).
func MySQLOptions() []string {
	root := MySQLRoot()
	return []string{"--basedir=" + filepath.Join(root, "usr"), "--plugin-dir=" + filepath.Join(root, "usr", "lib", "mysql", "plugin"),
		"--lc-messages-dir=" + filepath.Join(root, "usr", "share", "mysql"), "--character-sets-dir=" + filepath.Join(root, "usr", "share", "mysql", "charsets")}
}

func currentUser() string {
	if os.Geteuid() == 0 {
		return "root"
	}
	if u := os.Getenv("USER"); u != "" {
		return u
	}
	return "mysql"
}

// Start starts n servers in parallel and waits until each accepts connections.
func Start(t testing.TB, n int, opts Options) []*Server {
	t.Helper()
	if opts.Flavor == "" {
		opts.Flavor = "mariadb"
	}
	switch opts.Flavor {
	case "mariadb":
		if _, err := exec.LookPath("mariadbd"); err != nil {
			if _, err2 := os.Stat("/usr/sbin/mariadbd"); err2 != nil {
				t.Fatalf("mariadbd not found: run `make deps` (Debian mariadb-server)")
			}
		}
	case "mysql":
		if _, err := os.Stat(filepath.Join(MySQLRoot(), "usr", "sbin", "mysqld")); err != nil {
			t.Fatalf("mysqld not found in %s: run `make mysql-rootfs` (or set REPLICANT_MYSQL_ROOTFS)", MySQLRoot())
		}
	default:
		t.Fatalf("flavor %q: want mariadb or mysql", opts.Flavor)
	}
	tpl, err := templateFor(opts.Flavor)
	if err != nil {
		t.Fatal(err)
	}
	if opts.Durability == "" {
		opts.Durability = "semi-sync"
	}
	if opts.Cluster == "" {
		opts.Cluster = "db"
	}
	hosts := freeLoopbackHosts(t, n)
	servers := make([]*Server, n)
	for i := range servers {
		dir, err := os.MkdirTemp("", "rdb-") // short: the socket path must stay under 108 bytes
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		s := &Server{
			t: t, Name: fmt.Sprintf("%s-%d", opts.Cluster, i), Host: hosts[i], Port: 3306, Dir: dir,
			Datadir: filepath.Join(dir, "data"),
			Config: sidecar.ServerConfig{PodName: fmt.Sprintf("%s-%d", opts.Cluster, i), Namespace: "default",
				Service: "mysql", Flavor: opts.Flavor, ServerIDOffset: 100, Durability: opts.Durability},
		}
		if out, err := exec.Command("cp", "-a", tpl, s.Datadir).CombinedOutput(); err != nil {
			t.Fatalf("copy template datadir: %v %s", err, out)
		}
		if err := s.writeConfig(opts.ExtraConfig); err != nil {
			t.Fatal(err)
		}
		if opts.ReportHostIsAddress {
			override := "[mysqld]\nreport_host = " + s.Host + "\n"
			if err := os.WriteFile(filepath.Join(s.Dir, "conf.d", "zz-report-host.cnf"), []byte(override), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		servers[i] = s
		t.Cleanup(s.Kill)
	}
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i, s := range servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if errs[i] = s.start(); errs[i] == nil {
				errs[i] = s.bootstrapUsers()
			}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	return servers
}

// freeLoopbackHosts picks n addresses 127.a.b.c whose port 3306 is free now.
func freeLoopbackHosts(t testing.TB, n int) []string {
	t.Helper()
	var hosts []string
	for tries := 0; len(hosts) < n && tries < 200; tries++ {
		h := fmt.Sprintf("127.%d.%d.%d", 1+rand.IntN(250), rand.IntN(256), 1+rand.IntN(250))
		l, err := net.Listen("tcp", net.JoinHostPort(h, "3306"))
		if err != nil {
			continue
		}
		l.Close()
		hosts = append(hosts, h)
	}
	if len(hosts) < n {
		t.Fatalf("found only %d free loopback addresses with port 3306", len(hosts))
	}
	return hosts
}

// writeConfig writes the base my.cnf (what the image provides: paths, address) and
// replicant's fragment into conf.d, included last as in the real pod.
func (s *Server) writeConfig(extra string) error {
	confd := filepath.Join(s.Dir, "conf.d")
	tmp := filepath.Join(s.Dir, "tmp")
	for _, d := range []string{confd, tmp} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	if _, err := sidecar.WriteConfig(s.Config, confd, "", ""); err != nil {
		return err
	}
	flavorBase := "innodb_log_file_size = 48M\nperformance_schema = OFF\n"
	if s.Config.Flavor == "mysql" {
		// What the image provides (paths inside the root filesystem), no X protocol
		// (its port would clash between servers on one host), a small redo log.
		root := MySQLRoot()
		flavorBase = fmt.Sprintf("basedir = %s\nplugin_dir = %s\nlc_messages_dir = %s\ncharacter_sets_dir = %s\nsecure_file_priv = %s\nmysqlx = OFF\ninnodb_redo_log_capacity = 64M\n",
			filepath.Join(root, "usr"), filepath.Join(root, "usr", "lib", "mysql", "plugin"), filepath.Join(root, "usr", "share", "mysql"),
			filepath.Join(root, "usr", "share", "mysql", "charsets"), tmp)
	}
	base := fmt.Sprintf(`[mysqld]
user = %s
datadir = %s
socket = %s
pid-file = %s
log-error = %s
bind-address = %s
port = %d
skip-name-resolve = ON
tmpdir = %s
innodb_buffer_pool_size = 32M
max_connections = 100
%s%s
!includedir %s
`, currentUser(), s.Datadir, s.Socket(), filepath.Join(s.Dir, "mysqld.pid"), s.LogPath(), s.Host, s.Port, tmp, flavorBase, extra, confd)
	return os.WriteFile(s.ConfigPath(), []byte(base), 0o644)
}

// ConfigPath is the my.cnf the server runs with (mariadb-backup reads it too).
func (s *Server) ConfigPath() string { return filepath.Join(s.Dir, "my.cnf") }

// Socket is the server's unix socket.
func (s *Server) Socket() string { return filepath.Join(s.Dir, "mysqld.sock") }

// LogPath is the server's error log.
func (s *Server) LogPath() string { return filepath.Join(s.Dir, "error.log") }

// Addr is host:port.
func (s *Server) Addr() string { return net.JoinHostPort(s.Host, strconv.Itoa(s.Port)) }

func (s *Server) start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		return fmt.Errorf("%s already running", s.Name)
	}
	var cmd *exec.Cmd
	if s.Config.Flavor == "mysql" {
		cmd = mysqldCommand("--defaults-file=" + s.ConfigPath())
	} else {
		bin := "mariadbd"
		if _, err := exec.LookPath(bin); err != nil {
			bin = "/usr/sbin/mariadbd"
		}
		cmd = exec.Command(bin, "--defaults-file="+s.ConfigPath())
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", s.Name, err)
	}
	s.cmd, s.done = cmd, make(chan struct{})
	done := s.done
	go func() {
		err := cmd.Wait()
		s.mu.Lock()
		unexpected := s.cmd == cmd // Stop and Kill clear s.cmd before they signal
		if unexpected {
			s.cmd = nil
		}
		s.mu.Unlock()
		if unexpected {
			s.t.Logf("%s (%s) exited on its own: %v; log:\n%s", s.Name, s.Addr(), err, s.tailLog())
		}
		close(done)
	}()

	deadline := time.Now().Add(60 * time.Second)
	for {
		db, err := sql.Open("mysql", s.socketDSN())
		if err == nil {
			err = db.Ping()
			db.Close()
		}
		if err == nil {
			return nil
		}
		select {
		case <-done:
			return fmt.Errorf("%s exited during start-up; log:\n%s", s.Name, s.tailLog())
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not accepting connections after 60s: %v; log:\n%s", s.Name, err, s.tailLog())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (s *Server) socketDSN() string {
	cfg := mysql.NewConfig()
	cfg.User, cfg.Net, cfg.Addr = "root", "unix", s.Socket()
	cfg.Timeout = 2 * time.Second
	return cfg.FormatDSN()
}

// bootstrapUsers creates root@'%' with a password, as the official images do with
// MARIADB_ROOT_PASSWORD / MYSQL_ROOT_PASSWORD, over the socket (root@localhost
// authenticates by unix_socket on MariaDB, has no password on MySQL).
func (s *Server) bootstrapUsers() error {
	db, err := sql.Open("mysql", s.socketDSN())
	if err != nil {
		return err
	}
	defer db.Close()
	db.SetMaxOpenConns(1) // one session: sql_log_bin holds for every statement
	stmts := []string{
		"SET SESSION sql_log_bin = 0", // provisioning is not replicated: every server does it
		"CREATE USER IF NOT EXISTS 'root'@'%' IDENTIFIED BY '" + RootPassword + "'",
		"GRANT ALL PRIVILEGES ON *.* TO 'root'@'%' WITH GRANT OPTION",
	}
	if s.Config.Flavor == "mysql" {
		// super_read_only (replicant's fragment) holds off even root; the image's
		// entrypoint provisions before that fragment applies.
		stmts = append(append([]string{"SET GLOBAL super_read_only = OFF"}, stmts...), "SET GLOBAL super_read_only = ON")
	}
	for _, stmt := range stmts {
		if _, err := db.Exec(stmt); err != nil {
			return fmt.Errorf("%s: bootstrap users: %w", s.Name, err)
		}
	}
	return nil
}

// DB is a connection pool as root over TCP (one per server), closed when the test ends.
func (s *Server) DB() *sql.DB {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.db != nil {
		return s.db
	}
	cfg := mysql.NewConfig()
	cfg.User, cfg.Passwd, cfg.Net, cfg.Addr = "root", RootPassword, "tcp", s.Addr()
	cfg.Timeout, cfg.ReadTimeout, cfg.WriteTimeout = 2*time.Second, 30*time.Second, 30*time.Second
	db, err := sql.Open("mysql", cfg.FormatDSN())
	if err != nil {
		s.t.Fatal(err)
	}
	db.SetMaxOpenConns(8)
	s.t.Cleanup(func() { db.Close() })
	s.db = db
	return db
}

// Exec runs statements as root, failing the test on error.
func (s *Server) Exec(ctx context.Context, stmts ...string) {
	s.t.Helper()
	db := s.DB()
	for _, q := range stmts {
		if _, err := db.ExecContext(ctx, q); err != nil {
			s.t.Fatalf("%s: %s: %v", s.Name, q, err)
		}
	}
}

// Stop shuts the server down gracefully (SIGTERM) and waits.
func (s *Server) Stop() { s.signal(syscall.SIGTERM, 60*time.Second) }

// Kill kills the server with SIGKILL, as a node failure would.
func (s *Server) Kill() { s.signal(syscall.SIGKILL, 10*time.Second) }

func (s *Server) signal(sig syscall.Signal, wait time.Duration) {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = syscall.Kill(-cmd.Process.Pid, sig)
	select {
	case <-done:
	case <-time.After(wait):
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
	}
}

// Freeze stops the server's process (SIGSTOP): it accepts connections in the kernel's
// backlog and answers nothing, as a hung server or a black-holed network does. Thaw
// lets it run on. A frozen server is still killed by Kill and by the test's cleanup.
func (s *Server) Freeze() { s.sendToGroup(syscall.SIGSTOP) }

// Thaw resumes a frozen server (SIGCONT).
func (s *Server) Thaw() { s.sendToGroup(syscall.SIGCONT) }

func (s *Server) sendToGroup(sig syscall.Signal) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		_ = syscall.Kill(-s.cmd.Process.Pid, sig)
	}
}

// Restart starts the server again on the same datadir (after Stop or Kill).
func (s *Server) Restart() {
	s.t.Helper()
	if err := s.start(); err != nil {
		s.t.Fatal(err)
	}
}

// Running reports whether the process is up.
func (s *Server) Running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cmd != nil
}

func (s *Server) tailLog() string {
	data, _ := os.ReadFile(s.LogPath())
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	if len(lines) > 20 {
		lines = lines[len(lines)-20:]
	}
	return strings.Join(lines, "\n")
}

// Main runs a package's tests and then removes the shared template datadir; call it
// from TestMain: func TestMain(m *testing.M) { os.Exit(mariadb.Main(m)) }.
func Main(m *testing.M) int {
	code := m.Run()
	templatesMu.Lock()
	defer templatesMu.Unlock()
	for _, tpl := range templates {
		if tpl.root != "" {
			os.RemoveAll(tpl.root)
		}
	}
	return code
}

// Fill writes about mib MiB of rows into bench.t, doubling a table, for benchmarks
// (not written to the binlog: they are about the datadir).
func Fill(t testing.TB, s *Server, mib int) {
	t.Helper()
	conn, err := s.DB().Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	pad := "REPEAT(MD5(RAND()), 31)"
	first := "INSERT INTO bench.t (pad) SELECT " + pad + " FROM bench.seq_1_to_1024" // MariaDB's sequence engine
	if s.Config.Flavor == "mysql" {
		pad = "REPEAT(SHA2(RAND(), 256), 15)"                                                                                                                                          // MySQL 9 has no MD5()
		first = "INSERT INTO bench.t (pad) SELECT " + pad + " FROM (WITH RECURSIVE seq (n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM seq WHERE n < 1000) SELECT n FROM seq) AS numbers" // (cte_max_recursion_depth)
	}
	for _, q := range []string{"SET SESSION sql_log_bin = 0", "CREATE DATABASE bench",
		"CREATE TABLE bench.t (id BIGINT AUTO_INCREMENT PRIMARY KEY, pad VARCHAR(1000)) ENGINE=InnoDB", first} {
		if _, err := conn.ExecContext(context.Background(), q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	for rows := 1024; rows < mib*1024; rows *= 2 {
		if _, err := conn.ExecContext(context.Background(), "INSERT INTO bench.t (pad) SELECT "+pad+" FROM bench.t"); err != nil {
			t.Fatal(err)
		}
	}
}
