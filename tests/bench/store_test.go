package bench

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/wardenhq/warden/agent/config"
	"github.com/wardenhq/warden/agent/natsconn"

	"github.com/wardenhq/warden/agent/publish"
	"github.com/wardenhq/warden/agent/recorder"
	"github.com/wardenhq/warden/agent/spool"
	"github.com/wardenhq/warden/collector"
	"github.com/wardenhq/warden/collector/natsembed"
	"github.com/wardenhq/warden/pkg/event"
	"github.com/wardenhq/warden/pkg/idtoken"
	"github.com/wardenhq/warden/pkg/natsauth"
	"github.com/wardenhq/warden/tests/harness"
)

// TestBenchSpoolToStore measures, in one run, the agent-to-store path with
// each event store: events waiting in an agent's spool (as after an
// outage) drained by its publisher, with its enrolled creds, through an
// authenticated embedded NATS into a collector that verifies and commits
// them to SQLite, then to PostgreSQL (the Debian package's server on
// loopback, with fsync turned on for the run, as SQLite syncs its
// commits). It prints events/s for both and their ratio.
func TestBenchSpoolToStore(t *testing.T) {
	if os.Getenv("WARDEN_BENCH") != "1" {
		t.Skip("benchmark: set WARDEN_BENCH=1 (make bench)")
	}
	n := envInt(t, "WARDEN_BENCH_EVENTS", 20000)
	rates, cpus := map[string]float64{}, map[string]float64{}
	for _, kind := range []string{"sqlite", "postgres"} {
		loc := filepath.Join(t.TempDir(), "events.db")
		if kind == "postgres" {
			loc = harness.PostgresStore(t)
			durable(t, loc)
		}
		rates[kind], cpus[kind] = spoolToStore(t, loc, n)
	}
	line := fmt.Sprintf("BENCH store: %d events agent spool->collector store: SQLite %.0f events/s (%.1f µs CPU/event), PostgreSQL %.0f events/s (%.1f µs CPU/event) (PostgreSQL/SQLite %.2f)",
		n, rates["sqlite"], cpus["sqlite"], rates["postgres"], cpus["postgres"], rates["postgres"]/rates["sqlite"])
	fmt.Println(line)
	t.Log(line)
}

// spoolToStore returns events/s and the test process's CPU per event while
// they flowed (publisher, NATS server and collector, all in this process;
// not the PostgreSQL server): steadier than the rate on a shared machine.
func spoolToStore(t *testing.T, location string, n int) (float64, float64) {
	dir := t.TempDir()
	auth, err := natsauth.Open(filepath.Join(dir, "auth"))
	if err != nil {
		t.Fatal(err)
	}
	ns, err := natsembed.Start(natsembed.Config{Listen: "127.0.0.1:0", StoreDir: filepath.Join(dir, "js"), Logger: zerolog.Nop(), Auth: auth})
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Shutdown()
	colCreds := writeCreds(t, auth, natsauth.RoleCollector, "bench", dir)
	agentCreds := writeCreds(t, auth, natsauth.RoleAgent, "bench-agent", dir)

	_, key, _ := ed25519.GenerateKey(rand.Reader)
	idp, _ := benchIdP(t)
	ctx, cancel := context.WithCancel(context.Background())
	c, err := collector.New(ctx, collector.Config{
		NATSURL: ns.ClientURL(), NATSCreds: colCreds, StorePath: location, Listen: "127.0.0.1:0",
		Keys: event.StaticKeys{"bench-agent": key.Public().(ed25519.PublicKey)}, Logger: zerolog.Nop(),
		OIDC: idtoken.Config{Issuer: idp.Issuer(), ClientID: "warden"}, Readers: []string{"soc"},
	})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()

	sp, err := spool.Open(filepath.Join(dir, "spool"), spool.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	rec, err := recorder.New(recorder.Options{Host: event.Host{ID: "bench-agent", Name: "bench"}, Key: key, Spool: sp, Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	defer rec.Close()
	for i := range n {
		if i == n-1 {
			if err := rec.EmitSync(context.Background(), benchEvent(i)); err != nil {
				t.Fatal(err)
			}
			break
		}
		rec.Emit(benchEvent(i))
	}
	pubCtx, stopPub := context.WithCancel(context.Background())
	pub := publish.New(sp, publish.Options{URL: ns.ClientURL(), HostID: "bench-agent", Logger: zerolog.Nop(),
		NATSOptions: agentOptions(t, agentCreds)})
	pubDone := make(chan error, 1)
	start, cpu0 := time.Now(), processCPU()
	go func() { pubDone <- pub.Run(pubCtx) }()
	waitStored(t, c, int64(n)) // the only events in this store are the agent's
	rate := float64(n) / time.Since(start).Seconds()
	cpu := float64((processCPU() - cpu0).Microseconds()) / float64(n)
	stopPub()
	<-pubDone
	if h := c.Ingester().Stats(); h.Violations != 0 {
		t.Errorf("%s: benchmark events raised %d integrity violations: %s", c.Store().Dialect(), h.Violations, violations(t, c))
	}
	return rate, cpu
}

// processCPU is the user and system CPU time this process used so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func writeCreds(t *testing.T, auth *natsauth.Authority, r natsauth.Role, name, dir string) string {
	b, _, err := auth.Issue(r, name, "")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, name+".creds")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// agentOptions are wardend's NATS options with creds.
func agentOptions(t *testing.T, creds string) []nats.Option {
	opts, err := natsconn.Options(config.NATS{CredsFile: creds}, "bench-agent", zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	return opts
}

// durable turns fsync on in the test PostgreSQL server (the harness runs
// it off), so that both stores pay for durable commits.
func durable(t *testing.T, dsn string) {
	ctx := context.Background()
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	for _, q := range []string{"ALTER SYSTEM SET fsync = on", "SELECT pg_reload_conf()"} {
		if _, err := c.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	// The reload is asynchronous: wait until the server runs with it.
	deadline := time.Now().Add(30 * time.Second)
	for {
		var v string
		if err := c.QueryRow(ctx, "SHOW fsync").Scan(&v); err != nil {
			t.Fatal(err)
		}
		if v == "on" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("fsync is %s after ALTER SYSTEM and a reload", v)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Cleanup(func() {
		if c, err := pgx.Connect(ctx, dsn); err == nil {
			c.Exec(ctx, "ALTER SYSTEM RESET fsync")
			c.Exec(ctx, "SELECT pg_reload_conf()")
			c.Close(ctx)
		}
	})
}
