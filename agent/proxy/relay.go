package proxy

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"

	"github.com/wardenhq/warden/pkg/policy"
)

// Relay is the codec for protocols Warden does not parse: it copies bytes
// both ways and has no error message to refuse with, so Refuse just closes.
type Relay struct{}

// Enforces is empty: a relayed stream is not parsed, so its targets take
// access rules only.
func (Relay) Enforces() []policy.Capability { return nil }

// Refuse closes the connection; a bare TCP stream has no way to say why.
func (Relay) Refuse(ctx context.Context, client net.Conn, att *Attribution) error { return nil }

// Serve copies in both directions, propagating half-closes, until both
// directions are done.
func (Relay) Serve(ctx context.Context, s *Stream) error {
	return Pipe(s.Client, s.Upstream)
}

// Pipe copies a→b and b→a until both directions end. When one direction
// ends, the write side of its destination is shut so the peer sees EOF.
func Pipe(a, b net.Conn) error {
	var wg sync.WaitGroup
	errs := make([]error, 2)
	copyHalf := func(i int, dst, src net.Conn) {
		defer wg.Done()
		_, err := io.Copy(dst, src)
		if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		} else {
			dst.Close()
		}
		errs[i] = err
	}
	wg.Add(2)
	go copyHalf(0, b, a)
	go copyHalf(1, a, b)
	wg.Wait()
	return errors.Join(errs...)
}
