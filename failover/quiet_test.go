package failover_test

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/replicant-dev/replicant/failover"
	"github.com/replicant-dev/replicant/inject"
	"github.com/replicant-dev/replicant/test/managed"
)

// TestSettledClusterWritesNothingToTheAPI: once a cluster is settled, with writes
// flowing (positions move every round: the heartbeat, the clients), a round costs
// the apiserver nothing: status and labels change only when something meaningful
// does. A failover costs a bounded number of writes. The counts are of requests the
// manager sent to a real apiserver.
func TestSettledClusterWritesNothingToTheAPI(t *testing.T) {
	cl := managed.Start(t, 3)
	cl.Eventually("bootstrap", cl.Want(map[string]string{"db-0": "master/yes", "db-1": "replica/yes", "db-2": "replica/yes"}))
	createApp(cl)
	w := startWriter(cl)
	w.waitFor("writes flowing", 100)
	time.Sleep(3 * time.Second) // the last labels and events of the bootstrap land

	before, _ := cl.Requests.Writes()
	const quiet = 10 * time.Second // ~33 rounds at the tests' 300 ms probe interval
	time.Sleep(quiet)
	what, n := cl.Requests.Since(before)
	t.Logf("settled, %d writes acknowledged meanwhile: %d API writes in %v (%s)", w.count.Load(), n, quiet, what)
	if n > 0 {
		t.Errorf("a settled cluster wrote to the API %d times in %v: %s", n, quiet, what)
	}

	before, _ = cl.Requests.Writes()
	cl.Servers[0].Kill()
	newMaster := cl.FailoverFrom("db-0")
	w.waitFor("writes on the new master", 50)
	w.finish()
	time.Sleep(3 * time.Second)
	what, n = cl.Requests.Since(before)
	t.Logf("failover to %s: %d API writes (%s)", newMaster, n, what)
}

// TestAUsersServiceNamedLikeOursIsLeftAloneAndReported: the user already has a
// Service named db-master and a PodDisruptionBudget named db. replicant never takes
// them over (they stay the user's), says so in Warning Events, and the cluster is
// managed all the same: it bootstraps, and fails over.
func TestAUsersServiceNamedLikeOursIsLeftAloneAndReported(t *testing.T) {
	users := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "db-master", Namespace: "default"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "legacy"}, Ports: []corev1.ServicePort{{Name: "mysql", Port: 3306}}}}
	usersBudget := &policyv1.PodDisruptionBudget{ObjectMeta: metav1.ObjectMeta{Name: "db", Namespace: "default"},
		Spec: policyv1.PodDisruptionBudgetSpec{MinAvailable: ptr.To(intstr.FromInt32(0)),
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "legacy"}}}}
	cl := managed.StartWith(t, 3, managed.Options{Addressing: failover.SourcePodIP, Objects: []client.Object{users, usersBudget}})
	cl.Eventually("bootstrap", cl.Want(map[string]string{"db-0": "master/yes", "db-1": "replica/yes", "db-2": "replica/yes"}))
	cl.EventWith(failover.EventObjectConflict, "Service db-master exists and StatefulSet db does not control it")
	cl.EventWith(failover.EventObjectConflict, "PodDisruptionBudget db exists and StatefulSet db does not control it")
	cl.Eventually("the conflicts in the StatefulSet's conditions", func() error {
		sts := &appsv1.StatefulSet{}
		if err := cl.C.Get(cl.Ctx, client.ObjectKeyFromObject(cl.Sts), sts); err != nil {
			return err
		}
		var conditions []failover.Condition
		if err := json.Unmarshal([]byte(sts.Annotations[inject.AnnConditions]), &conditions); err != nil {
			return fmt.Errorf("%s: %q: %v", inject.AnnConditions, sts.Annotations[inject.AnnConditions], err)
		}
		if len(conditions) != 2 || conditions[0].Type != failover.ConditionObjectConflict || conditions[1].Type != failover.ConditionObjectConflict {
			return fmt.Errorf("conditions %+v", conditions)
		}
		return nil
	})
	cl.Servers[0].Kill()
	cl.FailoverFrom("db-0")
	var svc corev1.Service
	if err := cl.C.Get(cl.Ctx, client.ObjectKey{Namespace: "default", Name: "db-master"}, &svc); err != nil {
		t.Fatal(err)
	}
	if svc.Spec.Selector["app"] != "legacy" || len(svc.OwnerReferences) > 0 {
		t.Errorf("the user's Service was changed: selector %v, owners %v", svc.Spec.Selector, svc.OwnerReferences)
	}
	var pdb policyv1.PodDisruptionBudget
	if err := cl.C.Get(cl.Ctx, client.ObjectKey{Namespace: "default", Name: "db"}, &pdb); err != nil {
		t.Fatal(err)
	}
	if pdb.Spec.MinAvailable == nil || pdb.Spec.MinAvailable.IntValue() != 0 || pdb.Spec.MaxUnavailable != nil || len(pdb.OwnerReferences) > 0 {
		t.Errorf("the user's budget was changed: %+v, owners %v", pdb.Spec, pdb.OwnerReferences)
	}
	var replicas corev1.Service
	if err := cl.C.Get(cl.Ctx, client.ObjectKey{Namespace: "default", Name: "db-replicas"}, &replicas); err != nil {
		t.Errorf("db-replicas, which did not conflict, was not made: %v", err)
	}
	// The user removes their objects: replicant's are made, the conditions go away.
	if err := cl.C.Delete(cl.Ctx, &svc); err != nil {
		t.Fatal(err)
	}
	if err := cl.C.Delete(cl.Ctx, &pdb); err != nil {
		t.Fatal(err)
	}
	cl.Eventually("replicant's own objects, no conditions", func() error {
		sts := &appsv1.StatefulSet{}
		if err := cl.C.Get(cl.Ctx, client.ObjectKeyFromObject(cl.Sts), sts); err != nil {
			return err
		}
		if c, ok := sts.Annotations[inject.AnnConditions]; ok {
			return fmt.Errorf("conditions still %s", c)
		}
		var ours corev1.Service
		if err := cl.C.Get(cl.Ctx, client.ObjectKey{Namespace: "default", Name: "db-master"}, &ours); err != nil {
			return err
		}
		if !metav1.IsControlledBy(&ours, sts) {
			return fmt.Errorf("db-master not controlled by the StatefulSet yet")
		}
		return nil
	})
}

