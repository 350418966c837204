package failover

// publish: labels and status annotations on the pods, Events on the StatefulSet.

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/predicate"

	"github.com/replicant-dev/replicant/inject"
)

// warnOnce records a Warning Event unless the same message was the last one for this
// cluster and reason ("reason/detail" keys keep one condition per pod apart).
func (r *Reconciler) warnOnce(sts *appsv1.StatefulSet, reason, message string) {
	r.mu.Lock()
	mem := r.mem(types.NamespacedName{Namespace: sts.Namespace, Name: sts.Name})
	repeated := mem.lastWarning[reason] == message
	mem.lastWarning[reason] = message
	r.mu.Unlock()
	if !repeated {
		r.Recorder.Event(sts, corev1.EventTypeWarning, strings.SplitN(reason, "/", 2)[0], message)
	}
}

// warningEnded forgets the last Warning for reason: the condition is over, and the
// same message, should it come back, is news again (a second outage held for the
// same reason must say so, not stay silent).
func (r *Reconciler) warningEnded(sts *appsv1.StatefulSet, reason string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.mem(types.NamespacedName{Namespace: sts.Namespace, Name: sts.Name}).lastWarning, reason)
}

// Condition is something that keeps a cluster from being fully managed, as the
// StatefulSet's conditions annotation shows it.
type Condition struct {
	Type    string    `json:"type"`
	Message string    `json:"message"`
	Since   time.Time `json:"since"`
}

// Condition types.
const (
	ConditionObjectConflict = "ObjectConflict"
	ConditionSetupFailed    = "SetupFailed"
	ConditionRolloutStalled = "RolloutStalled"
)

// publishConditions writes the StatefulSet's conditions annotation when the set of
// conditions (type and message) changed, keeping the time each one started; the
// annotation goes away when none is left. Nothing is written while it stays the same.
func (r *Reconciler) publishConditions(ctx context.Context, sts *appsv1.StatefulSet, now []Condition) error {
	var before []Condition
	if raw, ok := sts.Annotations[inject.AnnConditions]; ok {
		_ = json.Unmarshal([]byte(raw), &before)
	}
	sort.Slice(now, func(i, j int) bool {
		if now[i].Type != now[j].Type {
			return now[i].Type < now[j].Type
		}
		return now[i].Message < now[j].Message
	})
	same := len(before) == len(now)
	for i := range now {
		for _, b := range before {
			if b.Type == now[i].Type && b.Message == now[i].Message {
				now[i].Since = b.Since
			}
		}
		same = same && before[i].Type == now[i].Type && before[i].Message == now[i].Message
	}
	if same && (len(now) > 0) == (sts.Annotations[inject.AnnConditions] != "") {
		return nil
	}
	patch := client.MergeFrom(sts.DeepCopy())
	if len(now) == 0 {
		delete(sts.Annotations, inject.AnnConditions)
	} else {
		data, _ := json.Marshal(now)
		if sts.Annotations == nil {
			sts.Annotations = map[string]string{}
		}
		sts.Annotations[inject.AnnConditions] = string(data)
	}
	return r.Client.Patch(ctx, sts, patch)
}

// checkHeadlessService warns once when replicas address their source through the
// user's headless Service and it publishes only Ready pods: a master whose readiness
// probe fails would vanish from DNS, and its replicas with it.
func (r *Reconciler) checkHeadlessService(ctx context.Context, key types.NamespacedName, sts *appsv1.StatefulSet) {
	if r.Options.Addressing != SourceReportHost {
		return
	}
	svc := &corev1.Service{}
	if err := r.Reader.Get(ctx, client.ObjectKey{Namespace: sts.Namespace, Name: sts.Spec.ServiceName}, svc); err != nil {
		return
	}
	r.mu.Lock()
	mem := r.mem(key)
	warned := mem.warnedHeadless
	fragile := !svc.Spec.PublishNotReadyAddresses
	mem.warnedHeadless = fragile
	r.mu.Unlock()
	if fragile && !warned {
		r.Recorder.Eventf(sts, corev1.EventTypeWarning, "HeadlessServiceFragile",
			"Service %s publishes only Ready pods: replicas reach their source by <pod>.%s.%s, which stops resolving when the master's readiness probe fails; set spec.publishNotReadyAddresses: true",
			svc.Name, svc.Name, sts.Namespace)
	}
}

// reportSemiSync raises an Event when the master's commits stall (semi-sync is on
// and no replica is connected to acknowledge them: with durability semi-sync that is
// the price of never acknowledging a write a failover could lose) and when they
// resume.
func (r *Reconciler) reportSemiSync(key types.NamespacedName, sts *appsv1.StatefulSet, snap Snapshot) {
	m := snap.server(snap.Master)
	if m == nil || !m.Reachable || !m.State.SemiSync.MasterEnabled || m.State.ReadOnly {
		return
	}
	active := m.State.SemiSync.Waiting()
	r.mu.Lock()
	mem := r.mem(key)
	prev, known := mem.semiSyncWaiting, mem.semiSyncKnown
	mem.semiSyncWaiting, mem.semiSyncKnown = active, true
	r.mu.Unlock()
	switch {
	case (!known || prev) && !active:
		r.Recorder.Eventf(sts, corev1.EventTypeWarning, EventWritesStalled,
			"commits on master %s wait for a replica's acknowledgement and no replica is connected: writes stall until one is (durability semi-sync never acknowledges a write only the master has)", m.Pod)
	case known && !prev && active:
		r.Recorder.Eventf(sts, corev1.EventTypeNormal, EventWritesResumed, "commits on master %s are acknowledged by a replica again", m.Pod)
	}
}

