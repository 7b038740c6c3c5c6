// Package sqlguard analyses SQL statements with PostgreSQL's own parser
// (libpg_query, through pg_query_go) and turns them into guard.Requests,
// which package guard matches against the policy's L7 rules. Working on
// the parse tree rather than on the text is what keeps comments, case,
// quoting and statement splitting from slipping past a rule.
package sqlguard

import (
	"container/list"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"

	pg_query "github.com/pganalyze/pg_query_go/v6"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Statement is one analysed SQL statement. Text holds what the client sent
// and may contain sensitive literals: never log or record it; record
// Normalized instead.
type Statement struct {
	// Text is the statement as the client wrote it.
	Text string
	// Normalized is Text with every literal replaced by a $n placeholder,
	// safe to record.
	Normalized string
	// Fingerprint identifies the statement's shape, ignoring literals.
	Fingerprint string
	// Kinds are the statement keywords (policy statement names) of the
	// statement and of every statement nested in it (CTEs, EXPLAIN,
	// PREPARE, CREATE TABLE AS, ...). Kinds[0] is the top-level one.
	Kinds []string
	// Tables are the relations named anywhere in the statement, as
	// "relname" or "schema.relname", after the parser's case folding.
	Tables []string
	// Functions are the functions called anywhere in the statement, lower
	// case, schema-qualified when written so. COPY ... PROGRAM counts as a
	// call of the pseudo-function "copy_program".
	Functions []string
	// NoWhere is set when an UPDATE or DELETE anywhere in the statement
	// has no WHERE clause.
	NoWhere bool
	// Copy describes a COPY statement; nil for anything else.
	Copy *Copy

	root *pg_query.Node
	// targets are the tree's ResTargets, found by the analysis walk and
	// shared by every copy of the statement (see Analyze's cache).
	targets *targetSet
}

// Copy describes a COPY statement.
type Copy struct {
	// ToClient is COPY ... TO STDOUT; FromClient is COPY ... FROM STDIN.
	ToClient, FromClient bool
	// Format is "text", "csv" or "binary".
	Format string
	// Source is a query that yields the copied columns in order: the
	// table (with its column list) or the COPY's own query. It lets the
	// proxy learn the column names before the data flows.
	Source string
	// Header is set when the first row of the output is column names.
	Header bool
	// Simple is false when COPY options other than FORMAT, HEADER and a
	// default NULL are present: text the proxy cannot split into fields
	// reliably.
	Simple bool
}

// Kind returns the top-level statement keyword, or "" when unknown.
func (s *Statement) Kind() string {
	if len(s.Kinds) == 0 {
		return ""
	}
	return s.Kinds[0]
}

// Analyze parses sql, which may hold several statements, and analyses each
// one. An empty string yields no statements. A parse error is returned as
// is: the caller must refuse text the parser does not accept, since the
// server might read it differently.
//
// Results are cached (see analysisCache): by shape when sql has one the
// scanner models and the analysis does not depend on literal values (see
// shapeOf and shapeSafe), else by the exact text. Clients send the same
// statements over and over, often with only the literals changed, and
// parsing is most of the cost of a statement. Each call returns its own
// Statement values, so callers cannot change what a later caller gets.
func Analyze(sql string) ([]*Statement, error) {
	if len(sql) > cacheMaxText {
		stmts, _, err := analyze(sql)
		return stmts, err
	}
	shape, lits, shaped := shapeOf(sql)
	if shaped {
		shape = "s" + shape
		if e, ok := cache.get(shape); ok {
			return e.instantiate(sql, lits), nil
		}
	}
	exact := "t" + sql
	if e, ok := cache.get(exact); ok {
		return cloneStatements(e.stmts), nil
	}
	stmts, ranges, err := analyze(sql)
	if err != nil {
		return nil, err
	}
	if shaped && shapeSafe(sql, stmts, ranges, lits) {
		cache.put(&cacheEntry{key: shape, stmts: stmts, lits: lits, ranges: ranges})
	} else {
		cache.put(&cacheEntry{key: exact, stmts: stmts})
	}
	return cloneStatements(stmts), nil
}

// analyze is Analyze without the cache. ranges holds each statement's byte
// range in sql, before trimming.
func analyze(sql string) (stmts []*Statement, ranges []span, err error) {
	tree, err := pg_query.Parse(sql)
	if err != nil {
		return nil, nil, fmt.Errorf("parse: %w", err)
	}
	stmts = make([]*Statement, 0, len(tree.Stmts))
	for _, raw := range tree.Stmts {
		r := stmtRange(sql, raw)
		text := strings.TrimSpace(sql[r.start:r.end])
		s := &Statement{Text: text, root: raw.Stmt, targets: &targetSet{}}
		s.Normalized, err = pg_query.Normalize(text)
		if err != nil {
			return nil, nil, fmt.Errorf("normalize: %w", err)
		}
		s.Fingerprint, err = pg_query.Fingerprint(text)
		if err != nil {
			return nil, nil, fmt.Errorf("fingerprint: %w", err)
		}
		a := analyzer{s: s, version: tree.Version}
		a.walk(raw.Stmt.ProtoReflect())
		stmts = append(stmts, s)
		ranges = append(ranges, r)
	}
	return stmts, ranges, nil
}

// shapeSafe reports whether an analysis of sql may serve every text of the
// same shape. Two things in it depend on literal values: a COPY's options
// (FORMAT 'csv', HEADER 0), and the normalized text, which must show no
// literal of sql's own. So every statement must be other than COPY, and its
// Normalized must be exactly its text with the literals the scanner found
// replaced by $1, $2, ... in order. Anything pg_query normalizes otherwise
// (a negative number as one constant, a literal it keeps, an existing $n)
// fails the comparison and is cached by its exact text instead.
func shapeSafe(sql string, stmts []*Statement, ranges []span, lits []span) bool {
	next := 0 // first literal not yet placed in a statement
	for i, s := range stmts {
		if s.Copy != nil {
			return false
		}
		r := ranges[i]
		var b strings.Builder
		at, k := r.start, 0
		for ; next < len(lits) && lits[next].start < r.end; next++ {
			l := lits[next]
			if l.start < r.start {
				return false
			}
			k++
			b.WriteString(sql[at:l.start])
			b.WriteString("$" + strconv.Itoa(k))
			at = l.end
		}
		if at > r.end {
			return false
		}
		b.WriteString(sql[at:r.end])
		if strings.TrimSpace(b.String()) != s.Normalized {
			return false
		}
	}
	return next == len(lits)
}

// instantiate returns the entry's statements for sql, a text of the
// entry's shape whose literals are at lits: copies of the cached analysis
// with each statement's Text cut from sql. Statement boundaries are never
// inside a literal, so they move by the difference in length of the
// literals before them.
func (e *cacheEntry) instantiate(sql string, lits []span) []*Statement {
	out := cloneStatements(e.stmts)
	move := func(off int) int {
		d := 0
		for i, l := range e.lits {
			if l.start >= off {
				break
			}
			d += (lits[i].end - lits[i].start) - (l.end - l.start)
		}
		return off + d
	}
	for i, s := range out {
		r := e.ranges[i]
		s.Text = strings.TrimSpace(sql[move(r.start):move(r.end)])
	}
	return out
}

// cloneStatements copies cached statements for one caller. The parse tree
// is shared and never modified; everything a caller can reach and change
// is copied.
func cloneStatements(cached []*Statement) []*Statement {
	out := make([]*Statement, len(cached))
	for i, s := range cached {
		c := *s
		c.Kinds, c.Tables, c.Functions = slices.Clone(s.Kinds), slices.Clone(s.Tables), slices.Clone(s.Functions)
		if s.Copy != nil {
			cp := *s.Copy
			c.Copy = &cp
		}
		out[i] = &c
	}
	return out
}

// Bounds of the analysis cache. Long texts are not cached: they are rarely
// repeated and their trees are large, so the bound on entries is also a
// bound on memory (a parse tree is some tens of bytes per byte of SQL).
const (
	cacheEntries = 1024
	cacheMaxText = 2048
)

var cache = newAnalysisCache(cacheEntries)

// analysisCache is a bounded LRU of analyses, safe for concurrent use.
// Keys are "s" + a shape or "t" + an exact text. Only successful analyses
// are stored.
type analysisCache struct {
	mu      sync.Mutex
	max     int
	order   *list.List // of *cacheEntry, most recently used first
	entries map[string]*list.Element
}

type cacheEntry struct {
	key   string
	stmts []*Statement
	// For a shape entry: where the literals and the statements were in the
	// text that was analysed. The parse trees hold that text's constants,
	// so nothing may read constant values from a cached tree.
	lits, ranges []span
}

func newAnalysisCache(max int) *analysisCache {
	return &analysisCache{max: max, order: list.New(), entries: make(map[string]*list.Element, max)}
}

func (c *analysisCache) get(key string) (*cacheEntry, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.entries[key]
	if !ok {
		return nil, false
	}
	c.order.MoveToFront(el)
	return el.Value.(*cacheEntry), true
}

func (c *analysisCache) put(e *cacheEntry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.entries[e.key]; ok {
		c.order.MoveToFront(el)
		return
	}
	c.entries[e.key] = c.order.PushFront(e)
	for c.order.Len() > c.max {
		last := c.order.Back()
		c.order.Remove(last)
		delete(c.entries, last.Value.(*cacheEntry).key)
	}
}

// stmtRange finds one statement in the query string. Locations are byte
// offsets; a zero length means "to the end".
func stmtRange(sql string, raw *pg_query.RawStmt) span {
	start := int(raw.StmtLocation)
	if start < 0 || start > len(sql) {
		start = 0
	}
	end := len(sql)
	if raw.StmtLen > 0 && start+int(raw.StmtLen) <= len(sql) {
		end = start + int(raw.StmtLen)
	}
	return span{start, end}
}

type analyzer struct {
	s       *Statement
	version int32 // the parser's, which Deparse needs back
}

func (a *analyzer) kind(k ...string) {
	for _, x := range k {
		if !slices.Contains(a.s.Kinds, x) {
			a.s.Kinds = append(a.s.Kinds, x)
		}
	}
}

func (a *analyzer) table(schema, rel string) {
	name := rel
	if schema != "" {
		name = schema + "." + rel
	}
	if name != "" && !slices.Contains(a.s.Tables, name) {
		a.s.Tables = append(a.s.Tables, name)
	}
}

func (a *analyzer) function(name string) {
	name = strings.ToLower(name)
	if !slices.Contains(a.s.Functions, name) {
		a.s.Functions = append(a.s.Functions, name)
	}
}

// walk visits every message of the tree. Generic reflection, rather than a
// hand-written visitor, means no node type can hide a nested statement,
// table or function call from the analysis.
func (a *analyzer) walk(m protoreflect.Message) {
	if !m.IsValid() {
		return
	}
	a.visit(m.Interface())
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsList() && fd.Message() != nil:
			l := v.List()
			for i := 0; i < l.Len(); i++ {
				a.walk(l.Get(i).Message())
			}
		case fd.IsMap():
		case fd.Message() != nil:
			a.walk(v.Message())
		}
		return true
	})
}

