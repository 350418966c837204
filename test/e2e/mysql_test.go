package e2e_test

import (
	"fmt"
	"regexp"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/replicant-dev/replicant/inject"
)

// The seed's walk-through on MySQL (docs/examples/mysql.yaml: the image mysql:9.7,
// built here from Debian sid's mysql-server-core with an entrypoint like the official
// one's), then the failures that matter most: a hand-over, the master's pod deleted,
// its network cut with a client on each side, its server killed, its node lost. The
// cluster is removed at the end, so the MariaDB story runs on a machine as before.
var _ = Describe("a plain MySQL StatefulSet labelled for replicant", Ordered, func() {
	BeforeAll(func() {
		useStory("mydb", "mydb", "mysql", "mysql")
		DeferCleanup(func() {
			// Ginkgo runs this before the failed spec's report: keep what a person
			// needs (the MySQL pods' logs) before they go.
			if CurrentSpecReport().Failed() {
				_ = cluster("diagnose")
			}
			_, _ = kubectl("delete", "-f", "docs/examples/mysql.yaml", "--ignore-not-found", "--timeout=2m")
			_, _ = kubectl("delete", "pvc", "-l", "app=mydb", "--ignore-not-found", "--timeout=2m")
		})
	})

	It("is refused, saying why, when its MySQL is older than 8.0.23 or it names a point in time in MariaDB's GTID form; nothing is stored", func() {
		example := readExample("mysql.yaml")
		old := strings.Replace(example, "image: mysql:9.7", "image: mysql:8.0.22", 1)
		Expect(old).To(ContainSubstring("mysql:8.0.22"))
		out, err := runStdin(old, "apply", "-f", "-")
		Expect(err).To(HaveOccurred())
		Expect(out).To(ContainSubstring(`"mysql:8.0.22"`))
		Expect(out).To(ContainSubstring("8.0.23 or later"))

		// A point in time in MariaDB's GTID form: MySQL's is a GTID set.
		pitr := strings.Replace(example, "    replicant.dev/inject: enabled\n",
			"    replicant.dev/inject: enabled\n  annotations:\n    replicant.dev/init-uri: s3://backups/db\n    replicant.dev/restore-to: 0-100-5\n", 1)
		Expect(pitr).To(ContainSubstring("restore-to"))
		out, err = runStdin(pitr, "apply", "-f", "-")
		Expect(err).To(HaveOccurred())
		Expect(out).To(ContainSubstring(inject.AnnRestoreTo))
		Expect(out).To(ContainSubstring("MySQL's GTID set such as"))
		_, err = kubectl("get", "statefulset", sts)
		Expect(err).To(HaveOccurred(), "nothing stored")
	})

	It("is injected when applied: the image's name says MySQL", func() {
		mustKubectl("apply", "-f", "docs/examples/mysql.yaml")
		out := mustKubectl("get", "statefulset", sts, "-o",
			`jsonpath={range .spec.template.spec.initContainers[*]}{.name}{" "}{end}{range .spec.template.spec.containers[*]}{.name}{" "}{end}`)
		Expect(strings.Fields(out)).To(Equal([]string{"replicant-install", "replicant-config", "replicant-clone", "mysql", "replicant-sidecar"}))
		Expect(mustKubectl("get", "statefulset", sts, "-o", `jsonpath={.spec.template.spec.initContainers[?(@.name=="replicant-clone")].command}`)).
			To(ContainSubstring("--flavor=mysql"))
	})

	It("comes up as one master and two replicas; pods 1 and 2 clone with MySQL's CLONE plugin", func() {
		eventuallySettled(3, 8*time.Minute)
		Expect(master()).To(Equal(podN(0)))
		Expect(cloneLog(podN(0))).To(ContainSubstring("decision: start empty"))
		for _, i := range []int{1, 2} {
			log := cloneLog(podN(i))
			// The master's pod as the controller recorded it, when <sts>-master's
			// endpoints are not there yet: the same server.
			Expect(log).To(MatchRegexp(`decision: clone from (a healthy replica|the master|the master's pod, as the controller recorded it)","source":"http://` +
				sts + `-(replicas\.|master\.|0\.)`))
			Expect(log).To(ContainSubstring("clone complete"))
		}
		Expect(serviceEndpoints(sts + "-master")).To(Equal([]string{podN(0)}))
		Expect(serviceEndpoints(sts + "-replicas")).To(Equal([]string{podN(1), podN(2)}))
		topo, err := replicant("topology", "-a", alias())
		Expect(err).NotTo(HaveOccurred())
		Expect(topo).To(MatchRegexp(`(?m)^` + regexp.QuoteMeta(instance(0)) + ` .*\[0s,ok,9\.7\.\d+[^,]*,rw,ROW,>>,GTID\]`))
		Expect(topo).To(MatchRegexp(`(?m)^\+ ` + regexp.QuoteMeta(instance(1)) + ` .*\[\d+s,ok,9\.7\.\d+[^,]*,ro,ROW,>>,GTID\]`))
		Expect(topo).To(MatchRegexp(`(?m)^\+ ` + regexp.QuoteMeta(instance(2)) + ` `))
		// Replicas are fenced with super_read_only: root cannot write on them either.
		for _, i := range []int{1, 2} {
			Expect(rootSQL(podN(i), "SELECT @@super_read_only")).To(Equal("1"), "%s fenced for root too", podN(i))
		}
	})

	It("takes writes through mydb-master and serves them through mydb-replicas", takesWritesThroughServices)

	It("hands the master over gracefully; the old master is a replica at once", handsOverGracefully)

	It("hands the master over when its pod is deleted: nothing lost, the pod rejoins without cloning", handsOverWhenMasterPodDeleted)

	It("acknowledges no write a failover drops when the master's network is cut, with a client on each side; never two writable servers", losesNoAcknowledgedWriteWhenMasterCutOff)

	It("keeps every acknowledged write when the master's server is SIGKILLed (OOM) and restarts in place", keepsWritesWhenMasterCrashes)

	It("fails over when the master's node is lost (server killed, pod force-deleted); the new pod rejoins as a replica", failsOverWhenMasterNodeLost)

	It("backs up to an S3 server with MySQL's CLONE LOCAL; new StatefulSets restored from the newest backup, and to a point in time, hold every row they should", func() {
		eventuallySettled(3, 4*time.Minute)
		startS3()
		DeferCleanup(func() {
			_, _ = kubectl("annotate", "statefulset", sts, inject.AnnBackupSchedule+"-", inject.AnnBackupURI+"-", inject.AnnBackupSecret+"-")
		})
		mustKubectl("annotate", "statefulset", sts, "--overwrite",
			inject.AnnBackupURI+"=s3://backups/e2e"+s3Query, inject.AnnBackupSecret+"=bucket-creds")
		_, err := sql(sts+"-master", "INSERT INTO orders (note) VALUES ('before-the-backup')")
		Expect(err).NotTo(HaveOccurred())
		want, err := rootSQL(master(), "SELECT COUNT(*), MAX(id) FROM shop.orders")
		Expect(err).NotTo(HaveOccurred())
		start := time.Now()
		out, err := replicant("backup", "-a", alias())
		took := time.Since(start).Round(time.Second)
		Expect(err).NotTo(HaveOccurred(), out)
		Expect(out).To(ContainSubstring("committed: GTID "))
		_, err = sql(sts+"-master", "INSERT INTO orders (note) VALUES ('after-the-backup')")
		Expect(err).NotTo(HaveOccurred())

		restoreStart := time.Now()
		applyCopy(readExample("mysql.yaml"), "myrestored", 2, "mysql:9.7", map[string]string{
			inject.AnnInitURI: "s3://backups/e2e/default/" + sts + "/latest" + s3Query, inject.AnnBackupSecret: "bucket-creds"})
		Eventually(func() string { return rolesOf("myrestored") }).WithTimeout(8 * time.Minute).WithPolling(2 * time.Second).
			Should(Equal("myrestored-0=master/yes myrestored-1=replica/yes"))
		restored := time.Since(restoreStart).Round(time.Second)
		Expect(cloneLog("myrestored-0")).To(ContainSubstring("decision: restore from init-uri"))
		Expect(cloneLog("myrestored-0")).To(ContainSubstring("restore complete"))
		Expect(cloneLog("myrestored-1")).To(ContainSubstring("decision: clone from"))
		for _, pod := range []string{"myrestored-0", "myrestored-1"} {
			Eventually(func() (string, error) {
				return rootSQL(pod, "SELECT COUNT(*), MAX(id) FROM shop.orders")
			}).WithTimeout(time.Minute).Should(Equal(want), "%s holds what the master held at the backup", pod)
			Expect(rootSQL(pod, "SELECT COUNT(*) FROM shop.orders WHERE note = 'after-the-backup'")).To(Equal("0"))
		}
		// The restored cluster takes writes through its own Service.
		_, err = sql("myrestored-master", "INSERT INTO orders (note) VALUES ('on-the-restored-cluster')")
		Expect(err).NotTo(HaveOccurred())
		AddReportEntry("MySQL backup and restore", fmt.Sprintf("on demand in %v: %s; a 2-pod StatefulSet restored from it up and settled in %v with %s (rows, max id)",
			took, strings.TrimSpace(out), restored, want), ReportEntryVisibilityAlways)

		restoresToAPointInTime(readExample("mysql.yaml"), "mysql:9.7", "mypitr")
	})
})
