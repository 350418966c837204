package failover

import (
	"context"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/record"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/replicant-dev/replicant/inject"
	"github.com/replicant-dev/replicant/mysql"
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
	// Workers is how many clusters are reconciled at once (default 16).
	Workers int
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

	mu       sync.Mutex
	pools    map[string]*mysql.Server // by address and user
	clusters map[types.NamespacedName]*memory
	sidecars *http.Client
}

// memory is what the controller remembers of one cluster between rounds. It is lost
// when the manager restarts or leadership moves, which is safe: the state ConfigMap
// holds every decision, and a new controller waits one write lease before it lets a
// server other than the recorded master take writes.
type memory struct {
	// firstSeen: when this controller first ran the cluster. lease: the last write
	// lease the master accepted.
	firstSeen time.Time
	lease     leaseGrant
	// downSince: when the master was first seen unreachable (zero: it is not).
	downSince time.Time
	// semiSyncKnown, semiSyncWaiting: whether the master's commits were acknowledged
	// by a replica at the last probe.
	semiSyncKnown, semiSyncWaiting bool
	// addrs: the server addresses at the last probe, so that the pools of pods that
	// went away are closed.
	addrs map[string]bool
	// warnedHeadless: warned about the user's headless Service. lastWarning: the last
	// message of each repeated warning, by reason, so a lasting condition is
	// reported once.
	warnedHeadless bool
	lastWarning    map[string]string
	// master and creds: the recorded master's address and replicant's credentials at
	// the last full round, for renewFromMemory.
	master Server
	creds  Credentials
}

// rememberMaster keeps the recorded master's address and the credentials, for the
// rounds that cannot reach the API (renewFromMemory).
func (r *Reconciler) rememberMaster(key types.NamespacedName, master string, pods []corev1.Pod, creds Credentials) {
	r.mu.Lock()
	defer r.mu.Unlock()
	mem := r.mem(key)
	mem.master, mem.creds = Server{}, creds
	for _, pod := range pods {
		if pod.Name == master && pod.Status.PodIP != "" {
			mem.master = Server{Pod: pod.Name, Addr: net.JoinHostPort(pod.Status.PodIP, "3306")}
		}
	}
}

// renewFromMemory renews the write lease of the master the last full round recorded.
func (r *Reconciler) renewFromMemory(ctx context.Context, key types.NamespacedName) {
	r.mu.Lock()
	mem := r.mem(key)
	master, creds, down := mem.master, mem.creds, !mem.downSince.IsZero()
	r.mu.Unlock()
	if master.Pod != "" && !down {
		_ = r.grantLease(ctx, key, master, creds)
	}
}

// renewFirst renews the recorded master's write lease before the round's probes,
// unless the master was down at the last probe (a renewal would only wait out its
// timeout).
func (r *Reconciler) renewFirst(ctx context.Context, key types.NamespacedName, master string, pods []corev1.Pod, creds Credentials) {
	r.mu.Lock()
	down := !r.mem(key).downSince.IsZero()
	r.mu.Unlock()
	if master == "" || down {
		return
	}
	for _, pod := range pods {
		if pod.Name == master && pod.Status.PodIP != "" {
			_ = r.grantLease(ctx, key, Server{Pod: pod.Name, Addr: net.JoinHostPort(pod.Status.PodIP, "3306")}, creds)
		}
	}
}

// mem is the cluster's memory; r.mu must be held.
func (r *Reconciler) mem(key types.NamespacedName) *memory {
	m := r.clusters[key]
	if m == nil {
		m = &memory{firstSeen: time.Now(), addrs: map[string]bool{}, lastWarning: map[string]string{}}
		r.clusters[key] = m
	}
	return m
}

// forget releases what the controller kept of a cluster that is gone or opted out:
// its memory and its connection pools.
func (r *Reconciler) forget(key types.NamespacedName) {
	r.mu.Lock()
	defer r.mu.Unlock()
	m := r.clusters[key]
	if m == nil {
		return
	}
	for addr := range m.addrs {
		r.closePools(addr)
	}
	delete(r.clusters, key)
}

// closePools closes every pool to addr; r.mu must be held.
func (r *Reconciler) closePools(addr string) {
	for k, p := range r.pools {
		if strings.HasPrefix(k, addr+"|") {
			p.Close()
			delete(r.pools, k)
		}
	}
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
	if r.Options.Workers == 0 {
		r.Options.Workers = 16
	}
	if r.Reader == nil {
		r.Reader = mgr.GetAPIReader()
	}
	r.clusters = map[types.NamespacedName]*memory{}
	r.sidecars = &http.Client{Timeout: r.Options.ProbeTimeout}
	r.pools = map[string]*mysql.Server{}
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
		// Clusters never wait for each other: a slow round (servers that do not
		// answer, a catch-up before a promotion) must not hold another cluster's
		// lease renewals or failover. One cluster is never reconciled twice at once.
		WithOptions(controller.Options{MaxConcurrentReconciles: r.Options.Workers}).
		Complete(r)
}

// Reconcile observes, decides and acts for one cluster, then comes back after the
// probe interval.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	logger := log.FromContext(ctx)
	// Without the API (an apiserver outage, a setup error) the round cannot decide
	// anything, but the master it last recorded keeps its write lease, on schedule:
	// an apiserver blip must not stop the databases' writes. Nothing else can change
	// the master meanwhile: every decision needs the state, in the API.
	unavailable := func(err error) (ctrl.Result, error) {
		logger.Error(err, "this round cannot read or write the API; the last recorded master keeps its lease", "cluster", req.Name)
		r.renewFromMemory(ctx, req.NamespacedName)
		return ctrl.Result{RequeueAfter: r.Options.ProbeInterval}, nil
	}
	sts := &appsv1.StatefulSet{}
	if err := r.Reader.Get(ctx, req.NamespacedName, sts); err != nil {
		if apierrors.IsNotFound(err) {
			r.forget(req.NamespacedName)
			return ctrl.Result{}, nil
		}
		return unavailable(err)
	}
	if !inject.Enabled(sts) || !sts.DeletionTimestamp.IsZero() {
		r.forget(req.NamespacedName)
		return ctrl.Result{}, nil
	}
	opts, err := inject.ParseOptions(sts)
	if err != nil {
		r.Recorder.Event(sts, corev1.EventTypeWarning, "InvalidAnnotations", err.Error())
		return ctrl.Result{}, nil // the webhook refuses such objects; nothing to do until fixed
	}
	creds, err := ensureSecret(ctx, r.Client, sts, opts.CredentialsSecret)
	if err != nil {
		return unavailable(err)
	}
	if err := ensureServices(ctx, r.Client, sts); err != nil {
		return unavailable(err)
	}
	r.checkHeadlessService(ctx, req.NamespacedName, sts)
	st, err := loadState(ctx, r.Reader, sts)
	if err != nil {
		r.warnOnce(sts, "StateUnreadable", err.Error())
		return unavailable(err)
	}
	pods, err := r.members(ctx, sts)
	if err != nil {
		return unavailable(err)
	}

	// The master's write lease is renewed first thing in the round as well as in the
	// act phase, so that a round slowed by servers that do not answer never lets it
	// run out.
	r.renewFirst(ctx, req.NamespacedName, st.Master, pods, creds)
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
	r.rememberMaster(req.NamespacedName, st.Master, pods, creds)
	if err := r.publish(ctx, sts, pods, snap, plan); err != nil {
		return ctrl.Result{}, err
	}
	return ctrl.Result{RequeueAfter: r.Options.ProbeInterval}, nil
}
