package failover

import (
	"context"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/record"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/cache"
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
	// Image and ImagePullPolicy are the replicant image's, for the backup CronJobs.
	Image           string
	ImagePullPolicy corev1.PullPolicy
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
	// RolloutStallAfter: a pod a rolling update recreated that is not healthy this
	// long after its creation stops the rollout with a RolloutStalled Event (a pod
	// whose container cannot start stops it at once). Default 10 minutes.
	RolloutStallAfter time.Duration
}

// Reconciler runs every labelled StatefulSet's cluster.
type Reconciler struct {
	Client client.Client
	// Reader reads the StatefulSet and the state uncached: the master must be what
	// the controller itself last wrote, never a cache a step behind (a stale master
	// would start a second failover). Default: the manager's.
	Reader   client.Reader
	Recorder record.EventRecorder
	Options  Options

	mu       sync.Mutex
	pools    map[string]pooled // by address and user name
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
	// addrs, pods: the server addresses and pods at the last probe, so that the
	// pools and metrics of pods that went away are released.
	addrs, pods map[string]bool
	// warnedHeadless: warned about the user's headless Service. lastWarning: the last
	// message of each repeated warning, by reason, so a lasting condition is
	// reported once.
	warnedHeadless bool
	lastWarning    map[string]string
	// master and creds: the recorded master's address and replicant's credentials,
	// for renewFromMemory.
	master Server
	creds  Credentials
	// rolled: the UID of the pod the rolling update deleted last.
	rolled string
	// reportedJobs: the backup runs already reported (Event and metrics).
	reportedJobs map[types.UID]bool
}

// rememberMaster keeps the recorded master's address and the credentials, for the
// lease renewals outside the act phase (renewFromMemory).
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

// renewFromMemory renews the write lease of the master last remembered, unless it was
// down at the last probe (a renewal would only wait out its timeout).
func (r *Reconciler) renewFromMemory(ctx context.Context, key types.NamespacedName) {
	r.mu.Lock()
	mem := r.mem(key)
	master, creds, down := mem.master, mem.creds, !mem.downSince.IsZero()
	r.mu.Unlock()
	if master.Pod != "" && !down {
		_ = r.grantLease(ctx, key, master, creds)
	}
}

// mem is the cluster's memory; r.mu must be held.
func (r *Reconciler) mem(key types.NamespacedName) *memory {
	m := r.clusters[key]
	if m == nil {
		m = &memory{firstSeen: time.Now(), addrs: map[string]bool{}, lastWarning: map[string]string{}}
		r.clusters[key] = m
		clustersRemembered.Set(float64(len(r.clusters)))
	}
	return m
}

// forget releases what the controller kept of a cluster that is gone or opted out:
// its memory, its connection pools and its metrics.
func (r *Reconciler) forget(key types.NamespacedName) {
	forgetClusterMetrics(key.Namespace, key.Name)
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
	clustersRemembered.Set(float64(len(r.clusters)))
}

// closePools closes every pool to addr; r.mu must be held.
func (r *Reconciler) closePools(addr string) {
	for k, p := range r.pools {
		if strings.HasPrefix(k, addr+"|") {
			p.Close()
			delete(r.pools, k)
		}
	}
	poolsOpen.Set(float64(len(r.pools)))
}

// pooled is a connection pool and the password it logs in with.
type pooled struct {
	*mysql.Server
	password string
}

// leaseGrant is a write lease a master's sidecar accepted: at is when its answer
// arrived, after the sidecar started counting.
type leaseGrant struct {
	pod string
	at  time.Time
}

// NewEventBroadcaster records the controller's Events with allowances that fit an
// operator. client-go's defaults fold the 11th Event of one reason on an object
// within 10 minutes into a single "combined from similar events" one, and drop every
// Event on an object after a burst of 25 until one every 5 minutes: a rolling update
// after a failover lost its last steps (found by the e2e suite: the master's
// RollingUpdate never showed). replicant reports rarely by design (warnings once per
// condition), so these only ever bound a runaway.
func NewEventBroadcaster() record.EventBroadcaster {
	return record.NewBroadcasterWithCorrelatorOptions(record.CorrelatorOptions{MaxEvents: 100, BurstSize: 200, QPS: 0.1})
}

