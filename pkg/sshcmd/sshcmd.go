// Package sshcmd finds every program an SSH exec request would run. The
// server hands the request's command line to the account's login shell
// (`$SHELL -c LINE`), so the line is a shell program, not a program name:
// "true; rm -rf /tmp/x" runs rm. Programs parses it with a real shell
// parser (mvdan.cc/sh, bash dialect) and walks everything the shell would
// execute: pipelines, lists, subshells, functions, command and process
// substitutions, and the scripts handed to sh -c, bash -c and eval, or
// fed to a shell's stdin by a here-document, a here-string or echo. It
// looks through the wrappers that run another program (sudo, env, nice,
// xargs, ...), and reduces absolute paths to program names.
//
// A line the parser rejects, or whose program names are only known at run
// time ($CMD, $(…) in the command position, globs, brace expansion), is an
// error: a guardrail that cannot tell what runs must refuse, not guess.
package sshcmd

import (
	"errors"
	"fmt"
	"path"
	"slices"
	"strings"

	"mvdan.cc/sh/v3/syntax"
)

// MaxDepth bounds how deeply sh -c / eval scripts may nest in one another.
// Each level is parsed afresh, so without a bound a crafted line could
// make the agent parse exponentially.
const MaxDepth = 8

// MaxLen bounds the command line Programs accepts. sshd itself takes far
// longer lines, but a guardrail does not need to parse a megabyte.
const MaxLen = 256 << 10

// ErrDynamic marks a line whose programs are only known when it runs.
var ErrDynamic = errors.New("program name computed at run time")

// Programs returns the programs line would run, in the order found,
// without duplicates, each as the last element of its path ("/bin/rm" is
// "rm"). Wrappers are listed too ("sudo", then what it runs), so a rule
// may name either. An error means the line must be refused: it does not
// parse, is too long or too deeply nested, or names a program that only
// exists at run time (errors.Is(err, ErrDynamic)).
func Programs(line string) ([]string, error) {
	if len(line) > MaxLen {
		return nil, fmt.Errorf("command line is %d bytes; at most %d are checked", len(line), MaxLen)
	}
	w := &walker{}
	if err := w.script(line, 0); err != nil {
		return nil, err
	}
	return w.progs, nil
}

type walker struct {
	progs []string
	err   error
}

func (w *walker) add(p string) {
	if !slices.Contains(w.progs, p) {
		w.progs = append(w.progs, p)
	}
}

// script parses src as a shell program and walks it.
func (w *walker) script(src string, depth int) error {
	if depth > MaxDepth {
		return fmt.Errorf("scripts nested more than %d deep (sh -c, eval)", MaxDepth)
	}
	f, err := syntax.NewParser(syntax.Variant(syntax.LangBash)).Parse(strings.NewReader(src), "")
	if err != nil {
		return fmt.Errorf("parse command line: %w", err)
	}
	syntax.Walk(f, func(n syntax.Node) bool {
		if w.err != nil {
			return false
		}
		switch n := n.(type) {
		case *syntax.Stmt:
			// Every simple command is a statement's; its redirections
			// tell what a shell reading stdin reads (<<EOF, <<<).
			if c, ok := n.Cmd.(*syntax.CallExpr); ok {
				w.err = w.call(c.Args, stdinScript(n.Redirs), depth)
			}
		case *syntax.BinaryCmd:
			// echo 'script' | sh: the shell reads what echo prints.
			if n.Op == syntax.Pipe {
				w.err = w.pipeIntoShell(n, depth)
			}
		case *syntax.DeclClause:
			// declare/export/local/readonly/typeset: builtins, but
			// their name is a program a rule may name too.
			w.add(n.Variant.Value)
		case *syntax.CoprocClause:
			// Walked into: its Stmt holds the command.
		case *syntax.TestDecl:
			// bats's @test: not bash, refused rather than guessed.
			w.err = fmt.Errorf("parse command line: unsupported @test")
		}
		return w.err == nil
	})
	return w.err
}

// call handles one simple command: its program, and whatever program it
// runs in turn. Assignments (VAR=x cmd) are not programs; their values,
// like every other word, are walked by syntax.Walk for substitutions.
func (w *walker) call(args []*syntax.Word, stdin *syntax.Word, depth int) error {
	for len(args) > 0 {
		name, ok := literal(args[0])
		if !ok {
			return fmt.Errorf("%w: %q", ErrDynamic, wordText(args[0]))
		}
		if name == "" {
			// "" runs nothing ("command not found"), and neither does
			// the rest of the line after it.
			return nil
		}
		prog := path.Base(name)
		if strings.HasSuffix(name, "/") {
			prog = name
		}
		w.add(prog)
		rest := args[1:]
		switch {
		case shells[prog]:
			return w.shell(rest, stdin, depth)
		case prog == "eval":
			return w.eval(rest, depth)
		case prog == "find":
			return w.find(rest, depth)
		}
		skip, isWrapper := wrappers[prog]
		if !isWrapper {
			return nil
		}
		var err error
		args, err = skip(rest)
		if err != nil {
			return fmt.Errorf("%s: %w", prog, err)
		}
	}
	return nil
}

