package failover_test

import (
	"bytes"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/pprof/profile"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/replicant-dev/replicant/failover"
	"github.com/replicant-dev/replicant/test/managed"
)

// BenchmarkManyClusters: one manager, a real kube-apiserver, REPLICANT_SCALE_CLUSTERS
// (30) clusters of 3 real mariadbd each, the controller at its production settings
// (1 s probe interval, 3 s write lease). It prints, at steady state over
// REPLICANT_SCALE_WINDOW (60 s): API writes per cluster per minute (goal 0),
// reconciles per cluster per second, the manager's CPU per server per second (the
// process's CPU minus its baseline before the manager started; the sidecars' answers
// to it are in the same process and counted too) and its memory per cluster (Go heap
// after GC); then the time from a master's SIGKILL to a new master recorded, alone
// (one cluster, its own manager), in the fleet, and in the fleet while every server
// of 5 other clusters hangs (SIGSTOP: probes of those wait for their timeouts).
// Goal: the last within 1.2x of alone. Run with -benchtime 1x.
func BenchmarkManyClusters(b *testing.B) {
	n := envInt("REPLICANT_SCALE_CLUSTERS", 30)
	window := time.Minute
	if d, err := time.ParseDuration(os.Getenv("REPLICANT_SCALE_WINDOW")); err == nil && d > 0 {
		window = d
	}
	opts := managed.Options{Addressing: failover.SourcePodIP, AntiFlap: time.Millisecond, ProbeInterval: time.Second,
		WriteLease: 3 * time.Second, Timeout: 30 * time.Minute}

	var alone time.Duration
	b.Run("alone", func(b *testing.B) {
		cl := managed.StartWith(b, 3, opts)
		cl.Eventually("bootstrap", cl.Want(map[string]string{"db-0": "master/yes", "db-1": "replica/yes", "db-2": "replica/yes"}))
		alone = timeFailover(b, cl)
	})

	b.Run(fmt.Sprintf("%d-clusters", n), func(b *testing.B) {
		names := make([]string, n)
		for i := range names {
			names[i] = fmt.Sprintf("c%02d", i)
		}
		var baseHeap uint64
		memBefore := memAvailable()
		fleetOpts := opts
		fleetOpts.BeforeManager = func() { baseHeap = heapAfterGC() }
		start := time.Now()
		clusters := managed.StartFleet(b, names, 3, fleetOpts)
		for _, cl := range clusters {
			cl.Eventually("bootstrap "+cl.Sts.Name, func() error { return settledCluster(cl) })
		}
		b.Logf("%d clusters of 3 servers bootstrapped in %v; machine memory used by them: %.1f GiB",
			n, time.Since(start).Round(time.Second), float64(memBefore-memAvailable())/(1<<30))
		time.Sleep(5 * time.Second) // the bootstrap's last labels and Events land

		writesBefore, _ := clusters[0].Requests.Writes()
		reconcilesBefore := reconciles(b)
		var profile bytes.Buffer
		if err := pprof.StartCPUProfile(&profile); err != nil {
			b.Fatal(err)
		}
		cpuBefore, at := processCPU(), time.Now()
		time.Sleep(window)
		elapsed := time.Since(at)
		cpu := processCPU() - cpuBefore
		pprof.StopCPUProfile()
		managerCPU := labelledCPU(b, &profile, managed.ProfileLabel, "manager")
		what, writes := clusters[0].Requests.Since(writesBefore)
		recs := reconciles(b) - reconcilesBefore
		heap := heapAfterGC()
		servers := float64(3 * n)
		cpuPerServer := float64(managerCPU) / float64(elapsed) / servers // seconds of CPU per second, per server
		b.Logf("steady state over %v: %d API writes (%.2f per cluster per minute) %s; %.2f reconciles per cluster per second; manager CPU %.3f ms per server per second (%v in all; the whole test process, sidecars included, %.1f%% of a core); manager heap %.0f KiB per cluster",
			elapsed.Round(time.Second), writes, float64(writes)/float64(n)/elapsed.Minutes(), what,
			recs/float64(n)/elapsed.Seconds(), cpuPerServer*1000, managerCPU.Round(time.Millisecond), 100*float64(cpu)/float64(elapsed),
			(float64(heap)-float64(baseHeap))/float64(n)/1024)
		b.ReportMetric(float64(writes)/float64(n)/elapsed.Minutes(), "api-writes/cluster/min")
		b.ReportMetric(cpuPerServer*1000, "cpu-ms/server/s")
		b.ReportMetric((float64(heap)-float64(baseHeap))/float64(n)/1024, "heap-KiB/cluster")

		inFleet := timeFailover(b, clusters[0])
		if n < 7 {
			b.Fatalf("REPLICANT_SCALE_CLUSTERS %d: at least 7 (2 fail over, 5 hang)", n)
		}
		broken := clusters[n-5:]
		for _, cl := range broken {
			for _, s := range cl.Servers {
				s.Freeze()
			}
		}
		b.Cleanup(func() {
			for _, cl := range broken {
				for _, s := range cl.Servers {
					s.Thaw()
				}
			}
		})
		time.Sleep(5 * time.Second) // their probes hang now
		withBroken := timeFailover(b, clusters[1])
		b.Logf("failover (SIGKILL to a new master recorded): alone %v, in the fleet %v (%.2fx), with 5 clusters hung %v (%.2fx)",
			alone.Round(time.Millisecond), inFleet.Round(time.Millisecond), float64(inFleet)/float64(alone),
			withBroken.Round(time.Millisecond), float64(withBroken)/float64(alone))
		b.ReportMetric(float64(withBroken)/float64(alone), "failover-hung/alone")
	})
}

