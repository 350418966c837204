package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/replicant-dev/replicant/inject"
	"github.com/replicant-dev/replicant/test/controlplane"
	"github.com/replicant-dev/replicant/test/fixture"
)

// TestManagerRunsWithItsOwnRBAC starts `replicant manager` in-process against a real
// apiserver as the replicant ServiceAccount, holding only the RBAC of manifests/: it
// must learn its image from its own Pod, win the leader Lease, report ready, serve
// the webhook the apiserver calls, and give the Lease up when stopped.
func TestManagerRunsWithItsOwnRBAC(t *testing.T) {
	env := controlplane.Start(t, controlplane.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := env.Client
	const ns = "replicant-system"

	for _, name := range []string{ns, "apps"} {
		if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}); err != nil {
			t.Fatal(err)
		}
	}
	createFromFile(t, ctx, c, filepath.Join(controlplane.RepoRoot(), "manifests", "rbac.yaml"))
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "replicant-7d9f-abcde", Namespace: ns},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "manager", Image: "registry.local/replicant:v1.2.3"}}},
	}
	if err := c.Create(ctx, pod); err != nil {
		t.Fatal(err)
	}
	t.Setenv("POD_NAMESPACE", ns)
	t.Setenv("POD_NAME", pod.Name)
	t.Setenv("REPLICANT_IMAGE", "")

	// A kubeconfig for the ServiceAccount: the admin's credentials, impersonating it.
	kubeconfig := writeKubeconfig(t, env.Config, ns, "system:serviceaccount:"+ns+":replicant")

	probeAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	mgrCtx, stopManager := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- runManager(mgrCtx, managerFlags{
			kubeconfig: kubeconfig, metricsAddr: "0", probeAddr: probeAddr, leaderElect: true,
			leaderElectionNamespace: ns, webhookHost: env.WebhookHost, webhookPort: env.WebhookPort,
			webhookCertDir: env.WebhookCertDir, imagePullPolicy: "IfNotPresent",
			probeInterval: time.Second, sourceAddressing: "report-host",
		})
	}()
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			stopManager()
			<-done
		}
	})

	eventually(t, ctx, "manager ready", func() error {
		select {
		case err := <-done:
			stopped = true
			t.Fatalf("manager exited: %v", err)
		default:
		}
		resp, err := http.Get("http://" + probeAddr + "/readyz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("readyz: %s", resp.Status)
		}
		return nil
	})
	lease := &coordinationv1.Lease{}
	eventually(t, ctx, "leader lease held", func() error {
		if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "replicant-manager.replicant.dev"}, lease); err != nil {
			return err
		}
		if lease.Spec.HolderIdentity == nil || *lease.Spec.HolderIdentity == "" {
			return fmt.Errorf("no holder")
		}
		return nil
	})

	// The apiserver calls the manager's webhook; the image injected is the pod's own.
	hook := &admissionv1.MutatingWebhookConfiguration{}
	data, err := os.ReadFile(filepath.Join(controlplane.RepoRoot(), "manifests", "webhook.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.UnmarshalStrict(data, hook); err != nil {
		t.Fatal(err)
	}
	url := fmt.Sprintf("https://%s:%d%s", env.WebhookHost, env.WebhookPort, *hook.Webhooks[0].ClientConfig.Service.Path)
	hook.Webhooks[0].ClientConfig = admissionv1.WebhookClientConfig{URL: &url, CABundle: env.WebhookCA}
	if err := c.Create(ctx, hook); err != nil {
		t.Fatal(err)
	}
	sts := &appsv1.StatefulSet{}
	eventually(t, ctx, "webhook injects through the manager", func() error {
		sts = fixture.StatefulSet("apps", "db")
		if err := c.Create(ctx, sts, client.DryRunAll); err != nil {
			return err
		}
		if len(sts.Spec.Template.Spec.InitContainers) == 0 {
			return fmt.Errorf("not injected yet")
		}
		return nil
	})
	if got := sts.Spec.Template.Spec.InitContainers[0]; got.Name != inject.ContainerInstall || got.Image != "registry.local/replicant:v1.2.3" {
		t.Errorf("injected %s with image %s, want replicant-install with the manager pod's image", got.Name, got.Image)
	}

	// The controller, with only the shipped RBAC, takes a labelled StatefulSet over:
	// its credentials Secret and both Services appear.
	real := fixture.StatefulSet("apps", "db")
	if err := c.Create(ctx, real); err != nil {
		t.Fatal(err)
	}
	eventually(t, ctx, "Secret and Services created by the controller", func() error {
		for _, obj := range []client.Object{&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "db-replicant"}},
			&corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "db-master"}}, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "db-replicas"}}} {
			if err := c.Get(ctx, client.ObjectKey{Namespace: "apps", Name: obj.GetName()}, obj); err != nil {
				return err
			}
		}
		return nil
	})

	stopManager()
	stopped = true
	if err := <-done; err != nil {
		t.Errorf("manager stopped with %v", err)
	}
	if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "replicant-manager.replicant.dev"}, lease); err != nil {
		t.Fatal(err)
	}
	if lease.Spec.HolderIdentity != nil && *lease.Spec.HolderIdentity != "" {
		t.Errorf("stopped manager still holds the lease: %s", *lease.Spec.HolderIdentity)
	}

	// The webhook is down now (nothing serves it; failurePolicy Fail): a user's
	// change of the StatefulSet is refused, the manager's own writes are not (its
	// matchConditions leave them out), and its RBAC lets it keep its state.
	if err := c.Get(ctx, client.ObjectKeyFromObject(real), real); err != nil {
		t.Fatal(err)
	}
	userPatch := client.MergeFrom(real.DeepCopy())
	if real.Annotations == nil {
		real.Annotations = map[string]string{}
	}
	real.Annotations[inject.AnnTakeoverTo] = "db-1"
	if err := c.Patch(ctx, real, userPatch); err == nil || !strings.Contains(err.Error(), "statefulsets.replicant.dev") {
		t.Errorf("a user's patch with the webhook down: %v, want refused by the webhook", err)
	}
	saConfig := rest.CopyConfig(env.Config)
	saConfig.Impersonate = rest.ImpersonationConfig{UserName: "system:serviceaccount:" + ns + ":replicant"}
	sa, err := client.New(saConfig, client.Options{Scheme: env.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	if err := sa.Get(ctx, client.ObjectKeyFromObject(real), real); err != nil {
		t.Fatal(err)
	}
	managerPatch := client.MergeFrom(real.DeepCopy())
	if real.Annotations == nil {
		real.Annotations = map[string]string{}
	}
	real.Annotations[inject.AnnLastOperation] = `{"op":"takeover","result":"ok"}`
	if err := sa.Patch(ctx, real, managerPatch); err != nil {
		t.Errorf("the manager's patch with the webhook down: %v", err)
	}
	state := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "db-replicant-state", Namespace: "apps"}, Data: map[string]string{"state": "{}"}}
	if err := sa.Create(ctx, state); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Errorf("the manager cannot create its state: %v", err)
	}
}

