package ssh

import (
	"encoding/binary"
	"fmt"
	"testing"

	"github.com/rs/zerolog"

	"github.com/wardenhq/warden/agent/proxy"
	"github.com/wardenhq/warden/pkg/event"
)

// pkt builds an SFTP packet from its type and fields (uint32, uint64 or
// string).
func pkt(typ byte, fields ...any) []byte {
	b := []byte{typ}
	for _, f := range fields {
		switch v := f.(type) {
		case uint32:
			b = binary.BigEndian.AppendUint32(b, v)
		case uint64:
			b = binary.BigEndian.AppendUint64(b, v)
		case string:
			b = binary.BigEndian.AppendUint32(b, uint32(len(v)))
			b = append(b, v...)
		default:
			panic(fmt.Sprintf("pkt: %T", f))
		}
	}
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(b))), b...)
}

func tapSession(rec *recorder) *session {
	att := &proxy.Attribution{Target: event.Target{Name: targetName}}
	return &session{id: "ssh-test", log: zerolog.Nop(), s: &proxy.Stream{Audit: proxy.NewAudit(rec, att, proxy.FailClosed)}}
}

// feed hands b to f in pieces of n bytes, as the channel's reads may cut
// packets anywhere.
func feed(f func([]byte), b []byte, n int) {
	for len(b) > 0 {
		k := min(n, len(b))
		f(b[:k])
		b = b[k:]
	}
}

func TestSFTPTap(t *testing.T) {
	rec := &recorder{}
	tap := newSFTPTap(tapSession(rec))
	// The conversation in order; each packet reaches the tap in pieces
	// of 3 bytes, which cut every field.
	up := func(p []byte) { feed(tap.fromClient, p, 3) }
	down := func(p []byte) { feed(tap.fromServer, p, 3) }
	up(pkt(1, uint32(3)))   // INIT
	down(pkt(2, uint32(3))) // VERSION
	up(pkt(fxpOpen, uint32(1), "/srv/put.txt", uint32(0x1a), uint32(0)))
	down(pkt(fxpHandle, uint32(1), "h1"))
	up(pkt(fxpWrite, uint32(2), "h1", uint64(0), "hello"))
	up(pkt(fxpWrite, uint32(3), "h1", uint64(5), "world"))
	down(pkt(fxpStatus, uint32(2), uint32(0), "", ""))
	down(pkt(fxpStatus, uint32(3), uint32(0), "", ""))
	up(pkt(fxpClose, uint32(4), "h1"))
	down(pkt(fxpStatus, uint32(4), uint32(0), "", ""))
	up(pkt(fxpOpen, uint32(5), "/srv/get.txt", uint32(1), uint32(0)))
	down(pkt(fxpHandle, uint32(5), "h2"))
	up(pkt(fxpRead, uint32(6), "h2", uint64(0), uint32(32768)))
	down(pkt(fxpData, uint32(6), "seven!!"))
	up(pkt(fxpRead, uint32(7), "h2", uint64(7), uint32(32768)))
	down(pkt(fxpStatus, uint32(7), uint32(1), "eof", ""))
	up(pkt(fxpClose, uint32(8), "h2"))
	up(pkt(fxpRemove, uint32(9), "/srv/nope"))
	down(pkt(fxpStatus, uint32(9), uint32(2), "no such file", ""))
	up(pkt(fxpRename, uint32(10), "/srv/a", "/srv/b"))
	down(pkt(fxpStatus, uint32(10), uint32(0), "", ""))
	up(pkt(fxpOpen, uint32(11), "/srv/left-open", uint32(0x1a), uint32(0)))
	down(pkt(fxpHandle, uint32(11), "h3"))
	up(pkt(fxpWrite, uint32(12), "h3", uint64(0), "abc"))
	tap.close()
	got := map[string]event.SSHSFTPData{}
	for _, e := range rec.ofType(event.SSHSFTP) {
		tgt, _ := e.Data["target"].(string)
		got[fmt.Sprint(e.Data["op"], " ", e.Data["path"])] = event.SSHSFTPData{Bytes: toInt(e.Data["bytes"]), Status: fmt.Sprint(e.Data["status"]), Target: tgt}
	}
	want := map[string]event.SSHSFTPData{
		"write /srv/put.txt":   {Bytes: 10, Status: "ok"},
		"read /srv/get.txt":    {Bytes: 7, Status: "ok"},
		"remove /srv/nope":     {Status: "no_such_file"},
		"rename /srv/a":        {Status: "ok", Target: "/srv/b"},
		"write /srv/left-open": {Bytes: 3, Status: "unclosed"},
	}
	if len(got) != len(want) {
		t.Errorf("events %v, want %v", got, want)
	}
	for k, w := range want {
		if g, ok := got[k]; !ok || g != w {
			t.Errorf("%s: got %+v (present %v), want %+v", k, g, ok, w)
		}
	}
}

func toInt(v any) int64 {
	switch n := v.(type) {
	case int64:
		return n
	case int:
		return int64(n)
	}
	return 0
}

// FuzzSFTPTap feeds arbitrary bytes both ways: the tap must never panic
// nor hold more than a packet's worth of bytes.
func FuzzSFTPTap(f *testing.F) {
	f.Add(pkt(fxpOpen, uint32(1), "/a", uint32(2), uint32(0)), pkt(fxpHandle, uint32(1), "h"), uint8(3))
	f.Add([]byte{0, 0, 0, 1, 4}, []byte{0, 0, 0, 5, 101, 0, 0, 0}, uint8(1))
	f.Fuzz(func(t *testing.T, up, down []byte, n uint8) {
		tap := newSFTPTap(tapSession(&recorder{}))
		feed(tap.fromClient, up, int(n)+1)
		feed(tap.fromServer, down, int(n)+1)
		tap.close()
		if len(tap.up) > maxSFTPPack+4 || len(tap.down) > maxSFTPPack+4 {
			t.Fatalf("tap buffers %d and %d bytes", len(tap.up), len(tap.down))
		}
	})
}
