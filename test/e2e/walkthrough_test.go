package e2e_test

import (
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/replicant-dev/replicant/failover"
	"github.com/replicant-dev/replicant/inject"
)

// The seed's walk-through, then what bit its users, in one ordered story on one
// StatefulSet: each spec starts from the settled cluster the one before left.
var _ = Describe("a plain MariaDB StatefulSet labelled for replicant", Ordered, func() {
	It("is refused with a clear message when an annotation is wrong, and nothing is stored", func() {
		bad := strings.Replace(readExample(), "  labels:\n    app: db\n    replicant.dev/inject: enabled\n",
			"  labels:\n    app: db\n    replicant.dev/inject: enabled\n  annotations:\n    replicant.dev/failover: sometimes\n", 1)
		Expect(bad).To(ContainSubstring("sometimes"))
		out, err := runStdin(bad, "apply", "-f", "-")
		Expect(err).To(HaveOccurred())
		Expect(out).To(ContainSubstring("replicant.dev/failover"))
		Expect(out).To(ContainSubstring(`"sometimes"`))
		Expect(out).To(ContainSubstring("auto"))
		_, err = kubectl("get", "statefulset", sts)
		Expect(err).To(HaveOccurred(), "nothing stored")
	})

	It("is injected when applied", func() {
		mustKubectl("apply", "-f", "docs/examples/mariadb.yaml")
		out := mustKubectl("get", "statefulset", sts, "-o",
			`jsonpath={range .spec.template.spec.initContainers[*]}{.name}{" "}{end}{range .spec.template.spec.containers[*]}{.name}{" "}{end}`)
		Expect(strings.Fields(out)).To(Equal([]string{"replicant-install", "replicant-config", "replicant-clone", "mariadb", "replicant-sidecar"}))
		Expect(mustKubectl("get", "statefulset", sts, "-o", "jsonpath={.spec.template.metadata.annotations}")).To(ContainSubstring(inject.AnnInjected))
	})

	It("comes up as one master and two replicas; db-1 and db-2 clone", func() {
		eventuallySettled(3, 7*time.Minute)
		Expect(master()).To(Equal("db-0"))
		Expect(cloneLog("db-0")).To(ContainSubstring("decision: start empty"))
		for _, p := range []string{"db-1", "db-2"} {
			Expect(cloneLog(p)).To(MatchRegexp(`decision: clone from (a healthy replica|the master)","source":"http://db-(replicas|master)\.`))
		}
		Expect(serviceEndpoints("db-master")).To(Equal([]string{"db-0"}))
		Expect(serviceEndpoints("db-replicas")).To(Equal([]string{"db-1", "db-2"}))
		topo, err := replicant("-c", "topology", "-a", alias)
		Expect(err).NotTo(HaveOccurred())
		Expect(topo).To(MatchRegexp(`(?m)^db-0\.mysql\.default:3306 .*\[0s,ok,10\.11\.\d+-MariaDB.*,rw,ROW,>>,GTID\]`))
		Expect(topo).To(MatchRegexp(`(?m)^\+ db-1\.mysql\.default:3306 `))
		Expect(topo).To(MatchRegexp(`(?m)^\+ db-2\.mysql\.default:3306 `))
	})

	It("takes writes through db-master and serves them through db-replicas", func() {
		_, err := sql(sts+"-master", "CREATE TABLE orders (id INT AUTO_INCREMENT PRIMARY KEY, note VARCHAR(64), server VARCHAR(64))")
		Expect(err).NotTo(HaveOccurred())
		for i := 1; i <= 10; i++ {
			_, err := sql(sts+"-master", fmt.Sprintf("INSERT INTO orders (note, server) VALUES ('walk-%d', @@hostname)", i))
			Expect(err).NotTo(HaveOccurred())
		}
		Eventually(func() (string, error) {
			return sql(sts+"-replicas", "SELECT COUNT(*) FROM orders WHERE note LIKE 'walk-%'")
		}).
			WithTimeout(20 * time.Second).Should(Equal("10"))
		_, err = sql(sts+"-replicas", "INSERT INTO orders (note) VALUES ('must-fail')")
		Expect(err).To(MatchError(ContainSubstring("read-only")), "replicas refuse writes")
	})

	It("hands the master over gracefully; the old master is a replica at once", func() {
		w := startWriter("takeover", 60)
		time.Sleep(2 * time.Second)
		out, err := replicant("graceful-master-takeover", "-a", alias, "-d", "db-1")
		Expect(err).NotTo(HaveOccurred())
		Expect(out).To(ContainSubstring("db-1"))
		Expect(out).To(MatchRegexp(`writes blocked \d+ ms`))
		acked, servers, _ := w.wait()
		Expect(servers).To(HaveKey("db-1"), "writes went on through db-master")
		eventuallySettled(3, time.Minute)
		Expect(master()).To(Equal("db-1"))
		Expect(serviceEndpoints("db-master")).To(Equal([]string{"db-1"}))
		topo, err := replicant("topology", "-a", alias)
		Expect(err).NotTo(HaveOccurred())
		Expect(topo).To(MatchRegexp(`(?m)^\+ db-0\.mysql\.default:3306 .*\[0s,ok,`), "the old master replicates, not downtimed")
		expectRowsEverywhere(acked)
	})

	It("brings pod-0 back as a replica when it is deleted after a takeover (seed v0.3.8)", func() {
		mustKubectl("delete", "pod", "db-0")
		eventuallySettled(3, 3*time.Minute)
		Expect(master()).To(Equal("db-1"))
		Expect(cloneLog("db-0")).To(ContainSubstring("decision: keep the data"))
		Expect(dbPodLabel("db-0", inject.LabelRole)).To(Equal("replica"))
	})

	It("hands the master over when its pod is deleted: nothing lost, the pod rejoins without cloning", func() {
		w := startWriter("delete", 150)
		time.Sleep(3 * time.Second)
		mustKubectl("delete", "pod", "db-1", "--wait=false")
		Eventually(master).WithTimeout(time.Minute).WithPolling(500 * time.Millisecond).Should(SatisfyAll(Not(BeEmpty()), Not(Equal("db-1"))))
		op := lastOperation()
		Expect(op.Op).To(Equal(failover.OpTakeover), "a graceful takeover, not a failover: %+v", op)
		Expect(op.From).To(Equal("db-1"))
		Expect(op.Message).To(ContainSubstring("terminating"))
		acked, servers, lines := w.wait()
		Expect(len(servers)).To(BeNumerically(">=", 2), "writes before and after: %v", lines)
		eventuallySettled(3, 4*time.Minute)
		Expect(cloneLog("db-1")).To(ContainSubstring("decision: keep the data"))
		Expect(dbPodLabel("db-1", inject.LabelRole)).To(Equal("replica"))
		expectRowsEverywhere(acked)
	})

	It("acknowledges no write a failover drops when the master's network is cut, with a client on each side; never two writable servers", func() {
		eventuallySettled(3, time.Minute)
		old := master()
		checker := startReadOnlyChecker(70)
		outside := startWriter("cut-out", 300)
		inside := startLocalWriter(old, "cut-in", 45)
		time.Sleep(3 * time.Second)

		cutAt := time.Now()
		partition(old, "on")
		DeferCleanup(func() { _ = cluster("partition", ns, old, "off") })
		Eventually(master).WithTimeout(time.Minute).WithPolling(200 * time.Millisecond).Should(SatisfyAll(Not(BeEmpty()), Not(Equal(old))))
		failedOver := time.Since(cutAt)
		Expect(lastOperation().Op).To(Equal(failover.OpFailover))
		time.Sleep(time.Until(cutAt.Add(25 * time.Second)))
		partition(old, "off")
		healedAt := time.Now()

		// The old master comes back read-only: it rejoins, or holds the commits its
		// fence killed (never acknowledged) and is quarantined.
		Eventually(func() string { return rejoinedOrQuarantined(old) }).WithTimeout(2 * time.Minute).WithPolling(time.Second).ShouldNot(BeEmpty())
		outsideAcked, _, outsideLines := outside.wait()
		insideAcked, _ := acknowledged(inside, "cut-in")
		polls, double, timelines := checker.result()
		final := master()
		lostOutside, lostInside := missingOn(final, outsideAcked), missingOn(final, insideAcked)

		fencedAfter := time.Duration(-1)
		for _, s := range timelines[old] {
			if s.at > cutAt.UnixMilli() && s.answered && !s.writable {
				fencedAfter = time.Duration(s.at-cutAt.UnixMilli()) * time.Millisecond
				break
			}
		}
		refused, insideAfterCut := 0, 0
		for _, l := range outsideLines {
			if f := strings.Fields(l); len(f) >= 2 && f[1] == "fail" {
				refused++
			}
		}
		for _, l := range inside.lines() {
			if f := strings.Fields(l); len(f) == 3 && f[1] == "ok" {
				if at, _ := strconv.ParseInt(f[0], 10, 64); at > cutAt.UnixMilli() {
					insideAfterCut++
				}
			}
		}
		AddReportEntry("partition", fmt.Sprintf("partition of %s: it fenced itself after %v; %s master after %v; healed after %v; outside client: %d acknowledged, %d failed; inside client: %d acknowledged (%d after the cut); lost: outside %d, inside %d; %d read_only polls, %d with two writable servers",
			old, fencedAfter, final, failedOver.Round(time.Millisecond), healedAt.Sub(cutAt).Round(time.Millisecond),
			len(outsideAcked), refused, len(insideAcked), insideAfterCut, lostOutside, lostInside, polls, double), ReportEntryVisibilityAlways)
		Expect(lostOutside+lostInside).To(BeZero(), "acknowledged writes missing on the final master %s", final)
		Expect(double).To(BeZero(), "instants with two writable servers")
		Expect(fencedAfter).To(BeNumerically(">", 0), "the cut-off master was never seen read-only")

		if strings.Contains(podStatus(old), "errantGTIDs") {
			mustKubectl("delete", "pvc", "data-"+old, "--wait=false")
			mustKubectl("delete", "pod", old)
		}
		eventuallySettled(3, 4*time.Minute)
		expectRowsEverywhere(outsideAcked)
	})

	It("keeps writing on the master when a replica's network is cut; the replica leaves db-replicas and comes back", func() {
		eventuallySettled(3, time.Minute)
		m := master()
		replica := "db-1"
		if m == replica {
			replica = "db-2"
		}
		checker := startReadOnlyChecker(45)
		w := startWriter("replica-cut", 200)
		time.Sleep(2 * time.Second)
		partition(replica, "on")
		DeferCleanup(func() { _ = cluster("partition", ns, replica, "off") })
		Eventually(func() []string { return serviceEndpoints(sts + "-replicas") }).WithTimeout(30 * time.Second).
			WithPolling(500 * time.Millisecond).ShouldNot(ContainElement(replica))
		time.Sleep(10 * time.Second)
		partition(replica, "off")
		acked, _, lines := w.wait()
		polls, double, _ := checker.result()
		failed := 0
		for _, l := range lines {
			if f := strings.Fields(l); len(f) >= 2 && f[1] == "fail" {
				failed++
			}
		}
		AddReportEntry("replica cut", fmt.Sprintf("replica %s cut off for ~15 s: master %s kept writing: %d acknowledged, %d failed; %d read_only polls, %d with two writable servers",
			replica, m, len(acked), failed, polls, double), ReportEntryVisibilityAlways)
		Expect(master()).To(Equal(m))
		Expect(double).To(BeZero())
		Expect(failed).To(BeNumerically("<", len(lines)/10), "writes kept flowing through db-master: %v", lines)
		eventuallySettled(3, 2*time.Minute)
		Expect(serviceEndpoints(sts + "-replicas")).To(ContainElement(replica))
		expectRowsEverywhere(acked)
	})

	It("keeps its master and loses nothing when the leading manager's pod is cut off; the other manager takes over", func() {
		eventuallySettled(3, time.Minute)
		m := master()
		leader := managerLeader()
		checker := startReadOnlyChecker(75)
		w := startWriter("ctrl-cut", 250)
		time.Sleep(3 * time.Second)
		cutAt := time.Now()
		Expect(cluster("partition", "replicant-system", leader, "on")).To(Succeed())
		DeferCleanup(func() { _ = cluster("partition", "replicant-system", leader, "off") })
		// The master's write lease is no longer renewed: it fences itself. The other
		// manager wins the leader Lease once the cut one's has expired, and opens
		// writes on the same master again: no failover, nothing lost.
		Eventually(func() string {
			out, _ := kubectl("-n", "replicant-system", "get", "lease", "replicant-manager.replicant.dev", "-o", "jsonpath={.spec.holderIdentity}")
			return strings.SplitN(strings.TrimSpace(out), "_", 2)[0]
		}).WithTimeout(2 * time.Minute).WithPolling(time.Second).ShouldNot(Or(BeEmpty(), Equal(leader)))
		newLeaderAfter := time.Since(cutAt)
		Eventually(func() error {
			_, err := sql(sts+"-master", "INSERT INTO orders (note, server) VALUES ('ctrl-cut-probe', @@hostname)")
			return err
		}).WithTimeout(time.Minute).WithPolling(500 * time.Millisecond).Should(Succeed())
		writableAfter := time.Since(cutAt)
		Expect(cluster("partition", "replicant-system", leader, "off")).To(Succeed())
		acked, _, lines := w.wait()
		polls, double, timelines := checker.result()
		fencedAfter := time.Duration(-1)
		for _, s := range timelines[m] {
			if s.at > cutAt.UnixMilli() && s.answered && !s.writable {
				fencedAfter = time.Duration(s.at-cutAt.UnixMilli()) * time.Millisecond
				break
			}
		}
		failed := 0
		for _, l := range lines {
			if f := strings.Fields(l); len(f) >= 2 && f[1] == "fail" {
				failed++
			}
		}
		lost := missingOn(master(), acked)
		AddReportEntry("controller cut", fmt.Sprintf("leading manager %s cut off: master %s fenced itself after %v; new leader after %v; writes accepted again after %v; %d acknowledged, %d failed, %d lost; %d read_only polls, %d with two writable servers",
			leader, m, fencedAfter, newLeaderAfter.Round(time.Millisecond), writableAfter.Round(time.Millisecond), len(acked), failed, lost, polls, double), ReportEntryVisibilityAlways)
		Expect(master()).To(Equal(m), "a controller that lost its path is no reason to fail over")
		Expect(lost).To(BeZero())
		Expect(double).To(BeZero(), "instants with two writable servers")
		eventuallySettled(3, 2*time.Minute)
		mustKubectl("-n", "replicant-system", "rollout", "status", "deployment/replicant", "--timeout=170s")
		expectRowsEverywhere(acked)
	})

	It("keeps every acknowledged write when the master's server is SIGKILLed (OOM) and restarts in place", func() {
		old := master()
		w := startWriter("crash", 150)
		time.Sleep(3 * time.Second)
		Expect(cluster("crash", ns, old, "mariadb")).To(Succeed())
		acked, servers, lines := w.wait()
		// Restarted within the failure threshold, it stays master (writes reopen after
		// its crash recovery); restarted later, a replica took over. Either way: one
		// master, every acknowledged write everywhere.
		Expect(servers).NotTo(BeEmpty(), "%v", lines)
		eventuallySettled(3, 3*time.Minute)
		last := strings.Fields(lines[len(lines)-1])
		Expect(last[1]).To(Equal("ok"), "writes accepted again by the end: %v", lines)
		fmt.Fprintf(GinkgoWriter, "master after the crash: %s (was %s)\n", master(), old)
		expectRowsEverywhere(acked)
	})

	It("fails over when the master's node is lost (server killed, pod force-deleted); the new pod rejoins as a replica", func() {
		old := master()
		w := startWriter("force", 150)
		time.Sleep(3 * time.Second)
		// A lost node: its server stops answering and the pod object is removed. A
		// force-delete alone leaves the container running for a moment, long enough for
		// the controller to see a terminating master and hand it over gracefully. The
		// node is cordoned first: the replacement pod cannot start until the node is
		// back, as with a real lost node (on this one-node cluster it would otherwise
		// restart in place on the same volume before the old master's write lease runs
		// out, which is a restart, not a failover).
		node := strings.TrimPrefix(mustKubectl("get", "nodes", "-o", "name"), "node/")
		node = strings.TrimSpace(node)
		mustKubectl("cordon", node)
		DeferCleanup(func() { _, _ = kubectl("uncordon", node) })
		Expect(cluster("crash", ns, old, "mariadb")).To(Succeed())
		mustKubectl("delete", "pod", old, "--grace-period=0", "--force")
		// Inside the anti-flapping window of the partition's failover the controller
		// holds and says so; a person then asks, as orchestrator's users do.
		Eventually(func() string {
			if m := master(); m != "" && m != old {
				return "failed over"
			}
			if out, _ := kubectl("get", "events", "--field-selector", "reason=FailoverHeld", "-o", "jsonpath={.items[*].message}"); strings.Contains(out, "anti-flapping") {
				return "held"
			}
			return ""
		}).WithTimeout(time.Minute).WithPolling(500 * time.Millisecond).ShouldNot(BeEmpty())
		if m := master(); m == "" || m == old {
			_, err := replicant("force-master-failover", "-a", alias)
			Expect(err).NotTo(HaveOccurred())
		}
		Eventually(master).WithTimeout(time.Minute).WithPolling(500 * time.Millisecond).Should(SatisfyAll(Not(BeEmpty()), Not(Equal(old))))
		mustKubectl("uncordon", node)
		op := lastOperation()
		Expect(op.Op).To(BeElementOf(failover.OpFailover, failover.OpForcedFailover), "%+v", op)
		acked, servers, lines := w.wait()
		Expect(len(servers)).To(BeNumerically(">=", 2), "writes before and after: %v", lines)
		// Killed without a hand-over, the old master may hold a transaction no replica
		// received (never acknowledged to a client: semi-sync). Then it is quarantined,
		// never overwritten; re-cloning it is the documented way back.
		Eventually(func() string { return rejoinedOrQuarantined(old) }).WithTimeout(3 * time.Minute).WithPolling(time.Second).ShouldNot(BeEmpty())
		if strings.Contains(podStatus(old), "errantGTIDs") {
			fmt.Fprintf(GinkgoWriter, "%s quarantined: %s\n", old, podStatus(old))
			Expect(mustKubectl("get", "events", "--field-selector", "reason=ErrantTransactions", "-o", "name")).NotTo(BeEmpty())
			Expect(serviceEndpoints(sts + "-replicas")).NotTo(ContainElement(old))
			mustKubectl("delete", "pvc", "data-"+old, "--wait=false")
			mustKubectl("delete", "pod", old)
			eventuallySettled(3, 4*time.Minute)
			Expect(cloneLog(old)).To(ContainSubstring("decision: clone from a healthy replica"))
		} else {
			Expect(cloneLog(old)).To(ContainSubstring("decision: keep the data"))
		}
		Expect(dbPodLabel(old, inject.LabelRole)).To(Equal("replica"))
		expectRowsEverywhere(acked)
	})

	It("re-clones the master from a replica when its PVC and pod are deleted", func() {
		old := master()
		mustKubectl("delete", "pvc", "data-"+old, "--wait=false")
		mustKubectl("delete", "pod", old)
		eventuallySettled(3, 5*time.Minute)
		Expect(master()).NotTo(Equal(old))
		Expect(cloneLog(old)).To(MatchRegexp(`decision: clone from a healthy replica","source":"http://db-replicas\.`))
		n, err := rootSQL(old, "SELECT COUNT(*) FROM shop.orders WHERE note LIKE 'walk-%'")
		Expect(err).NotTo(HaveOccurred())
		Expect(n).To(Equal("10"))
	})

	It("takes a replica with a stopped IO thread out of db-replicas, and back when it runs again", func() {
		replica := "db-2"
		if master() == replica {
			replica = "db-0"
		}
		_, err := rootSQL(replica, "STOP SLAVE IO_THREAD")
		Expect(err).NotTo(HaveOccurred())
		Eventually(func() string { return dbPodLabel(replica, inject.LabelHealthy) }).WithTimeout(time.Minute).Should(Equal("no"))
		Eventually(func() []string { return serviceEndpoints("db-replicas") }).WithTimeout(30 * time.Second).ShouldNot(ContainElement(replica))
		_, err = rootSQL(replica, "START SLAVE IO_THREAD")
		Expect(err).NotTo(HaveOccurred())
		eventuallySettled(3, time.Minute)
		Eventually(func() []string { return serviceEndpoints("db-replicas") }).WithTimeout(30 * time.Second).Should(ContainElement(replica))
	})

	It("scales 3 -> 5 -> 2 -> 3: new pods clone from replicas, removed pods leave the Services", func() {
		mustKubectl("scale", "statefulset", sts, "--replicas=5")
		eventuallySettled(5, 6*time.Minute)
		for _, p := range []string{"db-3", "db-4"} {
			Expect(cloneLog(p)).To(MatchRegexp(`decision: clone from a healthy replica","source":"http://db-replicas\.`))
		}
		Expect(serviceEndpoints("db-replicas")).To(HaveLen(4))

		// The master on a pod the scale-down removes: it is handed over first.
		_, err := replicant("graceful-master-takeover", "-a", alias, "-d", "db-4")
		Expect(err).NotTo(HaveOccurred())
		eventuallySettled(5, time.Minute)
		w := startWriter("scaledown", 150)
		time.Sleep(2 * time.Second)
		mustKubectl("scale", "statefulset", sts, "--replicas=2")
		eventuallySettled(2, 4*time.Minute)
		acked, _, _ := w.wait()
		op := lastOperation()
		Expect(op.Op).To(Equal(failover.OpTakeover), "the removed master was handed over, not failed over: %+v", op)
		Expect(op.From).To(Equal("db-4"))
		Expect([]string{master()}).To(SatisfyAny(Equal([]string{"db-0"}), Equal([]string{"db-1"})))
		Expect(serviceEndpoints("db-replicas")).To(HaveLen(1))
		Expect(serviceEndpoints("db-master")).To(HaveLen(1))
		expectRowsEverywhere(acked)

		mustKubectl("scale", "statefulset", sts, "--replicas=3")
		eventuallySettled(3, 4*time.Minute)
	})

	It("keeps pods restarting while the webhook is down (manager scaled to 0)", func() {
		mustKubectl("-n", "replicant-system", "scale", "deployment/replicant", "--replicas=0")
		DeferCleanup(func() {
			mustKubectl("-n", "replicant-system", "scale", "deployment/replicant", "--replicas=2")
			mustKubectl("-n", "replicant-system", "rollout", "status", "deployment/replicant", "--timeout=90s")
		})
		Eventually(func() (string, error) {
			return kubectl("-n", "replicant-system", "get", "pods", "-l", "app.kubernetes.io/name=replicant", "-o", "name")
		}).WithTimeout(time.Minute).Should(BeEmpty())
		replica := "db-2"
		if master() == replica {
			replica = "db-0"
		}
		mustKubectl("delete", "pod", replica)
		mustKubectl("wait", "--for=condition=Ready", "pod/"+replica, "--timeout=180s")
	})

	It("renders the same objects from the Helm chart as from manifests/", func() {
		out, err := run(time.Minute, helmBin(), "template", "replicant", "charts/replicant", "--namespace", "replicant-system")
		Expect(err).NotTo(HaveOccurred())
		diff, err := runStdin(out, "diff", "-f", "-")
		Expect(err).NotTo(HaveOccurred(), "kubectl diff against the installed objects: %s", diff)
	})

	It("installs the same way with helm install: the webhook injects, the controller takes over, no pod rolls", func() {
		generation := mustKubectl("get", "statefulset", sts, "-o", "jsonpath={.metadata.generation}")
		old := master()
		_, err := run(3*time.Minute, filepath.Join(root, "bin", "kubectl"), "delete", "-k", "manifests/", "--wait=true", "--timeout=170s")
		Expect(err).NotTo(HaveOccurred())
		_, err = run(4*time.Minute, helmBin(), "install", "replicant", "charts/replicant",
			"--namespace", "replicant-system", "--create-namespace", "--wait", "--timeout", "200s")
		Expect(err).NotTo(HaveOccurred())
		Eventually(func() (string, error) {
			return kubectl("get", "mutatingwebhookconfiguration", "replicant", "-o", "jsonpath={.webhooks[0].clientConfig.caBundle}")
		}).WithTimeout(2*time.Minute).WithPolling(time.Second).ShouldNot(BeEmpty(), "the manager fills the helm-installed webhook's CA bundle")

		By("the helm-installed webhook injects a new StatefulSet (server-side dry run)")
		example := readExample()
		plain := example[strings.Index(example, "apiVersion: apps/v1"):]
		plain = strings.Replace(plain, "  name: db\n", "  name: db-helm-check\n", 1)
		Eventually(func() (string, error) {
			return runStdin(plain, "create", "--dry-run=server", "-f", "-", "-o",
				`jsonpath={range .spec.template.spec.initContainers[*]}{.name}{" "}{end}{range .spec.template.spec.containers[*]}{.name}{" "}{end}`)
		}).WithTimeout(time.Minute).WithPolling(2 * time.Second).Should(
			Equal("replicant-install replicant-config replicant-clone mariadb replicant-sidecar "))

		By("the helm-installed controller carries out a takeover")
		target := "db-0"
		if old == target {
			target = "db-1"
		}
		out, err := replicant("graceful-master-takeover", "-a", alias, "-d", target)
		Expect(err).NotTo(HaveOccurred())
		Expect(out).To(ContainSubstring(target))
		eventuallySettled(3, time.Minute)
		Expect(master()).To(Equal(target))
		Expect(mustKubectl("get", "statefulset", sts, "-o", "jsonpath={.metadata.generation}")).To(Equal(generation),
			"reinstalling replicant with helm changed the pod template: the pods would roll")
	})
})
