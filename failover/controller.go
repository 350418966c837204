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
	if r.Reader == nil {
		r.Reader = mgr.GetAPIReader()
	}
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
	pods := &corev1.PodList{}
	if err := r.Client.List(ctx, pods, client.InNamespace(sts.Namespace), client.MatchingLabels{inject.LabelCluster: sts.Name}); err != nil {
		return ctrl.Result{}, err
	}

	snap := r.observe(ctx, sts, pods.Items, creds, opts)
	r.countFailures(req.NamespacedName, &snap)
	r.closeGonePools(req.NamespacedName, snap)
	plan := Decide(snap)
	observeMetrics(sts.Namespace, snap, plan)
	r.reportSemiSync(req.NamespacedName, sts, snap)
	for _, reason := range plan.Reasons {
		logger.V(1).Info("decision", "cluster", sts.Name, "reason", reason)
	}
	if err := r.act(ctx, sts, snap, plan, creds, opts); err != nil {
		logger.Error(err, "acting on the plan", "cluster", sts.Name)
		r.Recorder.Event(sts, corev1.EventTypeWarning, "ActionFailed", err.Error())
	}
	if err := r.publish(ctx, sts, pods.Items, snap, plan); err != nil {
		return ctrl.Result{}, err
	}
	return ctrl.Result{RequeueAfter: r.Options.ProbeInterval}, nil
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

