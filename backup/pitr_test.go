package backup_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"gocloud.dev/blob"

	"github.com/replicant-dev/replicant/backup"
	"github.com/replicant-dev/replicant/test/mariadb"
	"github.com/replicant-dev/replicant/test/objectstore"
)

// restoreToPoint empties s's datadir, restores the cluster's backups at uri to
// restoreTo through the clone step, and starts s on the result.
func restoreToPoint(t *testing.T, s *mariadb.Server, uri, restoreTo string) error {
	t.Helper()
	opts := backup.ReplayOptions{Log: testr.New(t)}
	if s.Config.Flavor == "mysql" {
		opts.Flavor, opts.ServerOptions = "mysql", mariadb.MySQLOptions()
		opts.Wrapper, opts.Server = mariadb.MySQLProgram("usr/sbin/mysqld")
		_, opts.Binlog = mariadb.MySQLProgram("usr/bin/mysqlbinlog")
		_, opts.Client = mariadb.MySQLProgram("usr/bin/mysql")
	}
	open, replay := backup.PointInTimeRestorer(uri, restoreTo, opts)
	return restoreWith(t, s, uri, open, replay)
}

// insert writes one row to app.t and returns its transaction's GTID.
func insert(t *testing.T, s *mariadb.Server, v string) string {
	t.Helper()
	conn, err := s.DB().Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(context.Background(), "INSERT INTO app.t (v) VALUES (?)", v); err != nil {
		t.Fatal(err)
	}
	var gtid string
	if err := conn.QueryRowContext(context.Background(), "SELECT @@last_gtid").Scan(&gtid); err != nil {
		t.Fatal(err)
	}
	return gtid
}

// values lists app.t's v column on s.
func values(t *testing.T, s *mariadb.Server) string {
	t.Helper()
	var out string
	if err := s.DB().QueryRow("SELECT IFNULL(GROUP_CONCAT(v ORDER BY id), '') FROM app.t WHERE v NOT LIKE 'xxxx%'").Scan(&out); err != nil {
		t.Fatalf("%s: %v", s.Name, err)
	}
	return out
}

// TestPointInTimeRecovery: a backup, then writes across a binlog rotation, archived
// from the master's sidecar to rclone's S3 server; a new server restored to a time
// between two writes holds the one before and not the one after, and one restored to
// a GTID holds exactly the transactions up to it. A removed binlog is a gap that a
// restore names and refuses; a target beyond the archive is refused too.
func TestPointInTimeRecovery(t *testing.T) {
	ctx := context.Background()
	store := objectstore.Start(t)
	servers := mariadb.Start(t, 2, mariadb.Options{})
	src, target := servers[0], servers[1]
	url := donor(t, src, 20)
	uri := store.URI("pitr")
	c, err := backup.OpenCluster(ctx, uri, "default", "db")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := c.Take(ctx, takeOptions(t, url)); err != nil {
		t.Fatal(err)
	}
	insert(t, src, "a")
	gtidB := insert(t, src, "b")
	src.Exec(ctx, "FLUSH BINARY LOGS")
	insert(t, src, "c")
	// The target is a whole second after "c" was written and before "d" is.
	point := time.Now().UTC().Truncate(time.Second).Add(time.Second)
	time.Sleep(time.Until(point) + 200*time.Millisecond)
	insert(t, src, "d")

	archiver := backup.ArchiveOptions{Source: url, User: backupUser, Password: backupPassword, Flush: true, Log: testr.New(t)}
	res, err := c.Archive(ctx, archiver)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Uploaded) < 2 || res.Newest.Before(point) {
		t.Fatalf("archived %d files reaching %v, want at least 2 reaching %v", len(res.Uploaded), res.Newest, point)
	}
	if again, err := c.Archive(ctx, archiver); err != nil || len(again.Uploaded) != 0 {
		t.Fatalf("a second run with nothing new uploaded %d files: %v", len(again.Uploaded), err)
	}

	if err := restoreToPoint(t, target, store.URI("pitr/default/db"), point.Format(time.RFC3339)); err != nil {
		t.Fatal(err)
	}
	if got := values(t, target); got != "a,b,c" {
		t.Errorf("restored to %v: rows %q, want a,b,c", point, got)
	}
	if err := restoreToPoint(t, target, store.URI("pitr/default/db/latest"), gtidB); err != nil {
		t.Fatal(err)
	}
	if got := values(t, target); got != "a,b" {
		t.Errorf("restored to %s: rows %q, want a,b", gtidB, got)
	}
	// The restored server continues the cluster's numbering: its binlog is at gtidB.
	var pos string
	target.DB().QueryRow("SELECT @@gtid_binlog_pos").Scan(&pos)
	if pos != gtidB {
		t.Errorf("the restored server's binlog is at %q, want %q", pos, gtidB)
	}

	beyond := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	if _, _, err := c.PlanRestore(ctx, mustTarget(t, beyond)); err == nil || !strings.Contains(err.Error(), "does not reach") {
		t.Errorf("a target an hour ahead: %v", err)
	}

	// A gap: the file holding "a" and "b" is lost.
	binlogs, err := c.Binlogs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	bucket, err := blob.OpenBucket(ctx, strings.Replace(store.URI(""), "/?", "?", 1))
	if err != nil {
		t.Fatal(err)
	}
	defer bucket.Close()
	if err := bucket.Delete(ctx, "pitr/default/db/"+binlogs[0].Key+".json"); err != nil {
		t.Fatal(err)
	}
	_, _, err = c.PlanRestore(ctx, mustTarget(t, point.Format(time.RFC3339)))
	if !errors.Is(err, backup.ErrArchiveGap) || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("a lost binlog: %v", err)
	}
	t.Logf("the gap, as a user sees it: %v", err)
	if err := restoreToPoint(t, target, store.URI("pitr/default/db"), point.Format(time.RFC3339)); !errors.Is(err, backup.ErrArchiveGap) {
		t.Errorf("restoring across the gap: %v", err)
	}

	// Retention: archived binlogs go with the last backup that needs them.
	insert(t, src, "e")
	time.Sleep(time.Second) // the new backup starts after the last archived transaction's second
	if _, err := c.Take(ctx, takeOptions(t, url)); err != nil {
		t.Fatal(err)
	}
	deleted, err := c.Prune(ctx, backup.Retention{Count: 1}, time.Now())
	if err != nil || len(deleted) != 1 {
		t.Fatalf("retention deleted %v: %v", deleted, err)
	}
	if left, err := c.Binlogs(ctx); err != nil || len(left) != 0 {
		t.Errorf("binlogs the kept backup holds are still archived: %+v, %v", left, err)
	}
}

