// Package natsauth is Warden's NATS trust chain: decentralized JWT
// authentication (an operator, a system account and the WARDEN account,
// whose signing key issues one user per agent, collector and SOC reader)
// and the permissions of each role, which the NATS server enforces.
//
// JWT rather than a static list of nkeys in the server config: enrolling
// a bastion signs a user JWT with the account's signing key, and no NATS
// server (one embedded, or three in a cluster) needs a new config or a
// reload for it; the permissions travel inside the signed JWT. Revoking a
// user changes the account JWT only.
package natsauth

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"

	"github.com/wardenhq/warden/pkg/event"
)

// AccountName is the name of the account every Warden user belongs to.
const AccountName = "WARDEN"

// Files in an Authority's directory. Seeds (.nk) are mode 0600: whoever
// reads the operator seed can mint accounts, the signer seed users.
const (
	operatorSeedFile = "operator.nk"
	systemSeedFile   = "system.nk"
	accountSeedFile  = "account.nk"
	signerSeedFile   = "signer.nk"
	accountJWTFile   = "account.jwt"
	usersDir         = "users"
	lockFile         = ".lock"
)

// Authority holds the trust chain's keys, loaded from (or created in) a
// directory of the collector host.
type Authority struct {
	dir      string
	operator nkeys.KeyPair
	system   nkeys.KeyPair
	account  nkeys.KeyPair
	signer   nkeys.KeyPair
	// account claims as last written (revocations included).
	accountClaims *jwt.AccountClaims
}

// Open loads the trust chain from dir, creating what is missing: the
// embedded server makes its operator and account on first start, and
// enroll may run before that. Concurrent Opens (a collector starting
// while an operator enrols a bastion) are serialised by a lock file.
func Open(dir string) (*Authority, error) {
	if dir == "" {
		return nil, errors.New("NATS auth directory is empty")
	}
	if err := os.MkdirAll(filepath.Join(dir, usersDir), 0o700); err != nil {
		return nil, fmt.Errorf("NATS auth directory %s: %w", dir, err)
	}
	unlock, err := lock(dir)
	if err != nil {
		return nil, err
	}
	defer unlock()
	a := &Authority{dir: dir}
	for _, k := range []struct {
		file   string
		prefix nkeys.PrefixByte
		kp     *nkeys.KeyPair
	}{
		{operatorSeedFile, nkeys.PrefixByteOperator, &a.operator},
		{systemSeedFile, nkeys.PrefixByteAccount, &a.system},
		{accountSeedFile, nkeys.PrefixByteAccount, &a.account},
		{signerSeedFile, nkeys.PrefixByteAccount, &a.signer},
	} {
		if *k.kp, err = loadOrCreateSeed(filepath.Join(dir, k.file), k.prefix); err != nil {
			return nil, err
		}
	}
	if a.accountClaims, err = a.loadAccount(); err != nil {
		return nil, err
	}
	return a, nil
}

// lock takes an exclusive flock on dir's lock file.
func lock(dir string) (func(), error) {
	f, err := os.OpenFile(filepath.Join(dir, lockFile), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("NATS auth lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("NATS auth lock %s: %w", f.Name(), err)
	}
	return func() { f.Close() }, nil
}

func loadOrCreateSeed(path string, prefix nkeys.PrefixByte) (nkeys.KeyPair, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		kp, err := nkeys.FromSeed([]byte(strings.TrimSpace(string(b))))
		if err != nil {
			return nil, fmt.Errorf("NATS seed %s: %w", path, err)
		}
		if pub, _ := kp.PublicKey(); nkeys.Prefix(pub) != prefix {
			return nil, fmt.Errorf("NATS seed %s: not a %s key", path, prefix)
		}
		return kp, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("NATS seed %s: %w", path, err)
	}
	kp, err := nkeys.CreatePair(prefix)
	if err != nil {
		return nil, fmt.Errorf("create %s key: %w", prefix, err)
	}
	seed, err := kp.Seed()
	if err != nil {
		return nil, err
	}
	if err := writeFile(path, append(seed, '\n'), 0o600); err != nil {
		return nil, fmt.Errorf("NATS seed %s: %w", path, err)
	}
	return kp, nil
}

