// Package managed runs a replicant-managed cluster for tests: a real kube-apiserver,
// a StatefulSet whose pods' IPs are real mariadbd servers on loopback addresses, and
// the real controller (package failover) in a manager. Helpers wait for topologies,
// Events and request outcomes, bounded in time.
package managed

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	toolswatch "k8s.io/client-go/tools/watch"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/yaml"

	"github.com/replicant-dev/replicant/failover"
	"github.com/replicant-dev/replicant/inject"
	"github.com/replicant-dev/replicant/mysql"
	"github.com/replicant-dev/replicant/sidecar"
	"github.com/replicant-dev/replicant/test/controlplane"
	"github.com/replicant-dev/replicant/test/fixture"
	"github.com/replicant-dev/replicant/test/mariadb"
)

// cluster is a StatefulSet in a real apiserver whose pods' IPs are real mariadbd
// servers on loopback addresses, run by the controller.
type Cluster struct {
	T       testing.TB
	Ctx     context.Context
	C       client.Client
	Sts     *appsv1.StatefulSet
	Servers []*mariadb.Server
	// Env is the control plane (its Config reaches the apiserver as admin).
	Env *controlplane.Env

	sidecars map[string]func() // stops each pod's sidecar
	// API is the manager's path to the apiserver (Options.APIProxy), else nil.
	API *Proxy
	// Requests counts the manager's writes to the apiserver.
	Requests *APICounter
}

// StopSidecar stops a pod's sidecar (its container died); RestartSidecar starts a new
// one, which holds no lease.
func (cl *Cluster) StopSidecar(pod string) { cl.sidecars[pod]() }

// RestartSidecar starts a stopped pod's sidecar again.
func (cl *Cluster) RestartSidecar(pod string) { cl.sidecars[pod] = StartSidecar(cl.T, cl.Server(pod)) }

func Start(t testing.TB, n int) *Cluster {
	return StartWith(t, n, Options{Addressing: failover.SourcePodIP})
}

type Options struct {
	// Flavor is the servers' flavor: mariadb (the default) or mysql.
	Flavor     string
	Addressing failover.SourceAddressing
	// podIP, when set, gives the address a pod shows instead of its server's.
	PodIP func(*mariadb.Server) string
	// antiFlap, when set, replaces the default anti-flapping window.
	AntiFlap time.Duration
	// probeInterval, when set, replaces the tests' 300 ms.
	ProbeInterval time.Duration
	// WriteLease, when set, replaces the default 3 s write lease.
	WriteLease time.Duration
	// APIProxy puts a Proxy between the manager and the apiserver (Cluster.API), so
	// that a test can take the API away from the controller alone.
	APIProxy bool
	// Objects are created before the manager starts (a user's objects).
	Objects []client.Object
	// BeforeManager, when set, runs once every cluster exists and before the manager
	// starts (a benchmark's baseline).
	BeforeManager func()
	// Timeout bounds the whole test's context (default 4 minutes).
	Timeout time.Duration
	// ServerConfig is extra [mysqld] configuration for every server.
	ServerConfig string
	// Namespaces, when set, is what the manager watches (its --namespaces).
	Namespaces []string
	// Privileges, when set with AsServiceAccount, are the YAML documents installed
	// instead of manifests/rbac.yaml and manifests/policy.yaml (a chart rendering).
	Privileges []byte
	// AsServiceAccount runs the manager as the shipped ServiceAccount (impersonated)
	// with only the shipped RBAC and admission policy (manifests/rbac.yaml and
	// manifests/policy.yaml) installed, instead of as the apiserver's admin.
	AsServiceAccount bool
}

// ProfileLabel is the CPU profiler label every goroutine of the manager carries.
const ProfileLabel = "replicant"

// Image is the replicant image the manager is told it runs (its backup CronJobs
// name it; nothing pulls it here).
const Image = "ghcr.io/replicant-dev/replicant:test"

// ManagerServiceAccount is the user the shipped manifests run the manager as.
const ManagerServiceAccount = "system:serviceaccount:replicant-system:replicant"

