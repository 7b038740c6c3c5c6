// Package redis reads and writes the Redis serialization protocol, version
// 2 (RESP2): client commands, in both the multibulk form and the inline
// form a human types into telnet, and server replies. It is pure wire
// code: the proxy's Redis codec (agent/proxy/redis) decides what to do with
// what it reads.
//
// Commands are read the way redis-server reads them, so that the codec
// checks what the server would run; the codec then sends every command on
// in the multibulk form, whatever form the client used, so the server runs
// exactly the arguments that were checked.
package redis

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
)

// Limits. MaxInline and MaxBulk are redis-server's own defaults
// (PROTO_INLINE_MAX_SIZE and proto-max-bulk-len); MaxArgs and MaxDepth
// bound what one command or reply may make the proxy hold.
const (
	MaxInline = 64 << 10
	MaxBulk   = 512 << 20
	MaxArgs   = 1 << 20
	MaxDepth  = 128
)

// ProtocolError is malformed input. Its message is fit to send back to a
// client as "-ERR Protocol error: <msg>", as redis-server does before it
// closes the connection.
type ProtocolError struct {
	Msg string
}

func (e *ProtocolError) Error() string { return "Protocol error: " + e.Msg }

func protoErr(format string, args ...any) error {
	return &ProtocolError{Msg: fmt.Sprintf(format, args...)}
}

// Command is one client command.
type Command struct {
	// Args are the command name and its arguments, as bytes.
	Args [][]byte
	// Inline is set when the client sent the inline form.
	Inline bool
}

// Name is the command name in lower case, "" for none.
func (c Command) Name() string {
	if len(c.Args) == 0 {
		return ""
	}
	return string(bytes.ToLower(c.Args[0]))
}

// Reader reads commands or replies from a connection.
type Reader struct {
	br *bufio.Reader
}

// NewReader returns a Reader on r.
func NewReader(r io.Reader) *Reader {
	return &Reader{br: bufio.NewReaderSize(r, 16<<10)}
}

// Buffered reports how many bytes are read from the connection and not yet
// consumed: more pipelined commands (or replies) already here.
func (r *Reader) Buffered() int { return r.br.Buffered() }

// Peek waits until at least one byte can be read, without consuming it,
// and returns the connection's error otherwise (io.EOF once the peer has
// closed). A deadline error is not kept: reading may go on after it.
func (r *Reader) Peek() (byte, error) {
	b, err := r.br.Peek(1)
	if err != nil {
		return 0, err
	}
	return b[0], nil
}

// ReadCommand reads the next command, skipping empty ones (a blank inline
// line, "*0"), as the server does. Errors are *ProtocolError for malformed
// input, else the connection's.
func (r *Reader) ReadCommand() (Command, error) {
	for {
		b, err := r.br.Peek(1)
		if err != nil {
			return Command{}, err
		}
		var cmd Command
		if b[0] == '*' {
			cmd, err = r.readMultibulk()
		} else {
			cmd, err = r.readInline()
		}
		if err != nil {
			return Command{}, err
		}
		if len(cmd.Args) > 0 {
			return cmd, nil
		}
	}
}

