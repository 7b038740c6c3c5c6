// Package e2e runs Warden end to end: the real binaries, BPF programs
// attached to the test's own cgroup subtree, a real OIDC issuer, NATS and
// the collector, and real clients, inside the test's own network namespace.
package e2e

import (
	"os"
	"testing"

	"github.com/wardenhq/warden/tests/harness"
)

func TestMain(m *testing.M) {
	code := m.Run()
	harness.CleanupBinaries()
	os.Exit(code)
}
