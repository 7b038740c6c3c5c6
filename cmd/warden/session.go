package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"time"

	"github.com/wardenhq/warden/agent/control"
	"github.com/wardenhq/warden/agent/session"
	"github.com/wardenhq/warden/pkg/idtoken"
)

func agentClient() *control.Client {
	path := os.Getenv("WARDEN_AGENT_SOCKET")
	if path == "" {
		path = "/run/warden/agent.sock"
	}
	return control.NewClient(path)
}

func fail(cmd string, err error) int {
	fmt.Fprintf(os.Stderr, "warden %s: %v\n", cmd, err)
	return 1
}

func runLogin(args []string) int {
	fs := flag.NewFlagSet("warden login", flag.ContinueOnError)
	tokenFile := fs.String("token-file", "", "read the OIDC ID token from `PATH` (- for standard input) instead of running the device flow")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	client := agentClient()

	var token string
	switch *tokenFile {
	case "":
		idp, err := client.IdP(ctx)
		if err != nil {
			return fail("login", err)
		}
		if token, err = idtoken.DeviceLogin(ctx, idp.Issuer, idp.ClientID, idp.CAFile, os.Stderr); err != nil {
			return fail("login", err)
		}
	default:
		var data []byte
		var err error
		if *tokenFile == "-" {
			data, err = io.ReadAll(io.LimitReader(os.Stdin, control.MaxTokenBytes))
		} else {
			data, err = os.ReadFile(*tokenFile)
		}
		if err != nil {
			return fail("login", fmt.Errorf("read token: %w", err))
		}
		token = strings.TrimSpace(string(data))
		if token == "" {
			return fail("login", errors.New("the token file is empty"))
		}
	}
	s, err := client.Login(ctx, token)
	if err != nil {
		return fail("login", err)
	}
	// The agent has verified the token: keep it for the collector
	// commands (events, review, ...), which present it as the caller's.
	// The login itself stands either way.
	if _, err := cacheToken(token); err != nil {
		fmt.Fprintf(os.Stderr, "warden login: the ID token is not cached for the collector commands (use --token-file there): %v\n", err)
	}
	fmt.Printf("logged in as %s%s; groups: %s; expires %s (in %s)\n", s.Identity.Subject, emailSuffix(s),
		strings.Join(s.Identity.Groups, ", "), s.Expires.Local().Format(time.RFC3339), time.Until(s.Expires).Round(time.Second))
	return 0
}

func emailSuffix(s *session.Session) string {
	if s.Identity.Email == "" {
		return ""
	}
	return " <" + s.Identity.Email + ">"
}

func runLogout(args []string) int {
	fs := flag.NewFlagSet("warden logout", flag.ContinueOnError)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	s, err := agentClient().Logout(context.Background())
	if err != nil {
		return fail("logout", err)
	}
	if err := removeCachedToken(); err != nil {
		fmt.Fprintf(os.Stderr, "warden logout: %v\n", err)
	}
	fmt.Printf("logged out %s (session %s)\n", s.Identity.Subject, s.ID)
	return 0
}

func runWhoami(args []string) int {
	fs := flag.NewFlagSet("warden whoami", flag.ContinueOnError)
	asJSON := fs.Bool("json", false, "print the session as JSON")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	s, err := agentClient().Whoami(context.Background())
	if err != nil {
		return fail("whoami", err)
	}
	if *asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		enc.Encode(s)
		return 0
	}
	fmt.Printf("subject:  %s%s\nname:     %s\ngroups:   %s\nissuer:   %s\nsession:  %s\nlogin:    %s\nexpires:  %s\n",
		s.Identity.Subject, emailSuffix(s), s.Identity.Name, strings.Join(s.Identity.Groups, ", "), s.Identity.Issuer,
		s.ID, s.LoginTime.Local().Format(time.RFC3339), s.Expires.Local().Format(time.RFC3339))
	return 0
}
