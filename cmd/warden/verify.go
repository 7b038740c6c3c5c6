package main

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/wardenhq/warden/pkg/event"
)

// maxBundle bounds a bundle file: an inclusion proof is at most 64 hashes.
const maxBundle = 64 << 20

// runVerify proves one event's inclusion in its agent's signed Merkle log:
// from the collector (GET /v1/proofs/{id}) or from an exported bundle, so
// an auditor can check a statement offline. Exit status 0: verified; 1:
// the event does not verify (tampered, or not covered); 2: usage; 3: the
// bundle could not be obtained.
func runVerify(args []string) int {
	fs := flag.NewFlagSet("warden verify", flag.ContinueOnError)
	client := collectorFlags(fs)
	bundlePath := fs.String("bundle", "", "verify the proof bundle in `FILE` (from --export) instead of asking the collector")
	export := fs.String("export", "", "also write the proof bundle to `FILE`, for offline checks")
	keyArg := fs.String("key", "", "the host's key: a `FILE` holding its public key (<host>.pub) or a verifier key <host>+<hash>+<key>; without it the key the bundle names is used")
	jsonOut := fs.Bool("json", false, "print the result as JSON")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: warden verify [--collector URL] [--key FILE] [--export FILE] [--json] EVENT_ID\n       warden verify --bundle FILE [--key FILE] [--json]\n\nChecks that the event hashes to its hash and that the agent's signed checkpoint\ncovers it (RFC 6962 inclusion proof). Exit status 1 when it does not.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	var b *event.ProofBundle
	switch {
	case *bundlePath != "" && fs.NArg() == 0:
		var err error
		if b, err = readBundle(*bundlePath); err != nil {
			fmt.Fprintf(os.Stderr, "warden verify: %v\n", err)
			return 3
		}
	case *bundlePath == "" && fs.NArg() == 1:
		cl, err := client()
		if err != nil {
			return collectorFail("verify", err)
		}
		ctx, cancel := interruptible()
		defer cancel()
		if b, err = cl.Proof(ctx, fs.Arg(0)); err != nil {
			collectorFail("verify", err)
			return 3
		}
	default:
		fmt.Fprintln(os.Stderr, "warden verify: want one EVENT_ID, or --bundle FILE alone")
		return 2
	}
	if *export != "" {
		out, _ := json.MarshalIndent(b, "", "  ")
		if err := os.WriteFile(*export, append(out, '\n'), 0o644); err != nil {
			fmt.Fprintf(os.Stderr, "warden verify: export bundle: %v\n", err)
			return 3
		}
	}
	vkey, pinned := b.Key, false
	if *keyArg != "" {
		var head struct {
			Host event.Host `json:"host"`
		}
		_ = json.Unmarshal(b.Event, &head)
		k, err := loadKey(*keyArg, head.Host.ID)
		if err != nil {
			fmt.Fprintf(os.Stderr, "warden verify: --key: %v\n", err)
			return 2
		}
		vkey, pinned = k, true
	}
	if vkey == "" {
		fmt.Fprintln(os.Stderr, "warden verify: the bundle names no key for the host; pass --key FILE")
		return 2
	}
	v, verr := b.Verify(vkey)
	if *jsonOut {
		res := map[string]any{"verified": verr == nil, "event_id": v.EventID, "host_id": v.HostID, "seq": v.Seq, "hash": v.Hash,
			"schema": v.Schema, "tree_size": v.TreeSize, "checkpoint_id": b.CheckpointID, "key": vkey, "key_pinned": pinned, "integrity": b.Integrity}
		if v.Root != nil {
			res["root"] = base64.StdEncoding.EncodeToString(v.Root)
		}
		if verr != nil {
			res["error"] = verr.Error()
		}
		out, _ := json.MarshalIndent(res, "", "  ")
		fmt.Println(string(out))
	} else {
		printVerification(os.Stdout, b, v, vkey, pinned, verr)
	}
	if verr != nil {
		return 1
	}
	return 0
}

func printVerification(w io.Writer, b *event.ProofBundle, v *event.VerifiedProof, vkey string, pinned bool, verr error) {
	fmt.Fprintf(w, "event     %s (%s, host %s, seq %d)\n", v.EventID, v.Schema, v.HostID, v.Seq)
	fmt.Fprintf(w, "hash      %s\n", v.Hash)
	if v.Schema == event.Schema && b.Checkpoint != "" {
		fmt.Fprintf(w, "proof     leaf %d of %d, %d hashes, against checkpoint %s\n", b.LeafIndex, b.TreeSize, len(b.Inclusion), b.CheckpointID)
		if v.Root != nil {
			fmt.Fprintf(w, "root      %s (signed)\n", base64.StdEncoding.EncodeToString(v.Root))
		}
	}
	src := "named by the bundle; pin it with --key"
	if pinned {
		src = "pinned with --key"
	}
	fmt.Fprintf(w, "key       %s (%s)\n", vkey, src)
	if len(b.Integrity) > 0 {
		fmt.Fprintf(w, "collector flagged: %s\n", strings.Join(b.Integrity, ", "))
	}
	if verr != nil {
		fmt.Fprintf(w, "FAILED    %s\n", strings.Join(strings.Fields(verr.Error()), " "))
		return
	}
	what := "included in the tree the agent signed"
	if v.Schema == event.SchemaV1 {
		what = "signed by the agent (v1)"
	}
	fmt.Fprintf(w, "OK        %s with key %s\n", what, keyName(vkey))
}

// keyName is a verifier key's <host>+<hash>.
func keyName(vkey string) string {
	parts := strings.SplitN(vkey, "+", 3)
	if len(parts) < 2 {
		return vkey
	}
	return parts[0] + "+" + parts[1]
}

func readBundle(path string) (*event.ProofBundle, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read bundle: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxBundle+1))
	if err != nil {
		return nil, fmt.Errorf("read bundle %s: %w", path, err)
	}
	if len(data) > maxBundle {
		return nil, fmt.Errorf("bundle %s is larger than %d bytes", path, maxBundle)
	}
	var b event.ProofBundle
	if err := json.Unmarshal(data, &b); err != nil {
		return nil, fmt.Errorf("bundle %s: %w", path, err)
	}
	return &b, nil
}

// loadKey reads --key: a verifier key, or a public key file of hostID.
func loadKey(arg, hostID string) (string, error) {
	text := arg
	if !strings.Contains(arg, "+") {
		b, err := os.ReadFile(arg)
		if err != nil {
			return "", err
		}
		text = string(b)
	} else if b, err := os.ReadFile(arg); err == nil {
		text = string(b)
	}
	return event.ParseVerifierKey(text, hostID)
}
