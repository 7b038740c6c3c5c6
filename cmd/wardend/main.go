// Command wardend is the Warden agent: it loads the BPF programs, binds
// verified identities to login sessions, runs the L7 proxy and records
// signed events. Run 'wardend help' for its commands.
//
// Every failure to start ends with one line on stderr that says what failed
// ("wardend: proxy_listen 127.0.0.1:15001: address already in use") and a
// non-zero exit status; JSON log lines may come before it.
package main

import (
	"context"
	"crypto/ed25519"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"

	"github.com/rs/zerolog"

	"github.com/wardenhq/warden/agent/check"
	"github.com/wardenhq/warden/agent/config"
	"github.com/wardenhq/warden/agent/daemon"
	"github.com/wardenhq/warden/agent/lineage"
	"github.com/wardenhq/warden/agent/natsconn"
	"github.com/wardenhq/warden/agent/proxy/codecs"
	"github.com/wardenhq/warden/agent/publish"
	"github.com/wardenhq/warden/agent/recorder"
	"github.com/wardenhq/warden/agent/spool"
	"github.com/wardenhq/warden/bpf/loader"
	"github.com/wardenhq/warden/pkg/cgroupv2"
	"github.com/wardenhq/warden/pkg/event"
	"github.com/wardenhq/warden/pkg/policy"
)

const usage = `Usage: wardend [COMMAND] [--config PATH]

Commands:
  run                 run the daemon (the default when no command is given)
  check               report which kernel features are present and whether
                      this host can run Warden
  check-policy FILE   validate a policy file against what this wardend
                      enforces, offline: no BPF, no network, nothing written
  keygen              create the event-signing key; print the public key's path
  uninstall           detach the BPF programs and remove their pins
  help                print this help

Flags:
  --config PATH       agent configuration (default ` + config.DefaultPath + `)
`

func main() {
	os.Exit(wardend(os.Args[1:], os.Stdout, os.Stderr))
}

// wardend runs the command in args and returns the exit status.
func wardend(args []string, stdout, stderr io.Writer) int {
	cmd := "run"
	if len(args) > 0 && len(args[0]) > 0 && args[0][0] != '-' {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "help":
		fmt.Fprint(stdout, usage)
		return 0
	case "run", "check", "check-policy", "keygen", "uninstall":
	default:
		fmt.Fprintf(stderr, "wardend: unknown command %q\n\n%s", cmd, usage)
		return 2
	}
	fs := flag.NewFlagSet("wardend "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usage) }
	configPath := fs.String("config", config.DefaultPath, "agent configuration file")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if cmd == "check-policy" {
		if fs.NArg() != 1 {
			fmt.Fprintf(stderr, "wardend check-policy: want one policy file, got %d arguments\n", fs.NArg())
			return 2
		}
		return checkPolicy(fs.Arg(0), stdout, stderr)
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "wardend %s: unexpected arguments %q\n", cmd, fs.Args())
		return 2
	}

	switch cmd {
	case "check":
		return runCheck(*configPath, stdout, stderr)
	case "uninstall":
		return runUninstall(*configPath, stdout, stderr)
	case "keygen":
		cfg, err := config.Load(*configPath)
		if err == nil {
			_, err = signingKey(cfg)
		}
		if err != nil {
			fmt.Fprintf(stderr, "wardend keygen: %v\n", err)
			return 1
		}
		fmt.Fprintln(stdout, publicKeyPath(cfg))
		return 0
	}
	if err := run(*configPath, stderr); err != nil {
		fmt.Fprintf(stderr, "wardend: %v\n", err)
		return 1
	}
	return 0
}

// checkPolicy validates the policy file at path against the capabilities of
// this build's codecs, exactly as wardend would load it, and prints every
// problem.
func checkPolicy(path string, stdout, stderr io.Writer) int {
	p, err := policy.Load(path, codecs.New(codecs.Options{}).Enforcement())
	if err != nil {
		problems := policy.Errors(err)
		if len(problems) == 0 {
			fmt.Fprintf(stderr, "wardend check-policy: %v\n", err)
			return 1
		}
		noun := "problems"
		if len(problems) == 1 {
			noun = "problem"
		}
		fmt.Fprintf(stderr, "wardend check-policy: %s is invalid (%d %s):\n", path, len(problems), noun)
		for _, e := range problems {
			fmt.Fprintln(stderr, e)
		}
		return 1
	}
	fmt.Fprintf(stdout, "%s: OK (%d targets, %d access entries, %d rules, %d masking entries; sha256 %s)\n",
		path, len(p.Targets), len(p.Access), len(p.Rules), len(p.Masking), p.Digest)
	return 0
}

func newLogger(level string, w io.Writer) zerolog.Logger {
	lvl, err := zerolog.ParseLevel(level)
	if err != nil {
		lvl = zerolog.InfoLevel
	}
	zerolog.TimeFieldFormat = zerolog.TimeFormatUnixNano
	return zerolog.New(w).Level(lvl).With().Timestamp().Str("service", "wardend").Logger()
}

