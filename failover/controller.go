package failover

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	gomysql "github.com/go-sql-driver/mysql"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/record"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/replicant-dev/replicant/inject"
	"github.com/replicant-dev/replicant/mysql"
	"github.com/replicant-dev/replicant/sidecar"
)

// SourceAddressing says which address replicas replicate from.
type SourceAddressing string

const (
	// SourceReportHost: the master's report_host, <pod>.<service>.<namespace>, which
	// follows a pod that restarts with a new IP (needs working cluster DNS).
	SourceReportHost SourceAddressing = "report-host"
	// SourcePodIP: the master pod's IP (no DNS needed; the controller repoints when
	// the IP changes).
	SourcePodIP SourceAddressing = "pod-ip"
)

// Options of the controller.
type Options struct {
	// ProbeInterval is how often every server is probed (default 1s).
	ProbeInterval time.Duration
	// ProbeTimeout bounds one probe (default 1s).
	ProbeTimeout time.Duration
	Addressing   SourceAddressing
	// FailureThreshold is how many probes of the master in a row must fail (default 3).
	FailureThreshold int
	// AntiFlap is how long after an automatic failover another one waits for a human
	// request (default 5m). Takeovers do not count.
	AntiFlap time.Duration
	// ApplyTimeout bounds how long a promoted replica may take to apply its relay log.
	ApplyTimeout time.Duration
	// WriteLease is how long a master's sidecar keeps its server writable after the
	// controller's last renewal (default 3s); LeaseMargin is added before another
	// server takes writes (default 500ms: clock rates, the sidecar's check interval).
	WriteLease, LeaseMargin time.Duration
}

// Reconciler runs every labelled StatefulSet's cluster.
type Reconciler struct {
	Client client.Client
	// Reader reads the StatefulSet uncached: the master and the last operation must
	// be what the controller itself last wrote, never a cache a step behind (a stale
	// master annotation would start a second failover). Default: the manager's.
	Reader   client.Reader
	Recorder record.EventRecorder
	Options  Options

	mu    sync.Mutex
	pools map[string]*mysql.Server // by address and user
	// downSince is when each cluster's master was first seen unreachable.
	downSince map[types.NamespacedName]time.Time
	// semiSync is whether each cluster's master had semi-sync active at the last probe.
	semiSync map[types.NamespacedName]bool
	// addrs are the server addresses each cluster had at the last probe, so that
	// the pools of pods that went away are closed.
	addrs map[types.NamespacedName]map[string]bool
	// warnedHeadless records clusters already warned about their headless Service.
	warnedHeadless map[types.NamespacedName]bool
	// lastWarning is the last message of each repeated warning (by cluster and
	// reason), so a condition that lasts is reported once, not every probe.
	lastWarning map[string]string
	// leases is the last write lease each cluster's master accepted, and firstSeen
	// when this controller first ran each cluster: before a lease of its own, a
	// previous controller's may still run.
	leases    map[types.NamespacedName]leaseGrant
	firstSeen map[types.NamespacedName]time.Time
	sidecars  *http.Client
}

// leaseGrant is a write lease a master's sidecar accepted: at is when its answer
// arrived, after the sidecar started counting.
type leaseGrant struct {
	pod string
	at  time.Time
}

// SetupWithManager registers the controller: StatefulSets that opted in, and their
// pods (by the cluster label).
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.Options.ProbeInterval == 0 {
		r.Options.ProbeInterval = time.Second
	}
	if r.Options.ProbeTimeout == 0 {
		r.Options.ProbeTimeout = time.Second
	}
	if r.Options.Addressing == "" {
		r.Options.Addressing = SourceReportHost
	}
	if r.Options.FailureThreshold == 0 {
		r.Options.FailureThreshold = 3
	}
	if r.Options.AntiFlap == 0 {
		r.Options.AntiFlap = 5 * time.Minute
	}
	if r.Options.ApplyTimeout == 0 {
		r.Options.ApplyTimeout = 30 * time.Second
	}
	if r.Options.WriteLease == 0 {
		r.Options.WriteLease = 3 * time.Second
	}
	if r.Options.LeaseMargin == 0 {
		r.Options.LeaseMargin = 500 * time.Millisecond
	}
	if r.Reader == nil {
		r.Reader = mgr.GetAPIReader()
	}
	r.leases = map[types.NamespacedName]leaseGrant{}
	r.firstSeen = map[types.NamespacedName]time.Time{}
	r.sidecars = &http.Client{Timeout: r.Options.ProbeTimeout}
	r.pools = map[string]*mysql.Server{}
	r.downSince = map[types.NamespacedName]time.Time{}
	r.semiSync = map[types.NamespacedName]bool{}
	r.addrs = map[types.NamespacedName]map[string]bool{}
	r.warnedHeadless = map[types.NamespacedName]bool{}
	r.lastWarning = map[string]string{}
	optedIn := predicate.NewPredicateFuncs(func(o client.Object) bool { return o.GetLabels()[inject.LabelInject] == inject.InjectEnabled })
	return ctrl.NewControllerManagedBy(mgr).
		Named("replicant").
		For(&appsv1.StatefulSet{}, builder.WithPredicates(optedIn)).
		Watches(&corev1.Pod{}, handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
			if cluster := o.GetLabels()[inject.LabelCluster]; cluster != "" {
				return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: o.GetNamespace(), Name: cluster}}}
			}
			return nil
		})).
		Complete(r)
}

