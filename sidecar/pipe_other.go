//go:build !linux

package sidecar

import "os"

// streamPipe is a plain os.Pipe where pipes cannot be enlarged.
func streamPipe() (r, w *os.File, err error) { return os.Pipe() }
