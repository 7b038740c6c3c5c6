// Command wardend is the Warden agent: it loads the BPF programs, binds
// verified identities to login sessions, runs the L7 proxy and records
// signed events.
//
//	wardend [--config PATH]        run the daemon
//	wardend check [--config PATH]  report kernel features and a verdict
//	wardend keygen [--config PATH]     create the event-signing key, print the public key's path
//	wardend uninstall [--config PATH]
//	                               detach the BPF programs and remove pins
package main

import (
	"context"
	"crypto/ed25519"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"

	"github.com/rs/zerolog"

	"github.com/wardenhq/warden/agent/check"
	"github.com/wardenhq/warden/agent/config"
	"github.com/wardenhq/warden/agent/daemon"
	"github.com/wardenhq/warden/agent/publish"
	"github.com/wardenhq/warden/agent/recorder"
	"github.com/wardenhq/warden/agent/spool"
	"github.com/wardenhq/warden/bpf/loader"
	"github.com/wardenhq/warden/pkg/cgroupv2"
	"github.com/wardenhq/warden/pkg/event"
)

func main() {
	args := os.Args[1:]
	cmd := "run"
	if len(args) > 0 && (args[0] == "check" || args[0] == "uninstall" || args[0] == "keygen" || args[0] == "run") {
		cmd, args = args[0], args[1:]
	}
	fs := flag.NewFlagSet("wardend "+cmd, flag.ExitOnError)
	configPath := fs.String("config", config.DefaultPath, "agent configuration file")
	fs.Parse(args)

	switch cmd {
	case "check":
		os.Exit(runCheck(*configPath))
	case "uninstall":
		os.Exit(runUninstall(*configPath))
	case "keygen":
		cfg, err := config.Load(*configPath)
		if err == nil {
			_, err = signingKey(cfg)
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "wardend keygen: %v\n", err)
			os.Exit(1)
		}
		fmt.Println(publicKeyPath(cfg))
		os.Exit(0)
	}
	if err := run(*configPath); err != nil {
		fmt.Fprintf(os.Stderr, "wardend: %v\n", err)
		os.Exit(1)
	}
}

func newLogger(level string) zerolog.Logger {
	lvl, err := zerolog.ParseLevel(level)
	if err != nil {
		lvl = zerolog.InfoLevel
	}
	zerolog.TimeFieldFormat = zerolog.TimeFormatUnixNano
	return zerolog.New(os.Stderr).Level(lvl).With().Timestamp().Str("service", "wardend").Logger()
}

func run(configPath string) error {
	cfg, err := config.Load(configPath)
	if err != nil {
		return err
	}
	log := newLogger(cfg.LogLevel)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	key, err := signingKey(cfg)
	if err != nil {
		return err
	}
	sp, err := spool.Open(cfg.SpoolDir, spool.Options{})
	if err != nil {
		return err
	}
	defer sp.Close()
	if r := sp.Recovered(); r.TornBytes > 0 {
		log.Warn().Int64("bytes", r.TornBytes).Str("segment", r.TornSegment).Str("detail", r.Detail).Msg("spool repaired after a crash")
	}
	hostname, _ := os.Hostname()
	rec, err := recorder.New(recorder.Options{Host: event.Host{ID: cfg.HostID, Name: hostname}, Key: key, Spool: sp, Logger: log})
	if err != nil {
		return err
	}
	defer rec.Close()
	pub := publish.New(sp, publish.Options{URL: cfg.NATS.URL, Logger: log.With().Str("component", "publish").Logger()})

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

// signingKey loads the agent's event-signing key, creating it on first use,
// and writes its public half for the collector.
func signingKey(cfg config.Config) (ed25519.PrivateKey, error) {
	key, err := event.LoadOrCreateKey(cfg.KeyFile)
	if err != nil {
		return nil, err
	}
	if err := event.WritePublicKey(publicKeyPath(cfg), key.Public().(ed25519.PublicKey)); err != nil {
		return nil, err
	}
	return key, nil
}

func runCheck(configPath string) int {
	cfg, err := config.Load(configPath)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		fmt.Fprintf(os.Stderr, "wardend check: %v\n", err)
		return 2
	}
	if err != nil {
		cfg = config.Default()
	}
	report := check.Run(check.Options{CgroupRoot: cfg.CgroupRoot})
	report.Print(os.Stdout)
	if !report.OK() {
		return 1
	}
	return 0
}

func runUninstall(configPath string) int {
	cfg, err := config.Load(configPath)
	if err != nil {
		fmt.Fprintf(os.Stderr, "wardend uninstall: %v\n", err)
		return 2
	}
	root := cfg.CgroupRoot
	if root == "" {
		if root, err = cgroupv2.Mount(); err != nil {
			fmt.Fprintf(os.Stderr, "wardend uninstall: %v\n", err)
			return 1
		}
	}
	// The lineage programs pin below the enforcer's pin dir, which the
	// enforcer's uninstall may unmount: they go first.
	err = daemon.UninstallLineage(cfg.BPFPinDir)
	if err == nil {
		var enf *loader.Enforcer
		enf, err = loader.Load(loader.Options{CgroupPath: root, PinDir: cfg.BPFPinDir})
		if err == nil {
			err = enf.Uninstall()
		}
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "wardend uninstall: %v\n", err)
		return 1
	}
	fmt.Println("BPF programs detached and pins removed from", cfg.BPFPinDir)
	return 0
}
