package failover_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/replicant-dev/replicant/failover"
	"github.com/replicant-dev/replicant/inject"
	"github.com/replicant-dev/replicant/mysql"
	"github.com/replicant-dev/replicant/test/controlplane"
	"github.com/replicant-dev/replicant/test/fixture"
	"github.com/replicant-dev/replicant/test/mariadb"
)

func TestMain(m *testing.M) { os.Exit(mariadb.Main(m)) }

// cluster is a StatefulSet in a real apiserver whose pods' IPs are real mariadbd
// servers on loopback addresses, run by the controller.
type cluster struct {
	t       testing.TB
	ctx     context.Context
	c       client.Client
	sts     *appsv1.StatefulSet
	servers []*mariadb.Server
}

func startCluster(t testing.TB, n int) *cluster {
	return startClusterWith(t, n, clusterOptions{addressing: failover.SourcePodIP})
}

type clusterOptions struct {
	addressing failover.SourceAddressing
	// podIP, when set, gives the address a pod shows instead of its server's.
	podIP func(*mariadb.Server) string
	// antiFlap, when set, replaces the default anti-flapping window.
	antiFlap time.Duration
	// probeInterval, when set, replaces the tests' 300 ms.
	probeInterval time.Duration
}

func startClusterWith(t testing.TB, n int, o clusterOptions) *cluster {
	ctrl.SetLogger(zap.New(zap.WriteTo(os.Stderr)))
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	t.Cleanup(cancel)
	servers := mariadb.Start(t, n, mariadb.Options{Cluster: "db", ReportHostIsAddress: o.addressing == failover.SourceReportHost})
	env := controlplane.Start(t, controlplane.Options{})
	c := env.Client

	sts := fixture.StatefulSet("default", "db")
	sts.Spec.Replicas = func(i int32) *int32 { return &i }(int32(n))
	// The root password as users usually give it: from a Secret of theirs (the
	// partition test gives it literally).
	rootEnv := corev1.EnvVar{Name: "MARIADB_ROOT_PASSWORD", Value: mariadb.RootPassword}
	if o.addressing != failover.SourceReportHost {
		if err := c.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "db-root", Namespace: "default"},
			StringData: map[string]string{"password": mariadb.RootPassword}}); err != nil {
			t.Fatal(err)
		}
		rootEnv = corev1.EnvVar{Name: "MARIADB_ROOT_PASSWORD", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
			LocalObjectReference: corev1.LocalObjectReference{Name: "db-root"}, Key: "password"}}}
	}
	sts.Spec.Template.Spec.Containers[0].Env = []corev1.EnvVar{rootEnv}
	if err := c.Create(ctx, sts); err != nil {
		t.Fatal(err)
	}
	for i, s := range servers {
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: s.Name, Namespace: "default",
				Labels:          map[string]string{"app": "db", inject.LabelCluster: "db"},
				OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(sts, appsv1.SchemeGroupVersion.WithKind("StatefulSet"))}},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "mariadb", Image: "mariadb:10.11"}}},
		}
		if err := c.Create(ctx, pod); err != nil {
			t.Fatal(err)
		}
		ip := s.Host
		if o.podIP != nil {
			ip = o.podIP(s)
		}
		pod.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}}}
		if err := c.Status().Update(ctx, pod); err != nil {
			t.Fatalf("pod %d status: %v", i, err)
		}
	}

	managed, _ := labels.Parse(inject.LabelCluster)
	mgr, err := ctrl.NewManager(env.Config, ctrl.Options{
		Scheme:                 env.Scheme,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Cache: cache.Options{ByObject: map[client.Object]cache.ByObject{
			&corev1.Pod{}: {Label: managed}, &corev1.Service{}: {Label: managed}}},
		Client: client.Options{Cache: &client.CacheOptions{DisableFor: []client.Object{&corev1.Secret{}}}},
		// Each test runs its own manager in this process.
		Controller: config.Controller{SkipNameValidation: ptr.To(true)},
	})
	if err != nil {
		t.Fatal(err)
	}
	r := &failover.Reconciler{Client: mgr.GetClient(), Recorder: mgr.GetEventRecorderFor("replicant"),
		Options: failover.Options{ProbeInterval: o.probeInterval, Addressing: o.addressing, AntiFlap: o.antiFlap}}
	if r.Options.ProbeInterval == 0 {
		r.Options.ProbeInterval = 300 * time.Millisecond
	}
	if err := r.SetupWithManager(mgr); err != nil {
		t.Fatal(err)
	}
	mgrCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- mgr.Start(mgrCtx) }()
	t.Cleanup(func() { stop(); <-done })
	return &cluster{t: t, ctx: ctx, c: c, sts: sts, servers: servers}
}

