package e2e_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/replicant-dev/replicant/failover"
)

// hostLoop runs a bash loop on the node itself, not through kubectl exec: it goes on
// while the kube-apiserver is down. A loop that needs a pod's network (a client in
// the pod's partition, a poll of its server over loopback) enters the pod's network
// namespace with nsenter, as `inPod NAMESPACE POD cmd…`; the namespace is looked up
// from containerd again when a command in it fails (the pod may have been re-created).
type hostLoop struct {
	cmd  *exec.Cmd
	mu   sync.Mutex
	out  bytes.Buffer
	done chan struct{}
}

// hostLoopPrelude defines inPod for the loops' scripts.
const hostLoopPrelude = `declare -A netns
inPod() {
  local key="$1/$2" rc
  [ -n "${netns[$key]:-}" ] || netns[$key]=$("$CLUSTER" pid "$1" "$2" 2>/dev/null) || { unset "netns[$key]"; return 1; }
  nsenter -t "${netns[$key]}" -n "${@:3}" && return 0
  rc=$?; unset "netns[$key]"; return $rc
}
`

func (l *hostLoop) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.out.Write(p)
}

func startHostLoop(script string) *hostLoop {
	l := &hostLoop{done: make(chan struct{})}
	l.cmd = exec.Command("bash", "-c", hostLoopPrelude+script)
	l.cmd.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig, "CLUSTER="+filepath.Join(root, "test", "cluster", "cluster.sh"))
	l.cmd.Stdout = l
	Expect(l.cmd.Start()).To(Succeed())
	go func() { _ = l.cmd.Wait(); close(l.done) }()
	DeferCleanup(func() { _ = l.cmd.Process.Kill(); <-l.done })
	return l
}

// loopDeadline bounds the wait for a host loop's end. Loops are bounded by their
// attempt count; each attempt enters a pod's network namespace, which under the full
// suite's load takes several times longer than alone (make test found a 700-attempt
// writer still running 3 minutes after the failover it measured).
const loopDeadline = 8 * time.Minute

func (l *hostLoop) lines() []string {
	GinkgoHelper()
	Eventually(l.done).WithTimeout(loopDeadline).Should(BeClosed())
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Split(strings.TrimSpace(l.out.String()), "\n")
}

// sample is one poll: when, and whether the server was writable.
type sample struct {
	at       int64
	writable bool
	answered bool
}

// result merges the pods' timelines: at each poll of any pod, how many servers' last
// answers said writable; it returns the polls, the instants with two or more
// writable servers, and for each pod its samples.
func (c *readOnlyChecker) result() (polls, doubleWritable int, timelines map[string][]sample) {
	GinkgoHelper()
	Eventually(c.done).WithTimeout(loopDeadline).Should(BeClosed())
	type ev struct {
		at  int64
		pod string
		s   sample
	}
	var all []ev
	c.mu.Lock()
	timelines = c.timelines
	c.mu.Unlock()
	for pod, tl := range timelines {
		for _, s := range tl {
			all = append(all, ev{s.at, pod, s})
		}
	}
	sort.Slice(all, func(i, j int) bool { return all[i].at < all[j].at })
	last := map[string]bool{}
	for _, e := range all {
		if e.s.answered {
			last[e.pod] = e.s.writable
		}
		n := 0
		for _, w := range last {
			if w {
				n++
			}
		}
		polls++
		if n > 1 {
			doubleWritable++
		}
	}
	return polls, doubleWritable, timelines
}

// startLocalWriter inserts rows on pod's own server through 127.0.0.1 as the
// application user, in the pod's network namespace: a client in its partition,
// which never looks for another master. Every statement is bounded (a commit that
// waits for an acknowledgement is abandoned after 5 s: not acknowledged).
func startLocalWriter(pod, prefix string, seconds int) *hostLoop {
	return startHostLoop(fmt.Sprintf(`end=$((SECONDS+%d)); i=0; while [ $SECONDS -lt $end ]; do
  i=$((i+1))
  if inPod %s %s timeout 5 mariadb -h127.0.0.1 -uapp -p%s --connect-timeout=1 -N -s shop \
      -e "INSERT INTO orders (note, server) VALUES ('%s-$i', @@hostname)" 2>/dev/null; then
    echo "$(date +%%s%%3N) ok $i"
  else
    echo "$(date +%%s%%3N) fail $i"
  fi
  sleep 0.05
done`, seconds, ns, pod, appPass, prefix))
}

