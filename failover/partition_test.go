package failover_test

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/replicant-dev/replicant/failover"
	"github.com/replicant-dev/replicant/mysql"
	"github.com/replicant-dev/replicant/test/managed"
	"github.com/replicant-dev/replicant/test/mariadb"
)

// startWithMasterBehindProxy starts a 3-pod cluster whose db-0 (the first master) is
// reached, by the controller and (with pod-ip addressing) by the replicas, only
// through a proxy that a test can cut.
func startWithMasterBehindProxy(t *testing.T, addressing failover.SourceAddressing) (*managed.Cluster, *managed.Proxy) {
	return startFlavorWithMasterBehindProxy(t, "mariadb", addressing)
}

func startFlavorWithMasterBehindProxy(t *testing.T, flavor string, addressing failover.SourceAddressing) (*managed.Cluster, *managed.Proxy) {
	var path *managed.Proxy
	cl := managed.StartWith(t, 3, managed.Options{
		Flavor:     flavor,
		Addressing: addressing,
		PodIP: func(s *mariadb.Server) string {
			if s.Name != "db-0" {
				return s.Host
			}
			path = managed.NewProxy(t, s.Host, "3306", "8080")
			return path.Addr
		},
	})
	return cl, path
}

// TestControllerAloneLosingTheMasterDoesNotFailOver: the controller reaches the
// master through a path that breaks; the replicas, replicating from the master's
// report_host, still receive from it. No failover; the master, whose write lease the
// controller can no longer renew, fences itself.
func TestControllerAloneLosingTheMasterDoesNotFailOver(t *testing.T) {
	cl, path := startWithMasterBehindProxy(t, failover.SourceReportHost)
	cl.Eventually("bootstrap", cl.Want(map[string]string{"db-0": "master/yes", "db-1": "replica/yes", "db-2": "replica/yes"}))
	// Replicas address the master through the headless Service here: one that
	// publishes only Ready pods is reported.
	headless := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "mysql", Namespace: "default"},
		Spec: corev1.ServiceSpec{ClusterIP: corev1.ClusterIPNone, Selector: map[string]string{"app": "db"},
			Ports: []corev1.ServicePort{{Name: "mysql", Port: 3306}}}}
	if err := cl.C.Create(cl.Ctx, headless); err != nil {
		t.Fatal(err)
	}
	cl.Event("HeadlessServiceFragile")
	path.Cut()
	cl.Event("FailoverHeld")
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); time.Sleep(200 * time.Millisecond) {
		if m := cl.Master(); m != "db-0" {
			t.Fatalf("failed over to %s although the replicas still receive from db-0", m)
		}
	}
	// Its write lease is no longer renewed: db-0's sidecar fences it (the
	// controller cannot tell this from a master cut off from everyone). No server
	// takes writes; the replicas stay read-only.
	cl.Eventually("db-0 fenced by its sidecar", func() error {
		if !cl.ReadOnly(cl.Servers[0]) {
			return fmt.Errorf("db-0 still writable")
		}
		return nil
	})
	if !cl.ReadOnly(cl.Servers[1]) || !cl.ReadOnly(cl.Servers[2]) {
		t.Errorf("a replica is writable")
	}
	if m := cl.Master(); m != "db-0" {
		t.Errorf("failed over to %s", m)
	}
}

// TestIsolatedMasterAcknowledgesNothingAFailoverLoses: the master is cut off from the
// controller and its replicas (they reach it only through a path that breaks), while
// one client goes on writing to it from inside its partition and another writes
// through the path, to whichever server is master. The master's commits wait for a
// replica that never answers, its write lease runs out and its sidecar fences it;
// only then is a replica promoted. Every write acknowledged to either client is on
// the new master, and at no poll (every 10 ms, from inside every partition) are two
// servers writable, also when the path heals.
func TestIsolatedMasterAcknowledgesNothingAFailoverLoses(t *testing.T) {
	for _, flavor := range mariadb.Flavors {
		t.Run(flavor, func(t *testing.T) { testIsolatedMasterAcknowledgesNothing(t, flavor) })
	}
}

