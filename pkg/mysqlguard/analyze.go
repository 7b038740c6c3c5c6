// Package mysqlguard analyses MySQL and MariaDB statements with a MySQL
// grammar (TiDB's parser, github.com/pingcap/tidb/pkg/parser) and turns
// them into guard.Requests, as package sqlguard does for PostgreSQL. The
// parser reads the text the server will run: executable comments are
// code, comments the server skips are comments, and strings follow the
// session's sql_mode. A text the parser does not accept is an error, which
// the caller must refuse: the server might read it differently.
package mysqlguard

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"

	"github.com/pingcap/tidb/pkg/parser"
	"github.com/pingcap/tidb/pkg/parser/ast"
	pmysql "github.com/pingcap/tidb/pkg/parser/mysql"
	_ "github.com/pingcap/tidb/pkg/parser/test_driver" // the parser's value expressions

	"github.com/wardenhq/warden/pkg/guard"
)

// Statement is one analysed statement. Text holds what the client sent and
// may contain sensitive literals: never log or record it; record
// Normalized instead.
type Statement struct {
	// Text is the statement as the parser read it.
	Text string
	// Normalized is Text with every literal replaced by ?, safe to record.
	Normalized string
	// Fingerprint identifies the statement's shape, ignoring literals.
	Fingerprint string
	// Kinds are the statement keywords (policy statement names) of the
	// statement and of every statement nested in it. Kinds[0] is the
	// top-level one.
	Kinds []string
	// Tables are the tables named anywhere, as "name" or "schema.name",
	// lower case.
	Tables []string
	// Functions are the functions called anywhere, lower case,
	// schema-qualified when written so; a CALL's procedure; and the
	// pseudo-functions into_outfile and into_dumpfile for SELECT ... INTO
	// OUTFILE / DUMPFILE, which write files on the server.
	Functions []string
	// Columns are the column names referenced anywhere, lower case and
	// unqualified: masking uses them to tell whether an expression in
	// the results may compute from a masked column.
	Columns []string
	// Outputs, when not nil, holds for each result column of a plain
	// SELECT (one without WITH or derived tables, whose result columns
	// are its select list in order) the column names its expression
	// reads. nil when the result's columns cannot be told apart this way:
	// then any expression may compute from any column the statement
	// reads.
	Outputs [][]string
	// NoWhere is set when an UPDATE or DELETE anywhere has no WHERE.
	NoWhere bool
	// LocalInfile is LOAD DATA LOCAL INFILE: the server asks the client
	// for a file, which the client reads on the bastion.
	LocalInfile bool
	// PrepareFromVariable is PREPARE ... FROM @var: a text Warden never
	// sees.
	PrepareFromVariable bool
	// ChangesLexing is set for a SET of sql_mode, of the client character
	// set (SET NAMES, SET CHARACTER SET) or of a variable Warden cannot
	// name: after it, how the server reads a text may have changed.
	ChangesLexing bool
	// Kill is set for KILL [QUERY|CONNECTION] id.
	Kill *Kill
	// UseDB is the database a USE statement switches to.
	UseDB string
}

// Kill is a KILL statement's target.
type Kill struct {
	ID    uint64
	Query bool // KILL QUERY: the statement only, not the connection
}

// Kind returns the top-level statement keyword.
func (s *Statement) Kind() string {
	if len(s.Kinds) == 0 {
		return ""
	}
	return s.Kinds[0]
}

// Request returns the statement in the terms rules are written in.
func (s *Statement) Request() guard.Request {
	return guard.Request{Kinds: s.Kinds, Tables: s.Tables, Functions: s.Functions, NoWhere: s.NoWhere, Text: s.Normalized}
}

// Requests returns the requests of a batch, in order.
func Requests(stmts []*Statement) []guard.Request {
	reqs := make([]guard.Request, len(stmts))
	for i, s := range stmts {
		reqs[i] = s.Request()
	}
	return reqs
}

// ParseError is a text the parser does not accept, or cannot read as the
// server would. Its message points into the user's own text: it may go
// back to the user, never into a record.
type ParseError struct{ Msg string }

func (e *ParseError) Error() string { return e.Msg }

