package sidecar

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
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

// TestBackupGTIDUnderBothNames: mariadb-backup names its position file
// mariadb_backup_binlog_info since MariaDB 11 and xtrabackup_binlog_info before; a
// clone from either version's donor finds it.
func TestBackupGTIDUnderBothNames(t *testing.T) {
	for _, name := range []string{"mariadb_backup_binlog_info", "xtrabackup_binlog_info"} {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, name), []byte("mysql-bin.000003\t1234\t0-100-42\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if gtid, err := backupGTID(dir); err != nil || gtid != "0-100-42" {
			t.Errorf("%s: %q, %v", name, gtid, err)
		}
	}
	if _, err := backupGTID(t.TempDir()); err == nil || !strings.Contains(err.Error(), "no binlog position") {
		t.Errorf("neither file: %v", err)
	}
}
