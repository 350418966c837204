package failover_test

import (
	"encoding/json"
	"os"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/controller-runtime/pkg/client"
	crmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/replicant-dev/replicant/inject"
	"github.com/replicant-dev/replicant/mysql"
	"github.com/replicant-dev/replicant/test/managed"
	"github.com/replicant-dev/replicant/test/mariadb"
)

func TestMain(m *testing.M) { os.Exit(mariadb.Main(m)) }

func TestBootstrapServicesHealthAndQuarantine(t *testing.T) {
	cl := managed.Start(t, 3)
	m, r1, r2 := cl.Servers[0], cl.Servers[1], cl.Servers[2]

	cl.Eventually("bootstrap", cl.Want(map[string]string{"db-0": "master/yes", "db-1": "replica/yes", "db-2": "replica/yes"}))
	sts := &appsv1.StatefulSet{}
	if err := cl.C.Get(cl.Ctx, client.ObjectKey{Namespace: "default", Name: "db"}, sts); err != nil {
		t.Fatal(err)
	}
	if sts.Annotations[inject.AnnMaster] != "db-0" {
		t.Errorf("master annotation %q", sts.Annotations[inject.AnnMaster])
	}
	if cl.ReadOnly(m) || !cl.ReadOnly(r1) || !cl.ReadOnly(r2) {
		t.Errorf("read_only: master %v, replicas %v %v", cl.ReadOnly(m), cl.ReadOnly(r1), cl.ReadOnly(r2))
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
		if err := cl.C.Get(cl.Ctx, client.ObjectKey{Namespace: "default", Name: name}, svc); err != nil {
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
	if err := cl.C.Get(cl.Ctx, client.ObjectKey{Namespace: "default", Name: "db-replicant"}, secret); err != nil {
		t.Fatal(err)
	}
	if len(secret.Data) != 6 || len(secret.Data["admin-password"]) < 20 {
		t.Errorf("credentials Secret has %d keys", len(secret.Data))
	}

	// Rows written on the master reach both replicas.
	m.Exec(cl.Ctx, "CREATE DATABASE app", "CREATE TABLE app.t (id INT PRIMARY KEY)", "INSERT INTO app.t VALUES (1), (2), (3)")
	master, err := mysql.Open(mysql.Config{Addr: m.Addr(), User: "root", Password: mariadb.RootPassword}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer master.Close()
	st, err := master.State(cl.Ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []*mariadb.Server{r1, r2} {
		rs, _ := mysql.Open(mysql.Config{Addr: r.Addr(), User: "root", Password: mariadb.RootPassword}, nil)
		if err := rs.WaitForGTID(cl.Ctx, st.BinlogState, 30*time.Second); err != nil {
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
	r2.Exec(cl.Ctx, "STOP SLAVE SQL_THREAD")
	cl.Eventually("stopped replica unhealthy", cl.Want(map[string]string{"db-0": "master/yes", "db-1": "replica/yes", "db-2": "replica/no"}))
	r2.Exec(cl.Ctx, "START SLAVE SQL_THREAD")
	cl.Eventually("replica healthy again", cl.Want(map[string]string{"db-0": "master/yes", "db-1": "replica/yes", "db-2": "replica/yes"}))

	// A write on a replica is an errant transaction: quarantined and reported.
	r1.Exec(cl.Ctx, "INSERT INTO app.t VALUES (100)")
	cl.Eventually("errant replica quarantined", cl.Want(map[string]string{"db-0": "master/yes", "db-1": "replica/no", "db-2": "replica/yes"}))
	pod := &corev1.Pod{}
	if err := cl.C.Get(cl.Ctx, client.ObjectKey{Namespace: "default", Name: "db-1"}, pod); err != nil {
		t.Fatal(err)
	}
	var status map[string]any
	if err := json.Unmarshal([]byte(pod.Annotations[inject.AnnStatus]), &status); err != nil || status["errantGTIDs"] == nil {
		t.Errorf("db-1 status %s", pod.Annotations[inject.AnnStatus])
	}
	cl.Event("ErrantTransactions")
	if !cl.ReadOnly(r1) {
		t.Errorf("quarantined replica is writable")
	}
}
