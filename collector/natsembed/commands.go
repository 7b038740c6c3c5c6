package natsembed

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/wardenhq/warden/pkg/event"
)

// EnsureCommandStream creates the WARDEN_COMMANDS stream if it does not
// exist: subjects warden.commands.>, file storage, limits retention (every
// agent reads every message through its own durable consumer, so a message
// must outlive its first reader), kept for event.CommandStreamMaxAge so
// that the longest lock reaches an agent installed during it. An existing
// stream is left as it is.
func EnsureCommandStream(ctx context.Context, js jetstream.JetStream, replicas int) (jetstream.Stream, error) {
	st, err := js.Stream(ctx, event.CommandStreamName)
	if err == nil {
		return st, nil
	}
	if !errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, fmt.Errorf("look up stream %s: %w", event.CommandStreamName, err)
	}
	if replicas < 1 {
		replicas = 1
	}
	st, err = js.CreateStream(ctx, jetstream.StreamConfig{
		Name:       event.CommandStreamName,
		Subjects:   []string{event.CommandStreamSubjects},
		Storage:    jetstream.FileStorage,
		Retention:  jetstream.LimitsPolicy,
		MaxAge:     event.CommandStreamMaxAge,
		Duplicates: DuplicateWindow,
		Replicas:   replicas,
	})
	if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		return js.Stream(ctx, event.CommandStreamName)
	}
	if err != nil {
		return nil, fmt.Errorf("create stream %s: %w", event.CommandStreamName, err)
	}
	return st, nil
}

// CommandPublisher publishes commands on WARDEN_COMMANDS.
type CommandPublisher struct {
	JS jetstream.JetStream
}

// Publish sends c on its subject and returns once the stream stored it.
// Nats-Msg-Id is the command id, so a retried publish is stored once.
func (p CommandPublisher) Publish(ctx context.Context, c *event.Command) error {
	b, err := event.EncodeCommand(c)
	if err != nil {
		return err
	}
	m := nats.NewMsg(c.Subject())
	m.Data = b
	m.Header.Set(nats.MsgIdHdr, c.ID)
	if _, err := p.JS.PublishMsg(ctx, m, jetstream.WithExpectStream(event.CommandStreamName)); err != nil {
		return fmt.Errorf("publish command %s on %s: %w", c.ID, c.Subject(), err)
	}
	return nil
}
