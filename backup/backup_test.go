package backup_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"

	"github.com/replicant-dev/replicant/backup"
	"github.com/replicant-dev/replicant/mysql"
	"github.com/replicant-dev/replicant/sidecar"
	"github.com/replicant-dev/replicant/test/mariadb"
	"github.com/replicant-dev/replicant/test/objectstore"
)

func TestMain(m *testing.M) { os.Exit(mariadb.Main(m)) }

const (
	backupUser     = "replicant_backup"
	backupPassword = "backup-secret-pw"
)

// donor prepares s as a master with rows rows in app.t and serves its sidecar.
func donor(t testing.TB, s *mariadb.Server, rows int) string {
	t.Helper()
	ctx := context.Background()
	root, err := mysql.Open(mysql.Config{Addr: s.Addr(), User: "root", Password: mariadb.RootPassword}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { root.Close() })
	if err := root.SetReadOnly(ctx, false); err != nil {
		t.Fatal(err)
	}
	if err := root.EnsureUsers(ctx, []mysql.User{{Name: backupUser, Password: backupPassword, Role: mysql.RoleBackup}}); err != nil {
		t.Fatal(err)
	}
	s.Exec(ctx, "CREATE DATABASE IF NOT EXISTS app", "CREATE TABLE IF NOT EXISTS app.t (id INT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(64))")
	for i := 0; i < rows; i++ {
		s.Exec(ctx, "INSERT INTO app.t (v) VALUES (REPEAT('x', 64))")
	}
	cfg := sidecar.ServeConfig{Datadir: s.Datadir, DefaultsFile: s.ConfigPath(), ServerAddr: s.Addr(),
		BackupUser: backupUser, BackupPassword: backupPassword, Log: testr.NewWithInterface(t, testr.Options{})}
	if s.Config.Flavor == "mysql" {
		cfg.Flavor, cfg.ScratchDir, cfg.Mysqld, cfg.MysqldOptions = "mysql", t.TempDir(), mariadb.MySQLCommand(), mariadb.MySQLOptions()
	}
	srv, err := sidecar.NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(func() { hs.Close(); srv.Close() })
	return hs.URL
}

func deadURL(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return "http://" + l.Addr().String()
}

func takeOptions(t *testing.T, sources ...string) backup.TakeOptions {
	return backup.TakeOptions{Namespace: "default", StatefulSet: "db", Sources: sources,
		User: backupUser, Password: backupPassword, Log: testr.New(t)}
}

// rows lists app.t's ids on s, as one string to compare.
func rows(t *testing.T, s *mariadb.Server) string {
	t.Helper()
	r, err := s.DB().Query("SELECT id, v FROM app.t ORDER BY id")
	if err != nil {
		t.Fatalf("%s: %v", s.Name, err)
	}
	defer r.Close()
	var b strings.Builder
	for r.Next() {
		var id int
		var v string
		r.Scan(&id, &v)
		fmt.Fprintf(&b, "%d:%s\n", id, v)
	}
	return b.String()
}

// startWriter inserts rows into app.t on s, one by one, until stop is called (at the
// latest when the test ends), counting those that succeeded.
func startWriter(t *testing.T, s *mariadb.Server) (written *atomic.Int64, stop func()) {
	written = new(atomic.Int64)
	quit, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 1000000; i++ {
			select {
			case <-quit:
				return
			default:
			}
			if _, err := s.DB().Exec("INSERT INTO app.t (v) VALUES ('during')"); err == nil {
				written.Add(1)
			}
		}
	}()
	var once sync.Once
	stop = func() { once.Do(func() { close(quit); <-done }) }
	t.Cleanup(stop)
	return written, stop
}

// restoreInto empties s's datadir, restores initURI into it through the clone step
// (nothing else answers), and starts s on it.
func restoreInto(t *testing.T, s *mariadb.Server, initURI string) error {
	t.Helper()
	return restoreWith(t, s, initURI, backup.Restorer(initURI, "mariadb", testr.New(t)), nil)
}

// restoreWith empties s's datadir, runs the clone step with only open (and replay)
// to fill it, and starts s on the result.
func restoreWith(t *testing.T, s *mariadb.Server, initURI string, open sidecar.OpenBackupFunc, replay sidecar.ReplayFunc) error {
	t.Helper()
	s.Kill()
	os.RemoveAll(s.Datadir)
	os.Mkdir(s.Datadir, 0o750)
	cfg := sidecar.CloneConfig{Datadir: s.Datadir, PodName: "restored-1",
		ReplicasURL: deadURL(t), MasterURL: deadURL(t), InitURI: initURI, Restore: open, Replay: replay,
		ProbeTimeout: time.Second, Log: testr.New(t)}
	if s.Config.Flavor == "mysql" {
		cfg.Flavor, cfg.Mysqld, cfg.MysqldOptions = "mysql", mariadb.MySQLCommand(), mariadb.MySQLOptions()
	}
	d, err := sidecar.Clone(context.Background(), cfg)
	if d != sidecar.DecisionRestore {
		t.Fatalf("decision %q (%v)", d, err)
	}
	if err != nil {
		return err
	}
	s.Restart()
	return nil
}

