package failover

// publish: labels and status annotations on the pods, Events on the StatefulSet.

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

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
			st.Version, st.ReadOnly, st.GTID, st.BinlogFmt, st.ReportHost = s.Version, s.ReadOnly, s.CurrentPos.String(), s.BinlogFormat, s.ReportHost
			if s.Replica != nil {
				st.IOThread, st.SQLThread, st.Source = s.Replica.IORunning, s.Replica.SQLRunning, s.Replica.SourceHost
				if e := s.Replica.LastIOError + s.Replica.LastSQLError; e != "" {
					st.LastError = e
				}
			}
			if srv.Lag >= 0 {
				secs := int64(srv.Lag / time.Second)
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
		if errant := plan.Quarantine[pod.Name]; len(errant) > 0 {
			var parts []string
			for _, g := range errant {
				parts = append(parts, g.String())
			}
			st.ErrantGTIDs = strings.Join(parts, ",")
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
