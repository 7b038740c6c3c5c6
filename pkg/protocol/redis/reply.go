package redis

import (
	"strconv"
	"strings"
)

// Reply kinds: the RESP2 type bytes.
const (
	KindStatus  = '+'
	KindError   = '-'
	KindInteger = ':'
	KindBulk    = '$'
	KindArray   = '*'
)

// Reply is one server reply.
type Reply struct {
	// Kind is one of the Kind* bytes.
	Kind byte
	// Str is a status, error or bulk string's bytes.
	Str []byte
	// Int is an integer reply's value.
	Int int64
	// Null marks the null bulk string ($-1) and null array (*-1).
	Null bool
	// Elems are an array's elements.
	Elems []Reply
}

// Status returns a status reply ("+OK").
func Status(s string) Reply { return Reply{Kind: KindStatus, Str: []byte(s)} }

// Error returns an error reply. msg starts with the error code, as in
// "NOPERM warden: ...". Line breaks, which would end the reply early, are
// replaced by spaces.
func Error(msg string) Reply {
	msg = strings.NewReplacer("\r", " ", "\n", " ").Replace(msg)
	return Reply{Kind: KindError, Str: []byte(msg)}
}

// Bulk returns a bulk string reply.
func Bulk(b []byte) Reply { return Reply{Kind: KindBulk, Str: b} }

// ReadReply reads the next reply.
func (r *Reader) ReadReply() (Reply, error) {
	return r.reply(0)
}

func (r *Reader) reply(depth int) (Reply, error) {
	if depth > MaxDepth {
		return Reply{}, protoErr("reply nested deeper than %d", MaxDepth)
	}
	l, err := r.line(MaxInline)
	if err != nil {
		return Reply{}, err
	}
	if len(l) == 0 {
		return Reply{}, protoErr("empty reply line")
	}
	rep := Reply{Kind: l[0]}
	switch l[0] {
	case KindStatus, KindError:
		rep.Str = append([]byte(nil), l[1:]...)
	case KindInteger:
		n, ok := number(l[1:])
		if !ok {
			return Reply{}, protoErr("invalid integer reply")
		}
		rep.Int = n
	case KindBulk:
		n, ok := number(l[1:])
		switch {
		case !ok || n < -1 || n > MaxBulk:
			return Reply{}, protoErr("invalid bulk length")
		case n == -1:
			rep.Null = true
		default:
			if rep.Str, err = r.bulk(int(n)); err != nil {
				return Reply{}, err
			}
		}
	case KindArray:
		n, ok := number(l[1:])
		switch {
		case !ok || n < -1 || n > MaxArgs:
			return Reply{}, protoErr("invalid multibulk length")
		case n == -1:
			rep.Null = true
		default:
			rep.Elems = make([]Reply, 0, min(n, 64))
			for range n {
				e, err := r.reply(depth + 1)
				if err != nil {
					return Reply{}, err
				}
				rep.Elems = append(rep.Elems, e)
			}
		}
	default:
		return Reply{}, protoErr("unknown reply type %q", l[0])
	}
	return rep, nil
}

// AppendReply appends rep in RESP2.
func AppendReply(dst []byte, rep Reply) []byte {
	switch rep.Kind {
	case KindStatus, KindError:
		dst = append(dst, rep.Kind)
		dst = append(dst, rep.Str...)
		return append(dst, '\r', '\n')
	case KindInteger:
		dst = append(dst, ':')
		dst = strconv.AppendInt(dst, rep.Int, 10)
		return append(dst, '\r', '\n')
	case KindBulk:
		if rep.Null {
			return append(dst, "$-1\r\n"...)
		}
		return appendBulk(dst, rep.Str)
	case KindArray:
		if rep.Null {
			return append(dst, "*-1\r\n"...)
		}
		dst = append(dst, '*')
		dst = strconv.AppendInt(dst, int64(len(rep.Elems)), 10)
		dst = append(dst, '\r', '\n')
		for _, e := range rep.Elems {
			dst = AppendReply(dst, e)
		}
		return dst
	}
	// Unreachable for replies read by ReadReply or built here.
	return append(dst, "-ERR warden: unencodable reply\r\n"...)
}

// Walk calls fn on every bulk, status and error string in rep and its
// elements, depth first, so a caller can rewrite them in place.
func (rep *Reply) Walk(fn func(*Reply)) {
	switch rep.Kind {
	case KindArray:
		for i := range rep.Elems {
			rep.Elems[i].Walk(fn)
		}
	case KindBulk, KindStatus, KindError:
		if !rep.Null {
			fn(rep)
		}
	}
}