// TestBackupUnderWritesAndRestore: a backup taken while a client writes is committed
// with the donor's position, listed, and restores into an empty datadir every row
// the donor had at that position, byte for byte, through rclone's S3 server.
func TestBackupUnderWritesAndRestore(t *testing.T) {
	ctx := context.Background()
	store := objectstore.Start(t)
	servers := mariadb.Start(t, 2, mariadb.Options{})
	src := donor(t, servers[0], 2000)

	written, stopWriting := startWriter(t, servers[0])
	c, err := backup.OpenCluster(ctx, store.URI("prod"), "default", "db")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// The replicas' Service answers nothing: the master is the fallback, and says so.
	m, err := c.Take(ctx, takeOptions(t, deadURL(t), src))
	stopWriting()
	if err != nil {
		t.Fatal(err)
	}
	if m.GTID == "" || !strings.Contains(m.ServerVersion, "MariaDB") || m.Source != src || m.StoredBytes == 0 ||
		m.StreamBytes <= m.StoredBytes || len(m.SHA256) != 64 || !m.End.After(m.Start) {
		t.Errorf("manifest: %+v", m)
	}
	t.Logf("%d rows written during the backup; stream %d bytes stored as %d (%.1fx)", written.Load(), m.StreamBytes, m.StoredBytes, float64(m.StreamBytes)/float64(m.StoredBytes))
	if _, err := os.Stat(filepath.Join(store.Dir, objectstore.Bucket, "prod", "default", "db", m.Name, backup.ManifestObject)); err != nil {
		t.Errorf("not where the layout says: %v", err)
	}
	list, err := c.List(ctx)
	if err != nil || len(list) != 1 || list[0].Name != m.Name {
		t.Fatalf("list: %+v, %v", list, err)
	}

	// What the donor held at the backup's position: stop writing there and compare.
	want := func() string {
		var n int
		servers[0].DB().QueryRow("SELECT COUNT(*) FROM app.t").Scan(&n)
		return rows(t, servers[0])
	}()
	if err := restoreInto(t, servers[1], store.URI("prod/default/db/latest")); err != nil {
		t.Fatal(err)
	}
	var gtid string
	servers[1].DB().QueryRow("SELECT @@gtid_binlog_pos").Scan(&gtid)
	got := rows(t, servers[1])
	// The restored server holds exactly the donor's rows up to the backup's position:
	// a prefix of the donor's rows now (writes went on after the backup).
	if !strings.HasPrefix(want, got) || strings.Count(got, "\n") < 2000 {
		t.Errorf("restored %d rows, not a prefix of the donor's %d", strings.Count(got, "\n"), strings.Count(want, "\n"))
	}
	rec, _ := os.ReadFile(filepath.Join(servers[1].Datadir, sidecar.CloneRecordFile))
	if !strings.Contains(string(rec), m.GTID) {
		t.Errorf("clone record %s does not carry the backup's position %s", rec, m.GTID)
	}
	t.Logf("restored %d rows at %s (binlog pos %q)", strings.Count(got, "\n"), m.GTID, gtid)
}

