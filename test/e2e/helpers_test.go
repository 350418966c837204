package e2e_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/replicant-dev/replicant/failover"
	"github.com/replicant-dev/replicant/inject"
)

const (
	ns       = "default"
	appPass  = "demo-app-secret" // docs/examples/mariadb.yaml and mysql.yaml
	rootPass = "demo-root-secret"
)

// The StatefulSet the specs work on: the MariaDB story's (docs/examples/mariadb.yaml),
// or the MySQL one's (docs/examples/mysql.yaml) while that story runs (useStory).
var (
	sts         = "db"
	headless    = "mysql"   // its headless Service
	dbContainer = "mariadb" // the server's container
	serverCLI   = "mariadb" // the client in that container's image
)

// useStory points the helpers at another StatefulSet until the calling container
// ends.
func useStory(name, service, container, cli string) {
	savedSts, savedHeadless, savedContainer, savedCLI := sts, headless, dbContainer, serverCLI
	sts, headless, dbContainer, serverCLI = name, service, container, cli
	DeferCleanup(func() { sts, headless, dbContainer, serverCLI = savedSts, savedHeadless, savedContainer, savedCLI })
}

// alias is the cluster's name for the CLI: <sts>.<namespace>.
func alias() string { return sts + "." + ns }

// podN is the StatefulSet's pod with ordinal i.
func podN(i int) string { return fmt.Sprintf("%s-%d", sts, i) }

// instance is that pod's server as topology names it: <pod>.<service>.<namespace>:3306.
func instance(i int) string { return fmt.Sprintf("%s.%s.%s:3306", podN(i), headless, ns) }

// run runs a command with the cluster's kubeconfig and returns its combined output.
func run(timeout time.Duration, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	fmt.Fprintf(GinkgoWriter, "$ %s %s\n%s", filepath.Base(name), strings.Join(args, " "), out.String())
	if err != nil {
		return out.String(), fmt.Errorf("%s %s: %w: %s", filepath.Base(name), strings.Join(args, " "), err, out.String())
	}
	return out.String(), nil
}

func kubectl(args ...string) (string, error) {
	return run(2*time.Minute, filepath.Join(root, "bin", "kubectl"), args...)
}

func mustKubectl(args ...string) string {
	GinkgoHelper()
	out, err := kubectl(args...)
	Expect(err).NotTo(HaveOccurred())
	return out
}

// replicant runs the CLI binary the Makefile built, as a user would.
func replicant(args ...string) (string, error) {
	return run(3*time.Minute, filepath.Join(root, "bin", "replicant"), args...)
}

// sql runs a query as the application user (no SUPER: read_only applies) from the
// client pod, through host (a Service or a pod's DNS name).
func sql(host, query string) (string, error) {
	out, err := kubectl("exec", "client", "--", "mariadb", "-h", host, "-uapp", "-p"+appPass,
		"--connect-timeout=2", "-N", "-s", "shop", "-e", query)
	return strings.TrimSpace(out), err
}

// rootSQL runs a query as root on one pod's server, over its local socket.
func rootSQL(pod, query string) (string, error) {
	out, err := kubectl("exec", pod, "-c", dbContainer, "--", serverCLI, "-uroot", "-p"+rootPass, "-N", "-s", "-e", query)
	// MySQL's client warns on stderr about the password on its command line.
	var lines []string
	for _, l := range strings.Split(out, "\n") {
		if !strings.Contains(l, "[Warning] Using a password on the command line") {
			lines = append(lines, l)
		}
	}
	return strings.TrimSpace(strings.Join(lines, "\n")), err
}

func dbPods() []corev1.Pod {
	GinkgoHelper()
	var list corev1.PodList
	Expect(k8s.List(context.Background(), &list, client.InNamespace(ns), client.MatchingLabels{"app": sts})).To(Succeed())
	pods := list.Items
	sort.Slice(pods, func(i, j int) bool { return pods[i].Name < pods[j].Name })
	return pods
}

// settled is nil once n pods run, all containers Ready, exactly one master and every
// other pod a healthy replica; otherwise it describes what is not there yet.
func settled(n int) error {
	var list corev1.PodList
	if err := k8s.List(context.Background(), &list, client.InNamespace(ns), client.MatchingLabels{"app": sts}); err != nil {
		return err
	}
	var masters, replicas []string
	var state []string
	for _, p := range list.Items {
		ready := p.DeletionTimestamp.IsZero() && len(p.Status.ContainerStatuses) > 0
		for _, c := range p.Status.ContainerStatuses {
			ready = ready && c.Ready
		}
		role, healthy := p.Labels[inject.LabelRole], p.Labels[inject.LabelHealthy]
		state = append(state, fmt.Sprintf("%s=%s/%s/ready:%v", p.Name, role, healthy, ready))
		switch {
		case ready && role == "master" && healthy == "yes":
			masters = append(masters, p.Name)
		case ready && role == "replica" && healthy == "yes":
			replicas = append(replicas, p.Name)
		}
	}
	if len(list.Items) != n || len(masters) != 1 || len(replicas) != n-1 {
		return fmt.Errorf("want %d pods, 1 master and %d healthy replicas; have %s", n, n-1, strings.Join(state, " "))
	}
	return nil
}

