package snapshot

import (
	"io/fs"
	"syscall"
)

// stampOf is fi's identity on Linux: a write, truncate, chmod or
// replacement changes the inode's ctime or the inode itself, and no
// unprivileged call can set ctime back.
func stampOf(fi fs.FileInfo) *Stamp {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return nil
	}
	return &Stamp{
		Dev:     uint64(st.Dev),
		Ino:     st.Ino,
		MtimeNS: st.Mtim.Nano(),
		CtimeNS: st.Ctim.Nano(),
	}
}
