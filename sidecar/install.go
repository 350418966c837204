// Package sidecar owns what replicant does inside a database pod: copying its binary
// into the pod (install), writing the server's my.cnf fragment (config), deciding
// whether and from where to clone the datadir (clone), and serving backups, health
// and metrics on port 8080 (serve). config, clone and serve arrive with the sidecar
// release; install is what the replicant-install init container runs today.
package sidecar

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// Install copies the running executable to dir/replicant so that later steps can run
// it from the server's own image. The copy is written to a temporary name and renamed,
// so a step never starts a half-written binary.
func Install(dir string) error {
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find own executable: %w", err)
	}
	return copyExecutable(self, filepath.Join(dir, "replicant"))
}

func copyExecutable(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("install: %w", err)
	}
	defer in.Close()
	tmp, err := os.CreateTemp(filepath.Dir(dst), ".replicant-*")
	if err != nil {
		return fmt.Errorf("install into %s: %w", filepath.Dir(dst), err)
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	if _, err := io.Copy(tmp, in); err != nil {
		tmp.Close()
		return fmt.Errorf("install: copy to %s: %w", tmp.Name(), err)
	}
	if err := tmp.Chmod(0o755); err != nil {
		tmp.Close()
		return fmt.Errorf("install: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("install: %w", err)
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return fmt.Errorf("install: %w", err)
	}
	return nil
}
