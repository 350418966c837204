package failover_test

import (
	"context"
	"database/sql"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	gomysql "github.com/go-sql-driver/mysql"

	"github.com/replicant-dev/replicant/failover"
	"github.com/replicant-dev/replicant/mysql"
	"github.com/replicant-dev/replicant/test/managed"
	"github.com/replicant-dev/replicant/test/mariadb"
)

func quickDB(s *mariadb.Server, app bool) *sql.DB {
	return quickDBAt(s.Addr(), app)
}

func quickDBAt(addr string, app bool) *sql.DB {
	cfg := gomysql.NewConfig()
	cfg.User, cfg.Passwd, cfg.Net, cfg.Addr = "root", mariadb.RootPassword, "tcp", addr
	if app {
		// An application account: without SUPER / READ ONLY ADMIN, so read_only binds it.
		cfg.User, cfg.Passwd = "app", "app-pw"
	}
	cfg.Timeout, cfg.ReadTimeout, cfg.WriteTimeout = 300*time.Millisecond, 2*time.Second, 2*time.Second
	db, _ := sql.Open("mysql", cfg.FormatDSN())
	db.SetMaxOpenConns(1)
	return db
}

// createApp creates the app schema and an application user on the master (both
// replicated).
func binlogPos(t *testing.T, s *mariadb.Server) string {
	t.Helper()
	var pos string
	if s.Config.Flavor == "mysql" {
		// MySQL adds a transaction to @@gtid_executed only when it commits in the
		// engine, after the semi-sync wait: the binlog's own position moves before.
		var file, doDB, ignoreDB, executed string
		var offset int64
		if err := s.DB().QueryRow("SHOW BINARY LOG STATUS").Scan(&file, &offset, &doDB, &ignoreDB, &executed); err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf("%s:%d", file, offset)
	}
	if err := s.DB().QueryRow("SELECT @@gtid_binlog_pos").Scan(&pos); err != nil {
		t.Fatal(err)
	}
	return pos
}

// rowIDs are the ids in app.w on a server.
func rowIDs(t *testing.T, s *mariadb.Server) map[int]bool {
	t.Helper()
	present := map[int]bool{}
	rows, err := s.DB().Query("SELECT id FROM app.w")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	for rows.Next() {
		var id int
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		present[id] = true
	}
	return present
}

func createApp(cl *managed.Cluster) {
	cl.Server(cl.Master()).Exec(cl.Ctx, "CREATE DATABASE app", "CREATE TABLE app.w (id INT PRIMARY KEY)",
		"CREATE USER 'app'@'%' IDENTIFIED BY 'app-pw'", "GRANT SELECT, INSERT ON app.* TO 'app'@'%'")
}

// writer inserts ids one by one into app.w on whichever server the controller calls
// master, as an application behind <sts>-master would, and records the ids whose
// commit was acknowledged.
type writer struct {
	cl    *managed.Cluster
	acked sync.Map
	count atomic.Int64
	stop  chan struct{}
	done  chan struct{}
}

func startWriter(cl *managed.Cluster) *writer { return startWriterVia(cl, nil) }

// startWriterVia is startWriter for a client that reaches some pods by other
// addresses (a network path that can be cut).
func startWriterVia(cl *managed.Cluster, via map[string]string) *writer {
	w := &writer{cl: cl, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		dbs := map[string]*sql.DB{}
		defer func() {
			for _, db := range dbs {
				db.Close()
			}
		}()
		master := ""
		for id := 1; id < 1_000_000; id++ {
			select {
			case <-w.stop:
				return
			default:
			}
			if master == "" {
				master = cl.Master()
			}
			s := cl.Server(master)
			if s == nil {
				time.Sleep(50 * time.Millisecond)
				continue
			}
			if dbs[master] == nil {
				addr := s.Addr()
				if a, ok := via[master]; ok {
					addr = a
				}
				dbs[master] = quickDBAt(addr, true)
			}
			if _, err := dbs[master].Exec("INSERT INTO app.w (id) VALUES (?)", id); err != nil {
				master = "" // ask again who the master is
				time.Sleep(20 * time.Millisecond)
				continue
			}
			w.acked.Store(id, true)
			w.count.Add(1)
		}
	}()
	return w
}

