// Package objectstore runs a real S3-compatible server for tests: rclone's `serve s3`
// (built from its Go module by `make rclone`, found at bin/rclone or $REPLICANT_RCLONE)
// over a throw-away directory, on a loopback address. It stops and is removed when the
// test ends, whatever its outcome; a test may stop and restart it (an outage).
package objectstore

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/replicant-dev/replicant/test/controlplane"
)

// Credentials of every test server (AWS SDK environment names).
const (
	AccessKey = "replicant-test-access"
	SecretKey = "replicant-test-secret-key"
	// Bucket exists on every test server.
	Bucket = "backups"
)

// Server is one rclone serve s3.
type Server struct {
	t    testing.TB
	Addr string // 127.0.0.1:port
	Dir  string // the bucket's files: <Dir>/<Bucket>/...

	mu  sync.Mutex
	cmd *exec.Cmd
}

// Binary is the rclone the tests run.
func Binary() string {
	if b := os.Getenv("REPLICANT_RCLONE"); b != "" {
		return b
	}
	return filepath.Join(controlplane.RepoRoot(), "bin", "rclone")
}

// Start runs a server with the bucket Bucket, and points the AWS SDK's environment
// (credentials, no checksum trailers) at it for the rest of the test.
func Start(t testing.TB) *Server {
	t.Helper()
	if _, err := os.Stat(Binary()); err != nil {
		t.Fatalf("rclone is not built (%v): run `make rclone` (make test does)", err)
	}
	s := &Server{t: t, Dir: t.TempDir()}
	if err := os.MkdirAll(filepath.Join(s.Dir, Bucket), 0o755); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.Addr = l.Addr().String()
	l.Close()
	t.Setenv("AWS_ACCESS_KEY_ID", AccessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", SecretKey)
	t.Setenv("AWS_REGION", "us-east-1")
	t.Cleanup(s.Stop)
	s.Restart()
	return s
}

// URI is the backup URI of prefix in the bucket.
func (s *Server) URI(prefix string) string {
	return fmt.Sprintf("s3://%s/%s?endpoint=http://%s&region=us-east-1&use_path_style=true", Bucket, strings.Trim(prefix, "/"), s.Addr)
}

// Restart starts the server (again) on the same address and directory.
func (s *Server) Restart() {
	s.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		return
	}
	cmd := exec.Command(Binary(), "serve", "s3", "--addr", s.Addr, "--auth-key", AccessKey+","+SecretKey,
		"--config", "/dev/null", "--log-level", "ERROR", s.Dir)
	log, err := os.Create(filepath.Join(s.t.TempDir(), "rclone.log"))
	if err != nil {
		s.t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	s.cmd = cmd
	for i := 0; i < 100; i++ {
		if c, err := net.DialTimeout("tcp", s.Addr, 100*time.Millisecond); err == nil {
			c.Close()
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	s.t.Fatalf("rclone serve s3 did not listen on %s within 5s", s.Addr)
}

// Stop kills the server at once, as a lost connection to the store.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Kill()
	s.cmd.Wait()
	s.cmd = nil
}
