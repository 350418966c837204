package backup

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	gomysql "github.com/go-sql-driver/mysql"

	"github.com/replicant-dev/replicant/mysql"
)

// replayMySQL is Replay on MySQL: a private mysqld on the restored copy (a unix socket
// in a private directory, no network, no grant tables, no replication, no binlog: the
// replayed transactions keep their GTIDs in gtid_executed, which a MySQL clone copies
// to the replicas), fed each planned binlog through mysqlbinlog, then stopped.
func (c *Cluster) replayMySQL(ctx context.Context, datadir string, base Manifest, steps []ReplayStep, target RestoreTarget, opts ReplayOptions) (mysql.GTIDSet, error) {
	log := opts.Log
	private, err := os.MkdirTemp("", "replicant-replay-")
	if err != nil {
		return mysql.GTIDSet{}, err
	}
	defer os.RemoveAll(private)
	scratch := opts.Scratch
	if scratch == "" {
		scratch = private
	}
	socket := filepath.Join(private, "mysqld.sock")
	clientCnf := filepath.Join(private, "client.cnf")
	if err := os.WriteFile(clientCnf, []byte(fmt.Sprintf("[client]\nuser=root\nsocket=%s\n", socket)), 0o600); err != nil {
		return mysql.GTIDSet{}, err
	}
	args := []string{"--no-defaults", "--datadir=" + datadir, "--socket=" + socket, "--skip-networking", "--mysqlx=OFF",
		"--pid-file=" + filepath.Join(private, "mysqld.pid"), "--skip-grant-tables", "--disable-log-bin",
		"--skip-replica-start", "--gtid-mode=ON", "--enforce-gtid-consistency=ON", "--secure-file-priv=" + private,
		"--log-error=" + filepath.Join(private, "error.log"), "--innodb-buffer-pool-size=256M"}
	if os.Getuid() == 0 { // mysqld runs as root only when told; the datadir's owner otherwise
		args = append(args, "--user="+datadirOwner(datadir))
		uid, gid := ownerIDs(datadir)
		if err := os.Chown(private, uid, gid); err != nil {
			return mysql.GTIDSet{}, err
		}
	}
	server := opts.command(context.Background(), opts.Server, append(args, opts.ServerOptions...)...)
	server.Stdout, server.Stderr = io.Discard, io.Discard
	if err := server.Start(); err != nil {
		return mysql.GTIDSet{}, fmt.Errorf("start %s on the restored datadir: %w", opts.Server, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- server.Wait() }()
	stopped := false
	defer func() {
		if !stopped {
			server.Process.Kill()
			<-exited
		}
	}()
	errorLog := func() string {
		data, _ := os.ReadFile(filepath.Join(private, "error.log"))
		return lastLines(string(data), 8)
	}
	cfg := gomysql.NewConfig()
	cfg.User, cfg.Net, cfg.Addr = "root", "unix", socket
	cfg.Timeout = 5 * time.Second
	connector, err := gomysql.NewConnector(cfg)
	if err != nil {
		return mysql.GTIDSet{}, err
	}
	db := sql.OpenDB(connector)
	defer db.Close()
	db.SetMaxOpenConns(1)
	for deadline := time.Now().Add(opts.StartTimeout); ; {
		if err = db.PingContext(ctx); err == nil {
			break
		}
		select {
		case werr := <-exited:
			stopped = true
			return mysql.GTIDSet{}, fmt.Errorf("the private server on the restored datadir stopped (%v): %s", werr, errorLog())
		case <-ctx.Done():
			return mysql.GTIDSet{}, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return mysql.GTIDSet{}, fmt.Errorf("the private server on the restored datadir did not answer within %v: %v: %s", opts.StartTimeout, err, errorLog())
		}
	}
	executed := func() (mysql.GTIDSet, error) {
		var text string
		if err := db.QueryRowContext(ctx, "SELECT @@global.gtid_executed").Scan(&text); err != nil {
			return mysql.GTIDSet{}, err
		}
		return mysql.ParseGTIDSet(strings.Join(strings.Fields(text), ""))
	}
	start, err := executed()
	if err != nil {
		return mysql.GTIDSet{}, err
	}
	log.Info("replaying binlogs", "files", len(steps), "from", start.String(), "to", target.String())
	for _, step := range steps {
		// Each step's From is what the plan has replayed before it: the copy holds at
		// least that (the backup's set), so every transaction of it is skipped.
		args, ok := mysqlBinlogArgs(step, target)
		if !ok {
			continue
		}
		if err := c.replayOne(ctx, step, args, scratch, clientCnf, opts); err != nil {
			return mysql.GTIDSet{}, err
		}
	}
	pos, err := executed()
	if err != nil {
		return mysql.GTIDSet{}, err
	}
	if !target.GTID.Empty() && !pos.Reaches(target.GTID) {
		return mysql.GTIDSet{}, fmt.Errorf("the replay ended at %s, short of %s: the archived binlogs do not hold it", pos, target)
	}
	if _, err := db.ExecContext(ctx, "SHUTDOWN"); err != nil {
		return mysql.GTIDSet{}, fmt.Errorf("stop the private server: %w", err)
	}
	select {
	case <-exited:
		stopped = true
	case <-time.After(5 * time.Minute):
		return mysql.GTIDSet{}, fmt.Errorf("the private server did not stop: %s", errorLog())
	}
	log.Info("binlogs replayed", "reached", pos.String())
	return pos, nil
}

// mysqlBinlogArgs selects a step's transactions with mysqlbinlog, by GTID set: those
// past its position, up to its stop or the target set, before the target's time. ok
// is false when the step selects nothing.
func mysqlBinlogArgs(step ReplayStep, target RestoreTarget) (args []string, ok bool) {
	upTo := step.Stop
	if !target.GTID.Empty() && (upTo.Empty() || upTo.Reaches(target.GTID)) {
		upTo = target.GTID
	}
	switch {
	case upTo.Empty() && !step.From.Empty():
		args = []string{"--exclude-gtids=" + step.From.String()}
	case !upTo.Empty():
		include := upTo.Errant(step.From)
		if include.Empty() {
			return nil, false
		}
		args = []string{"--include-gtids=" + include.String()}
	}
	if target.GTID.Empty() {
		args = append(args, "--stop-datetime="+target.Time.UTC().Format("2006-01-02 15:04:05"))
	}
	return args, true
}
