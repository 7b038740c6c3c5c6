package bench

import (
	"fmt"
	"os"
	"strings"

	"github.com/google/pprof/profile"
)

// component names a part of wardend's work per statement and the
// functions whose samples it takes. A sample goes to the first component
// that matches a frame, walking from the leaf up, so that a socket write
// made by the spool counts as the spool's, and one made by the codec as
// socket I/O.
type component struct {
	name     string
	patterns []string
}

var components = []component{
	{"socket I/O (client and server)", []string{"net.(*conn).Read", "net.(*conn).Write", "net.(*netFD).", "net.(*TCPConn).ReadFrom", "net.(*TCPConn).WriteTo", "internal/poll.Splice"}},
	{"event encode (prepare)", []string{"pkg/event.Prepare", "agent/recorder.(*Recorder).prepare"}},
	{"event seal (chain, hash)", []string{"pkg/event.(*Signer).SealPrepared"}},
	{"merkle log and checkpoints", []string{"agent/recorder.(*Recorder).addLeafLocked", "agent/recorder.(*Recorder).checkpointLocked", "agent/recorder.(*treeFile)"}},
	{"spool write", []string{"agent/spool.(*Spool).Enqueue"}},
	{"spool fsync", []string{"agent/spool.(*Spool).syncer", "agent/spool.(*Spool).syncOnce"}},
	{"recorder other (ids, locks, losses)", []string{"agent/recorder."}},
	{"publish (spool read, NATS)", []string{"agent/publish.", "nats-io/nats.go", "agent/spool.(*Reader)"}},
	{"masking", []string{"pkg/mask", "agent/proxy/postgres.(*pgSession).mask", "masking"}},
	{"policy and statement analysis", []string{"pkg/guard", "pkg/policy", "pkg/sqlparse", "agent/proxy/postgres.(*pgSession).analyze", "agent/proxy/postgres.(*pgSession).learn"}},
	{"postgres codec (framing, rows)", []string{"agent/proxy/postgres", "pkg/protocol/postgres"}},
	{"BPF and identity", []string{"cilium/ebpf", "agent/bpf", "agent/identity", "agent/lineage"}},
	{"GC (background)", []string{"runtime.gcBgMarkWorker", "runtime.bgsweep", "runtime.bgscavenge"}},
	{"scheduler and idle runtime", []string{"runtime.findRunnable", "runtime.schedule", "runtime.mcall", "runtime.netpoll"}},
}

// componentShares reads a CPU profile and returns the share of its
// samples each component takes, in the order of components, with "other"
// last.
func componentShares(path string) ([]float64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	p, err := profile.Parse(f)
	if err != nil {
		return nil, fmt.Errorf("parse profile %s: %w", path, err)
	}
	vi := -1
	for i, st := range p.SampleType {
		if st.Type == "cpu" {
			vi = i
		}
	}
	if vi < 0 {
		return nil, fmt.Errorf("profile %s has no cpu samples", path)
	}
	byName := make([]int64, len(components)+1)
	var total int64
	for _, s := range p.Sample {
		v := s.Value[vi]
		total += v
		byName[classify(s)] += v
	}
	if total == 0 {
		return nil, fmt.Errorf("profile %s is empty", path)
	}
	shares := make([]float64, len(byName))
	for i, v := range byName {
		shares[i] = float64(v) / float64(total)
	}
	return shares, nil
}

// componentName is the name of component i of componentShares' result.
func componentName(i int) string {
	if i == len(components) {
		return "other"
	}
	return components[i].name
}

// componentBreakdown reads a CPU profile of wardend and splits perTx (µs of
// CPU per transaction, measured from /proc) by component, in the order of
// components, with "other" last.
func componentBreakdown(path string, perTx float64) (string, error) {
	shares, err := componentShares(path)
	if err != nil {
		return "", err
	}
	var parts []string
	for i, sh := range shares {
		if sh == 0 && i < len(components) {
			continue
		}
		parts = append(parts, fmt.Sprintf("%s %.1f µs (%.0f%%)", componentName(i), perTx*sh, 100*sh))
	}
	return strings.Join(parts, "; "), nil
}

// componentGap splits the difference between two processes' CPU per
// transaction by component: where each µs that wardend spends beyond the
// relay goes.
func componentGap(path string, perTx float64, basePath string, basePerTx float64) (string, error) {
	a, err := componentShares(path)
	if err != nil {
		return "", err
	}
	b, err := componentShares(basePath)
	if err != nil {
		return "", err
	}
	var parts []string
	for i := range a {
		d := perTx*a[i] - basePerTx*b[i]
		if a[i] == 0 && b[i] == 0 {
			continue
		}
		parts = append(parts, fmt.Sprintf("%s %+.1f µs", componentName(i), d))
	}
	return fmt.Sprintf("%+.0f µs in all: %s", perTx-basePerTx, strings.Join(parts, "; ")), nil
}

// classify returns the index of a sample's component, len(components) for
// none.
func classify(s *profile.Sample) int {
	for _, loc := range s.Location {
		for _, line := range loc.Line {
			if line.Function == nil {
				continue
			}
			name := line.Function.Name
			for i, c := range components {
				for _, p := range c.patterns {
					if strings.Contains(name, p) {
						return i
					}
				}
			}
		}
	}
	return len(components)
}
