package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/replicant-dev/replicant/backup"
	"github.com/replicant-dev/replicant/failover"
	"github.com/replicant-dev/replicant/inject"
	"github.com/replicant-dev/replicant/test/controlplane"
	"github.com/replicant-dev/replicant/test/fixture"
)

func TestOrchestratorArgs(t *testing.T) {
	cases := map[string]string{
		"-c topology -a db.default":             "topology -a db.default",
		"-n prod -c which-master -a db.prod":    "which-master -n prod -a db.prod",
		"--command=clusters":                    "clusters",
		"topology -a db.default":                "topology -a db.default",
		"graceful-master-takeover -a x -d y -c": "graceful-master-takeover -a x -d y -c",
	}
	for in, want := range cases {
		if got := strings.Join(orchestratorArgs(strings.Fields(in)), " "); got != want {
			t.Errorf("%q -> %q, want %q", in, got, want)
		}
	}
}

// TestCLIReadsWhatTheControllerPublishes runs the read verbs against a real apiserver
// holding a cluster as the controller publishes it, and checks that a request with
// no controller to carry it out fails with a message a person can act on.
func TestCLIReadsWhatTheControllerPublishes(t *testing.T) {
	env := controlplane.Start(t, controlplane.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := env.Client
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "prod"}}); err != nil {
		t.Fatal(err)
	}
	sts := fixture.StatefulSet("prod", "db")
	sts.Annotations = map[string]string{inject.AnnMaster: "db-1"}
	if err := c.Create(ctx, sts); err != nil {
		t.Fatal(err)
	}
	lag := int64(3)
	for _, p := range []struct {
		name, role, healthy string
		status              failover.PodStatus
	}{
		{"db-0", "replica", "yes", failover.PodStatus{Reachable: true, Version: "10.11.19-MariaDB-log", ReadOnly: true, BinlogFmt: "ROW", IOThread: "Yes", SQLThread: true, LagSeconds: &lag}},
		{"db-1", "master", "yes", failover.PodStatus{Reachable: true, Version: "10.11.19-MariaDB-log", BinlogFmt: "ROW"}},
		{"db-2", "replica", "no", failover.PodStatus{Reachable: false, Version: "10.11.19-MariaDB-log", ReadOnly: true, BinlogFmt: "ROW"}},
	} {
		status, _ := json.Marshal(p.status)
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: p.name, Namespace: "prod",
				Labels:      map[string]string{inject.LabelCluster: "db", inject.LabelRole: p.role, inject.LabelHealthy: p.healthy},
				Annotations: map[string]string{inject.AnnStatus: string(status)}},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "mariadb", Image: "mariadb:10.11"}}},
		}
		if err := c.Create(ctx, pod); err != nil {
			t.Fatal(err)
		}
	}
	kubeconfig := writeKubeconfig(t, env.Config, "prod", "")
	run := cliRunner(ctx, kubeconfig)

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-c", "clusters"}, "db-1.mysql.prod:3306\n"},
		{[]string{"clusters-alias", "-A"}, "db-1.mysql.prod:3306,db.prod\n"},
		{[]string{"-c", "which-master", "-a", "db.prod"}, "db-1.mysql.prod:3306\n"},
		{[]string{"which-replicas", "-i", "db-0.mysql.prod:3306"}, "db-0.mysql.prod:3306\ndb-2.mysql.prod:3306\n"},
		{[]string{"-c", "topology", "-a", "db.prod"}, "" +
			"db-1.mysql.prod:3306   [0s,ok,10.11.19-MariaDB-log,rw,ROW,>>,GTID]\n" +
			"+ db-0.mysql.prod:3306 [3s,ok,10.11.19-MariaDB-log,ro,ROW,>>,GTID]\n" +
			"- db-2.mysql.prod:3306 [unknown,invalid,10.11.19-MariaDB-log,ro,ROW,>>,GTID]\n"},
	} {
		out, err := run(tc.args...)
		if err != nil || out != tc.want {
			t.Errorf("%v: %v\n got %q\nwant %q", tc.args, err, out, tc.want)
		}
	}
	out, err := run("topology", "-o", "json", "-a", "db.prod")
	var parsed []map[string]any
	if err != nil || json.Unmarshal([]byte(out), &parsed) != nil || len(parsed) != 3 {
		t.Errorf("topology -o json: %v %s", err, out)
	}

	out, err = run("topology", "-o", "wide", "-a", "db.prod")
	if err != nil || !strings.HasPrefix(out, "INSTANCE") || !strings.Contains(out, "db-2.mysql.prod:3306  replica  no") {
		t.Errorf("topology -o wide: %v\n%s", err, out)
	}

	// No permission: which verb on which resource.
	nobody := cliRunner(ctx, writeKubeconfig(t, env.Config, "prod", "nobody"))
	if _, err := nobody("clusters"); err == nil || !strings.Contains(err.Error(), `no permission to list statefulsets in namespace "prod"`) {
		t.Errorf("without RBAC: %v", err)
	}

	// Errors a person can act on.
	for args, want := range map[string]string{
		"topology -a nope.prod":                                                    `unknown cluster alias "nope.prod"; known: db.prod`,
		"topology -i db-9.mysql.prod:3306":                                         `instance "db-9.mysql.prod:3306" is not in any replicant cluster`,
		"graceful-master-takeover -a db.prod":                                      "target instance not indicated, auto=false, and master db-1.mysql.prod:3306 has 2 replicas",
		"graceful-master-takeover -a db.prod -d db-7":                              `instance "db-7" is not in cluster db.prod`,
		"graceful-master-takeover -a db.prod -d db-0.mysql.prod:3306 --timeout 1s": "not picked up within 1s: is the replicant controller running?",
	} {
		_, err := run(strings.Fields(args)...)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", args, err, want)
		}
	}
	// The request the controller would carry out is on the StatefulSet.
	if err := c.Get(ctx, client.ObjectKeyFromObject(sts), sts); err != nil {
		t.Fatal(err)
	}
	if got := sts.Annotations[inject.AnnTakeoverTo]; got != "db-0" {
		t.Errorf("takeover request %q, want db-0", got)
	}
}

