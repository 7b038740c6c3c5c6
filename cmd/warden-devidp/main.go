// Command warden-devidp runs the Warden development OpenID Provider.
//
// NOT FOR PRODUCTION: anyone who can reach it can obtain a signed ID token for
// any configured user. It exists for `make demo` and the end-to-end tests.
// See docs/devidp.md.
//
//	warden-devidp --listen 127.0.0.1:5556 [--issuer URL] [--client-id warden]
//	              [--users FILE] [--key FILE] [--poll-interval 5s]
package main

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"gopkg.in/yaml.v3"

	"github.com/wardenhq/warden/pkg/devidp"
)

const banner = `
#################################################################
#                                                               #
#      DEV IdP — NOT FOR PRODUCTION                             #
#      Anyone who can reach this server can get a signed ID     #
#      token for any configured user. Never expose it.          #
#                                                               #
#################################################################
`

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "warden-devidp:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("warden-devidp", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:5556", "address to listen on")
	issuer := fs.String("issuer", "", "public issuer URL (default http://<listen address>)")
	clientID := fs.String("client-id", "warden", "the OAuth client id tokens are issued for")
	usersFile := fs.String("users", "", "YAML file with a list of users {sub, email, name, groups} (default: alice, bob, mallory)")
	keyFile := fs.String("key", "", "PEM private key (RSA, ECDSA or Ed25519) to sign with, so tokens survive restarts (default: a fresh RSA-2048 key)")
	interval := fs.Duration("poll-interval", 5*time.Second, "device flow polling interval advertised to clients")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}

	fmt.Fprint(os.Stderr, banner)
	log := zerolog.New(os.Stderr).With().Timestamp().Str("component", "warden-devidp").Logger()

	users := devidp.DefaultUsers()
	if *usersFile != "" {
		var err error
		if users, err = loadUsers(*usersFile); err != nil {
			return err
		}
	}
	var key crypto.Signer
	if *keyFile != "" {
		var err error
		if key, err = loadKey(*keyFile); err != nil {
			return err
		}
	}

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("--listen %s: %w", *listen, err)
	}
	iss := *issuer
	if iss == "" {
		iss = "http://" + ln.Addr().String()
	}
	idp, err := devidp.New(devidp.Options{
		Issuer:       iss,
		ClientID:     *clientID,
		Users:        users,
		Key:          key,
		PollInterval: *interval,
		Logger:       &log,
	})
	if err != nil {
		ln.Close()
		return err
	}
	subs := make([]string, 0, len(users))
	for _, u := range users {
		subs = append(subs, u.Sub)
	}
	log.Info().Str("issuer", idp.Issuer()).Str("client_id", idp.ClientID()).Strs("users", subs).
		Str("kid", idp.KeyID()).Msg("dev IdP listening")

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := idp.Serve(ctx, ln); err != nil {
		return err
	}
	log.Info().Msg("dev IdP stopped")
	return nil
}

// loadUsers reads a YAML list of users, rejecting unknown fields so a typo
// ("group:") does not silently drop someone's groups.
func loadUsers(path string) ([]devidp.User, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--users: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	var users []devidp.User
	if err := dec.Decode(&users); err != nil {
		return nil, fmt.Errorf("--users %s: want a YAML list of {sub, email, name, groups}: %w", path, err)
	}
	if len(users) == 0 {
		return nil, fmt.Errorf("--users %s: no users defined", path)
	}
	return users, nil
}

// loadKey reads a PEM private key in PKCS#8, PKCS#1 (RSA) or SEC 1 (EC) form.
func loadKey(path string) (crypto.Signer, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--key: %w", err)
	}
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, fmt.Errorf("--key %s: no PEM block found", path)
	}
	var k any
	switch block.Type {
	case "PRIVATE KEY":
		k, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		k, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		k, err = x509.ParseECPrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("--key %s: unsupported PEM block %q (want PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY)", path, block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("--key %s: %w", path, err)
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, errors.New("--key " + path + ": key cannot sign")
	}
	return s, nil
}