// reportSemiSync raises an Event when the master's semi-sync falls back to async (a
// failover could then lose acknowledged writes) and when it is active again.
func (r *Reconciler) reportSemiSync(key types.NamespacedName, sts *appsv1.StatefulSet, snap Snapshot) {
	m := snap.server(snap.Master)
	if m == nil || !m.Reachable || !m.State.SemiSync.MasterEnabled {
		return
	}
	active := m.State.SemiSync.Waiting()
	r.mu.Lock()
	prev, known := r.semiSync[key]
	r.semiSync[key] = active
	r.mu.Unlock()
	switch {
	case known && prev && !active:
		r.Recorder.Eventf(sts, corev1.EventTypeWarning, "SemiSyncFallback",
			"commits on master %s no longer wait for a replica (no replica acknowledges): until one does, a failover may lose acknowledged writes", m.Pod)
	case known && !prev && active:
		r.Recorder.Eventf(sts, corev1.EventTypeNormal, "SemiSyncRestored", "commits on master %s wait for a replica again", m.Pod)
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
func (r *Reconciler) observe(ctx context.Context, sts *appsv1.StatefulSet, pods []corev1.Pod, creds Credentials, opts inject.Options) Snapshot {
	snap := Snapshot{Cluster: sts.Name, Master: sts.Annotations[inject.AnnMaster], MaxLag: opts.MaxLag, Replicas: desiredReplicas(sts),
		AutoFailover: opts.Failover == inject.FailoverAuto, LastFailover: lastAutomaticFailover(sts)}
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

// act carries out the plan: fence first, so that opening writes never makes two
// writable servers; then bootstrap, repoint, heartbeat.
func (r *Reconciler) act(ctx context.Context, sts *appsv1.StatefulSet, snap Snapshot, plan Plan, creds Credentials, opts inject.Options) error {
	var errs []error
	for _, pod := range plan.Fence {
		srv := snap.server(pod)
		if err := r.pool(srv.Addr, srv.Login).SetReadOnly(ctx, true); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...) // never open or move writes while a stray writer may remain
	}
	master := snap.server(snap.Master)
	if request, asked := sts.Annotations[inject.AnnFailoverTo]; asked {
		return r.forcedFailover(ctx, sts, snap, plan, request, opts)
	}
	switch {
	case plan.Bootstrap != "":
		master = snap.server(plan.Bootstrap)
		if err := r.bootstrap(ctx, sts, *master, plan, creds, opts); err != nil {
			return err
		}
	case plan.Promote != "":
		promoted, err := r.promote(ctx, sts, snap, plan.Promote, OpFailover, opts)
		if err != nil {
			return err
		}
		master = promoted
	case plan.OpenWrites:
		if err := r.openWrites(ctx, *master, opts); err != nil {
			return err
		}
	case plan.Held != "":
		r.warnOnce(sts, "FailoverHeld", plan.Held)
	}
	if master == nil || !master.Reachable {
		return nil
	}
	if plan.Promote != "" {
		return nil // the others are repointed at the new master on the next probe
	}
	if plan.Handoff != "" {
		newMaster, err := r.takeover(ctx, sts, snap, *snap.server(plan.Handoff), creds, opts, "its pod is terminating")
		if err != nil || newMaster == nil {
			return err // a failed takeover was rolled back: the next probe tries again
		}
		master = newMaster
	} else if target, asked := sts.Annotations[inject.AnnTakeoverTo]; asked {
		if err := ValidateTakeover(snap, plan, target); err != nil {
			now := time.Now()
			op := Operation{Op: OpTakeover, From: snap.Master, Target: target, Result: ResultRefused, Message: err.Error(), Start: now, End: now}
			r.Recorder.Eventf(sts, corev1.EventTypeWarning, "TakeoverRefused", "takeover to %s refused: %v", target, err)
			return r.annotate(ctx, sts, "", &op, inject.AnnTakeoverTo)
		}
		newMaster, err := r.takeover(ctx, sts, snap, *snap.server(target), creds, opts, "requested")
		if err != nil || newMaster == nil {
			return err
		}
		master = newMaster
	}
	for _, srv := range snap.Servers {
		if srv.ResetRequested {
			if err := r.resetReplica(ctx, sts, snap, srv); err != nil {
				errs = append(errs, err)
			}
		}
	}
	for _, pod := range plan.Repoint {
		if snap.server(pod).ResetRequested {
			continue // detached just now
		}
		if err := r.repoint(ctx, *snap.server(pod), *master, creds); err != nil {
			errs = append(errs, err)
			continue
		}
		r.Recorder.Eventf(sts, corev1.EventTypeNormal, "Replicating", "%s replicates from %s", pod, master.Pod)
	}
	for _, pod := range plan.Start {
		if err := r.pool(snap.server(pod).Addr, snap.server(pod).Login).StartReplica(ctx); err != nil {
			errs = append(errs, err)
			continue
		}
		r.Recorder.Eventf(sts, corev1.EventTypeNormal, "Replicating", "%s replicates from %s again", pod, master.Pod)
	}
	for pod, errant := range plan.Quarantine {
		r.warnOnce(sts, "ErrantTransactions/"+pod, fmt.Sprintf(
			"%s holds transactions %v that master %s never had: kept read-only and out of the Services; resolve by hand (re-clone, or replay them on the master)",
			pod, errant, master.Pod))
	}
	if err := r.pool(master.Addr, creds.Admin).WriteHeartbeat(ctx); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// bootstrap makes the first master: replicant's users (created as root, written to
// the binlog so every replica gets them), no replica settings, recorded as master,
// then writes opened.
func (r *Reconciler) bootstrap(ctx context.Context, sts *appsv1.StatefulSet, master Server, plan Plan, creds Credentials, opts inject.Options) error {
	root, err := rootPassword(ctx, r.Client, sts, opts.Container)
	if err != nil {
		return err
	}
	if err := r.pool(master.Addr, mysql.User{Name: "root", Password: root}).EnsureUsers(ctx, creds.Users()); err != nil {
		return err
	}
	if err := r.pool(master.Addr, creds.Admin).ResetReplica(ctx); err != nil {
		return err
	}
	if err := r.annotate(ctx, sts, master.Pod, nil); err != nil {
		return err
	}
	master.Login = creds.Admin
	if err := r.openWrites(ctx, master, opts); err != nil {
		return err
	}
	r.Recorder.Eventf(sts, corev1.EventTypeNormal, "Bootstrapped", "%s is the master; writes are open (%s)", master.Pod, strings.Join(plan.Reasons, "; "))
	return nil
}

// openWrites opens writes on the master (semi-sync first, when durability asks).
// The master is recorded before, so a controller that stops in between finds a
// read-only master, never a writable server that is not the master.
func (r *Reconciler) openWrites(ctx context.Context, master Server, opts inject.Options) error {
	conn := r.pool(master.Addr, master.Login)
	if opts.Durability == inject.DurabilitySemiSync {
		if err := conn.SetSemiSyncMaster(ctx, true); err != nil {
			return err
		}
	}
	return conn.SetReadOnly(ctx, false)
}

// promote fails over to plan.Promote: the old master is fenced if it can be reached
// at all, the candidate applies everything it received, forgets its replica
// settings, is recorded as master, and only then takes writes. A failure on the way
// leaves every server read-only; the next probe decides again.
func (r *Reconciler) promote(ctx context.Context, sts *appsv1.StatefulSet, snap Snapshot, pod, opName string, opts inject.Options, done ...string) (*Server, error) {
	start := time.Now()
	old := snap.server(snap.Master)
	target := snap.server(pod)
	fail := func(err error) (*Server, error) {
		op := Operation{Op: opName, From: old.Pod, Target: target.Pod, Result: ResultFailed, Message: err.Error(), Start: start, End: time.Now()}
		_ = r.annotate(ctx, sts, "", &op, done...)
		r.Recorder.Eventf(sts, corev1.EventTypeWarning, "FailoverFailed", "promoting %s: %v; every server stays read-only", target.Pod, err)
		return nil, err
	}
	if old.Addr != "" {
		_ = r.pool(old.Addr, old.Login).SetReadOnly(ctx, true) // best effort: it is down for the controller
	}
	conn := r.pool(target.Addr, target.Login)
	if err := conn.StopReplicaIO(ctx); err != nil {
		return fail(err)
	}
	st, err := conn.State(ctx)
	if err != nil {
		return fail(err)
	}
	want := received(Server{State: st})
	if err := conn.WaitForGTID(ctx, want, r.Options.ApplyTimeout); err != nil {
		return fail(fmt.Errorf("applying its relay log up to %s: %w", want, err))
	}
	applied := time.Since(start)
	if err := conn.ResetReplica(ctx); err != nil {
		return fail(err)
	}
	if err := r.annotate(ctx, sts, target.Pod, nil); err != nil {
		return fail(err)
	}
	if err := r.openWrites(ctx, *target, opts); err != nil {
		return fail(err)
	}
	end := time.Now()
	why := "master " + old.Pod + " down"
	if opName == OpForcedFailover {
		why = "failover requested from " + old.Pod
	}
	op := Operation{Op: opName, From: old.Pod, Target: target.Pod, Result: ResultOK, Start: start, End: end,
		Message: fmt.Sprintf("%s; %s promoted at %s (relay log applied in %d ms, writable after %d ms)",
			why, target.Pod, want, applied.Milliseconds(), end.Sub(start).Milliseconds())}
	if err := r.annotate(ctx, sts, "", &op, done...); err != nil {
		return nil, err
	}
	r.Recorder.Event(sts, corev1.EventTypeNormal, "Failover", op.Message)
	return target, nil
}

// forcedFailover carries out a failover-to request: the old master is fenced first
// when it can be reached (if that fails, nothing is done), then the target is
// promoted as in an automatic failover.
func (r *Reconciler) forcedFailover(ctx context.Context, sts *appsv1.StatefulSet, snap Snapshot, plan Plan, request string, opts inject.Options) error {
	now := time.Now()
	target, err := FailoverTarget(snap, plan, request)
	if err == nil {
		if old := snap.server(snap.Master); old.Reachable {
			oldConn := r.pool(old.Addr, old.Login)
			if ferr := oldConn.SetReadOnly(ctx, true); ferr != nil {
				err = fmt.Errorf("could not make master %s read-only first: %v", old.Pod, ferr)
			} else if st, serr := oldConn.State(ctx); serr == nil {
				// Give the target a moment to receive what the fenced master wrote;
				// forced means go on anyway (what it misses shows as errant).
				t := snap.server(target)
				_ = r.pool(t.Addr, t.Login).WaitForGTID(ctx, st.BinlogState, 5*time.Second)
			}
		}
	}
	if err != nil {
		op := Operation{Op: OpForcedFailover, From: snap.Master, Target: request, Result: ResultRefused, Message: err.Error(), Start: now, End: now}
		r.Recorder.Eventf(sts, corev1.EventTypeWarning, "FailoverRefused", "failover to %s refused: %v", request, err)
		return r.annotate(ctx, sts, "", &op, inject.AnnFailoverTo)
	}
	_, err = r.promote(ctx, sts, snap, target, OpForcedFailover, opts, inject.AnnFailoverTo)
	return err
}

// resetReplica carries out a reset-replica request on a pod: the replica stops and
// forgets its source (RESET SLAVE ALL), stays read-only, and is marked detached so
// that the controller does not repoint it; removing the detached annotation lets it
// rejoin (or be quarantined, if it was written to meanwhile).
func (r *Reconciler) resetReplica(ctx context.Context, sts *appsv1.StatefulSet, snap Snapshot, srv Server) error {
	start := time.Now()
	op := Operation{Op: OpResetReplica, Target: srv.Pod, Start: start}
	err := ValidateResetReplica(snap, srv.Pod)
	if err == nil {
		err = r.pool(srv.Addr, srv.Login).ResetReplica(ctx)
		op.Result = ResultOK
		op.Message = srv.Pod + " no longer replicates; it stays read-only and detached until its " + inject.AnnDetached + " annotation is removed"
		if err != nil {
			op.Result, op.Message = ResultFailed, err.Error()
		}
	} else {
		op.Result, op.Message = ResultRefused, err.Error()
	}
	op.End = time.Now()
	pod := &corev1.Pod{}
	if gerr := r.Client.Get(ctx, client.ObjectKey{Namespace: sts.Namespace, Name: srv.Pod}, pod); gerr != nil {
		return gerr
	}
	patch := client.MergeFrom(pod.DeepCopy())
	delete(pod.Annotations, inject.AnnResetReplica)
	if op.Result == ResultOK {
		pod.Annotations[inject.AnnDetached] = "true"
	}
	if perr := r.Client.Patch(ctx, pod, patch); perr != nil {
		return perr
	}
	kind := corev1.EventTypeNormal
	if op.Result != ResultOK {
		kind = corev1.EventTypeWarning
	}
	r.Recorder.Event(sts, kind, "ResetReplica", op.Message)
	return r.annotate(ctx, sts, "", &op)
}

// takeover hands the master role to target gracefully: the old master stops taking
// writes, target applies everything it wrote, target takes writes, and the old
// master replicates from it at once (it is not left outside the cluster). If target
// cannot catch up in time, the old master takes writes again and nothing changed.
func (r *Reconciler) takeover(ctx context.Context, sts *appsv1.StatefulSet, snap Snapshot, target Server, creds Credentials, opts inject.Options, why string) (*Server, error) {
	old := *snap.server(snap.Master)
	start := time.Now()
	finish := func(result, message string, blocked time.Duration) error {
		op := Operation{Op: OpTakeover, From: old.Pod, Target: target.Pod, Result: result, Message: message,
			Start: start, End: time.Now(), WritesBlockedMs: blocked.Milliseconds()}
		kind := corev1.EventTypeNormal
		if result != ResultOK {
			kind = corev1.EventTypeWarning
		}
		r.Recorder.Event(sts, kind, "Takeover", message)
		return r.annotate(ctx, sts, "", &op, inject.AnnTakeoverTo)
	}
	oldConn := r.pool(old.Addr, old.Login)
	targetConn := r.pool(target.Addr, target.Login)
	if err := oldConn.SetReadOnly(ctx, true); err != nil {
		return nil, finish(ResultFailed, fmt.Sprintf("could not stop writes on %s: %v; nothing changed", old.Pod, err), 0)
	}
	blockedFrom := time.Now()
	rollback := func(cause error) (*Server, error) {
		if err := oldConn.SetReadOnly(ctx, false); err != nil {
			cause = fmt.Errorf("%v; and reopening writes on %s failed: %v (it stays read-only; the next probe reopens it)", cause, old.Pod, err)
		}
		return nil, finish(ResultFailed, fmt.Sprintf("takeover to %s failed: %v; %s is master again", target.Pod, cause, old.Pod), time.Since(blockedFrom))
	}
	st, err := oldConn.State(ctx)
	if err != nil {
		return rollback(err)
	}
	if err := targetConn.WaitForGTID(ctx, st.BinlogState, r.Options.ApplyTimeout); err != nil {
		return rollback(err)
	}
	if err := targetConn.ResetReplica(ctx); err != nil {
		return rollback(err)
	}
	if err := r.annotate(ctx, sts, target.Pod, nil); err != nil {
		return rollback(err)
	}
	if err := r.openWrites(ctx, target, opts); err != nil {
		// target is recorded as master but read-only: the next probe opens it
		// (Plan.OpenWrites). The old master stays fenced: never two writers.
		return nil, finish(ResultFailed, fmt.Sprintf("%s is master but opening writes failed: %v", target.Pod, err), time.Since(blockedFrom))
	}
	blocked := time.Since(blockedFrom)
	newMaster := target
	// The old master and the other replicas follow the new master right away.
	_ = oldConn.SetSemiSyncMaster(ctx, false)
	old.State = st
	old.State.Replica = nil // it was a master: it starts from its own position
	var errs []error
	if err := r.repoint(ctx, old, newMaster, creds); err != nil {
		errs = append(errs, err)
	}
	for _, srv := range snap.Servers {
		if srv.Pod != old.Pod && srv.Pod != target.Pod && srv.Reachable && pointsAt(srv, old) {
			if err := r.repoint(ctx, srv, newMaster, creds); err != nil {
				errs = append(errs, err)
			}
		}
	}
	msg := fmt.Sprintf("%s is master (was %s, %s); writes blocked %d ms; %s replicates from it", target.Pod, old.Pod, why, blocked.Milliseconds(), old.Pod)
	if len(errs) > 0 {
		msg += fmt.Sprintf("; repointing failed, retried on the next probe: %v", errors.Join(errs...))
	}
	if err := finish(ResultOK, msg, blocked); err != nil {
		return nil, err
	}
	return &newMaster, nil
}

// repoint makes srv replicate from master by GTID. A server that was never a replica
// starts from the position its clone ended at, or from its own data (an old master
// whose transactions the new master all has).
func (r *Reconciler) repoint(ctx context.Context, srv, master Server, creds Credentials) error {
	conn := r.pool(srv.Addr, srv.Login)
	if err := conn.StopReplica(ctx); err != nil {
		return err
	}
	if srv.State.Replica == nil {
		pos := srv.State.CurrentPos
		if !srv.State.BinlogState.Empty() {
			pos = srv.State.BinlogState.Position() // what it holds, whoever wrote it
		}
		if srv.CloneGTID != "" && srv.State.BinlogState.Empty() {
			parsed, err := mysql.ParseGTIDSet(srv.CloneGTID)
			if err != nil {
				return fmt.Errorf("%s: clone position: %w", srv.Pod, err)
			}
			pos = parsed
		}
		if err := conn.SetReplicaPos(ctx, pos); err != nil {
			return err
		}
	}
	if err := conn.ChangeSource(ctx, mysql.Source{Host: master.SourceHost, Port: 3306,
		User: creds.Replication.Name, Password: creds.Replication.Password}); err != nil {
		return err
	}
	return conn.StartReplica(ctx)
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
					st.SemiSync = "fallen back to async: no replica acknowledges commits"
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