// acknowledged returns the rows a local writer got acknowledged, as SQL literals, and
// when the last one was.
func acknowledged(l *hostLoop, prefix string) (rows []string, lastAt int64) {
	GinkgoHelper()
	for _, line := range l.lines() {
		f := strings.Fields(line)
		if len(f) == 3 && f[1] == "ok" {
			rows = append(rows, fmt.Sprintf("'%s-%s'", prefix, f[2]))
			lastAt, _ = strconv.ParseInt(f[0], 10, 64)
		}
	}
	return rows, lastAt
}

// missingOn counts the rows of acked that pod's server does not have.
func missingOn(pod string, acked []string) int {
	GinkgoHelper()
	if len(acked) == 0 {
		return 0
	}
	query := fmt.Sprintf("SELECT COUNT(*) FROM shop.orders WHERE note IN (%s)", strings.Join(acked, ","))
	out, err := rootSQL(pod, query)
	Expect(err).NotTo(HaveOccurred())
	n, err := strconv.Atoi(out)
	Expect(err).NotTo(HaveOccurred())
	return len(acked) - n
}

func partition(pod, onOff string) {
	GinkgoHelper()
	Expect(cluster("partition", ns, pod, onOff)).To(Succeed())
}

// managerLeader is the manager pod holding the leader Lease.
func managerLeader() string {
	GinkgoHelper()
	holder := mustKubectl("-n", "replicant-system", "get", "lease", "replicant-manager.replicant.dev", "-o", "jsonpath={.spec.holderIdentity}")
	return strings.SplitN(strings.TrimSpace(holder), "_", 2)[0]
}

// rejoinedOrQuarantined says how an old master came back: "rejoined" (the cluster is
// settled with it as a healthy replica), "quarantined" (it holds errant
// transactions), or "" (not yet).
func rejoinedOrQuarantined(old string) string {
	if err := settled(3); err == nil {
		return "rejoined"
	}
	if strings.Contains(podStatus(old), "errantGTIDs") {
		return "quarantined"
	}
	return ""
}

// firstReadOnlyAfter is how long after t the pod's server was first seen read-only
// (-1 if never).
func firstReadOnlyAfter(timeline []sample, t time.Time) time.Duration {
	for _, s := range timeline {
		if s.at > t.UnixMilli() && s.answered && !s.writable {
			return time.Duration(s.at-t.UnixMilli()) * time.Millisecond
		}
	}
	return -1
}

// writableBetween lists the pods, other than except, seen writable between from and to.
func writableBetween(timelines map[string][]sample, except string, from, to time.Time) []string {
	var pods []string
	for pod, tl := range timelines {
		if pod == except {
			continue
		}
		for _, s := range tl {
			if s.at > from.UnixMilli() && s.at < to.UnixMilli() && s.writable {
				pods = append(pods, pod)
				break
			}
		}
	}
	return pods
}

// writerNumbers reads a writer's lines: attempts that failed, and the longest time
// between two acknowledged writes (the outage clients saw).
func writerNumbers(lines []string) (failed int, outage time.Duration) {
	var last int64
	for _, l := range lines {
		f := strings.Fields(l)
		if len(f) < 2 {
			continue
		}
		at, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			continue
		}
		switch f[1] {
		case "fail":
			failed++
		case "ok":
			if last > 0 && time.Duration(at-last)*time.Millisecond > outage {
				outage = time.Duration(at-last) * time.Millisecond
			}
			last = at
		}
	}
	return failed, outage
}

