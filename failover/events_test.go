package failover_test

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/record"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/replicant-dev/replicant/failover"
	"github.com/replicant-dev/replicant/test/controlplane"
	"github.com/replicant-dev/replicant/test/fixture"
)

// TestABusyClusterKeepsItsEvents: 60 different Events on one StatefulSet (a failover
// and a rolling update make dozens) all reach a real apiserver through the manager's
// broadcaster; client-go's default one keeps 25 and drops the rest.
func TestABusyClusterKeepsItsEvents(t *testing.T) {
	env := controlplane.Start(t, controlplane.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	clientset, err := kubernetes.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	const n = 60
	delivered := func(name string, broadcaster record.EventBroadcaster) int {
		sts := fixture.StatefulSet("default", name)
		if err := env.Client.Create(ctx, sts); err != nil {
			t.Fatal(err)
		}
		broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: clientset.CoreV1().Events("")})
		defer broadcaster.Shutdown()
		recorder := broadcaster.NewRecorder(env.Scheme, corev1.EventSource{Component: "replicant"})
		for i := 0; i < n; i++ {
			recorder.Eventf(sts, corev1.EventTypeNormal, failover.EventRollingUpdate, "step %d", i)
		}
		var count int
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
			var events corev1.EventList
			if err := env.Client.List(ctx, &events, client.InNamespace("default")); err != nil {
				t.Fatal(err)
			}
			count = 0
			for _, e := range events.Items {
				if e.InvolvedObject.Name == name {
					count++
				}
			}
			if count == n {
				break
			}
		}
		return count
	}
	if got := delivered("ours", failover.NewEventBroadcaster()); got != n {
		t.Errorf("the manager's broadcaster delivered %d of %d Events", got, n)
	}
	defaults := delivered("default", record.NewBroadcaster())
	t.Logf("client-go's default broadcaster delivered %d of %d", defaults, n)
	if defaults >= n {
		t.Errorf("the default broadcaster delivered all %d: the test no longer shows what it guards against", n)
	}
}
