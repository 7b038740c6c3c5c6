// Package proxytest holds what the codecs' unit tests share: a policy and
// an attribution for one target, and the proxy's end of a net.Pipe that
// fails as a TCP connection does. Codec tests run a codec between scripted
// peers over pipes, as the proxy would run it between sockets.
package proxytest

import (
	"errors"
	"io"
	"net"

	"github.com/wardenhq/warden/agent/proxy"
	"github.com/wardenhq/warden/pkg/event"
	"github.com/wardenhq/warden/pkg/policy"
)

// Target is the one target a codec test's sessions are attributed to.
type Target struct {
	Name, Protocol, Address string
}

// Policy is a policy with the target, open to group engineering, and the
// given rules and masking, all for that target.
func (t Target) Policy(rules []policy.Rule, masks []policy.Masking) *policy.Policy {
	p := &policy.Policy{
		Targets: []policy.Target{{Name: t.Name, Protocol: t.Protocol, Address: t.Address}},
		Access:  []policy.Access{{Groups: []string{"engineering"}, Targets: []string{t.Name}}},
	}
	for _, r := range rules {
		r.Targets = []string{t.Name}
		p.Rules = append(p.Rules, r)
	}
	for _, m := range masks {
		m.Targets = []string{t.Name}
		p.Masking = append(p.Masking, m)
	}
	return p
}

// Attribution is an allowed connection of sub (in group engineering) to
// the target, under p; tp is the target's entry (credentials, TLS), whose
// name and protocol are the target's.
func (t Target) Attribution(sub string, p *policy.Policy, tp policy.Target) *proxy.Attribution {
	tp.Name, tp.Protocol = t.Name, t.Protocol
	return &proxy.Attribution{
		Target:       event.Target{Name: t.Name, Protocol: t.Protocol, Address: t.Address},
		Policy:       p,
		TargetPolicy: tp,
		Identity: &event.Identity{Sub: sub, Email: sub + "@corp.example", Groups: []string{"engineering"},
			Issuer: "https://idp.test", SessionID: "sess-" + sub},
		Decision:  event.Decision{Action: event.Allow},
		SessionID: "sess-" + sub,
	}
}

// TCPLike is the proxy's end of a net.Pipe, failing as a closed TCP
// connection does. With Remote set it reports that remote address, as a
// dialled connection would.
type TCPLike struct {
	net.Conn
	Remote string
}

func (c TCPLike) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	return n, closedErr(err)
}

func (c TCPLike) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	return n, closedErr(err)
}

// RemoteAddr is Remote when set, else the pipe's own.
func (c TCPLike) RemoteAddr() net.Addr {
	if c.Remote == "" {
		return c.Conn.RemoteAddr()
	}
	return tcpAddr(c.Remote)
}

type tcpAddr string

func (a tcpAddr) Network() string { return "tcp" }
func (a tcpAddr) String() string  { return string(a) }

func closedErr(err error) error {
	if errors.Is(err, io.ErrClosedPipe) {
		return net.ErrClosed
	}
	return err
}