// shells are the programs whose -c argument is a script.
var shells = map[string]bool{"sh": true, "bash": true, "dash": true, "zsh": true, "ksh": true, "mksh": true, "ash": true, "busybox-sh": true, "rbash": true}

// shell finds -c SCRIPT among a shell's arguments and walks SCRIPT. A
// shell without -c and without a script file reads its program from
// stdin: stdin, when the line shows it (a here-document or here-string),
// is walked too. Otherwise only the shell itself is listed (see
// docs/ssh.md).
func (w *walker) shell(args []*syntax.Word, stdin *syntax.Word, depth int) error {
	for i := 0; i < len(args); i++ {
		s, ok := optionWord(args[i])
		if !ok {
			return fmt.Errorf("%w: shell option %q", ErrDynamic, wordText(args[i]))
		}
		if s == "--" || !strings.HasPrefix(s, "-") && !strings.HasPrefix(s, "+") {
			// A script file: stdin is its data, not its program.
			return nil
		}
		if strings.HasPrefix(s, "-") && !strings.HasPrefix(s, "--") && strings.Contains(s, "c") {
			if i+1 >= len(args) {
				return errors.New("shell -c without a script")
			}
			script, ok := literal(args[i+1])
			if !ok {
				return fmt.Errorf("%w: shell script %q", ErrDynamic, wordText(args[i+1]))
			}
			return w.script(script, depth+1)
		}
		if s == "-o" || s == "+o" || s == "-O" || s == "+O" || s == "--rcfile" || s == "--init-file" {
			i++ // the option's value
		}
	}
	if stdin == nil {
		return nil
	}
	script, ok := heredocLiteral(stdin)
	if !ok {
		return fmt.Errorf("%w: shell script on stdin %q", ErrDynamic, wordText(stdin))
	}
	return w.script(script, depth+1)
}

// stdinScript returns the here-document or here-string a statement feeds
// its stdin, nil when there is none.
func stdinScript(redirs []*syntax.Redirect) *syntax.Word {
	var in *syntax.Word
	for _, r := range redirs {
		if r.N != nil && r.N.Value != "0" {
			continue
		}
		switch r.Op {
		case syntax.Hdoc, syntax.DashHdoc:
			in = r.Hdoc
		case syntax.WordHdoc:
			in = r.Word
		case syntax.RdrIn, syntax.RdrInOut:
			in = nil // a file: unknown content, the shell alone is listed
		}
	}
	return in
}

// pipeIntoShell walks what echo prints into a shell: echo 'rm x' | sh.
// Anything else piped into a shell is unknown content, and only the shell
// is listed.
func (w *walker) pipeIntoShell(b *syntax.BinaryCmd, depth int) error {
	left, ok := b.X.Cmd.(*syntax.CallExpr)
	if !ok || len(left.Args) == 0 {
		return nil
	}
	if name, ok := literal(left.Args[0]); !ok || path.Base(name) != "echo" {
		return nil
	}
	right, ok := b.Y.Cmd.(*syntax.CallExpr)
	if !ok || len(right.Args) == 0 {
		return nil
	}
	name, ok := literal(right.Args[0])
	if !ok || !shells[path.Base(name)] {
		return nil
	}
	for _, a := range right.Args[1:] {
		if s, ok := optionWord(a); !ok || !strings.HasPrefix(s, "-") || strings.Contains(s, "c") && !strings.HasPrefix(s, "--") {
			return nil // a script file or -c: stdin is not the program
		}
	}
	var parts []string
	for _, a := range left.Args[1:] {
		s, ok := literal(a)
		if !ok {
			return fmt.Errorf("%w: echoed into a shell: %q", ErrDynamic, wordText(a))
		}
		if len(parts) == 0 && (s == "-n" || s == "-e" || s == "-E") {
			continue
		}
		parts = append(parts, s)
	}
	return w.script(strings.Join(parts, " "), depth+1)
}