// writeKubeconfig writes a kubeconfig for cfg's admin credentials, in namespace,
// impersonating a user when impersonate is set.
func writeKubeconfig(t *testing.T, cfg *rest.Config, namespace, impersonate string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "kubeconfig")
	kc := clientcmdapi.NewConfig()
	kc.Clusters["test"] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: cfg.CAData}
	kc.AuthInfos["user"] = &clientcmdapi.AuthInfo{ClientCertificateData: cfg.CertData, ClientKeyData: cfg.KeyData, Impersonate: impersonate}
	kc.Contexts["test"] = &clientcmdapi.Context{Cluster: "test", AuthInfo: "user", Namespace: namespace}
	kc.CurrentContext = "test"
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		t.Fatal(err)
	}
	return path
}

// cliRunner runs the binary's root command in-process, as a user types it.
func cliRunner(ctx context.Context, kubeconfig string) func(args ...string) (string, error) {
	return func(args ...string) (string, error) {
		root := newRootCommand()
		var out bytes.Buffer
		root.SetOut(&out)
		root.SetErr(&out)
		root.SetArgs(append(orchestratorArgs(args), "--kubeconfig", kubeconfig))
		err := root.ExecuteContext(ctx)
		return out.String(), err
	}
}

// TestCLIListsBackups: `backups -a` reads the cluster's backup-uri from a real
// apiserver and lists the committed backups in that bucket, not the unfinished ones.
func TestCLIListsBackups(t *testing.T) {
	env := controlplane.Start(t, controlplane.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "prod"}}); err != nil {
		t.Fatal(err)
	}
	bucket := t.TempDir()
	for name, committed := range map[string]bool{"20261204T030000Z": true, "20261205T030000Z": true, "20261205T040000Z": false} {
		dir := filepath.Join(bucket, "team", "prod", "db", name)
		os.MkdirAll(dir, 0o755)
		os.WriteFile(filepath.Join(dir, backup.DataObject), []byte("x"), 0o644)
		if committed {
			at, _ := time.Parse("20060102T150405Z", name)
			m, _ := json.Marshal(backup.Manifest{Name: name, GTID: "0-1-" + name[6:8], StoredBytes: 3 << 20, StreamBytes: 30 << 20,
				Start: at, End: at.Add(42 * time.Second), ServerVersion: "10.11.14-MariaDB"})
			os.WriteFile(filepath.Join(dir, backup.ManifestObject), m, 0o644)
		}
	}
	// Two archived binlogs, the newest transaction at 05:10.
	os.MkdirAll(filepath.Join(bucket, "team", "prod", "db", backup.BinlogsDir), 0o755)
	for i, last := range []string{"2026-12-05T04:00:00Z", "2026-12-05T05:10:00Z"} {
		rec := backup.ArchivedBinlog{Key: fmt.Sprintf("%s/100-x-mysql-bin.%06d", backup.BinlogsDir, i+1)}
		rec.LastTime, _ = time.Parse(time.RFC3339, last)
		data, _ := json.Marshal(rec)
		os.WriteFile(filepath.Join(bucket, "team", "prod", "db", rec.Key+".json"), data, 0o644)
	}
	sts := fixture.StatefulSet("prod", "db")
	sts.Annotations = map[string]string{inject.AnnBackupURI: "file://" + bucket + "/team"}
	if err := env.Client.Create(ctx, sts); err != nil {
		t.Fatal(err)
	}
	other := fixture.StatefulSet("prod", "cache")
	if err := env.Client.Create(ctx, other); err != nil {
		t.Fatal(err)
	}
	run := cliRunner(ctx, writeKubeconfig(t, env.Config, "prod", ""))

	out, err := run("-c", "backups", "-a", "db.prod")
	if err != nil {
		t.Fatal(err)
	}
	want := `NAME              GTID    STORED   STREAM    TOOK  SERVER
20261204T030000Z  0-1-04  3.0 MiB  30.0 MiB  42s   10.11.14-MariaDB
20261205T030000Z  0-1-05  3.0 MiB  30.0 MiB  42s   10.11.14-MariaDB
binlog archive: 2 files; a point-in-time restore (replicant.dev/restore-to) reaches 2026-12-05T05:10:00Z
`
	if out != want {
		t.Errorf("backups:\n%s\nwant:\n%s", out, want)
	}
	if _, err := run("backups", "-a", "cache.prod"); err == nil || !strings.Contains(err.Error(), inject.AnnBackupURI) {
		t.Errorf("a cluster without a bucket: %v", err)
	}
}

