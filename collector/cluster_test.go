package collector

import (
	"context"
	"errors"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// TestWhileClusterForms: stream setup is retried while the cluster answers
// that it cannot place the stream yet, and not for any other error.
func TestWhileClusterForms(t *testing.T) {
	noPeers := &jetstream.APIError{Code: 500, ErrorCode: codeNoSuitablePeers, Description: "no suitable peers for placement"}
	calls := 0
	err := whileClusterForms(context.Background(), zerolog.Nop(), func() error {
		if calls++; calls < 3 {
			return noPeers
		}
		return nil
	})
	if err != nil || calls != 3 {
		t.Fatalf("forming cluster: err %v after %d calls, want nil after 3", err, calls)
	}

	notEnabled := &jetstream.APIError{Code: 503, ErrorCode: jetstream.JSErrCodeJetStreamNotEnabled, Description: "JetStream not enabled"}
	calls = 0
	err = whileClusterForms(context.Background(), zerolog.Nop(), func() error {
		calls++
		return notEnabled
	})
	if !errors.Is(err, notEnabled) || calls != 1 {
		t.Fatalf("permanent error: err %v after %d calls, want it after 1", err, calls)
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	calls = 0
	err = whileClusterForms(ctx, zerolog.Nop(), func() error {
		calls++
		return noPeers
	})
	if !errors.Is(err, noPeers) || calls != 1 {
		t.Fatalf("cancelled: err %v after %d calls, want the last error after 1", err, calls)
	}
}
