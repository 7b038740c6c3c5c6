package policy

import (
	"io/fs"
	"syscall"
)

// sysStamp adds the inode identity and change time, which catch an atomic
// rename or a same-size rewrite within the modification time's resolution.
func sysStamp(fi fs.FileInfo, st *stamp) {
	if s, ok := fi.Sys().(*syscall.Stat_t); ok {
		st.dev, st.ino = s.Dev, s.Ino
		st.ctime = s.Ctim.Nano()
	}
}