// AsManager is cfg impersonating the manager's ServiceAccount.
func AsManager(cfg *rest.Config) *rest.Config {
	cfg = rest.CopyConfig(cfg)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: ManagerServiceAccount,
		Groups: []string{"system:serviceaccounts", "system:serviceaccounts:replicant-system", "system:authenticated"}}
	return cfg
}

// installPrivileges creates the shipped ServiceAccount, RBAC and admission policy.
func installPrivileges(ctx context.Context, t testing.TB, c client.Client, privileges []byte) {
	t.Helper()
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "replicant-system"}}); err != nil {
		t.Fatal(err)
	}
	sources := map[string][]byte{"privileges": privileges}
	if privileges == nil {
		sources = map[string][]byte{}
		for _, file := range []string{"rbac.yaml", "policy.yaml"} {
			data, err := os.ReadFile(filepath.Join(controlplane.RepoRoot(), "manifests", file))
			if err != nil {
				t.Fatal(err)
			}
			sources["manifests/"+file] = data
		}
	}
	for file, data := range sources {
		for _, doc := range controlplane.SplitYAML(data) {
			obj := &unstructured.Unstructured{}
			if err := yaml.Unmarshal(doc, &obj.Object); err != nil {
				t.Fatalf("%s: %v", file, err)
			}
			if err := c.Create(ctx, obj); err != nil {
				t.Fatalf("%s: %v", file, err)
			}
		}
	}
}

func StartWith(t testing.TB, n int, o Options) *Cluster {
	return StartFleet(t, []string{"db"}, n, o)[0]
}

// StartFleet runs one control plane and one manager for several clusters, each a
// StatefulSet named as given with n real servers.
func StartFleet(t testing.TB, names []string, n int, o Options) []*Cluster {
	ctrl.SetLogger(zap.New(zap.WriteTo(os.Stderr)))
	timeout := o.Timeout
	if timeout == 0 {
		timeout = 4 * time.Minute
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	t.Cleanup(cancel)
	env := controlplane.Start(t, controlplane.Options{})
	c := env.Client
	var clusters []*Cluster
	for _, name := range names {
		clusters = append(clusters, addCluster(ctx, t, env, name, n, o))
	}
	for _, obj := range o.Objects {
		if err := c.Create(ctx, obj); err != nil {
			t.Fatal(err)
		}
	}
	if o.BeforeManager != nil {
		o.BeforeManager()
	}
	counter, api := startManager(ctx, t, env, o)
	for _, cl := range clusters {
		cl.Requests, cl.API = counter, api
	}
	return clusters
}

// addCluster creates one cluster's servers, sidecars, StatefulSet, Secrets and pods.
func addCluster(ctx context.Context, t testing.TB, env *controlplane.Env, name string, n int, o Options) *Cluster {
	c := env.Client
	servers := mariadb.Start(t, n, mariadb.Options{Flavor: o.Flavor, Cluster: name, ReportHostIsAddress: o.Addressing == failover.SourceReportHost, ExtraConfig: o.ServerConfig})

	sts := fixture.StatefulSet("default", name)
	container, image, rootPasswordVar := "mariadb", "mariadb:10.11", "MARIADB_ROOT_PASSWORD"
	if o.Flavor == "mysql" {
		container, image, rootPasswordVar = "mysql", "mysql:9.7", "MYSQL_ROOT_PASSWORD"
		sts.Spec.Template.Spec.Containers[0].Name, sts.Spec.Template.Spec.Containers[0].Image = container, image
	}
	sts.Spec.Replicas = func(i int32) *int32 { return &i }(int32(n))
	// The root password as users usually give it: from a Secret of theirs (the
	// partition test gives it literally).
	rootEnv := corev1.EnvVar{Name: rootPasswordVar, Value: mariadb.RootPassword}
	if o.Addressing != failover.SourceReportHost {
		if err := c.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name + "-root", Namespace: "default"},
			StringData: map[string]string{"password": mariadb.RootPassword}}); err != nil {
			t.Fatal(err)
		}
		rootEnv = corev1.EnvVar{Name: rootPasswordVar, ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
			LocalObjectReference: corev1.LocalObjectReference{Name: name + "-root"}, Key: "password"}}}
	}
	sts.Spec.Template.Spec.Containers[0].Env = []corev1.EnvVar{rootEnv}
	if err := c.Create(ctx, sts); err != nil {
		t.Fatal(err)
	}
	// replicant's credentials, given in advance (the controller keeps a Secret that
	// exists), so that each server's sidecar runs from the start as in a pod.
	if err := c.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name + "-replicant", Namespace: "default"},
		StringData: map[string]string{
			failover.SecretKeyAdminUser: Admin.Name, failover.SecretKeyAdminPassword: Admin.Password,
			failover.SecretKeyReplicationUser: "replicant_repl", failover.SecretKeyReplicationPassword: "test-repl-password",
			inject.SecretKeyBackupUser: Backup.Name, inject.SecretKeyBackupPassword: Backup.Password,
		}}); err != nil {
		t.Fatal(err)
	}
	sidecars := map[string]func(){}
	for _, s := range servers {
		sidecars[s.Name] = StartSidecar(t, s)
	}
	for i, s := range servers {
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: s.Name, Namespace: "default",
				Labels:          map[string]string{"app": name, inject.LabelCluster: name},
				OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(sts, appsv1.SchemeGroupVersion.WithKind("StatefulSet"))}},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: container, Image: image}}},
		}
		if err := c.Create(ctx, pod); err != nil {
			t.Fatal(err)
		}
		ip := s.Host
		if o.PodIP != nil {
			ip = o.PodIP(s)
		}
		pod.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}}}
		if err := c.Status().Update(ctx, pod); err != nil {
			t.Fatalf("pod %d status: %v", i, err)
		}
	}

	return &Cluster{T: t, Ctx: ctx, C: c, Sts: sts, Servers: servers, Env: env, sidecars: sidecars}
}

