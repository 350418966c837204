package failover

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	"github.com/replicant-dev/replicant/inject"
)

// ClusterState is the controller's own memory of a cluster, kept in the ConfigMap
// <sts>-replicant-state (StateName), owned by the StatefulSet and written only by the
// manager, always with the resourceVersion it read: a stale leader's write, or one
// racing a user's edit, fails instead of overwriting a newer decision. It is not an
// annotation of the StatefulSet, so no apply or edit of the StatefulSet changes it,
// and writing it never passes through the mutating webhook. The StatefulSet's
// replicant.dev/master and last-operation annotations mirror it for people and the
// CLI; the controller never reads them back.
type ClusterState struct {
	// Master is the pod the controller made master ("" before the first one).
	Master string `json:"master,omitempty"`
	// MasterSource is the address replicas replicate from the master by: how the
	// controller recognises, when the master is down, which replicas followed it.
	MasterSource string `json:"masterSource,omitempty"`
	// LastFailover is when the last automatic failover ended (the anti-flapping
	// window counts from it; takeovers and requests do not touch it).
	LastFailover time.Time `json:"lastFailover,omitzero"`
	// Quarantine maps pods found holding errant transactions to those GTIDs: never
	// elected while listed, even when the master is not there to compare with.
	Quarantine map[string]string `json:"quarantine,omitempty"`
	// SemiSyncFrom is the master's GTID position when its commits started to wait for
	// a replica's acknowledgement; Durable says they still do. A failover is proven
	// lossless only for a candidate that received at least this position.
	SemiSyncFrom string `json:"semiSyncFrom,omitempty"`
	Durable      bool   `json:"durable,omitempty"`
	// Promoting names the replica a promotion stopped receiving, until a master is
	// recorded: a promotion that fails or dies half way leaves it to be started again.
	Promoting string `json:"promoting,omitempty"`
}

// StateName is the name of a cluster's state ConfigMap.
func StateName(sts string) string { return inject.StateConfigMap(sts) }

// storedState is a ClusterState with the object it was read from (nil: none yet).
type storedState struct {
	ClusterState
	obj *corev1.ConfigMap
}

// loadState reads the cluster's state (uncached: it must be what this controller last
// wrote). A missing ConfigMap is an empty state with obj nil.
func loadState(ctx context.Context, r client.Reader, sts *appsv1.StatefulSet) (storedState, error) {
	cm := &corev1.ConfigMap{}
	err := r.Get(ctx, client.ObjectKey{Namespace: sts.Namespace, Name: StateName(sts.Name)}, cm)
	if apierrors.IsNotFound(err) {
		return storedState{}, nil
	}
	if err != nil {
		return storedState{}, fmt.Errorf("read state ConfigMap %s: %w", StateName(sts.Name), err)
	}
	st := storedState{obj: cm}
	if data := cm.Data[inject.StateKey]; data != "" {
		if err := json.Unmarshal([]byte(data), &st.ClusterState); err != nil {
			return storedState{}, fmt.Errorf("state ConfigMap %s: %w (the controller holds until it is fixed or deleted)", cm.Name, err)
		}
	}
	return st, nil
}

// saveState writes st with optimistic concurrency (create when new, update with the
// resourceVersion read otherwise) and keeps the new resourceVersion in st.
func saveState(ctx context.Context, c client.Client, sts *appsv1.StatefulSet, st *storedState) error {
	data, err := json.Marshal(st.ClusterState)
	if err != nil {
		return err
	}
	if st.obj == nil {
		cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: StateName(sts.Name), Namespace: sts.Namespace,
			Labels: map[string]string{inject.LabelCluster: sts.Name}},
			Data: map[string]string{inject.StateKey: string(data)}}
		if err := controllerutil.SetControllerReference(sts, cm, c.Scheme()); err != nil {
			return err
		}
		if err := c.Create(ctx, cm); err != nil {
			return fmt.Errorf("create state ConfigMap %s: %w", cm.Name, err)
		}
		st.obj = cm
		return nil
	}
	cm := st.obj.DeepCopy()
	if cm.Data == nil {
		cm.Data = map[string]string{}
	}
	if cm.Data[inject.StateKey] == string(data) {
		return nil
	}
	cm.Data[inject.StateKey] = string(data)
	if err := c.Update(ctx, cm); err != nil {
		return fmt.Errorf("record state in ConfigMap %s: %w", cm.Name, err)
	}
	st.obj = cm
	return nil
}
