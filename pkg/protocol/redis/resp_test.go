package redis

import (
	"bytes"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
)

func strs(args [][]byte) []string {
	out := make([]string, len(args))
	for i, a := range args {
		out[i] = string(a)
	}
	return out
}

// Inline lines split as redis-server's sdssplitargs splits them; the
// expectations are what redis-server 7 runs for each line.
func TestSplitArgs(t *testing.T) {
	tests := []struct {
		line string
		want []string
		err  bool
	}{
		{"SET k v", []string{"SET", "k", "v"}, false},
		{"  GET   k  ", []string{"GET", "k"}, false},
		{`SET k "a b"`, []string{"SET", "k", "a b"}, false},
		{`SET k "\x41\n\t\"q\\"`, []string{"SET", "k", "A\n\t\"q\\"}, false},
		{`SET k "\xZZ"`, []string{"SET", "k", "xZZ"}, false},
		{`SET k 'it\'s'`, []string{"SET", "k", "it's"}, false},
		{`SET k 'no\nescape'`, []string{"SET", "k", `no\nescape`}, false},
		{`SET k ""`, []string{"SET", "k", ""}, false},
		{`SET k "a"b`, nil, true},
		{`SET k 'a'b`, nil, true},
		{`SET k "open`, nil, true},
		{`SET k 'open`, nil, true},
		{"GET\vk", []string{"GET\vk"}, false},                 // \v ends no unquoted token
		{"\v\fGET k", []string{"GET", "k"}, false},            // but leading blanks include it
		{"FLUSHALL\x00 ignored", []string{"FLUSHALL"}, false}, // a C string ends at NUL
		{"GET k\x00FLUSHALL", []string{"GET", "k"}, false},
		{"fl\"u\" x", []string{"flu", "x"}, false}, // a quote inside a token opens a quoted part
		{"fl\"u\"sh", nil, true},
		{"", nil, false},
	}
	for _, tt := range tests {
		got, err := SplitArgs([]byte(tt.line))
		if tt.err {
			var pe *ProtocolError
			if !errors.As(err, &pe) || !strings.Contains(err.Error(), "unbalanced quotes") {
				t.Errorf("%q: want unbalanced quotes, got %q, %v", tt.line, strs(got), err)
			}
			continue
		}
		if err != nil || !slices.Equal(strs(got), tt.want) {
			t.Errorf("%q: got %q, %v; want %q", tt.line, strs(got), err, tt.want)
		}
	}
}

func TestReadCommand(t *testing.T) {
	in := "*2\r\n$3\r\nGET\r\n$1\r\nk\r\n" + // multibulk
		"*0\r\n" + "\r\n" + // empty commands are skipped
		"set a 'b c'\r\n" + // inline
		"PING\n" + // inline without \r
		"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n"
	r := NewReader(strings.NewReader(in))
	want := []struct {
		args   []string
		inline bool
	}{
		{[]string{"GET", "k"}, false},
		{[]string{"set", "a", "b c"}, true},
		{[]string{"PING"}, true},
		{[]string{"SET", "k", ""}, false},
	}
	for _, w := range want {
		cmd, err := r.ReadCommand()
		if err != nil || !slices.Equal(strs(cmd.Args), w.args) || cmd.Inline != w.inline {
			t.Fatalf("got %q inline=%v, %v; want %q", strs(cmd.Args), cmd.Inline, err, w.args)
		}
	}
	if _, err := r.ReadCommand(); !errors.Is(err, io.EOF) {
		t.Fatalf("at the end: %v", err)
	}
}

func TestReadCommandErrors(t *testing.T) {
	tests := map[string]string{
		"*x\r\n":                    "invalid multibulk length",
		"*01\r\n":                   "invalid multibulk length",
		"*1\r\n+GET\r\n":            "expected '$', got '+'",
		"*1\r\n$-1\r\n":             "invalid bulk length",
		"*1\r\n$999999999999\r\n":   "invalid bulk length",
		"*1\r\n$3\r\nGETXX":         "bulk string not followed by CRLF",
		"*1\n":                      "line without CRLF",
		"*2000000\r\n":              "invalid multibulk length",
		strings.Repeat("a", 70<<10): "too big inline request",
		"SET k \"v\r\n":             "unbalanced quotes",
		"*1\r\n$" + "1" + "\r\n":    "unexpected EOF",
		"*1\r\n$3\r\nGE":            "unexpected EOF",
		"*1\r\n$" + "3\r\nGET\r":    "unexpected EOF",
		"*1\r\n" + strings.Repeat("$", 40) + "\r\n": "too big line",
	}
	for in, want := range tests {
		_, err := NewReader(strings.NewReader(in)).ReadCommand()
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%.40q: got %v, want %q", in, err, want)
		}
	}
}

