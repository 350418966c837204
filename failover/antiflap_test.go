package failover_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/replicant-dev/replicant/failover"
	"github.com/replicant-dev/replicant/inject"
)

// TestSecondFailureInsideTheWindowWaitsForARequest: after an automatic failover, the
// new master's death is not acted on inside the anti-flapping window; a forced
// failover request is.
func TestSecondFailureInsideTheWindowWaitsForARequest(t *testing.T) {
	cl := startCluster(t, 3)
	cl.eventually("bootstrap", cl.want(map[string]string{"db-0": "master/yes", "db-1": "replica/yes", "db-2": "replica/yes"}))
	cl.createApp()

	// A refused forced failover changes nothing.
	cl.request(inject.AnnFailoverTo, "db-9")
	if op := cl.outcome(inject.AnnFailoverTo); op.Result != failover.ResultRefused || cl.master() != "db-0" {
		t.Fatalf("failover to db-9: %+v, master %s", op, cl.master())
	}

	cl.servers[0].Kill()
	first := cl.failoverFrom("db-0")
	cl.eventually("replicas follow", func() error {
		got, err := cl.topology()
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
	cl.server(first).Kill()
	cl.event("FailoverHeld")
	for end := time.Now().Add(2 * time.Second); time.Now().Before(end); time.Sleep(200 * time.Millisecond) {
		if m := cl.master(); m != first {
			t.Fatalf("failed over to %s inside the anti-flapping window", m)
		}
	}

	cl.request(inject.AnnFailoverTo, "any")
	op := cl.outcome(inject.AnnFailoverTo)
	if op.Result != failover.ResultOK || op.Op != failover.OpForcedFailover || op.Target == first || op.Target == "db-0" {
		err := cl.want(nil)()
		t.Fatalf("forced failover: %+v\n%v", op, err)
	}
	if cl.readOnly(cl.server(op.Target)) {
		t.Errorf("%s is master but read-only", op.Target)
	}
	t.Logf("forced failover: %s", op.Message)
}