// TestMySQLBackupToABucketAndRestore (MySQL): a backup of a MySQL server taken while
// a client writes is committed as a tar archive of the server's CLONE LOCAL copy, with
// the flavor, version and GTID set in its manifest, through rclone's S3 server; it
// restores into an empty datadir exactly the donor's rows at that GTID set. A MariaDB
// StatefulSet asked to restore it is refused, naming both flavors.
func TestMySQLBackupToABucketAndRestore(t *testing.T) {
	ctx := context.Background()
	store := objectstore.Start(t)
	servers := mariadb.Start(t, 2, mariadb.Options{Flavor: "mysql"})
	src := donor(t, servers[0], 500)
	written, stopWriting := startWriter(t, servers[0])
	c, err := backup.OpenCluster(ctx, store.URI("prod"), "default", "db")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	opts := takeOptions(t, src)
	opts.Flavor = "mysql"
	m, err := c.Take(ctx, opts)
	stopWriting()
	if err != nil {
		t.Fatal(err)
	}
	var version string
	servers[0].DB().QueryRow("SELECT @@version").Scan(&version)
	if m.Flavor != "mysql" || m.Format != sidecar.FormatTar || m.ServerVersion != version || m.GTID == "" ||
		m.StoredBytes == 0 || m.StreamBytes <= m.StoredBytes {
		t.Errorf("manifest: %+v", m)
	}
	if _, err := os.Stat(filepath.Join(store.Dir, objectstore.Bucket, "prod", "default", "db", m.Name, backup.TarDataObject)); err != nil {
		t.Errorf("the data object is not where the layout says: %v", err)
	}
	t.Logf("%d rows written during the backup; stream %d bytes stored as %d (%.1fx) in %.1fs", written.Load(),
		m.StreamBytes, m.StoredBytes, float64(m.StreamBytes)/float64(m.StoredBytes), m.End.Sub(m.Start).Seconds())
	want := rows(t, servers[0])

	latest := store.URI("prod/default/db/latest")
	err = restoreWith(t, servers[1], latest, backup.Restorer(latest, "mariadb", testr.New(t)), nil)
	if err == nil || !strings.Contains(err.Error(), "taken of a mysql server") || !strings.Contains(err.Error(), "runs mariadb") {
		t.Errorf("a MySQL backup restored as MariaDB: %v", err)
	}
	if err := restoreWith(t, servers[1], latest, backup.Restorer(latest, "mysql", testr.New(t)), nil); err != nil {
		t.Fatal(err)
	}
	got := rows(t, servers[1])
	if !strings.HasPrefix(want, got) || strings.Count(got, "\n") < 500 {
		t.Errorf("restored %d rows, not a prefix of the donor's %d", strings.Count(got, "\n"), strings.Count(want, "\n"))
	}
	var gtid string
	servers[1].DB().QueryRow("SELECT @@global.gtid_executed").Scan(&gtid)
	if strings.Join(strings.Fields(gtid), "") != m.GTID {
		t.Errorf("the restored server holds %s, the manifest says %s", gtid, m.GTID)
	}
	t.Logf("restored %d rows at %s", strings.Count(got, "\n"), m.GTID)
}

// cuttingProxy passes a donor's backup through and calls cut once limit bytes went by.
func cuttingProxy(t *testing.T, target string, limit int64, cut func()) string {
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		req, _ := http.NewRequestWithContext(r.Context(), r.Method, target+r.URL.Path, nil)
		req.Header = r.Header.Clone()
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		for k, v := range resp.Header {
			w.Header()[k] = v
		}
		w.WriteHeader(resp.StatusCode)
		if r.URL.Path != "/xbackup" {
			io.Copy(w, resp.Body)
			return
		}
		io.CopyN(w, resp.Body, limit)
		cut()
		io.Copy(w, resp.Body)
		for k, v := range resp.Trailer {
			w.Header()[http.TrailerPrefix+k] = v
		}
	}))
	t.Cleanup(hs.Close)
	return hs.URL
}

// TestAFailedBackupCommitsNothing: the store going away mid-upload, and a donor whose
// stream is cut short, each fail at their step, leave no listed backup, and the next
// backup succeeds; what they left is pruned.
func TestAFailedBackupCommitsNothing(t *testing.T) {
	ctx := context.Background()
	store := objectstore.Start(t)
	servers := mariadb.Start(t, 1, mariadb.Options{})
	src := donor(t, servers[0], 100)
	c, err := backup.OpenCluster(ctx, store.URI("prod"), "default", "db")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	// The store dies once 4 MiB of the stream went by (the upload is under way).
	_, err = c.Take(ctx, takeOptions(t, cuttingProxy(t, src, 4<<20, store.Stop)))
	var step *backup.StepError
	if !errors.As(err, &step) || step.Step != "upload" || !strings.Contains(err.Error(), "s3://backups/prod/default/db/") {
		t.Fatalf("store cut: %v", err)
	}
	store.Restart()
	if list, err := c.List(ctx); err != nil || len(list) != 0 {
		t.Fatalf("listed after a failed upload: %+v, %v", list, err)
	}

	// The donor's stream ends early, without its trailers.
	_, err = c.Take(ctx, takeOptions(t, truncatingProxy(t, src, 2<<20)))
	if !errors.As(err, &step) || step.Step != "stream" {
		t.Fatalf("stream cut: %v", err)
	}
	if list, err := c.List(ctx); err != nil || len(list) != 0 {
		t.Fatalf("listed after a cut stream: %+v, %v", list, err)
	}

	m, err := c.Take(ctx, takeOptions(t, src))
	if err != nil {
		t.Fatalf("the next backup: %v", err)
	}
	if list, err := c.List(ctx); err != nil || len(list) != 1 || list[0].Name != m.Name {
		t.Fatalf("list: %+v, %v", list, err)
	}
}

