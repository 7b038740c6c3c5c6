package main

import (
	"flag"
	"io"
	"slices"
	"testing"
)

func TestParseInterspersed(t *testing.T) {
	for _, tc := range []struct {
		args   []string
		pos    []string
		reason string
	}{
		{[]string{"s1", "--reason", "x y"}, []string{"s1"}, "x y"},
		{[]string{"--reason", "x", "s1"}, []string{"s1"}, "x"},
		{[]string{"--reason=x"}, nil, "x"},
		{[]string{"a", "--reason", "r", "b"}, []string{"a", "b"}, "r"},
		{[]string{"--reason", "r", "--", "--not-a-flag"}, []string{"--not-a-flag"}, "r"},
	} {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		reason := fs.String("reason", "", "")
		pos, err := parseInterspersed(fs, tc.args)
		if err != nil {
			t.Fatalf("%q: %v", tc.args, err)
		}
		if !slices.Equal(pos, tc.pos) || *reason != tc.reason {
			t.Errorf("%q: positionals %q reason %q, want %q %q", tc.args, pos, *reason, tc.pos, tc.reason)
		}
	}
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	if _, err := parseInterspersed(fs, []string{"s1", "--nope"}); err == nil {
		t.Error("unknown flag after a positional accepted")
	}
}