func testIsolatedMasterAcknowledgesNothing(t *testing.T, flavor string) {
	cl, path := startFlavorWithMasterBehindProxy(t, flavor, failover.SourcePodIP)
	cl.Eventually("bootstrap", cl.Want(map[string]string{"db-0": "master/yes", "db-1": "replica/yes", "db-2": "replica/yes"}))
	createApp(cl)
	checker := startChecker(cl)
	outside := startWriterVia(cl, map[string]string{"db-0": net.JoinHostPort(path.Addr, "3306")})
	inside := startLocalWriter(cl.Servers[0], 10_000_000)
	outside.waitFor("writes flowing", 100)

	cutAt := time.Now()
	insideBefore := inside.count.Load()
	path.Cut()
	old := cl.Servers[0]
	var fencedAfter time.Duration
	cl.Eventually("the isolated master fences itself", func() error {
		if !cl.ReadOnly(old) {
			return fmt.Errorf("db-0 still writable")
		}
		fencedAfter = time.Since(cutAt)
		return nil
	})
	newMaster := cl.Server(cl.FailoverFrom("db-0"))
	failedOverAfter := time.Since(cutAt)
	outside.waitFor("writes on the new master", 100)
	insideAfterCut := inside.count.Load() - insideBefore

	path.Heal(t)
	cl.Eventually("the old master back as a replica or quarantined", func() error {
		top, err := cl.Topology()
		if err != nil {
			return err
		}
		if r := top["db-0"]; r != "replica/yes" && r != "replica/no" {
			return fmt.Errorf("db-0 is %s", r)
		}
		if st := cl.PodStatus("db-0"); !st.Reachable {
			return fmt.Errorf("db-0 not reachable yet")
		}
		return nil
	})
	time.Sleep(time.Second) // a few more polls after the heal
	outside.finish()
	inside.finish()
	checker.finish()

	present := rowIDs(t, newMaster)
	lost := map[string]int{}
	for name, w := range map[string]*writer{"outside": outside, "inside": inside} {
		w.acked.Range(func(k, _ any) bool {
			if !present[k.(int)] {
				lost[name]++
			}
			return true
		})
	}
	if len(lost) > 0 {
		t.Errorf("acknowledged writes missing on the new master %s: %v", newMaster.Name, lost)
	}
	if v := checker.violations.Load(); v > 0 {
		t.Errorf("two writable servers at %d of %d polls", v, checker.polls.Load())
	}
	t.Logf("cut: db-0 fenced itself after %v, %s promoted after %v; acknowledged: outside %d, inside %d (%d after the cut), none lost; %d read_only polls, never two writable",
		fencedAfter.Round(time.Millisecond), newMaster.Name, failedOverAfter.Round(time.Millisecond),
		outside.count.Load(), inside.count.Load(), insideAfterCut, checker.polls.Load())
}

// TestIsolatedMasterRejoinsAndCatchesUp: a master cut off with no client of its own
// (its semi-sync master side still on, waiting for replicas that never answer) comes
// back after the failover holding nothing the new master lacks. It must rejoin as a
// healthy replica and apply what the new master took meanwhile: a replica whose
// semi-sync master side stayed on would make its own replication thread wait for an
// acknowledgement nobody sends (found by the e2e suite: the old master stuck, lag
// growing, after an apiserver outage).
func TestIsolatedMasterRejoinsAndCatchesUp(t *testing.T) {
	cl, path := startWithMasterBehindProxy(t, failover.SourcePodIP)
	cl.Eventually("bootstrap", cl.Want(map[string]string{"db-0": "master/yes", "db-1": "replica/yes", "db-2": "replica/yes"}))
	createApp(cl)
	w := startWriter(cl)
	w.waitFor("writes flowing", 50)
	w.finish()

	path.Cut()
	newMaster := cl.Server(cl.FailoverFrom("db-0"))
	after := startWriter(cl)
	after.waitFor("writes on the new master", 50)
	after.finish()
	path.Heal(t)

	old := cl.Servers[0]
	oldState, newState := stateOf(t, old), stateOf(t, newMaster)
	if errant := oldState.BinlogState.Errant(newState.BinlogState); !errant.Empty() {
		// The cut caught a heartbeat between its commit and its sending: the old
		// master holds a transaction nobody received; quarantine is then right.
		t.Skipf("the cut left %v on db-0 alone (quarantine is right; nothing to check here)", errant)
	}
	want := map[string]string{"db-0": "replica/yes", "db-1": "replica/yes", "db-2": "replica/yes"}
	want[newMaster.Name] = "master/yes"
	cl.Eventually("the old master a healthy replica", cl.Want(want))
	cl.Eventually("the old master caught up", func() error {
		present := rowIDs(t, old)
		missing := 0
		after.acked.Range(func(k, _ any) bool {
			if !present[k.(int)] {
				missing++
			}
			return true
		})
		if missing > 0 {
			return fmt.Errorf("%d rows written on %s after the failover missing on db-0", missing, newMaster.Name)
		}
		return nil
	})
}

