package failover_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/replicant-dev/replicant/failover"
	"github.com/replicant-dev/replicant/inject"
)

// request sets a request annotation on the StatefulSet, as the CLI or kubectl does.
func (cl *cluster) request(key, value string) {
	cl.t.Helper()
	sts := &appsv1.StatefulSet{}
	if err := cl.c.Get(cl.ctx, client.ObjectKey{Namespace: "default", Name: "db"}, sts); err != nil {
		cl.t.Fatal(err)
	}
	patch := client.MergeFrom(sts.DeepCopy())
	sts.Annotations[key] = value
	if err := cl.c.Patch(cl.ctx, sts, patch); err != nil {
		cl.t.Fatal(err)
	}
}

// lastOperation reads the StatefulSet's last-operation annotation.
func (cl *cluster) lastOperation() failover.Operation {
	cl.t.Helper()
	sts := &appsv1.StatefulSet{}
	if err := cl.c.Get(cl.ctx, client.ObjectKey{Namespace: "default", Name: "db"}, sts); err != nil {
		cl.t.Fatal(err)
	}
	var op failover.Operation
	_ = json.Unmarshal([]byte(sts.Annotations[inject.AnnLastOperation]), &op)
	return op
}

// outcome waits until the request annotation is gone and returns the last operation.
func (cl *cluster) outcome(key string) failover.Operation {
	cl.t.Helper()
	var op failover.Operation
	cl.eventually("request "+key+" carried out", func() error {
		sts := &appsv1.StatefulSet{}
		if err := cl.c.Get(cl.ctx, client.ObjectKey{Namespace: "default", Name: "db"}, sts); err != nil {
			return err
		}
		if _, pending := sts.Annotations[key]; pending {
			return fmt.Errorf("still pending")
		}
		return json.Unmarshal([]byte(sts.Annotations[inject.AnnLastOperation]), &op)
	})
	return op
}

func TestGracefulTakeover(t *testing.T) {
	cl := startCluster(t, 3)
	healthy := map[string]string{"db-0": "master/yes", "db-1": "replica/yes", "db-2": "replica/yes"}
	cl.eventually("bootstrap", cl.want(healthy))
	cl.createApp()

	// Refused requests change nothing.
	for target, why := range map[string]string{"db-0": "already the master", "db-9": "not a pod"} {
		cl.request(inject.AnnTakeoverTo, target)
		op := cl.outcome(inject.AnnTakeoverTo)
		if op.Result != failover.ResultRefused || !strings.Contains(op.Message, why) {
			t.Errorf("takeover to %s: %+v", target, op)
		}
		if cl.master() != "db-0" {
			t.Fatalf("a refused takeover moved the master to %s", cl.master())
		}
	}

	checker := cl.startChecker()
	w := cl.startWriter()
	w.waitFor("writes flowing", 100)
	cl.request(inject.AnnTakeoverTo, "db-2")
	op := cl.outcome(inject.AnnTakeoverTo)
	if op.Result != failover.ResultOK || op.Target != "db-2" || op.From != "db-0" {
		t.Fatalf("takeover: %+v", op)
	}
	t.Logf("takeover: %s", op.Message)
	w.waitFor("writes on the new master", 100)
	w.finish()
	checker.finish()
	if v := checker.violations.Load(); v > 0 {
		t.Errorf("two writable servers at %d of %d polls", v, checker.polls.Load())
	}
	cl.eventually("new topology", cl.want(map[string]string{"db-0": "replica/yes", "db-1": "replica/yes", "db-2": "master/yes"}))
	if !cl.readOnly(cl.servers[0]) || cl.readOnly(cl.servers[2]) {
		t.Errorf("read_only: old master %v, new master %v", cl.readOnly(cl.servers[0]), cl.readOnly(cl.servers[2]))
	}
	// Every acknowledged row, written before and after, is on the old master, which
	// now replicates from the new one.
	var total int
	cl.eventually("old master caught up", func() error {
		var n int
		if err := cl.servers[0].DB().QueryRow("SELECT COUNT(*) FROM app.w").Scan(&n); err != nil {
			return err
		}
		if n != int(w.count.Load()) {
			return fmt.Errorf("%d rows, %d acknowledged", n, w.count.Load())
		}
		total = n
		return nil
	})
	t.Logf("%d rows on the old master, writes blocked %d ms", total, op.WritesBlockedMs)
}
