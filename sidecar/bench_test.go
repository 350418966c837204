package sidecar_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"

	"github.com/replicant-dev/replicant/sidecar"
	"github.com/replicant-dev/replicant/test/mariadb"
)

// BenchmarkCloneVersusPipe clones a datadir of REPLICANT_BENCH_MIB (default 1024) MiB
// through replicant (sidecar serve -> HTTP -> clone: stream, extract, prepare, move)
// and through a bare `mariadb-backup --stream | mbstream -x` pipe followed by the same
// --prepare, in the same run, and reports both throughputs and their ratio (goal >= 0.9).
// Run with -benchtime 1x: each iteration is one clone of each kind.
func BenchmarkCloneVersusPipe(b *testing.B) {
	mib := 1024
	if v, err := strconv.Atoi(os.Getenv("REPLICANT_BENCH_MIB")); err == nil && v > 0 {
		mib = v
	}
	ctx := context.Background()
	servers := mariadb.Start(b, 1, mariadb.Options{ExtraConfig: "innodb_buffer_pool_size = 512M\ninnodb_log_file_size = 256M"})
	s := servers[0]
	loadStart := time.Now()
	mariadb.Fill(b, s, mib)
	b.Logf("loaded %d MiB in %v", mib, time.Since(loadStart).Round(time.Second))
	_, url := donor(b, s, 0)
	creds := filepath.Join(b.TempDir(), "creds.cnf")
	os.WriteFile(creds, []byte(fmt.Sprintf("!include %s\n[mariadb-backup]\nuser=%s\npassword=\"%s\"\nhost=%s\nport=3306\n",
		s.ConfigPath(), backupUser, "backup-pw-\\\"x'", s.Host)), 0o600)

	var pipeTotal, cloneTotal time.Duration
	var bytes int64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		dir := b.TempDir()
		start := time.Now()
		pipe := exec.Command("bash", "-o", "pipefail", "-c", fmt.Sprintf(
			"mariadb-backup --defaults-file=%s --backup --stream=xbstream --target-dir=%s 2>/dev/null | mbstream -x -C %s && mariadb-backup --prepare --target-dir=%s 2>/dev/null",
			creds, b.TempDir(), dir, dir))
		if out, err := pipe.CombinedOutput(); err != nil {
			b.Fatalf("bare pipe: %v %s", err, out)
		}
		pipeTotal += time.Since(start)
		bytes += dirSize(dir)

		target := b.TempDir()
		start = time.Now()
		if _, err := sidecar.Clone(ctx, sidecar.CloneConfig{Datadir: target, PodName: "db-1", ReplicasURL: url,
			BackupUser: backupUser, BackupPassword: backupPassword, Log: testr.NewWithInterface(b, testr.Options{})}); err != nil {
			b.Fatal(err)
		}
		cloneTotal += time.Since(start)
	}
	b.StopTimer()
	per := float64(bytes) / float64(b.N) / (1 << 20)
	pipeRate := per / (pipeTotal.Seconds() / float64(b.N))
	cloneRate := per / (cloneTotal.Seconds() / float64(b.N))
	b.ReportMetric(per, "MiB/clone")
	b.ReportMetric(pipeRate, "pipe-MiB/s")
	b.ReportMetric(cloneRate, "replicant-MiB/s")
	b.ReportMetric(cloneRate/pipeRate, "ratio")
}

func dirSize(dir string) int64 {
	var n int64
	filepath.Walk(dir, func(_ string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() {
			n += info.Size()
		}
		return nil
	})
	return n
}

// BenchmarkCloneInstanceVersusBareClone (MySQL) clones a datadir of
// REPLICANT_BENCH_MIB (default 1024) MiB through replicant's decision table (the
// donor's sidecar names its server; a private mysqld is initialised, clones, is
// started again on the copy to check it, and the copy moves into place) and by a bare
// CLONE INSTANCE ... DATA DIRECTORY between the same two servers, in the same run, and
// reports both throughputs and their ratio (goal >= 0.9). -benchtime 1x.
func BenchmarkCloneInstanceVersusBareClone(b *testing.B) {
	mib := 1024
	if v, err := strconv.Atoi(os.Getenv("REPLICANT_BENCH_MIB")); err == nil && v > 0 {
		mib = v
	}
	ctx := context.Background()
	servers := mariadb.Start(b, 2, mariadb.Options{Flavor: "mysql", ExtraConfig: "innodb_buffer_pool_size = 512M"})
	s, recipient := servers[0], servers[1]
	_, url := donor(b, s, 0) // opens writes (super_read_only holds off even root)
	loadStart := time.Now()
	mariadb.Fill(b, s, mib)
	b.Logf("loaded %d MiB in %v", mib, time.Since(loadStart).Round(time.Second))
	recipient.Exec(ctx, "SET GLOBAL clone_valid_donor_list = '"+s.Addr()+"'")

	var bareTotal, cloneTotal time.Duration
	var bytes int64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		dir := filepath.Join(b.TempDir(), "bare")
		start := time.Now()
		recipient.Exec(ctx, fmt.Sprintf("CLONE INSTANCE FROM 'replicant_repl'@'%s':%d IDENTIFIED BY 'repl-pw' DATA DIRECTORY = '%s'", s.Host, s.Port, dir))
		bareTotal += time.Since(start)
		bytes += dirSize(dir)

		target := b.TempDir()
		start = time.Now()
		if _, err := sidecar.Clone(ctx, sidecar.CloneConfig{Flavor: "mysql", Datadir: target, PodName: "db-1", ReplicasURL: url,
			CloneUser: "replicant_repl", ClonePassword: "repl-pw", Mysqld: mariadb.MySQLCommand(), MysqldOptions: mariadb.MySQLOptions(),
			Log: testr.NewWithInterface(b, testr.Options{})}); err != nil {
			b.Fatal(err)
		}
		cloneTotal += time.Since(start)
	}
	b.StopTimer()
	per := float64(bytes) / float64(b.N) / (1 << 20)
	bareRate := per / (bareTotal.Seconds() / float64(b.N))
	cloneRate := per / (cloneTotal.Seconds() / float64(b.N))
	b.ReportMetric(per, "MiB/clone")
	b.ReportMetric(bareRate, "bare-MiB/s")
	b.ReportMetric(cloneRate, "replicant-MiB/s")
	b.ReportMetric(cloneRate/bareRate, "ratio")
}
