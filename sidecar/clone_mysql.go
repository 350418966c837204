package sidecar

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	gomysql "github.com/go-sql-driver/mysql"
)

// CloneInstanceConfig is a MySQL clone: MySQL's own CLONE plugin copies a running
// donor's data over its port, so no third-party tool is needed.
type CloneInstanceConfig struct {
	// Datadir is the empty datadir (a volume's root) to fill.
	Datadir string
	// Donor is the donor server's host:port; User and Password an account with
	// BACKUP_ADMIN there (replicant's replication account has it on MySQL).
	Donor          string
	User, Password string
	// Mysqld is the command that runs the image's mysqld (default "mysqld"), and
	// MysqldOptions options it needs besides its defaults (a test's basedir).
	Mysqld        []string
	MysqldOptions []string
	Log           logr.Logger
}

// mysqlVersionMismatch is ER_CLONE_DONOR_VERSION: CLONE needs one version on both
// sides.
const mysqlVersionMismatch = 3864

// CloneInstance fills an empty datadir from a running MySQL donor: it initialises a
// private server in a work directory inside the datadir's volume (no network, a unix
// socket only), has it CLONE INSTANCE FROM the donor into a second work directory,
// reads the GTID set the copy ends at, stops the private server, and only then moves
// the copy into place (the same marker protocol as a MariaDB clone: an interruption
// leaves no half datadir, the next start removes what is left). It returns the GTID
// set the copy ends at, which is also recorded in CloneRecordFile.
func CloneInstance(ctx context.Context, cfg CloneInstanceConfig) (gtid string, err error) {
	log := cfg.Log
	if present, what := dataPresent(cfg.Datadir); present {
		return "", fmt.Errorf("clone into %s: it already holds a server (%s)", cfg.Datadir, what)
	}
	work, err := os.MkdirTemp(cfg.Datadir, tmpPrefix)
	if err != nil {
		return "", fmt.Errorf("clone: %w", err)
	}
	defer func() {
		if err != nil {
			os.RemoveAll(work)
		}
	}()
	target := filepath.Join(work, "data")
	private, cleanup, err := newPrivateServer(cfg, work, filepath.Join(work, "private"))
	if err != nil {
		return "", err
	}
	defer cleanup()
	start := time.Now()
	if err := private.initialise(ctx); err != nil {
		return "", err
	}
	if err := private.start(ctx); err != nil {
		return "", err
	}
	defer private.stop()
	if err := private.cloneFrom(ctx, target); err != nil {
		return "", err
	}
	private.stop()
	log.Info("clone received; starting it privately to check it", "donor", cfg.Donor, "seconds", time.Since(start).Seconds())
	if gtid, err = adoptCopy(ctx, private, target, cfg.Donor); err != nil {
		return "", err
	}
	log.Info("clone complete", "donor", cfg.Donor, "gtid", gtid, "seconds", time.Since(start).Seconds())
	return gtid, nil
}

// adoptCopy checks a copy of a MySQL datadir at target (inside the private server's
// work directory, on the datadir's volume) and moves it into place: the copy is
// recovered and checked by a private start on it before the server container ever
// sees it, its GTID set (where replication continues) is read and recorded, and the
// source's server UUID is dropped (the server makes its own).
func adoptCopy(ctx context.Context, private *privateServer, target, source string) (gtid string, err error) {
	private.datadir = target
	// The copy holds the source's accounts (root has the image's password there): the
	// check logs in through the socket without grant tables (which also keeps the
	// network off).
	if err := private.start(ctx, "--skip-grant-tables"); err != nil {
		return "", fmt.Errorf("copy from %s: it does not start: %w", source, err)
	}
	if gtid, err = private.executed(ctx); err != nil {
		return "", err
	}
	private.stop()
	if err := os.Remove(filepath.Join(target, "auto.cnf")); err != nil && !os.IsNotExist(err) {
		return "", err
	}
	rec, _ := json.Marshal(CloneRecord{Source: source, GTID: gtid, Finished: time.Now().UTC()})
	if err := os.WriteFile(filepath.Join(target, CloneRecordFile), rec, 0o644); err != nil {
		return "", err
	}
	if err := chownToServerUser(target); err != nil {
		return "", err
	}
	if err := moveIntoPlace(target, private.cfg.Datadir); err != nil {
		return "", err
	}
	return gtid, os.RemoveAll(private.dir)
}

