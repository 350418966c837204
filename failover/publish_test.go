package failover

import (
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/record"
)

// TestAHoldThatComesBackIsSaidAgain: a Warning is not repeated while its condition
// lasts, and is said again when the same condition comes back after it ended (the e2e
// suite found a second outage held in silence: same message as the first one's).
func TestAHoldThatComesBackIsSaidAgain(t *testing.T) {
	rec := record.NewFakeRecorder(10)
	r := &Reconciler{Recorder: rec, clusters: map[types.NamespacedName]*memory{}}
	sts := &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "db"}}
	const held = "master db-0 is down, but the last failover ended inside the anti-flapping window"
	r.warnOnce(sts, EventFailoverHeld, held)
	r.warnOnce(sts, EventFailoverHeld, held)
	if n := len(rec.Events); n != 1 {
		t.Fatalf("%d Events while the hold lasted, want 1", n)
	}
	<-rec.Events
	r.warningEnded(sts, EventFailoverHeld)
	r.warnOnce(sts, EventFailoverHeld, held)
	if n := len(rec.Events); n != 1 {
		t.Fatalf("%d Events when the hold came back, want 1", n)
	}
}
