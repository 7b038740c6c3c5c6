package harness

import (
	"context"
	"io"
	"net"
	"sync"
)

// Forward listens on a free port in the namespace and relays every
// connection to addr with a plain io.Copy each way: the baseline proxy for
// benchmarks, and a second address for a target in tests. It returns the
// port and stops when the test ends.
func (e *Env) Forward(addr string) int {
	e.T.Helper()
	ln, err := e.NS.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		e.T.Fatal(err)
	}
	var wg sync.WaitGroup
	e.T.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				up, err := e.NS.DialContext(context.Background(), "tcp4", addr)
				if err != nil {
					return
				}
				defer up.Close()
				done := make(chan struct{})
				go func() {
					io.Copy(up, c)
					up.(*net.TCPConn).CloseWrite()
					close(done)
				}()
				io.Copy(c, up)
				c.Close()
				<-done
			}()
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port
}