// publish writes role and health labels and the status annotation on every pod.
func (r *Reconciler) publish(ctx context.Context, sts *appsv1.StatefulSet, pods []corev1.Pod, snap Snapshot, plan Plan) error {
	// The master's pod first: during a switch <sts>-master then briefly selects the old
	// master (already read-only) beside the new one, never nothing, which kube-proxy
	// would turn into refused connections until its next sync (up to a second).
	order := make([]*corev1.Pod, 0, len(pods))
	for i := range pods {
		if plan.Roles[pods[i].Name] == RoleMaster {
			order = append([]*corev1.Pod{&pods[i]}, order...)
		} else {
			order = append(order, &pods[i])
		}
	}
	for _, pod := range order {
		srv := snap.server(pod.Name)
		if srv == nil {
			continue
		}
		st := PodStatus{Reachable: srv.Reachable, LastError: srv.Err}
		if !srv.Reachable {
			// Keep what was last known of an unreachable server (orchestrator shows
			// "unknown,invalid" with the version it knew).
			var last PodStatus
			if json.Unmarshal([]byte(pod.Annotations[inject.AnnStatus]), &last) == nil {
				st.Version, st.ReadOnly, st.BinlogFmt, st.ReportHost = last.Version, last.ReadOnly, last.BinlogFmt, last.ReportHost
			}
		}
		if srv.Reachable {
			s := srv.State
			st.Version, st.ReadOnly, st.BinlogFmt, st.ReportHost = s.Version, s.ReadOnly, s.BinlogFormat, s.ReportHost
			if s.Replica != nil {
				st.IOThread, st.SQLThread, st.Source = s.Replica.IORunning, s.Replica.SQLRunning, s.Replica.SourceHost
				if e := s.Replica.LastIOError + s.Replica.LastSQLError; e != "" {
					st.LastError = e
				}
			}
			if srv.Lag >= 0 {
				secs := roundLag(int64(srv.Lag/time.Second), int64(snap.MaxLag/time.Second))
				st.LagSeconds = &secs
			}
			if ss := s.SemiSync; plan.Roles[pod.Name] == RoleMaster && ss.MasterEnabled {
				st.SemiSync = fmt.Sprintf("on: %d replica(s) acknowledge commits", ss.MasterClients)
				if !ss.Waiting() {
					st.SemiSync = "stalled: commits wait for a replica and none is connected"
				}
			} else if plan.Roles[pod.Name] == RoleMaster && !s.ReadOnly {
				st.SemiSync = "off: commits do not wait for a replica"
				if snap.Replicas <= 1 {
					st.SemiSync = "off: the only server; commits are durable on its own disk only"
				}
			}
		}
		if errant := plan.Quarantine[pod.Name]; !errant.Empty() {
			st.ErrantGTIDs = errant.String()
		}
		status, _ := json.Marshal(st)
		healthy := "no"
		if plan.Healthy[pod.Name] {
			healthy = "yes"
		}
		if pod.Labels[inject.LabelRole] == plan.Roles[pod.Name] && pod.Labels[inject.LabelHealthy] == healthy &&
			pod.Annotations[inject.AnnStatus] == string(status) {
			continue
		}
		patch := client.MergeFrom(pod.DeepCopy())
		if pod.Labels == nil {
			pod.Labels = map[string]string{}
		}
		if pod.Annotations == nil {
			pod.Annotations = map[string]string{}
		}
		pod.Labels[inject.LabelRole] = plan.Roles[pod.Name]
		pod.Labels[inject.LabelHealthy] = healthy
		pod.Annotations[inject.AnnStatus] = string(status)
		if err := r.Client.Patch(ctx, pod, patch); err != nil {
			return fmt.Errorf("label pod %s: %w", pod.Name, err)
		}
	}
	return nil
}

// notOwnPublish drops the Pod updates that only carry what publish wrote (the role
// and health labels, the status annotation): reacting to them would run a round
// for each round's own report. Anything else about a pod (its phase, readiness, IP,
// deletion, a user's label) still triggers a round at once.
var notOwnPublish = predicate.Funcs{UpdateFunc: func(e event.UpdateEvent) bool {
	oldPod, ok1 := e.ObjectOld.(*corev1.Pod)
	newPod, ok2 := e.ObjectNew.(*corev1.Pod)
	if !ok1 || !ok2 {
		return true
	}
	return !equality.Semantic.DeepEqual(withoutPublished(oldPod), withoutPublished(newPod))
}}

func withoutPublished(pod *corev1.Pod) *corev1.Pod {
	p := pod.DeepCopy()
	p.ResourceVersion, p.ManagedFields, p.Generation = "", nil, 0
	delete(p.Labels, inject.LabelRole)
	delete(p.Labels, inject.LabelHealthy)
	delete(p.Annotations, inject.AnnStatus)
	return p
}
