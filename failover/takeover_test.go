package failover_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/replicant-dev/replicant/failover"
	"github.com/replicant-dev/replicant/inject"
	"github.com/replicant-dev/replicant/test/managed"
	"github.com/replicant-dev/replicant/test/mariadb"
)

// TestGracefulTakeover: a requested takeover under writes, on both flavors: refused
// requests change nothing; the new master is labelled before the old loses the label;
// never two writers; every acknowledged row reaches the old master, now a replica.
func TestGracefulTakeover(t *testing.T) {
	for _, flavor := range mariadb.Flavors {
		t.Run(flavor, func(t *testing.T) { testGracefulTakeover(t, flavor) })
	}
}

func testGracefulTakeover(t *testing.T, flavor string) {
	cl := managed.StartWith(t, 3, managed.Options{Flavor: flavor, Addressing: failover.SourcePodIP})
	healthy := map[string]string{"db-0": "master/yes", "db-1": "replica/yes", "db-2": "replica/yes"}
	cl.Eventually("bootstrap", cl.Want(healthy))
	createApp(cl)

	// Refused requests change nothing.
	for target, why := range map[string]string{"db-0": "already the master", "db-9": "not a pod"} {
		cl.Request(inject.AnnTakeoverTo, target)
		op := cl.Outcome(inject.AnnTakeoverTo)
		if op.Result != failover.ResultRefused || !strings.Contains(op.Message, why) {
			t.Errorf("takeover to %s: %+v", target, op)
		}
		if cl.Master() != "db-0" {
			t.Fatalf("a refused takeover moved the master to %s", cl.Master())
		}
	}

	checker := startChecker(cl)
	labels := cl.WatchMasterLabel()
	w := startWriter(cl)
	w.waitFor("writes flowing", 100)
	cl.Request(inject.AnnTakeoverTo, "db-2")
	op := cl.Outcome(inject.AnnTakeoverTo)
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
	cl.Eventually("new topology", cl.Want(map[string]string{"db-0": "replica/yes", "db-1": "replica/yes", "db-2": "master/yes"}))
	// The new master is labelled before the old one loses the label: db-master never
	// selects nothing (refused connections until kube-proxy's next sync).
	if events, gaps := labels.Finish(); events < 3 || gaps > 0 {
		t.Errorf("master label: %d of %d pod states had no pod labelled master", gaps, events)
	}
	if !cl.ReadOnly(cl.Servers[0]) || cl.ReadOnly(cl.Servers[2]) {
		t.Errorf("read_only: old master %v, new master %v", cl.ReadOnly(cl.Servers[0]), cl.ReadOnly(cl.Servers[2]))
	}
	// Every acknowledged row, written before and after, is on the old master, which
	// now replicates from the new one.
	var total int
	cl.Eventually("old master caught up", func() error {
		var n int
		if err := cl.Servers[0].DB().QueryRow("SELECT COUNT(*) FROM app.w").Scan(&n); err != nil {
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
