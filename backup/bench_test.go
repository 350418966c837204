package backup_test

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

	"github.com/replicant-dev/replicant/backup"
	"github.com/replicant-dev/replicant/sidecar"
	"github.com/replicant-dev/replicant/test/mariadb"
	"github.com/replicant-dev/replicant/test/objectstore"
)

// BenchmarkBackupAndRestoreVersusPipe backs up a datadir of REPLICANT_BENCH_MIB
// (default 1024) MiB to rclone's S3 server through replicant (sidecar -> HTTP -> zstd
// -> upload -> manifest) and through a bare `mariadb-backup --stream | zstd | rclone
// rcat` pipe, then restores it both ways (replicant: download, verify, decompress,
// extract, prepare, move; bare: `rclone cat | zstd -d | mbstream -x` and the same
// --prepare), and reports the four throughputs and the two ratios (goal >= 0.9 each).
// Run with -benchtime 1x.
func BenchmarkBackupAndRestoreVersusPipe(b *testing.B) {
	mib := 1024
	if v, err := strconv.Atoi(os.Getenv("REPLICANT_BENCH_MIB")); err == nil && v > 0 {
		mib = v
	}
	ctx := context.Background()
	store := objectstore.Start(b)
	servers := mariadb.Start(b, 1, mariadb.Options{ExtraConfig: "innodb_buffer_pool_size = 512M\ninnodb_log_file_size = 256M"})
	s := servers[0]
	mariadb.Fill(b, s, mib)
	src := donor(b, s, 0)
	creds := filepath.Join(b.TempDir(), "creds.cnf")
	os.WriteFile(creds, []byte(fmt.Sprintf("!include %s\n[mariadb-backup]\nuser=%s\npassword=%s\nhost=%s\nport=3306\n",
		s.ConfigPath(), backupUser, backupPassword, s.Host)), 0o600)
	bash := pipeShell(b, store)
	c, err := backup.OpenCluster(ctx, store.URI("bench"), "default", "db")
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()

	var pipeUp, upTotal, pipeDown, downTotal time.Duration
	var bytes int64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		bash(fmt.Sprintf("mariadb-backup --defaults-file=%s --backup --stream=xbstream --target-dir=%s 2>/dev/null | zstd -q -3 -T0 | %s --config=/dev/null rcat s3:%s/bare/%d.zst",
			creds, b.TempDir(), objectstore.Binary(), objectstore.Bucket, i))
		pipeUp += time.Since(start)

		start = time.Now()
		m, err := c.Take(ctx, takeOptionsB(b, src))
		if err != nil {
			b.Fatal(err)
		}
		upTotal += time.Since(start)
		bytes += m.StreamBytes

		dir := b.TempDir()
		start = time.Now()
		bash(fmt.Sprintf("%s --config=/dev/null cat s3:%s/bare/%d.zst | zstd -q -d | mbstream -x -C %s && mariadb-backup --prepare --target-dir=%s 2>/dev/null",
			objectstore.Binary(), objectstore.Bucket, i, dir, dir))
		pipeDown += time.Since(start)

		target := b.TempDir()
		uri := store.URI("bench/default/db/" + m.Name)
		start = time.Now()
		if _, err := sidecar.Clone(ctx, sidecar.CloneConfig{Datadir: target, PodName: "db-1", InitURI: uri,
			Restore: backup.Restorer(uri, "mariadb", testr.NewWithInterface(b, testr.Options{})), ProbeTimeout: 100 * time.Millisecond,
			Log: testr.NewWithInterface(b, testr.Options{})}); err != nil {
			b.Fatal(err)
		}
		downTotal += time.Since(start)
		time.Sleep(time.Second) // a backup's name is its start, to the second
	}
	b.StopTimer()
	reportVersusPipe(b, bytes, pipeUp, upTotal, pipeDown, downTotal)
}

func takeOptionsB(b *testing.B, sources ...string) backup.TakeOptions {
	return backup.TakeOptions{Namespace: "default", StatefulSet: "db", Sources: sources,
		User: backupUser, Password: backupPassword, Log: testr.NewWithInterface(b, testr.Options{})}
}