// heredocLiteral returns the text of a here-document or here-string that
// the shell does not expand: plain text, or quoted for a here-string. ok
// is false when it holds parameters or substitutions.
func heredocLiteral(word *syntax.Word) (string, bool) {
	var b strings.Builder
	for _, p := range word.Parts {
		switch p := p.(type) {
		case *syntax.Lit:
			b.WriteString(dquoteLit(p.Value))
		case *syntax.SglQuoted:
			if p.Dollar {
				return "", false
			}
			b.WriteString(p.Value)
		case *syntax.DblQuoted:
			for _, q := range p.Parts {
				l, ok := q.(*syntax.Lit)
				if !ok {
					return "", false
				}
				b.WriteString(dquoteLit(l.Value))
			}
		default:
			return "", false
		}
	}
	return b.String(), true
}

// optionWord is literal for a word scanned as a possible option: a word
// whose leading text is a plain "-..." is an option even if the rest has
// glob or brace characters (xargs -I{}), since only its name matters.
func optionWord(word *syntax.Word) (string, bool) {
	if s, ok := literal(word); ok {
		return s, true
	}
	if word != nil && len(word.Parts) > 0 {
		if l, ok := word.Parts[0].(*syntax.Lit); ok && strings.HasPrefix(l.Value, "-") {
			return l.Value, true
		}
	}
	return "", false
}

// eval joins its arguments with spaces, as the shell does, and walks them
// as a script.
func (w *walker) eval(args []*syntax.Word, depth int) error {
	parts := make([]string, 0, len(args))
	for _, a := range args {
		s, ok := literal(a)
		if !ok {
			return fmt.Errorf("%w: eval argument %q", ErrDynamic, wordText(a))
		}
		parts = append(parts, s)
	}
	if len(parts) == 0 {
		return nil
	}
	return w.script(strings.Join(parts, " "), depth+1)
}

// find runs the program after each -exec, -execdir, -ok and -okdir.
func (w *walker) find(args []*syntax.Word, depth int) error {
	for i, a := range args {
		s, ok := literal(a)
		if !ok || (s != "-exec" && s != "-execdir" && s != "-ok" && s != "-okdir") {
			continue
		}
		end := i + 1
		for end < len(args) {
			t, _ := literal(args[end])
			if t == ";" || t == "+" {
				break
			}
			end++
		}
		if err := w.call(args[i+1:end], nil, depth); err != nil {
			return err
		}
	}
	return nil
}

// skipper returns the words of a wrapper's command line from the program
// it runs on, or none when it runs none.
type skipper func(args []*syntax.Word) ([]*syntax.Word, error)

// wrappers are programs that run the program named in their arguments,
// with how to find it. Options that take a value are named so their value
// is not mistaken for the program.
var wrappers = map[string]skipper{
	"sudo":    options("-u", "-g", "-h", "-p", "-C", "-r", "-t", "-T", "-U", "-D", "-R", "--user", "--group", "--host", "--prompt", "--close-from", "--role", "--type", "--command-timeout", "--other-user", "--chdir", "--chroot"),
	"doas":    options("-u", "-C"),
	"env":     envOptions,
	"nice":    options("-n", "--adjustment"),
	"ionice":  options("-c", "-n", "-p", "-P", "-u", "--class", "--classdata"),
	"nohup":   options(),
	"time":    options("-f", "-o", "--format", "--output"),
	"timeout": positional(1, "-s", "-k", "--signal", "--kill-after"),
	"stdbuf":  options("-i", "-o", "-e", "--input", "--output", "--error"),
	"setsid":  options(),
	"chroot":  positional(1, "--userspec", "--groups"),
	"xargs":   options("-a", "-d", "-E", "-e", "-I", "-i", "-L", "-l", "-n", "-P", "-s", "--arg-file", "--delimiter", "--max-args", "--max-procs", "--max-chars", "--process-slot-var"),
	"exec":    options("-a"),
	"command": options(),
	"builtin": options(),
	"busybox": options(),
	"nsenter": options("-t", "-S", "-G", "--target", "--setuid", "--setgid", "-w", "-r", "--wd", "--root"),
	"unshare": options(),
	"flock":   positional(1, "-w", "-E", "--timeout", "--conflict-exit-code"),
	"watch":   options("-n", "-d", "--interval", "--differences"),
	"strace":  options("-e", "-o", "-p", "-s", "-u", "-E"),
	"ltrace":  options("-e", "-o", "-p", "-s", "-u"),
	"sg":      positional(1),
	"runuser": options("-u", "-g", "-G", "--user", "--group", "--supp-group"),
	"setpriv": options("--reuid", "--regid", "--groups", "--inh-caps", "--bounding-set"),
}

// options skips the wrapper's options (words starting with "-"; those in
// withValue take the next word too) up to "--" or the first other word.
func options(withValue ...string) skipper {
	return positional(0, withValue...)
}

