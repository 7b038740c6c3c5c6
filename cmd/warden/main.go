// Command warden is Warden's command-line client.
//
//	warden login [--token-file PATH|-]   bind your verified identity to this shell
//	                                     (and cache the token for the commands below)
//	warden logout                        unbind it
//	warden whoami [--json]               show the identity bound to this shell
//	warden events ...                    query the collector's events
//	warden lineage ID                    show the process chain behind an event
//	warden sessions ...                  who was logged in and what they touched
//	warden sessions kill ...             end a session or a person's sessions (SOC)
//	warden locks                         people refused new logins
//	warden access request TARGET ...     ask for just-in-time access
//	warden review list|show|approve|deny held statements and access requests
//	warden verify EVENT_ID | --bundle F  prove an event is in its agent's signed log
package main

import (
	"fmt"
	"os"
)

const usage = `usage: warden <command> [flags]

commands:
  login [--token-file PATH|-]   bind your verified identity to this shell
                                (no token file: OIDC device flow)
  logout                        unbind this shell's identity
  whoami [--json]               show the identity bound to this shell
  events [flags]                query events from the collector
  lineage ID                    process chain and identity behind an event
  sessions [flags]              login sessions and what they touched
  sessions kill SESSION_ID|--user SUB --reason TEXT [--host H] [--lock 1h]
                                end sessions on the agents (--killers only)
  locks [--json]                people refused new logins, and until when
  access request TARGET --reason TEXT [--for 1h]
                                ask for a just-in-time window on TARGET
  review list [--state pending|approved|denied|expired|all] [--json]
  review show ID | approve ID [--reason TEXT] | deny ID [--reason TEXT]
                                reviews you requested or may decide
  replay SSH_SESSION [--speed N] [--idle-limit 2s] [--cast]
                                play an SSH session's recording (--cast:
                                the asciicast v2 file, for asciinema)
  verify EVENT_ID [--key FILE] [--export FILE] | verify --bundle FILE
                                prove the event is in its agent's signed
                                Merkle log (exit 1 if it is not)

The agent socket is $WARDEN_AGENT_SOCKET or /run/warden/agent.sock.
The collector is --collector URL or $WARDEN_COLLECTOR (an https collector
with a private CA: --collector-ca PATH or $WARDEN_COLLECTOR_CA). Collector
commands send your OIDC ID token: --token-file PATH, else $WARDEN_TOKEN_FILE,
else the token warden login cached in $XDG_CACHE_HOME/warden/id_token
(~/.cache/warden/id_token).
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	commands := map[string]func([]string) int{
		"login":    runLogin,
		"logout":   runLogout,
		"whoami":   runWhoami,
		"events":   runEvents,
		"lineage":  runLineage,
		"sessions": runSessions,
		"locks":    runLocks,
		"access":   runAccess,
		"review":   runReview,
		"replay":   runReplay,
		"verify":   runVerify,
	}
	cmd, ok := commands[os.Args[1]]
	if !ok {
		if os.Args[1] != "-h" && os.Args[1] != "--help" && os.Args[1] != "help" {
			fmt.Fprintf(os.Stderr, "warden: unknown command %q\n\n", os.Args[1])
		}
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	os.Exit(cmd(os.Args[2:]))
}