// startManager starts the one manager that runs every cluster in env.
func startManager(ctx context.Context, t testing.TB, env *controlplane.Env, o Options) (*APICounter, *Proxy) {
	c := env.Client
	mgrConfig := env.Config
	if o.AsServiceAccount {
		installPrivileges(ctx, t, c, o.Privileges)
		mgrConfig = AsManager(mgrConfig)
	}
	var api *Proxy
	if o.APIProxy {
		u, err := url.Parse(env.Config.Host)
		if err != nil {
			t.Fatal(err)
		}
		api = NewProxy(t, u.Hostname(), u.Port())
		mgrConfig = rest.CopyConfig(mgrConfig)
		mgrConfig.Host = "https://" + net.JoinHostPort(api.Addr, u.Port())
		mgrConfig.TLSClientConfig.ServerName = u.Hostname() // the serving certificate's name
	}
	counter := &APICounter{writes: map[string]int{}}
	mgrConfig = rest.CopyConfig(mgrConfig)
	mgrConfig.Wrap(counter.wrap)
	broadcaster := failover.NewEventBroadcaster() // as the manager's
	t.Cleanup(broadcaster.Shutdown)
	mgr, err := ctrl.NewManager(mgrConfig, ctrl.Options{
		Scheme:                 env.Scheme,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Cache:                  failover.CacheOptions(o.Namespaces),
		EventBroadcaster:       broadcaster, //nolint:staticcheck // shut down with the test
		Client:                 client.Options{Cache: &client.CacheOptions{DisableFor: []client.Object{&corev1.Secret{}}}},
		// Each test runs its own manager in this process.
		Controller: config.Controller{SkipNameValidation: ptr.To(true)},
	})
	if err != nil {
		t.Fatal(err)
	}
	r := &failover.Reconciler{Client: mgr.GetClient(), Recorder: mgr.GetEventRecorderFor("replicant"),
		Options: failover.Options{Image: Image, ProbeInterval: o.ProbeInterval, Addressing: o.Addressing, AntiFlap: o.AntiFlap, WriteLease: o.WriteLease}}
	if r.Options.ProbeInterval == 0 {
		r.Options.ProbeInterval = 300 * time.Millisecond
	}
	if err := r.SetupWithManager(mgr); err != nil {
		t.Fatal(err)
	}
	mgrCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	// Every goroutine of the manager carries the profiler label replicant=manager (a
	// goroutine inherits its creator's labels), so that a benchmark can tell the
	// manager's CPU from the sidecars' in this process.
	go pprof.Do(mgrCtx, pprof.Labels(ProfileLabel, "manager"), func(ctx context.Context) { done <- mgr.Start(ctx) })
	t.Cleanup(func() { stop(); <-done })
	return counter, api
}