// timeFailover kills cl's master and returns the time until another is recorded.
func timeFailover(b *testing.B, cl *managed.Cluster) time.Duration {
	b.Helper()
	old := cl.Master()
	start := time.Now()
	cl.Server(old).Kill()
	for time.Since(start) < 2*time.Minute {
		if m := cl.Master(); m != "" && m != old {
			return time.Since(start)
		}
		time.Sleep(20 * time.Millisecond)
	}
	b.Fatalf("%s: no failover from %s in 2 minutes", cl.Sts.Name, old)
	return 0
}

// settledCluster: one healthy master, every other pod a healthy replica.
func settledCluster(cl *managed.Cluster) error {
	got, err := cl.Topology()
	if err != nil {
		return err
	}
	masters, replicas := 0, 0
	for _, v := range got {
		switch v {
		case "master/yes":
			masters++
		case "replica/yes":
			replicas++
		}
	}
	if masters != 1 || replicas != len(got)-1 {
		return fmt.Errorf("%v", got)
	}
	return nil
}

// reconciles is the controller's reconcile count so far (controller-runtime's metric).
func reconciles(b *testing.B) float64 {
	families, err := metrics.Registry.Gather()
	if err != nil {
		b.Fatal(err)
	}
	var total float64
	for _, f := range families {
		if f.GetName() != "controller_runtime_reconcile_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			total += m.GetCounter().GetValue()
		}
	}
	return total
}

// labelledCPU sums the CPU time of the profile's samples whose goroutines carry the
// label key=value.
func labelledCPU(b *testing.B, data *bytes.Buffer, key, value string) time.Duration {
	p, err := profile.Parse(data)
	if err != nil {
		b.Fatal(err)
	}
	cpu := -1
	for i, st := range p.SampleType {
		if st.Type == "cpu" {
			cpu = i
		}
	}
	if cpu < 0 {
		b.Fatalf("no cpu samples in the profile: %v", p.SampleType)
	}
	var total int64
	for _, s := range p.Sample {
		if slices.Contains(s.Label[key], value) {
			total += s.Value[cpu]
		}
	}
	return time.Duration(total)
}

func processCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func heapAfterGC() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// memAvailable is the machine's MemAvailable, in bytes.
func memAvailable() int64 {
	data, _ := os.ReadFile("/proc/meminfo")
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, "MemAvailable:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			return kb * 1024
		}
	}
	return 0
}

func envInt(name string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil && n > 0 {
		return n
	}
	return def
}
