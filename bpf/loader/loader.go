package loader

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
	"golang.org/x/sys/unix"
)

// Target flags, mirrored from warden.h.
const (
	// FlagProtocolErrors marks a target whose protocol can carry an error
	// message, so unbound clients are sent to the proxy to read it instead
	// of failing connect() with EPERM.
	FlagProtocolErrors uint32 = 1
)

// Verdict is the kernel's decision about one connection, mirrored from
// enum verdict in warden.h.
type Verdict uint32

// Verdicts.
const (
	VerdictNone       Verdict = 0
	VerdictAllowed    Verdict = 1
	VerdictUnbound    Verdict = 2
	VerdictNotAllowed Verdict = 3
	VerdictExpired    Verdict = 4
	VerdictNoStorage  Verdict = 5
)

// String returns the verdict's name as used in events and metrics.
func (v Verdict) String() string {
	switch v {
	case VerdictAllowed:
		return "allowed"
	case VerdictUnbound:
		return "unbound"
	case VerdictNotAllowed:
		return "not_allowed"
	case VerdictExpired:
		return "expired"
	case VerdictNoStorage:
		return "no_storage"
	}
	return "none"
}

// Counter indexes, mirrored from enum counter in warden.h.
var counterNames = []string{"redirected", "denied", "denial_lost", "storage_failed", "no_proxy", "conn_lost"}

// ConnInfo is what the kernel recorded about a redirected or denied
// connection.
type ConnInfo struct {
	OrigDst         netip.AddrPort // IPv4 destinations are unmapped
	Verdict         Verdict
	TargetID        uint32
	IdentityID      uint32
	PID             uint32 // thread id
	TGID            uint32 // process id
	UID, GID        uint32
	CgroupID        uint64
	SessionCgroupID uint64
	BootTimeNs      uint64
}

// Denial is a connection the kernel refused.
type Denial struct {
	ConnInfo
	Comm string
}

// Options configure Load.
type Options struct {
	// CgroupPath is the cgroup v2 directory the programs attach to. Every
	// process below it is subject to enforcement.
	CgroupPath string
	// PinDir is a directory on a bpffs where maps and links are pinned so
	// they outlive the agent. Load mounts a private bpffs there if the
	// directory is not on one already.
	PinDir string
}

// Enforcer owns the loaded programs, their maps and their cgroup links.
type Enforcer struct {
	objs  wardenObjects
	links []link.Link
	opts  Options
}

var attachments = []struct {
	name   string
	attach ebpf.AttachType
	prog   func(*wardenObjects) *ebpf.Program
}{
	{"connect4", ebpf.AttachCGroupInet4Connect, func(o *wardenObjects) *ebpf.Program { return o.WardenConnect4 }},
	{"connect6", ebpf.AttachCGroupInet6Connect, func(o *wardenObjects) *ebpf.Program { return o.WardenConnect6 }},
	{"sockops", ebpf.AttachCGroupSockOps, func(o *wardenObjects) *ebpf.Program { return o.WardenSockops }},
	{"getpeername4", ebpf.AttachCgroupInet4GetPeername, func(o *wardenObjects) *ebpf.Program { return o.WardenGetpeername4 }},
	{"getpeername6", ebpf.AttachCgroupInet6GetPeername, func(o *wardenObjects) *ebpf.Program { return o.WardenGetpeername6 }},
}

