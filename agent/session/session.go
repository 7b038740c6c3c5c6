// Package session binds verified identities to login sessions.
//
// A login session is a cgroup v2 directory created by the agent. The shell
// that ran 'warden login' is moved into it, so the shell and everything it
// starts afterwards (through sudo too) live there. The cgroup's id is bound to
// an identity in the kernel's binding map. Only root can write cgroup.procs,
// so an unprivileged user can neither leave the session nor move a process
// into another user's session. Processes that existed before the login stay
// where they were and remain unbound.
package session

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/oklog/ulid/v2"
	"golang.org/x/sys/unix"

	"github.com/wardenhq/warden/agent/procinfo"
	"github.com/wardenhq/warden/bpf/loader"
	"github.com/wardenhq/warden/pkg/cgroupv2"
)

// Kernel is the part of the BPF enforcer the manager drives.
type Kernel interface {
	PutBinding(loader.Binding) error
	DeleteBinding(cgroupID uint64) error
	Bindings() ([]loader.Binding, error)
}

// Identity is a verified human, as read from an ID token.
type Identity struct {
	Subject string   `json:"sub"`
	Email   string   `json:"email,omitempty"`
	Name    string   `json:"name,omitempty"`
	Issuer  string   `json:"issuer"`
	Groups  []string `json:"groups"`
}

// Session is one bound login session.
type Session struct {
	ID         string    `json:"session_id"`
	IdentityID uint32    `json:"identity_id"`
	Identity   Identity  `json:"identity"`
	UID        uint32    `json:"uid"`
	Cgroup     string    `json:"cgroup"`
	CgroupID   uint64    `json:"cgroup_id"`
	LoginTime  time.Time `json:"login_time"`
	Expires    time.Time `json:"expires"`
}

// Peer is the process on the other end of a control-socket connection, as
// reported by SO_PEERCRED.
type Peer struct {
	PID int
	UID uint32
}

// Options configure Open.
type Options struct {
	// Dir is the cgroup directory under which session cgroups are made.
	Dir string
	// StateFile persists sessions across agent restarts. It never holds
	// tokens.
	StateFile string
	Kernel    Kernel
}

// Manager owns the login sessions. The *Session values it returns are
// never modified afterwards, so callers may read them without locking.
type Manager struct {
	opts Options

	mu       sync.Mutex
	sessions map[string]*Session // by session id
	nextID   uint32
}

type state struct {
	NextIdentityID uint32     `json:"next_identity_id"`
	Sessions       []*Session `json:"sessions"`
}

// Open loads persisted sessions and makes the kernel's bindings match them:
// a kernel binding the agent has no record of is removed (fail closed), and
// a recorded session whose cgroup is gone or was replaced is dropped.
// Sessions that expired while the agent was down are returned as expired.
func Open(opts Options) (*Manager, []*Session, error) {
	if err := cgroupv2.Create(opts.Dir); err != nil {
		return nil, nil, err
	}
	m := &Manager{opts: opts, sessions: map[string]*Session{}, nextID: 1}
	var st state
	data, err := os.ReadFile(opts.StateFile)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return nil, nil, fmt.Errorf("read session state: %w", err)
	default:
		if err := json.Unmarshal(data, &st); err != nil {
			return nil, nil, fmt.Errorf("parse session state %s: %w", opts.StateFile, err)
		}
	}
	if st.NextIdentityID > m.nextID {
		m.nextID = st.NextIdentityID
	}
	now := time.Now()
	var expired []*Session
	for _, s := range st.Sessions {
		id, err := cgroupv2.ID(s.Cgroup)
		if err != nil || id != s.CgroupID {
			continue
		}
		if !now.Before(s.Expires) {
			expired = append(expired, s)
			m.reap(s)
			continue
		}
		m.sessions[s.ID] = s
	}
	if err := m.syncKernel(); err != nil {
		return nil, nil, err
	}
	if err := m.saveLocked(); err != nil {
		return nil, nil, err
	}
	return m, expired, nil
}

func (m *Manager) syncKernel() error {
	want := map[uint64]bool{}
	for _, s := range m.sessions {
		want[s.CgroupID] = true
		if err := m.opts.Kernel.PutBinding(binding(s)); err != nil {
			return err
		}
	}
	have, err := m.opts.Kernel.Bindings()
	if err != nil {
		return err
	}
	for _, b := range have {
		if !want[b.CgroupID] {
			if err := m.opts.Kernel.DeleteBinding(b.CgroupID); err != nil {
				return err
			}
		}
	}
	return nil
}

func binding(s *Session) loader.Binding {
	return loader.Binding{CgroupID: s.CgroupID, IdentityID: s.IdentityID, ExpiresBootNs: BootTimeAt(s.Expires)}
}

// BootTimeAt converts a wall-clock instant to CLOCK_BOOTTIME, the clock the
// kernel checks expiry against; it keeps counting through suspend and is
// immune to wall-clock changes after the binding is made.
func BootTimeAt(t time.Time) uint64 {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts)
	at := ts.Nano() + int64(time.Until(t))
	if at <= 0 {
		return 1
	}
	return uint64(at)
}

