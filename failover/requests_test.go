package failover_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	gomysql "github.com/go-sql-driver/mysql"

	"github.com/replicant-dev/replicant/failover"
	"github.com/replicant-dev/replicant/inject"
	"github.com/replicant-dev/replicant/mysql"
	"github.com/replicant-dev/replicant/test/managed"
	"github.com/replicant-dev/replicant/test/mariadb"
)

func replicaStatus(t *testing.T, s *mariadb.Server) *mysql.ReplicaStatus {
	t.Helper()
	conn, err := mysql.Open(mysql.Config{Addr: s.Addr(), User: "root", Password: mariadb.RootPassword}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	st, err := conn.State(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return st.Replica
}

// TestResetReplicaAndLag: reset-replica detaches a replica until its detached
// annotation is removed, and is refused on the master; a replica that replicates but
// lags past max-lag leaves the replicas Service and comes back when it catches up.
func TestResetReplicaAndLag(t *testing.T) {
	cl := managed.Start(t, 3)
	healthy := map[string]string{"db-0": "master/yes", "db-1": "replica/yes", "db-2": "replica/yes"}
	cl.Eventually("bootstrap", cl.Want(healthy))

	cl.AnnotatePod("db-0", inject.AnnResetReplica, "true")
	cl.Eventually("refused on the master", func() error {
		op := cl.LastOperation()
		if op.Op != failover.OpResetReplica || op.Result != failover.ResultRefused {
			return fmt.Errorf("%+v", op)
		}
		return nil
	})
	if cl.Master() != "db-0" || cl.ReadOnly(cl.Servers[0]) {
		t.Fatalf("a refused reset-replica changed the master")
	}

	cl.AnnotatePod("db-2", inject.AnnResetReplica, "true")
	cl.Eventually("detached", cl.Want(map[string]string{"db-0": "master/yes", "db-1": "replica/yes", "db-2": "replica/no"}))
	time.Sleep(time.Second) // several probes: the controller must not repoint it
	if rs := replicaStatus(t, cl.Servers[2]); rs != nil {
		t.Errorf("db-2 still has replica settings: %+v", rs)
	}
	if !cl.ReadOnly(cl.Servers[2]) {
		t.Errorf("the detached replica is writable")
	}
	if op := cl.LastOperation(); op.Result != failover.ResultOK || op.Target != "db-2" {
		t.Errorf("last operation %+v", op)
	}
	cl.AnnotatePod("db-2", inject.AnnDetached, "")
	cl.Eventually("rejoined", cl.Want(healthy))

	// Lag: db-1 applies with a 6 s delay while both threads run; max-lag is 2 s.
	cl.Request(inject.AnnMaxLag, "2s")
	r1 := cl.Servers[1]
	setDelay(t, r1, 6)
	// Right after START SLAVE the IO thread is still connecting (Connecting, Preparing)
	// and the replica is unhealthy for that reason alone: wait until both threads run,
	// then it must be unhealthy for its lag.
	lagging := cl.Want(map[string]string{"db-0": "master/yes", "db-1": "replica/no", "db-2": "replica/yes"})
	// The published status is what says why: both threads running, the lag above
	// max-lag (the labels alone may still be those of the moment the SQL thread was
	// stopped to set the delay; found by make test under load).
	cl.Eventually("lagging replica unhealthy while it replicates", func() error {
		if rs := replicaStatus(t, r1); !rs.Replicating() {
			return fmt.Errorf("db-1 does not replicate yet: %+v", rs)
		}
		if err := lagging(); err != nil {
			return err
		}
		if st := cl.PodStatus("db-1"); st.IOThread != "Yes" || !st.SQLThread || st.LagSeconds == nil || *st.LagSeconds < 2 {
			return fmt.Errorf("db-1's published status does not show it replicating with a lag above max-lag: %+v", st)
		}
		return nil
	})
	setDelay(t, r1, 0)
	cl.Eventually("caught up", cl.Want(healthy))

	// Semi-sync: with no replica to acknowledge (both detached, so the controller
	// does not restart them), the master's commits wait: a write is never
	// acknowledged, the stall is reported, and it completes when a replica is back.
	createApp(cl)
	cl.AnnotatePod("db-1", inject.AnnResetReplica, "true")
	cl.AnnotatePod("db-2", inject.AnnResetReplica, "true")
	cl.Eventually("both detached", cl.Want(map[string]string{"db-0": "master/yes", "db-1": "replica/no", "db-2": "replica/no"}))
	cl.Event(failover.EventWritesStalled)
	ctx, cancel := context.WithTimeout(cl.Ctx, 2*time.Second)
	_, err := cl.Servers[0].DB().ExecContext(ctx, "INSERT INTO app.w VALUES (7)")
	cancel()
	if err == nil {
		t.Fatal("a commit was acknowledged while no replica could acknowledge it")
	}
	if st := cl.PodStatus("db-0"); !strings.HasPrefix(st.SemiSync, "stalled") {
		t.Errorf("master status semiSync %q, want stalled", st.SemiSync)
	}
	cl.AnnotatePod("db-1", inject.AnnDetached, "")
	cl.AnnotatePod("db-2", inject.AnnDetached, "")
	cl.Eventually("rejoined", cl.Want(healthy))
	cl.Event(failover.EventWritesResumed)
	cl.Servers[0].Exec(cl.Ctx, "INSERT INTO app.w VALUES (8)")
	for _, s := range cl.Servers {
		cl.Eventually(s.Name+" has the stalled write", func() error {
			var n int
			if err := s.DB().QueryRow("SELECT COUNT(*) FROM app.w WHERE id IN (7, 8)").Scan(&n); err != nil || n != 2 {
				return fmt.Errorf("%d rows, %v", n, err)
			}
			return nil
		})
	}
}

// setDelay sets a replica's MASTER_DELAY. CHANGE MASTER needs both threads stopped, and
// the controller starts a replica it sees stopped (its job): when it wins that race,
// the change is refused with ER_SLAVE_MUST_STOP and made again.
func setDelay(t *testing.T, s *mariadb.Server, seconds int) {
	t.Helper()
	const erSlaveMustStop = 1198
	for attempt := 1; ; attempt++ {
		s.Exec(context.Background(), "STOP SLAVE")
		_, err := s.DB().Exec(fmt.Sprintf("CHANGE MASTER TO MASTER_DELAY = %d", seconds))
		var me *gomysql.MySQLError
		if errors.As(err, &me) && me.Number == erSlaveMustStop && attempt < 5 {
			continue
		}
		if err != nil {
			t.Fatalf("%s: MASTER_DELAY = %d: %v", s.Name, seconds, err)
		}
		s.Exec(context.Background(), "START SLAVE")
		return
	}
}
