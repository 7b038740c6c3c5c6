package lineage

import "os"

func selfPID() int { return os.Getpid() }