// visit records what one node contributes.
func (a *analyzer) visit(n any) {
	switch n := n.(type) {
	case *pg_query.SelectStmt:
		if len(n.ValuesLists) > 0 && len(n.TargetList) == 0 {
			a.kind("values")
		} else if n.Op == pg_query.SetOperation_SETOP_NONE || n.Op == pg_query.SetOperation_SET_OPERATION_UNDEFINED {
			a.kind("select")
		}
		if n.IntoClause != nil { // SELECT ... INTO creates a table
			a.kind("create")
		}
	case *pg_query.InsertStmt:
		a.kind("insert")
	case *pg_query.UpdateStmt:
		a.kind("update")
		if n.WhereClause == nil {
			a.s.NoWhere = true
		}
	case *pg_query.DeleteStmt:
		a.kind("delete")
		if n.WhereClause == nil {
			a.s.NoWhere = true
		}
	case *pg_query.MergeStmt:
		a.kind("merge")
	case *pg_query.RangeVar:
		a.table(n.Schemaname, n.Relname)
	case *pg_query.ResTarget:
		a.s.targets.rts = append(a.s.targets.rts, n)
	case *pg_query.FuncCall:
		a.function(qualifiedName(n.Funcname))
	case *pg_query.DropStmt:
		a.kind("drop")
		switch n.RemoveType {
		case pg_query.ObjectType_OBJECT_TABLE, pg_query.ObjectType_OBJECT_VIEW, pg_query.ObjectType_OBJECT_MATVIEW,
			pg_query.ObjectType_OBJECT_FOREIGN_TABLE, pg_query.ObjectType_OBJECT_SEQUENCE, pg_query.ObjectType_OBJECT_INDEX:
			for _, o := range n.Objects {
				if l := o.GetList(); l != nil {
					name := qualifiedName(l.Items)
					schema, rel, ok := strings.Cut(name, ".")
					if !ok {
						schema, rel = "", name
					}
					a.table(schema, rel)
				}
			}
		}
	case *pg_query.TruncateStmt:
		a.kind("truncate")
	case *pg_query.RenameStmt:
		a.kind("alter", "rename")
	case *pg_query.CommentStmt:
		a.kind("comment")
	case *pg_query.GrantStmt:
		a.kind(grantKind(n.IsGrant))
	case *pg_query.GrantRoleStmt:
		a.kind(grantKind(n.IsGrant))
	case *pg_query.CopyStmt:
		a.kind("copy")
		if n.IsProgram {
			a.function("copy_program")
		}
		a.s.Copy = copyInfo(n, a.version)
	case *pg_query.CallStmt:
		a.kind("call")
	case *pg_query.DoStmt:
		a.kind("do")
	case *pg_query.ExecuteStmt:
		a.kind("execute")
	case *pg_query.PrepareStmt:
		a.kind("prepare")
	case *pg_query.DeallocateStmt:
		a.kind("deallocate")
	case *pg_query.TransactionStmt:
		a.kind(transactionKinds(n.Kind)...)
	case *pg_query.VariableSetStmt:
		if n.Kind == pg_query.VariableSetKind_VAR_RESET || n.Kind == pg_query.VariableSetKind_VAR_RESET_ALL {
			a.kind("reset")
		} else {
			a.kind("set")
		}
	case *pg_query.ConstraintsSetStmt:
		a.kind("set")
	case *pg_query.VariableShowStmt:
		a.kind("show")
	case *pg_query.ExplainStmt:
		a.kind("explain")
	case *pg_query.VacuumStmt:
		if n.IsVacuumcmd {
			a.kind("vacuum")
		} else {
			a.kind("analyze")
		}
	case *pg_query.ReindexStmt:
		a.kind("reindex")
	case *pg_query.ClusterStmt:
		a.kind("cluster")
	case *pg_query.RefreshMatViewStmt:
		a.kind("refresh")
	case *pg_query.CheckPointStmt:
		a.kind("checkpoint")
	case *pg_query.LockStmt:
		a.kind("lock")
	case *pg_query.ListenStmt:
		a.kind("listen")
	case *pg_query.NotifyStmt:
		a.kind("notify")
	case *pg_query.UnlistenStmt:
		a.kind("unlisten")
	case *pg_query.DiscardStmt:
		a.kind("discard")
	case *pg_query.LoadStmt:
		a.kind("load")
	case *pg_query.ImportForeignSchemaStmt:
		a.kind("import")
	case *pg_query.IndexStmt, *pg_query.ViewStmt, *pg_query.RuleStmt, *pg_query.DefineStmt,
		*pg_query.CompositeTypeStmt, *pg_query.CreateTableAsStmt:
		a.kind("create")
	case *pg_query.ReassignOwnedStmt, *pg_query.SecLabelStmt:
		a.kind("alter")
	case protoreflect.ProtoMessage:
		// The many CREATE ... and ALTER ... statements share a naming
		// scheme; mapping them by name keeps new ones from going unseen.
		name := string(n.ProtoReflect().Descriptor().Name())
		if strings.HasSuffix(name, "Stmt") {
			switch {
			case strings.HasPrefix(name, "Create"):
				a.kind("create")
			case strings.HasPrefix(name, "Alter"):
				a.kind("alter")
			case strings.HasPrefix(name, "Drop"):
				a.kind("drop")
			}
		}
	}
}

