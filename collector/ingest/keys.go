package ingest

import (
	"crypto/ed25519"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"github.com/wardenhq/warden/pkg/event"
)

// reloadInterval bounds how often an unknown host makes DirKeyRing re-read
// its directory, so a flood of forged host ids cannot turn into a flood of
// directory scans.
const reloadInterval = time.Second

// DirKeyRing is an event.KeyRing backed by a directory of "<host_id>.pub"
// files. A lookup for a host it does not know re-reads the directory (at most
// once per second), so enrolling a new bastion is dropping its key file in
// place, with no collector restart.
type DirKeyRing struct {
	dir string
	log zerolog.Logger

	mu       sync.Mutex
	keys     event.StaticKeys
	loadedAt time.Time
}

// NewDirKeyRing loads the keys in dir. A missing or unreadable directory is
// an error: a collector without keys would flag every event.
func NewDirKeyRing(dir string, log zerolog.Logger) (*DirKeyRing, error) {
	keys, err := event.LoadPublicKeys(dir)
	if err != nil {
		return nil, err
	}
	log.Info().Str("dir", dir).Int("hosts", len(keys)).Msg("loaded agent public keys")
	return &DirKeyRing{dir: dir, log: log, keys: keys, loadedAt: time.Now()}, nil
}

// PublicKey implements event.KeyRing.
func (r *DirKeyRing) PublicKey(hostID string) (ed25519.PublicKey, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if k, ok := r.keys[hostID]; ok {
		return k, true
	}
	if time.Since(r.loadedAt) < reloadInterval {
		return nil, false
	}
	r.loadedAt = time.Now()
	keys, err := event.LoadPublicKeys(r.dir)
	if err != nil {
		// Keep the keys we have: a half-edited directory must not make
		// every known host unverifiable.
		r.log.Error().Err(err).Str("dir", r.dir).Msg("reload agent public keys")
		return nil, false
	}
	if len(keys) != len(r.keys) {
		r.log.Info().Str("dir", r.dir).Int("hosts", len(keys)).Msg("reloaded agent public keys")
	}
	r.keys = keys
	k, ok := r.keys[hostID]
	return k, ok
}