// ErrNoSession means the caller is not in a bound session.
var ErrNoSession = errors.New("no verified identity is bound to this session; run 'warden login'")

// Login binds id to the caller's shell: the parent of the peer process,
// which must belong to the same user. If the shell is already in a session
// of the same subject the session is refreshed; another subject's session is
// refused rather than silently replaced.
func (m *Manager) Login(peer Peer, id Identity, expires time.Time) (*Session, bool, error) {
	if !time.Now().Before(expires) {
		return nil, false, errors.New("token already expired")
	}
	shell, err := parentOf(peer.PID)
	if err != nil {
		return nil, false, err
	}
	if shell <= 1 {
		return nil, false, errors.New("warden login must be run from a shell, not directly by init")
	}
	uid, ok := procinfo.RealUID(shell)
	if !ok {
		return nil, false, fmt.Errorf("read owner of shell %d", shell)
	}
	if uid != peer.UID {
		return nil, false, fmt.Errorf("the parent process (pid %d) belongs to uid %d, not to you (uid %d); run 'warden login' from your own shell", shell, uid, peer.UID)
	}
	// Hold the shell by pidfd so a recycled pid cannot be mistaken for it.
	pidfd, err := unix.PidfdOpen(shell, 0)
	if err != nil {
		return nil, false, fmt.Errorf("open pidfd of shell %d: %w", shell, err)
	}
	defer unix.Close(pidfd)
	if p, err := parentOf(peer.PID); err != nil || p != shell {
		return nil, false, errors.New("the calling shell exited during login")
	}

	m.mu.Lock()
	defer m.mu.Unlock()
	mount, err := cgroupv2.Mount()
	if err != nil {
		return nil, false, err
	}
	current, err := cgroupv2.PathOf(mount, shell)
	if err != nil {
		return nil, false, err
	}
	if s := m.byCgroupPath(current); s != nil {
		if s.Identity.Subject != id.Subject || s.Identity.Issuer != id.Issuer || s.UID != peer.UID {
			return nil, false, fmt.Errorf("this shell is already bound to %s; run 'warden logout' first", s.Identity.Subject)
		}
		// Sessions handed out are read without the lock: replace, never
		// mutate, and only once the kernel holds the new expiry.
		refreshed := *s
		refreshed.Identity, refreshed.Expires = id, expires
		if err := m.opts.Kernel.PutBinding(binding(&refreshed)); err != nil {
			return nil, false, err
		}
		m.sessions[s.ID] = &refreshed
		return &refreshed, true, m.saveLocked()
	}

	s := &Session{
		ID:         strings.ToLower(ulid.Make().String()),
		IdentityID: m.nextID,
		Identity:   id,
		UID:        peer.UID,
		LoginTime:  time.Now().UTC(),
		Expires:    expires,
	}
	s.Cgroup = filepath.Join(m.opts.Dir, s.ID)
	if err := cgroupv2.Create(s.Cgroup); err != nil {
		return nil, false, err
	}
	if s.CgroupID, err = cgroupv2.ID(s.Cgroup); err != nil {
		unix.Rmdir(s.Cgroup)
		return nil, false, err
	}
	// Bind before moving: the shell must never sit in an unbound session
	// cgroup that a later binding could confuse with another.
	if err := m.opts.Kernel.PutBinding(binding(s)); err != nil {
		unix.Rmdir(s.Cgroup)
		return nil, false, err
	}
	if err := cgroupv2.Move(s.Cgroup, shell); err != nil {
		m.opts.Kernel.DeleteBinding(s.CgroupID)
		unix.Rmdir(s.Cgroup)
		return nil, false, err
	}
	// The pidfd still refers to the process we checked; if it died while we
	// moved "its" pid, the pid may now belong to someone else.
	if err := unix.PidfdSendSignal(pidfd, 0, nil, 0); err != nil {
		m.opts.Kernel.DeleteBinding(s.CgroupID)
		return nil, false, fmt.Errorf("the calling shell exited during login: %w", err)
	}
	m.nextID++
	m.sessions[s.ID] = s
	return s, false, m.saveLocked()
}

// Logout unbinds the session the peer runs in. Its processes stay in the
// session cgroup, unbound; the cgroup is removed once they have exited.
func (m *Manager) Logout(peer Peer) (*Session, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, err := m.ofPIDLocked(peer.PID)
	if err != nil {
		return nil, err
	}
	if err := m.opts.Kernel.DeleteBinding(s.CgroupID); err != nil {
		return nil, err
	}
	delete(m.sessions, s.ID)
	m.reap(s)
	return s, m.saveLocked()
}

// Of returns the session the process pid runs in.
func (m *Manager) Of(pid int) (*Session, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.ofPIDLocked(pid)
}

func (m *Manager) ofPIDLocked(pid int) (*Session, error) {
	ids, err := cgroupAncestorIDs(pid)
	if err != nil {
		return nil, err
	}
	for _, s := range m.sessions {
		for _, id := range ids {
			if s.CgroupID == id {
				return s, nil
			}
		}
	}
	return nil, ErrNoSession
}

