package recording

import (
	"bytes"
	"context"
	"fmt"
	"sync"
)

// MemoryStore is a Store in memory. The collector's tests and the codec's
// use it where the NATS Object Store would add nothing to what they check.
type MemoryStore struct {
	mu   sync.Mutex
	objs map[string][]byte
}

// NewMemoryStore returns an empty MemoryStore.
func NewMemoryStore() *MemoryStore {
	return &MemoryStore{objs: map[string][]byte{}}
}

// Put stores a copy of data under name.
func (m *MemoryStore) Put(_ context.Context, name string, data []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.objs[name] = bytes.Clone(data)
	return nil
}

// Get returns a copy of the object, or an error wrapping ErrNotFound.
func (m *MemoryStore) Get(_ context.Context, name string) ([]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	b, ok := m.objs[name]
	if !ok {
		return nil, fmt.Errorf("%s: %w", name, ErrNotFound)
	}
	return bytes.Clone(b), nil
}