// master is the pod labelled master ("" for none, as during a failover).
func master() string {
	GinkgoHelper()
	for _, p := range dbPods() {
		if p.Labels[inject.LabelRole] == "master" {
			return p.Name
		}
	}
	return ""
}

// serviceEndpoints lists the pod names behind a Service (from its EndpointSlices).
func serviceEndpoints(service string) []string {
	out, err := kubectl("get", "endpointslices", "-l", "kubernetes.io/service-name="+service,
		"-o", `jsonpath={range .items[*].endpoints[*]}{.targetRef.name}{" "}{end}`)
	if err != nil {
		return nil
	}
	names := strings.Fields(out)
	sort.Strings(names)
	return names
}

func cloneLog(pod string) string {
	GinkgoHelper()
	return mustKubectl("logs", pod, "-c", "replicant-clone")
}

// writer inserts one row per attempt through <sts>-master from the client pod's network
// namespace (a new connection each time, 100 ms apart, each bounded to 5 s: a commit
// that waits for an acknowledgement longer is abandoned, not acknowledged) and
// reports which attempts were acknowledged. It runs on the node (hostLoop) and goes
// to the Service's cluster IP, so it keeps writing while the apiserver is down.
type writer struct {
	prefix string
	loop   *hostLoop
}

func startWriter(prefix string, attempts int) *writer {
	GinkgoHelper()
	var svc corev1.Service
	Expect(k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: sts + "-master"}, &svc)).To(Succeed())
	script := fmt.Sprintf(`for i in $(seq 1 %d); do
  if out=$(inPod %s client timeout 5 mariadb -h %s -uapp -p%s --connect-timeout=1 -N -s shop \
      -e "INSERT INTO orders (note, server) VALUES ('%s-$i', @@hostname); SELECT @@hostname" 2>/dev/null); then
    echo "$(date +%%s%%3N) ok $i $out"
  else
    echo "$(date +%%s%%3N) fail $i"
  fi
  sleep 0.1
done`, attempts, ns, svc.Spec.ClusterIP, appPass, prefix)
	return &writer{prefix: prefix, loop: startHostLoop(script)}
}

// wait returns the acknowledged attempt numbers and the servers that took them.
func (w *writer) wait() (acked []string, servers map[string]int, lines []string) {
	GinkgoHelper()
	servers = map[string]int{}
	lines = w.loop.lines()
	for _, l := range lines {
		f := strings.Fields(l)
		if len(f) >= 4 && f[1] == "ok" {
			acked = append(acked, fmt.Sprintf("'%s-%s'", w.prefix, f[2]))
			servers[f[3]]++
		}
	}
	return acked, servers, lines
}

// expectRowsEverywhere checks that every acknowledged row is on every server.
func expectRowsEverywhere(acked []string) {
	GinkgoHelper()
	query := fmt.Sprintf("SELECT COUNT(*) FROM shop.orders WHERE note IN (%s)", strings.Join(acked, ","))
	for _, p := range dbPods() {
		Eventually(func() (string, error) { return rootSQL(p.Name, query) }).
			WithTimeout(30*time.Second).WithPolling(time.Second).
			Should(Equal(fmt.Sprint(len(acked))), "acknowledged rows on %s", p.Name)
	}
}

func eventuallySettled(n int, timeout time.Duration) {
	GinkgoHelper()
	Eventually(func() error { return settled(n) }).WithTimeout(timeout).WithPolling(time.Second).Should(Succeed())
}

// readExample is a file of docs/examples.
func readExample(name string) string {
	GinkgoHelper()
	data, err := os.ReadFile(filepath.Join(root, "docs", "examples", name))
	Expect(err).NotTo(HaveOccurred())
	return string(data)
}

