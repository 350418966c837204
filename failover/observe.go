package failover

// observe: one Snapshot of the cluster, every member server probed (the master last).

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sort"
	"sync"
	"time"

	gomysql "github.com/go-sql-driver/mysql"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/replicant-dev/replicant/inject"
	"github.com/replicant-dev/replicant/mysql"
	"github.com/replicant-dev/replicant/sidecar"
)

// members lists the cluster's pods: those the StatefulSet controls (its UID in their
// controller reference). Any other pod that carries the cluster label is never
// probed with replicant's credentials, nor elected.
func (r *Reconciler) members(ctx context.Context, sts *appsv1.StatefulSet) ([]corev1.Pod, error) {
	pods := &corev1.PodList{}
	if err := r.Client.List(ctx, pods, client.InNamespace(sts.Namespace), client.MatchingLabels{inject.LabelCluster: sts.Name}); err != nil {
		return nil, err
	}
	var out []corev1.Pod
	for _, pod := range pods.Items {
		if ref := metav1.GetControllerOf(&pod); ref != nil && ref.UID == sts.UID {
			out = append(out, pod)
		} else {
			r.warnOnce(sts, "NotAMember/"+pod.Name, fmt.Sprintf(
				"pod %s carries %s=%s but the StatefulSet does not control it: ignored (never probed, never elected)", pod.Name, inject.LabelCluster, sts.Name))
		}
	}
	return out, nil
}

// countFailures keeps, between reconciles, since when the master has been
// unreachable, and counts the failed probes in probe intervals: reconciles also
// run on pod events, so counting reconciles would shorten the threshold.
func (r *Reconciler) countFailures(key types.NamespacedName, snap *Snapshot) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := time.Now()
	mem := r.mem(key)
	if m := snap.server(snap.Master); m != nil && !m.Reachable {
		if mem.downSince.IsZero() {
			mem.downSince = now
		}
		snap.MasterFailures = 1 + int(now.Sub(mem.downSince)/r.Options.ProbeInterval)
	} else {
		mem.downSince = time.Time{}
	}
	snap.FailureThreshold = r.Options.FailureThreshold
	snap.AntiFlap = r.Options.AntiFlap
	snap.Now = now
	base := mem.firstSeen
	if g := mem.lease; g.pod == snap.Master && g.at.After(base) {
		base = g.at
	}
	snap.WritesSafeAt = base.Add(r.Options.WriteLease + r.Options.LeaseMargin)
}