// Load loads the programs, reusing maps pinned by an earlier run, and
// attaches them to opts.CgroupPath. Links pinned by an earlier run are kept
// and switched over to the new programs, so enforcement never lapses across
// an agent restart.
func Load(opts Options) (*Enforcer, error) {
	if opts.CgroupPath == "" || opts.PinDir == "" {
		return nil, errors.New("load bpf: cgroup path and pin dir are required")
	}
	if err := ensureBPFFS(opts.PinDir); err != nil {
		return nil, err
	}
	spec, err := loadWarden()
	if err != nil {
		return nil, fmt.Errorf("load bpf spec: %w", err)
	}
	for _, m := range spec.Maps {
		m.Pinning = ebpf.PinByName
	}
	e := &Enforcer{opts: opts}
	err = spec.LoadAndAssign(&e.objs, &ebpf.CollectionOptions{Maps: ebpf.MapOptions{PinPath: opts.PinDir}})
	if errors.Is(err, ebpf.ErrMapIncompatible) {
		return nil, fmt.Errorf("load bpf objects: maps pinned in %s come from an incompatible version; run 'wardend uninstall' to remove them: %w", opts.PinDir, err)
	}
	if err != nil {
		return nil, fmt.Errorf("load bpf objects: %w", err)
	}
	for _, a := range attachments {
		l, err := e.attach(a.name, a.attach, a.prog(&e.objs))
		if err != nil {
			e.Close()
			return nil, err
		}
		e.links = append(e.links, l)
	}
	return e, nil
}

func (e *Enforcer) attach(name string, typ ebpf.AttachType, prog *ebpf.Program) (link.Link, error) {
	pin := filepath.Join(e.opts.PinDir, "link_"+name)
	if l, err := link.LoadPinnedLink(pin, nil); err == nil {
		if err := l.Update(prog); err != nil {
			l.Close()
			return nil, fmt.Errorf("update pinned %s link %s: %w", name, pin, err)
		}
		return l, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("load pinned %s link %s: %w", name, pin, err)
	}
	l, err := link.AttachCgroup(link.CgroupOptions{Path: e.opts.CgroupPath, Attach: typ, Program: prog})
	if err != nil {
		return nil, fmt.Errorf("attach %s to %s: %w", name, e.opts.CgroupPath, err)
	}
	if err := l.Pin(pin); err != nil {
		l.Close()
		return nil, fmt.Errorf("pin %s link to %s: %w", name, pin, err)
	}
	return l, nil
}

// Close releases the agent's handles. Pinned programs stay attached and
// keep enforcing.
func (e *Enforcer) Close() error {
	var errs []error
	for _, l := range e.links {
		errs = append(errs, l.Close())
	}
	e.links = nil
	errs = append(errs, e.objs.Close())
	return errors.Join(errs...)
}

// Uninstall detaches the programs, removes every pin and unmounts the
// private bpffs if Load mounted one. Enforcement stops.
func (e *Enforcer) Uninstall() error {
	var errs []error
	for _, l := range e.links {
		errs = append(errs, l.Unpin())
	}
	for _, m := range []*ebpf.Map{e.objs.Access, e.objs.Bindings, e.objs.Conns, e.objs.Counters,
		e.objs.Denials, e.objs.Exempt, e.objs.ProxyConf, e.objs.SkConn, e.objs.Targets} {
		if m != nil {
			errs = append(errs, m.Unpin())
		}
	}
	errs = append(errs, e.Close())
	errs = append(errs, unmountPrivateBPFFS(e.opts.PinDir))
	return errors.Join(errs...)
}

// SetProxy points redirected connections at the proxy listeners.
func (e *Enforcer) SetProxy(v4, v6 netip.Addr, port uint16) error {
	if !v4.Is4() || !v6.Is6() || v6.Is4In6() {
		return fmt.Errorf("set proxy: need an IPv4 and an IPv6 address, got %s and %s", v4, v6)
	}
	var pc wardenProxyConfig
	a4 := v4.As4()
	pc.Addr4 = binary.NativeEndian.Uint32(a4[:])
	a6 := v6.As16()
	for i := range pc.Addr6 {
		pc.Addr6[i] = binary.NativeEndian.Uint32(a6[i*4:])
	}
	pc.Port = htons(port)
	if err := e.objs.ProxyConf.Put(uint32(0), &pc); err != nil {
		return fmt.Errorf("set proxy: %w", err)
	}
	return nil
}

// TargetEntry is one row of the kernel's target table.
type TargetEntry struct {
	Prefix netip.Prefix // IPv4 prefixes are stored IPv4-mapped
	Port   uint16
	ID     uint32
	Flags  uint32
}