// runStdin runs kubectl with stdin.
func runStdin(stdin string, args ...string) (string, error) {
	cmd := exec.Command(filepath.Join(root, "bin", "kubectl"), args...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	fmt.Fprintf(GinkgoWriter, "$ kubectl %s\n%s", strings.Join(args, " "), out)
	return string(out), err
}

func helmBin() string { return filepath.Join(root, "bin", "helm") }

// podStatus is the controller's status annotation on a pod ("" when absent).
func podStatus(pod string) string {
	out, _ := kubectl("get", "pod", pod, "-o", `jsonpath={.metadata.annotations.replicant\.dev/status}`)
	return out
}

// lastOperation is the controller's record of its last failover or takeover.
func lastOperation() failover.Operation {
	GinkgoHelper()
	var op failover.Operation
	raw := mustKubectl("get", "statefulset", sts, "-o", `jsonpath={.metadata.annotations.replicant\.dev/last-operation}`)
	Expect(json.Unmarshal([]byte(raw), &op)).To(Succeed(), "last-operation %q", raw)
	return op
}

func dbPodLabel(pod, label string) string {
	for _, p := range dbPods() {
		if p.Name == pod {
			return p.Labels[label]
		}
	}
	return ""
}

// evict asks the Eviction API to evict a pod, as kubectl drain does.
func evict(pod string) (string, error) {
	eviction := fmt.Sprintf(`{"apiVersion":"policy/v1","kind":"Eviction","metadata":{"name":%q,"namespace":%q}}`, pod, ns)
	return runStdin(eviction, "create", "--raw", "/api/v1/namespaces/"+ns+"/pods/"+pod+"/eviction", "-f", "-")
}

// podRevisions is each database pod's StatefulSet revision, and the revision the
// StatefulSet wants them at.
func podRevisions() (pods map[string]string, update string) {
	GinkgoHelper()
	pods = map[string]string{}
	for _, p := range dbPods() {
		pods[p.Name] = p.Labels["controller-revision-hash"]
	}
	update = mustKubectl("get", "statefulset", sts, "-o", "jsonpath={.status.updateRevision}")
	return pods, update
}

// eventsSince lists the messages of the Events with reason since t, oldest first.
func eventsSince(reason string, t time.Time) []string {
	GinkgoHelper()
	var list corev1.EventList
	Expect(k8s.List(context.Background(), &list, client.InNamespace(ns), client.MatchingFields{"reason": reason})).To(Succeed())
	sort.Slice(list.Items, func(i, j int) bool { return list.Items[i].LastTimestamp.Before(&list.Items[j].LastTimestamp) })
	var out []string
	for _, e := range list.Items {
		if !e.LastTimestamp.Time.Before(t.Truncate(time.Second)) {
			out = append(out, e.Message)
		}
	}
	return out
}

// s3Query is what a backup URI on the example S3 server (docs/examples/s3.yaml) needs.
const s3Query = "?endpoint=http://s3.default.svc.cluster.local:9000&region=us-east-1&use_path_style=true"

// startS3 runs the example S3 server for the rest of the spec (its bucket "backups",
// its credentials in the Secret bucket-creds).
func startS3() {
	GinkgoHelper()
	s3 := readExample("s3.yaml")
	_, err := runStdin(s3, "apply", "-f", "-")
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(func() { _, _ = runStdin(s3, "delete", "-f", "-", "--ignore-not-found") })
	mustKubectl("rollout", "status", "deployment/s3", "--timeout=120s")
}

// applyCopy applies the story's StatefulSet from example (its StatefulSet, and all
// that follows it in the file) as name, labelled app=name, with a headless Service of
// its own named name, the given replicas, server image and annotations; it is removed
// with its volumes when the spec ends. It returns the StatefulSet's YAML.
func applyCopy(example, name string, replicas int, image string, annotations map[string]string) string {
	GinkgoHelper()
	stsYAML := example[strings.Index(example, "apiVersion: apps/v1\nkind: StatefulSet"):]
	stsYAML = regexp.MustCompile(`(?m)^  replicas: \d+$`).ReplaceAllString(stsYAML, fmt.Sprintf("  replicas: %d", replicas))
	stsYAML = regexp.MustCompile(`(?m)^(\s+image: )\S+$`).ReplaceAllString(stsYAML, "${1}"+image)
	stsYAML = strings.NewReplacer("name: "+sts+"\n", "name: "+name+"\n", "app: "+sts+"\n", "app: "+name+"\n",
		"serviceName: "+headless+"\n", "serviceName: "+name+"\n").Replace(stsYAML)
	var ann strings.Builder
	for _, k := range slices.Sorted(maps.Keys(annotations)) {
		fmt.Fprintf(&ann, "    %s: %q\n", k, annotations[k])
	}
	if ann.Len() > 0 {
		stsYAML = strings.Replace(stsYAML, "metadata:\n  name: "+name+"\n", "metadata:\n  name: "+name+"\n  annotations:\n"+ann.String(), 1)
	}
	DeferCleanup(func() {
		_, _ = kubectl("delete", "statefulset", name, "--wait=true", "--timeout=90s")
		_, _ = kubectl("delete", "service", name, "--ignore-not-found")
		_, _ = kubectl("delete", "pvc", "-l", "app="+name, "--ignore-not-found")
	})
	_, err := runStdin(`apiVersion: v1
kind: Service
metadata:
  name: `+name+`
spec:
  clusterIP: None
  publishNotReadyAddresses: true
  selector:
    app: `+name+`
  ports:
    - name: mysql
      port: 3306
---
`+stsYAML, "apply", "-f", "-")
	Expect(err).NotTo(HaveOccurred())
	return stsYAML
}

// rolesOf is "<pod>=<role>/<healthy> ..." of the pods labelled app=app.
func rolesOf(app string) string {
	out, _ := kubectl("get", "pods", "-l", "app="+app, "-o", `jsonpath={range .items[*]}{.metadata.name}={.metadata.labels.replicant\.dev/role}/{.metadata.labels.replicant\.dev/healthy} {end}`)
	return strings.TrimSpace(out)
}