// Reconcile observes, decides and acts for one cluster, then comes back after the
// probe interval.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	logger := log.FromContext(ctx)
	sts := &appsv1.StatefulSet{}
	if err := r.Reader.Get(ctx, req.NamespacedName, sts); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !inject.Enabled(sts) || !sts.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, nil
	}
	opts, err := inject.ParseOptions(sts)
	if err != nil {
		r.Recorder.Event(sts, corev1.EventTypeWarning, "InvalidAnnotations", err.Error())
		return ctrl.Result{}, nil // the webhook refuses such objects; nothing to do until fixed
	}
	creds, err := ensureSecret(ctx, r.Client, sts, opts.CredentialsSecret)
	if err != nil {
		return ctrl.Result{}, err
	}
	if err := ensureServices(ctx, r.Client, sts); err != nil {
		return ctrl.Result{}, err
	}
	r.checkHeadlessService(ctx, req.NamespacedName, sts)
	st, err := loadState(ctx, r.Reader, sts)
	if err != nil {
		r.warnOnce(sts, "StateUnreadable", err.Error())
		return ctrl.Result{}, err
	}
	pods, err := r.members(ctx, sts)
	if err != nil {
		return ctrl.Result{}, err
	}

	snap := r.observe(ctx, sts, pods, creds, opts, st.ClusterState)
	r.countFailures(req.NamespacedName, &snap)
	r.closeGonePools(req.NamespacedName, snap)
	plan := Decide(snap)
	observeMetrics(sts.Namespace, snap, plan)
	r.reportSemiSync(req.NamespacedName, sts, snap)
	for _, reason := range plan.Reasons {
		logger.V(1).Info("decision", "cluster", sts.Name, "reason", reason)
	}
	if err := r.act(ctx, sts, &st, snap, plan, creds, opts); err != nil {
		logger.Error(err, "acting on the plan", "cluster", sts.Name)
		r.Recorder.Event(sts, corev1.EventTypeWarning, "ActionFailed", err.Error())
	}
	if err := r.publish(ctx, sts, pods, snap, plan); err != nil {
		return ctrl.Result{}, err
	}
	return ctrl.Result{RequeueAfter: r.Options.ProbeInterval}, nil
}

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
	if m := snap.server(snap.Master); m != nil && !m.Reachable {
		if r.downSince[key].IsZero() {
			r.downSince[key] = now
		}
		snap.MasterFailures = 1 + int(now.Sub(r.downSince[key])/r.Options.ProbeInterval)
	} else {
		delete(r.downSince, key)
	}
	snap.FailureThreshold = r.Options.FailureThreshold
	snap.AntiFlap = r.Options.AntiFlap
	snap.Now = now
	if r.firstSeen[key].IsZero() {
		r.firstSeen[key] = now
	}
	base := r.firstSeen[key]
	if g := r.leases[key]; g.pod == snap.Master && g.at.After(base) {
		base = g.at
	}
	snap.WritesSafeAt = base.Add(r.Options.WriteLease + r.Options.LeaseMargin)
}

// warnOnce records a Warning Event unless the same message was the last one for this
// cluster and reason ("reason/detail" keys keep one condition per pod apart).
func (r *Reconciler) warnOnce(sts *appsv1.StatefulSet, reason, message string) {
	key := sts.Namespace + "/" + sts.Name + "/" + reason
	r.mu.Lock()
	repeated := r.lastWarning[key] == message
	r.lastWarning[key] = message
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
	warned := r.warnedHeadless[key]
	fragile := !svc.Spec.PublishNotReadyAddresses
	r.warnedHeadless[key] = fragile
	r.mu.Unlock()
	if fragile && !warned {
		r.Recorder.Eventf(sts, corev1.EventTypeWarning, "HeadlessServiceFragile",
			"Service %s publishes only Ready pods: replicas reach their source by <pod>.%s.%s, which stops resolving when the master's readiness probe fails; set spec.publishNotReadyAddresses: true",
			svc.Name, svc.Name, sts.Namespace)
	}
}