// Whatever form a command came in, it goes on as the multibulk the server
// reads back to the same arguments.
func TestAppendCommandRoundTrip(t *testing.T) {
	args := [][]byte{[]byte("SET"), []byte("k\r\n*1"), {}, {0, 1, 2}}
	cmd, err := NewReader(bytes.NewReader(AppendCommand(nil, args))).ReadCommand()
	if err != nil || !slices.EqualFunc(cmd.Args, args, bytes.Equal) {
		t.Fatalf("got %q, %v", strs(cmd.Args), err)
	}
}

func TestReplies(t *testing.T) {
	in := "+OK\r\n-ERR bad\r\n:42\r\n:-1\r\n$5\r\nhello\r\n$-1\r\n*-1\r\n*3\r\n$1\r\na\r\n*1\r\n:1\r\n$0\r\n\r\n"
	r := NewReader(strings.NewReader(in))
	var out []byte
	for {
		rep, err := r.ReadReply()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		out = AppendReply(out, rep)
	}
	if string(out) != in {
		t.Fatalf("re-encoded:\n%q\nwant\n%q", out, in)
	}
	for _, bad := range []string{"?x\r\n", ":1x\r\n", "$-2\r\n", strings.Repeat("*1\r\n", MaxDepth+2) + ":1\r\n", "\r\n"} {
		if _, err := NewReader(strings.NewReader(bad)).ReadReply(); err == nil {
			t.Errorf("%.30q: accepted", bad)
		}
	}
}

func TestErrorReplyOneLine(t *testing.T) {
	if got := string(AppendReply(nil, Error("NOPERM a\r\nb\nc"))); got != "-NOPERM a  b c\r\n" {
		t.Fatalf("got %q", got)
	}
}

func TestKeys(t *testing.T) {
	tests := []struct {
		cmd  string
		want []string
	}{
		{"GET k", []string{"k"}},
		{"get k", []string{"k"}},
		{"SET k v EX 10", []string{"k"}},
		{"MSET a 1 b 2", []string{"a", "b"}},
		{"DEL a b c", []string{"a", "b", "c"}},
		{"BLPOP a b 0", []string{"a", "b"}},
		{"RENAME a b", []string{"a", "b"}},
		{"EVAL s 2 k1 k2 arg", []string{"k1", "k2"}},
		{"EVAL s 5 k1", []string{"k1"}},
		{"EVAL s x k1", nil},
		{"ZUNIONSTORE d 2 a b WEIGHTS 1 2", []string{"d", "a", "b"}},
		{"BLMPOP 0 2 a b LEFT", []string{"a", "b"}},
		{"XREAD COUNT 2 STREAMS s1 s2 0 0", []string{"s1", "s2"}},
		{"XREADGROUP GROUP streams c STREAMS s1 >", []string{"s1"}},
		{"MIGRATE h 1 \"\" 0 5 KEYS a b", []string{"a", "b"}},
		{"OBJECT ENCODING k", []string{"k"}},
		{"FLUSHALL", nil},
		{"PING", nil},
	}
	for _, tt := range tests {
		args, err := SplitArgs([]byte(tt.cmd))
		if err != nil {
			t.Fatal(err)
		}
		if got := strs(Keys(args)); !slices.Equal(got, tt.want) && !(len(got) == 0 && len(tt.want) == 0) {
			t.Errorf("%s: keys %q, want %q", tt.cmd, got, tt.want)
		}
	}
	if Subcommand([][]byte{[]byte("CONFIG"), []byte("Set")}) != "set" || Subcommand([][]byte{[]byte("GET"), []byte("k")}) != "" {
		t.Fatal("subcommand")
	}
	if !Scripting("eval") || !Scripting("function") || Scripting("get") {
		t.Fatal("scripting class")
	}
}