// TestMySQLPointInTimeRecovery (MySQL): a backup (the server's CLONE LOCAL), then
// writes across a binlog rotation archived from the master's sidecar to rclone's S3
// server; a new server restored to a time between two writes holds the one before and
// not the one after, one restored to a GTID set holds exactly its transactions, and
// both hold the GTIDs of what was replayed (a replica cloned from them continues from
// there). A MariaDB restore of the same directory is refused, naming both flavors.
func TestMySQLPointInTimeRecovery(t *testing.T) {
	ctx := context.Background()
	store := objectstore.Start(t)
	servers := mariadb.Start(t, 2, mariadb.Options{Flavor: "mysql"})
	src, target := servers[0], servers[1]
	url := donor(t, src, 20)
	c, err := backup.OpenCluster(ctx, store.URI("pitr"), "default", "db")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	opts := takeOptions(t, url)
	opts.Flavor = "mysql"
	if _, err := c.Take(ctx, opts); err != nil {
		t.Fatal(err)
	}
	executed := func(s *mariadb.Server) string {
		var g string
		s.DB().QueryRow("SELECT @@global.gtid_executed").Scan(&g)
		return strings.Join(strings.Fields(g), "")
	}
	src.Exec(ctx, "INSERT INTO app.t (v) VALUES ('a')", "INSERT INTO app.t (v) VALUES ('b')")
	atB := executed(src)
	src.Exec(ctx, "FLUSH BINARY LOGS", "INSERT INTO app.t (v) VALUES ('c')")
	atC := executed(src)
	point := time.Now().UTC().Truncate(time.Second).Add(time.Second)
	time.Sleep(time.Until(point) + 200*time.Millisecond)
	src.Exec(ctx, "INSERT INTO app.t (v) VALUES ('d')")

	res, err := c.Archive(ctx, backup.ArchiveOptions{Source: url, User: backupUser, Password: backupPassword, Flush: true, Log: testr.New(t)})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Uploaded) < 2 || res.Newest.Before(point) {
		t.Fatalf("archived %d files reaching %v, want at least 2 reaching %v", len(res.Uploaded), res.Newest, point)
	}

	dir := store.URI("pitr/default/db")
	if err := restoreToPoint(t, target, dir, point.Format(time.RFC3339)); err != nil {
		t.Fatal(err)
	}
	if got := values(t, target); got != "a,b,c" {
		t.Errorf("restored to %v: rows %q, want a,b,c", point, got)
	}
	if got := executed(target); got != atC {
		t.Errorf("restored to %v: the server holds %s, the source held %s at c", point, got, atC)
	}
	if err := restoreToPoint(t, target, dir, atB); err != nil {
		t.Fatal(err)
	}
	if got := values(t, target); got != "a,b" {
		t.Errorf("restored to %s: rows %q, want a,b", atB, got)
	}
	if got := executed(target); got != atB {
		t.Errorf("restored to %s: the server holds %s", atB, got)
	}
	open, _ := backup.PointInTimeRestorer(dir, atB, backup.ReplayOptions{Log: testr.New(t)})
	if _, _, err := open(ctx); err == nil || !strings.Contains(err.Error(), "taken of a mysql server") {
		t.Errorf("a MySQL backup restored to a point as MariaDB: %v", err)
	}
}