func grantKind(grant bool) string {
	if grant {
		return "grant"
	}
	return "revoke"
}

// transactionKinds maps a transaction statement to its keywords. The parser
// turns END into COMMIT and ABORT into ROLLBACK, so both spellings match.
func transactionKinds(k pg_query.TransactionStmtKind) []string {
	switch k {
	case pg_query.TransactionStmtKind_TRANS_STMT_BEGIN:
		return []string{"begin", "start"}
	case pg_query.TransactionStmtKind_TRANS_STMT_START:
		return []string{"start", "begin"}
	case pg_query.TransactionStmtKind_TRANS_STMT_COMMIT, pg_query.TransactionStmtKind_TRANS_STMT_COMMIT_PREPARED:
		return []string{"commit", "end"}
	case pg_query.TransactionStmtKind_TRANS_STMT_ROLLBACK, pg_query.TransactionStmtKind_TRANS_STMT_ROLLBACK_TO,
		pg_query.TransactionStmtKind_TRANS_STMT_ROLLBACK_PREPARED:
		return []string{"rollback", "abort"}
	case pg_query.TransactionStmtKind_TRANS_STMT_SAVEPOINT:
		return []string{"savepoint"}
	case pg_query.TransactionStmtKind_TRANS_STMT_RELEASE:
		return []string{"release"}
	case pg_query.TransactionStmtKind_TRANS_STMT_PREPARE:
		return []string{"prepare"}
	}
	return nil
}

