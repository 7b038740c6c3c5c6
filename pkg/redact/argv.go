package redact

import (
	"slices"
	"strings"
)

// maxDepth bounds how deep command lines nest (sh -c "su -c 'mysql …'").
// Deeper text is still read by the content rules.
const maxDepth = 4

// pass is one pass of the rules over an argument vector.
type pass struct {
	c       *config
	args    []string
	owned   bool // args is this pass's copy
	changed bool
	depth   int
	// bundled records the one-letter flags seen in the current program's
	// bundles (htpasswd's -b).
	bundled [128]bool
	// scripts marks the arguments that are command lines: NAME=value at
	// their start is an assignment in the script, not the whole argument.
	scripts []bool
}

// script redacts argument i as a command line and marks it as one.
func (p *pass) script(i int) {
	p.markScript(i)
	p.set(i, p.c.commandLine(p.arg(i), p.depth+1))
}

func (p *pass) markScript(i int) {
	if p.scripts == nil {
		p.scripts = make([]bool, len(p.args))
	}
	p.scripts[i] = true
}

func (p *pass) isScript(i int) bool { return p.scripts != nil && p.scripts[i] }

func (p *pass) arg(i int) string { return p.args[i] }

// set replaces argument i, copying the vector on the first change.
func (p *pass) set(i int, v string) {
	if p.args[i] == v {
		return
	}
	if !p.owned {
		p.args, p.owned = slices.Clone(p.args), true
	}
	p.args[i], p.changed = v, true
}

// wholeAt replaces argument i with a marker unless it is one.
func (p *pass) wholeAt(i int, kind string) { p.set(i, whole(nil, p.arg(i), kind, 0)) }

// segment is the part of a vector that belongs to one program: argv[0]'s,
// or that of a program a wrapper runs (sudo -u x env A=b mysql …).
type segment struct {
	builtin, added *client
	ops            []int
	// script: the next operand is a shell's command line (sh -c).
	script bool
	// endOfOptions: "--" was seen; what follows are operands.
	endOfOptions bool
}

func (s *segment) saw(op string, p *pass) bool {
	for _, i := range s.ops {
		if p.arg(i) == op {
			return true
		}
	}
	return false
}

// argv runs one pass over args and reports whether anything changed.
func (c *config) argv(binary string, args []string, depth int) ([]string, bool) {
	if len(args) == 0 {
		return args, false
	}
	p := &pass{c: c, args: args, depth: depth}
	seg := p.start(baseName(args[0]))
	if seg.builtin == nil && seg.added == nil && binary != "" {
		seg = p.start(baseName(binary))
	}
	for i := 1; i < len(p.args); i++ {
		a := p.arg(i)
		if !seg.endOfOptions {
			if next := p.option(i, &seg); next != 0 {
				i += next - 1
				continue
			}
			if a == "--" {
				seg.endOfOptions = true
				continue
			}
			if len(a) > 1 && a[0] == '-' {
				continue
			}
		}
		switch {
		case seg.script:
			seg.script = false
			p.script(i)
		case isProgram(a) && p.known(baseName(a)):
			p.finish(&seg)
			seg = p.start(baseName(a))
		case seg.builtin != nil && seg.builtin.remote && strings.ContainsAny(a, " \t\n;|&"):
			p.script(i)
		default:
			seg.ops = append(seg.ops, i)
		}
	}
	p.finish(&seg)
	for i := range p.args {
		p.set(i, c.content(p.arg(i), !p.isScript(i), depth))
	}
	return p.args, p.changed
}

// isProgram reports whether an operand can name a program to run: a bare
// name, or a path into a bin directory (/usr/bin/mysql, not the file
// /etc/htpasswd).
func isProgram(a string) bool {
	if a == "" || strings.ContainsAny(a, " \t\n=:@") {
		return false
	}
	i := strings.LastIndexByte(a, '/')
	if i < 0 {
		return true
	}
	return strings.HasSuffix(a[:i], "bin")
}

func (p *pass) known(name string) bool {
	b, a := p.c.client(name)
	return b != nil || a != nil
}

func (p *pass) start(name string) segment {
	p.bundled = [128]bool{}
	b, a := p.c.client(name)
	return segment{builtin: b, added: a}
}

func (p *pass) finish(s *segment) {
	if s.builtin != nil && s.builtin.operands != nil {
		s.builtin.operands(p, s.ops)
	}
}

// option reads argument i as an option of the current program. It returns
// how many arguments it used (1, or 2 with a separate value), or 0 when
// argument i is not an option.
func (p *pass) option(i int, s *segment) int {
	a := p.arg(i)
	for _, cl := range []*client{s.added, s.builtin} {
		if cl == nil {
			continue
		}
		for k := range cl.opts {
			if n := p.match(i, a, &cl.opts[k], s); n != 0 {
				return n
			}
		}
	}
	if len(a) < 2 || a[0] != '-' || a == "--" {
		return 0
	}
	if cl := s.builtin; cl != nil {
		if cl.shell {
			return p.shellOption(i, a, s)
		}
		if cl.bundle != "" && a[1] != '-' {
			if n := p.bundle(i, a, cl, s); n != 0 {
				return n
			}
		}
		name, _, _ := strings.Cut(a, "=")
		if slices.Contains(cl.switches, name) {
			return 1
		}
	}
	return p.secretFlag(i, a)
}

