package sidecar_test

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"

	"github.com/replicant-dev/replicant/mysql"
	"github.com/replicant-dev/replicant/sidecar"
	"github.com/replicant-dev/replicant/test/mariadb"
)

// serveMySQLSidecar serves s's sidecar as a MySQL pod has it: backups go through a
// scratch directory (returned) the server writes and the sidecar empties.
func serveMySQLSidecar(t testing.TB, s *mariadb.Server) (url, scratch string) {
	t.Helper()
	scratch = t.TempDir()
	srv, err := sidecar.NewServer(sidecar.ServeConfig{Datadir: s.Datadir, ServerAddr: s.Addr(), Flavor: "mysql", ScratchDir: scratch,
		Mysqld: mariadb.MySQLCommand(), MysqldOptions: mariadb.MySQLOptions(), BackupUser: backupUser, BackupPassword: backupPassword, Log: testr.NewWithInterface(t, testr.Options{})})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(func() { hs.Close(); srv.Close() })
	return hs.URL, scratch
}

// TestMySQLBackupWhileWritingRestoresThenReplicates (MySQL): /xbackup streams the
// server's CLONE LOCAL copy as a tar archive while a writer keeps writing, with the
// GTID set the copy ends at; the scratch copy is gone afterwards. The archive restored
// into an empty datadir (the clone step's init-uri path) boots, holds exactly that
// GTID set, and replicates from the master by auto-position to every row the master
// has: data and position agree. The backed-up server's replica settings are not
// restored.
func TestMySQLBackupWhileWritingRestoresThenReplicates(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	servers := mariadb.Start(t, 2, mariadb.Options{Flavor: "mysql"})
	m, r := servers[0], servers[1]
	root, _ := donor(t, m, 200)
	url, scratch := serveMySQLSidecar(t, m)
	emptyDatadir(t, r)
	// Replica settings, as a backup taken from a replica has them (not started).
	m.Exec(ctx, "CHANGE REPLICATION SOURCE TO SOURCE_HOST = '192.0.2.1', SOURCE_PORT = 3306, SOURCE_USER = 'x', SOURCE_AUTO_POSITION = 1")
	written, finishWriting := startRowWriter(t, m)

	stream, err := sidecar.RequestBackup(ctx, url, backupUser, backupPassword, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	archive := filepath.Join(t.TempDir(), "backup.tar")
	f, err := os.Create(archive)
	if err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(f, stream)
	f.Close()
	stream.Close()
	if err != nil {
		t.Fatal(err)
	}
	info, err := stream.Finish()
	if err != nil {
		t.Fatal(err)
	}
	var version string
	m.DB().QueryRow("SELECT @@version").Scan(&version)
	if info.Format != sidecar.FormatTar || info.GTID == "" || info.ServerVersion != version {
		t.Fatalf("backup of %d bytes: %+v; want format tar, a GTID set and version %s", n, info, version)
	}
	if left, _ := os.ReadDir(scratch); len(left) != 0 {
		t.Errorf("the backup left its copy in the scratch directory: %v", left)
	}
	t.Logf("backup: %d bytes, ends at %s, %d rows written so far", n, info.GTID, written.Load())

	decision, err := sidecar.Clone(ctx, sidecar.CloneConfig{Flavor: "mysql", Datadir: r.Datadir, PodName: r.Name,
		ReplicasURL: deadURL(t), MasterURL: deadURL(t), InitURI: "file:///backups/default/db/latest",
		Restore: func(context.Context) (io.ReadCloser, func() error, error) {
			f, err := os.Open(archive)
			return f, func() error { return nil }, err
		},
		Mysqld: mariadb.MySQLCommand(), MysqldOptions: mariadb.MySQLOptions(), Log: testr.New(t)})
	if err != nil || decision != sidecar.DecisionRestore {
		t.Fatalf("decision %q: %v", decision, err)
	}
	var rec sidecar.CloneRecord
	data, _ := os.ReadFile(filepath.Join(r.Datadir, sidecar.CloneRecordFile))
	if err := json.Unmarshal(data, &rec); err != nil || rec.GTID != info.GTID {
		t.Errorf("restore record %s (%v): want the backup's GTID set %s", data, err, info.GTID)
	}
	if strings.Contains(listing(t, r.Datadir), ".replicant-clone") {
		t.Errorf("the restore left work files:\n%s", listing(t, r.Datadir))
	}
	replica := restartMySQL(t, r)
	st, err := replica.State(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want, _ := mysql.ParseGTIDSet(info.GTID); !st.BinlogState.Contains(want) || !want.Contains(st.BinlogState) {
		t.Fatalf("the restored server holds %s, the backup ended at %s", st.BinlogState, info.GTID)
	}
	var channels int
	r.DB().QueryRow("SELECT COUNT(*) FROM performance_schema.replication_connection_configuration").Scan(&channels)
	if channels != 0 {
		t.Errorf("the restored server has %d replication channels of the server backed up", channels)
	}
	replicateAndCompare(t, ctx, root, replica, m, r, written, finishWriting, info.GTID)
}

// TestMySQLRestoreOfABadStreamLeavesNothing (MySQL): a backup whose source says it is
// not whole (a checksum that does not match), and one cut short, are never used: the
// datadir stays empty and the error says why.
func TestMySQLRestoreOfABadStreamLeavesNothing(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	servers := mariadb.Start(t, 2, mariadb.Options{Flavor: "mysql"})
	m, r := servers[0], servers[1]
	donor(t, m, 50)
	url, _ := serveMySQLSidecar(t, m)
	emptyDatadir(t, r)
	stream, err := sidecar.RequestBackup(ctx, url, backupUser, backupPassword, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	var archive bytes.Buffer
	if _, err := io.Copy(&archive, stream); err != nil {
		t.Fatal(err)
	}
	stream.Close()
	if _, err := stream.Finish(); err != nil {
		t.Fatal(err)
	}
	mismatch := errors.New("backup x is not what was backed up: 10 bytes with SHA-256 aa, the manifest says 11 bytes with bb")
	for name, open := range map[string]sidecar.OpenBackupFunc{
		"checksum does not match": func(context.Context) (io.ReadCloser, func() error, error) {
			return io.NopCloser(bytes.NewReader(archive.Bytes())), func() error { return mismatch }, nil
		},
		"cut short": func(context.Context) (io.ReadCloser, func() error, error) {
			return io.NopCloser(bytes.NewReader(archive.Bytes()[:archive.Len()/2])), func() error { return nil }, nil
		},
	} {
		_, err := sidecar.Clone(ctx, sidecar.CloneConfig{Flavor: "mysql", Datadir: r.Datadir, PodName: r.Name,
			ReplicasURL: deadURL(t), MasterURL: deadURL(t), InitURI: "file:///backups/default/db/latest", Restore: open,
			Mysqld: mariadb.MySQLCommand(), MysqldOptions: mariadb.MySQLOptions(), Log: testr.New(t)})
		if err == nil || !strings.Contains(err.Error(), "the datadir is unchanged") {
			t.Errorf("%s: %v", name, err)
		}
		if name == "checksum does not match" && !strings.Contains(err.Error(), "not what was backed up") {
			t.Errorf("%s: the error does not give the checksum's reason: %v", name, err)
		}
		if left := listing(t, r.Datadir); left != "." {
			t.Errorf("%s: the failed restore left:\n%s", name, left)
		}
	}
}

// TestMySQLBackupClientGoingAwayStopsTheClone (MySQL): a client that hangs up while
// the server is still cloning locally ends the clone (its statement is killed), frees
// the sidecar, and leaves no copy in the scratch directory.
func TestMySQLBackupClientGoingAwayStopsTheClone(t *testing.T) {
	servers := mariadb.Start(t, 1, mariadb.Options{Flavor: "mysql"})
	donor(t, servers[0], 2000)
	url, scratch := serveMySQLSidecar(t, servers[0])
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		// Hang up once the server has started writing its copy.
		for i := 0; i < 600; i++ {
			if m, _ := filepath.Glob(filepath.Join(scratch, "*", "data", "*")); len(m) > 0 {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		cancel()
	}()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url+"/xbackup", nil)
	req.SetBasicAuth(backupUser, backupPassword)
	if resp, err := http.DefaultClient.Do(req); err == nil {
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		left, _ := os.ReadDir(scratch)
		var status struct {
			BackupRunning bool `json:"backupRunning"`
		}
		if st, err := http.Get(url + "/status"); err == nil {
			json.NewDecoder(st.Body).Decode(&status)
			st.Body.Close()
		}
		if !status.BackupRunning && len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("30s after the client went away: backup running %v, scratch holds %v", status.BackupRunning, left)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// The server is free for the next one: no clone is left running.
	var running int
	servers[0].DB().QueryRow("SELECT COUNT(*) FROM information_schema.processlist WHERE info LIKE 'CLONE%'").Scan(&running)
	if running != 0 {
		t.Errorf("%d CLONE statements still run", running)
	}
}

// TestExtractTarRefusesPathsOutsideItsDirectory: an archive cannot write outside the
// directory it is unpacked in, nor make links.
func TestExtractTarRefusesPathsOutsideItsDirectory(t *testing.T) {
	for name, hdr := range map[string]*tar.Header{
		"parent":   {Name: "../escape", Typeflag: tar.TypeReg, Size: 1, Mode: 0o644},
		"absolute": {Name: "/etc/escape", Typeflag: tar.TypeReg, Size: 1, Mode: 0o644},
		"symlink":  {Name: "link", Typeflag: tar.TypeSymlink, Linkname: "/etc/passwd", Mode: 0o777},
	} {
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		tw.WriteHeader(hdr)
		if hdr.Size > 0 {
			tw.Write([]byte("x"))
		}
		tw.Close()
		parent := t.TempDir()
		dir := filepath.Join(parent, "in")
		os.Mkdir(dir, 0o755)
		err := sidecar.ExtractTar(&buf, dir)
		if err == nil {
			t.Errorf("%s: extracted", name)
		}
		if left := listing(t, parent); left != ".\nin" {
			t.Errorf("%s: left %q", name, left)
		}
	}
	// A tree round-trips.
	src := t.TempDir()
	os.MkdirAll(filepath.Join(src, "a", "b"), 0o750)
	os.WriteFile(filepath.Join(src, "a", "b", "f"), []byte("data"), 0o640)
	os.WriteFile(filepath.Join(src, "top"), nil, 0o600)
	var buf bytes.Buffer
	if err := sidecar.WriteTar(&buf, src); err != nil {
		t.Fatal(err)
	}
	dst := t.TempDir()
	if err := sidecar.ExtractTar(&buf, dst); err != nil {
		t.Fatal(err)
	}
	if got, want := listing(t, dst), listing(t, src); got != want {
		t.Errorf("round trip: %q, want %q", got, want)
	}
	if data, _ := os.ReadFile(filepath.Join(dst, "a", "b", "f")); string(data) != "data" {
		t.Errorf("content %q", data)
	}
}
