package e2e_test

import (
	"fmt"
	"path/filepath"
	"sort"
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
		bad := strings.Replace(readExample("mariadb.yaml"), "  labels:\n    app: db\n    replicant.dev/inject: enabled\n",
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
		topo, err := replicant("-c", "topology", "-a", alias())
		Expect(err).NotTo(HaveOccurred())
		Expect(topo).To(MatchRegexp(`(?m)^db-0\.mysql\.default:3306 .*\[0s,ok,10\.11\.\d+-MariaDB.*,rw,ROW,>>,GTID\]`))
		Expect(topo).To(MatchRegexp(`(?m)^\+ db-1\.mysql\.default:3306 `))
		Expect(topo).To(MatchRegexp(`(?m)^\+ db-2\.mysql\.default:3306 `))
	})

	It("takes writes through db-master and serves them through db-replicas", takesWritesThroughServices)

	It("costs the apiserver no writes once settled, with a client writing all along", func() {
		eventuallySettled(3, time.Minute)
		w := startWriter("quiet", 250)
		time.Sleep(5 * time.Second)
		before := apiWrites()
		const window = 30 * time.Second
		time.Sleep(window)
		after := apiWrites()
		acked, _, _ := w.wait()
		var parts []string
		total := 0.0
		for resource, n := range after {
			if d := n - before[resource]; d > 0 {
				parts = append(parts, fmt.Sprintf("%s %.0f", resource, d))
				total += d
			}
		}
		sort.Strings(parts)
		AddReportEntry("quiet", fmt.Sprintf("settled, %d rows written: %.0f apiserver writes in %v by anyone (%s)", len(acked), total, window, strings.Join(parts, ", ")), ReportEntryVisibilityAlways)
		Expect(total).To(BeZero(), "writes to the API while nothing happened: %s", strings.Join(parts, ", "))
	})

	It("hands the master over gracefully; the old master is a replica at once", handsOverGracefully)

	It("brings pod-0 back as a replica when it is deleted after a takeover (seed v0.3.8)", func() {
		mustKubectl("delete", "pod", "db-0")
		eventuallySettled(3, 3*time.Minute)
		Expect(master()).To(Equal("db-1"))
		Expect(cloneLog("db-0")).To(ContainSubstring("decision: keep the data"))
		Expect(dbPodLabel("db-0", inject.LabelRole)).To(Equal("replica"))
	})

	It("hands the master over when its pod is deleted: nothing lost, the pod rejoins without cloning", handsOverWhenMasterPodDeleted)

	It("acknowledges no write a failover drops when the master's network is cut, with a client on each side; never two writable servers", losesNoAcknowledgedWriteWhenMasterCutOff)

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

	It("keeps every acknowledged write when the master's server is SIGKILLed (OOM) and restarts in place", keepsWritesWhenMasterCrashes)

	It("fails over when the master's node is lost (server killed, pod force-deleted); the new pod rejoins as a replica", failsOverWhenMasterNodeLost)

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

	It("lets a drain evict one database pod at a time: a second eviction is refused until the first pod is back; an evicted master hands over first", func() {
		eventuallySettled(3, time.Minute)
		old := master()
		replica := "db-2"
		if old == replica {
			replica = "db-1"
		}
		Eventually(func() string {
			out, _ := kubectl("get", "pdb", sts, "-o", "jsonpath={.status.disruptionsAllowed}")
			return out
		}).WithTimeout(time.Minute).Should(Equal("1"), "PodDisruptionBudget %s allows one disruption", sts)
		_, err := evict(replica)
		Expect(err).NotTo(HaveOccurred())
		out, err := evict(old)
		Expect(err).To(HaveOccurred(), "a second eviction at once is refused")
		Expect(out).To(ContainSubstring("disruption budget"))
		Expect(master()).To(Equal(old))
		eventuallySettled(3, 4*time.Minute)
		// The evicted replica is back and Ready: the master may go now, by hand-over.
		w := startWriter("evict", 150)
		time.Sleep(2 * time.Second)
		Eventually(func() error { _, err := evict(old); return err }).WithTimeout(2 * time.Minute).WithPolling(2 * time.Second).Should(Succeed())
		Eventually(master).WithTimeout(time.Minute).WithPolling(500 * time.Millisecond).Should(SatisfyAll(Not(BeEmpty()), Not(Equal(old))))
		op := lastOperation()
		Expect(op.Op).To(Equal(failover.OpTakeover), "a graceful takeover, not a failover: %+v", op)
		Expect(op.From).To(Equal(old))
		acked, _, _ := w.wait()
		eventuallySettled(3, 4*time.Minute)
		expectRowsEverywhere(acked)
		AddReportEntry("eviction", fmt.Sprintf("%s evicted, %s refused at once, then handed over to %s: %s; %d writes acknowledged, all on every server", replica, old, master(), op.Message, len(acked)), ReportEntryVisibilityAlways)
	})

	It("rolls a template change itself: replicas first, one at a time, each once the last replicates again, the master last by hand-over; nothing lost", func() {
		eventuallySettled(3, 4*time.Minute)
		old := master()
		w := startWriter("roll", 300)
		time.Sleep(2 * time.Second)
		since := time.Now()
		mustKubectl("rollout", "restart", "statefulset", sts)
		Eventually(func() error {
			pods, update := podRevisions()
			for pod, rev := range pods {
				if rev != update {
					return fmt.Errorf("%s runs %s, not %s", pod, rev, update)
				}
			}
			return settled(3)
		}).WithTimeout(10 * time.Minute).WithPolling(2 * time.Second).Should(Succeed())
		took := time.Since(since)
		// Events are recorded asynchronously: the last one may land a moment after.
		order := func() []string {
			var pods []string
			for _, msg := range eventsSince(failover.EventRollingUpdate, since) {
				pod, _, _ := strings.Cut(msg, " ")
				pods = append(pods, pod)
			}
			return pods
		}
		Eventually(order).WithTimeout(30*time.Second).WithPolling(time.Second).Should(HaveLen(3), "one pod deleted at a time, each once")
		Consistently(order).WithTimeout(3*time.Second).WithPolling(time.Second).Should(HaveLen(3), "one pod deleted at a time, each once")
		Expect(order()[2]).To(Equal(old), "the master is rolled last: %v", order())
		op := lastOperation()
		Expect(op.Op).To(Equal(failover.OpTakeover), "the master was handed over: %+v", op)
		Expect(op.From).To(Equal(old))
		Expect(op.Message).To(ContainSubstring("rolling update"))
		Expect(master()).NotTo(Equal(old))
		acked, _, lines := w.wait()
		failed, outage := writerNumbers(lines)
		expectRowsEverywhere(acked)
		AddReportEntry("rolling update", fmt.Sprintf("3 pods rolled in %v, order %v, master %s handed over to %s (writes blocked %d ms); client: %d acknowledged, all on every server, %d failed, longest gap %v",
			took.Round(time.Second), order(), old, op.Target, op.WritesBlockedMs, len(acked), failed, outage), ReportEntryVisibilityAlways)
	})

	It("stops a rollout whose first rolled replica cannot start (an image that does not exist), leaving the master and the other pods as they were; undoing it recovers", func() {
		eventuallySettled(3, 4*time.Minute)
		m := master()
		before, _ := podRevisions()
		since := time.Now()
		mustKubectl("set", "image", "statefulset/"+sts, "mariadb=docker.io/library/mariadb:does-not-exist")
		Eventually(func() []string { return eventsSince(failover.EventRolloutStalled, since) }).
			WithTimeout(4 * time.Minute).WithPolling(2 * time.Second).Should(ContainElement(MatchRegexp(`ErrImagePull|ImagePullBackOff`)))
		Consistently(func() error {
			pods, update := podRevisions()
			rolled := 0
			for pod, rev := range pods {
				if rev == update {
					rolled++
					Expect(pod).NotTo(Equal(m), "the master is never the first rolled")
				} else if rev != before[pod] {
					return fmt.Errorf("%s changed revision", pod)
				}
			}
			if rolled > 1 {
				return fmt.Errorf("%d pods rolled to a revision that does not start", rolled)
			}
			if master() != m {
				return fmt.Errorf("the master moved to %s", master())
			}
			return nil
		}).WithTimeout(20 * time.Second).WithPolling(2 * time.Second).Should(Succeed())
		stalled := eventsSince(failover.EventRolloutStalled, since)
		mustKubectl("rollout", "undo", "statefulset/"+sts)
		eventuallySettled(3, 6*time.Minute)
		pods, update := podRevisions()
		for pod, rev := range pods {
			Expect(rev).To(Equal(update), "%s after the undo", pod)
		}
		Expect(master()).To(Equal(m))
		AddReportEntry("stalled rollout", stalled[len(stalled)-1], ReportEntryVisibilityAlways)
	})

	It("upgrades MariaDB 10.11 to 11.8 under a steady write load: replicas first, the master last by hand-over, mixed versions mid-way, nothing lost", func() {
		eventuallySettled(3, 4*time.Minute)
		old := master()
		w := startWriter("upgrade", 400)
		time.Sleep(2 * time.Second)
		since := time.Now()
		mustKubectl("set", "image", "statefulset/"+sts, "mariadb=mariadb:11.8")
		var mixed string
		Eventually(func() string {
			if topo, err := replicant("topology", "-a", alias()); err == nil && strings.Contains(topo, ",10.11.") && strings.Contains(topo, ",11.8.") {
				mixed = topo
			}
			return mixed
		}).WithTimeout(8*time.Minute).WithPolling(time.Second).ShouldNot(BeEmpty(), "topology never showed both versions")
		Eventually(func() error {
			pods, update := podRevisions()
			for pod, rev := range pods {
				if rev != update {
					return fmt.Errorf("%s runs %s, not %s", pod, rev, update)
				}
			}
			if err := settled(3); err != nil {
				return err
			}
			topo, err := replicant("topology", "-a", alias())
			if err != nil || strings.Contains(topo, ",10.11.") {
				return fmt.Errorf("not every server runs 11.8: %v\n%s", err, topo)
			}
			return nil
		}).WithTimeout(15 * time.Minute).WithPolling(2 * time.Second).Should(Succeed())
		took := time.Since(since)
		// Events are recorded asynchronously: the last one may land a moment after.
		order := func() []string {
			var pods []string
			for _, msg := range eventsSince(failover.EventRollingUpdate, since) {
				pod, _, _ := strings.Cut(msg, " ")
				pods = append(pods, pod)
			}
			return pods
		}
		Eventually(order).WithTimeout(30*time.Second).WithPolling(time.Second).Should(HaveLen(3), "one pod deleted at a time, each once")
		Consistently(order).WithTimeout(3*time.Second).WithPolling(time.Second).Should(HaveLen(3), "one pod deleted at a time, each once")
		Expect(order()[2]).To(Equal(old), "the master is rolled last: %v", order())
		op := lastOperation()
		Expect(op.Op).To(Equal(failover.OpTakeover), "the master was handed over: %+v", op)
		Expect(op.From).To(Equal(old))
		acked, _, lines := w.wait()
		failed, outage := writerNumbers(lines)
		expectRowsEverywhere(acked)
		AddReportEntry("major upgrade", fmt.Sprintf("10.11 -> 11.8 in %v, order %v, master %s handed over to %s (writes blocked %d ms); client: %d acknowledged, all on every server, %d failed, longest gap %v; mid-way:\n%s",
			took.Round(time.Second), order(), old, op.Target, op.WritesBlockedMs, len(acked), failed, outage, mixed), ReportEntryVisibilityAlways)
	})

	It("leaves a user's Service named like its own (a legacy one pinned to pod 0) alone in a second cluster, says so, and still fails that cluster over", func() {
		example := readExample("mariadb.yaml")
		stsYAML := example[strings.Index(example, "apiVersion: apps/v1\nkind: StatefulSet"):]
		stsYAML = strings.NewReplacer("name: db\n", "name: shop\n", "app: db\n", "app: shop\n", "serviceName: mysql", "serviceName: shop",
			"replicas: 3", "replicas: 2").Replace(stsYAML)
		// The example's Secret and governing Service too (unchanged when present), so
		// that this spec also runs alone (-ginkgo.focus).
		manifest := example[:strings.Index(example, "apiVersion: apps/v1\nkind: StatefulSet")] + `---
apiVersion: v1
kind: Service
metadata:
  name: shop-master
spec:
  selector:
    statefulset.kubernetes.io/pod-name: shop-0
  ports:
    - name: mysql
      port: 3306
---
apiVersion: v1
kind: Service
metadata:
  name: shop
spec:
  clusterIP: None
  publishNotReadyAddresses: true
  selector:
    app: shop
  ports:
    - name: mysql
      port: 3306
---
` + stsYAML
		_, err := runStdin(manifest, "apply", "-f", "-")
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(func() {
			_, _ = kubectl("delete", "statefulset", "shop", "--wait=true", "--timeout=90s")
			_, _ = kubectl("delete", "service", "shop", "shop-master", "shop-replicas", "--ignore-not-found")
			_, _ = kubectl("delete", "pvc", "-l", "app=shop", "--ignore-not-found")
		})
		shopRoles := func() string { return rolesOf("shop") }
		Eventually(shopRoles).WithTimeout(7 * time.Minute).WithPolling(2 * time.Second).Should(Equal("shop-0=master/yes shop-1=replica/yes"))
		Expect(cloneLog("shop-1")).To(ContainSubstring("decision: clone from the master's pod, as the controller recorded it"), "shop-master has no sidecar port")
		Eventually(func() string {
			out, _ := kubectl("get", "events", "--field-selector", "reason=ObjectConflict,involvedObject.name=shop", "-o", "jsonpath={.items[*].message}")
			return out
		}).WithTimeout(time.Minute).Should(ContainSubstring("Service shop-master exists and StatefulSet shop does not control it"))
		Expect(mustKubectl("get", "statefulset", "shop", "-o", `jsonpath={.metadata.annotations.replicant\.dev/conditions}`)).To(ContainSubstring(`"type":"ObjectConflict"`))

		partition("shop-0", "on")
		Eventually(shopRoles).WithTimeout(2 * time.Minute).WithPolling(time.Second).Should(ContainSubstring("shop-1=master/yes"))
		partition("shop-0", "off")
		Eventually(shopRoles).WithTimeout(4 * time.Minute).WithPolling(2 * time.Second).Should(Equal("shop-0=replica/yes shop-1=master/yes"))
		Expect(mustKubectl("get", "service", "shop-master", "-o", `jsonpath={.spec.selector.statefulset\.kubernetes\.io/pod-name}`)).To(Equal("shop-0"), "the user's Service is unchanged")
		Expect(mustKubectl("get", "service", "shop-master", "-o", "jsonpath={.metadata.ownerReferences}")).To(BeEmpty())
		Expect(mustKubectl("get", "service", "shop-replicas", "-o", "jsonpath={.metadata.ownerReferences[0].name}")).To(Equal("shop"))
	})

	It("scales 3 -> 5 -> 2 -> 3: new pods clone from replicas, removed pods leave the Services", func() {
		mustKubectl("scale", "statefulset", sts, "--replicas=5")
		eventuallySettled(5, 6*time.Minute)
		for _, p := range []string{"db-3", "db-4"} {
			Expect(cloneLog(p)).To(MatchRegexp(`decision: clone from a healthy replica","source":"http://db-replicas\.`))
		}
		Expect(serviceEndpoints("db-replicas")).To(HaveLen(4))

		// The master on a pod the scale-down removes: it is handed over first.
		_, err := replicant("graceful-master-takeover", "-a", alias(), "-d", "db-4")
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

	It("backs up to an S3 server on its schedule and on demand; a new StatefulSet restored from the newest backup holds every row", func() {
		startS3()
		DeferCleanup(func() {
			_, _ = kubectl("annotate", "statefulset", sts, inject.AnnBackupSchedule+"-", inject.AnnBackupURI+"-", inject.AnnBackupSecret+"-", inject.AnnBackupRetention+"-")
		})
		query := s3Query
		mustKubectl("annotate", "statefulset", sts, "--overwrite",
			inject.AnnBackupURI+"=s3://backups/e2e"+query, inject.AnnBackupSecret+"=bucket-creds",
			inject.AnnBackupRetention+"=2", inject.AnnBackupSchedule+"=*/1 * * * *")
		start := time.Now()
		Eventually(func() string {
			out, _ := kubectl("get", "events", "--field-selector", "involvedObject.name="+sts+",reason="+failover.EventBackupSucceeded, "-o", "jsonpath={.items[*].message}")
			return out
		}).WithTimeout(4*time.Minute).WithPolling(5*time.Second).Should(ContainSubstring("committed (job db-backup-"), "a scheduled backup fired on its own")
		scheduled := time.Since(start).Round(time.Second)
		mustKubectl("annotate", "statefulset", sts, inject.AnnBackupSchedule+"-")
		Eventually(func() error {
			_, err := kubectl("get", "cronjob", inject.BackupCronJobName(sts))
			return err
		}).WithTimeout(time.Minute).Should(HaveOccurred(), "the CronJob goes with the schedule")

		_, err := sql("db-master", "INSERT INTO orders (note) VALUES ('before-the-backup')")
		Expect(err).NotTo(HaveOccurred())
		want, err := rootSQL(master(), "SELECT COUNT(*), MAX(id) FROM shop.orders")
		Expect(err).NotTo(HaveOccurred())
		out, err := replicant("backup", "-a", alias())
		Expect(err).NotTo(HaveOccurred(), out)
		Expect(out).To(ContainSubstring("committed: GTID "))
		_, err = sql("db-master", "INSERT INTO orders (note) VALUES ('after-the-backup')")
		Expect(err).NotTo(HaveOccurred())

		// Restored on the source's server version (the upgrade spec moved it).
		sourceImage := strings.TrimSpace(mustKubectl("get", "statefulset", sts, "-o", `jsonpath={.spec.template.spec.containers[?(@.name=="mariadb")].image}`))
		applyCopy(readExample("mariadb.yaml"), "restored", 2, sourceImage, map[string]string{
			inject.AnnInitURI: "s3://backups/e2e/default/db/latest" + query, inject.AnnBackupSecret: "bucket-creds"})
		Eventually(func() string { return rolesOf("restored") }).WithTimeout(7 * time.Minute).WithPolling(2 * time.Second).
			Should(Equal("restored-0=master/yes restored-1=replica/yes"))
		Expect(cloneLog("restored-0")).To(ContainSubstring("decision: restore from init-uri"))
		Expect(cloneLog("restored-1")).To(ContainSubstring("decision: clone from"))
		for _, pod := range []string{"restored-0", "restored-1"} {
			Eventually(func() (string, error) {
				return rootSQL(pod, "SELECT COUNT(*), MAX(id) FROM shop.orders")
			}).WithTimeout(time.Minute).Should(Equal(want), "%s holds what the master held at the backup", pod)
			Expect(rootSQL(pod, "SELECT COUNT(*) FROM shop.orders WHERE note = 'after-the-backup'")).To(Equal("0"))
		}
		AddReportEntry("backup and restore", fmt.Sprintf("a scheduled backup committed %v after the schedule was set; on demand: %s; restored 2 pods with %s (rows, max id)",
			scheduled, strings.TrimSpace(out), want), ReportEntryVisibilityAlways)

		restoresToAPointInTime(readExample("mariadb.yaml"), sourceImage, "pitr")
	})

	It("loses nothing and never has two writable servers when the kube-apiserver is down for 20 s while the master's node is cut off", func() {
		eventuallySettled(3, time.Minute)
		waitOutAntiFlap()
		old := master()
		checker := startReadOnlyChecker(150)
		w := startWriter("api-down", 500)
		time.Sleep(3 * time.Second)

		// Everything below until the apiserver is back runs on the node alone: the
		// writer and the checker enter the pods' network namespaces, the cut is
		// iptables in the master's, found through containerd.
		stoppedAt := time.Now()
		Expect(cluster("apiserver", "stop")).To(Succeed())
		apiDown := true
		DeferCleanup(func() {
			if apiDown {
				_ = cluster("apiserver", "start")
			}
		})
		time.Sleep(2 * time.Second)
		cutAt := time.Now()
		partition(old, "on")
		DeferCleanup(func() { _ = cluster("partition", ns, old, "off") })
		time.Sleep(time.Until(stoppedAt.Add(20 * time.Second)))
		Expect(cluster("apiserver", "start")).To(Succeed())
		apiDown = false
		startedAt := time.Now()

		how := awaitNewMaster(old, 3*time.Minute)
		newMasterAfter, afterAPI := time.Since(cutAt), time.Since(startedAt)
		partition(old, "off")
		healOldMaster(old)
		acked, _, lines := w.wait()
		polls, double, timelines := checker.result()
		final := master()
		lost := missingOn(final, acked)
		failed, outage := writerNumbers(lines)
		early := writableBetween(timelines, old, cutAt, startedAt)
		AddReportEntry("apiserver down", fmt.Sprintf("apiserver down for %v, master %s cut off 2 s into it: it fenced itself after %v; no other server writable while the apiserver was down: %v; %s: %s master %v after the cut (%v after the apiserver was back); writer: %d acknowledged, %d failed, longest gap %v; lost %d; %d read_only polls, %d with two writable servers",
			startedAt.Sub(stoppedAt).Round(time.Millisecond), old, firstReadOnlyAfter(timelines[old], cutAt), len(early) == 0,
			how, final, newMasterAfter.Round(time.Millisecond), afterAPI.Round(time.Millisecond),
			len(acked), failed, outage, lost, polls, double), ReportEntryVisibilityAlways)
		Expect(lost).To(BeZero(), "acknowledged writes missing on the final master %s", final)
		Expect(double).To(BeZero(), "instants with two writable servers")
		Expect(early).To(BeEmpty(), "a server opened for writes while the apiserver was down: nobody could have recorded that decision")
		Expect(firstReadOnlyAfter(timelines[old], cutAt)).To(BeNumerically(">", 0), "the cut-off master was never seen read-only")
		expectRowsEverywhere(acked)
	})

	It("fails over while the webhook is down, without rolling a pod; users' changes are refused meanwhile", func() {
		eventuallySettled(3, time.Minute)
		// A request (failover-to) is a user's change of the StatefulSet, refused
		// while the webhook is down: the failover here must be the automatic one.
		waitOutAntiFlap()
		old := master()
		generation := mustKubectl("get", "statefulset", sts, "-o", "jsonpath={.metadata.generation}")
		uids := map[string]string{}
		for _, p := range dbPods() {
			uids[p.Name] = string(p.UID)
		}
		// The webhook's port is cut on every manager pod; the managers themselves,
		// their probes and their path to the apiserver are untouched.
		managers := strings.Fields(mustKubectl("-n", "replicant-system", "get", "pods", "-l", "app.kubernetes.io/name=replicant", "-o", `jsonpath={.items[*].metadata.name}`))
		Expect(managers).NotTo(BeEmpty())
		for _, m := range managers {
			Expect(cluster("partition", "replicant-system", m, "on", "9443")).To(Succeed())
			DeferCleanup(func() { _ = cluster("partition", "replicant-system", m, "off", "9443") })
		}
		out, err := kubectl("annotate", "statefulset", sts, "e2e.replicant.dev/probe=webhook-down", "--overwrite")
		Expect(err).To(HaveOccurred(), "a user's change went through with the webhook down: %s", out)
		Expect(out).To(ContainSubstring("statefulsets.replicant.dev"))

		checker := startReadOnlyChecker(90)
		w := startWriter("webhook-down", 300)
		time.Sleep(3 * time.Second)
		cutAt := time.Now()
		partition(old, "on")
		DeferCleanup(func() { _ = cluster("partition", ns, old, "off") })
		how := awaitNewMaster(old, 2*time.Minute)
		newMasterAfter := time.Since(cutAt)
		op := lastOperation()
		Expect(op.Op).To(BeElementOf(failover.OpFailover, failover.OpForcedFailover), "%+v", op)
		Expect(op.Result).To(Equal(failover.ResultOK), "%+v", op)
		_, err = kubectl("annotate", "statefulset", sts, "e2e.replicant.dev/probe=webhook-down", "--overwrite")
		Expect(err).To(HaveOccurred(), "the webhook was down for the whole failover")
		for _, m := range managers {
			Expect(cluster("partition", "replicant-system", m, "off", "9443")).To(Succeed())
		}
		partition(old, "off")
		healOldMaster(old)
		acked, _, lines := w.wait()
		polls, double, _ := checker.result()
		final := master()
		lost := missingOn(final, acked)
		failed, outage := writerNumbers(lines)
		AddReportEntry("webhook down", fmt.Sprintf("webhook down on %d manager pods, master %s cut off: %s: %s master after %v; writer: %d acknowledged, %d failed, longest gap %v; lost %d; %d read_only polls, %d with two writable servers",
			len(managers), old, how, final, newMasterAfter.Round(time.Millisecond), len(acked), failed, outage, lost, polls, double), ReportEntryVisibilityAlways)
		Expect(lost).To(BeZero())
		Expect(double).To(BeZero())
		Expect(mustKubectl("get", "statefulset", sts, "-o", "jsonpath={.metadata.generation}")).To(Equal(generation), "the failover changed the pod template")
		for _, p := range dbPods() {
			if p.Name != old {
				Expect(string(p.UID)).To(Equal(uids[p.Name]), "pod %s was re-created", p.Name)
			}
		}
		expectRowsEverywhere(acked)
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
		example := readExample("mariadb.yaml")
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
		out, err := replicant("graceful-master-takeover", "-a", alias(), "-d", target)
		Expect(err).NotTo(HaveOccurred())
		Expect(out).To(ContainSubstring(target))
		eventuallySettled(3, time.Minute)
		Expect(master()).To(Equal(target))
		Expect(mustKubectl("get", "statefulset", sts, "-o", "jsonpath={.metadata.generation}")).To(Equal(generation),
			"reinstalling replicant with helm changed the pod template: the pods would roll")
	})
})