// positional is options, then skips n positional words before the program
// (timeout's duration, chroot's directory).
func positional(n int, withValue ...string) skipper {
	return func(args []*syntax.Word) ([]*syntax.Word, error) {
		i := 0
		for i < len(args) {
			s, ok := optionWord(args[i])
			if !ok {
				return nil, fmt.Errorf("%w: option %q", ErrDynamic, wordText(args[i]))
			}
			if s == "--" {
				i++
				break
			}
			if !strings.HasPrefix(s, "-") || s == "-" {
				break
			}
			i++
			if slices.Contains(withValue, s) {
				i++
			}
		}
		if i+n > len(args) {
			return nil, nil
		}
		return args[i+n:], nil
	}
}

// envOptions skips env's options and NAME=value words.
func envOptions(args []*syntax.Word) ([]*syntax.Word, error) {
	i := 0
	for i < len(args) {
		s, ok := literal(args[i])
		if !ok {
			return nil, fmt.Errorf("%w: argument %q", ErrDynamic, wordText(args[i]))
		}
		switch {
		case s == "--":
			return args[i+1:], nil
		case s == "-u" || s == "--unset" || s == "-C" || s == "--chdir" || s == "-S" || s == "--split-string":
			if s == "-S" || s == "--split-string" {
				// env -S "prog args" splits its value into a command.
				if i+1 < len(args) {
					if v, ok := literal(args[i+1]); ok {
						return wordsOf(v)
					}
					return nil, fmt.Errorf("%w: env -S value", ErrDynamic)
				}
				return nil, nil
			}
			i += 2
		case strings.HasPrefix(s, "-"):
			i++
		case strings.Contains(s, "="):
			i++
		default:
			return args[i:], nil
		}
	}
	return nil, nil
}

// wordsOf parses s as a simple command and returns its words.
func wordsOf(s string) ([]*syntax.Word, error) {
	f, err := syntax.NewParser(syntax.Variant(syntax.LangBash)).Parse(strings.NewReader(s), "")
	if err != nil {
		return nil, fmt.Errorf("parse %q: %w", s, err)
	}
	if len(f.Stmts) != 1 {
		return nil, fmt.Errorf("%w: %q is not one command", ErrDynamic, s)
	}
	c, ok := f.Stmts[0].Cmd.(*syntax.CallExpr)
	if !ok {
		return nil, fmt.Errorf("%w: %q is not a simple command", ErrDynamic, s)
	}
	return c.Args, nil
}

// literal returns the value of a word the shell would not expand: plain
// text, quoted or escaped. ok is false for a word whose value is only
// known at run time: parameters, command and arithmetic substitutions,
// $'…', globs, brace expansion and a leading ~.
func literal(w *syntax.Word) (string, bool) {
	if w == nil {
		return "", false
	}
	var b strings.Builder
	for i, p := range w.Parts {
		switch p := p.(type) {
		case *syntax.Lit:
			v, ok := unquotedLit(p.Value, i == 0)
			if !ok {
				return "", false
			}
			b.WriteString(v)
		case *syntax.SglQuoted:
			if p.Dollar {
				return "", false
			}
			b.WriteString(p.Value)
		case *syntax.DblQuoted:
			if p.Dollar {
				return "", false
			}
			for _, q := range p.Parts {
				l, ok := q.(*syntax.Lit)
				if !ok {
					return "", false
				}
				b.WriteString(dquoteLit(l.Value))
			}
		default:
			return "", false
		}
	}
	return b.String(), true
}

// unquotedLit removes backslash escapes from unquoted text, refusing text
// the shell would expand: glob characters, braces (brace expansion) and a
// leading tilde.
func unquotedLit(s string, first bool) (string, bool) {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\\':
			i++
			if i < len(s) && s[i] != '\n' {
				b.WriteByte(s[i])
			}
		case c == '*' || c == '?' || c == '[' || c == '{' || c == '}':
			return "", false
		case c == '~' && first && i == 0:
			return "", false
		default:
			b.WriteByte(c)
		}
	}
	return b.String(), true
}

// dquoteLit removes the escapes a double-quoted string has: \$ \` \" \\
// and backslash-newline.
func dquoteLit(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+1 < len(s) && strings.IndexByte("$`\"\\\n", s[i+1]) >= 0 {
			i++
			if s[i] != '\n' {
				b.WriteByte(s[i])
			}
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// wordText prints a word as written, for messages.
func wordText(w *syntax.Word) string {
	if w == nil {
		return ""
	}
	var b strings.Builder
	syntax.NewPrinter().Print(&b, w)
	return b.String()
}
