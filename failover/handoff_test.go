package failover_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/replicant-dev/replicant/failover"
	"github.com/replicant-dev/replicant/mysql"
	"github.com/replicant-dev/replicant/test/managed"
	"github.com/replicant-dev/replicant/test/mariadb"
)

// terminate deletes a pod that a finalizer holds: it stays, terminating, as a pod
// whose preStop hook is still running does.
func terminate(cl *managed.Cluster, name string) {
	cl.T.Helper()
	const hold = "test.replicant.dev/hold"
	var pod corev1.Pod
	key := client.ObjectKey{Namespace: cl.Sts.Namespace, Name: name}
	if err := cl.C.Get(cl.Ctx, key, &pod); err != nil {
		cl.T.Fatal(err)
	}
	// A merge patch, not an update: the controller labels the pod concurrently, and an
	// update of a stale copy is refused with a conflict.
	patch := client.MergeFrom(pod.DeepCopy())
	pod.Finalizers = append(pod.Finalizers, hold)
	if err := cl.C.Patch(cl.Ctx, &pod, patch); err != nil {
		cl.T.Fatal(err)
	}
	cl.T.Cleanup(func() {
		var p corev1.Pod
		if cl.C.Get(cl.Ctx, key, &p) == nil {
			release := client.MergeFrom(p.DeepCopy())
			p.Finalizers = nil
			_ = cl.C.Patch(cl.Ctx, &p, release)
		}
	})
	if err := cl.C.Delete(cl.Ctx, &pod); err != nil {
		cl.T.Fatal(err)
	}
}

// TestTerminatingMasterHandsOverGracefully: a master pod being deleted hands writes
// over before its server stops, on both flavors.
func TestTerminatingMasterHandsOverGracefully(t *testing.T) {
	for _, flavor := range mariadb.Flavors {
		t.Run(flavor, func(t *testing.T) { testTerminatingMasterHandsOver(t, flavor) })
	}
}

func testTerminatingMasterHandsOver(t *testing.T, flavor string) {
	cl := managed.StartWith(t, 3, managed.Options{Flavor: flavor, Addressing: failover.SourcePodIP})
	cl.Eventually("bootstrap", cl.Want(map[string]string{"db-0": "master/yes", "db-1": "replica/yes", "db-2": "replica/yes"}))
	createApp(cl)

	checker := startChecker(cl)
	w := startWriter(cl)
	w.waitFor("writes flowing", 100)
	terminate(cl, "db-0")

	var op failover.Operation
	cl.Eventually("a takeover away from the terminating master", func() error {
		op = cl.LastOperation()
		if op.Op != failover.OpTakeover || op.From != "db-0" {
			return fmt.Errorf("last operation %+v", op)
		}
		return nil
	})
	if op.Result != failover.ResultOK || !strings.Contains(op.Message, "terminating") {
		t.Fatalf("hand-over: %+v", op)
	}
	t.Logf("hand-over: %s", op.Message)
	w.waitFor("writes on the new master", 100)
	w.finish()
	checker.finish()
	if v := checker.violations.Load(); v > 0 {
		t.Errorf("two writable servers at %d of %d polls", v, checker.polls.Load())
	}
	if !cl.ReadOnly(cl.Servers[0]) {
		t.Error("the terminating old master is still writable: its preStop hook would never return")
	}
	cl.Eventually("terminating pod out of the replicas", func() error {
		topo, err := cl.Topology()
		if err != nil {
			return err
		}
		if topo["db-0"] != "replica/no" || topo[op.Target] != "master/yes" {
			return fmt.Errorf("topology %v", topo)
		}
		return nil
	})
	// Every acknowledged row is on the new master.
	var n int
	if err := cl.Server(op.Target).DB().QueryRow("SELECT COUNT(*) FROM app.w").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != int(w.count.Load()) {
		t.Errorf("%d rows on %s, %d acknowledged", n, op.Target, w.count.Load())
	}
	if cl.Master() == "db-0" {
		t.Errorf("master still db-0")
	}
}

// A replica whose server restarted (skip_slave_start: both threads stopped, no error)
// replicates again without a human; STOP SLAVE leaves the same state.
func TestStoppedReplicaIsStartedAgain(t *testing.T) {
	cl := managed.Start(t, 2)
	cl.Eventually("bootstrap", cl.Want(map[string]string{"db-0": "master/yes", "db-1": "replica/yes"}))
	if _, err := cl.Servers[1].DB().Exec("STOP SLAVE"); err != nil {
		t.Fatal(err)
	}
	// The controller's Event proves it started them (it may do so before any check
	// here could see them stopped).
	cl.EventWith("Replicating", "db-1 replicates from db-0 again")
	cl.Eventually("both threads running again", func() error {
		if io, sqlRunning := threads(t, cl.Servers[1]); io != "Yes" || !sqlRunning {
			return fmt.Errorf("IO %s, SQL running %v", io, sqlRunning)
		}
		return nil
	})
	cl.Eventually("healthy", cl.Want(map[string]string{"db-0": "master/yes", "db-1": "replica/yes"}))
}

// threads reads the replication threads' state through the mysql package.
func threads(t *testing.T, srv *mariadb.Server) (io string, sqlRunning bool) {
	t.Helper()
	conn, err := mysql.Open(mysql.Config{Addr: srv.Addr(), User: "root", Password: mariadb.RootPassword}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	st, err := conn.State(context.Background())
	if err != nil || st.Replica == nil {
		t.Fatalf("replica state: %v, %+v", err, st.Replica)
	}
	return st.Replica.IORunning, st.Replica.SQLRunning
}
