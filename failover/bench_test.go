package failover_test

import (
	"fmt"
	"os"
	"sort"
	"strconv"
	"testing"
	"time"

	"github.com/replicant-dev/replicant/failover"
	"github.com/replicant-dev/replicant/inject"
	"github.com/replicant-dev/replicant/test/managed"
	"github.com/replicant-dev/replicant/test/mariadb"
)

// BenchmarkFailoverAndTakeover measures, in one run on one cluster of 3 real servers:
// master SIGKILL -> a new master recorded and writable (REPLICANT_BENCH_ROUNDS, 10, kills;
// goal p50 <= 3 s), and the writes blocked by a graceful takeover (as many takeovers;
// goal p50 <= 200 ms). The controller runs with its defaults: 1 s probe interval
// (REPLICANT_BENCH_PROBE_INTERVAL overrides), failure threshold 3 intervals.
// Run with -benchtime 1x.
func BenchmarkFailoverAndTakeover(b *testing.B) {
	for _, flavor := range mariadb.Flavors {
		b.Run(flavor, func(b *testing.B) { benchFailoverAndTakeover(b, flavor) })
	}
}

func benchFailoverAndTakeover(b *testing.B, flavor string) {
	rounds := 10
	if n, err := strconv.Atoi(os.Getenv("REPLICANT_BENCH_ROUNDS")); err == nil && n > 0 {
		rounds = n
	}
	interval := time.Second
	if d, err := time.ParseDuration(os.Getenv("REPLICANT_BENCH_PROBE_INTERVAL")); err == nil && d > 0 {
		interval = d
	}
	lease := 3 * time.Second
	if d, err := time.ParseDuration(os.Getenv("REPLICANT_BENCH_WRITE_LEASE")); err == nil && d > 0 {
		lease = d
	}
	b.Logf("probe interval %v, write lease %v", interval, lease)
	cl := managed.StartWith(b, 3, managed.Options{Flavor: flavor, Addressing: failover.SourcePodIP, AntiFlap: time.Millisecond, ProbeInterval: interval, WriteLease: lease})
	all := map[string]string{"db-0": "master/yes", "db-1": "replica/yes", "db-2": "replica/yes"}
	cl.Eventually("bootstrap", cl.Want(all))
	settled := func() {
		cl.Eventually("settled", func() error {
			got, err := cl.Topology()
			if err != nil {
				return err
			}
			masters, healthy := 0, 0
			for _, v := range got {
				if v == "master/yes" {
					masters++
				} else if v == "replica/yes" {
					healthy++
				}
			}
			if masters != 1 || healthy != 2 {
				return fmt.Errorf("%v", got)
			}
			return nil
		})
	}

	var failovers, blocked, takeovers []time.Duration
	b.ResetTimer()
	for i := 0; i < rounds; i++ {
		settled()
		old := cl.Server(cl.Master())
		killed := time.Now()
		old.Kill()
		var next *mariadb.Server
		cl.Eventually("failover", func() error {
			m := cl.Master()
			if m == old.Name || m == "" {
				return fmt.Errorf("master still %s", m)
			}
			if next = cl.Server(m); cl.ReadOnly(next) {
				return fmt.Errorf("%s not writable yet", m)
			}
			return nil
		})
		failovers = append(failovers, time.Since(killed))
		old.Restart()
	}
	for i := 0; i < rounds; i++ {
		settled()
		target := ""
		for _, s := range cl.Servers {
			if s.Name != cl.Master() {
				target = s.Name
				break
			}
		}
		asked := time.Now()
		cl.Request(inject.AnnTakeoverTo, target)
		op := cl.Outcome(inject.AnnTakeoverTo)
		if op.Result != failover.ResultOK {
			b.Fatalf("takeover %d: %+v", i, op)
		}
		takeovers = append(takeovers, time.Since(asked))
		blocked = append(blocked, time.Duration(op.WritesBlockedMs)*time.Millisecond)
	}
	b.StopTimer()
	p50 := func(d []time.Duration) time.Duration {
		s := append([]time.Duration(nil), d...)
		sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
		return s[len(s)/2]
	}
	max := func(d []time.Duration) time.Duration {
		m := d[0]
		for _, v := range d {
			if v > m {
				m = v
			}
		}
		return m
	}
	b.Logf("\n%-40s %8s %8s %8s\n%-40s %8d %8d %8d\n%-40s %8d %8d %8d\n%-40s %8d %8d %8d",
		"measure (ms, "+fmt.Sprint(rounds)+" rounds)", "p50", "max", "goal",
		"SIGKILL -> new master writable", p50(failovers).Milliseconds(), max(failovers).Milliseconds(), 3000,
		"takeover: writes blocked", p50(blocked).Milliseconds(), max(blocked).Milliseconds(), 200,
		"takeover: request -> done", p50(takeovers).Milliseconds(), max(takeovers).Milliseconds(), 0)
	b.ReportMetric(float64(p50(failovers).Milliseconds()), "failover-p50-ms")
	b.ReportMetric(float64(p50(blocked).Milliseconds()), "blocked-p50-ms")
	b.ReportMetric(float64(p50(failovers).Milliseconds())/3000, "failover-ratio-to-goal")
	b.ReportMetric(float64(p50(blocked).Milliseconds())/200, "blocked-ratio-to-goal")
}