// newPrivateServer is a throw-away mysqld (cfg.Mysqld, default "mysqld") with its log
// and pid file in dir, on datadir (which start may change). Its socket lives in a short
// directory of its own (a socket's path must stay under 108 bytes), which cleanup
// removes.
func newPrivateServer(cfg CloneInstanceConfig, dir, datadir string) (p *privateServer, cleanup func(), err error) {
	if len(cfg.Mysqld) == 0 {
		cfg.Mysqld = []string{"mysqld"}
	}
	sockDir, err := os.MkdirTemp("", "rmysqld-")
	if err != nil {
		return nil, nil, err
	}
	p = &privateServer{cfg: cfg, dir: dir, datadir: datadir, socket: filepath.Join(sockDir, "mysqld.sock")}
	return p, func() { os.RemoveAll(sockDir) }, nil
}

// privateServer is the throw-away mysqld a MySQL clone, restore or backup check runs.
type privateServer struct {
	cfg     CloneInstanceConfig
	dir     string // the work directory
	datadir string // the datadir it runs on
	socket  string
	cmd     *exec.Cmd
	done    chan error
}

func (p *privateServer) command(ctx context.Context, options ...string) *exec.Cmd {
	args := append(append(append([]string{}, p.cfg.Mysqld[1:]...), "--no-defaults"), p.cfg.MysqldOptions...)
	cmd := exec.CommandContext(ctx, p.cfg.Mysqld[0], append(args, options...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	return cmd
}

func (p *privateServer) logPath() string { return filepath.Join(p.dir, "mysqld.log") }

func (p *privateServer) common() []string {
	return []string{"--datadir=" + p.datadir, "--user=" + currentUserName(),
		"--secure-file-priv=" + p.dir, "--log-error=" + p.logPath()}
}

func (p *privateServer) initialise(ctx context.Context) error {
	if out, err := p.command(ctx, append(p.common(), "--initialize-insecure")...).CombinedOutput(); err != nil {
		log, _ := os.ReadFile(p.logPath())
		return fmt.Errorf("clone: initialise the private server: %v: %s%s", err, out, lastLines(string(log), 10))
	}
	return nil
}

func (p *privateServer) start(ctx context.Context, options ...string) error {
	// --skip-replica-start: a copy of a replica holds its replication settings, and
	// --skip-networking stops only connections to the private server, not its own
	// to a source.
	p.cmd = p.command(context.Background(), append(append(p.common(), "--socket="+p.socket, "--skip-networking", "--mysqlx=OFF",
		"--skip-replica-start", "--pid-file="+filepath.Join(p.dir, "mysqld.pid"), "--plugin-load-add=mysql_clone.so"), options...)...)
	if err := p.cmd.Start(); err != nil {
		return fmt.Errorf("clone: start the private server: %w", err)
	}
	p.done = make(chan error, 1)
	go func() { p.done <- p.cmd.Wait() }()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		db, err := p.open(5 * time.Second)
		if err == nil {
			err = db.PingContext(ctx)
			db.Close()
		}
		if err == nil {
			return nil
		}
		select {
		case werr := <-p.done:
			p.done <- werr
			log, _ := os.ReadFile(p.logPath())
			return fmt.Errorf("clone: the private server exited during start-up (%v): %s", werr, lastLines(string(log), 10))
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("clone: the private server does not answer after 2 minutes: %v", err)
		}
	}
}

func (p *privateServer) open(readTimeout time.Duration) (*sql.DB, error) {
	c := gomysql.NewConfig()
	c.User, c.Net, c.Addr = "root", "unix", p.socket
	c.Timeout, c.ReadTimeout = 5*time.Second, readTimeout
	c.InterpolateParams = true
	connector, err := gomysql.NewConnector(c)
	if err != nil {
		return nil, err
	}
	return sql.OpenDB(connector), nil
}

// cloneFrom runs CLONE INSTANCE into target.
func (p *privateServer) cloneFrom(ctx context.Context, target string) error {
	host, port, err := net.SplitHostPort(p.cfg.Donor)
	if err != nil {
		return fmt.Errorf("clone: donor %q: want host:port", p.cfg.Donor)
	}
	portNumber, err := strconv.Atoi(port)
	if err != nil {
		return fmt.Errorf("clone: donor %q: want host:port", p.cfg.Donor)
	}
	db, err := p.open(0) // a clone takes as long as the data needs: ctx bounds it
	if err != nil {
		return err
	}
	defer db.Close()
	conn, err := db.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "SET GLOBAL clone_valid_donor_list = ?", p.cfg.Donor); err != nil {
		return fmt.Errorf("clone: %w", err)
	}
	_, err = conn.ExecContext(ctx, "CLONE INSTANCE FROM ?@?:? IDENTIFIED BY ? DATA DIRECTORY = ?",
		p.cfg.User, host, portNumber, p.cfg.Password, target)
	var me *gomysql.MySQLError
	switch {
	case errors.As(err, &me) && me.Number == mysqlVersionMismatch:
		// The server's message names both versions.
		return fmt.Errorf("clone from %s: donor and recipient must run the same MySQL version (a CLONE rule; during an upgrade, clone from a server already upgraded): %s", p.cfg.Donor, me.Message)
	case err != nil:
		// Never the statement: it holds the password.
		return fmt.Errorf("clone from %s (the datadir is unchanged; Kubernetes retries): %w", p.cfg.Donor, err)
	}
	var state string
	if err := conn.QueryRowContext(ctx, "SELECT STATE FROM performance_schema.clone_status").Scan(&state); err != nil {
		return fmt.Errorf("clone: read its outcome: %w", err)
	}
	if state != "Completed" {
		return fmt.Errorf("clone from %s ended in state %q", p.cfg.Donor, state)
	}
	return nil
}

// executed is the GTID set the private server holds.
func (p *privateServer) executed(ctx context.Context) (string, error) {
	db, err := p.open(30 * time.Second)
	if err != nil {
		return "", err
	}
	defer db.Close()
	var gtid string
	if err := db.QueryRowContext(ctx, "SELECT @@global.gtid_executed").Scan(&gtid); err != nil {
		return "", fmt.Errorf("clone: read the copy's GTID set: %w", err)
	}
	return strings.Join(strings.Fields(gtid), ""), nil
}

// stop shuts the private server down (SIGTERM, then SIGKILL after a minute).
func (p *privateServer) stop() {
	if p.cmd == nil || p.cmd.Process == nil {
		return
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(time.Minute):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
	p.cmd = nil
}

// currentUserName is who the private server runs as: mysqld refuses root unless told.
func currentUserName() string {
	if os.Geteuid() == 0 {
		return "root"
	}
	if u := os.Getenv("USER"); u != "" {
		return u
	}
	return "mysql"
}

// restoreCopy fills an empty datadir from a MySQL backup (a tar archive of a CLONE
// LOCAL copy, as /xbackup streams it on MySQL): it is unpacked into a work directory
// inside the datadir's volume, used only once the source says it was whole (finished:
// its checksum matched), brought to a point in time by Replay when set, then checked
// and moved into place like a clone.
func restoreCopy(ctx context.Context, cfg CloneConfig, source string, open OpenBackupFunc) (err error) {
	work, err := os.MkdirTemp(cfg.Datadir, tmpPrefix)
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	defer func() {
		if err != nil {
			os.RemoveAll(work)
		}
	}()
	target := filepath.Join(work, "data")
	if err := os.Mkdir(target, 0o750); err != nil {
		return err
	}
	start := time.Now()
	n, err := receiveTar(ctx, cfg, open, target)
	if err != nil {
		return fmt.Errorf("restore from %s failed after %d bytes (the datadir is unchanged; Kubernetes retries): %w", source, n, err)
	}
	cfg.Log.Info("backup received", "bytes", n, "seconds", time.Since(start).Seconds())
	if cfg.Replay != nil {
		if _, err := cfg.Replay(ctx, target); err != nil {
			return fmt.Errorf("point-in-time recovery from %s (the datadir is unchanged; Kubernetes retries): %w", source, err)
		}
	}
	private, cleanup, err := newPrivateServer(CloneInstanceConfig{Datadir: cfg.Datadir, Mysqld: cfg.Mysqld,
		MysqldOptions: cfg.MysqldOptions, Log: cfg.Log}, work, target)
	if err != nil {
		return err
	}
	defer cleanup()
	gtid, err := adoptCopy(ctx, private, target, source)
	if err != nil {
		return err
	}
	cfg.Log.Info("restore complete", "source", source, "gtid", gtid, "bytes", n, "seconds", time.Since(start).Seconds())
	return nil
}

// receiveTar opens the stream and unpacks it into dir; the stream is read to its end
// (the archive's padding) and must then be whole.
func receiveTar(ctx context.Context, cfg CloneConfig, open OpenBackupFunc, dir string) (int64, error) {
	return receive(ctx, cfg, open, func(_ context.Context, stream io.Reader) error {
		if err := ExtractTar(stream, dir); err != nil {
			return err
		}
		_, err := io.Copy(io.Discard, stream)
		return err
	})
}