// TestCLIBackupRunsAJobAndWaits: `backup -a` makes a Job like the schedule's (the
// injected replicant image's backup run, owned by the StatefulSet) on a real apiserver
// and reports its outcome once it finished (here the Job controller's and the run's
// part is played by the test: the apiserver alone runs no pod).
func TestCLIBackupRunsAJobAndWaits(t *testing.T) {
	env := controlplane.Start(t, controlplane.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := env.Client
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "prod"}}); err != nil {
		t.Fatal(err)
	}
	sts := fixture.StatefulSet("prod", "db")
	sts.Annotations = map[string]string{inject.AnnBackupURI: "s3://backups/team", inject.AnnBackupRetention: "5"}
	sts.Spec.Template.Spec.InitContainers = []corev1.Container{{Name: inject.ContainerInstall, Image: "registry.local/replicant:1.2.3"}}
	if err := c.Create(ctx, sts); err != nil {
		t.Fatal(err)
	}
	run := cliRunner(ctx, writeKubeconfig(t, env.Config, "prod", ""))

	go func() { // the Job controller and the run
		for ctx.Err() == nil {
			jobs := &batchv1.JobList{}
			c.List(ctx, jobs, client.InNamespace("prod"), client.MatchingLabels{inject.LabelBackupOf: "db"})
			if len(jobs.Items) == 0 {
				time.Sleep(100 * time.Millisecond)
				continue
			}
			job := &jobs.Items[0]
			end := time.Now().UTC()
			m := backup.Manifest{Name: "20261205T120000Z", GTID: "0-100-7", StoredBytes: 1 << 20, StreamBytes: 8 << 20,
				Source: "http://db-replicas.prod.svc:8080", Start: end.Add(-3 * time.Second), End: end}
			outcome, _ := json.Marshal(failover.BackupOutcome{Manifest: &m, Pruned: 1})
			pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: job.Name + "-p", Namespace: "prod",
				Labels: map[string]string{batchv1.JobNameLabel: job.Name}}, Spec: *job.Spec.Template.Spec.DeepCopy()}
			c.Create(ctx, pod)
			pod.Status = corev1.PodStatus{Phase: corev1.PodSucceeded, ContainerStatuses: []corev1.ContainerStatus{{Name: inject.ContainerBackup,
				State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{Message: string(outcome)}}}}}
			c.Status().Update(ctx, pod)
			now := metav1.Now()
			job.Status = batchv1.JobStatus{StartTime: &now, CompletionTime: &now, Succeeded: 1, Conditions: []batchv1.JobCondition{
				{Type: batchv1.JobSuccessCriteriaMet, Status: corev1.ConditionTrue, LastTransitionTime: now},
				{Type: batchv1.JobComplete, Status: corev1.ConditionTrue, LastTransitionTime: now}}}
			if err := c.Status().Update(ctx, job); err != nil {
				t.Errorf("job status: %v", err)
			}
			return
		}
	}()
	out, err := run("backup", "-a", "db.prod")
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if !strings.Contains(out, "backup 20261205T120000Z committed: GTID 0-100-7, 1.0 MiB stored (8.0 MiB streamed from http://db-replicas.prod.svc:8080) in 3s; 1 old backups deleted") {
		t.Errorf("output:\n%s", out)
	}
	jobs := &batchv1.JobList{}
	if err := c.List(ctx, jobs, client.InNamespace("prod")); err != nil || len(jobs.Items) != 1 {
		t.Fatalf("jobs: %v", err)
	}
	job := jobs.Items[0]
	cmd := strings.Join(job.Spec.Template.Spec.Containers[0].Command, " ")
	if job.OwnerReferences[0].Name != "db" || job.Spec.Template.Spec.Containers[0].Image != "registry.local/replicant:1.2.3" ||
		cmd != "/usr/local/bin/replicant backup run --backup-uri=s3://backups/team --statefulset=db --namespace=prod --termination-log=/dev/termination-log --retention=5" {
		t.Errorf("job: owner %v, image %s, command %s", job.OwnerReferences, job.Spec.Template.Spec.Containers[0].Image, cmd)
	}
}
