package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/replicant-dev/replicant/backup"
	"github.com/replicant-dev/replicant/mysql"
	"github.com/replicant-dev/replicant/sidecar"
	"github.com/replicant-dev/replicant/test/mariadb"
)

func TestMain(m *testing.M) { os.Exit(mariadb.Main(m)) }

func runCommand(ctx context.Context, args ...string) error {
	root := newRootCommand()
	root.SetArgs(args)
	return root.ExecuteContext(ctx)
}

// TestSidecarCommands runs the pod-side subcommands as the injected containers do
// (environment from the webhook, flags) against a real server: config writes the
// fragment, serve serves the donor, clone fills an empty datadir from it.
func TestSidecarCommands(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	servers := mariadb.Start(t, 1, mariadb.Options{})
	s := servers[0]
	root, err := mysql.Open(mysql.Config{Addr: s.Addr(), User: "root", Password: mariadb.RootPassword}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	if err := root.EnsureUsers(ctx, []mysql.User{{Name: "bk", Password: "bk-pw", Role: mysql.RoleBackup}}); err != nil {
		t.Fatal(err)
	}
	t.Setenv("POD_NAME", "db-1")
	t.Setenv("POD_NAMESPACE", "prod")
	t.Setenv("REPLICANT_SERVICE", "mysql")
	t.Setenv("REPLICANT_STATEFULSET", "db")
	t.Setenv("REPLICANT_BACKUP_USER", "bk")
	t.Setenv("REPLICANT_BACKUP_PASSWORD", "bk-pw")

	confDir := t.TempDir()
	if err := runCommand(ctx, "sidecar", "config", "--conf-dir", confDir, "--server-id-offset", "500"); err != nil {
		t.Fatal(err)
	}
	fragment, err := os.ReadFile(filepath.Join(confDir, sidecar.FragmentName))
	if err != nil || !strings.Contains(string(fragment), "server_id = 501") || !strings.Contains(string(fragment), "report_host = db-1.mysql.prod") {
		t.Fatalf("fragment %s (%v)", fragment, err)
	}

	listen := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	serveCtx, stopServe := context.WithCancel(ctx)
	served := make(chan error, 1)
	go func() {
		served <- runCommand(serveCtx, "sidecar", "serve", "--listen", listen, "--server-addr", s.Addr(),
			"--datadir", s.Datadir, "--defaults-file", s.ConfigPath())
	}()
	eventually(t, ctx, "sidecar ready", func() error {
		resp, err := http.Get("http://" + listen + "/readyz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s", resp.Status)
		}
		return nil
	})

	datadir := t.TempDir()
	if err := runCommand(ctx, "sidecar", "clone", "--datadir", datadir, "--replicas-url", "http://"+listen,
		"--master-url", "http://127.0.0.1:1"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(datadir, "mysql")); err != nil {
		t.Errorf("clone did not fill the datadir: %v", err)
	}

	// backup run takes a backup from the sidecar to a bucket; a clone with init-uri
	// and nothing to clone from restores it.
	bucket := t.TempDir()
	var out bytes.Buffer
	root2 := newRootCommand()
	root2.SetOut(&out)
	root2.SetArgs([]string{"backup", "run", "--backup-uri", "file://" + bucket, "--source", "http://127.0.0.1:1,http://" + listen, "--retention", "1"})
	if err := root2.ExecuteContext(ctx); err != nil {
		t.Fatal(err)
	}
	var m backup.Manifest
	if err := json.Unmarshal(out.Bytes(), &m); err != nil || m.GTID == "" || m.Namespace != "prod" || m.StatefulSet != "db" {
		t.Fatalf("manifest %s (%v)", out.String(), err)
	}
	restored := t.TempDir()
	if err := runCommand(ctx, "sidecar", "clone", "--datadir", restored, "--replicas-url", "http://127.0.0.1:1",
		"--master-url", "http://127.0.0.1:1", "--init-uri", "file://"+bucket+"/prod/db/latest"); err != nil {
		t.Fatal(err)
	}
	rec, err := os.ReadFile(filepath.Join(restored, sidecar.CloneRecordFile))
	if err != nil || !strings.Contains(string(rec), m.GTID) {
		t.Errorf("restore record %s (%v), want GTID %s", rec, err, m.GTID)
	}

	stopServe()
	if err := <-served; err != nil {
		t.Errorf("serve stopped with %v", err)
	}
}
