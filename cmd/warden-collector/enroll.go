package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/wardenhq/warden/collector"
	"github.com/wardenhq/warden/pkg/event"
	"github.com/wardenhq/warden/pkg/natsauth"
)

// subcommands of warden-collector that manage NATS users; each runs and
// exits without starting the collector.
var subcommands = map[string]func(args []string, stdout, stderr io.Writer) int{
	"enroll":          enroll,
	"soc-creds":       socCreds,
	"collector-creds": collectorCreds,
	"revoke":          revoke,
	"nats-config":     natsConfig,
}

// subFlags is a flag set of a subcommand with the --nats-auth flag every
// one takes.
func subFlags(name, usage string, stderr io.Writer) (*flag.FlagSet, *string) {
	fs := flag.NewFlagSet("warden-collector "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	auth := fs.String("nats-auth", collector.DefaultNATSAuth, "`DIR` of the NATS trust chain (the collector's --nats-auth)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: warden-collector %s %s\n\nflags:\n", name, usage)
		fs.PrintDefaults()
	}
	return fs, auth
}

// parseSub parses args (flags may come before or after the one
// positional argument) and returns the positional argument.
func parseSub(fs *flag.FlagSet, args []string, what string, stderr io.Writer) (string, int) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return "", 0
			}
			return "", 2
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if len(pos) != 1 {
		fmt.Fprintf(stderr, "%s: want exactly one %s\n", fs.Name(), what)
		return "", 2
	}
	return pos[0], -1
}

// enroll issues a bastion's NATS user, records its public key (and the
// agent's event-signing key, with --agent-key) and prints the agent.yaml
// lines.
func enroll(args []string, stdout, stderr io.Writer) int {
	fs, authDir := subFlags("enroll", "[flags] HOST_ID", stderr)
	out := fs.String("out", "", "where to write the creds `FILE` (default HOST_ID.creds in the current directory)")
	natsURL := fs.String("nats-url", "nats://127.0.0.1:4222", "the NATS `URL` the bastion dials, for the printed agent.yaml line")
	credsPath := fs.String("creds-path", "/etc/warden/nats.creds", "where the creds will be on the bastion, for the printed agent.yaml line")
	agentKey := fs.String("agent-key", "", "the agent's event-signing public key `FILE` (wardend keygen), installed into --agent-keys")
	agentKeys := fs.String("agent-keys", collector.DefaultAgentKeys, "the collector's `DIR` of <host_id>.pub keys")
	host, code := parseSub(fs, args, "HOST_ID", stderr)
	if code >= 0 {
		return code
	}
	fail := func(err error) int {
		fmt.Fprintf(stderr, "warden-collector enroll %s: %v\n", host, err)
		return 1
	}
	if err := natsauth.CheckName(natsauth.RoleAgent, host); err != nil {
		return fail(err)
	}
	var keyText string
	if *agentKey != "" {
		b, err := os.ReadFile(*agentKey)
		if err != nil {
			return fail(fmt.Errorf("--agent-key: %w", err))
		}
		pub, err := event.ParsePublicKey(b)
		if err != nil {
			return fail(fmt.Errorf("--agent-key %s: %w", *agentKey, err))
		}
		keyText = string(event.EncodePublicKey(pub))
		dst := filepath.Join(*agentKeys, host+".pub")
		if err := os.MkdirAll(*agentKeys, 0o755); err != nil {
			return fail(fmt.Errorf("--agent-keys: %w", err))
		}
		if err := event.WritePublicKey(dst, pub); err != nil {
			return fail(fmt.Errorf("install agent key %s: %w", dst, err))
		}
		fmt.Fprintf(stderr, "agent key of %s installed as %s\n", host, dst)
	}
	a, err := natsauth.Open(*authDir)
	if err != nil {
		return fail(err)
	}
	creds, u, err := a.Issue(natsauth.RoleAgent, host, keyText)
	if err != nil {
		return fail(err)
	}
	path := *out
	if path == "" {
		path = host + ".creds"
	}
	if err := writeCreds(path, creds); err != nil {
		return fail(err)
	}
	fmt.Fprintf(stderr, "NATS user %s of %s recorded; creds written to %s (copy to the bastion as %s, mode 0600)\n", u.PublicKey, host, path, *credsPath)
	fmt.Fprintf(stdout, "host_id: %s\nnats: { url: %q, creds_file: %s }\n", host, *natsURL, *credsPath)
	return 0
}