func targetKey(p netip.Prefix, port uint16) wardenTargetKey {
	bits := p.Bits()
	if p.Addr().Is4() {
		bits += 96
	}
	k := wardenTargetKey{Prefixlen: uint32(16 + bits), Port: htons(port), Addr: p.Masked().Addr().As16()}
	return k
}

// SyncTargets makes the kernel's target table equal to entries.
func (e *Enforcer) SyncTargets(entries []TargetEntry) error {
	want := make(map[wardenTargetKey]wardenTargetValue, len(entries))
	for _, t := range entries {
		want[targetKey(t.Prefix, t.Port)] = wardenTargetValue{TargetId: t.ID, Flags: t.Flags}
	}
	// Add first, then remove: no moment without a target's entry.
	for k, v := range want {
		if err := e.objs.Targets.Put(&k, &v); err != nil {
			return fmt.Errorf("put target %d: %w", v.TargetId, err)
		}
	}
	var stale []wardenTargetKey
	var k wardenTargetKey
	var v wardenTargetValue
	it := e.objs.Targets.Iterate()
	for it.Next(&k, &v) {
		if _, ok := want[k]; !ok {
			stale = append(stale, k)
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("iterate targets: %w", err)
	}
	for _, k := range stale {
		if err := e.objs.Targets.Delete(&k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("delete stale target: %w", err)
		}
	}
	return nil
}

// SyncAccess makes the access table equal to allowed: identity id → target
// id → the CLOCK_BOOTTIME instant the access lapses at, 0 for never.
func (e *Enforcer) SyncAccess(allowed map[uint32]map[uint32]uint64) error {
	want := map[wardenAccessKey]bool{}
	for id, targets := range allowed {
		for t, expires := range targets {
			k := wardenAccessKey{IdentityId: id, TargetId: t}
			want[k] = true
			v := wardenAccessValue{ExpiresNs: expires}
			if err := e.objs.Access.Put(&k, &v); err != nil {
				return fmt.Errorf("put access %d→%d: %w", id, t, err)
			}
		}
	}
	var stale []wardenAccessKey
	var k wardenAccessKey
	var v wardenAccessValue
	it := e.objs.Access.Iterate()
	for it.Next(&k, &v) {
		if !want[k] {
			stale = append(stale, k)
		}
	}
	if err := it.Err(); err != nil {
		return fmt.Errorf("iterate access: %w", err)
	}
	for _, k := range stale {
		if err := e.objs.Access.Delete(&k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("delete stale access: %w", err)
		}
	}
	return nil
}

// Binding ties a login-session cgroup to an identity.
type Binding struct {
	CgroupID   uint64
	IdentityID uint32
	// ExpiresBootNs is the CLOCK_BOOTTIME instant the binding lapses at, so
	// the kernel stops honouring it even if the agent is down.
	ExpiresBootNs uint64
}

// PutBinding adds or replaces a binding.
func (e *Enforcer) PutBinding(b Binding) error {
	v := wardenBinding{IdentityId: b.IdentityID, ExpiresNs: b.ExpiresBootNs}
	if err := e.objs.Bindings.Put(b.CgroupID, &v); err != nil {
		return fmt.Errorf("put binding for cgroup %d: %w", b.CgroupID, err)
	}
	return nil
}

// DeleteBinding removes the binding of a session cgroup, if any.
func (e *Enforcer) DeleteBinding(cgroupID uint64) error {
	if err := e.objs.Bindings.Delete(cgroupID); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("delete binding for cgroup %d: %w", cgroupID, err)
	}
	return nil
}

// Bindings lists the bindings currently in the kernel.
func (e *Enforcer) Bindings() ([]Binding, error) {
	var out []Binding
	var k uint64
	var v wardenBinding
	it := e.objs.Bindings.Iterate()
	for it.Next(&k, &v) {
		out = append(out, Binding{CgroupID: k, IdentityID: v.IdentityId, ExpiresBootNs: v.ExpiresNs})
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("iterate bindings: %w", err)
	}
	return out, nil
}

