package e2e_test

import (
	"bytes"
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
)

// podLoop runs a bash loop inside a pod's server container (kubectl exec: it needs no
// pod network, so it runs inside any partition of the pod) and keeps its output.
type podLoop struct {
	pod  string
	cmd  *exec.Cmd
	mu   sync.Mutex
	out  bytes.Buffer
	done chan struct{}
}

func (l *podLoop) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.out.Write(p)
}

func startPodLoop(pod, script string) *podLoop {
	l := &podLoop{pod: pod, done: make(chan struct{})}
	l.cmd = exec.Command(filepath.Join(root, "bin", "kubectl"), "exec", pod, "-c", "mariadb", "--", "bash", "-c", script)
	l.cmd.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig)
	l.cmd.Stdout = l
	Expect(l.cmd.Start()).To(Succeed())
	go func() { _ = l.cmd.Wait(); close(l.done) }()
	DeferCleanup(func() { _ = l.cmd.Process.Kill(); <-l.done })
	return l
}

func (l *podLoop) lines() []string {
	GinkgoHelper()
	Eventually(l.done).WithTimeout(2 * time.Minute).Should(BeClosed())
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Split(strings.TrimSpace(l.out.String()), "\n")
}

// readOnlyChecker polls @@read_only on every server every 50 ms from inside its own
// pod, for seconds, with the node's clock (one node: one clock).
type readOnlyChecker map[string]*podLoop

func startReadOnlyChecker(seconds int) readOnlyChecker {
	c := readOnlyChecker{}
	for _, p := range dbPods() {
		c[p.Name] = startPodLoop(p.Name, fmt.Sprintf(`end=$((SECONDS+%d)); while [ $SECONDS -lt $end ]; do
  ro=$(mariadb -uroot -p%s -N -s --connect-timeout=1 -e 'SELECT @@read_only' 2>/dev/null) || ro=x
  echo "$(date +%%s%%3N) $ro"; sleep 0.05
done`, seconds, rootPass))
	}
	return c
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
func (c readOnlyChecker) result() (polls, doubleWritable int, timelines map[string][]sample) {
	GinkgoHelper()
	timelines = map[string][]sample{}
	type ev struct {
		at  int64
		pod string
		s   sample
	}
	var all []ev
	for pod, l := range c {
		for _, line := range l.lines() {
			f := strings.Fields(line)
			if len(f) != 2 {
				continue
			}
			at, err := strconv.ParseInt(f[0], 10, 64)
			if err != nil {
				continue
			}
			s := sample{at: at, writable: f[1] == "0", answered: f[1] != "x"}
			timelines[pod] = append(timelines[pod], s)
			all = append(all, ev{at, pod, s})
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
// application user, from inside the pod: a client in the pod's network partition,
// which never looks for another master. Every statement is bounded (a commit that
// waits for an acknowledgement is abandoned after 5 s: not acknowledged).
func startLocalWriter(pod, prefix string, seconds int) *podLoop {
	return startPodLoop(pod, fmt.Sprintf(`end=$((SECONDS+%d)); i=0; while [ $SECONDS -lt $end ]; do
  i=$((i+1))
  if timeout 5 mariadb -h127.0.0.1 -uapp -p%s --connect-timeout=1 -N -s shop \
      -e "INSERT INTO orders (note, server) VALUES ('%s-$i', @@hostname)" 2>/dev/null; then
    echo "$(date +%%s%%3N) ok $i"
  else
    echo "$(date +%%s%%3N) fail $i"
  fi
  sleep 0.05
done`, seconds, appPass, prefix))
}

// acknowledged returns the rows a local writer got acknowledged, as SQL literals, and
// when the last one was.
func acknowledged(l *podLoop, prefix string) (rows []string, lastAt int64) {
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