// writeFile writes b to path atomically (temp file and rename).
func writeFile(path string, b []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

func pub(kp nkeys.KeyPair) string {
	p, _ := kp.PublicKey()
	return p
}

// loadAccount reads account.jwt (keeping its revocations), or makes the
// account's claims afresh. Either way the signing keys and JetStream
// limits are set to what this version expects; the file is written only
// when that changed something.
func (a *Authority) loadAccount() (*jwt.AccountClaims, error) {
	path := filepath.Join(a.dir, accountJWTFile)
	var ac *jwt.AccountClaims
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		if ac, err = jwt.DecodeAccountClaims(strings.TrimSpace(string(b))); err != nil {
			return nil, fmt.Errorf("account JWT %s: %w", path, err)
		}
		if ac.Subject != pub(a.account) {
			return nil, fmt.Errorf("account JWT %s is for %s, not the account key in %s", path, ac.Subject, accountSeedFile)
		}
	case errors.Is(err, os.ErrNotExist):
		ac = jwt.NewAccountClaims(pub(a.account))
		ac.Name = AccountName
	default:
		return nil, fmt.Errorf("account JWT %s: %w", path, err)
	}
	js := jwt.JetStreamLimits{MemoryStorage: -1, DiskStorage: -1, Streams: -1, Consumer: -1}
	if err == nil && ac.SigningKeys.Contains(pub(a.signer)) && ac.Limits.JetStreamLimits == js {
		// Up to date: rewriting it would only move its mtime, which a
		// running collector watches for revocations.
		return ac, nil
	}
	ac.SigningKeys.Add(pub(a.signer))
	ac.Limits.JetStreamLimits = js
	if err := a.writeAccount(ac); err != nil {
		return nil, err
	}
	return ac, nil
}

func (a *Authority) writeAccount(ac *jwt.AccountClaims) error {
	tok, err := ac.Encode(a.operator)
	if err != nil {
		return fmt.Errorf("sign account JWT: %w", err)
	}
	return writeFile(filepath.Join(a.dir, accountJWTFile), []byte(tok+"\n"), 0o644)
}

// OperatorJWT is the operator's self-signed JWT, which servers trust.
func (a *Authority) OperatorJWT() (string, error) {
	oc := jwt.NewOperatorClaims(pub(a.operator))
	oc.Name = "warden"
	// The system account is part of the trust chain every server needs.
	oc.SystemAccount = pub(a.system)
	return oc.Encode(a.operator)
}

// SystemAccount is the public key of the system account.
func (a *Authority) SystemAccount() string { return pub(a.system) }

// Account is the public key of the WARDEN account.
func (a *Authority) Account() string { return pub(a.account) }

// AccountFile is the path of the account JWT, rewritten by every
// revocation.
func (a *Authority) AccountFile() string { return filepath.Join(a.dir, accountJWTFile) }

// AccountJWTs returns the JWTs of the system and WARDEN accounts, keyed
// by public key: what a server's resolver preloads.
func (a *Authority) AccountJWTs() (map[string]string, error) {
	sc := jwt.NewAccountClaims(pub(a.system))
	sc.Name = "SYS"
	sys, err := sc.Encode(a.operator)
	if err != nil {
		return nil, fmt.Errorf("sign system account JWT: %w", err)
	}
	acc, err := a.accountClaims.Encode(a.operator)
	if err != nil {
		return nil, fmt.Errorf("sign account JWT: %w", err)
	}
	return map[string]string{pub(a.system): sys, pub(a.account): acc}, nil
}

