package recording

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// NATSStore keeps recordings in the WARDEN_RECORDINGS Object Store bucket.
// The bucket is opened (created if need be) on first use and again after
// a failure, so an agent that starts while NATS is down records once it
// is back.
type NATSStore struct {
	js jetstream.JetStream
	nc *nats.Conn // owned when made by DialNATS

	mu sync.Mutex
	os jetstream.ObjectStore
}

// NewNATSStore returns a store on js.
func NewNATSStore(js jetstream.JetStream) *NATSStore {
	return &NATSStore{js: js}
}

// DialNATS connects to url (retrying in the background, like the event
// publisher) and returns a store on that connection; Close closes it.
func DialNATS(url string, opts ...nats.Option) (*NATSStore, error) {
	opts = append([]nats.Option{nats.Name("wardend-recordings"), nats.RetryOnFailedConnect(true), nats.MaxReconnects(-1)}, opts...)
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return nil, fmt.Errorf("recordings: connect to NATS: %w", err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("recordings: jetstream: %w", err)
	}
	s := NewNATSStore(js)
	s.nc = nc
	return s, nil
}

// Close closes the connection DialNATS made.
func (s *NATSStore) Close() {
	if s.nc != nil {
		s.nc.Close()
	}
}

func (s *NATSStore) bucket(ctx context.Context) (jetstream.ObjectStore, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.os != nil {
		return s.os, nil
	}
	o, err := s.js.CreateOrUpdateObjectStore(ctx, jetstream.ObjectStoreConfig{
		Bucket:      Bucket,
		Description: "Warden SSH session recordings (asciicast v2, chunked)",
		Storage:     jetstream.FileStorage,
	})
	if err != nil {
		return nil, fmt.Errorf("object store %s: %w", Bucket, err)
	}
	s.os = o
	return o, nil
}

// Put stores one object.
func (s *NATSStore) Put(ctx context.Context, name string, data []byte) error {
	o, err := s.bucket(ctx)
	if err != nil {
		return err
	}
	if _, err := o.Put(ctx, jetstream.ObjectMeta{Name: name}, bytes.NewReader(data)); err != nil {
		return fmt.Errorf("put %s: %w", name, err)
	}
	return nil
}

// Get fetches one object.
func (s *NATSStore) Get(ctx context.Context, name string) ([]byte, error) {
	o, err := s.bucket(ctx)
	if err != nil {
		return nil, err
	}
	b, err := o.GetBytes(ctx, name)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return nil, fmt.Errorf("%s: %w", name, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", name, err)
	}
	return b, nil
}
