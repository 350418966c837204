// Package install tests what a user installs: manifests/ (kubectl apply -k) and
// charts/replicant (helm install) render the same objects, and a real kube-apiserver
// with cert-manager's CRDs accepts every one of them.
package install

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/replicant-dev/replicant/test/controlplane"
)

const namespace = "replicant-system"

func run(t *testing.T, name string, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = controlplane.RepoRoot()
	out, err := cmd.Output()
	if err != nil {
		stderr := ""
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("%s %s: %v\n%s", filepath.Base(name), strings.Join(args, " "), err, stderr)
	}
	return out
}

func kubectlPath(t *testing.T) string {
	assets, err := controlplane.AssetsDir()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(assets, "kubectl")
}

func renderKustomize(t *testing.T, dir string) []*unstructured.Unstructured {
	return decode(t, run(t, kubectlPath(t), "kustomize", dir))
}

func renderHelm(t *testing.T, extra ...string) []*unstructured.Unstructured {
	helm := controlplane.Tool(t, "helm", "HELM")
	args := append([]string{"template", "replicant", "charts/replicant", "--namespace", namespace}, extra...)
	return decode(t, run(t, helm, args...))
}

func decode(t *testing.T, stream []byte) []*unstructured.Unstructured {
	t.Helper()
	var objs []*unstructured.Unstructured
	for _, doc := range controlplane.SplitYAML(stream) {
		u := &unstructured.Unstructured{}
		if err := yaml.Unmarshal(doc, &u.Object); err != nil {
			t.Fatalf("decode rendered object: %v\n%s", err, doc)
		}
		objs = append(objs, u)
	}
	sort.Slice(objs, func(i, j int) bool { return key(objs[i]) < key(objs[j]) })
	return objs
}

func key(u *unstructured.Unstructured) string {
	return u.GetKind() + "/" + u.GetNamespace() + "/" + u.GetName()
}

func typed[T any](t *testing.T, objs []*unstructured.Unstructured, kind string) *T {
	t.Helper()
	for _, u := range objs {
		if u.GetKind() == kind {
			out := new(T)
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, out); err != nil {
				t.Fatal(err)
			}
			return out
		}
	}
	t.Fatalf("no %s rendered", kind)
	return nil
}

func TestKustomizeAndHelmRenderTheSameObjects(t *testing.T) {
	kustomized := renderKustomize(t, "manifests")
	helmed := renderHelm(t)
	var withoutNamespace []*unstructured.Unstructured
	for _, u := range kustomized {
		if u.GetKind() != "Namespace" {
			withoutNamespace = append(withoutNamespace, u)
		}
	}
	if len(withoutNamespace) != len(helmed) {
		t.Fatalf("kustomize renders %d objects besides the Namespace, helm %d:\n%v\n%v", len(withoutNamespace), len(helmed), keys(withoutNamespace), keys(helmed))
	}
	for i := range helmed {
		if key(withoutNamespace[i]) != key(helmed[i]) {
			t.Fatalf("object sets differ:\nkustomize %v\nhelm      %v", keys(withoutNamespace), keys(helmed))
		}
		if !reflect.DeepEqual(withoutNamespace[i].Object, helmed[i].Object) {
			a, _ := yaml.Marshal(withoutNamespace[i].Object)
			b, _ := yaml.Marshal(helmed[i].Object)
			t.Errorf("%s differs:\n--- kustomize\n%s\n--- helm\n%s", key(helmed[i]), a, b)
		}
	}
	want := []string{
		"Certificate/replicant-system/replicant-ca", "Certificate/replicant-system/replicant-webhook",
		"ClusterRole//replicant-controller", "ClusterRoleBinding//replicant-controller",
		"Deployment/replicant-system/replicant", "Issuer/replicant-system/replicant-ca",
		"Issuer/replicant-system/replicant-selfsigned", "MutatingWebhookConfiguration//replicant",
		"PodDisruptionBudget/replicant-system/replicant", "Role/replicant-system/replicant-manager",
		"RoleBinding/replicant-system/replicant-manager", "Service/replicant-system/replicant-webhook",
		"ServiceAccount/replicant-system/replicant",
		"ValidatingAdmissionPolicy//replicant-manager", "ValidatingAdmissionPolicyBinding//replicant-manager",
	}
	if got := keys(helmed); !reflect.DeepEqual(got, want) {
		t.Errorf("rendered objects = %v\nwant %v", got, want)
	}
}

