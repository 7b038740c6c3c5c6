package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/wardenhq/warden/agent/recording"
)

// runReplay plays an SSH session's recording in the terminal, or with
// --cast writes it out for asciinema. The collector checks the recording
// against its ssh.session event, and so does the client (see
// collectorclient.Recording): a recording that does not match is not
// played.
func runReplay(args []string) int {
	fs := flag.NewFlagSet("replay", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: warden replay SSH_SESSION [--speed N] [--idle-limit 2s] [--cast] [--partial]")
		fs.PrintDefaults()
	}
	speed := fs.Float64("speed", 1, "play `N` times faster")
	idle := fs.Duration("idle-limit", 2*time.Second, "shorten pauses longer than `D` to D (0: keep them)")
	cast := fs.Bool("cast", false, "write the asciicast v2 file to standard output instead of playing it")
	partial := fs.Bool("partial", false, "play what was stored of a session without an end event (unverified)")
	client := collectorFlags(fs)
	id, rest := "", args
	if len(rest) > 0 && !strings.HasPrefix(rest[0], "-") {
		id, rest = rest[0], rest[1:]
	}
	if err := fs.Parse(rest); err != nil {
		return 2
	}
	if id == "" && fs.NArg() == 1 {
		id = fs.Arg(0)
	} else if fs.NArg() > 0 || id == "" {
		fs.Usage()
		return 2
	}
	if *speed <= 0 {
		fmt.Fprintf(os.Stderr, "warden: replay: --speed %v must be positive\n", *speed)
		return 2
	}
	cl, err := client()
	if err != nil {
		return collectorFail("replay", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rec, err := cl.Recording(ctx, id, *partial)
	if err != nil {
		return collectorFail("replay", err)
	}
	if rec.SHA256 == "" {
		fmt.Fprintf(os.Stderr, "warden: replay: %s has no end event; playing what was stored, unverified\n", id)
	}
	if *cast {
		if _, err := os.Stdout.Write(rec.Cast); err != nil {
			fmt.Fprintf(os.Stderr, "warden: replay: %v\n", err)
			return 1
		}
		return 0
	}
	if err := play(ctx, os.Stdout, rec.Cast, *speed, *idle); err != nil {
		fmt.Fprintf(os.Stderr, "warden: replay %s: %v\n", id, err)
		return 1
	}
	return 0
}

// play writes a cast's output events to w at their pace, divided by speed,
// with pauses cut to idle (when not 0). Input events are not shown: what
// the terminal echoed is already in the output.
func play(ctx context.Context, w io.Writer, cast []byte, speed float64, idle time.Duration) error {
	h, evs, err := recording.ParseCast(cast)
	if err != nil {
		return err
	}
	if term := h.Env["TERM"]; term != "" {
		fmt.Fprintf(os.Stderr, "warden: replay: %dx%d, TERM=%s, %s\n", h.Width, h.Height, term, time.Unix(h.Timestamp, 0).UTC().Format(time.RFC3339))
	}
	last := 0.0
	for _, e := range evs {
		wait := time.Duration((e.Time - last) / speed * float64(time.Second))
		last = e.Time
		if idle > 0 && wait > idle {
			wait = idle
		}
		if wait > 0 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(wait):
			}
		}
		switch e.Kind {
		case "o":
			if _, err := io.WriteString(w, e.Data); err != nil {
				return err
			}
		case "r":
			cols, rows, _ := strings.Cut(e.Data, "x")
			c, _ := strconv.Atoi(cols)
			r, _ := strconv.Atoi(rows)
			// xterm's resize sequence: most terminals honour it.
			fmt.Fprintf(w, "\x1b[8;%d;%dt", r, c)
		}
	}
	return nil
}