// run runs the daemon until SIGINT or SIGTERM. Whatever it started is
// stopped before it returns, on error too, so the caller's line is the
// last thing printed.
func run(configPath string, stderr io.Writer) error {
	cfg, err := config.Load(configPath)
	if err != nil {
		return err
	}
	log := newLogger(cfg.LogLevel, stderr)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	key, err := signingKey(cfg)
	if err != nil {
		return err
	}
	sp, err := spool.Open(cfg.SpoolDir, spool.Options{MaxBytes: cfg.SpoolMaxBytes})
	if err != nil {
		return fmt.Errorf("spool_dir %s: %w", cfg.SpoolDir, err)
	}
	defer sp.Close()
	if r := sp.Recovered(); r.TornBytes > 0 {
		log.Warn().Int64("bytes", r.TornBytes).Str("segment", r.TornSegment).Str("detail", r.Detail).Msg("spool repaired after a crash")
	}
	hostname, _ := os.Hostname()
	rec, err := recorder.New(recorder.Options{Host: event.Host{ID: cfg.HostID, Name: hostname}, Key: key, Spool: sp, Logger: log,
		CheckpointInterval: cfg.CheckpointEvery()})
	if err != nil {
		return fmt.Errorf("event recorder (spool_dir %s): %w", cfg.SpoolDir, err)
	}
	defer rec.Close()
	natsOpts, err := natsconn.Options(cfg.NATS, cfg.HostID, log.With().Str("component", "publish").Logger())
	if err != nil {
		return err
	}
	pub := publish.New(sp, publish.Options{URL: cfg.NATS.URL, HostID: cfg.HostID, NATSOptions: natsOpts, Logger: log.With().Str("component", "publish").Logger()})

	// The publisher stops after the daemon, before the recorder closes:
	// the daemon's last events (agent.stop) are in the spool by then.
	var wg sync.WaitGroup
	pubCtx, stopPub := context.WithCancel(context.Background())
	defer func() {
		stopPub()
		wg.Wait()
	}()
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := pub.Run(pubCtx); err != nil && !errors.Is(err, context.Canceled) {
			log.Error().Err(err).Msg("publisher stopped")
		}
	}()

	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	return daemon.Run(ctx, cfg, rec, log, hup, rec, pub)
}

// publicKeyPath is where the agent's public key is written, named the way
// the collector's --agent-keys directory expects.
func publicKeyPath(cfg config.Config) string {
	return filepath.Join(filepath.Dir(cfg.KeyFile), cfg.HostID+".pub")
}

// signingKey loads the agent's event-signing key, creating it (and its
// directory) on first use, and writes its public half for the collector.
func signingKey(cfg config.Config) (ed25519.PrivateKey, error) {
	dir := filepath.Dir(cfg.KeyFile)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("key_file %s: cannot create its directory %s: %w", cfg.KeyFile, dir, err)
	}
	key, err := event.LoadOrCreateKey(cfg.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("key_file %s: %w", cfg.KeyFile, err)
	}
	if err := event.WritePublicKey(publicKeyPath(cfg), key.Public().(ed25519.PublicKey)); err != nil {
		return nil, fmt.Errorf("key_file %s: write the public key: %w", cfg.KeyFile, err)
	}
	return key, nil
}

func runCheck(configPath string, stdout, stderr io.Writer) int {
	cfg, err := config.Load(configPath)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		fmt.Fprintf(stderr, "wardend check: %v\n", err)
		return 2
	}
	if err != nil {
		cfg = config.Default()
	}
	report := check.Run(check.Options{CgroupRoot: cfg.CgroupRoot})
	report.Print(stdout)
	if !report.OK() {
		return 1
	}
	return 0
}

func runUninstall(configPath string, stdout, stderr io.Writer) int {
	cfg, err := config.Load(configPath)
	if err != nil {
		fmt.Fprintf(stderr, "wardend uninstall: %v\n", err)
		return 2
	}
	root := cfg.CgroupRoot
	if root == "" {
		if root, err = cgroupv2.Mount(); err != nil {
			fmt.Fprintf(stderr, "wardend uninstall: %v\n", err)
			return 1
		}
	}
	// The lineage programs pin below the enforcer's pin dir, which the
	// enforcer's uninstall may unmount or remove: they go first.
	err = lineage.Uninstall(cfg.BPFPinDir)
	if err == nil {
		var enf *loader.Enforcer
		enf, err = loader.Load(loader.Options{CgroupPath: root, PinDir: cfg.BPFPinDir})
		if err == nil {
			err = enf.Uninstall()
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "wardend uninstall: %v\n", err)
		return 1
	}
	fmt.Fprintln(stdout, "BPF programs detached and pins removed from", cfg.BPFPinDir)
	return 0
}