// socCreds issues a read-only SOC user.
func socCreds(args []string, stdout, stderr io.Writer) int {
	return issueCreds(natsauth.RoleSOC, "soc-creds", args, stdout, stderr)
}

// collectorCreds issues a collector user, for a collector that dials an
// external NATS (--nats-url, --nats-creds).
func collectorCreds(args []string, stdout, stderr io.Writer) int {
	return issueCreds(natsauth.RoleCollector, "collector-creds", args, stdout, stderr)
}

func issueCreds(role natsauth.Role, cmd string, args []string, _, stderr io.Writer) int {
	fs, authDir := subFlags(cmd, "[flags] NAME", stderr)
	out := fs.String("out", "", "where to write the creds `FILE` (default NAME.creds in the current directory)")
	name, code := parseSub(fs, args, "NAME", stderr)
	if code >= 0 {
		return code
	}
	fail := func(err error) int {
		fmt.Fprintf(stderr, "warden-collector %s %s: %v\n", cmd, name, err)
		return 1
	}
	a, err := natsauth.Open(*authDir)
	if err != nil {
		return fail(err)
	}
	creds, u, err := a.Issue(role, name, "")
	if err != nil {
		return fail(err)
	}
	path := *out
	if path == "" {
		path = name + ".creds"
	}
	if err := writeCreds(path, creds); err != nil {
		return fail(err)
	}
	fmt.Fprintf(stderr, "%s NATS user %s (%s) written to %s\n", role, name, u.PublicKey, path)
	return 0
}

// revoke revokes every creds issued so far to a user.
func revoke(args []string, _, stderr io.Writer) int {
	fs, authDir := subFlags("revoke", "[--role agent|soc|collector] [--previous] NAME", stderr)
	role := fs.String("role", string(natsauth.RoleAgent), "role of the user: agent (NAME is the host id), soc or collector")
	previous := fs.Bool("previous", false, "revoke only the keys issued before the current one (after a rotation)")
	name, code := parseSub(fs, args, "NAME", stderr)
	if code >= 0 {
		return code
	}
	a, err := natsauth.Open(*authDir)
	if err != nil {
		fmt.Fprintf(stderr, "warden-collector revoke %s: %v\n", name, err)
		return 1
	}
	u, keys, err := a.Revoke(natsauth.Role(*role), name, *previous)
	if err != nil {
		fmt.Fprintf(stderr, "warden-collector revoke %s: %v\n", name, err)
		return 1
	}
	fmt.Fprintf(stderr, "revoked %s user %s (%s): a collector with the embedded server applies it within seconds; for a cluster, redeploy warden-collector nats-config and reload every NATS server\n", u.Role, u.Name, strings.Join(keys, ", "))
	return 0
}

// natsConfig prints the trust chain lines of a nats-server config.
func natsConfig(args []string, stdout, stderr io.Writer) int {
	fs, authDir := subFlags("nats-config", "[flags]", stderr)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "warden-collector nats-config: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	a, err := natsauth.Open(*authDir)
	if err == nil {
		var cfg string
		if cfg, err = a.ServerConfig(); err == nil {
			fmt.Fprint(stdout, cfg)
			return 0
		}
	}
	fmt.Fprintf(stderr, "warden-collector nats-config: %v\n", err)
	return 1
}

// writeCreds writes a creds file, mode 0600: it holds the user's seed.
func writeCreds(path string, creds []byte) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("write creds: %w", err)
	}
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return fmt.Errorf("write creds %s: %w", path, err)
	}
	if _, err := f.Write(creds); err != nil {
		f.Close()
		return fmt.Errorf("write creds %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write creds %s: %w", path, err)
	}
	return nil
}
