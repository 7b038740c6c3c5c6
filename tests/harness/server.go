package harness

import (
	"bufio"
	"net"
	"sync"
	"sync/atomic"
)

// Server is a target inside the test's namespace. It answers each line
// with "echo:<line>" and counts every byte it receives, so a test can show
// that a refused client never reached it.
type Server struct {
	ln    net.Listener
	bytes atomic.Int64
	conns atomic.Int64
	wg    sync.WaitGroup
}

// Serve starts a target server on addr ("127.0.0.1:0", "[::1]:0") in the
// namespace.
func (e *Env) Serve(network, addr string) *Server {
	e.T.Helper()
	ln, err := e.NS.Listen(network, addr)
	if err != nil {
		e.T.Fatal(err)
	}
	s := &Server{ln: ln}
	s.wg.Add(1)
	go s.accept()
	e.T.Cleanup(func() {
		ln.Close()
		s.wg.Wait()
	})
	return s
}

// Addr is the server's address.
func (s *Server) Addr() *net.TCPAddr { return s.ln.Addr().(*net.TCPAddr) }

// Port is the server's port.
func (s *Server) Port() int { return s.Addr().Port }

// Bytes is how many bytes clients sent.
func (s *Server) Bytes() int64 { return s.bytes.Load() }

// Conns is how many connections it accepted.
func (s *Server) Conns() int64 { return s.conns.Load() }

func (s *Server) accept() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.conns.Add(1)
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer c.Close()
			r := bufio.NewReader(c)
			for {
				line, err := r.ReadString('\n')
				s.bytes.Add(int64(len(line)))
				if err != nil {
					return
				}
				if _, err := c.Write([]byte("echo:" + line)); err != nil {
					return
				}
			}
		}()
	}
}