// truncatingProxy forwards a backup but ends it after limit bytes, with no trailers.
func truncatingProxy(t *testing.T, target string, limit int64) string {
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		req, _ := http.NewRequestWithContext(r.Context(), r.Method, target+r.URL.Path, nil)
		req.Header = r.Header.Clone()
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		w.WriteHeader(resp.StatusCode)
		if r.URL.Path == "/xbackup" {
			io.CopyN(w, resp.Body, limit)
			return
		}
		io.Copy(w, resp.Body)
	}))
	t.Cleanup(hs.Close)
	return hs.URL
}

// TestBadStoreSettingsSayWhatIsWrong: wrong credentials and a missing bucket fail
// with the URI, without the secret, and commit nothing.
func TestBadStoreSettingsSayWhatIsWrong(t *testing.T) {
	ctx := context.Background()
	store := objectstore.Start(t)
	servers := mariadb.Start(t, 1, mariadb.Options{})
	src := donor(t, servers[0], 10)

	t.Run("wrong secret key", func(t *testing.T) {
		t.Setenv("AWS_SECRET_ACCESS_KEY", "not-the-key-at-all")
		c, err := backup.OpenCluster(ctx, store.URI("prod"), "default", "db")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_, err = c.Take(ctx, takeOptions(t, src))
		if err == nil || !strings.Contains(err.Error(), "s3://backups/prod/default/db") || strings.Contains(err.Error(), "not-the-key-at-all") {
			t.Fatalf("%v", err)
		}
		if _, err := c.List(ctx); err == nil || strings.Contains(err.Error(), "not-the-key-at-all") {
			t.Fatalf("list: %v", err)
		}
		t.Log(err)
	})
	t.Run("missing bucket", func(t *testing.T) {
		uri := strings.Replace(store.URI("prod"), "s3://backups/", "s3://no-such-bucket/", 1)
		c, err := backup.OpenCluster(ctx, uri, "default", "db")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_, err = c.Take(ctx, takeOptions(t, src))
		if err == nil || !strings.Contains(err.Error(), "s3://no-such-bucket/prod/default/db") {
			t.Fatalf("%v", err)
		}
		t.Log(err)
	})
	t.Run("unknown scheme", func(t *testing.T) {
		_, err := backup.OpenCluster(ctx, "ftp://user:pw@host/x", "default", "db")
		if err == nil || strings.Contains(err.Error(), "pw") || !strings.Contains(err.Error(), "s3, gs, azblob, file") {
			t.Fatalf("%v", err)
		}
	})
	if entries, _ := os.ReadDir(filepath.Join(store.Dir, objectstore.Bucket)); len(entries) != 0 {
		t.Errorf("something was stored: %v", entries)
	}
}

// TestACorruptBackupIsNotRestored: a stored object changed after the backup fails
// the restore on its checksum and leaves the datadir empty, as before.
func TestACorruptBackupIsNotRestored(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	servers := mariadb.Start(t, 2, mariadb.Options{})
	src := donor(t, servers[0], 100)
	uri := "file://" + dir
	c, err := backup.OpenCluster(ctx, uri, "default", "db")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	m, err := c.Take(ctx, takeOptions(t, src))
	if err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(dir, "default", "db", m.Name, backup.DataObject)
	b, err := os.ReadFile(data)
	if err != nil {
		t.Fatal(err)
	}
	for name, corrupt := range map[string]func([]byte) []byte{
		"a byte appended": func(b []byte) []byte { return append(b, 0) },
		"a byte changed":  func(b []byte) []byte { b[len(b)/2] ^= 1; return b },
	} {
		os.WriteFile(data, corrupt(append([]byte(nil), b...)), 0o644)
		err = restoreInto(t, servers[1], uri+"/default/db/"+m.Name)
		if err == nil || !strings.Contains(err.Error(), "is not what was backed up") {
			t.Fatalf("%s: %v", name, err)
		}
		if entries, _ := os.ReadDir(servers[1].Datadir); len(entries) != 0 {
			t.Errorf("%s: the datadir is not as before: %v", name, entries)
		}
	}
	// A backup that does not exist is an error naming it.
	err = restoreInto(t, servers[1], uri+"/default/db/20200101T000000Z")
	if !errors.Is(err, backup.ErrNoBackup) || !strings.Contains(err.Error(), "20200101T000000Z") {
		t.Fatalf("%v", err)
	}
}
