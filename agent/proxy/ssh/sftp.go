package ssh

import (
	"encoding/binary"
	"sync"

	"github.com/wardenhq/warden/agent/proxy"
	"github.com/wardenhq/warden/pkg/event"
)

// SFTP packet types (draft-ietf-secsh-filexfer-02, version 3, which
// OpenSSH speaks).
const (
	fxpOpen     = 3
	fxpClose    = 4
	fxpRead     = 5
	fxpWrite    = 6
	fxpSetstat  = 9
	fxpRemove   = 13
	fxpMkdir    = 14
	fxpRmdir    = 15
	fxpRename   = 18
	fxpSymlink  = 20
	fxpStatus   = 101
	fxpHandle   = 102
	fxpData     = 103
	fxfWrite    = 0x02
	maxSFTPPack = 1 << 20 // sftp-server's own limit is 256 KiB
)

// sftpStatus names SFTP status codes for the record.
var sftpStatus = map[uint32]string{0: "ok", 1: "eof", 2: "no_such_file", 3: "permission_denied", 4: "failure", 5: "bad_message", 6: "no_connection", 7: "connection_lost", 8: "op_unsupported"}

// sftpTap follows an SFTP session passing through the proxy, both ways,
// and records one ssh.sftp event per file operation: a file's open with
// the bytes read or written (at its close), and each remove, rename,
// mkdir, rmdir, setstat and symlink with the server's answer. It only
// reads: the packets go through unchanged.
type sftpTap struct {
	ss *session

	mu      sync.Mutex
	up      []byte // client→server bytes not yet a whole packet
	down    []byte // server→client
	broken  bool   // a packet too large or malformed: stop following
	pending map[uint32]sftpPending
	handles map[string]*sftpFile
}

type sftpPending struct {
	op, path, target string
	handle           string // for read: the handle it reads
	write            bool   // for open: opened for writing
}

type sftpFile struct {
	path  string
	write bool
	bytes int64
}

func newSFTPTap(ss *session) *sftpTap {
	return &sftpTap{ss: ss, pending: map[uint32]sftpPending{}, handles: map[string]*sftpFile{}}
}

func (t *sftpTap) fromClient(b []byte) { t.feed(&t.up, b, t.request) }
func (t *sftpTap) fromServer(b []byte) { t.feed(&t.down, b, t.response) }

// feed appends b to buf and hands every whole packet to handle.
func (t *sftpTap) feed(buf *[]byte, b []byte, handle func(typ byte, p []byte)) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.broken {
		return
	}
	*buf = append(*buf, b...)
	for len(*buf) >= 4 {
		n := binary.BigEndian.Uint32(*buf)
		if n == 0 || n > maxSFTPPack {
			t.broken = true
			t.ss.log.Warn().Uint32("length", n).Msg("sftp stream not followed further: bad packet length")
			return
		}
		if uint32(len(*buf)-4) < n {
			return
		}
		pkt := (*buf)[4 : 4+n]
		handle(pkt[0], pkt[1:])
		*buf = (*buf)[4+n:]
	}
	if len(*buf) == 0 {
		*buf = nil
	}
}

// reader reads SFTP wire fields, remembering whether any was short.
type reader struct {
	p  []byte
	ok bool
}

func (r *reader) u32() uint32 {
	if len(r.p) < 4 {
		r.ok = false
		return 0
	}
	v := binary.BigEndian.Uint32(r.p)
	r.p = r.p[4:]
	return v
}

func (r *reader) u64() uint64 {
	hi, lo := r.u32(), r.u32()
	return uint64(hi)<<32 | uint64(lo)
}

func (r *reader) str() string {
	n := r.u32()
	if !r.ok || uint32(len(r.p)) < n {
		r.ok = false
		return ""
	}
	s := string(r.p[:n])
	r.p = r.p[n:]
	return s
}

func (t *sftpTap) request(typ byte, p []byte) {
	r := &reader{p: p, ok: true}
	switch typ {
	case fxpOpen:
		id, path := r.u32(), r.str()
		flags := r.u32()
		if r.ok {
			t.pending[id] = sftpPending{op: "open", path: path, write: flags&fxfWrite != 0}
		}
	case fxpRead:
		id, h := r.u32(), r.str()
		if r.ok {
			t.pending[id] = sftpPending{op: "read", handle: h}
		}
	case fxpWrite:
		r.u32()
		h := r.str()
		r.u64()
		data := r.str()
		if f := t.handles[h]; r.ok && f != nil {
			f.bytes += int64(len(data))
		}
	case fxpClose:
		r.u32()
		h := r.str()
		if f := t.handles[h]; r.ok && f != nil {
			delete(t.handles, h)
			op := "read"
			if f.write {
				op = "write"
			}
			t.emit(event.SSHSFTPData{Op: op, Path: f.path, Bytes: f.bytes, Status: "ok"})
		}
	case fxpRemove, fxpRmdir, fxpMkdir, fxpSetstat:
		id, path := r.u32(), r.str()
		if r.ok {
			t.pending[id] = sftpPending{op: map[byte]string{fxpRemove: "remove", fxpRmdir: "rmdir", fxpMkdir: "mkdir", fxpSetstat: "setstat"}[typ], path: path}
		}
	case fxpRename, fxpSymlink:
		id, a, b := r.u32(), r.str(), r.str()
		if r.ok {
			op := "rename"
			if typ == fxpSymlink {
				op = "symlink"
			}
			t.pending[id] = sftpPending{op: op, path: a, target: b}
		}
	}
}

func (t *sftpTap) response(typ byte, p []byte) {
	r := &reader{p: p, ok: true}
	id := r.u32()
	if !r.ok {
		return
	}
	pend, ok := t.pending[id]
	if !ok {
		return
	}
	delete(t.pending, id)
	switch typ {
	case fxpHandle:
		h := r.str()
		if r.ok && pend.op == "open" {
			t.handles[h] = &sftpFile{path: pend.path, write: pend.write}
		}
	case fxpData:
		data := r.str()
		if f := t.handles[pend.handle]; r.ok && f != nil {
			f.bytes += int64(len(data))
		}
	case fxpStatus:
		code := r.u32()
		if pend.op == "read" {
			return
		}
		status, known := sftpStatus[code]
		if !known {
			status = "failure"
		}
		// A failed open is a file operation too: someone tried.
		t.emit(event.SSHSFTPData{Op: pend.op, Path: pend.path, Target: pend.target, Status: status})
	}
}

func (t *sftpTap) emit(d event.SSHSFTPData) {
	d.SSHSession = t.ss.id
	if err := t.ss.s.Audit.Result(proxy.Receipt{}, event.SSHSFTP, d); err != nil {
		t.ss.log.Warn().Err(err).Msg("ssh.sftp event not recorded")
	}
}

// close records files still open when the channel ended.
func (t *sftpTap) close() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for h, f := range t.handles {
		op := "read"
		if f.write {
			op = "write"
		}
		t.emit(event.SSHSFTPData{Op: op, Path: f.path, Bytes: f.bytes, Status: "unclosed"})
		delete(t.handles, h)
	}
}
