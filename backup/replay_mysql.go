package backup

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/replicant-dev/replicant/mysql"
)

// replayMySQL is Replay on MySQL: a private mysqld on the restored copy (a unix socket
// in a private directory, no network, no grant tables, no replication, no binlog: the
// replayed transactions keep their GTIDs in gtid_executed, which a MySQL clone copies
// to the replicas), fed each planned binlog through mysqlbinlog, then stopped.
func (c *Cluster) replayMySQL(ctx context.Context, datadir, private, scratch string, steps []ReplayStep, target RestoreTarget, opts ReplayOptions) (mysql.GTIDSet, error) {
	log := opts.Log
	clientCnf := filepath.Join(private, "client.cnf")
	if err := os.WriteFile(clientCnf, []byte(fmt.Sprintf("[client]\nuser=root\nsocket=%s\n", filepath.Join(private, "mysqld.sock"))), 0o600); err != nil {
		return mysql.GTIDSet{}, err
	}
	args, err := replayServerArgs(private, datadir)
	if err != nil {
		return mysql.GTIDSet{}, err
	}
	args = append(args, "--mysqlx=OFF", "--skip-grant-tables", "--disable-log-bin",
		"--skip-replica-start", "--gtid-mode=ON", "--enforce-gtid-consistency=ON", "--secure-file-priv="+private)
	server, db, err := startReplayServer(ctx, opts, private, args, "root", "")
	if err != nil {
		return mysql.GTIDSet{}, err
	}
	defer server.close()
	defer db.Close()
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
	if err := server.shutdown(ctx, db); err != nil {
		return mysql.GTIDSet{}, err
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