// Analyze parses sql, which may hold several statements, under lx and
// analyses each. An empty text (or one of comments only) yields none.
//
// With the session's sql_mode unknown, a text that could read differently
// under NO_BACKSLASH_ESCAPES or ANSI_QUOTES (one with a backslash or a
// double quote) is parsed under each, and refused unless all agree.
func Analyze(sql string, lx Lexing) ([]*Statement, error) {
	if lx.Unsupported != "" {
		return nil, &ParseError{Msg: "the session's sql_mode " + lx.Unsupported + " makes the server read another grammar than the one Warden checks with"}
	}
	if reason := Misread(sql, lx); reason != "" {
		return nil, &ParseError{Msg: reason}
	}
	if strings.IndexByte(sql, 0) >= 0 {
		// Servers and parsers differ on where a NUL ends a text; clients
		// escape NULs in strings as \0.
		return nil, &ParseError{Msg: "the text holds a NUL byte; write it as \\0 in a string"}
	}
	stmts, err := analyzeModes(sql, lx)
	if err != nil {
		return nil, err
	}
	// The server parses a text one statement at a time, each after the
	// one before has run: a statement that may change how it reads text
	// must be the last, or what follows it is read under a setting this
	// analysis did not use.
	for _, s := range stmts[:max(len(stmts)-1, 0)] {
		if s.ChangesLexing || s.Kind() == "execute" {
			return nil, &ParseError{Msg: strings.ToUpper(s.Kind()) + " that may change sql_mode or the character set must end its text: the server reads what follows under the new setting; send the rest separately"}
		}
	}
	return stmts, nil
}

// analyzeModes is Analyze under the session's sql_mode, or, when it is
// unknown, under every mode that could read the text otherwise.
func analyzeModes(sql string, lx Lexing) ([]*Statement, error) {
	if lx.ModeKnown || !strings.ContainsAny(sql, `\"`) {
		return analyzeIn(sql, lx.NoBackslashEscapes, lx.ANSIQuotes, lx.Server)
	}
	first, err := analyzeIn(sql, false, false, lx.Server)
	if err != nil {
		return nil, err
	}
	for _, m := range [][2]bool{{true, false}, {false, true}, {true, true}} {
		other, err := analyzeIn(sql, m[0], m[1], lx.Server)
		if err != nil || !sameAnalysis(first, other) {
			return nil, &ParseError{Msg: "the text reads differently with and without sql_mode NO_BACKSLASH_ESCAPES or ANSI_QUOTES, and Warden does not know the session's sql_mode"}
		}
	}
	return first, nil
}

func sameAnalysis(a, b []*Statement) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, y := *a[i], *b[i]
		x.Text, y.Text, x.Normalized, y.Normalized, x.Fingerprint, y.Fingerprint = "", "", "", "", "", ""
		if !reflect.DeepEqual(x, y) {
			return false
		}
	}
	return true
}

func analyzeIn(sql string, noBackslash, ansi bool, srv Server) (stmts []*Statement, err error) {
	defer func() {
		// The parser is generated code reading hostile input: a panic
		// in it refuses the text rather than the agent.
		if r := recover(); r != nil {
			stmts, err = nil, &ParseError{Msg: fmt.Sprintf("the parser failed on it (%v)", r)}
		}
	}()
	text, reason := prepare(sql, noBackslash, ansi, srv)
	if reason != "" {
		return nil, &ParseError{Msg: "the text has " + reason}
	}
	p := parser.New()
	var mode pmysql.SQLMode
	if noBackslash {
		mode |= pmysql.ModeNoBackslashEscapes
	}
	if ansi {
		mode |= pmysql.ModeANSIQuotes
	}
	p.SetSQLMode(mode)
	nodes, _, err := p.Parse(text, "", "")
	if err != nil {
		return nil, &ParseError{Msg: parseMessage(err)}
	}
	// Normalizing lexes in the default mode; a text that mode would
	// split otherwise gets a normalized text of its keyword alone, so no
	// literal leaks into a record.
	exotic := (noBackslash || ansi) && strings.ContainsAny(text, `\"`)
	stmts = make([]*Statement, 0, len(nodes))
	for _, n := range nodes {
		s := &Statement{Text: strings.TrimSpace(n.Text())}
		a := analyzer{s: s, lex: lexArgs{noBackslash, ansi, srv}}
		if err := a.statement(n); err != nil {
			return nil, err
		}
		if exotic {
			s.Normalized = strings.ToUpper(s.Kind()) + " (text withheld: it reads differently in the default sql_mode)"
		} else {
			s.Normalized = strings.TrimSuffix(strings.TrimSpace(parser.Normalize(s.Text, "ON")), " ;")
		}
		s.Fingerprint = parser.DigestNormalized(s.Normalized).String()
		stmts = append(stmts, s)
	}
	return stmts, nil
}

// parseMessage shortens the parser's error to its first line.
func parseMessage(err error) string {
	msg := err.Error()
	if i := strings.IndexByte(msg, '\n'); i >= 0 {
		msg = msg[:i]
	}
	return "the MySQL grammar Warden checks with does not accept it: " + msg
}

type lexArgs struct {
	noBackslash, ansi bool
	srv               Server
}

