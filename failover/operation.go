package failover

import (
	"context"
	"encoding/json"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/replicant-dev/replicant/inject"
)

// Operation is the replicant.dev/last-operation annotation: the last failover,
// takeover or request, and how it ended.
type Operation struct {
	Op              string    `json:"op"` // failover, takeover, forced-failover, reset-replica
	From            string    `json:"from,omitempty"`
	Target          string    `json:"target,omitempty"`
	Result          string    `json:"result"` // ok, failed, refused
	Message         string    `json:"message,omitempty"`
	Start           time.Time `json:"start"`
	End             time.Time `json:"end"`
	WritesBlockedMs int64     `json:"writesBlockedMs,omitempty"`
}

// Operation names and results.
const (
	OpFailover       = "failover"
	OpForcedFailover = "forced-failover"
	OpTakeover       = "takeover"
	OpResetReplica   = "reset-replica"

	ResultOK      = "ok"
	ResultFailed  = "failed"
	ResultRefused = "refused"
)

// annotate mirrors the master (the state holds it) and, when op is not nil, records
// the last operation on the StatefulSet, and removes the request annotations named in
// done. The manager's patches skip the mutating webhook (its matchConditions), so
// they neither depend on it nor re-inject the pod template.
func (r *Reconciler) annotate(ctx context.Context, sts *appsv1.StatefulSet, master string, op *Operation, done ...string) error {
	patch := client.MergeFrom(sts.DeepCopy())
	if sts.Annotations == nil {
		sts.Annotations = map[string]string{}
	}
	if master != "" {
		sts.Annotations[inject.AnnMaster] = master
	}
	if op != nil {
		observeOperation(sts.Namespace, sts.Name, *op)
		data, _ := json.Marshal(op)
		sts.Annotations[inject.AnnLastOperation] = string(data)
	}
	for _, k := range done {
		delete(sts.Annotations, k)
	}
	return r.Client.Patch(ctx, sts, patch)
}
