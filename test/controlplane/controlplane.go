// Package controlplane starts a real Kubernetes control plane for tests: etcd (Debian's
// etcd-server) and a kube-apiserver built from the Kubernetes module by `make k8s-bins`,
// through controller-runtime's envtest. Nothing is faked: admission webhooks are called
// by the real apiserver over TLS, objects are validated and defaulted by it.
package controlplane

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"
)

// Env is a running control plane.
type Env struct {
	*envtest.Environment
	Config *rest.Config
	Client client.Client
	Scheme *runtime.Scheme
	// WebhookHost, WebhookPort and WebhookCertDir are where a webhook server under test
	// must listen; WebhookCA is the CA the apiserver trusts for it.
	WebhookHost    string
	WebhookPort    int
	WebhookCertDir string
	WebhookCA      []byte
}

// Options of Start.
type Options struct {
	// CRDs to install before the test runs.
	CRDs []*apiextensionsv1.CustomResourceDefinition
}

// RepoRoot is the root of the replicant module (where go.mod is).
func RepoRoot() string {
	dir, err := os.Getwd()
	if err != nil {
		panic(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			panic("go.mod not found above the working directory")
		}
		dir = parent
	}
}

// AssetsDir is where kube-apiserver, etcd and kubectl are: $KUBEBUILDER_ASSETS (the
// Makefile sets it), else the one version under bin/k8s/.
func AssetsDir() (string, error) {
	if dir := os.Getenv("KUBEBUILDER_ASSETS"); dir != "" {
		return dir, nil
	}
	matches, _ := filepath.Glob(filepath.Join(RepoRoot(), "bin", "k8s", "v*"))
	if len(matches) == 1 {
		return matches[0], nil
	}
	return "", fmt.Errorf("no Kubernetes binaries: run `make k8s-bins` (or `make test`), or set KUBEBUILDER_ASSETS")
}

// Tool is the path of a tool the Makefile links under bin/ (helm, kubectl), or from
// the environment variable env when it is set.
func Tool(t testing.TB, name, env string) string {
	t.Helper()
	if p := os.Getenv(env); p != "" {
		return p
	}
	p := filepath.Join(RepoRoot(), "bin", name)
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("%s not found at %s: run `make tools` (or `make test`), or set %s", name, p, env)
	}
	return p
}

// Start starts etcd and kube-apiserver and stops them when the test ends.
func Start(t testing.TB, opts Options) *Env {
	t.Helper()
	assets, err := AssetsDir()
	if err != nil {
		t.Fatal(err)
	}
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	if err := apiextensionsv1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	env := &envtest.Environment{
		BinaryAssetsDirectory:    assets,
		ControlPlaneStartTimeout: 60 * time.Second,
		ControlPlaneStopTimeout:  30 * time.Second,
		CRDInstallOptions:        envtest.CRDInstallOptions{CRDs: opts.CRDs, Scheme: scheme},
		// No webhook configuration is installed by envtest: tests create the real one
		// from manifests/. This only makes envtest prepare a serving certificate.
		WebhookInstallOptions: envtest.WebhookInstallOptions{LocalServingHost: "127.0.0.1"},
		ErrorIfCRDPathMissing: true,
	}
	cfg, err := env.Start()
	if err != nil {
		t.Fatalf("start control plane from %s: %v", assets, err)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Logf("stop control plane: %v", err)
		}
	})
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	w := env.WebhookInstallOptions
	return &Env{
		Environment: env, Config: cfg, Client: c, Scheme: scheme,
		WebhookHost: w.LocalServingHost, WebhookPort: w.LocalServingPort,
		WebhookCertDir: w.LocalServingCertDir, WebhookCA: w.LocalServingCAData,
	}
}

// Kubectl runs the real kubectl against the control plane, as a user would, and
// returns its combined output.
func (e *Env) Kubectl(ctx context.Context, stdin []byte, args ...string) (string, error) {
	kubectl := e.ControlPlane.KubeCtl()
	full := append(kubectl.Opts, args...)
	cmd := exec.CommandContext(ctx, kubectl.Path, full...)
	cmd.Stdin = bytes.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// LoadCRDs reads CustomResourceDefinitions from YAML files. Labels are dropped: some
// published CRD files carry Helm template text in them.
func LoadCRDs(t testing.TB, paths ...string) []*apiextensionsv1.CustomResourceDefinition {
	t.Helper()
	var crds []*apiextensionsv1.CustomResourceDefinition
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatalf("read CRD: %v", err)
		}
		for _, doc := range SplitYAML(data) {
			crd := &apiextensionsv1.CustomResourceDefinition{}
			if err := yaml.Unmarshal(doc, crd); err != nil {
				t.Fatalf("decode CRD in %s: %v", p, err)
			}
			if crd.Kind != "CustomResourceDefinition" {
				continue
			}
			crd.Labels = nil
			crds = append(crds, crd)
		}
	}
	return crds
}

// SplitYAML splits a multi-document YAML stream, dropping documents that hold only
// comments or nothing.
func SplitYAML(data []byte) [][]byte {
	reader := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var docs [][]byte
	for {
		doc, err := reader.Read()
		if err != nil { // io.EOF, or a stream too broken to split: the decoder reports it
			return docs
		}
		var obj map[string]any
		if yaml.Unmarshal(doc, &obj) == nil && len(obj) > 0 {
			docs = append(docs, doc)
		}
	}
}
