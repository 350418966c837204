package sidecar_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"

	"github.com/replicant-dev/replicant/sidecar"
	"github.com/replicant-dev/replicant/test/mariadb"
)

// The server container's preStop hook (GET /pre-stop) holds a writable server until
// it is read-only, returns at once for a read-only or stopped server, and gives up
// after PreStopWait.
func TestPreStopWaitsForReadOnly(t *testing.T) {
	servers := mariadb.Start(t, 1, mariadb.Options{})
	s := servers[0]
	root, _ := donor(t, s, 0)
	srv, err := sidecar.NewServer(sidecar.ServeConfig{Datadir: s.Datadir, ServerAddr: s.Addr(),
		BackupUser: backupUser, BackupPassword: backupPassword, PreStopWait: 2 * time.Second,
		Log: testr.NewWithInterface(t, testr.Options{})})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(func() { hs.Close(); srv.Close() })
	preStop := func() (string, time.Duration) {
		t.Helper()
		start := time.Now()
		resp, err := http.Get(hs.URL + "/pre-stop")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d: %s", resp.StatusCode, body)
		}
		return strings.TrimSpace(string(body)), time.Since(start)
	}
	ctx := context.Background()

	// Writable, and made read-only (by "the controller") half a second later.
	go func() {
		time.Sleep(500 * time.Millisecond)
		if err := root.SetReadOnly(ctx, true); err != nil {
			t.Error(err)
		}
	}()
	if body, took := preStop(); body != "read-only" || took < 400*time.Millisecond {
		t.Errorf("writable then read-only: %q after %s", body, took)
	}
	if body, _ := preStop(); body != "read-only" {
		t.Errorf("read-only: %q", body)
	}
	// Writable, and nobody hands over: bounded by PreStopWait.
	if err := root.SetReadOnly(ctx, false); err != nil {
		t.Fatal(err)
	}
	if body, took := preStop(); !strings.HasPrefix(body, "still writable") || took < 2*time.Second {
		t.Errorf("nobody hands over: %q after %s", body, took)
	}
	// A stopped server needs no hand-over.
	s.Kill()
	if body, _ := preStop(); body != "server not answering" {
		t.Errorf("stopped server: %q", body)
	}
}
