package e2e_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/replicant-dev/replicant/test/controlplane"
)

var (
	root       = controlplane.RepoRoot()
	kubeconfig string
	k8s        client.Client
)

func TestE2E(t *testing.T) {
	if os.Getenv("REPLICANT_E2E") != "1" {
		t.Skip("the end-to-end suite runs a real cluster as root: `make e2e` or `make test` (REPLICANT_E2E=1)")
	}
	RegisterFailHandler(Fail)
	RunSpecs(t, "replicant end to end")
}

// cluster runs test/cluster/cluster.sh with the suite's output.
func cluster(args ...string) error {
	cmd := exec.Command(filepath.Join(root, "test", "cluster", "cluster.sh"), args...)
	cmd.Stdout, cmd.Stderr = GinkgoWriter, GinkgoWriter
	return cmd.Run()
}

var _ = BeforeSuite(func() {
	for _, bin := range []string{"replicant", "kubectl", "helm", "images/replicant.tar"} {
		Expect(filepath.Join(root, "bin", bin)).To(BeAnExistingFile(), "run `make cluster-build` first")
	}
	DeferCleanup(func() {
		if CurrentSpecReport().Failed() || os.Getenv("REPLICANT_E2E_KEEP") == "1" {
			fmt.Fprintln(GinkgoWriter, "cluster kept: REPLICANT_E2E_KEEP=1 or a failure; `make demo-down` removes it")
			if os.Getenv("REPLICANT_E2E_KEEP") == "1" {
				return
			}
		}
		Expect(cluster("down")).To(Succeed())
	})
	Expect(cluster("up")).To(Succeed())

	out, err := exec.Command(filepath.Join(root, "test", "cluster", "cluster.sh"), "env").Output()
	Expect(err).NotTo(HaveOccurred())
	kubeconfig = strings.TrimPrefix(strings.TrimSpace(string(out)), "export KUBECONFIG=")
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	Expect(err).NotTo(HaveOccurred())
	k8s, err = client.New(cfg, client.Options{})
	Expect(err).NotTo(HaveOccurred())

	By("installing replicant from manifests/ as a user would")
	mustKubectl("apply", "-k", "manifests/")
	_, err = run(3*time.Minute, filepath.Join(root, "bin", "kubectl"), "-n", "replicant-system",
		"rollout", "status", "deployment/replicant", "--timeout=170s")
	Expect(err).NotTo(HaveOccurred())
	Eventually(func() (string, error) {
		return kubectl("get", "mutatingwebhookconfiguration", "replicant", "-o", "jsonpath={.webhooks[0].clientConfig.caBundle}")
	}).WithTimeout(2*time.Minute).WithPolling(time.Second).ShouldNot(BeEmpty(), "the manager fills the webhook's CA bundle from cert-manager's CA")

	By("a client pod with the MariaDB client")
	mustKubectl("run", "client", "--image=mariadb:10.11", "--restart=Never", "--command", "--", "sleep", "7200")
	mustKubectl("wait", "--for=condition=Ready", "pod/client", "--timeout=90s")
})

var _ = ReportAfterEach(func(r SpecReport) {
	if !r.Failed() || kubeconfig == "" {
		return
	}
	// What a person would look at first.
	for _, args := range [][]string{
		{"get", "pods", "-A", "-o", "wide", "-L", "replicant.dev/role,replicant.dev/healthy"},
		{"get", "statefulset", sts, "-o", "jsonpath={.metadata.annotations}"},
		{"get", "configmap", sts + "-replicant-state", "-o", "jsonpath={.data.state}"},
		{"get", "events", "--sort-by=.lastTimestamp"},
		{"-n", "replicant-system", "logs", "deployment/replicant", "--tail=80"},
	} {
		_, _ = kubectl(args...)
	}
	// Everything else, kept with the component logs after the cluster is removed.
	_ = cluster("diagnose")
})
