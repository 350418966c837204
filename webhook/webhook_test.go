package webhook_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	crwebhook "sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
	"sigs.k8s.io/yaml"

	"github.com/replicant-dev/replicant/inject"
	"github.com/replicant-dev/replicant/test/controlplane"
	"github.com/replicant-dev/replicant/test/fixture"
	"github.com/replicant-dev/replicant/webhook"
)

var injectConfig = inject.Config{Image: "replicant:test", ImagePullPolicy: corev1.PullIfNotPresent, Version: "test"}

// counter records which StatefulSets reached the webhook, to prove the selectors keep
// everything else away from it.
type counter struct {
	inner admission.Handler
	mu    sync.Mutex
	seen  map[string]int
}

func (c *counter) Handle(ctx context.Context, req admission.Request) admission.Response {
	c.mu.Lock()
	c.seen[req.Namespace+"/"+req.Name]++
	c.mu.Unlock()
	return c.inner.Handle(ctx, req)
}

func (c *counter) calls(ns, name string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.seen[ns+"/"+name]
}

const userManifest = `apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: NAME
  namespace: NAMESPACE
  labels:
    app: NAME
EXTRA
spec:
  serviceName: mysql
  replicas: REPLICAS
  selector:
    matchLabels:
      app: NAME
  template:
    metadata:
      labels:
        app: NAME
    spec:
      containers:
        - name: mariadb
          image: IMAGE
          env:
            - name: MARIADB_ROOT_PASSWORD
              value: secret
          volumeMounts:
            - name: data
              mountPath: /var/lib/mysql
  volumeClaimTemplates:
    - metadata:
        name: data
      spec:
        accessModes: ["ReadWriteOnce"]
        resources:
          requests:
            storage: 1Gi
`

type manifest struct {
	name, namespace string
	labelled        bool
	annotations     map[string]string
	replicas        int
	image           string
}

func (m manifest) yaml() []byte {
	extra := ""
	if m.labelled {
		extra += "    replicant.dev/inject: enabled\n"
	}
	if len(m.annotations) > 0 {
		extra += "  annotations:\n"
		for k, v := range m.annotations {
			extra += fmt.Sprintf("    %s: %q\n", k, v)
		}
	}
	if m.replicas == 0 {
		m.replicas = 3
	}
	if m.image == "" {
		m.image = "mariadb:10.11"
	}
	return []byte(strings.NewReplacer("NAMESPACE", m.namespace, "NAME", m.name, "EXTRA", strings.TrimRight(extra, "\n"),
		"REPLICAS", fmt.Sprint(m.replicas), "IMAGE", m.image).Replace(userManifest))
}