func stateOf(t *testing.T, s *mariadb.Server) mysql.State {
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
	return st
}

// startLocalWriter writes ids from base on, one by one, to s itself: a client inside
// s's network partition, which never looks for another master.
func startLocalWriter(s *mariadb.Server, base int) *writer {
	w := &writer{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		db := quickDB(s, true)
		defer db.Close()
		for id := base; id < base+1_000_000; id++ {
			select {
			case <-w.stop:
				return
			default:
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_, err := db.ExecContext(ctx, "INSERT INTO app.w (id) VALUES (?)", id)
			cancel()
			if err != nil {
				time.Sleep(20 * time.Millisecond)
				continue
			}
			w.acked.Store(id, true)
			w.count.Add(1)
		}
	}()
	return w
}

// TestMasterWithoutALeaseIsFencedByTheController: the master's sidecar dies, so its
// write lease can be neither renewed nor enforced; the controller, which still reaches
// the server, fences it itself (no master is writable without a lease that protects
// the next failover), and reopens it when a new sidecar holds the lease again.
func TestMasterWithoutALeaseIsFencedByTheController(t *testing.T) {
	cl := managed.Start(t, 3)
	cl.Eventually("bootstrap", cl.Want(map[string]string{"db-0": "master/yes", "db-1": "replica/yes", "db-2": "replica/yes"}))
	cl.StopSidecar("db-0")
	cl.Eventually("db-0 fenced by the controller", func() error {
		if !cl.ReadOnly(cl.Servers[0]) {
			return fmt.Errorf("db-0 still writable")
		}
		return nil
	})
	cl.EventWith("ActionFailed", "holds no write lease")
	if m := cl.Master(); m != "db-0" {
		t.Errorf("failed over to %s: the master answers, only its sidecar is gone", m)
	}
	cl.RestartSidecar("db-0")
	cl.Eventually("db-0 writable again", func() error {
		if cl.ReadOnly(cl.Servers[0]) {
			return fmt.Errorf("db-0 still read-only")
		}
		return nil
	})
}

// TestAPIServerOutageKeepsTheMasterWritable: the controller loses the apiserver for
// a few seconds (longer than the write lease): it cannot decide anything then, but
// it keeps renewing the lease of the master it last recorded, so the master stays
// writable throughout; nothing changes when the API is back.
func TestAPIServerOutageKeepsTheMasterWritable(t *testing.T) {
	cl := managed.StartWith(t, 3, managed.Options{Addressing: failover.SourcePodIP, APIProxy: true})
	cl.Eventually("bootstrap", cl.Want(map[string]string{"db-0": "master/yes", "db-1": "replica/yes", "db-2": "replica/yes"}))
	cl.API.Cut()
	for end := time.Now().Add(6 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		if cl.ReadOnly(cl.Servers[0]) {
			t.Fatalf("the master was fenced during an apiserver outage of the controller")
		}
	}
	cl.API.Heal(t)
	cl.Eventually("settled again", cl.Want(map[string]string{"db-0": "master/yes", "db-1": "replica/yes", "db-2": "replica/yes"}))
	if cl.ReadOnly(cl.Servers[0]) || cl.Master() != "db-0" {
		t.Errorf("master %s, read-only %v after the outage", cl.Master(), cl.ReadOnly(cl.Servers[0]))
	}
}
