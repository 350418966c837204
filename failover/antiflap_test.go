package failover_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/replicant-dev/replicant/failover"
	"github.com/replicant-dev/replicant/inject"
	"github.com/replicant-dev/replicant/test/managed"
)

// TestSecondFailureInsideTheWindowWaitsForARequest: after an automatic failover, the
// new master's death is not acted on inside the anti-flapping window; a forced
// failover request is.
func TestSecondFailureInsideTheWindowWaitsForARequest(t *testing.T) {
	cl := managed.Start(t, 3)
	cl.Eventually("bootstrap", cl.Want(map[string]string{"db-0": "master/yes", "db-1": "replica/yes", "db-2": "replica/yes"}))
	createApp(cl)

	// A refused forced failover changes nothing.
	cl.Request(inject.AnnFailoverTo, "db-9")
	if op := cl.Outcome(inject.AnnFailoverTo); op.Result != failover.ResultRefused || cl.Master() != "db-0" {
		t.Fatalf("failover to db-9: %+v, master %s", op, cl.Master())
	}

	cl.Servers[0].Kill()
	first := cl.FailoverFrom("db-0")
	cl.Eventually("replicas follow", func() error {
		got, err := cl.Topology()
		if err != nil {
			return err
		}
		healthy := 0
		for _, v := range got {
			if v == "replica/yes" {
				healthy++
			}
		}
		if got[first] != "master/yes" || healthy != 1 {
			return fmt.Errorf("%v", got)
		}
		return nil
	})
	cl.Server(first).Kill()
	cl.Event("FailoverHeld")
	for end := time.Now().Add(2 * time.Second); time.Now().Before(end); time.Sleep(200 * time.Millisecond) {
		if m := cl.Master(); m != first {
			t.Fatalf("failed over to %s inside the anti-flapping window", m)
		}
	}

	cl.Request(inject.AnnFailoverTo, "any")
	op := cl.Outcome(inject.AnnFailoverTo)
	if op.Result != failover.ResultOK || op.Op != failover.OpForcedFailover || op.Target == first || op.Target == "db-0" {
		err := cl.Want(nil)()
		t.Fatalf("forced failover: %+v\n%v", op, err)
	}
	if cl.ReadOnly(cl.Server(op.Target)) {
		t.Errorf("%s is master but read-only", op.Target)
	}
	t.Logf("forced failover: %s", op.Message)
}