// TestWebhookOnRealAPIServer runs the injector behind a real kube-apiserver, configured
// with the MutatingWebhookConfiguration from manifests/, and drives it with kubectl.
func TestWebhookOnRealAPIServer(t *testing.T) {
	log.SetLogger(zap.New(zap.WriteTo(os.Stderr), zap.UseDevMode(false)))
	env := controlplane.Start(t, controlplane.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c := env.Client

	hits := &counter{inner: webhook.NewInjector(admission.NewDecoder(env.Scheme), injectConfig), seen: map[string]int{}}
	server := crwebhook.NewServer(crwebhook.Options{Host: env.WebhookHost, Port: env.WebhookPort, CertDir: env.WebhookCertDir})
	server.Register(webhook.Path, &crwebhook.Admission{Handler: hits})
	serverCtx, stopServer := context.WithCancel(ctx)
	serverDone := make(chan error, 1)
	go func() { serverDone <- server.Start(serverCtx) }()
	t.Cleanup(func() { stopServer(); <-serverDone })

	installWebhookConfiguration(t, ctx, env)
	for _, ns := range []string{"apps", "replicant-system", "cert-manager"} {
		if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
			t.Fatal(err)
		}
	}
	waitForWebhook(t, ctx, c)

	apply := func(t *testing.T, m manifest, extra ...string) (string, error) {
		t.Helper()
		return env.Kubectl(ctx, m.yaml(), append([]string{"apply", "-f", "-"}, extra...)...)
	}
	get := func(t *testing.T, ns, name string) *appsv1.StatefulSet {
		t.Helper()
		sts := &appsv1.StatefulSet{}
		if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, sts); err != nil {
			t.Fatal(err)
		}
		return sts
	}

	t.Run("labelled StatefulSet is stored injected", func(t *testing.T) {
		if out, err := apply(t, manifest{name: "db", namespace: "apps", labelled: true}); err != nil {
			t.Fatalf("kubectl apply: %v\n%s", err, out)
		}
		sts := get(t, "apps", "db")
		spec := sts.Spec.Template.Spec
		if got := containerNames(spec.InitContainers); got != "replicant-install,replicant-config,replicant-clone" {
			t.Errorf("stored init containers = %s", got)
		}
		if got := containerNames(spec.Containers); got != "mariadb,replicant-sidecar" {
			t.Errorf("stored containers = %s", got)
		}
		if sts.Spec.Template.Labels[inject.LabelCluster] != "db" {
			t.Errorf("pod template labels = %v", sts.Spec.Template.Labels)
		}
		if !strings.HasPrefix(sts.Spec.Template.Annotations[inject.AnnInjected], "test/") {
			t.Errorf("injected annotation = %q", sts.Spec.Template.Annotations[inject.AnnInjected])
		}
		// The apiserver defaulted what replicant injected; it is stored as a whole.
		if spec.InitContainers[0].TerminationMessagePath == "" {
			t.Errorf("injected containers were not defaulted by the apiserver")
		}
	})

	t.Run("re-apply and unrelated changes keep the template", func(t *testing.T) {
		before := get(t, "apps", "db")
		if out, err := apply(t, manifest{name: "db", namespace: "apps", labelled: true}); err != nil {
			t.Fatalf("kubectl apply: %v\n%s", err, out)
		}
		after := get(t, "apps", "db")
		if after.Generation != before.Generation {
			t.Errorf("re-apply moved the generation %d -> %d", before.Generation, after.Generation)
		}
		if !equality.Semantic.DeepEqual(before.Spec.Template, after.Spec.Template) {
			t.Errorf("re-apply changed the pod template")
		}

		// An update that sends the user's plain template (as an editor would) is
		// re-injected to the very same template.
		plain := after.DeepCopy()
		plain.Spec.Template.Spec.InitContainers = nil
		plain.Spec.Template.Spec.Containers = plain.Spec.Template.Spec.Containers[:1]
		if err := c.Update(ctx, plain); err != nil {
			t.Fatal(err)
		}
		if again := get(t, "apps", "db"); again.Generation != before.Generation || !equality.Semantic.DeepEqual(before.Spec.Template, again.Spec.Template) {
			t.Errorf("an update with the plain template changed the stored template")
		}

		// Unrelated changes: replicas, a metadata annotation, a controller-written one.
		if out, err := apply(t, manifest{name: "db", namespace: "apps", labelled: true, replicas: 5,
			annotations: map[string]string{"team": "payments", inject.AnnMaxLag: "1m"}}); err != nil {
			t.Fatalf("kubectl apply: %v\n%s", err, out)
		}
		changed := get(t, "apps", "db")
		if *changed.Spec.Replicas != 5 {
			t.Errorf("replicas = %d, want 5", *changed.Spec.Replicas)
		}
		if !equality.Semantic.DeepEqual(before.Spec.Template, changed.Spec.Template) {
			t.Errorf("an unrelated change changed the pod template")
		}

		// Server-side apply, twice, by another field manager.
		for i := 0; i < 2; i++ {
			if out, err := apply(t, manifest{name: "db", namespace: "apps", labelled: true, replicas: 5,
				annotations: map[string]string{"team": "payments", inject.AnnMaxLag: "1m"}},
				"--server-side", "--force-conflicts", "--field-manager=gitops"); err != nil {
				t.Fatalf("kubectl apply --server-side: %v\n%s", err, out)
			}
		}
		if ssa := get(t, "apps", "db"); !equality.Semantic.DeepEqual(before.Spec.Template, ssa.Spec.Template) {
			t.Errorf("server-side apply changed the pod template")
		}
	})

	t.Run("a new server image is followed by the injected containers", func(t *testing.T) {
		if out, err := apply(t, manifest{name: "db", namespace: "apps", labelled: true, replicas: 5, image: "mariadb:11.4",
			annotations: map[string]string{"team": "payments", inject.AnnMaxLag: "1m"}}); err != nil {
			t.Fatalf("kubectl apply: %v\n%s", err, out)
		}
		sts := get(t, "apps", "db")
		all := append(sts.Spec.Template.Spec.InitContainers, sts.Spec.Template.Spec.Containers...)
		for _, ctr := range all {
			want := "mariadb:11.4"
			if ctr.Name == inject.ContainerInstall {
				want = injectConfig.Image
			}
			if ctr.Image != want {
				t.Errorf("%s runs %s, want %s", ctr.Name, ctr.Image, want)
			}
		}
	})

	t.Run("a bad annotation is refused and nothing is stored", func(t *testing.T) {
		out, err := apply(t, manifest{name: "bad", namespace: "apps", labelled: true,
			annotations: map[string]string{inject.AnnFlavor: "postgres", inject.AnnMaxLag: "soon"}})
		if err == nil {
			t.Fatalf("kubectl apply accepted a bad annotation:\n%s", out)
		}
		for _, want := range []string{`admission webhook "statefulsets.replicant.dev" denied the request`,
			"replicant.dev/flavor", `"postgres"`, "mariadb or mysql",
			"replicant.dev/max-lag", `"soon"`, "such as 30s"} {
			if !strings.Contains(out, want) {
				t.Errorf("kubectl output lacks %q:\n%s", want, out)
			}
		}
		err = c.Get(ctx, client.ObjectKey{Namespace: "apps", Name: "bad"}, &appsv1.StatefulSet{})
		if !apierrors.IsNotFound(err) {
			t.Errorf("refused StatefulSet was stored (get: %v)", err)
		}
		// An update to a bad value is refused too, and the stored object keeps its value.
		out, err = apply(t, manifest{name: "db", namespace: "apps", labelled: true, replicas: 5, image: "mariadb:11.4",
			annotations: map[string]string{"team": "payments", inject.AnnMaxLag: "1m", inject.AnnServerIDOffset: "-3"}})
		if err == nil || !strings.Contains(out, "replicant.dev/server-id-offset") || !strings.Contains(out, `"-3"`) {
			t.Errorf("bad update not refused with its annotation and value: %v\n%s", err, out)
		}
		if _, set := get(t, "apps", "db").Annotations[inject.AnnServerIDOffset]; set {
			t.Errorf("refused update was stored")
		}
	})

	t.Run("annotations that take no effect are warned about and the StatefulSet is stored", func(t *testing.T) {
		out, err := apply(t, manifest{name: "backed-up", namespace: "apps", labelled: true,
			annotations: map[string]string{inject.AnnBackupRetention: "7"}})
		if err != nil {
			t.Fatalf("kubectl apply: %v\n%s", err, out)
		}
		want := "Warning: replicant.dev/backup-retention has no effect without replicant.dev/backup-uri"
		if !strings.Contains(out, want) {
			t.Errorf("kubectl output lacks %q:\n%s", want, out)
		}
		if got := containerNames(get(t, "apps", "backed-up").Spec.Template.Spec.Containers); got != "mariadb,replicant-sidecar" {
			t.Errorf("stored containers = %s", got)
		}
	})

	t.Run("dry-run shows the injection and stores nothing", func(t *testing.T) {
		out, err := apply(t, manifest{name: "dry", namespace: "apps", labelled: true}, "--dry-run=server", "-o", "yaml")
		if err != nil {
			t.Fatalf("kubectl apply --dry-run=server: %v\n%s", err, out)
		}
		if !strings.Contains(out, "name: replicant-sidecar") {
			t.Errorf("dry-run output shows no injection:\n%s", out)
		}
		err = c.Get(ctx, client.ObjectKey{Namespace: "apps", Name: "dry"}, &appsv1.StatefulSet{})
		if !apierrors.IsNotFound(err) {
			t.Errorf("dry-run stored the StatefulSet (get: %v)", err)
		}
	})

	t.Run("unlabelled StatefulSets never reach the webhook", func(t *testing.T) {
		m := manifest{name: "plain", namespace: "apps", annotations: map[string]string{inject.AnnFlavor: "postgres"}}
		if out, err := apply(t, m); err != nil {
			t.Fatalf("kubectl apply: %v\n%s", err, out)
		}
		sts := get(t, "apps", "plain")
		if got := containerNames(sts.Spec.Template.Spec.Containers); got != "mariadb" {
			t.Errorf("unlabelled StatefulSet was changed: containers %s", got)
		}
		if n := hits.calls("apps", "plain"); n != 0 {
			t.Errorf("the webhook was called %d times for an unlabelled StatefulSet", n)
		}
	})

	t.Run("excluded namespaces never reach the webhook", func(t *testing.T) {
		for _, ns := range []string{"replicant-system", "kube-system", "cert-manager"} {
			if out, err := apply(t, manifest{name: "db", namespace: ns, labelled: true}); err != nil {
				t.Fatalf("kubectl apply in %s: %v\n%s", ns, err, out)
			}
			if got := containerNames(get(t, ns, "db").Spec.Template.Spec.Containers); got != "mariadb" {
				t.Errorf("StatefulSet in %s was injected: %s", ns, got)
			}
			if n := hits.calls(ns, "db"); n != 0 {
				t.Errorf("the webhook was called %d times for %s", n, ns)
			}
		}
	})

	t.Run("removing the label removes the injection", func(t *testing.T) {
		sts := get(t, "apps", "db")
		delete(sts.Labels, inject.LabelInject)
		if err := c.Update(ctx, sts); err != nil {
			t.Fatal(err)
		}
		out := get(t, "apps", "db")
		if got := containerNames(out.Spec.Template.Spec.InitContainers) + "|" + containerNames(out.Spec.Template.Spec.Containers); got != "|mariadb" {
			t.Errorf("after opting out: %s", got)
		}
		if _, ok := out.Spec.Template.Labels[inject.LabelCluster]; ok {
			t.Errorf("cluster label left on the template")
		}
	})
}

