package failover_test

import (
	"context"
	"fmt"
	"testing"
	"time"

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
	r1.Exec(cl.Ctx, "STOP SLAVE", "CHANGE MASTER TO MASTER_DELAY = 6", "START SLAVE")
	// Right after START SLAVE the IO thread is still connecting (Connecting, Preparing)
	// and the replica is unhealthy for that reason alone: wait until both threads run,
	// then it must be unhealthy for its lag.
	lagging := cl.Want(map[string]string{"db-0": "master/yes", "db-1": "replica/no", "db-2": "replica/yes"})
	cl.Eventually("lagging replica unhealthy while it replicates", func() error {
		if rs := replicaStatus(t, r1); !rs.Replicating() {
			return fmt.Errorf("db-1 does not replicate yet: %+v", rs)
		}
		return lagging()
	})
	if st := cl.PodStatus("db-1"); st.LagSeconds == nil || *st.LagSeconds < 2 {
		t.Errorf("db-1 is unhealthy, but its published lag is not above max-lag: %+v", st)
	}
	r1.Exec(cl.Ctx, "STOP SLAVE", "CHANGE MASTER TO MASTER_DELAY = 0", "START SLAVE")
	cl.Eventually("caught up", cl.Want(healthy))

	// Semi-sync: with no replica receiving, the master's commits stop waiting for
	// acknowledgements; that is reported, and so is the return.
	cl.Servers[1].Exec(cl.Ctx, "STOP SLAVE")
	cl.Servers[2].Exec(cl.Ctx, "STOP SLAVE")
	cl.Servers[0].Exec(cl.Ctx, "CREATE DATABASE IF NOT EXISTS semisync_probe")
	cl.Event("SemiSyncFallback")
	cl.Servers[1].Exec(cl.Ctx, "START SLAVE")
	cl.Servers[2].Exec(cl.Ctx, "START SLAVE")
	cl.Servers[0].Exec(cl.Ctx, "CREATE DATABASE IF NOT EXISTS semisync_probe2")
	cl.Event("SemiSyncRestored")
}
