package collector

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/wardenhq/warden/collector/ingest"
)

// Active/standby collectors. Two (or more) collectors share a durable
// consumer and a PostgreSQL store; a key in a JetStream key-value bucket is
// the ingest lease. Its holder consumes and renews it; the others wait.
// When the holder stops renewing (killed, cut off), the key expires after
// the bucket's TTL and a standby creates it.
//
// Order matters to the chain check: the previous holder may have died with
// messages delivered but not acknowledged. JetStream redelivers those
// before anything newer, but only once their AckWait has passed, so a new
// holder that finds unacknowledged messages waits for AckWait before
// consuming: events then arrive in stream order, and no false gap is
// reported.

// LeaseBucket is the key-value bucket of ingest leases, one key per
// consumer name.
const LeaseBucket = "WARDEN_COLLECTOR_LEASE"

// DefaultLeaseTTL is how long a lease outlives its holder's last renewal.
const DefaultLeaseTTL = 5 * time.Second

// errLeaseLost stops an active collector that could not renew its lease.
var errLeaseLost = errors.New("ingest lease lost")

func leaseTTL(cfg Config) time.Duration {
	if cfg.LeaseTTL > 0 {
		return cfg.LeaseTTL
	}
	return DefaultLeaseTTL
}

// leaseBucket creates (or finds) the lease bucket, replicated like the
// streams.
func leaseBucket(ctx context.Context, js jetstream.JetStream, cfg Config) (jetstream.KeyValue, error) {
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      LeaseBucket,
		Description: "warden-collector ingest leases (active/standby)",
		TTL:         leaseTTL(cfg),
		Storage:     jetstream.FileStorage,
		Replicas:    max(cfg.StreamReplicas, 1),
	})
	if err != nil {
		return nil, fmt.Errorf("lease bucket %s: %w", LeaseBucket, err)
	}
	return kv, nil
}

// runStandby waits for the lease, ingests while holding it, and waits
// again when it is lost, until ctx ends. On a stop it gives the lease up,
// so a standby takes over at once.
func (c *Collector) runStandby(ctx context.Context) error {
	ttl := leaseTTL(c.cfg)
	key := c.cfg.Consumer
	waiting := false
	for {
		rev, err := c.leaseKV.Create(ctx, key, []byte(c.cfg.Name))
		if err == nil {
			c.log.Info().Str("lease", key).Msg("ingest lease won: active")
			err = c.runActive(ctx, key, rev)
			if ctx.Err() != nil {
				// Give the lease up for the standby. ctx is done: a fresh
				// context bounds the call.
				dctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				_ = c.leaseKV.Delete(dctx, key, jetstream.LastRevision(c.leaseRev))
				cancel()
				return nil
			}
			if !errors.Is(err, errLeaseLost) {
				return err
			}
			c.log.Warn().Err(err).Msg("standing by")
			waiting = false
		} else if ctx.Err() != nil {
			return nil
		} else if !waiting {
			holder := "?"
			if e, gerr := c.leaseKV.Get(ctx, key); gerr == nil {
				holder = string(e.Value())
			}
			c.log.Info().Str("lease", key).Str("holder", holder).Msg("standby: another collector ingests")
			waiting = true
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(ttl / 5):
		}
	}
}

// runActive ingests while renewing the lease (revision rev) every TTL/5.
// It returns errLeaseLost when a renewal fails for TTL/2 or finds the key
// changed, after stopping the ingester.
func (c *Collector) runActive(ctx context.Context, key string, rev uint64) error {
	ttl := leaseTTL(c.cfg)
	c.leaseRev = rev
	actx, cancel := context.WithCancel(ctx)
	defer cancel()
	renew := time.NewTicker(ttl / 5)
	defer renew.Stop()
	lastOK := time.Now()
	// keep renews the lease; false means it is lost.
	keep := func() bool {
		r, err := c.leaseKV.Update(actx, key, []byte(c.cfg.Name), c.leaseRev)
		if err == nil {
			c.leaseRev, lastOK = r, time.Now()
			return true
		}
		if errors.Is(err, jetstream.ErrKeyExists) || time.Since(lastOK) > ttl/2 {
			c.log.Error().Err(err).Msg("ingest lease not renewed")
			return false
		}
		return true
	}

	// The previous holder's unacknowledged messages come back first, once
	// their AckWait passed.
	if info, err := c.stream.Consumer(actx, c.cfg.Consumer); err == nil {
		ci := info.CachedInfo()
		if ci.NumAckPending > 0 {
			wait := ci.Config.AckWait
			c.log.Info().Int("unacknowledged", ci.NumAckPending).Dur("wait", wait).
				Msg("the previous holder left messages unacknowledged; waiting for their redelivery")
			deadline := time.After(wait)
		hold:
			for {
				select {
				case <-actx.Done():
					return actx.Err()
				case <-deadline:
					break hold
				case <-renew.C:
					if !keep() {
						return errLeaseLost
					}
				}
			}
		}
	}

	ing, err := ingest.New(actx, c.ingCfg)
	if err != nil {
		return err
	}
	c.ing.Store(ing)
	defer c.ing.Store(nil)
	done := make(chan error, 1)
	go func() { done <- ing.Run(actx) }()
	for {
		select {
		case err := <-done:
			return err
		case <-renew.C:
			if !keep() {
				cancel()
				<-done
				return errLeaseLost
			}
		}
	}
}
