package rdp

import (
	"bytes"
	"context"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/wardenhq/warden/agent/proxy"
	"github.com/wardenhq/warden/pkg/event"
	"github.com/wardenhq/warden/pkg/guard"
	"github.com/wardenhq/warden/pkg/policy"
	"github.com/wardenhq/warden/pkg/protocol/rdp"
)

type recorder struct {
	mu     sync.Mutex
	events []*event.Event
}

func (r *recorder) Emit(e *event.Event) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, e)
	return nil
}

func (r *recorder) all() []*event.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*event.Event(nil), r.events...)
}

// FreeRDP's Connection Request offering TLS and NLA, and one offering TLS
// only; xrdp's Confirm selecting TLS, and one selecting CredSSP.
var (
	offerNLA    = []byte("\x03\x00\x00\x2b\x26\xe0\x00\x00\x00\x00\x00Cookie: mstshash=carol\r\n\x01\x00\x08\x00\x03\x00\x00\x00")
	offerTLS    = []byte("\x03\x00\x00\x2b\x26\xe0\x00\x00\x00\x00\x00Cookie: mstshash=carol\r\n\x01\x00\x08\x00\x01\x00\x00\x00")
	selectTLS   = []byte("\x03\x00\x00\x13\x0e\xd0\x00\x00\x12\x34\x00\x02\x1f\x08\x00\x01\x00\x00\x00")
	selectNLA   = []byte("\x03\x00\x00\x13\x0e\xd0\x00\x00\x12\x34\x00\x02\x1f\x08\x00\x02\x00\x00\x00")
	hybridFails = rdp.NegotiationFailure(rdp.FailureHybridRequired)
)

type rig struct {
	client, server net.Conn // the test's ends
	rec            *recorder
	done           chan error
}

func newRig(t *testing.T, settings *policy.RDP) *rig {
	t.Helper()
	cc, cp := net.Pipe()
	uc, up := net.Pipe()
	rec := &recorder{}
	att := &proxy.Attribution{Target: event.Target{Name: "desk", Protocol: "rdp"},
		TargetPolicy: policy.Target{Name: "desk", Protocol: "rdp", RDP: settings},
		Identity:     &event.Identity{Sub: "alice"}, Decision: event.Decision{Action: event.Allow, Rule: "access"}}
	s := &proxy.Stream{Client: cp, Upstream: uc, Attribution: att, Log: zerolog.Nop(),
		Guard: guard.New(nil, "desk", nil, nil), Audit: proxy.NewAudit(rec, att, proxy.FailClosed)}
	r := &rig{client: cc, server: up, rec: rec, done: make(chan error, 1)}
	go func() {
		err := New().Serve(context.Background(), s)
		cp.Close()
		uc.Close()
		r.done <- err
	}()
	t.Cleanup(func() {
		cc.Close()
		up.Close()
		<-r.done
	})
	return r
}

// readN reads exactly n bytes from c, or fails.
func readN(t *testing.T, c net.Conn, n int) []byte {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b := make([]byte, n)
	if _, err := io.ReadFull(c, b); err != nil {
		t.Fatalf("read %d bytes: %v", n, err)
	}
	return b
}

func write(c net.Conn, b []byte) {
	go c.Write(b)
}

func TestClientWithoutNLARefused(t *testing.T) {
	r := newRig(t, nil) // the default: require_nla
	write(r.client, offerTLS)
	if got := readN(t, r.client, len(hybridFails)); !bytes.Equal(got, hybridFails) {
		t.Fatalf("client got %x", got)
	}
	<-r.done
	r.done <- nil
	evs := r.rec.all()
	if len(evs) != 1 || evs[0].Decision.Rule != "require_nla" || evs[0].Data["client_asserted_cookie"] != "carol" {
		t.Fatalf("events %+v", evs)
	}
	// The server never heard of it.
	r.server.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if n, _ := r.server.Read(make([]byte, 1)); n != 0 {
		t.Fatal("the request reached the server")
	}
}

func TestServerSelectingTLSRefused(t *testing.T) {
	r := newRig(t, nil)
	write(r.client, offerNLA)
	if got := readN(t, r.server, len(offerNLA)); !bytes.Equal(got, offerNLA) {
		t.Fatalf("server got %x", got)
	}
	write(r.server, selectTLS)
	if got := readN(t, r.client, len(hybridFails)); !bytes.Equal(got, hybridFails) {
		t.Fatalf("client got %x, want the negotiation failure, not the server's TLS choice", got)
	}
	<-r.done
	r.done <- nil
	if evs := r.rec.all(); len(evs) != 1 || evs[0].Data["selected_protocol"] != "ssl" || evs[0].Decision.Action != event.Deny {
		t.Fatalf("events %+v", evs)
	}
}

func TestNLASessionRelayedAndRecorded(t *testing.T) {
	r := newRig(t, nil)
	write(r.client, offerNLA)
	readN(t, r.server, len(offerNLA))
	write(r.server, selectNLA)
	if got := readN(t, r.client, len(selectNLA)); !bytes.Equal(got, selectNLA) {
		t.Fatalf("client got %x", got)
	}
	write(r.client, []byte("tls client hello"))
	if got := readN(t, r.server, 16); string(got) != "tls client hello" {
		t.Fatalf("server got %q", got)
	}
	write(r.server, []byte("tls server hello!"))
	readN(t, r.client, 17)
	r.client.Close()
	<-r.done
	r.done <- nil
	evs := r.rec.all()
	if len(evs) != 2 || evs[0].Data["phase"] != "start" || evs[0].Data["selected_protocol"] != "hybrid" || evs[0].Data["recorded"] != false {
		t.Fatalf("events %+v", evs)
	}
	end := evs[1].Data
	if end["phase"] != "end" || end["end_reason"] != "client closed" ||
		end["bytes_from_client"] != int64(len(offerNLA)+16) || end["bytes_from_server"] != int64(len(selectNLA)+17) {
		t.Fatalf("end event %v", end)
	}
}

func TestMaxDurationEndsSession(t *testing.T) {
	r := newRig(t, &policy.RDP{RequireNLA: false, MaxDuration: time.Second})
	write(r.client, offerTLS)
	readN(t, r.server, len(offerTLS))
	write(r.server, selectTLS)
	readN(t, r.client, len(selectTLS))
	// Nobody closes: the limit does.
	select {
	case <-r.done:
		r.done <- nil
	case <-time.After(30 * time.Second):
		t.Fatal("max_duration did not end the session")
	}
	evs := r.rec.all()
	if len(evs) != 2 || evs[1].Data["end_reason"] != "max_duration" {
		t.Fatalf("events %+v", evs)
	}
}

func TestGarbageNeverRelayed(t *testing.T) {
	r := newRig(t, &policy.RDP{})
	bad := append([]byte(nil), offerNLA...)
	bad[4]++ // the length indicator disagrees with TPKT's
	write(r.client, bad)
	readN(t, r.client, len(hybridFails)) // a failure confirm
	<-r.done
	r.done <- nil
	if evs := r.rec.all(); len(evs) != 1 || evs[0].Decision.Rule != "protocol" {
		t.Fatalf("events %+v", evs)
	}
}