func keys(objs []*unstructured.Unstructured) []string {
	var out []string
	for _, u := range objs {
		out = append(out, key(u))
	}
	return out
}

func TestRenderedObjectsKeepTheirPromises(t *testing.T) {
	objs := renderKustomize(t, "manifests")
	deploy := typed[appsv1.Deployment](t, objs, "Deployment")
	if *deploy.Spec.Replicas != 2 {
		t.Errorf("manager replicas = %d, want 2", *deploy.Spec.Replicas)
	}
	manager := deploy.Spec.Template.Spec.Containers[0]
	if !contains(manager.Args, "--leader-elect") {
		t.Errorf("manager args %v lack --leader-elect", manager.Args)
	}
	hook := typed[admissionv1.MutatingWebhookConfiguration](t, objs, "MutatingWebhookConfiguration")
	// The manager keeps the CA bundle (webhook/cabundle.go); cert-manager's
	// cainjector must not rewrite the object (it would drop matchConditions).
	if _, ok := hook.Annotations["cert-manager.io/inject-ca-from"]; ok {
		t.Errorf("the webhook configuration asks cert-manager's cainjector to rewrite it")
	}
	w := hook.Webhooks[0]
	if len(w.MatchConditions) != 1 || !strings.Contains(w.MatchConditions[0].Expression, "system:serviceaccount:"+namespace+":replicant") {
		t.Errorf("matchConditions = %+v, want the manager's own ServiceAccount left out", w.MatchConditions)
	}
	if *w.FailurePolicy != admissionv1.Fail || *w.SideEffects != admissionv1.SideEffectClassNone || *w.TimeoutSeconds > 10 {
		t.Errorf("webhook policy: failure %s, side effects %s, timeout %d", *w.FailurePolicy, *w.SideEffects, *w.TimeoutSeconds)
	}
	if w.ObjectSelector.MatchLabels["replicant.dev/inject"] != "enabled" {
		t.Errorf("objectSelector = %v", w.ObjectSelector)
	}
	excluded := w.NamespaceSelector.MatchExpressions[0]
	if excluded.Key != "kubernetes.io/metadata.name" || !reflect.DeepEqual(excluded.Values, []string{namespace, "kube-system", "cert-manager"}) {
		t.Errorf("namespaceSelector = %v", w.NamespaceSelector)
	}
}