// line reads up to "\r\n" and returns the line without it. max bounds the
// line's length.
func (r *Reader) line(max int) ([]byte, error) {
	var buf []byte
	for {
		chunk, err := r.br.ReadSlice('\n')
		buf = append(buf, chunk...)
		if err == nil {
			break
		}
		if !errors.Is(err, bufio.ErrBufferFull) {
			if errors.Is(err, io.EOF) && len(buf) > 0 {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
		if len(buf) > max {
			return nil, protoErr("too big line")
		}
	}
	if len(buf) > max+2 {
		return nil, protoErr("too big line")
	}
	if len(buf) < 2 || buf[len(buf)-2] != '\r' {
		return nil, protoErr("line without CRLF")
	}
	return buf[:len(buf)-2], nil
}

// number parses a length or integer as redis-server's string2ll does:
// optional '-', then digits without leading zeros.
func number(b []byte) (int64, bool) {
	if len(b) == 0 || len(b) > 20 {
		return 0, false
	}
	digits := b
	if digits[0] == '-' {
		digits = digits[1:]
	}
	if len(digits) == 0 || (digits[0] == '0' && len(digits) > 1) {
		return 0, false
	}
	for _, c := range digits {
		if c < '0' || c > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseInt(string(b), 10, 64)
	return n, err == nil
}

func (r *Reader) readMultibulk() (Command, error) {
	l, err := r.line(32)
	if err != nil {
		return Command{}, err
	}
	n, ok := number(l[1:])
	if !ok || n > MaxArgs {
		return Command{}, protoErr("invalid multibulk length")
	}
	if n <= 0 {
		return Command{}, nil
	}
	args := make([][]byte, 0, min(n, 64))
	for range n {
		l, err := r.line(32)
		if err != nil {
			return Command{}, err
		}
		if len(l) == 0 || l[0] != '$' {
			got := byte(' ')
			if len(l) > 0 {
				got = l[0]
			}
			return Command{}, protoErr("expected '$', got '%c'", got)
		}
		size, ok := number(l[1:])
		if !ok || size < 0 || size > MaxBulk {
			return Command{}, protoErr("invalid bulk length")
		}
		arg, err := r.bulk(int(size))
		if err != nil {
			return Command{}, err
		}
		args = append(args, arg)
	}
	return Command{Args: args}, nil
}

// bulk reads size bytes and the "\r\n" after them. The buffer grows as
// data arrives, so a length alone cannot make the proxy allocate it.
func (r *Reader) bulk(size int) ([]byte, error) {
	var buf bytes.Buffer
	buf.Grow(min(size, 64<<10))
	if _, err := io.CopyN(&buf, r.br, int64(size)); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	var crlf [2]byte
	if _, err := io.ReadFull(r.br, crlf[:]); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	if crlf != [2]byte{'\r', '\n'} {
		return nil, protoErr("bulk string not followed by CRLF")
	}
	return buf.Bytes(), nil
}

// readInline reads a command typed on one line, split as redis-server's
// sdssplitargs splits it.
func (r *Reader) readInline() (Command, error) {
	var buf []byte
	for {
		chunk, err := r.br.ReadSlice('\n')
		buf = append(buf, chunk...)
		if len(buf) > MaxInline {
			return Command{}, protoErr("too big inline request")
		}
		if err == nil {
			break
		}
		if !errors.Is(err, bufio.ErrBufferFull) {
			if errors.Is(err, io.EOF) && len(buf) > 0 {
				err = io.ErrUnexpectedEOF
			}
			return Command{}, err
		}
	}
	line := buf[:len(buf)-1]
	if len(line) > 0 && line[len(line)-1] == '\r' {
		line = line[:len(line)-1]
	}
	args, err := SplitArgs(line)
	if err != nil {
		return Command{}, err
	}
	return Command{Args: args, Inline: true}, nil
}

// SplitArgs splits an inline command line as redis-server does
// (sdssplitargs): blanks separate arguments; "double quotes" take the
// escapes \n \r \t \b \a \xHH and \<any>; 'single quotes' take \'; a
// closing quote must be followed by a blank or the end. The server reads
// the line as a C string, so a NUL byte ends it.
func SplitArgs(line []byte) ([][]byte, error) {
	if i := bytes.IndexByte(line, 0); i >= 0 {
		line = line[:i]
	}
	var args [][]byte
	p := 0
	at := func(i int) byte { // the C string's byte at i: 0 past the end
		if i < len(line) {
			return line[i]
		}
		return 0
	}
	for {
		for p < len(line) && isSpace(line[p]) {
			p++
		}
		if p >= len(line) {
			return args, nil
		}
		var cur []byte
		inq, insq := false, false
		for done := false; !done; {
			c := at(p)
			switch {
			case inq:
				switch {
				case c == '\\' && at(p+1) == 'x' && isHex(at(p+2)) && isHex(at(p+3)):
					cur = append(cur, hexVal(at(p+2))<<4|hexVal(at(p+3)))
					p += 3
				case c == '\\' && at(p+1) != 0:
					p++
					switch e := at(p); e {
					case 'n':
						cur = append(cur, '\n')
					case 'r':
						cur = append(cur, '\r')
					case 't':
						cur = append(cur, '\t')
					case 'b':
						cur = append(cur, '\b')
					case 'a':
						cur = append(cur, '\a')
					default:
						cur = append(cur, e)
					}
				case c == '"':
					if n := at(p + 1); n != 0 && !isSpace(n) {
						return nil, protoErr("unbalanced quotes in request")
					}
					done = true
				case c == 0:
					return nil, protoErr("unbalanced quotes in request")
				default:
					cur = append(cur, c)
				}
			case insq:
				switch {
				case c == '\\' && at(p+1) == '\'':
					p++
					cur = append(cur, '\'')
				case c == '\'':
					if n := at(p + 1); n != 0 && !isSpace(n) {
						return nil, protoErr("unbalanced quotes in request")
					}
					done = true
				case c == 0:
					return nil, protoErr("unbalanced quotes in request")
				default:
					cur = append(cur, c)
				}
			default:
				switch c {
				case ' ', '\n', '\r', '\t', 0:
					done = true
				case '"':
					inq = true
				case '\'':
					insq = true
				default:
					cur = append(cur, c)
				}
			}
			if p < len(line) {
				p++
			}
		}
		if cur == nil {
			cur = []byte{}
		}
		args = append(args, cur)
	}
}

// isSpace is C's isspace in the C locale.
func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r'
}

func isHex(c byte) bool {
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')
}

func hexVal(c byte) byte {
	switch {
	case c >= '0' && c <= '9':
		return c - '0'
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10
	}
	return c - 'A' + 10
}

// AppendCommand appends args as a multibulk command.
func AppendCommand(dst []byte, args [][]byte) []byte {
	dst = append(dst, '*')
	dst = strconv.AppendInt(dst, int64(len(args)), 10)
	dst = append(dst, '\r', '\n')
	for _, a := range args {
		dst = appendBulk(dst, a)
	}
	return dst
}

func appendBulk(dst, b []byte) []byte {
	dst = append(dst, '$')
	dst = strconv.AppendInt(dst, int64(len(b)), 10)
	dst = append(dst, '\r', '\n')
	dst = append(dst, b...)
	return append(dst, '\r', '\n')
}
