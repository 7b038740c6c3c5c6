package redis

import (
	"bytes"
	"slices"
	"testing"
)

// FuzzRESP feeds arbitrary bytes to the command and reply readers: none
// may panic, and every command read must survive the trip the codec sends
// it on (re-encoded as multibulk, read back to the same arguments), so the
// server runs exactly what the proxy checked. Replies likewise.
func FuzzRESP(f *testing.F) {
	f.Add([]byte("*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"))
	f.Add([]byte("SET k \"a\\x41\" 'b\\'c'\r\nFLUSHALL\n"))
	f.Add([]byte("MULTI\r\nFLUSHALL\r\nEXEC\r\n"))
	f.Add([]byte("*3\r\n$4\r\nEVAL\r\n$24\r\nredis.call('flushall')\r\n$1\r\n0\r\n"))
	f.Add([]byte("+OK\r\n-ERR x\r\n:1\r\n$-1\r\n*2\r\n$1\r\na\r\n*-1\r\n"))
	f.Add([]byte("GET k\x00FLUSHALL\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		r := NewReader(bytes.NewReader(b))
		for range 8 {
			cmd, err := r.ReadCommand()
			if err != nil {
				break
			}
			if len(cmd.Args) == 0 {
				t.Fatal("an empty command was returned")
			}
			back, err := NewReader(bytes.NewReader(AppendCommand(nil, cmd.Args))).ReadCommand()
			if err != nil || !slices.EqualFunc(back.Args, cmd.Args, bytes.Equal) {
				t.Fatalf("re-encoded %q read back as %q, %v", cmd.Args, back.Args, err)
			}
			Keys(cmd.Args)
			Subcommand(cmd.Args)
		}
		r = NewReader(bytes.NewReader(b))
		for range 8 {
			rep, err := r.ReadReply()
			if err != nil {
				break
			}
			enc := AppendReply(nil, rep)
			back, err := NewReader(bytes.NewReader(enc)).ReadReply()
			if err != nil || !bytes.Equal(AppendReply(nil, back), enc) {
				t.Fatalf("re-encoded reply %q read back differently: %v", enc, err)
			}
		}
	})
}