// eventually retries check every 200ms for at most 60s.
func (cl *cluster) eventually(what string, check func() error) {
	cl.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			cl.t.Fatalf("%s: not after 60s: %v", what, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// topology is "pod=role/healthy" for every pod.
func (cl *cluster) topology() (map[string]string, error) {
	pods := &corev1.PodList{}
	if err := cl.c.List(cl.ctx, pods, client.InNamespace("default")); err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, p := range pods.Items {
		out[p.Name] = p.Labels[inject.LabelRole] + "/" + p.Labels[inject.LabelHealthy]
	}
	return out, nil
}

func (cl *cluster) want(topology map[string]string) func() error {
	return func() error {
		got, err := cl.topology()
		if err != nil {
			return err
		}
		if fmt.Sprint(got) != fmt.Sprint(topology) {
			pods := &corev1.PodList{}
			cl.c.List(cl.ctx, pods, client.InNamespace("default"))
			var status []string
			for _, p := range pods.Items {
				status = append(status, p.Name+": "+p.Annotations[inject.AnnStatus])
			}
			return fmt.Errorf("topology %v, want %v; status %v", got, topology, status)
		}
		return nil
	}
}

// event waits for an Event with reason on the StatefulSet.
func (cl *cluster) event(reason string) {
	cl.t.Helper()
	cl.eventually(reason+" event", func() error {
		events := &corev1.EventList{}
		if err := cl.c.List(cl.ctx, events, client.InNamespace("default")); err != nil {
			return err
		}
		for _, e := range events.Items {
			if e.Reason == reason && e.InvolvedObject.Name == "db" {
				return nil
			}
		}
		return fmt.Errorf("none among %d events", len(events.Items))
	})
}

func (cl *cluster) readOnly(s *mariadb.Server) bool {
	cl.t.Helper()
	var ro bool
	if err := s.DB().QueryRow("SELECT @@read_only").Scan(&ro); err != nil {
		cl.t.Fatal(err)
	}
	return ro
}

func TestBootstrapServicesHealthAndQuarantine(t *testing.T) {
	cl := startCluster(t, 3)
	m, r1, r2 := cl.servers[0], cl.servers[1], cl.servers[2]

	cl.eventually("bootstrap", cl.want(map[string]string{"db-0": "master/yes", "db-1": "replica/yes", "db-2": "replica/yes"}))
	sts := &appsv1.StatefulSet{}
	if err := cl.c.Get(cl.ctx, client.ObjectKey{Namespace: "default", Name: "db"}, sts); err != nil {
		t.Fatal(err)
	}
	if sts.Annotations[inject.AnnMaster] != "db-0" {
		t.Errorf("master annotation %q", sts.Annotations[inject.AnnMaster])
	}
	if cl.readOnly(m) || !cl.readOnly(r1) || !cl.readOnly(r2) {
		t.Errorf("read_only: master %v, replicas %v %v", cl.readOnly(m), cl.readOnly(r1), cl.readOnly(r2))
	}

	// Metrics on the manager's registry name the master.
	families, err := crmetrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	masters := map[string]float64{}
	for _, f := range families {
		if f.GetName() == "replicant_master" {
			for _, m := range f.GetMetric() {
				for _, l := range m.GetLabel() {
					if l.GetName() == "pod" {
						masters[l.GetValue()] = m.GetGauge().GetValue()
					}
				}
			}
		}
	}
	if masters["db-0"] != 1 || masters["db-1"] != 0 || masters["db-2"] != 0 {
		t.Errorf("replicant_master = %v", masters)
	}

	// The Services select by the labels, are owned by the StatefulSet, serve 3306 and 8080.
	for name, selector := range map[string]string{
		"db-master":   "replicant.dev/cluster=db,replicant.dev/role=master",
		"db-replicas": "replicant.dev/cluster=db,replicant.dev/healthy=yes,replicant.dev/role=replica",
	} {
		svc := &corev1.Service{}
		if err := cl.c.Get(cl.ctx, client.ObjectKey{Namespace: "default", Name: name}, svc); err != nil {
			t.Fatal(err)
		}
		if got := labels.SelectorFromSet(svc.Spec.Selector).String(); got != selector {
			t.Errorf("%s selector %s, want %s", name, got, selector)
		}
		if len(svc.Spec.Ports) != 2 || svc.Spec.Ports[0].Port != 3306 || svc.Spec.Ports[1].Port != 8080 {
			t.Errorf("%s ports %v", name, svc.Spec.Ports)
		}
		if len(svc.OwnerReferences) != 1 || svc.OwnerReferences[0].Name != "db" {
			t.Errorf("%s owners %v", name, svc.OwnerReferences)
		}
	}
	secret := &corev1.Secret{}
	if err := cl.c.Get(cl.ctx, client.ObjectKey{Namespace: "default", Name: "db-replicant"}, secret); err != nil {
		t.Fatal(err)
	}
	if len(secret.Data) != 6 || len(secret.Data["admin-password"]) < 20 {
		t.Errorf("credentials Secret has %d keys", len(secret.Data))
	}

	// Rows written on the master reach both replicas.
	m.Exec(cl.ctx, "CREATE DATABASE app", "CREATE TABLE app.t (id INT PRIMARY KEY)", "INSERT INTO app.t VALUES (1), (2), (3)")
	master, err := mysql.Open(mysql.Config{Addr: m.Addr(), User: "root", Password: mariadb.RootPassword}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer master.Close()
	st, err := master.State(cl.ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []*mariadb.Server{r1, r2} {
		rs, _ := mysql.Open(mysql.Config{Addr: r.Addr(), User: "root", Password: mariadb.RootPassword}, nil)
		if err := rs.WaitForGTID(cl.ctx, st.BinlogState, 30*time.Second); err != nil {
			t.Fatalf("%s: %v", r.Name, err)
		}
		rs.Close()
		var n int
		r.DB().QueryRow("SELECT COUNT(*) FROM app.t").Scan(&n)
		if n != 3 {
			t.Errorf("%s has %d rows", r.Name, n)
		}
	}

	// A replica whose SQL thread stops is unhealthy (out of db-replicas), then back.
	r2.Exec(cl.ctx, "STOP SLAVE SQL_THREAD")
	cl.eventually("stopped replica unhealthy", cl.want(map[string]string{"db-0": "master/yes", "db-1": "replica/yes", "db-2": "replica/no"}))
	r2.Exec(cl.ctx, "START SLAVE SQL_THREAD")
	cl.eventually("replica healthy again", cl.want(map[string]string{"db-0": "master/yes", "db-1": "replica/yes", "db-2": "replica/yes"}))

	// A write on a replica is an errant transaction: quarantined and reported.
	r1.Exec(cl.ctx, "INSERT INTO app.t VALUES (100)")
	cl.eventually("errant replica quarantined", cl.want(map[string]string{"db-0": "master/yes", "db-1": "replica/no", "db-2": "replica/yes"}))
	pod := &corev1.Pod{}
	if err := cl.c.Get(cl.ctx, client.ObjectKey{Namespace: "default", Name: "db-1"}, pod); err != nil {
		t.Fatal(err)
	}
	var status map[string]any
	if err := json.Unmarshal([]byte(pod.Annotations[inject.AnnStatus]), &status); err != nil || status["errantGTIDs"] == nil {
		t.Errorf("db-1 status %s", pod.Annotations[inject.AnnStatus])
	}
	cl.event("ErrantTransactions")
	if !cl.readOnly(r1) {
		t.Errorf("quarantined replica is writable")
	}
}
