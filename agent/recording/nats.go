package recording

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// NATSStore keeps recordings in the WARDEN_RECORDINGS Object Store bucket.
type NATSStore struct {
	os jetstream.ObjectStore
}

// NewNATSStore opens the bucket, creating it (file storage) if it does not
// exist yet.
func NewNATSStore(ctx context.Context, js jetstream.JetStream) (*NATSStore, error) {
	o, err := js.CreateOrUpdateObjectStore(ctx, jetstream.ObjectStoreConfig{
		Bucket:      Bucket,
		Description: "Warden SSH session recordings (asciicast v2, chunked)",
		Storage:     jetstream.FileStorage,
	})
	if err != nil {
		return nil, fmt.Errorf("object store %s: %w", Bucket, err)
	}
	return &NATSStore{os: o}, nil
}

// Put stores one object.
func (s *NATSStore) Put(ctx context.Context, name string, data []byte) error {
	if _, err := s.os.Put(ctx, jetstream.ObjectMeta{Name: name}, bytes.NewReader(data)); err != nil {
		return fmt.Errorf("put %s: %w", name, err)
	}
	return nil
}

// Get fetches one object.
func (s *NATSStore) Get(ctx context.Context, name string) ([]byte, error) {
	b, err := s.os.GetBytes(ctx, name)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return nil, fmt.Errorf("%s: %w", name, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", name, err)
	}
	return b, nil
}
