//go:build unix

package backup

import (
	"os"
	"syscall"
)

// ownerIDs is the uid and gid owning path (0, 0 when unknown).
func ownerIDs(path string) (int, int) {
	info, err := os.Stat(path)
	if err != nil {
		return 0, 0
	}
	if st, ok := info.Sys().(*syscall.Stat_t); ok {
		return int(st.Uid), int(st.Gid)
	}
	return 0, 0
}