// Image and value overrides land where they should.
func TestImageOverridesReachTheInjectedImage(t *testing.T) {
	// An overlay as a user writes one; kustomize wants its bases under the overlay's root.
	overlay := t.TempDir()
	base := filepath.Join(overlay, "base")
	if err := os.CopyFS(base, os.DirFS(filepath.Join(controlplane.RepoRoot(), "manifests"))); err != nil {
		t.Fatal(err)
	}
	kustomization := "resources:\n  - base\n" +
		"images:\n  - name: ghcr.io/replicant-dev/replicant\n    newName: registry.local/replicant\n    newTag: v9.9.9\n"
	if err := os.WriteFile(filepath.Join(overlay, "kustomization.yaml"), []byte(kustomization), 0o644); err != nil {
		t.Fatal(err)
	}
	helmed := renderHelm(t, "--set", "image.repository=registry.local/replicant", "--set", "image.tag=v9.9.9",
		"--set", "replicas=3", "--set", "webhook.failurePolicy=Ignore")
	for name, objs := range map[string][]*unstructured.Unstructured{"kustomize": renderKustomize(t, overlay), "helm": helmed} {
		manager := typed[appsv1.Deployment](t, objs, "Deployment").Spec.Template.Spec.Containers[0]
		if manager.Image != "registry.local/replicant:v9.9.9" {
			t.Errorf("%s: manager image %s", name, manager.Image)
		}
		// The manager injects its own image, read from its pod: it needs POD_NAME and
		// POD_NAMESPACE and no separate image setting that could drift.
		var downward []string
		for _, e := range manager.Env {
			if e.ValueFrom != nil && e.ValueFrom.FieldRef != nil {
				downward = append(downward, e.Name)
			}
			if e.Name == "REPLICANT_IMAGE" {
				t.Errorf("%s: REPLICANT_IMAGE set; it would drift from the container's image", name)
			}
		}
		if !reflect.DeepEqual(downward, []string{"POD_NAMESPACE", "POD_NAME"}) || manager.Name != "manager" {
			t.Errorf("%s: container %s, downward env %v", name, manager.Name, downward)
		}
	}
	if r := *typed[appsv1.Deployment](t, helmed, "Deployment").Spec.Replicas; r != 3 {
		t.Errorf("helm replicas value ignored: %d", r)
	}
	if p := *typed[admissionv1.MutatingWebhookConfiguration](t, helmed, "MutatingWebhookConfiguration").Webhooks[0].FailurePolicy; p != admissionv1.Ignore {
		t.Errorf("helm failurePolicy value ignored: %s", p)
	}
}

func TestHelmLint(t *testing.T) {
	run(t, controlplane.Tool(t, "helm", "HELM"), "lint", "--strict", "charts/replicant")
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// certManagerCRDs finds cert-manager's CRDs in its Go module (the Makefile downloads it
// and sets CERT_MANAGER_CRDS).
func certManagerCRDs(t *testing.T) []string {
	dir := os.Getenv("CERT_MANAGER_CRDS")
	if dir == "" {
		t.Fatal("CERT_MANAGER_CRDS is not set: run `make test`, which downloads cert-manager's module for its CRDs")
	}
	files, _ := filepath.Glob(filepath.Join(dir, "crd-*.yaml"))
	if len(files) == 0 {
		t.Fatalf("no crd-*.yaml in %s", dir)
	}
	return files
}

// TestRealAPIServerAcceptsEverything: every rendered object, from both renders, passes
// the apiserver's validation (server-side dry-run) with cert-manager's CRDs installed.
func TestRealAPIServerAcceptsEverything(t *testing.T) {
	env := controlplane.Start(t, controlplane.Options{CRDs: controlplane.LoadCRDs(t, certManagerCRDs(t)...)})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	kustomized := renderKustomize(t, "manifests")
	for _, u := range kustomized {
		if u.GetKind() == "Namespace" {
			if err := env.Client.Create(ctx, u); err != nil {
				t.Fatalf("create %s: %v", key(u), err)
			}
		}
	}
	for name, objs := range map[string][]*unstructured.Unstructured{"kustomize": kustomized, "helm": renderHelm(t)} {
		for _, u := range objs {
			if u.GetKind() == "Namespace" {
				continue
			}
			if err := env.Client.Create(ctx, u.DeepCopy(), client.DryRunAll); err != nil {
				t.Errorf("%s: apiserver refuses %s: %v", name, key(u), err)
			}
		}
	}
	// And a real apply, as `kubectl apply -k manifests/` does it.
	out, err := env.Kubectl(ctx, nil, "apply", "-k", filepath.Join(controlplane.RepoRoot(), "manifests"))
	if err != nil {
		t.Fatalf("kubectl apply -k manifests/: %v\n%s", err, out)
	}
	if !strings.Contains(out, "mutatingwebhookconfiguration.admissionregistration.k8s.io/replicant created") ||
		!strings.Contains(out, "certificate.cert-manager.io/replicant-webhook created") {
		t.Errorf("kubectl apply -k output:\n%s", out)
	}
}