// Admin and Backup are replicant's accounts in the test clusters' credentials Secret.
var (
	Admin  = mysql.User{Name: "replicant_admin", Password: "test-admin-password-of-24"}
	Backup = mysql.User{Name: "replicant_backup", Password: "test-backup-password-of-24"}
)

// StartSidecar serves a real sidecar for s on s.Host:8080, as the pod's sidecar
// container does (write leases, self-fencing, /status), until the test ends or the
// returned stop is called (a sidecar container that died; StartSidecar again restarts
// it, holding no lease, as a restarted container does).
func StartSidecar(t testing.TB, s *mariadb.Server) (stop func()) {
	t.Helper()
	srv, err := sidecar.NewServer(sidecar.ServeConfig{Datadir: s.Datadir, ServerAddr: s.Addr(),
		BackupUser: Backup.Name, BackupPassword: Backup.Password, AdminUser: Admin.Name, AdminPassword: Admin.Password,
		Log: zap.New(zap.WriteTo(os.Stderr)).WithName("sidecar-" + s.Name)})
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", net.JoinHostPort(s.Host, strconv.Itoa(inject.SidecarPort)))
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: srv.Handler(), ReadHeaderTimeout: 5 * time.Second}
	ctx, cancel := context.WithCancel(context.Background())
	go hs.Serve(l)
	fenced := make(chan struct{})
	go func() { defer close(fenced); srv.KeepFenced(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			<-fenced
			hs.Close()
			srv.Close()
		})
	}
	t.Cleanup(stop)
	return stop
}