func (w *writer) finish() { close(w.stop); <-w.done }

// waitFor waits until n more writes than now have been acknowledged.
func (w *writer) waitFor(what string, n int64) {
	before := w.count.Load()
	w.cl.Eventually(what, func() error {
		if got := w.count.Load() - before; got < n {
			return fmt.Errorf("%d writes", got)
		}
		return nil
	})
}

// writableChecker polls read_only on every running server and records any instant at
// which two of them were writable.
type writableChecker struct {
	violations atomic.Int64
	polls      atomic.Int64
	first      atomic.Value // string: which servers were writable at the first violation, and when
	stop       chan struct{}
	done       chan struct{}
}

func startChecker(cl *managed.Cluster) *writableChecker {
	c := &writableChecker{stop: make(chan struct{}), done: make(chan struct{})}
	dbs := make([]*sql.DB, len(cl.Servers))
	for i, s := range cl.Servers {
		dbs[i] = quickDB(s, false)
	}
	go func() {
		defer close(c.done)
		defer func() {
			for _, db := range dbs {
				db.Close()
			}
		}()
		for n := 0; n < 100000; n++ {
			select {
			case <-c.stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
			var writable []string
			for i, db := range dbs {
				var ro bool
				if db.QueryRow("SELECT @@read_only").Scan(&ro) == nil && !ro {
					writable = append(writable, cl.Servers[i].Name)
				}
			}
			c.polls.Add(1)
			if len(writable) > 1 {
				c.violations.Add(1)
				c.first.CompareAndSwap(nil, fmt.Sprintf("%v at %s", writable, time.Now().Format("15:04:05.000")))
			}
		}
	}()
	return c
}

func (c *writableChecker) finish() {
	close(c.stop)
	<-c.done
	if first := c.first.Load(); first != nil {
		cl := "first instant with two writable: " + first.(string)
		fmt.Println(cl)
	}
}

// TestMasterKilledUnderWriteLoad: SIGKILL the master while a writer writes; the
// controller fails over to a replica, every acknowledged write is on the new master,
// at no instant are two servers writable, and the old master comes back as a replica
// (or, when it holds a transaction nobody acknowledged, is quarantined). On both
// flavors.
func TestMasterKilledUnderWriteLoad(t *testing.T) {
	for _, flavor := range mariadb.Flavors {
		t.Run(flavor, func(t *testing.T) { testMasterKilledUnderWriteLoad(t, flavor) })
	}
}

func testMasterKilledUnderWriteLoad(t *testing.T, flavor string) {
	cl := managed.StartWith(t, 3, managed.Options{Flavor: flavor, Addressing: failover.SourcePodIP})
	cl.Eventually("bootstrap", cl.Want(map[string]string{"db-0": "master/yes", "db-1": "replica/yes", "db-2": "replica/yes"}))
	createApp(cl)
	checker := startChecker(cl)
	w := startWriter(cl)
	w.waitFor("writes flowing", 200)

	killedAt := time.Now()
	cl.Servers[0].Kill()
	newMaster := cl.Server(cl.FailoverFrom("db-0"))
	t.Logf("failed over to %s %v after the kill", newMaster.Name, time.Since(killedAt).Round(time.Millisecond))
	w.waitFor("writes on the new master", 100)
	w.finish()
	checker.finish()

	present := rowIDs(t, newMaster)
	lost := 0
	w.acked.Range(func(k, _ any) bool {
		if !present[k.(int)] {
			lost++
		}
		return true
	})
	if lost > 0 {
		t.Errorf("%d of %d acknowledged writes are missing on the new master", lost, w.count.Load())
	}
	if v := checker.violations.Load(); v > 0 {
		t.Errorf("two writable servers at %d of %d polls", v, checker.polls.Load())
	}
	t.Logf("%d acknowledged writes, all present; %d read_only polls, never two writers", w.count.Load(), checker.polls.Load())

	// The old master returns: it rejoins under the new master, or is quarantined
	// when it holds a transaction no replica acknowledged.
	old := cl.Servers[0]
	old.Restart()
	oldConn, _ := mysql.Open(mysql.Config{Addr: old.Addr(), User: "root", Password: mariadb.RootPassword}, nil)
	defer oldConn.Close()
	newConn, _ := mysql.Open(mysql.Config{Addr: newMaster.Addr(), User: "root", Password: mariadb.RootPassword}, nil)
	defer newConn.Close()
	oldState, err := oldConn.State(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	newState, _ := newConn.State(context.Background())
	errant := oldState.BinlogState.Errant(newState.BinlogState)
	want := map[string]string{"db-0": "replica/yes", "db-1": "replica/yes", "db-2": "replica/yes"}
	want[newMaster.Name] = "master/yes"
	if !errant.Empty() {
		want["db-0"] = "replica/no"
		t.Logf("the old master holds unacknowledged transactions %v: expect quarantine", errant)
	}
	cl.Eventually("old master back", cl.Want(want))
	if !cl.ReadOnly(old) {
		t.Errorf("the old master is writable")
	}
}

// TestOldMasterWithErrantWriteIsQuarantined: the master takes a write no replica
// ever receives, then dies; after the failover it returns holding that write. It is
// kept read-only and out of the Services, reported with the GTID, never overwritten.
// On both flavors.
func TestOldMasterWithErrantWriteIsQuarantined(t *testing.T) {
	for _, flavor := range mariadb.Flavors {
		t.Run(flavor, func(t *testing.T) { testOldMasterWithErrantWriteIsQuarantined(t, flavor) })
	}
}

func testOldMasterWithErrantWriteIsQuarantined(t *testing.T, flavor string) {
	cl := managed.StartWith(t, 3, managed.Options{Flavor: flavor, Addressing: failover.SourcePodIP})
	cl.Eventually("bootstrap", cl.Want(map[string]string{"db-0": "master/yes", "db-1": "replica/yes", "db-2": "replica/yes"}))
	createApp(cl)
	cl.Servers[1].Exec(cl.Ctx, "STOP REPLICA IO_THREAD")
	cl.Servers[2].Exec(cl.Ctx, "STOP REPLICA IO_THREAD")
	// Only db-0 logs it; no replica can acknowledge it, so its commit waits and is
	// never acknowledged (semi-sync never falls back).
	before := binlogPos(t, cl.Servers[0])
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := cl.Servers[0].DB().ExecContext(ctx, "INSERT INTO app.w VALUES (42)"); err == nil {
			t.Errorf("a write no replica received was acknowledged")
		}
	}()
	cl.Eventually("the write in db-0's binlog", func() error {
		if pos := binlogPos(t, cl.Servers[0]); pos == before {
			return fmt.Errorf("binlog still at %s", pos)
		}
		return nil
	})
	cl.Servers[0].Kill()
	// The replicas try to reach their master again and find it gone: their word.
	cl.Servers[1].Exec(cl.Ctx, "START REPLICA IO_THREAD")
	cl.Servers[2].Exec(cl.Ctx, "START REPLICA IO_THREAD")
	newMaster := cl.FailoverFrom("db-0")
	cl.Servers[0].Restart()
	want := map[string]string{"db-0": "replica/no", "db-1": "replica/yes", "db-2": "replica/yes"}
	want[newMaster] = "master/yes"
	cl.Eventually("old master quarantined", cl.Want(want))
	cl.Event("ErrantTransactions")
	if !cl.ReadOnly(cl.Servers[0]) {
		t.Errorf("the quarantined old master is writable")
	}
	var n int
	if err := cl.Servers[0].DB().QueryRow("SELECT COUNT(*) FROM app.w WHERE id = 42").Scan(&n); err != nil || n != 1 {
		t.Errorf("the errant row was overwritten on the old master (%d, %v)", n, err)
	}
	if rs := replicaStatus(t, cl.Servers[0]); rs != nil {
		t.Errorf("the quarantined old master replicates: %+v", rs)
	}
}
