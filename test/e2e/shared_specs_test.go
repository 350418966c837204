package e2e_test

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/replicant-dev/replicant/failover"
	"github.com/replicant-dev/replicant/inject"
)

// The specs both flavors' stories run, on the StatefulSet the story set (sts,
// dbContainer): each starts from a settled cluster whose master is pod 0 or not.

// handsOverGracefully hands the master over gracefully; the old master is a replica at once.
func handsOverGracefully() {
	w := startWriter("takeover", 60)
	time.Sleep(2 * time.Second)
	out, err := replicant("graceful-master-takeover", "-a", alias(), "-d", podN(1))
	Expect(err).NotTo(HaveOccurred())
	Expect(out).To(ContainSubstring(podN(1)))
	Expect(out).To(MatchRegexp(`writes blocked \d+ ms`))
	acked, servers, _ := w.wait()
	Expect(servers).To(HaveKey(podN(1)), "writes went on through the master Service")
	eventuallySettled(3, time.Minute)
	Expect(master()).To(Equal(podN(1)))
	Expect(serviceEndpoints(sts + "-master")).To(Equal([]string{podN(1)}))
	topo, err := replicant("topology", "-a", alias())
	Expect(err).NotTo(HaveOccurred())
	Expect(topo).To(MatchRegexp(`(?m)^\+ `+regexp.QuoteMeta(instance(0))+` .*\[0s,ok,`), "the old master replicates, not downtimed")
	expectRowsEverywhere(acked)
}

// handsOverWhenMasterPodDeleted hands the master over when its pod is deleted: nothing lost, the pod rejoins without cloning.
func handsOverWhenMasterPodDeleted() {
	w := startWriter("delete", 150)
	time.Sleep(3 * time.Second)
	mustKubectl("delete", "pod", podN(1), "--wait=false")
	Eventually(master).WithTimeout(time.Minute).WithPolling(500 * time.Millisecond).Should(SatisfyAll(Not(BeEmpty()), Not(Equal(podN(1)))))
	op := lastOperation()
	Expect(op.Op).To(Equal(failover.OpTakeover), "a graceful takeover, not a failover: %+v", op)
	Expect(op.From).To(Equal(podN(1)))
	Expect(op.Message).To(ContainSubstring("terminating"))
	acked, servers, lines := w.wait()
	Expect(len(servers)).To(BeNumerically(">=", 2), "writes before and after: %v", lines)
	eventuallySettled(3, 4*time.Minute)
	Expect(cloneLog(podN(1))).To(ContainSubstring("decision: keep the data"))
	Expect(dbPodLabel(podN(1), inject.LabelRole)).To(Equal("replica"))
	expectRowsEverywhere(acked)
}

// losesNoAcknowledgedWriteWhenMasterCutOff acknowledges no write a failover drops when the master's network is cut, with a client on each side; never two writable servers.
func losesNoAcknowledgedWriteWhenMasterCutOff() {
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
}

// keepsWritesWhenMasterCrashes keeps every acknowledged write when the master's server is SIGKILLed (OOM) and restarts in place.
func keepsWritesWhenMasterCrashes() {
	old := master()
	w := startWriter("crash", 150)
	time.Sleep(3 * time.Second)
	Expect(cluster("crash", ns, old, dbContainer)).To(Succeed())
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
}

// failsOverWhenMasterNodeLost fails over when the master's node is lost (server killed, pod force-deleted); the new pod rejoins as a replica.
func failsOverWhenMasterNodeLost() {
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
	Expect(cluster("crash", ns, old, dbContainer)).To(Succeed())
	mustKubectl("delete", "pod", old, "--grace-period=0", "--force")
	// Inside the anti-flapping window of the partition's failover the controller
	// holds and says so; a person then asks, as orchestrator's users do.
	fmt.Fprintf(GinkgoWriter, "new master: %s\n", awaitNewMaster(old, time.Minute))
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
}

// takesWritesThroughServices takes writes through <sts>-master and serves them
// through <sts>-replicas, which refuse writes.
func takesWritesThroughServices() {
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
}

// restoresToAPointInTime, once the story's cluster has backup-uri, backup-secret and a
// committed backup: the archive's CronJob (kept beside a schedule) uploads the binlogs,
// and a StatefulSet name restored from example on image to a point between two writes
// holds the rows written after the backup and before the point, not the one after.
func restoresToAPointInTime(example, image, name string) {
	GinkgoHelper()
	mustKubectl("annotate", "statefulset", sts, "--overwrite", inject.AnnBackupSchedule+"=0 0 1 1 *")
	Eventually(func() error {
		_, err := kubectl("get", "cronjob", inject.BinlogsCronJobName(sts))
		return err
	}).WithTimeout(time.Minute).Should(Succeed(), "the archive's CronJob comes with a schedule")
	_, err := sql(sts+"-master", "INSERT INTO orders (note) VALUES ('before-the-point')")
	Expect(err).NotTo(HaveOccurred())
	point := time.Now().UTC().Truncate(time.Second).Add(2 * time.Second)
	time.Sleep(time.Until(point) + 500*time.Millisecond)
	_, err = sql(sts+"-master", "INSERT INTO orders (note) VALUES ('after-the-point')")
	Expect(err).NotTo(HaveOccurred())
	wantAtPoint, err := rootSQL(master(), "SELECT COUNT(*) FROM shop.orders WHERE note <> 'after-the-point'")
	Expect(err).NotTo(HaveOccurred())
	archiveStart := time.Now()
	mustKubectl("create", "job", sts+"-binlogs-e2e", "--from=cronjob/"+inject.BinlogsCronJobName(sts))
	mustKubectl("wait", "--for=condition=complete", "job/"+sts+"-binlogs-e2e", "--timeout=180s")
	archived := time.Since(archiveStart).Round(time.Second)
	restoreStart := time.Now()
	applyCopy(example, name, 1, image, map[string]string{
		inject.AnnInitURI: "s3://backups/e2e/default/" + sts + s3Query, inject.AnnBackupSecret: "bucket-creds",
		inject.AnnRestoreTo: point.Format(time.RFC3339)})
	Eventually(func() string { return rolesOf(name) }).WithTimeout(7 * time.Minute).WithPolling(2 * time.Second).Should(Equal(name + "-0=master/yes"))
	restored := time.Since(restoreStart).Round(time.Second)
	Expect(cloneLog(name + "-0")).To(ContainSubstring("binlogs replayed"))
	Expect(rootSQL(name+"-0", "SELECT COUNT(*) FROM shop.orders WHERE note IN ('after-the-backup', 'before-the-point')")).To(Equal("2"), "rows written after the backup and before the point")
	Expect(rootSQL(name+"-0", "SELECT COUNT(*) FROM shop.orders WHERE note = 'after-the-point'")).To(Equal("0"), "the row written after the point")
	Expect(rootSQL(name+"-0", "SELECT COUNT(*) FROM shop.orders")).To(Equal(wantAtPoint))
	AddReportEntry(sts+": point-in-time recovery", fmt.Sprintf("archive run %v; a StatefulSet restored to %s in %v holds %s rows, the one after the point absent",
		archived, point.Format(time.RFC3339), restored, wantAtPoint), ReportEntryVisibilityAlways)
}
