package mariadb

import (
	"context"
	"os"
	"testing"
	"time"
)

func TestMain(m *testing.M) { os.Exit(Main(m)) }

// TestServersStartWithReplicantsConfig: three servers boot from the fragment `sidecar
// config` writes, each with its own server_id, read-only, binlog and GTID settings.
func TestServersStartWithReplicantsConfig(t *testing.T) {
	start := time.Now()
	servers := Start(t, 3, Options{})
	t.Logf("3 servers up in %v", time.Since(start))
	ctx := context.Background()
	for i, s := range servers {
		var serverID int64
		var readOnly, logBin, strict, logReplicaUpdates int
		var format, reportHost string
		err := s.DB().QueryRowContext(ctx, "SELECT @@server_id, @@read_only, @@log_bin, @@gtid_strict_mode, @@log_slave_updates, @@binlog_format, @@report_host").
			Scan(&serverID, &readOnly, &logBin, &strict, &logReplicaUpdates, &format, &reportHost)
		if err != nil {
			t.Fatal(err)
		}
		if serverID != int64(100+i) || readOnly != 1 || logBin != 1 || strict != 1 || logReplicaUpdates != 1 || format != "ROW" {
			t.Errorf("%s: server_id %d read_only %d log_bin %d strict %d log_slave_updates %d format %s", s.Name, serverID, readOnly, logBin, strict, logReplicaUpdates, format)
		}
		if want := s.Name + ".mysql.default"; reportHost != want {
			t.Errorf("%s: report_host %s, want %s", s.Name, reportHost, want)
		}
	}
	// Kill and restart on the same datadir.
	s := servers[1]
	s.Exec(ctx, "CREATE DATABASE keep", "CREATE TABLE keep.t (id INT PRIMARY KEY)", "INSERT INTO keep.t VALUES (1)")
	s.Kill()
	if s.Running() {
		t.Fatal("still running after Kill")
	}
	s.Restart()
	var n int
	if err := s.DB().QueryRowContext(ctx, "SELECT COUNT(*) FROM keep.t").Scan(&n); err != nil || n != 1 {
		t.Fatalf("after restart: %d rows, %v", n, err)
	}
	s.Stop()
}