// analyzer fills one Statement from its tree.
type analyzer struct {
	s     *Statement
	lex   lexArgs
	err   error
	depth int
}

func (a *analyzer) statement(n ast.StmtNode) error {
	a.addKind(n)
	n.Accept(a)
	if sel, ok := n.(*ast.SelectStmt); ok {
		a.s.Outputs = outputs(sel)
	}
	return a.err
}

// outputs returns the column names each select-list expression reads, or
// nil when the statement is not a plain SELECT (see Statement.Outputs).
func outputs(sel *ast.SelectStmt) [][]string {
	if sel.With != nil || sel.Fields == nil || !plainSources(sel.From) {
		return nil
	}
	out := make([][]string, 0, len(sel.Fields.Fields))
	for _, f := range sel.Fields.Fields {
		if f.WildCard != nil || f.Expr == nil {
			return nil
		}
		c := &columnCollector{}
		f.Expr.Accept(c)
		out = append(out, c.names)
	}
	return out
}

// plainSources reports whether a FROM clause reads base tables (or views)
// only, so no result column is renamed on the way.
func plainSources(from *ast.TableRefsClause) bool {
	if from == nil || from.TableRefs == nil {
		return true
	}
	var ok func(n ast.ResultSetNode) bool
	ok = func(n ast.ResultSetNode) bool {
		switch x := n.(type) {
		case nil:
			return true
		case *ast.Join:
			return ok(x.Left) && ok(x.Right)
		case *ast.TableSource:
			_, table := x.Source.(*ast.TableName)
			return table
		}
		return false
	}
	return ok(from.TableRefs)
}

// columnCollector gathers the column names an expression reads,
// subqueries included.
type columnCollector struct{ names []string }

func (c *columnCollector) Enter(n ast.Node) (ast.Node, bool) {
	if x, ok := n.(*ast.ColumnName); ok {
		addName(&c.names, x.Name.O)
	}
	return n, false
}

func (c *columnCollector) Leave(n ast.Node) (ast.Node, bool) { return n, true }

func (a *analyzer) addKind(n ast.Node) {
	k := kindOf(n)
	if k != "" && !slices.Contains(a.s.Kinds, k) {
		a.s.Kinds = append(a.s.Kinds, k)
	}
}

func addName(list *[]string, name string) {
	name = strings.ToLower(name)
	if name != "" && !slices.Contains(*list, name) {
		*list = append(*list, name)
	}
}

func qualified(schema, name string) string {
	if schema != "" {
		return schema + "." + name
	}
	return name
}

// Enter implements ast.Visitor.
func (a *analyzer) Enter(n ast.Node) (ast.Node, bool) {
	if _, ok := n.(ast.StmtNode); ok {
		a.addKind(n)
	}
	switch x := n.(type) {
	case *ast.TableName:
		addName(&a.s.Tables, qualified(x.Schema.O, x.Name.O))
	case *ast.ColumnName:
		addName(&a.s.Columns, x.Name.O)
	case *ast.FuncCallExpr:
		addName(&a.s.Functions, qualified(x.Schema.O, x.FnName.O))
	case *ast.AggregateFuncExpr:
		addName(&a.s.Functions, x.F)
	case *ast.WindowFuncExpr:
		addName(&a.s.Functions, x.Name)
	case *ast.CallStmt:
		if x.Procedure != nil {
			addName(&a.s.Functions, qualified(x.Procedure.Schema.O, x.Procedure.FnName.O))
		}
	case *ast.SelectStmt:
		if o := x.SelectIntoOpt; o != nil {
			switch o.Tp {
			case ast.SelectIntoOutfile:
				addName(&a.s.Functions, "into_outfile")
			case ast.SelectIntoDumpfile:
				addName(&a.s.Functions, "into_dumpfile")
			}
		}
	case *ast.UpdateStmt:
		if x.Where == nil {
			a.s.NoWhere = true
		}
	case *ast.DeleteStmt:
		if x.Where == nil {
			a.s.NoWhere = true
		}
	case *ast.LoadDataStmt:
		if x.FileLocRef == ast.FileLocClient {
			a.s.LocalInfile = true
		}
	case *ast.KillStmt:
		a.s.Kill = &Kill{ID: x.ConnectionID, Query: x.Query}
	case *ast.UseStmt:
		a.s.UseDB = x.DBName
	case *ast.SetStmt:
		for _, v := range x.Variables {
			switch strings.ToLower(v.Name) {
			case "sql_mode", "character_set_client", strings.ToLower(ast.SetNames), strings.ToLower(ast.SetCharset):
				a.s.ChangesLexing = true
			}
		}
	case *ast.PrepareStmt:
		if x.SQLVar != nil || x.SQLText == "" {
			a.s.PrepareFromVariable = true
			break
		}
		if a.depth > 3 {
			a.err = &ParseError{Msg: "PREPARE nested too deep"}
			break
		}
		inner, err := analyzeIn(x.SQLText, a.lex.noBackslash, a.lex.ansi, a.lex.srv)
		if err != nil {
			var pe *ParseError
			if errors.As(err, &pe) {
				a.err = &ParseError{Msg: "the text PREPARE names: " + pe.Msg}
			} else {
				a.err = err
			}
			break
		}
		for _, in := range inner {
			a.merge(in)
		}
	}
	return n, false
}