// rewriter returns how option o rewrites its value.
func rewriter(o *option) func(*config, string, string, int) string {
	switch {
	case o.value != nil:
		return o.value
	case o.script:
		return commandValue
	}
	return whole
}

// match applies option o to argument i if it is that option.
func (p *pass) match(i int, a string, o *option, s *segment) int {
	if o.after != "" && !s.saw(o.after, p) {
		return 0
	}
	f := o.flag
	rewrite := rewriter(o)
	apply := func(j int, prefix, v string) {
		if o.script && prefix == "" {
			p.markScript(j)
		}
		if v != "" && !IsMarker(v) {
			p.set(j, prefix+rewrite(p.c, v, o.kind, p.depth))
		}
	}
	name, v, hasValue := strings.Cut(a, "=")
	isFlag := name == f
	if !isFlag && o.abbrev > 0 && strings.HasPrefix(f, "--") && strings.HasPrefix(name, "--") &&
		len(name)-2 >= o.abbrev && strings.HasPrefix(f, name) {
		isFlag = true
	}
	switch {
	case strings.HasSuffix(f, ":") || strings.HasSuffix(f, "="):
		if o.attached && strings.HasPrefix(a, f) {
			apply(i, f, a[len(f):])
			return 1
		}
	case len(f) == 2 && f[0] == '-':
		switch {
		case a == f && o.separate:
			if i+1 < len(p.args) {
				apply(i+1, "", p.arg(i+1))
				return 2
			}
			return 1
		case a == f:
			return 1
		case o.attached && strings.HasPrefix(a, f):
			apply(i, f, a[2:])
			return 1
		}
	case isFlag && hasValue:
		if o.attached {
			apply(i, name+"=", v)
		}
		return 1
	case isFlag:
		if o.separate && i+1 < len(p.args) {
			apply(i+1, "", p.arg(i+1))
			return 2
		}
		return 1
	}
	return 0
}

// bundle reads a bundle of one-letter flags (-sSu, -vpSECRET) the way the
// program does: letters that take no value, then at most one that does,
// whose value is the rest of the argument or the next one.
func (p *pass) bundle(i int, a string, cl *client, s *segment) int {
	for j := 1; j < len(a); j++ {
		ch := a[j]
		if ch < 128 && strings.IndexByte(cl.bundle, ch) >= 0 {
			p.bundled[ch] = true
			continue
		}
		for k := range cl.opts {
			o := &cl.opts[k]
			if len(o.flag) != 2 || o.flag[0] != '-' || o.flag[1] != ch || o.after != "" && !s.saw(o.after, p) {
				continue
			}
			rewrite := rewriter(o)
			rest := a[j+1:]
			switch {
			case rest != "" && o.attached:
				if !IsMarker(rest) {
					p.set(i, a[:j+1]+rewrite(p.c, rest, o.kind, p.depth))
				}
				return 1
			case rest == "" && o.separate && i+1 < len(p.args):
				if o.script {
					p.markScript(i + 1)
				}
				if v := p.arg(i + 1); v != "" && !IsMarker(v) {
					p.set(i+1, rewrite(p.c, v, o.kind, p.depth))
				}
				return 2
			}
			return 1
		}
		if ch < 128 && strings.IndexByte(cl.bundleValue, ch) >= 0 {
			if j+1 == len(a) && i+1 < len(p.args) {
				return 2 // -u root: root is -u's
			}
			return 1
		}
		return 0
	}
	return 1
}

// shellOption reads a shell's options: -c (alone or bundled, -ec) makes
// the first operand a command line; -o and -O take a value.
func (p *pass) shellOption(i int, a string, s *segment) int {
	switch a {
	case "-o", "-O", "+o", "+O", "--rcfile", "--init-file":
		if i+1 < len(p.args) {
			return 2
		}
		return 1
	}
	if a[1] != '-' && strings.IndexByte(a, 'c') > 0 {
		s.script = true
	}
	return 1
}

// singleDashSecret are the names a single-dash flag may have for the
// generic rule (Go's flag package, Java tools: -password, -token).
var singleDashSecret = []string{"password", "passwd", "pass", "pwd", "token", "secret", "apikey", "passphrase"}

// secretFlag is the generic rule: a flag whose name says it holds a
// secret has its value redacted, as --flag=value and as --flag value.
func (p *pass) secretFlag(i int, a string) int {
	if !p.c.on(ruleFlags) {
		return 0
	}
	name, v, hasValue := strings.Cut(a, "=")
	bare := strings.TrimLeft(name, "-")
	if len(name)-len(bare) > 2 || bare == "" {
		return 0
	}
	if name[1] != '-' {
		// -password, -client-secret; not a bundle like -pMySecret.
		if len(bare) < 3 || !slices.Contains(singleDashSecret, strings.ToLower(bare)) && !strings.ContainsAny(bare, "-_.") {
			return 0
		}
	}
	kind, ok := secretName(bare)
	if !ok {
		return 0
	}
	if hasValue {
		if v != "" && !IsMarker(v) {
			p.set(i, name+"="+Marker(kind))
		}
		return 1
	}
	if i+1 >= len(p.args) {
		return 1
	}
	next := p.arg(i + 1)
	// A value never looks like a long option; a switch the rule took for
	// a secret flag is followed by one (--password-reset --force).
	if strings.HasPrefix(next, "--") && len(next) > 2 && isLetter(next[2]) {
		return 1
	}
	p.wholeAt(i+1, kind)
	return 2
}

func isLetter(c byte) bool { return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' }