// closeGonePools closes the pools of addresses the cluster no longer has (a pod that
// restarted with a new IP, or went away), and drops the metrics of pods it no longer
// has (scaled down).
func (r *Reconciler) closeGonePools(key types.NamespacedName, snap Snapshot) {
	now, pods := map[string]bool{}, map[string]bool{}
	for _, srv := range snap.Servers {
		if srv.Addr != "" {
			now[srv.Addr] = true
		}
		pods[srv.Pod] = true
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	mem := r.mem(key)
	for addr := range mem.addrs {
		if !now[addr] {
			r.closePools(addr)
		}
	}
	for pod := range mem.pods {
		if !pods[pod] {
			forgetPodMetrics(key.Namespace, key.Name, pod)
		}
	}
	mem.addrs, mem.pods = now, pods
}

// pool returns the connection pool for addr as user, reusing it across probes. One
// pool per address and user name: a new password (a rotated Secret) replaces the pool
// and closes the old one's sessions.
func (r *Reconciler) pool(addr string, u mysql.User) *mysql.Server {
	key := addr + "|" + u.Name
	r.mu.Lock()
	defer r.mu.Unlock()
	if p, ok := r.pools[key]; ok {
		if p.password == u.Password {
			return p.Server
		}
		p.Close()
	}
	p, err := mysql.Open(mysql.Config{Addr: addr, User: u.Name, Password: u.Password,
		ConnectTimeout: r.Options.ProbeTimeout, QueryTimeout: 2 * r.Options.ProbeTimeout}, nil)
	if err != nil {
		panic(err) // Open only fails on a malformed configuration, which is built here
	}
	r.pools[key] = pooled{Server: p, password: u.Password}
	poolsOpen.Set(float64(len(r.pools)))
	return p
}

func ordinalOf(pod string) int64 {
	n, err := sidecar.Ordinal(pod)
	if err != nil {
		return -1
	}
	return n
}

// observe probes every pod; the known master is probed last (see Decide).
func (r *Reconciler) observe(ctx context.Context, sts *appsv1.StatefulSet, pods []corev1.Pod, creds Credentials, opts inject.Options, st ClusterState) Snapshot {
	snap := Snapshot{Cluster: sts.Name, Master: st.Master, MaxLag: opts.MaxLag, Replicas: desiredReplicas(sts),
		AutoFailover: opts.Failover == inject.FailoverAuto, LastFailover: st.LastFailover,
		Quarantined: st.Quarantine, Promoting: st.Promoting, SemiSync: opts.Durability == inject.DurabilitySemiSync, Durable: st.Durable,
		MasterSource: st.MasterSource}
	snap.SemiSyncFrom, _ = mysql.ParseGTIDSet(st.SemiSyncFrom)
	if sts.Spec.UpdateStrategy.Type == appsv1.OnDeleteStatefulSetStrategyType {
		snap.UpdateRevision = sts.Status.UpdateRevision
		snap.RolloutStallAfter = r.Options.RolloutStallAfter
	}
	if v, ok := sts.Annotations[inject.AnnFailoverTo]; ok {
		snap.FailoverTo = &v
	}
	if v, ok := sts.Annotations[inject.AnnTakeoverTo]; ok {
		snap.TakeoverTo = &v
	}
	sort.Slice(pods, func(i, j int) bool {
		mi, mj := pods[i].Name == snap.Master, pods[j].Name == snap.Master
		if mi != mj {
			return mj
		}
		return ordinalOf(pods[i].Name) < ordinalOf(pods[j].Name)
	})
	// Every other server at once (a server that does not answer costs its timeout
	// once, not once per pod), then the master: see Decide.
	servers := make([]Server, len(pods))
	var wg sync.WaitGroup
	for i := range pods {
		if pods[i].Name == snap.Master {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			servers[i] = r.probe(ctx, sts, &pods[i], creds, opts)
		}()
	}
	wg.Wait()
	for i := range pods {
		if pods[i].Name == snap.Master {
			servers[i] = r.probe(ctx, sts, &pods[i], creds, opts)
		}
	}
	snap.Servers = servers
	r.mu.Lock()
	rolled := r.mem(types.NamespacedName{Namespace: sts.Namespace, Name: sts.Name}).rolled
	r.mu.Unlock()
	for i := range snap.Servers {
		if rolled != "" && snap.Servers[i].UID == rolled {
			snap.Servers[i].Terminating = true // deleted by the rollout; the cache is behind
		}
	}
	if snap.Master != "" && snap.server(snap.Master) == nil {
		// The master's pod is gone (force-deleted, its node lost): a master that is
		// down, for failover to decide — never a cluster without one, which would be
		// bootstrapped by binlog state alone.
		snap.Servers = append(snap.Servers, Server{Pod: snap.Master, Ordinal: ordinalOf(snap.Master), Lag: -1,
			Err: "pod does not exist"})
	}
	return snap
}

// probe reads one pod's server.
func (r *Reconciler) probe(ctx context.Context, sts *appsv1.StatefulSet, pod *corev1.Pod, creds Credentials, opts inject.Options) Server {
	srv := Server{Pod: pod.Name, Ordinal: ordinalOf(pod.Name), Lag: -1,
		Detached: pod.Annotations[inject.AnnDetached] == "true", ResetRequested: pod.Annotations[inject.AnnResetReplica] == "true"}
	srv.Terminating = !pod.DeletionTimestamp.IsZero()
	srv.Initializing = initializing(pod)
	srv.UID, srv.Revision, srv.Created = string(pod.UID), pod.Labels[appsv1.ControllerRevisionHashLabelKey], pod.CreationTimestamp.Time
	srv.Ready, srv.Broken = podReady(pod), brokenContainer(pod)
	if pod.Status.PodIP == "" {
		srv.Err = "pod has no IP"
		return srv
	}
	srv.Addr = net.JoinHostPort(pod.Status.PodIP, "3306")
	srv.Login = creds.Admin
	state, err := r.pool(srv.Addr, srv.Login).State(ctx)
	if isPrivilegeDenied(err) {
		// The account exists but lacks a privilege: replication brought CREATE USER
		// and not yet its GRANT. A session keeps the global privileges it logged in
		// with, so the pooled ones would never get them: drop them.
		r.pool(srv.Addr, srv.Login).ForgetSessions()
		err = &gomysql.MySQLError{Number: 1045, Message: "replicant's account is not fully granted yet"}
	}
	if isAccessDenied(err) {
		// Before bootstrap, or before replication brought them, replicant's users
		// do not exist on this server yet: work as root.
		if root, rerr := rootPassword(ctx, r.Client, sts, opts.Container); rerr == nil {
			srv.Login = mysql.User{Name: "root", Password: root}
			state, err = r.pool(srv.Addr, srv.Login).State(ctx)
		}
	}
	if err != nil {
		srv.Err = err.Error()
		return srv
	}
	srv.Reachable, srv.State = true, state
	srv.SourceHost = pod.Status.PodIP
	if r.Options.Addressing == SourceReportHost && state.ReportHost != "" {
		srv.SourceHost = state.ReportHost
	}
	if state.Replica != nil {
		if lag, err := r.pool(srv.Addr, srv.Login).HeartbeatLag(ctx); err == nil {
			srv.Lag = lag
		}
	}
	srv.CloneGTID, srv.CloneKnown = r.cloneGTID(ctx, pod.Status.PodIP)
	return srv
}

// initializing reports whether the pod's init containers have not all finished: its
// server has not run in this pod yet.
func podReady(pod *corev1.Pod) bool {
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// brokenContainer says why one of the pod's containers cannot run, from the reasons
// the kubelet gives for a container that will not start by itself ("" when none).
func brokenContainer(pod *corev1.Pod) string {
	statuses := append(append([]corev1.ContainerStatus{}, pod.Status.InitContainerStatuses...), pod.Status.ContainerStatuses...)
	for _, cs := range statuses {
		if w := cs.State.Waiting; w != nil {
			switch w.Reason {
			case "ErrImagePull", "ImagePullBackOff", "InvalidImageName", "CrashLoopBackOff",
				"CreateContainerConfigError", "CreateContainerError", "RunContainerError":
				msg := fmt.Sprintf("container %s: %s", cs.Name, w.Reason)
				if w.Message != "" {
					msg += ": " + w.Message
				}
				if len(msg) > 300 {
					msg = msg[:300] + "…"
				}
				return msg
			}
		}
	}
	return ""
}

func initializing(pod *corev1.Pod) bool {
	if len(pod.Spec.InitContainers) == 0 {
		return false
	}
	if len(pod.Status.InitContainerStatuses) < len(pod.Spec.InitContainers) {
		return true
	}
	for _, cs := range pod.Status.InitContainerStatuses {
		if t := cs.State.Terminated; t == nil || t.ExitCode != 0 {
			return true
		}
	}
	return false
}

// desiredReplicas is the StatefulSet's replica count (1 when unset, as Kubernetes).
func desiredReplicas(sts *appsv1.StatefulSet) int64 {
	if sts.Spec.Replicas == nil {
		return 1
	}
	return int64(*sts.Spec.Replicas)
}

// cloneGTID asks the pod's sidecar where its clone ended ("" when unknown).
// known is false when the sidecar did not answer: then nobody knows yet whether the
// server was cloned, and from where its replication must start.
func (r *Reconciler) cloneGTID(ctx context.Context, ip string) (gtid string, known bool) {
	ctx, cancel := context.WithTimeout(ctx, r.Options.ProbeTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+net.JoinHostPort(ip, fmt.Sprint(inject.SidecarPort))+"/status", nil)
	if err != nil {
		return "", false
	}
	resp, err := r.sidecars.Do(req)
	if err != nil {
		return "", false
	}
	defer resp.Body.Close()
	var status struct {
		Clone *sidecar.CloneRecord `json:"clone"`
	}
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&status) != nil {
		return "", false
	}
	if status.Clone == nil {
		return "", true
	}
	return status.Clone.GTID, true
}

func isPrivilegeDenied(err error) bool {
	var me *gomysql.MySQLError
	return errors.As(err, &me) && me.Number == 1227 // ER_SPECIFIC_ACCESS_DENIED_ERROR
}

func isAccessDenied(err error) bool {
	var me *gomysql.MySQLError
	return errors.As(err, &me) && (me.Number == 1045 || me.Number == 1698) // ER_ACCESS_DENIED_ERROR, ER_ACCESS_DENIED_NO_PASSWORD_ERROR
}
