package devidp

import (
	"crypto/rand"
	"errors"
	"fmt"
	"strings"
	"time"
)

type grantState int

const (
	statePending grantState = iota
	stateApproved
	stateDenied
)

// deviceGrant is one RFC 8628 device authorization, from /device/code until
// the client redeems it at /token.
type deviceGrant struct {
	deviceCode string
	userCode   string // normalised: 8 letters, no dash
	expires    time.Time
	lastPoll   time.Time
	state      grantState
	sub        string
}

// userCodeAlphabet follows RFC 8628 §6.1: consonants only, so codes cannot
// spell words, and no look-alike characters.
const userCodeAlphabet = "BCDFGHJKLMNPQRSTVWXZ"

// newDevice registers a fresh device grant.
func (p *IdP) newDevice() (*deviceGrant, error) {
	dc := make([]byte, 32)
	if _, err := rand.Read(dc); err != nil {
		return nil, fmt.Errorf("device code: %w", err)
	}
	now := p.now()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.pruneLocked(now)
	var uc string
	for {
		b := make([]byte, 8)
		if _, err := rand.Read(b); err != nil {
			return nil, fmt.Errorf("user code: %w", err)
		}
		for i := range b {
			// 256 % 20 != 0, so this is slightly biased; irrelevant for a
			// dev IdP whose codes only need to be unique.
			b[i] = userCodeAlphabet[int(b[i])%len(userCodeAlphabet)]
		}
		uc = string(b)
		if _, taken := p.byUser[uc]; !taken {
			break
		}
	}
	g := &deviceGrant{deviceCode: b64(dc), userCode: uc, expires: now.Add(p.codeTTL)}
	p.devices[g.deviceCode] = g
	p.byUser[uc] = g
	return g, nil
}

// pruneLocked forgets grants long past their expiry. Expired grants are kept
// for one more TTL so a late poll still gets "expired_token" rather than
// "invalid_grant".
func (p *IdP) pruneLocked(now time.Time) {
	for _, g := range p.devices {
		if now.After(g.expires.Add(p.codeTTL)) {
			p.removeLocked(g) // deleting during range is well defined in Go
		}
	}
}

func (p *IdP) removeLocked(g *deviceGrant) {
	delete(p.devices, g.deviceCode)
	delete(p.byUser, g.userCode)
}

// normaliseUserCode accepts what people type: any case, with or without the
// dash or spaces.
func normaliseUserCode(s string) string {
	s = strings.ToUpper(s)
	return strings.Map(func(r rune) rune {
		if r == '-' || r == ' ' {
			return -1
		}
		return r
	}, s)
}

// displayUserCode formats a normalised user code as XXXX-XXXX.
func displayUserCode(uc string) string {
	if len(uc) != 8 {
		return uc
	}
	return uc[:4] + "-" + uc[4:]
}

// ApproveDevice approves the pending device authorization with the given
// user code (as displayed, e.g. "BCDF-GHJK"; case and dash do not matter)
// for the configured user sub. The polling client then receives an ID token
// for that user. Tests use it instead of the /device page.
func (p *IdP) ApproveDevice(userCode, sub string) error {
	u, ok := p.users[sub]
	if !ok {
		return fmt.Errorf("devidp: no dev user with sub %q", sub)
	}
	g, err := p.pendingGrant(userCode, stateApproved, sub)
	if err != nil {
		return err
	}
	p.log.Info().Str("user_code", displayUserCode(g.userCode)).Str("sub", u.Sub).Msg("device authorization approved")
	return nil
}

// DenyDevice denies the pending device authorization with the given user
// code; the polling client receives "access_denied".
func (p *IdP) DenyDevice(userCode string) error {
	g, err := p.pendingGrant(userCode, stateDenied, "")
	if err != nil {
		return err
	}
	p.log.Info().Str("user_code", displayUserCode(g.userCode)).Msg("device authorization denied")
	return nil
}

// pendingGrant moves a pending grant to state.
func (p *IdP) pendingGrant(userCode string, state grantState, sub string) (*deviceGrant, error) {
	uc := normaliseUserCode(userCode)
	if uc == "" {
		return nil, errors.New("devidp: user code is empty")
	}
	now := p.now()
	p.mu.Lock()
	defer p.mu.Unlock()
	g, ok := p.byUser[uc]
	if !ok {
		return nil, fmt.Errorf("devidp: unknown user code %q", displayUserCode(uc))
	}
	if now.After(g.expires) {
		return nil, fmt.Errorf("devidp: user code %q expired at %s", displayUserCode(uc), g.expires.UTC().Format(time.RFC3339))
	}
	if g.state != statePending {
		return nil, fmt.Errorf("devidp: user code %q was already approved or denied", displayUserCode(uc))
	}
	g.state = state
	g.sub = sub
	return g, nil
}

// pollResult is what a /token poll for a device code yields.
type pollResult struct {
	errCode string // RFC 8628 §3.5 error, "" on success
	desc    string
	user    User
}

// poll implements the device_code grant's state machine for one poll.
func (p *IdP) poll(deviceCode string) pollResult {
	now := p.now()
	p.mu.Lock()
	defer p.mu.Unlock()
	g, ok := p.devices[deviceCode]
	if !ok {
		return pollResult{errCode: "invalid_grant", desc: "unknown or already used device_code"}
	}
	if now.After(g.expires) {
		p.removeLocked(g)
		return pollResult{errCode: "expired_token", desc: "the device code expired before it was approved; start again"}
	}
	switch g.state {
	case stateDenied:
		p.removeLocked(g)
		return pollResult{errCode: "access_denied", desc: "the user denied the request"}
	case stateApproved:
		// Device codes are single use (RFC 8628 §3.5 / RFC 6749 §4.1.2).
		p.removeLocked(g)
		return pollResult{user: p.users[g.sub]}
	}
	// Half the interval, not the full one: a client that polls on a ticker
	// sees network jitter, and answering slow_down to an honest client adds
	// 5s to its every later poll.
	if !g.lastPoll.IsZero() && now.Sub(g.lastPoll) < p.interval/2 {
		g.lastPoll = now
		return pollResult{errCode: "slow_down", desc: fmt.Sprintf("poll at most every %s", p.interval)}
	}
	g.lastPoll = now
	return pollResult{errCode: "authorization_pending", desc: "waiting for the user to approve at " + p.issuer + "/device"}
}
