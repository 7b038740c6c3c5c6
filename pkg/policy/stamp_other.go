//go:build !linux

package policy

import "io/fs"

// sysStamp adds nothing where the agent does not run; size and modification
// time are enough for tooling that merely parses policies.
func sysStamp(fs.FileInfo, *stamp) {}