// closeGonePools closes the pools of addresses the cluster no longer has (a pod that
// restarted with a new IP, or went away).
func (r *Reconciler) closeGonePools(key types.NamespacedName, snap Snapshot) {
	now := map[string]bool{}
	for _, srv := range snap.Servers {
		if srv.Addr != "" {
			now[srv.Addr] = true
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for addr := range r.addrs[key] {
		if now[addr] {
			continue
		}
		for k, p := range r.pools {
			if strings.HasPrefix(k, addr+"|") {
				p.Close()
				delete(r.pools, k)
			}
		}
	}
	r.addrs[key] = now
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
	prev, known := r.semiSync[key]
	r.semiSync[key] = active
	r.mu.Unlock()
	switch {
	case (!known || prev) && !active:
		r.Recorder.Eventf(sts, corev1.EventTypeWarning, EventWritesStalled,
			"commits on master %s wait for a replica's acknowledgement and no replica is connected: writes stall until one is (durability semi-sync never acknowledges a write only the master has)", m.Pod)
	case known && !prev && active:
		r.Recorder.Eventf(sts, corev1.EventTypeNormal, EventWritesResumed, "commits on master %s are acknowledged by a replica again", m.Pod)
	}
}

// pool returns the connection pool for addr as user, reusing it across probes.
func (r *Reconciler) pool(addr string, u mysql.User) *mysql.Server {
	key := addr + "|" + u.Name + "|" + u.Password
	r.mu.Lock()
	defer r.mu.Unlock()
	if p, ok := r.pools[key]; ok {
		return p
	}
	p, err := mysql.Open(mysql.Config{Addr: addr, User: u.Name, Password: u.Password,
		ConnectTimeout: r.Options.ProbeTimeout, QueryTimeout: 2 * r.Options.ProbeTimeout}, nil)
	if err != nil {
		panic(err) // Open only fails on a malformed configuration, which is built here
	}
	r.pools[key] = p
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
		Quarantined: st.Quarantine, SemiSync: opts.Durability == inject.DurabilitySemiSync, Durable: st.Durable,
		MasterSource: st.MasterSource}
	snap.SemiSyncFrom, _ = mysql.ParseGTIDSet(st.SemiSyncFrom)
	sort.Slice(pods, func(i, j int) bool {
		mi, mj := pods[i].Name == snap.Master, pods[j].Name == snap.Master
		if mi != mj {
			return mj
		}
		return ordinalOf(pods[i].Name) < ordinalOf(pods[j].Name)
	})
	for _, pod := range pods {
		srv := Server{Pod: pod.Name, Ordinal: ordinalOf(pod.Name), Lag: -1,
			Detached: pod.Annotations[inject.AnnDetached] == "true", ResetRequested: pod.Annotations[inject.AnnResetReplica] == "true"}
		srv.Terminating = !pod.DeletionTimestamp.IsZero()
		srv.Initializing = initializing(&pod)
		if pod.Status.PodIP == "" {
			srv.Err = "pod has no IP"
			snap.Servers = append(snap.Servers, srv)
			continue
		}
		srv.Addr = net.JoinHostPort(pod.Status.PodIP, "3306")
		srv.Login = creds.Admin
		state, err := r.pool(srv.Addr, srv.Login).State(ctx)
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
			snap.Servers = append(snap.Servers, srv)
			continue
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
		srv.CloneGTID = r.cloneGTID(ctx, pod.Status.PodIP)
		snap.Servers = append(snap.Servers, srv)
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

// initializing reports whether the pod's init containers have not all finished: its
// server has not run in this pod yet.
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
func (r *Reconciler) cloneGTID(ctx context.Context, ip string) string {
	ctx, cancel := context.WithTimeout(ctx, r.Options.ProbeTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+net.JoinHostPort(ip, fmt.Sprint(inject.SidecarPort))+"/status", nil)
	if err != nil {
		return ""
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	var status struct {
		Clone *sidecar.CloneRecord `json:"clone"`
	}
	if json.NewDecoder(resp.Body).Decode(&status) != nil || status.Clone == nil {
		return ""
	}
	return status.Clone.GTID
}

func isAccessDenied(err error) bool {
	var me *gomysql.MySQLError
	return errors.As(err, &me) && (me.Number == 1045 || me.Number == 1698) // ER_ACCESS_DENIED_ERROR, ER_ACCESS_DENIED_NO_PASSWORD_ERROR
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
