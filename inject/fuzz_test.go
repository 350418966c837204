package inject

import (
	"sort"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"

	"github.com/replicant-dev/replicant/backup"
)

// FuzzAnnotations feeds arbitrary annotation values through the parser and the
// mutation. Whatever the input: no panic; an accepted value is in its allowed range
// and the mutation is idempotent; a refusal names an annotation.
func FuzzAnnotations(f *testing.F) {
	f.Add("mariadb", "100", "30s", "auto", "semi-sync", "@daily", "s3://b/p", "3", "mariadb")
	f.Add("mysql", "-5", "1h", "manual", "async", "0 3 * * *", "gs://b", "x", "")
	f.Add("", "4294967295", "0", "", "", "* * *", "ftp://x", "-1", "nope")
	f.Fuzz(func(t *testing.T, flavor, offset, lag, failover, durability, schedule, uri, retention, container string) {
		sts := userStatefulSet()
		sts.Annotations = map[string]string{}
		set := func(k, v string) {
			if v != "" {
				sts.Annotations[k] = v
			}
		}
		set(AnnFlavor, flavor)
		set(AnnServerIDOffset, offset)
		set(AnnMaxLag, lag)
		set(AnnFailover, failover)
		set(AnnDurability, durability)
		set(AnnBackupSchedule, schedule)
		set(AnnBackupURI, uri)
		set(AnnBackupRetention, retention)
		set(AnnContainer, container)

		opts, err := ParseOptions(sts)
		if err != nil {
			msg := err.Error()
			if !strings.Contains(msg, Prefix) {
				t.Fatalf("refusal names no annotation: %q", msg)
			}
			return
		}
		if opts.ServerIDOffset < 1 || opts.ServerIDOffset > MaxServerIDOffset {
			t.Fatalf("accepted offset %d", opts.ServerIDOffset)
		}
		if opts.MaxLag < time.Second {
			t.Fatalf("accepted max-lag %v", opts.MaxLag)
		}
		allowed := map[string]bool{"auto": true, "manual": true, "semi-sync": true, "async": true, "mariadb": true, "mysql": true}
		for _, v := range []string{string(opts.Failover), string(opts.Durability), string(opts.Flavor)} {
			if !allowed[v] {
				t.Fatalf("accepted value %q", v)
			}
		}
		if _, err := backup.ParseRetention(opts.BackupRetention); opts.BackupRetention != "" && err != nil {
			t.Fatalf("accepted retention %q", opts.BackupRetention)
		}

		once, _, err := Mutate(sts, testConfig)
		if err != nil {
			return // e.g. flavor mysql, refused by the mutation with its own message
		}
		twice, _, err := Mutate(once, testConfig)
		if err != nil || !equality.Semantic.DeepEqual(once, twice) {
			t.Fatalf("second pass differs (err %v)", err)
		}
	})
}

// BenchmarkMutate measures one mutation of a typical StatefulSet and reports the p99.
func BenchmarkMutate(b *testing.B) {
	sts := userStatefulSet()
	durations := make([]time.Duration, 0, b.N)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		if _, _, err := Mutate(sts, testConfig); err != nil {
			b.Fatal(err)
		}
		durations = append(durations, time.Since(start))
	}
	b.StopTimer()
	sort.Slice(durations, func(i, j int) bool { return durations[i] < durations[j] })
	b.ReportMetric(float64(durations[len(durations)*99/100].Microseconds()), "p99-µs")
}
