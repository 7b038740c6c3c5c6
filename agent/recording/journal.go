package recording

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// The agent.loss source and reason of recordings a stopped agent left
// unfinished.
const (
	LossSource       = "ssh_recording"
	LossAgentStopped = "agent_stopped"
)

// Journal keeps, on the agent's disk, the ids of recordings being written:
// an entry is made when a recording starts and removed once its manifest
// is stored. Entries left from a previous run are recordings whose agent
// stopped or was killed before they ended: each lost at most the chunk it
// was filling, and the agent reports them as an agent.loss at its next
// start (see Orphans).
type Journal struct {
	Store
	dir string
}

// WithJournal wraps store so that the recordings written to it are
// journaled in dir (created 0700 if need be).
func WithJournal(store Store, dir string) (*Journal, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("recording journal %s: %w", dir, err)
	}
	return &Journal{Store: store, dir: dir}, nil
}

// begin and end are what Writer calls on a store that journals.
type journaled interface {
	begin(id string) error
	end(id string) error
}

func (j *Journal) path(id string) string {
	// Ids are the codec's ("ssh-" and a ULID); anything else is kept
	// inside dir all the same.
	return filepath.Join(j.dir, strings.NewReplacer("/", "_", "..", "_").Replace(id))
}

func (j *Journal) begin(id string) error {
	return os.WriteFile(j.path(id), nil, 0o600)
}

func (j *Journal) end(id string) error {
	if err := os.Remove(j.path(id)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// Orphans returns the recordings a previous run left unfinished and
// removes their entries. Call it at start, before any recording begins.
func (j *Journal) Orphans() ([]string, error) {
	ents, err := os.ReadDir(j.dir)
	if err != nil {
		return nil, fmt.Errorf("recording journal %s: %w", j.dir, err)
	}
	var out []string
	for _, e := range ents {
		if e.IsDir() {
			continue
		}
		out = append(out, e.Name())
		if err := os.Remove(filepath.Join(j.dir, e.Name())); err != nil {
			return out, fmt.Errorf("recording journal %s: %w", j.dir, err)
		}
	}
	return out, nil
}
