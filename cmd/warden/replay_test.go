package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

func TestPlay(t *testing.T) {
	cast := `{"version":2,"width":80,"height":24,"timestamp":1700000000,"env":{"TERM":"xterm"}}
[0.1,"o","$ "]
[0.5,"i","echo hi\r"]
[3600,"o","hello-warden\r\n"]
[3601,"r","100x30"]
`
	var out bytes.Buffer
	// An hour of idleness is cut to a millisecond: the test does not wait.
	if err := play(context.Background(), &out, []byte(cast), 1, time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if got := out.String(); got != "$ hello-warden\r\n\x1b[8;30;100t" {
		t.Fatalf("played %q", got)
	}
	if err := play(context.Background(), &out, []byte("not a cast"), 1, 0); err == nil {
		t.Fatal("a file that is not a cast was played")
	}
}

func TestReplayUsage(t *testing.T) {
	for _, args := range [][]string{{}, {"a", "b"}, {"ssh-1", "--speed", "0"}} {
		if code := runReplay(args); code != 2 {
			t.Errorf("warden replay %s: exit %d, want 2", strings.Join(args, " "), code)
		}
	}
}
