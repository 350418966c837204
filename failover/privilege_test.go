package failover_test

import (
	"bytes"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/replicant-dev/replicant/failover"
	"github.com/replicant-dev/replicant/inject"
	"github.com/replicant-dev/replicant/test/controlplane"
	"github.com/replicant-dev/replicant/test/managed"
)

// TestTheManagerNeedsOnlyItsShippedPrivileges: the manager runs as its ServiceAccount
// with nothing but manifests/rbac.yaml and manifests/policy.yaml, against a real
// apiserver: it bootstraps, keeps its Services, budget, state and credentials, fails
// over and hands over. The same identity is refused, by the apiserver, everything
// else those RBAC verbs would allow: minting a ServiceAccount token, a Secret of its
// own choosing, relabelling or deleting a pod outside a managed cluster, a non-replicant label or
// the image of a database pod, a StatefulSet's spec, and a user's Service.
func TestTheManagerNeedsOnlyItsShippedPrivileges(t *testing.T) {
	web := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "web"}}
	users := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "frontend", Namespace: "web"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "frontend"}, Ports: []corev1.ServicePort{{Name: "http", Port: 80}}}}
	other := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "frontend-0", Namespace: "web", Labels: map[string]string{"app": "frontend"}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "nginx"}}}}
	cl := managed.StartWith(t, 3, managed.Options{Addressing: failover.SourcePodIP, AsServiceAccount: true,
		Objects: []client.Object{web, users, other}})
	cl.Eventually("bootstrap", cl.Want(map[string]string{"db-0": "master/yes", "db-1": "replica/yes", "db-2": "replica/yes"}))
	for name, obj := range map[string]client.Object{"db-master": &corev1.Service{}, "db-replicas": &corev1.Service{},
		"db": &policyv1.PodDisruptionBudget{}, failover.StateName("db"): &corev1.ConfigMap{}} {
		if err := cl.C.Get(cl.Ctx, client.ObjectKey{Namespace: "default", Name: name}, obj); err != nil {
			t.Errorf("%T %s: %v", obj, name, err)
		}
	}
	cl.Request(inject.AnnTakeoverTo, "db-1")
	if op := cl.Outcome(inject.AnnTakeoverTo); op.Result != failover.ResultOK {
		t.Fatalf("takeover as the ServiceAccount: %+v", op)
	}
	cl.Servers[1].Kill()
	cl.FailoverFrom("db-1")

	sa, err := client.New(managed.AsManager(cl.Env.Config), client.Options{Scheme: cl.Env.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	// Each write below is one the RBAC verbs allow and the policy refuses. The policy
	// is in force once the apiserver has loaded it (it did before the manager's
	// first writes in practice; the loop only bounds the wait).
	refused := func(what string, write func() error) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			err := write()
			if err != nil && strings.Contains(err.Error(), "the replicant manager may only") {
				t.Logf("refused: %s: %v", what, err)
				return
			}
			if err == nil || time.Now().After(deadline) {
				t.Errorf("%s: not refused by the policy: %v", what, err)
				return
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	refused("a ServiceAccount token Secret in kube-system", func() error {
		return sa.Create(cl.Ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{GenerateName: "token-", Namespace: "kube-system",
			Labels:      map[string]string{inject.LabelCluster: "db"},
			Annotations: map[string]string{corev1.ServiceAccountNameKey: "default"}},
			Type: corev1.SecretTypeServiceAccountToken})
	})
	refused("an Opaque Secret without replicant's label", func() error {
		return sa.Create(cl.Ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{GenerateName: "mine-", Namespace: "default"},
			StringData: map[string]string{"k": "v"}})
	})
	patchPod := func(key string, change func(*corev1.Pod)) func() error {
		return func() error {
			ns, name, _ := strings.Cut(key, "/")
			pod := &corev1.Pod{}
			if err := sa.Get(cl.Ctx, client.ObjectKey{Namespace: ns, Name: name}, pod); err != nil {
				return err
			}
			patch := client.MergeFrom(pod.DeepCopy())
			change(pod)
			return sa.Patch(cl.Ctx, pod, patch)
		}
	}
	refused("a replicant label on a pod outside any managed cluster", patchPod("web/frontend-0", func(p *corev1.Pod) {
		p.Labels[inject.LabelRole] = failover.RoleMaster
	}))
	refused("a non-replicant label on a database pod", patchPod("default/db-2", func(p *corev1.Pod) { p.Labels["app"] = "elsewhere" }))
	refused("another user's annotation on a database pod", patchPod("default/db-2", func(p *corev1.Pod) {
		if p.Annotations == nil {
			p.Annotations = map[string]string{}
		}
		p.Annotations["example.com/x"] = "y"
	}))
	refused("the image of a database pod", patchPod("default/db-2", func(p *corev1.Pod) { p.Spec.Containers[0].Image = "evil:latest" }))
	refused("moving a database pod to another cluster", patchPod("default/db-2", func(p *corev1.Pod) { p.Labels[inject.LabelCluster] = "other" }))
	refused("deleting a pod outside any managed cluster", func() error {
		return sa.Delete(cl.Ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "web", Name: "frontend-0"}})
	})
	refused("a StatefulSet's spec", func() error {
		sts := &appsv1.StatefulSet{}
		if err := sa.Get(cl.Ctx, client.ObjectKeyFromObject(cl.Sts), sts); err != nil {
			return err
		}
		patch := client.MergeFrom(sts.DeepCopy())
		sts.Spec.Template.Spec.Containers[0].Image = "evil:latest"
		return sa.Patch(cl.Ctx, sts, patch)
	})
	refused("a user's Service", func() error {
		svc := &corev1.Service{}
		if err := sa.Get(cl.Ctx, client.ObjectKeyFromObject(users), svc); err != nil {
			return err
		}
		svc.Spec.Selector = map[string]string{inject.LabelCluster: "db"}
		return sa.Update(cl.Ctx, svc)
	})
	// Its backup CronJob, written as the ServiceAccount, passes the policy; one that
	// would run anything else, or with an API identity, does not.
	cl.Request(inject.AnnBackupURI, "s3://backups/prod")
	cl.Request(inject.AnnBackupSchedule, "@daily")
	ours := &batchv1.CronJob{}
	cl.Eventually("the backup CronJob, made as the ServiceAccount", func() error {
		return cl.C.Get(cl.Ctx, client.ObjectKey{Namespace: "default", Name: inject.BackupCronJobName("db")}, ours)
	})
	cl.Eventually("the binlog archive's CronJob, made as the ServiceAccount", func() error {
		return cl.C.Get(cl.Ctx, client.ObjectKey{Namespace: "default", Name: inject.BinlogsCronJobName("db")}, &batchv1.CronJob{})
	})
	rogue := func(change func(*corev1.PodSpec)) func() error {
		return func() error {
			cj := &batchv1.CronJob{ObjectMeta: metav1.ObjectMeta{GenerateName: "db-backup-", Namespace: "default",
				Labels: ours.Labels, OwnerReferences: ours.OwnerReferences}, Spec: *ours.Spec.DeepCopy()}
			change(&cj.Spec.JobTemplate.Spec.Template.Spec)
			return sa.Create(cl.Ctx, cj)
		}
	}
	refused("a CronJob whose pods run as another ServiceAccount", rogue(func(p *corev1.PodSpec) {
		p.ServiceAccountName, p.AutomountServiceAccountToken = "admin", ptr.To(true)
	}))
	refused("a CronJob whose pods mount the node's disk", rogue(func(p *corev1.PodSpec) {
		p.Volumes = []corev1.Volume{{Name: "root", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/"}}}}
	}))
	refused("a CronJob whose pods run something else", rogue(func(p *corev1.PodSpec) {
		p.Containers[0].Command = []string{"/bin/sh", "-c", "curl evil"}
	}))
	refused("a CronJob whose pods run another replicant command", rogue(func(p *corev1.PodSpec) {
		p.Containers[0].Command = []string{"/usr/local/bin/replicant", "manager"}
	}))
	refused("a CronJob whose pods are privileged", rogue(func(p *corev1.PodSpec) {
		p.Containers[0].SecurityContext.Privileged, p.Containers[0].SecurityContext.AllowPrivilegeEscalation = ptr.To(true), nil
	}))
	// What it needs stays allowed: replicant's own annotation on a database pod.
	if err := patchPod("default/db-2", func(p *corev1.Pod) {
		if p.Annotations == nil {
			p.Annotations = map[string]string{}
		}
		p.Annotations[inject.Prefix+"probe"] = fmt.Sprint(time.Now().Unix())
	})(); err != nil {
		t.Errorf("a replicant.dev/ annotation on a database pod: %v", err)
	}
}

// TestANamespacedInstallManagesOnlyItsNamespaces: the chart with watchNamespaces
// gives the manager Roles in those namespaces only; a manager watching them runs its
// clusters there, and its ServiceAccount can read no pod or Secret elsewhere.
func TestANamespacedInstallManagesOnlyItsNamespaces(t *testing.T) {
	helm := controlplane.Tool(t, "helm", "HELM")
	out, err := exec.Command(helm, "template", "replicant", filepath.Join(controlplane.RepoRoot(), "charts", "replicant"),
		"--namespace", "replicant-system", "--set", "watchNamespaces={default}").Output()
	if err != nil {
		t.Fatalf("helm template: %v", err)
	}
	var privileges [][]byte
	for _, doc := range controlplane.SplitYAML(out) {
		var meta struct {
			Kind string `json:"kind"`
		}
		if err := yaml.Unmarshal(doc, &meta); err != nil {
			t.Fatal(err)
		}
		switch meta.Kind {
		case "ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding", "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding":
			privileges = append(privileges, doc)
		}
		if meta.Kind == "ClusterRole" && strings.Contains(string(doc), "pods") {
			t.Errorf("a namespaced install grants pods cluster-wide:\n%s", doc)
		}
	}
	web := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "web"}}
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "web-secret", Namespace: "web"}, StringData: map[string]string{"k": "v"}}
	cl := managed.StartWith(t, 3, managed.Options{Addressing: failover.SourcePodIP, AsServiceAccount: true,
		Privileges: bytes.Join(privileges, []byte("\n---\n")), Namespaces: []string{"default"}, Objects: []client.Object{web, secret}})
	cl.Eventually("bootstrap", cl.Want(map[string]string{"db-0": "master/yes", "db-1": "replica/yes", "db-2": "replica/yes"}))
	cl.Servers[0].Kill()
	cl.FailoverFrom("db-0")

	sa, err := client.New(managed.AsManager(cl.Env.Config), client.Options{Scheme: cl.Env.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	if err := sa.List(cl.Ctx, &corev1.PodList{}, client.InNamespace("web")); !apierrors.IsForbidden(err) {
		t.Errorf("listing pods in another namespace: %v, want forbidden", err)
	}
	if err := sa.Get(cl.Ctx, client.ObjectKeyFromObject(secret), &corev1.Secret{}); !apierrors.IsForbidden(err) {
		t.Errorf("reading a Secret in another namespace: %v, want forbidden", err)
	}
	if err := sa.List(cl.Ctx, &corev1.PodList{}, client.InNamespace("default")); err != nil {
		t.Errorf("listing pods in its own namespace: %v", err)
	}
}
