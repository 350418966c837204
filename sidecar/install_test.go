package sidecar

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

func TestCopyExecutableRunsFromTheNewPlace(t *testing.T) {
	dir := t.TempDir()
	dst := filepath.Join(dir, "true")
	if err := copyExecutable("/bin/true", dst); err != nil {
		t.Fatal(err)
	}
	if err := exec.Command(dst).Run(); err != nil {
		t.Fatalf("copied binary does not run: %v", err)
	}
	want, _ := os.ReadFile("/bin/true")
	got, _ := os.ReadFile(dst)
	if !bytes.Equal(want, got) {
		t.Fatal("copy differs from the original")
	}
	// A second install replaces the first and leaves no temporary file behind.
	if err := copyExecutable("/bin/true", dst); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("directory holds %d entries, want 1", len(entries))
	}
}

func TestCopyExecutableFailsCleanly(t *testing.T) {
	dir := t.TempDir()
	if err := copyExecutable("/nonexistent/binary", filepath.Join(dir, "x")); err == nil {
		t.Fatal("copied a file that does not exist")
	}
	if err := copyExecutable("/bin/true", filepath.Join(dir, "missing-dir", "x")); err == nil {
		t.Fatal("installed into a directory that does not exist")
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatalf("failed installs left %d entries", len(entries))
	}
}