// CacheOptions is the manager's cache for the controller: only replicant's pods,
// Services and budgets (by the cluster label), never Secrets (the client reads them
// from the API when needed, not held for the whole cluster), and only the namespaces
// named (all when none is).
func CacheOptions(namespaces []string) cache.Options {
	managed, _ := labels.Parse(inject.LabelCluster)
	backups, _ := labels.Parse(inject.LabelBackupOf)
	o := cache.Options{ByObject: map[client.Object]cache.ByObject{
		&corev1.Pod{}:                   {Label: managed},
		&corev1.Service{}:               {Label: managed},
		&policyv1.PodDisruptionBudget{}: {Label: managed},
		&batchv1.CronJob{}:              {Label: managed},
		&batchv1.Job{}:                  {Label: backups},
	}}
	if len(namespaces) > 0 {
		o.DefaultNamespaces = map[string]cache.Config{}
		for _, ns := range namespaces {
			o.DefaultNamespaces[ns] = cache.Config{}
		}
	}
	return o
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
	if r.Options.RolloutStallAfter == 0 {
		r.Options.RolloutStallAfter = 10 * time.Minute
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
	r.pools = map[string]pooled{}
	optedIn := predicate.NewPredicateFuncs(func(o client.Object) bool { return o.GetLabels()[inject.LabelInject] == inject.InjectEnabled })
	return ctrl.NewControllerManagedBy(mgr).
		Named("replicant").
		For(&appsv1.StatefulSet{}, builder.WithPredicates(optedIn)).
		Watches(&corev1.Pod{}, handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
			if cluster := o.GetLabels()[inject.LabelCluster]; cluster != "" {
				return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: o.GetNamespace(), Name: cluster}}}
			}
			return nil
		}), builder.WithPredicates(notOwnPublish)).
		// A backup run that finished is reported; the CronJob is kept as the
		// annotations say.
		Watches(&batchv1.Job{}, handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
			if cluster := o.GetLabels()[inject.LabelBackupOf]; cluster != "" {
				return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: o.GetNamespace(), Name: cluster}}}
			}
			return nil
		})).
		Owns(&batchv1.CronJob{}).
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
	// The Services are how clients follow the master and the budget how drains
	// spare it, neither is how the controller sees the servers: one it cannot keep
	// is reported, and probing and failover go on.
	conflicts, err := ensureOwnedObjects(ctx, r.Client, r.Reader, sts)
	var conditions []Condition
	for _, c := range conflicts {
		r.warnOnce(sts, EventObjectConflict+"/"+c, c)
		conditions = append(conditions, Condition{Type: ConditionObjectConflict, Message: c, Since: time.Now()})
	}
	if err != nil {
		logger.Error(err, "keeping the Services and the PodDisruptionBudget", "cluster", req.Name)
		r.warnOnce(sts, EventObjectConflict, err.Error())
		conditions = append(conditions, Condition{Type: ConditionSetupFailed, Message: err.Error(), Since: time.Now()})
	}
	// Backups are kept and reported beside the rest; a problem with them is reported
	// and never stops probing or failover.
	backupConflicts, err := r.keepBackupSchedule(ctx, sts, opts)
	for _, msg := range backupConflicts {
		r.warnOnce(sts, EventObjectConflict+"/"+msg, msg)
		conditions = append(conditions, Condition{Type: ConditionObjectConflict, Message: msg, Since: time.Now()})
	}
	if err != nil {
		msg := "keeping the backup CronJobs: " + err.Error()
		r.warnOnce(sts, EventObjectConflict+"/backup", msg)
		conditions = append(conditions, Condition{Type: ConditionSetupFailed, Message: msg, Since: time.Now()})
	}
	if err := r.reportBackups(ctx, sts); err != nil {
		logger.Error(err, "reading the backup runs", "cluster", req.Name)
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
	r.rememberMaster(req.NamespacedName, st.Master, pods, creds)
	r.renewFromMemory(ctx, req.NamespacedName)
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
	if plan.RolloutStalled != "" {
		conditions = append(conditions, Condition{Type: ConditionRolloutStalled, Message: plan.RolloutStalled, Since: time.Now()})
	}
	if err := r.publishConditions(ctx, sts, conditions); err != nil {
		return ctrl.Result{}, err
	}
	return ctrl.Result{RequeueAfter: r.Options.ProbeInterval}, nil
}