// Exempt excludes a cgroup's own connections from enforcement. The agent
// exempts its own cgroup so its upstream dials never loop into its proxy.
func (e *Enforcer) Exempt(cgroupID uint64) error {
	if err := e.objs.Exempt.Put(cgroupID, uint8(1)); err != nil {
		return fmt.Errorf("exempt cgroup %d: %w", cgroupID, err)
	}
	return nil
}

// TakeConn returns and forgets what the kernel recorded for the connection
// whose client side is client, as seen by the proxy's accept().
func (e *Enforcer) TakeConn(client netip.AddrPort) (ConnInfo, error) {
	k := wardenConnKey{Addr: client.Addr().As16(), Port: client.Port()}
	var v wardenConnInfo
	if err := e.objs.Conns.LookupAndDelete(&k, &v); err != nil {
		return ConnInfo{}, fmt.Errorf("look up connection from %s: %w", client, err)
	}
	return connInfo(&v), nil
}

func connInfo(v *wardenConnInfo) ConnInfo {
	return ConnInfo{
		OrigDst:         netip.AddrPortFrom(netip.AddrFrom16(v.OrigAddr).Unmap(), ntohs(v.OrigPort)),
		Verdict:         Verdict(v.Verdict),
		TargetID:        v.TargetId,
		IdentityID:      v.IdentityId,
		PID:             v.Pid,
		TGID:            v.Tgid,
		UID:             v.Uid,
		GID:             v.Gid,
		CgroupID:        v.CgroupId,
		SessionCgroupID: v.SessionCgroupId,
		BootTimeNs:      v.TimeNs,
	}
}

// DenialReader reads connections the kernel refused.
type DenialReader struct{ rd *ringbuf.Reader }

// Denials opens a reader on the denial ring buffer.
func (e *Enforcer) Denials() (*DenialReader, error) {
	rd, err := ringbuf.NewReader(e.objs.Denials)
	if err != nil {
		return nil, fmt.Errorf("open denial ring buffer: %w", err)
	}
	return &DenialReader{rd: rd}, nil
}

// Read blocks for the next denial. It returns ringbuf.ErrClosed after Close.
func (r *DenialReader) Read() (Denial, error) {
	rec, err := r.rd.Read()
	if err != nil {
		return Denial{}, err
	}
	var raw struct {
		Info wardenConnInfo
		Comm [16]byte
	}
	if err := binary.Read(bytes.NewReader(rec.RawSample), binary.NativeEndian, &raw); err != nil {
		return Denial{}, fmt.Errorf("decode denial (%d bytes): %w", len(rec.RawSample), err)
	}
	return Denial{ConnInfo: connInfo(&raw.Info), Comm: unix.ByteSliceToString(raw.Comm[:])}, nil
}

// Close unblocks Read.
func (r *DenialReader) Close() error { return r.rd.Close() }

// Counters sums the per-CPU counters by name.
func (e *Enforcer) Counters() (map[string]uint64, error) {
	out := make(map[string]uint64, len(counterNames))
	for i, name := range counterNames {
		var perCPU []uint64
		if err := e.objs.Counters.Lookup(uint32(i), &perCPU); err != nil {
			return nil, fmt.Errorf("read counter %s: %w", name, err)
		}
		var sum uint64
		for _, v := range perCPU {
			sum += v
		}
		out[name] = sum
	}
	return out, nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }
func ntohs(v uint16) uint16 { return v<<8 | v>>8 }

// Verify loads every Warden program (enforcement and lineage) into the
// kernel, through the verifier, without attaching or pinning anything, and
// releases them again. It answers "would Load work here" for
// 'wardend check'.
func Verify() error {
	var enforce wardenObjects
	if err := loadWardenObjects(&enforce, nil); err != nil {
		return fmt.Errorf("load enforcement programs: %w", err)
	}
	enforce.Close()
	var lineage lineageObjects
	if err := loadLineageObjects(&lineage, nil); err != nil {
		return fmt.Errorf("load lineage programs: %w", err)
	}
	return lineage.Close()
}
