package loader_test

import (
	"fmt"
	"net"
	"os"
	"testing"
)

// peerChild, when set, makes the test binary a client: it dials the
// address and prints what getpeername(2) reports, so a test can run it
// inside a cgroup under the programs.
const peerChild = "WARDEN_LOADER_TEST_PEER"

func TestMain(m *testing.M) {
	if addr := os.Getenv(peerChild); addr != "" {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Print(c.RemoteAddr().String()) // getpeername(2)
		c.Close()
		os.Exit(0)
	}
	os.Exit(m.Run())
}
