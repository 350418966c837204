package failover_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/replicant-dev/replicant/failover"
	"github.com/replicant-dev/replicant/inject"
	"github.com/replicant-dev/replicant/mysql"
	"github.com/replicant-dev/replicant/test/mariadb"
)

// annotatePod sets (value != "") or removes an annotation on a pod.
func (cl *cluster) annotatePod(pod, key, value string) {
	cl.t.Helper()
	p := &corev1.Pod{}
	if err := cl.c.Get(cl.ctx, client.ObjectKey{Namespace: "default", Name: pod}, p); err != nil {
		cl.t.Fatal(err)
	}
	patch := client.MergeFrom(p.DeepCopy())
	if p.Annotations == nil {
		p.Annotations = map[string]string{}
	}
	if value == "" {
		delete(p.Annotations, key)
	} else {
		p.Annotations[key] = value
	}
	if err := cl.c.Patch(cl.ctx, p, patch); err != nil {
		cl.t.Fatal(err)
	}
}

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
	cl := startCluster(t, 3)
	healthy := map[string]string{"db-0": "master/yes", "db-1": "replica/yes", "db-2": "replica/yes"}
	cl.eventually("bootstrap", cl.want(healthy))

	cl.annotatePod("db-0", inject.AnnResetReplica, "true")
	cl.eventually("refused on the master", func() error {
		op := cl.lastOperation()
		if op.Op != failover.OpResetReplica || op.Result != failover.ResultRefused {
			return fmt.Errorf("%+v", op)
		}
		return nil
	})
	if cl.master() != "db-0" || cl.readOnly(cl.servers[0]) {
		t.Fatalf("a refused reset-replica changed the master")
	}

	cl.annotatePod("db-2", inject.AnnResetReplica, "true")
	cl.eventually("detached", cl.want(map[string]string{"db-0": "master/yes", "db-1": "replica/yes", "db-2": "replica/no"}))
	time.Sleep(time.Second) // several probes: the controller must not repoint it
	if rs := replicaStatus(t, cl.servers[2]); rs != nil {
		t.Errorf("db-2 still has replica settings: %+v", rs)
	}
	if !cl.readOnly(cl.servers[2]) {
		t.Errorf("the detached replica is writable")
	}
	if op := cl.lastOperation(); op.Result != failover.ResultOK || op.Target != "db-2" {
		t.Errorf("last operation %+v", op)
	}
	cl.annotatePod("db-2", inject.AnnDetached, "")
	cl.eventually("rejoined", cl.want(healthy))

	// Lag: db-1 applies with a 6 s delay while both threads run; max-lag is 2 s.
	cl.request(inject.AnnMaxLag, "2s")
	r1 := cl.servers[1]
	r1.Exec(cl.ctx, "STOP SLAVE", "CHANGE MASTER TO MASTER_DELAY = 6", "START SLAVE")
	cl.eventually("lagging replica unhealthy", cl.want(map[string]string{"db-0": "master/yes", "db-1": "replica/no", "db-2": "replica/yes"}))
	if rs := replicaStatus(t, r1); !rs.Replicating() {
		t.Errorf("db-1 should still replicate: %+v", rs)
	}
	r1.Exec(cl.ctx, "STOP SLAVE", "CHANGE MASTER TO MASTER_DELAY = 0", "START SLAVE")
	cl.eventually("caught up", cl.want(healthy))

	// Semi-sync: with no replica receiving, the master's commits stop waiting for
	// acknowledgements; that is reported, and so is the return.
	cl.servers[1].Exec(cl.ctx, "STOP SLAVE")
	cl.servers[2].Exec(cl.ctx, "STOP SLAVE")
	cl.servers[0].Exec(cl.ctx, "CREATE DATABASE IF NOT EXISTS semisync_probe")
	cl.event("SemiSyncFallback")
	cl.servers[1].Exec(cl.ctx, "START SLAVE")
	cl.servers[2].Exec(cl.ctx, "START SLAVE")
	cl.servers[0].Exec(cl.ctx, "CREATE DATABASE IF NOT EXISTS semisync_probe2")
	cl.event("SemiSyncRestored")
}