func TestManagerRefusesABadPullPolicy(t *testing.T) {
	err := runManager(context.Background(), managerFlags{image: "x", imagePullPolicy: "Sometimes"})
	if err == nil || err.Error() != `--replicant-image-pull-policy "Sometimes": allowed: Always, IfNotPresent, Never` {
		t.Fatalf("err = %v", err)
	}
}

func TestManagerRefusesAWriteLeaseShorterThanTwoProbes(t *testing.T) {
	err := runManager(context.Background(), managerFlags{imagePullPolicy: "IfNotPresent", probeInterval: time.Second, writeLease: 1500 * time.Millisecond})
	if err == nil || err.Error() != "--write-lease 1.5s: allowed: at least twice --probe-interval (1s, it is renewed every probe) and at most 1m" {
		t.Fatalf("err = %v", err)
	}
}

func createFromFile(t *testing.T, ctx context.Context, c client.Client, path string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, doc := range controlplane.SplitYAML(data) {
		u := &unstructured.Unstructured{}
		if err := yaml.Unmarshal(doc, &u.Object); err != nil {
			t.Fatal(err)
		}
		if err := c.Create(ctx, u); err != nil {
			t.Fatalf("create %s %s: %v", u.GetKind(), u.GetName(), err)
		}
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// eventually retries check every 200ms for at most 60s.
func eventually(t *testing.T, ctx context.Context, what string, check func() error) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			t.Fatalf("%s: not after 60s: %v", what, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