// qualifiedName joins a list of String nodes with dots.
func qualifiedName(parts []*pg_query.Node) string {
	var b strings.Builder
	for _, p := range parts {
		s := p.GetString_()
		if s == nil {
			continue
		}
		if b.Len() > 0 {
			b.WriteByte('.')
		}
		b.WriteString(s.Sval)
	}
	return b.String()
}

// copyInfo describes a COPY statement for the proxy.
func copyInfo(n *pg_query.CopyStmt, version int32) *Copy {
	c := &Copy{Format: "text", Simple: true}
	if n.Filename == "" && !n.IsProgram {
		c.ToClient, c.FromClient = !n.IsFrom, n.IsFrom
	}
	for _, o := range n.Options {
		d := o.GetDefElem()
		if d == nil {
			c.Simple = false
			continue
		}
		switch d.Defname {
		case "format":
			if s := d.Arg.GetString_(); s != nil {
				c.Format = strings.ToLower(s.Sval)
			}
		case "header":
			c.Header = true
			if b := d.Arg.GetBoolean(); b != nil {
				c.Header = b.Boolval
			} else if s := d.Arg.GetString_(); s != nil {
				c.Header = !slices.Contains([]string{"false", "off", "0"}, strings.ToLower(s.Sval))
			} else if i := d.Arg.GetInteger(); i != nil {
				c.Header = i.Ival != 0
			}
		default:
			c.Simple = false
		}
	}
	switch {
	case n.Query != nil:
		if q, err := pg_query.Deparse(&pg_query.ParseResult{Version: version, Stmts: []*pg_query.RawStmt{{Stmt: n.Query}}}); err == nil {
			c.Source = "SELECT * FROM (" + q + ") AS warden_copy"
		}
	case n.Relation != nil:
		cols := "*"
		if len(n.Attlist) > 0 {
			var names []string
			for _, a := range n.Attlist {
				if s := a.GetString_(); s != nil {
					names = append(names, quoteIdent(s.Sval))
				}
			}
			cols = strings.Join(names, ", ")
		}
		rel := quoteIdent(n.Relation.Relname)
		if n.Relation.Schemaname != "" {
			rel = quoteIdent(n.Relation.Schemaname) + "." + rel
		}
		c.Source = "SELECT " + cols + " FROM " + rel
	}
	return c
}

func quoteIdent(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }
