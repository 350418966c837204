package backup

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"time"

	"github.com/go-logr/logr"

	"github.com/replicant-dev/replicant/mysql"
)

// ReplayOptions are the programs a replay runs (defaults: found on PATH).
type ReplayOptions struct {
	// Flavor is the restored cluster's (mariadb, the default, or mysql): a backup of
	// the other flavor is refused.
	Flavor string
	// Server, Binlog, Client: mariadbd, mariadb-binlog, mariadb (MySQL: mysqld,
	// mysqlbinlog, mysql).
	Server, Binlog, Client string
	// Wrapper is put before each program (a test's dynamic loader for binaries of
	// another root filesystem), ServerOptions after the server's own options.
	Wrapper, ServerOptions []string
	// Scratch is a directory for the downloaded binlogs (default: beside the datadir).
	Scratch string
	// StartTimeout bounds the private server's start (default 5m: crash recovery).
	StartTimeout time.Duration
	Log          logr.Logger
}

func (o *ReplayOptions) defaults() {
	programs := [3]string{"mariadbd", "mariadb-binlog", "mariadb"}
	if o.Flavor == "mysql" {
		programs = [3]string{"mysqld", "mysqlbinlog", "mysql"}
	}
	for i, p := range []*string{&o.Server, &o.Binlog, &o.Client} {
		if *p == "" {
			*p = programs[i]
		}
	}
	if o.StartTimeout == 0 {
		o.StartTimeout = 5 * time.Minute
	}
}

// command runs program with the wrapper before it.
func (o *ReplayOptions) command(ctx context.Context, program string, args ...string) *exec.Cmd {
	argv := append(append(append([]string{}, o.Wrapper...), program), args...)
	return exec.CommandContext(ctx, argv[0], argv[1:]...)
}

// Replay brings a prepared datadir from the backup's position to target: it starts
// a private server on it (no network, a socket in a private directory), sets its
// binlog state to the backup's position, feeds it the planned binlogs through
// mariadb-binlog (--start-position exclusive, --stop-position inclusive,
// --stop-datetime exclusive, in UTC), and stops it. The replayed transactions keep
// their GTIDs and are the restored server's first binlog, so it continues the
// cluster's numbering. It returns the position reached.
func (c *Cluster) Replay(ctx context.Context, datadir string, base Manifest, steps []ReplayStep, target RestoreTarget, opts ReplayOptions) (mysql.GTIDSet, error) {
	opts.defaults()
	// The private server's socket, pid file, error log and client config; the
	// downloaded binlogs too unless opts.Scratch names a place.
	private, err := os.MkdirTemp("", "replicant-replay-")
	if err != nil {
		return mysql.GTIDSet{}, err
	}
	defer os.RemoveAll(private)
	scratch := opts.Scratch
	if scratch == "" {
		scratch = private
	}
	if base.Flavor == "mysql" {
		return c.replayMySQL(ctx, datadir, private, scratch, steps, target, opts)
	}
	log := opts.Log
	password := randomHex(24)
	const replayUser = "replicant_replay"
	// The account the replay logs in with exists only while the private server runs:
	// created by its init file (not binlogged), dropped before it stops.
	initFile := filepath.Join(private, "init.sql")
	if err := os.WriteFile(initFile, []byte(fmt.Sprintf(
		"SET sql_log_bin=0;\nCREATE OR REPLACE USER '%s'@'localhost' IDENTIFIED BY '%s';\nGRANT ALL PRIVILEGES ON *.* TO '%s'@'localhost' WITH GRANT OPTION;\n",
		replayUser, password, replayUser)), 0o600); err != nil {
		return mysql.GTIDSet{}, err
	}
	clientCnf := filepath.Join(private, "client.cnf")
	socket := filepath.Join(private, "mysqld.sock")
	if err := os.WriteFile(clientCnf, []byte(fmt.Sprintf("[client]\nuser=%s\npassword=%s\nsocket=%s\n", replayUser, password, socket)), 0o600); err != nil {
		return mysql.GTIDSet{}, err
	}
	args, err := replayServerArgs(private, datadir, initFile)
	if err != nil {
		return mysql.GTIDSet{}, err
	}
	args = append(args, "--init-file="+initFile,
		"--log-bin=mysql-bin", "--log-bin-index=mysql-bin.index", "--server-id=1", "--gtid-strict-mode=ON", "--skip-slave-start")
	server, db, err := startReplayServer(ctx, opts, private, args, replayUser, password)
	if err != nil {
		return mysql.GTIDSet{}, err
	}
	defer server.close()
	defer db.Close()
	// The restored server's binlog starts at the backup's position: the replay, and
	// the cluster's writes after it, continue its GTID numbering.
	if _, err := db.ExecContext(ctx, "RESET MASTER"); err != nil {
		return mysql.GTIDSet{}, fmt.Errorf("reset the restored server's binlog: %w", err)
	}
	if _, err := db.ExecContext(ctx, "SET GLOBAL gtid_binlog_state = ?", base.GTID); err != nil {
		return mysql.GTIDSet{}, fmt.Errorf("set the restored server's binlog state to the backup's %s: %w", base.GTID, err)
	}
	log.Info("replaying binlogs", "files", len(steps), "from", base.GTID, "to", target.String())
	for _, step := range steps {
		if err := c.replayOne(ctx, step, mariadbBinlogArgs(step, target), scratch, clientCnf, opts); err != nil {
			return mysql.GTIDSet{}, err
		}
	}
	var reached string
	if err := db.QueryRowContext(ctx, "SELECT @@gtid_binlog_pos").Scan(&reached); err != nil {
		return mysql.GTIDSet{}, err
	}
	pos, err := mysql.ParseGTIDSet(reached)
	if err != nil {
		return mysql.GTIDSet{}, err
	}
	if !target.GTID.Empty() && !pos.Reaches(target.GTID) {
		return mysql.GTIDSet{}, fmt.Errorf("the replay ended at %s, short of %s: the archived binlogs do not hold it", pos, target)
	}
	if _, err := db.ExecContext(ctx, "SET sql_log_bin=0"); err != nil {
		return mysql.GTIDSet{}, err
	}
	if _, err := db.ExecContext(ctx, "DROP USER '"+replayUser+"'@'localhost'"); err != nil {
		return mysql.GTIDSet{}, err
	}
	if err := server.shutdown(ctx, db); err != nil {
		return mysql.GTIDSet{}, err
	}
	log.Info("binlogs replayed", "reached", pos.String())
	return pos, nil
}

// mariadbBinlogArgs selects a step's transactions with mariadb-binlog: from its
// position (exclusive) up to its stop or the target (inclusive), before the target's
// time.
func mariadbBinlogArgs(step ReplayStep, target RestoreTarget) []string {
	args := []string{"--start-position=" + step.From.String()}
	switch stop := step.Stop; {
	case !target.GTID.Empty() && (stop.Empty() || stop.Reaches(target.GTID)):
		args = append(args, "--stop-position="+target.GTID.String())
	case !stop.Empty():
		args = append(args, "--stop-position="+stop.String())
	}
	if target.GTID.Empty() {
		args = append(args, "--stop-datetime="+target.Time.UTC().Format("2006-01-02 15:04:05"))
	}
	return args
}

// replayOne downloads one archived binlog (checksum verified before it is used) and
// pipes the binlog reader's output for it (with args) into the private server.
func (c *Cluster) replayOne(ctx context.Context, step ReplayStep, args []string, scratch, clientCnf string, opts ReplayOptions) error {
	local := filepath.Join(scratch, filepath.Base(step.Binlog.Key))
	defer os.Remove(local)
	if err := c.download(ctx, step.Binlog, local); err != nil {
		return err
	}
	args = append(args, local)
	dump := opts.command(ctx, opts.Binlog, args...)
	dump.Env = append(os.Environ(), "TZ=UTC")
	apply := opts.command(ctx, opts.Client, "--defaults-extra-file="+clientCnf, "--binary-mode")
	pipe, err := dump.StdoutPipe()
	if err != nil {
		return err
	}
	apply.Stdin = pipe
	var dumpErr, applyErr strings.Builder
	dump.Stderr, apply.Stderr = &dumpErr, &applyErr
	if err := dump.Start(); err != nil {
		return fmt.Errorf("%s: %w", opts.Binlog, err)
	}
	if err := apply.Run(); err != nil {
		dump.Process.Kill()
		dump.Wait()
		return fmt.Errorf("replaying %s (%s of server %d) from %s: %v: %s", step.Binlog.Key, step.Binlog.Name, step.Binlog.ServerID, step.From, err, lastLines(applyErr.String(), 5))
	}
	if err := dump.Wait(); err != nil {
		return fmt.Errorf("reading %s with %s: %v: %s", step.Binlog.Key, opts.Binlog, err, lastLines(dumpErr.String(), 5))
	}
	opts.Log.Info("binlog replayed", "file", step.Binlog.Name, "server", step.Binlog.ServerID, "from", step.From.String(), "upTo", step.Stop.String())
	return nil
}

func (c *Cluster) download(ctx context.Context, rec ArchivedBinlog, local string) error {
	r, err := c.OpenBinlog(ctx, rec)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(local, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		r.Close()
		return err
	}
	_, copyErr := io.Copy(f, r)
	closeErr := r.Close() // verifies size and checksum
	if err := f.Close(); err != nil && copyErr == nil {
		copyErr = err
	}
	if copyErr != nil {
		return fmt.Errorf("download %s: %v", c.where.Child(rec.Key+".zst"), copyErr)
	}
	return closeErr
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// datadirOwner is the name of the datadir's owner (the server's user in a pod).
func datadirOwner(datadir string) string {
	uid, _ := ownerIDs(datadir)
	if u, err := user.LookupId(fmt.Sprint(uid)); err == nil {
		return u.Username
	}
	return "root"
}