// BenchmarkMySQLBackupAndRestoreVersusPipe is the same comparison on MySQL: replicant
// (the server's CLONE LOCAL into the sidecar's scratch directory, a private start of
// the copy to check it and read its GTID set, tar over HTTP, zstd, upload, manifest;
// restore: download, verify, decompress, unpack, a private start to check it, move)
// against a bare `CLONE LOCAL` then `tar | zstd | rclone rcat`, restored by `rclone cat
// | zstd -d | tar -x` (no check at all). Run with -benchtime 1x.
func BenchmarkMySQLBackupAndRestoreVersusPipe(b *testing.B) {
	mib := 1024
	if v, err := strconv.Atoi(os.Getenv("REPLICANT_BENCH_MIB")); err == nil && v > 0 {
		mib = v
	}
	ctx := context.Background()
	store := objectstore.Start(b)
	s := mariadb.Start(b, 1, mariadb.Options{Flavor: "mysql", ExtraConfig: "innodb_buffer_pool_size = 512M"})[0]
	s.Exec(ctx, "SET GLOBAL super_read_only = OFF")
	mariadb.Fill(b, s, mib)
	src := donor(b, s, 0)
	bash := pipeShell(b, store)
	c, err := backup.OpenCluster(ctx, store.URI("bench"), "default", "db")
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()

	var pipeUp, upTotal, pipeDown, downTotal time.Duration
	var bytes int64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		copyDir := filepath.Join(b.TempDir(), "copy")
		start := time.Now()
		s.Exec(ctx, "CLONE LOCAL DATA DIRECTORY = '"+copyDir+"'")
		bash(fmt.Sprintf("tar -C %s -cf - . | zstd -q -3 -T0 | %s --config=/dev/null rcat s3:%s/bare/%d.zst && rm -rf %s",
			copyDir, objectstore.Binary(), objectstore.Bucket, i, copyDir))
		pipeUp += time.Since(start)

		opts := takeOptionsB(b, src)
		opts.Flavor = "mysql"
		start = time.Now()
		m, err := c.Take(ctx, opts)
		if err != nil {
			b.Fatal(err)
		}
		upTotal += time.Since(start)
		bytes += m.StreamBytes

		dir := b.TempDir()
		start = time.Now()
		bash(fmt.Sprintf("%s --config=/dev/null cat s3:%s/bare/%d.zst | zstd -q -d | tar -x -C %s", objectstore.Binary(), objectstore.Bucket, i, dir))
		pipeDown += time.Since(start)

		target := b.TempDir()
		uri := store.URI("bench/default/db/" + m.Name)
		start = time.Now()
		if _, err := sidecar.Clone(ctx, sidecar.CloneConfig{Flavor: "mysql", Datadir: target, PodName: "db-1", InitURI: uri,
			Restore: backup.Restorer(uri, "mysql", testr.NewWithInterface(b, testr.Options{})), ProbeTimeout: 100 * time.Millisecond,
			Mysqld: mariadb.MySQLCommand(), MysqldOptions: mariadb.MySQLOptions(), Log: testr.NewWithInterface(b, testr.Options{})}); err != nil {
			b.Fatal(err)
		}
		downTotal += time.Since(start)
		time.Sleep(time.Second) // a backup's name is its start, to the second
	}
	b.StopTimer()
	reportVersusPipe(b, bytes, pipeUp, upTotal, pipeDown, downTotal)
}

// pipeShell runs a bare pipe's script in bash (pipefail) with rclone configured, from
// its environment, as the S3 client of store.
func pipeShell(b *testing.B, store *objectstore.Server) func(script string) {
	env := append(os.Environ(), "RCLONE_CONFIG_S3_TYPE=s3", "RCLONE_CONFIG_S3_PROVIDER=Other",
		"RCLONE_CONFIG_S3_ENDPOINT=http://"+store.Addr, "RCLONE_CONFIG_S3_ACCESS_KEY_ID="+objectstore.AccessKey,
		"RCLONE_CONFIG_S3_SECRET_ACCESS_KEY="+objectstore.SecretKey, "RCLONE_CONFIG_S3_REGION=us-east-1")
	return func(script string) {
		cmd := exec.Command("bash", "-o", "pipefail", "-c", script)
		cmd.Env = env
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("%s: %v %s", script, err, out)
		}
	}
}

// reportVersusPipe reports the four throughputs (bytes streamed per backup over each
// way's time) and the two ratios, replicant's over the bare pipe's (goal >= 0.9).
func reportVersusPipe(b *testing.B, bytes int64, pipeUp, upTotal, pipeDown, downTotal time.Duration) {
	per := float64(bytes) / float64(b.N) / (1 << 20)
	rate := func(d time.Duration) float64 { return per / (d.Seconds() / float64(b.N)) }
	b.ReportMetric(per, "MiB/backup")
	b.ReportMetric(rate(pipeUp), "pipe-backup-MiB/s")
	b.ReportMetric(rate(upTotal), "replicant-backup-MiB/s")
	b.ReportMetric(rate(upTotal)/rate(pipeUp), "backup-ratio")
	b.ReportMetric(rate(pipeDown), "pipe-restore-MiB/s")
	b.ReportMetric(rate(downTotal), "replicant-restore-MiB/s")
	b.ReportMetric(rate(downTotal)/rate(pipeDown), "restore-ratio")
}