// eventually retries check every 200ms for at most 60s.
func (cl *Cluster) Eventually(what string, check func() error) {
	cl.T.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			cl.T.Fatalf("%s: not after 60s: %v", what, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// topology is "pod=role/healthy" for every pod.
func (cl *Cluster) Topology() (map[string]string, error) {
	pods := &corev1.PodList{}
	if err := cl.C.List(cl.Ctx, pods, client.InNamespace("default"), client.MatchingLabels{inject.LabelCluster: cl.Sts.Name}); err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, p := range pods.Items {
		out[p.Name] = p.Labels[inject.LabelRole] + "/" + p.Labels[inject.LabelHealthy]
	}
	return out, nil
}

func (cl *Cluster) Want(topology map[string]string) func() error {
	return func() error {
		got, err := cl.Topology()
		if err != nil {
			return err
		}
		if fmt.Sprint(got) != fmt.Sprint(topology) {
			pods := &corev1.PodList{}
			cl.C.List(cl.Ctx, pods, client.InNamespace("default"), client.MatchingLabels{inject.LabelCluster: cl.Sts.Name})
			var status []string
			for _, p := range pods.Items {
				status = append(status, p.Name+": "+p.Annotations[inject.AnnStatus])
			}
			return fmt.Errorf("topology %v, want %v; status %v", got, topology, status)
		}
		return nil
	}
}

// Event waits for an Event with reason on the StatefulSet.
func (cl *Cluster) Event(reason string) {
	cl.T.Helper()
	cl.EventWith(reason, "")
}

// EventWith waits for an Event with reason on the StatefulSet whose message contains
// message.
func (cl *Cluster) EventWith(reason, message string) {
	cl.T.Helper()
	cl.Eventually(fmt.Sprintf("%s event %q", reason, message), func() error {
		events := &corev1.EventList{}
		if err := cl.C.List(cl.Ctx, events, client.InNamespace("default")); err != nil {
			return err
		}
		for _, e := range events.Items {
			if e.Reason == reason && e.InvolvedObject.Name == cl.Sts.Name && strings.Contains(e.Message, message) {
				return nil
			}
		}
		return fmt.Errorf("none among %d events", len(events.Items))
	})
}

func (cl *Cluster) ReadOnly(s *mariadb.Server) bool {
	cl.T.Helper()
	var ro bool
	if err := s.DB().QueryRow("SELECT @@read_only").Scan(&ro); err != nil {
		cl.T.Fatal(err)
	}
	return ro
}

func (cl *Cluster) Master() string {
	sts := &appsv1.StatefulSet{}
	if err := cl.C.Get(cl.Ctx, client.ObjectKeyFromObject(cl.Sts), sts); err != nil {
		return ""
	}
	return sts.Annotations[inject.AnnMaster]
}

// failoverFrom waits until the master is another pod than old, and returns it.
func (cl *Cluster) FailoverFrom(old string) string {
	cl.T.Helper()
	cl.Eventually("failover from "+old, func() error {
		if m := cl.Master(); m == old || m == "" {
			return fmt.Errorf("master still %q", m)
		}
		return nil
	})
	return cl.Master()
}

func (cl *Cluster) Server(pod string) *mariadb.Server {
	for _, s := range cl.Servers {
		if s.Name == pod {
			return s
		}
	}
	return nil
}

// request sets a request annotation on the StatefulSet, as the CLI or kubectl does.
func (cl *Cluster) Request(key, value string) {
	cl.T.Helper()
	sts := &appsv1.StatefulSet{}
	if err := cl.C.Get(cl.Ctx, client.ObjectKeyFromObject(cl.Sts), sts); err != nil {
		cl.T.Fatal(err)
	}
	patch := client.MergeFrom(sts.DeepCopy())
	sts.Annotations[key] = value
	if err := cl.C.Patch(cl.Ctx, sts, patch); err != nil {
		cl.T.Fatal(err)
	}
}

// lastOperation reads the StatefulSet's last-operation annotation.
func (cl *Cluster) LastOperation() failover.Operation {
	cl.T.Helper()
	sts := &appsv1.StatefulSet{}
	if err := cl.C.Get(cl.Ctx, client.ObjectKeyFromObject(cl.Sts), sts); err != nil {
		cl.T.Fatal(err)
	}
	var op failover.Operation
	_ = json.Unmarshal([]byte(sts.Annotations[inject.AnnLastOperation]), &op)
	return op
}

// outcome waits until the request annotation is gone and returns the last operation.
func (cl *Cluster) Outcome(key string) failover.Operation {
	cl.T.Helper()
	var op failover.Operation
	cl.Eventually("request "+key+" carried out", func() error {
		sts := &appsv1.StatefulSet{}
		if err := cl.C.Get(cl.Ctx, client.ObjectKeyFromObject(cl.Sts), sts); err != nil {
			return err
		}
		if _, pending := sts.Annotations[key]; pending {
			return fmt.Errorf("still pending")
		}
		return json.Unmarshal([]byte(sts.Annotations[inject.AnnLastOperation]), &op)
	})
	return op
}

// annotatePod sets (value != "") or removes an annotation on a pod.
func (cl *Cluster) AnnotatePod(pod, key, value string) {
	cl.T.Helper()
	p := &corev1.Pod{}
	if err := cl.C.Get(cl.Ctx, client.ObjectKey{Namespace: "default", Name: pod}, p); err != nil {
		cl.T.Fatal(err)
	}
	patch := client.MergeFrom(p.DeepCopy())
	if p.Annotations == nil {
		p.Annotations = map[string]string{}
	}
	if value == "" {
		delete(p.Annotations, key)
	} else {
		p.Annotations[key] = value
	}
	if err := cl.C.Patch(cl.Ctx, p, patch); err != nil {
		cl.T.Fatal(err)
	}
}

// PodStatus reads the replicant.dev/status annotation the controller published on a pod.
func (cl *Cluster) PodStatus(pod string) failover.PodStatus {
	cl.T.Helper()
	p := &corev1.Pod{}
	if err := cl.C.Get(cl.Ctx, client.ObjectKey{Namespace: "default", Name: pod}, p); err != nil {
		cl.T.Fatal(err)
	}
	var st failover.PodStatus
	if err := json.Unmarshal([]byte(p.Annotations[inject.AnnStatus]), &st); err != nil {
		cl.T.Fatalf("pod %s status %q: %v", pod, p.Annotations[inject.AnnStatus], err)
	}
	return st
}

// MasterWatch follows the pods' role labels through a watch on the apiserver: every
// state the labels pass through, in order, as the EndpointSlice controller sees them.
type MasterWatch struct {
	stop   context.CancelFunc
	done   chan struct{}
	events int
	// gaps counts label states, after a master was first seen, in which no pod is
	// labelled master: <sts>-master without endpoints, which kube-proxy turns into
	// refused connections until its next sync.
	gaps int
}

// WatchMasterLabel starts a MasterWatch; Finish stops it. It lists the pods first and
// then watches from that list's resourceVersion, resuming where it left off when
// the apiserver ends a watch, so that no label change between them is missed.
func (cl *Cluster) WatchMasterLabel() *MasterWatch {
	cl.T.Helper()
	wc, err := client.NewWithWatch(cl.Env.Config, client.Options{Scheme: cl.Env.Scheme})
	if err != nil {
		cl.T.Fatal(err)
	}
	inCluster := []client.ListOption{client.InNamespace(cl.Sts.Namespace), client.MatchingLabels{inject.LabelCluster: cl.Sts.Name}}
	var pods corev1.PodList
	if err := wc.List(cl.Ctx, &pods, inCluster...); err != nil {
		cl.T.Fatal(err)
	}
	roles := map[string]string{}
	for _, pod := range pods.Items {
		roles[pod.Name] = pod.Labels[inject.LabelRole]
	}
	ctx, stop := context.WithCancel(cl.Ctx)
	watcher, err := toolswatch.NewRetryWatcherWithContext(ctx, pods.ResourceVersion, &toolscache.ListWatch{
		WatchFuncWithContext: func(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
			return wc.Watch(ctx, &corev1.PodList{}, append([]client.ListOption{&client.ListOptions{Raw: &opts}}, inCluster...)...)
		},
	})
	if err != nil {
		stop()
		cl.T.Fatal(err)
	}
	w := &MasterWatch{stop: stop, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		defer watcher.Stop()
		seenMaster := hasMaster(roles)
		for {
			var ev watch.Event
			select {
			case <-ctx.Done():
				return
			case ev = <-watcher.ResultChan():
			}
			pod, ok := ev.Object.(*corev1.Pod)
			if !ok {
				continue
			}
			w.events++
			if ev.Type == watch.Deleted {
				delete(roles, pod.Name)
			} else {
				roles[pod.Name] = pod.Labels[inject.LabelRole]
			}
			masters := hasMaster(roles)
			seenMaster = seenMaster || masters
			if seenMaster && !masters {
				w.gaps++
			}
		}
	}()
	cl.T.Cleanup(func() { w.Finish() })
	return w
}

func hasMaster(roles map[string]string) bool {
	for _, role := range roles {
		if role == failover.RoleMaster {
			return true
		}
	}
	return false
}

// Finish stops the watch and returns how many pod events it saw and in how many of
// the states they left no pod was labelled master.
func (w *MasterWatch) Finish() (events, gaps int) {
	w.stop()
	<-w.done
	return w.events, w.gaps
}
