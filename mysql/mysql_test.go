package mysql_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/replicant-dev/replicant/mysql"
	"github.com/replicant-dev/replicant/test/mariadb"
)

func TestMain(m *testing.M) { os.Exit(mariadb.Main(m)) }

func open(t *testing.T, s *mariadb.Server, user, password string) *mysql.Server {
	t.Helper()
	flavor, err := mysql.FlavorNamed(s.Config.Flavor)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := mysql.Open(mysql.Config{Addr: s.Addr(), User: user, Password: password}, flavor)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return srv
}

func state(t *testing.T, s *mysql.Server) mysql.State {
	t.Helper()
	st, err := s.State(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func count(t *testing.T, s *mariadb.Server, table string) int {
	t.Helper()
	var n int
	if err := s.DB().QueryRow("SELECT COUNT(*) FROM " + table).Scan(&n); err != nil {
		t.Fatalf("%s: count %s: %v", s.Name, table, err)
	}
	return n
}

var users = []mysql.User{
	{Name: "replicant_repl", Password: "repl-pw", Role: mysql.RoleReplication},
	{Name: "replicant_backup", Password: "backup-pw", Role: mysql.RoleBackup},
	{Name: "replicant_admin", Password: "admin-pw-\"quoted'", Role: mysql.RoleAdmin},
}

// TestReplicationOnRealServers: a master and two replicas wired by GTID with
// replicant's own users and least privileges; state, lag, waits, errant transactions,
// reset, and errors that name the server and operation but no password. On both
// flavors, one code path.
func TestReplicationOnRealServers(t *testing.T) {
	for _, flavor := range mariadb.Flavors {
		t.Run(flavor, func(t *testing.T) { testReplication(t, flavor) })
	}
}

func testReplication(t *testing.T, flavor string) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	servers := mariadb.Start(t, 3, mariadb.Options{Flavor: flavor})
	m, r1, r2 := servers[0], servers[1], servers[2]
	root := make([]*mysql.Server, 3)
	for i, s := range servers {
		root[i] = open(t, s, "root", mariadb.RootPassword)
		st := state(t, root[i])
		if !st.ReadOnly || st.ServerID != uint32(100+i) || !st.LogBin || st.BinlogFormat != "ROW" || st.Replica != nil {
			t.Fatalf("%s starts as %+v", s.Name, st)
		}
		if strings.Contains(st.Version, "MariaDB") != (flavor == "mariadb") || !st.SemiSync.ReplicaEnabled || st.SemiSync.MasterEnabled {
			t.Errorf("%s: version %q semi-sync %+v", s.Name, st.Version, st.SemiSync)
		}
	}

	// The master: open writes, create users (replicated to everyone), some rows.
	if err := root[0].SetReadOnly(ctx, false); err != nil {
		t.Fatal(err)
	}
	if err := root[0].EnsureUsers(ctx, users); err != nil {
		t.Fatal(err)
	}
	if err := root[0].EnsureUsers(ctx, users); err != nil { // idempotent
		t.Fatal(err)
	}
	admin := open(t, m, "replicant_admin", users[2].Password)
	if err := admin.WriteHeartbeat(ctx); err != nil {
		t.Fatalf("admin cannot write the heartbeat: %v", err)
	}
	m.Exec(ctx, "CREATE DATABASE app", "CREATE TABLE app.t (id INT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(20))",
		"INSERT INTO app.t (v) VALUES ('a'), ('b'), ('c')")

	// Replicas, driven by the least-privileged admin user once it has replicated.
	src := mysql.Source{Host: m.Host, Port: m.Port, User: "replicant_repl", Password: "repl-pw"}
	for i, s := range []*mariadb.Server{r1, r2} {
		if err := root[i+1].ChangeSource(ctx, src); err != nil {
			t.Fatal(err)
		}
		if err := root[i+1].StartReplica(ctx); err != nil {
			t.Fatal(err)
		}
		if err := root[i+1].WaitForGTID(ctx, state(t, root[0]).BinlogState, 30*time.Second); err != nil {
			t.Fatalf("%s: %v", s.Name, err)
		}
		if n := count(t, s, "app.t"); n != 3 {
			t.Errorf("%s has %d rows, want 3", s.Name, n)
		}
		st := state(t, root[i+1])
		if !st.Replica.Replicating() || st.Replica.SourceHost != m.Host || st.Replica.SourceServerID != 100 || st.Replica.UsingGTID == "No" {
			t.Errorf("%s replica status %+v", s.Name, st.Replica)
		}
		if !st.BinlogState.Equal(state(t, root[0]).BinlogState) {
			t.Errorf("%s binlog state %s, master %s", s.Name, st.BinlogState, state(t, root[0]).BinlogState)
		}
	}
	admin1 := open(t, r1, "replicant_admin", users[2].Password)
	if _, err := admin1.State(ctx); err != nil {
		t.Fatalf("admin cannot read a replica's state: %v", err)
	}
	if err := admin.WriteHeartbeat(ctx); err != nil {
		t.Fatal(err)
	}
	if err := admin1.WaitForGTID(ctx, state(t, admin).BinlogState, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	lag, err := admin1.HeartbeatLag(ctx)
	if err != nil || lag < 0 || lag > time.Minute {
		t.Errorf("heartbeat lag %v, %v", lag, err)
	}

	// A replica that stopped does not reach a new position: the wait times out.
	if err := admin1.StopReplica(ctx); err != nil {
		t.Fatal(err)
	}
	m.Exec(ctx, "INSERT INTO app.t (v) VALUES ('d')")
	err = admin1.WaitForGTID(ctx, state(t, admin).BinlogState, time.Second)
	if !errors.Is(err, mysql.ErrWaitTimeout) {
		t.Errorf("wait on a stopped replica: %v, want ErrWaitTimeout", err)
	}
	if st := state(t, admin1); st.Replica.IORunning != "No" || st.Replica.SQLRunning {
		t.Errorf("stopped replica reports %+v", st.Replica)
	}
	if err := admin1.StartReplica(ctx); err != nil {
		t.Fatal(err)
	}
	if err := admin1.WaitForGTID(ctx, state(t, admin).BinlogState, 30*time.Second); err != nil {
		t.Fatal(err)
	}

	// An errant transaction: a write on r2 that the master never saw.
	// (On MySQL super_read_only holds off even root: someone lifted it by hand.)
	if flavor == "mysql" {
		r2.Exec(ctx, "SET GLOBAL super_read_only = OFF", "INSERT INTO app.t (v) VALUES ('errant')", "SET GLOBAL super_read_only = ON")
	} else {
		r2.Exec(ctx, "INSERT INTO app.t (v) VALUES ('errant')")
	}
	errant := state(t, root[2]).BinlogState.Errant(state(t, root[0]).BinlogState)
	if want := ownLastWrite(t, flavor, root[2], r2); errant.String() != want {
		t.Errorf("errant on %s = %v, want its own last write %s", r2.Name, errant, want)
	}
	if state(t, root[1]).BinlogState.Ahead(state(t, root[0]).BinlogState) > 0 {
		t.Errorf("Ahead: a replica is ahead of its master")
	}
	if !state(t, root[1]).BinlogState.SubsetOf(state(t, root[0]).BinlogState) {
		t.Errorf("%s has errant transactions", r1.Name)
	}

	// Errors name the server and the operation, never the password.
	err = admin1.ChangeSource(ctx, mysql.Source{Host: "127.0.0.1", Port: 3306, User: "x", Password: "very-secret-pw"})
	if err == nil {
		t.Fatal("CHANGE MASTER on a running replica succeeded")
	}
	if msg := err.Error(); strings.Contains(msg, "very-secret-pw") || !strings.Contains(msg, r1.Addr()) || !strings.Contains(msg, "change source") {
		t.Errorf("error %q", msg)
	}
	bad := open(t, m, "replicant_admin", "wrong-password")
	if _, err := bad.State(ctx); err == nil || strings.Contains(err.Error(), "wrong-password") || !strings.Contains(err.Error(), m.Addr()) {
		t.Errorf("bad login error %v", err)
	}

	// Reset: a promoted replica forgets its source entirely.
	if err := admin1.ResetReplica(ctx); err != nil {
		t.Fatal(err)
	}
	if st := state(t, admin1); st.Replica != nil {
		t.Errorf("after reset, replica status %+v", st.Replica)
	}
	// The least-privileged admin can open writes and fence again.
	if err := admin1.SetReadOnly(ctx, false); err != nil {
		t.Fatal(err)
	}
	if err := admin1.SetReadOnly(ctx, true); err != nil {
		t.Fatal(err)
	}
}

// ownLastWrite is the GTID of the last transaction a server wrote itself: MariaDB's
// domain 0 with its server_id, MySQL's own server UUID.
func ownLastWrite(t *testing.T, flavor string, s *mysql.Server, h *mariadb.Server) string {
	t.Helper()
	st := state(t, s)
	if flavor == "mariadb" {
		for _, g := range st.CurrentPos.GTIDs() {
			if g.Server == st.ServerID {
				return g.String()
			}
		}
		t.Fatalf("no own GTID in %s", st.CurrentPos)
	}
	var uuid string
	if err := h.DB().QueryRow("SELECT @@server_uuid").Scan(&uuid); err != nil {
		t.Fatal(err)
	}
	head := st.BinlogState.Heads()[uuid]
	if head == 0 {
		t.Fatalf("no own GTID in %s", st.BinlogState)
	}
	return fmt.Sprintf("%s:%d", uuid, head)
}

// TestTimeoutsBoundEveryCall: a server that accepts TCP but never answers does not
// hang the caller.
func TestTimeoutsBoundEveryCall(t *testing.T) {
	servers := mariadb.Start(t, 1, mariadb.Options{})
	s := servers[0]
	srv, err := mysql.Open(mysql.Config{Addr: s.Addr(), User: "root", Password: mariadb.RootPassword,
		ConnectTimeout: 500 * time.Millisecond, QueryTimeout: 500 * time.Millisecond}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	s.Kill()
	start := time.Now()
	_, err = srv.State(context.Background())
	if err == nil {
		t.Fatal("state of a killed server")
	}
	if !strings.Contains(err.Error(), s.Addr()) || !strings.Contains(err.Error(), "read state") {
		t.Errorf("error %q", err)
	}
	t.Logf("failed after %v: %v", time.Since(start), err)
}

// TestForgetSessionsPicksUpNewGrants: a session keeps the global privileges it logged
// in with (as a replica's does when replication brought CREATE USER before GRANT);
// after ForgetSessions the next statement logs in again and has the new ones.
func TestForgetSessionsPicksUpNewGrants(t *testing.T) {
	s := mariadb.Start(t, 1, mariadb.Options{})[0]
	ctx := context.Background()
	s.Exec(ctx, "CREATE USER 'late'@'%' IDENTIFIED BY 'late-pw'")
	conn, err := mysql.Open(mysql.Config{Addr: s.Addr(), User: "late", Password: "late-pw"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.State(ctx); err == nil {
		t.Fatal("reading replica status without SLAVE MONITOR succeeded")
	}
	s.Exec(ctx, "GRANT SLAVE MONITOR, BINLOG MONITOR ON *.* TO 'late'@'%'")
	if _, err := conn.State(ctx); err == nil {
		t.Fatal("the pooled session got the new global privilege without logging in again: the test proves nothing")
	}
	conn.ForgetSessions()
	if _, err := conn.State(ctx); err != nil {
		t.Fatalf("after ForgetSessions: %v", err)
	}
}