// merge adds what a statement nested in a PREPARE does.
func (a *analyzer) merge(in *Statement) {
	for _, k := range in.Kinds {
		if !slices.Contains(a.s.Kinds, k) {
			a.s.Kinds = append(a.s.Kinds, k)
		}
	}
	for _, t := range in.Tables {
		addName(&a.s.Tables, t)
	}
	for _, f := range in.Functions {
		addName(&a.s.Functions, f)
	}
	for _, c := range in.Columns {
		addName(&a.s.Columns, c)
	}
	a.s.NoWhere = a.s.NoWhere || in.NoWhere
	a.s.LocalInfile = a.s.LocalInfile || in.LocalInfile
	a.s.PrepareFromVariable = a.s.PrepareFromVariable || in.PrepareFromVariable
	a.s.ChangesLexing = a.s.ChangesLexing || in.ChangesLexing
	if in.Kill != nil {
		// A prepared KILL would run later, past the check of its id.
		a.err = &ParseError{Msg: "KILL cannot be prepared through Warden; send it as a statement"}
	}
}

// Leave implements ast.Visitor.
func (a *analyzer) Leave(n ast.Node) (ast.Node, bool) { return n, true }

// kindOf is a statement node's policy keyword, "" for other nodes.
func kindOf(n ast.Node) string {
	switch x := n.(type) {
	case *ast.SelectStmt, *ast.SetOprStmt:
		return "select"
	case *ast.InsertStmt:
		if x.IsReplace {
			return "replace"
		}
		return "insert"
	case *ast.UpdateStmt:
		return "update"
	case *ast.DeleteStmt:
		return "delete"
	case *ast.LoadDataStmt:
		return "load"
	case *ast.CallStmt:
		return "call"
	case *ast.TruncateTableStmt:
		return "truncate"
	case *ast.RenameTableStmt:
		return "rename"
	case *ast.BeginStmt:
		return "begin"
	case *ast.CommitStmt:
		return "commit"
	case *ast.RollbackStmt:
		return "rollback"
	case *ast.SavepointStmt:
		return "savepoint"
	case *ast.ReleaseSavepointStmt:
		return "release"
	case *ast.UseStmt:
		return "use"
	case *ast.KillStmt:
		return "kill"
	case *ast.DoStmt:
		return "do"
	case *ast.ExplainStmt, *ast.ExplainForStmt:
		return "explain"
	case *ast.PrepareStmt:
		return "prepare"
	case *ast.ExecuteStmt:
		return "execute"
	case *ast.DeallocateStmt:
		return "deallocate"
	case *ast.ShowStmt:
		return "show"
	case *ast.LockTablesStmt:
		return "lock"
	case *ast.UnlockTablesStmt:
		return "unlock"
	case *ast.AnalyzeTableStmt:
		return "analyze"
	case *ast.FlushStmt:
		return "flush"
	case *ast.ShutdownStmt:
		return "shutdown"
	case *ast.GrantStmt, *ast.GrantRoleStmt, *ast.GrantProxyStmt:
		return "grant"
	case *ast.RevokeStmt, *ast.RevokeRoleStmt:
		return "revoke"
	}
	if _, ok := n.(ast.StmtNode); !ok {
		return ""
	}
	// Everything else by the verb its type name starts with:
	// CreateTableStmt is create, AlterUserStmt alter, SetPwdStmt set.
	name := reflect.TypeOf(n).Elem().Name()
	for _, verb := range []string{"Create", "Alter", "Drop", "Set", "Show", "Grant", "Revoke", "Flush", "Lock", "Unlock",
		"Analyze", "Optimize", "Repair", "Check", "Checksum", "Install", "Uninstall", "Load", "Import", "Rename"} {
		if strings.HasPrefix(name, verb) {
			return strings.ToLower(verb)
		}
	}
	return strings.ToLower(strings.TrimSuffix(name, "Stmt"))
}

// String describes a statement for tests and debugging, without literals.
func (s *Statement) String() string {
	return fmt.Sprintf("%s tables=%v functions=%v nowhere=%v", s.Kind(), s.Tables, s.Functions, s.NoWhere)
}