func mustTarget(t *testing.T, s string) backup.RestoreTarget {
	t.Helper()
	target, err := backup.ParseRestoreTarget(s)
	if err != nil {
		t.Fatal(err)
	}
	return target
}

// TestPointInTimeRecoveryAcrossAFailover: the master's closed binlogs are archived;
// its last transaction ("c") reaches the replica but never the archive from the
// master, which then dies. The replica is promoted, takes "d" and, after the point,
// "e", and its binlogs are archived. A restore to the point holds a, b, c and d (the
// stretch the dead master never archived comes from the new master's files) and not
// e; one to c's GTID holds a, b, c.
func TestPointInTimeRecoveryAcrossAFailover(t *testing.T) {
	ctx := context.Background()
	store := objectstore.Start(t)
	servers := mariadb.Start(t, 3, mariadb.Options{Durability: "async"})
	oldMaster, replica, target := servers[0], servers[1], servers[2]
	oldURL := donor(t, oldMaster, 5)
	c, err := backup.OpenCluster(ctx, store.URI("failover"), "default", "db")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := c.Take(ctx, takeOptions(t, oldURL)); err != nil {
		t.Fatal(err)
	}
	replica.Exec(ctx, "SET GLOBAL gtid_slave_pos = ''",
		"CHANGE MASTER TO MASTER_HOST='"+oldMaster.Host+"', MASTER_PORT="+fmt.Sprint(oldMaster.Port)+
			", MASTER_USER='root', MASTER_PASSWORD='"+mariadb.RootPassword+"', MASTER_USE_GTID=slave_pos",
		"START SLAVE")
	caughtUp := func(gtid string) {
		t.Helper()
		var ok int
		if err := replica.DB().QueryRow("SELECT MASTER_GTID_WAIT(?, 30)", gtid).Scan(&ok); err != nil || ok != 0 {
			t.Fatalf("the replica did not reach %s: %d, %v", gtid, ok, err)
		}
	}
	insert(t, oldMaster, "a")
	caughtUp(insert(t, oldMaster, "b"))
	archiver := backup.ArchiveOptions{Source: oldURL, User: backupUser, Password: backupPassword, Flush: true, Log: testr.New(t)}
	if _, err := c.Archive(ctx, archiver); err != nil {
		t.Fatal(err)
	}
	gtidC := insert(t, oldMaster, "c")
	caughtUp(gtidC)
	oldMaster.Kill() // its open binlog, holding c, is never archived from it

	replica.Exec(ctx, "STOP SLAVE", "RESET SLAVE ALL", "SET GLOBAL read_only = 0")
	newURL := donor(t, replica, 0)
	insert(t, replica, "d")
	point := time.Now().UTC().Truncate(time.Second).Add(time.Second)
	time.Sleep(time.Until(point) + 200*time.Millisecond)
	insert(t, replica, "e")
	archiver.Source = newURL
	res, err := c.Archive(ctx, archiver)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Uploaded) == 0 {
		t.Fatal("nothing archived from the new master")
	}

	if err := restoreToPoint(t, target, store.URI("failover/default/db"), point.Format(time.RFC3339)); err != nil {
		t.Fatal(err)
	}
	if got := values(t, target); got != "a,b,c,d" {
		t.Errorf("restored to %v: rows %q, want a,b,c,d", point, got)
	}
	if err := restoreToPoint(t, target, store.URI("failover/default/db"), gtidC); err != nil {
		t.Fatal(err)
	}
	if got := values(t, target); got != "a,b,c" {
		t.Errorf("restored to %s: rows %q, want a,b,c", gtidC, got)
	}
}