// TestDisruptionBudgetIsKept: every cluster gets the PodDisruptionBudget <sts>, at
// most one database pod unavailable, controlled by the StatefulSet; an edit of it is
// put back.
func TestDisruptionBudgetIsKept(t *testing.T) {
	cl := managed.Start(t, 3)
	cl.Eventually("bootstrap", cl.Want(map[string]string{"db-0": "master/yes", "db-1": "replica/yes", "db-2": "replica/yes"}))
	key := client.ObjectKey{Namespace: "default", Name: "db"}
	kept := func() error {
		var pdb policyv1.PodDisruptionBudget
		if err := cl.C.Get(cl.Ctx, key, &pdb); err != nil {
			return err
		}
		switch {
		case !metav1.IsControlledBy(&pdb, cl.Sts):
			return fmt.Errorf("not controlled by the StatefulSet: %v", pdb.OwnerReferences)
		case pdb.Spec.MaxUnavailable == nil || pdb.Spec.MaxUnavailable.IntValue() != 1 || pdb.Spec.MinAvailable != nil:
			return fmt.Errorf("maxUnavailable %v, minAvailable %v", pdb.Spec.MaxUnavailable, pdb.Spec.MinAvailable)
		case pdb.Spec.Selector == nil || len(pdb.Spec.Selector.MatchLabels) != 1 || pdb.Spec.Selector.MatchLabels[inject.LabelCluster] != "db":
			return fmt.Errorf("selector %v", pdb.Spec.Selector)
		case pdb.Spec.UnhealthyPodEvictionPolicy == nil || *pdb.Spec.UnhealthyPodEvictionPolicy != policyv1.AlwaysAllow:
			return fmt.Errorf("unhealthyPodEvictionPolicy %v", pdb.Spec.UnhealthyPodEvictionPolicy)
		}
		return nil
	}
	cl.Eventually("the budget", kept)

	var pdb policyv1.PodDisruptionBudget
	if err := cl.C.Get(cl.Ctx, key, &pdb); err != nil {
		t.Fatal(err)
	}
	pdb.Spec.MaxUnavailable = ptr.To(intstr.FromInt32(3))
	if err := cl.C.Update(cl.Ctx, &pdb); err != nil {
		t.Fatal(err)
	}
	cl.Eventually("the edited budget put back", kept)
}

// TestADeletedClusterIsForgotten: once its StatefulSet is deleted, the manager keeps
// nothing of a cluster: no memory, no connection pool (so no session on its servers),
// no metric series.
func TestADeletedClusterIsForgotten(t *testing.T) {
	cl := managed.Start(t, 3)
	cl.Eventually("bootstrap", cl.Want(map[string]string{"db-0": "master/yes", "db-1": "replica/yes", "db-2": "replica/yes"}))
	remembered := func() (clusters, pools float64, series int) {
		families, err := metrics.Registry.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range families {
			for _, m := range f.GetMetric() {
				switch f.GetName() {
				case "replicant_clusters":
					clusters = m.GetGauge().GetValue()
				case "replicant_connection_pools":
					pools = m.GetGauge().GetValue()
				}
				for _, l := range m.GetLabel() {
					if l.GetName() == "cluster" && l.GetValue() == "db" {
						series++
					}
				}
			}
		}
		return
	}
	clusters, pools, series := remembered()
	t.Logf("running: %v cluster(s), %v pool(s), %d series", clusters, pools, series)
	if clusters != 1 || pools == 0 || series == 0 {
		t.Fatalf("a running cluster: %v cluster(s), %v pool(s), %d series", clusters, pools, series)
	}
	if err := cl.C.Delete(cl.Ctx, cl.Sts); err != nil {
		t.Fatal(err)
	}
	cl.Eventually("forgotten", func() error {
		if clusters, pools, series := remembered(); clusters != 0 || pools != 0 || series != 0 {
			return fmt.Errorf("%v cluster(s), %v pool(s), %d series left", clusters, pools, series)
		}
		return nil
	})
}