// awaitNewMaster waits until a server other than old is master. Inside the
// anti-flapping window of an earlier spec's failover the controller holds and says
// so (FailoverHeld); then a person asks, as orchestrator's users do. It says which.
func awaitNewMaster(old string, timeout time.Duration) string {
	GinkgoHelper()
	since, how := time.Now(), ""
	Eventually(func() string {
		if m := master(); m != "" && m != old {
			how = "automatic failover"
			return how
		}
		out, _ := kubectl("get", "events", "--field-selector", "reason=FailoverHeld", "-o", `jsonpath={range .items[*]}{.lastTimestamp}{" "}{.message}{"\n"}{end}`)
		for _, l := range strings.Split(out, "\n") {
			at, msg, _ := strings.Cut(l, " ")
			if t, err := time.Parse(time.RFC3339, at); err == nil && !t.Before(since.Truncate(time.Second)) && strings.Contains(msg, "anti-flapping") {
				how = "held (anti-flapping), then force-master-failover"
			}
		}
		return how
	}).WithTimeout(timeout).WithPolling(500 * time.Millisecond).ShouldNot(BeEmpty())
	if m := master(); m == "" || m == old {
		_, err := replicant("force-master-failover", "-a", alias())
		Expect(err).NotTo(HaveOccurred())
	}
	Eventually(master).WithTimeout(time.Minute).WithPolling(500 * time.Millisecond).Should(SatisfyAll(Not(BeEmpty()), Not(Equal(old))))
	return how
}

// healOldMaster waits until a cut-off old master, reachable again, rejoined or was
// quarantined; a quarantined one is re-cloned (the documented way back), and the
// cluster settles.
func healOldMaster(old string) {
	GinkgoHelper()
	Eventually(func() string { return rejoinedOrQuarantined(old) }).WithTimeout(3 * time.Minute).WithPolling(time.Second).ShouldNot(BeEmpty())
	if strings.Contains(podStatus(old), "errantGTIDs") {
		fmt.Fprintf(GinkgoWriter, "%s quarantined: %s\n", old, podStatus(old))
		mustKubectl("delete", "pvc", "data-"+old, "--wait=false")
		mustKubectl("delete", "pod", old)
	}
	eventuallySettled(3, 4*time.Minute)
}

// waitOutAntiFlap waits until the anti-flapping window (the manager's default, 5
// minutes) of the cluster's last automatic failover, read from its state ConfigMap,
// has passed: a spec that shows an automatic failover must not start inside the
// window an earlier spec's failover opened.
func waitOutAntiFlap() {
	GinkgoHelper()
	raw := mustKubectl("get", "configmap", failover.StateName(sts), "-o", `jsonpath={.data.state}`)
	var st failover.ClusterState
	Expect(json.Unmarshal([]byte(raw), &st)).To(Succeed(), "state %q", raw)
	if until := time.Until(st.LastFailover.Add(5*time.Minute + 2*time.Second)); !st.LastFailover.IsZero() && until > 0 {
		fmt.Fprintf(GinkgoWriter, "the last automatic failover ended at %s: waiting %v for its anti-flapping window to pass\n", st.LastFailover.Format(time.RFC3339), until.Round(time.Second))
		time.Sleep(until)
	}
}

// apiWrites sums the kube-apiserver's count of requests that change pods,
// StatefulSets, Services, EndpointSlices, ConfigMaps, Secrets and Events (its own
// apiserver_request_total), by resource: whoever sent them.
func apiWrites() map[string]float64 {
	GinkgoHelper()
	out, err := kubectl("get", "--raw", "/metrics")
	Expect(err).NotTo(HaveOccurred())
	counted := map[string]bool{"pods": true, "statefulsets": true, "services": true, "endpointslices": true,
		"configmaps": true, "secrets": true, "events": true}
	sums := map[string]float64{}
	for _, line := range strings.Split(out, "\n") {
		if !strings.HasPrefix(line, "apiserver_request_total{") {
			continue
		}
		labels, value, ok := strings.Cut(strings.TrimPrefix(line, "apiserver_request_total{"), "} ")
		if !ok {
			continue
		}
		var verb, resource string
		for _, kv := range strings.Split(labels, ",") {
			k, v, _ := strings.Cut(kv, "=")
			switch k {
			case "verb":
				verb = strings.Trim(v, `"`)
			case "resource":
				resource = strings.Trim(v, `"`)
			}
		}
		switch verb {
		case "POST", "PUT", "PATCH", "DELETE", "APPLY":
		default:
			continue
		}
		if counted[resource] {
			n, _ := strconv.ParseFloat(value, 64)
			sums[resource] += n
		}
	}
	return sums
}