// ServerConfig returns the lines of a nats-server configuration file that
// make the server trust this chain: the operator, the system account and
// a memory resolver preloaded with both accounts. Re-run it after a
// revocation and reload every server.
func (a *Authority) ServerConfig() (string, error) {
	op, err := a.OperatorJWT()
	if err != nil {
		return "", err
	}
	accts, err := a.AccountJWTs()
	if err != nil {
		return "", err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# Warden NATS trust chain (warden-collector nats-config); do not edit by hand.\n")
	fmt.Fprintf(&b, "operator: %s\n", op)
	fmt.Fprintf(&b, "system_account: %s\n", pub(a.system))
	fmt.Fprintf(&b, "resolver: MEMORY\nresolver_preload: {\n")
	for _, k := range []string{pub(a.system), pub(a.account)} {
		fmt.Fprintf(&b, "  %s: %s\n", k, accts[k])
	}
	b.WriteString("}\n")
	return b.String(), nil
}

// nameRE bounds user names: a SOC name becomes a consumer name, and a
// collector name a subject token.
var nameRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// CheckName says whether name can be a user of role r. Host ids are
// checked as the command stream does; other names must be a consumer
// name.
func CheckName(r Role, name string) error {
	if !r.Valid() {
		return fmt.Errorf("unknown NATS role %q", r)
	}
	if r == RoleAgent {
		if err := event.ValidCommandHost(name); err != nil {
			return fmt.Errorf("host id: %w", err)
		}
		return nil
	}
	if !nameRE.MatchString(name) {
		return fmt.Errorf("%s name %q: want 1 to 64 letters, digits, '-' or '_'", r, name)
	}
	return nil
}

// User is the record of one issued user, kept in the users directory so
// that it can be revoked by name.
type User struct {
	Role      Role      `json:"role"`
	Name      string    `json:"name"`
	PublicKey string    `json:"public_key"`
	Issued    time.Time `json:"issued"`
	// AgentKey is an agent's event-signing public key (base64), when
	// enroll was given it.
	AgentKey string `json:"agent_key,omitempty"`
	// Previous are the public keys issued to the same role and name
	// before PublicKey, oldest first: still valid until revoked.
	Previous []string `json:"previous,omitempty"`
}

// JWTName is the name claim of a user's JWT: role and name, so that a
// client can check its creds belong to it (natsconn does for agents).
func JWTName(r Role, name string) string { return string(r) + ":" + name }

// Issue creates a user of role r named name with a fresh nkey, records
// its public key, and returns its creds file content (JWT and seed).
// Issuing again for the same name replaces the record; the old creds stay
// valid until revoked (rotation: issue, deploy, then Revoke the old key).
func (a *Authority) Issue(r Role, name string, agentKey string) ([]byte, User, error) {
	if err := CheckName(r, name); err != nil {
		return nil, User{}, err
	}
	kp, err := nkeys.CreateUser()
	if err != nil {
		return nil, User{}, fmt.Errorf("create user key: %w", err)
	}
	uc := jwt.NewUserClaims(pub(kp))
	uc.Name = JWTName(r, name)
	uc.IssuerAccount = pub(a.account)
	uc.Permissions = Permissions(r, name)
	tok, err := uc.Encode(a.signer)
	if err != nil {
		return nil, User{}, fmt.Errorf("sign %s user %s: %w", r, name, err)
	}
	seed, err := kp.Seed()
	if err != nil {
		return nil, User{}, err
	}
	creds, err := jwt.FormatUserConfig(tok, seed)
	if err != nil {
		return nil, User{}, fmt.Errorf("creds of %s user %s: %w", r, name, err)
	}
	u := User{Role: r, Name: name, PublicKey: pub(kp), Issued: time.Now().UTC(), AgentKey: agentKey}
	unlock, err := lock(a.dir)
	if err != nil {
		return nil, User{}, err
	}
	defer unlock()
	if old, err := a.Lookup(r, name); err == nil {
		u.Previous = append(old.Previous, old.PublicKey)
	}
	b, _ := json.MarshalIndent(u, "", "  ")
	if err := writeFile(a.userFile(r, name), append(b, '\n'), 0o644); err != nil {
		return nil, User{}, fmt.Errorf("record %s user %s: %w", r, name, err)
	}
	return creds, u, nil
}

func (a *Authority) userFile(r Role, name string) string {
	return filepath.Join(a.dir, usersDir, string(r)+"-"+event.HostToken(name)+".json")
}

// Lookup returns the record of the user of role r named name.
func (a *Authority) Lookup(r Role, name string) (User, error) {
	var u User
	b, err := os.ReadFile(a.userFile(r, name))
	if errors.Is(err, os.ErrNotExist) {
		return u, fmt.Errorf("no %s user %q was issued here (%s)", r, name, filepath.Join(a.dir, usersDir))
	}
	if err != nil {
		return u, err
	}
	if err := json.Unmarshal(b, &u); err != nil {
		return u, fmt.Errorf("user record %s: %w", a.userFile(r, name), err)
	}
	return u, nil
}

// Revoke revokes the keys issued to the user of role r named name: all of
// them, or with previousOnly those before the current one (the end of a
// rotation). It re-signs the account JWT; servers apply it when they load
// it: the collector's embedded server within seconds (it watches the
// file), a cluster after ServerConfig is redeployed and reloaded. It returns the user and the
// keys it revoked.
func (a *Authority) Revoke(r Role, name string, previousOnly bool) (User, []string, error) {
	unlock, err := lock(a.dir)
	if err != nil {
		return User{}, nil, err
	}
	defer unlock()
	u, err := a.Lookup(r, name)
	if err != nil {
		return u, nil, err
	}
	keys := append([]string(nil), u.Previous...)
	if !previousOnly {
		keys = append(keys, u.PublicKey)
	}
	if len(keys) == 0 {
		return u, nil, fmt.Errorf("%s user %q has no key before its current one", r, name)
	}
	// Another process may have revoked someone since Open: start from
	// the file.
	ac, err := a.loadAccount()
	if err != nil {
		return u, nil, err
	}
	// Each key is a user of its own, so revoking it for every JWT
	// issued up to now (plus a second: issue times are in seconds)
	// touches no other key.
	for _, k := range keys {
		ac.RevokeAt(k, time.Now().Add(time.Second))
	}
	if err := a.writeAccount(ac); err != nil {
		return u, nil, err
	}
	a.accountClaims = ac
	return u, keys, nil
}