// ByIdentity returns the live session with the kernel identity id.
func (m *Manager) ByIdentity(id uint32) (*Session, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, s := range m.sessions {
		if s.IdentityID == id {
			return s, true
		}
	}
	return nil, false
}

// List returns the live sessions, oldest first.
func (m *Manager) List() []*Session {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]*Session, 0, len(m.sessions))
	for _, s := range m.sessions {
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].IdentityID < out[j].IdentityID })
	return out
}

// Expire unbinds sessions whose token has expired and returns them. The
// kernel already refuses them on its own clock; this removes the entries.
func (m *Manager) Expire(now time.Time) ([]*Session, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []*Session
	for id, s := range m.sessions {
		if now.Before(s.Expires) {
			continue
		}
		if err := m.opts.Kernel.DeleteBinding(s.CgroupID); err != nil {
			return out, err
		}
		delete(m.sessions, id)
		m.reap(s)
		out = append(out, s)
	}
	if len(out) == 0 {
		return nil, nil
	}
	return out, m.saveLocked()
}

// End unbinds the session id in the kernel and forgets it, whatever its
// expiry: the kill switch. Its processes stay in the session cgroup,
// unbound, for the caller to kill; Reap removes the cgroup once they are
// gone. ErrNoSession means there is no such live session.
func (m *Manager) End(id string) (*Session, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.sessions[id]
	if !ok {
		return nil, ErrNoSession
	}
	if err := m.opts.Kernel.DeleteBinding(s.CgroupID); err != nil {
		return nil, fmt.Errorf("unbind session %s: %w", id, err)
	}
	delete(m.sessions, id)
	return s, m.saveLocked()
}

// Get returns the live session id.
func (m *Manager) Get(id string) (*Session, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.sessions[id]
	return s, ok
}

// NextExpiry returns the earliest expiry among the live sessions, false
// when there are none.
func (m *Manager) NextExpiry() (time.Time, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var next time.Time
	for _, s := range m.sessions {
		if next.IsZero() || s.Expires.Before(next) {
			next = s.Expires
		}
	}
	return next, !next.IsZero()
}

// Reap removes session cgroups under Dir that no live session owns and that
// have no processes left.
func (m *Manager) Reap() {
	m.mu.Lock()
	defer m.mu.Unlock()
	entries, _ := os.ReadDir(m.opts.Dir)
	for _, e := range entries {
		if _, live := m.sessions[e.Name()]; e.IsDir() && !live {
			unix.Rmdir(filepath.Join(m.opts.Dir, e.Name())) // fails while processes remain
		}
	}
}

// reap removes an ended session's cgroup if it is already empty.
func (m *Manager) reap(s *Session) { unix.Rmdir(s.Cgroup) }

func (m *Manager) byCgroupPath(path string) *Session {
	for _, s := range m.sessions {
		if s.Cgroup == path {
			return s
		}
	}
	return nil
}

func (m *Manager) saveLocked() error {
	st := state{NextIdentityID: m.nextID}
	for _, s := range m.sessions {
		st.Sessions = append(st.Sessions, s)
	}
	sort.Slice(st.Sessions, func(i, j int) bool { return st.Sessions[i].IdentityID < st.Sessions[j].IdentityID })
	data, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("encode session state: %w", err)
	}
	return writeState(m.opts.StateFile, data, "session state")
}

// writeState replaces file with data through a temporary file, an fsync
// and a rename, so that a crash leaves the old file or the new one, never
// a mix. what names the file in errors.
func writeState(file string, data []byte, what string) error {
	if err := os.MkdirAll(filepath.Dir(file), 0o700); err != nil {
		return fmt.Errorf("create state dir: %w", err)
	}
	tmp := file + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("write %s: %w", what, err)
	}
	// The write's error, or else the fsync's, must reach the check below:
	// a state file that did not reach the disk is not saved.
	if _, err = f.Write(data); err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write %s %s: %w", what, tmp, err)
	}
	if err := os.Rename(tmp, file); err != nil {
		return fmt.Errorf("replace %s: %w", what, err)
	}
	return nil
}

func parentOf(pid int) (int, error) {
	st, err := procinfo.ReadStat(pid)
	if err != nil {
		return 0, fmt.Errorf("read parent of pid %d: %w", pid, err)
	}
	return st.PPID, nil
}

// cgroupAncestorIDs lists the ids of the cgroup of pid and of each of its
// ancestors, nearest first.
func cgroupAncestorIDs(pid int) ([]uint64, error) {
	mount, err := cgroupv2.Mount()
	if err != nil {
		return nil, err
	}
	dir, err := cgroupv2.PathOf(mount, pid)
	if err != nil {
		return nil, err
	}
	var ids []uint64
	for ; strings.HasPrefix(dir, mount); dir = filepath.Dir(dir) {
		if id, err := cgroupv2.ID(dir); err == nil {
			ids = append(ids, id)
		}
		if dir == mount {
			break
		}
	}
	return ids, nil
}