func containerNames(cs []corev1.Container) string {
	var names []string
	for _, c := range cs {
		names = append(names, c.Name)
	}
	return strings.Join(names, ",")
}

// installWebhookConfiguration creates manifests/webhook.yaml as shipped (selectors,
// policies), pointed at the local server instead of the in-cluster Service.
func installWebhookConfiguration(t *testing.T, ctx context.Context, env *controlplane.Env) {
	t.Helper()
	cfg := shippedWebhookConfiguration(t)
	for i := range cfg.Webhooks {
		cc := &cfg.Webhooks[i].ClientConfig
		url := fmt.Sprintf("https://%s:%d%s", env.WebhookHost, env.WebhookPort, *cc.Service.Path)
		cc.URL, cc.Service, cc.CABundle = &url, nil, env.WebhookCA
	}
	if err := env.Client.Create(ctx, cfg); err != nil {
		t.Fatal(err)
	}
}

// shippedWebhookConfiguration is manifests/webhook.yaml.
func shippedWebhookConfiguration(t *testing.T) *admissionv1.MutatingWebhookConfiguration {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(controlplane.RepoRoot(), "manifests", "webhook.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := &admissionv1.MutatingWebhookConfiguration{}
	if err := yaml.UnmarshalStrict(data, cfg); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// waitForWebhook waits until the apiserver reaches the webhook (server-side dry-run).
func waitForWebhook(t *testing.T, ctx context.Context, c client.Client) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		sts := fixture.StatefulSet("apps", "probe")
		err := c.Create(ctx, sts, client.DryRunAll)
		if err == nil && len(sts.Spec.Template.Spec.Containers) == 2 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("webhook not reachable through the apiserver after 30s: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
