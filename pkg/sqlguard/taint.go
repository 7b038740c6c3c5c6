package sqlguard

import (
	"strings"
	"sync"

	pg_query "github.com/pganalyze/pg_query_go/v6"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Outputs tells the masking layer which result columns of a statement carry
// a masked column under another name.
type Outputs struct {
	// Names are output names derived from a masked column: aliases
	// (SELECT email AS e), followed through subqueries and CTEs.
	Names map[string]bool
	// Positions, when not nil, flags each top-level output column whose
	// expression reads a masked column (SELECT lower(email)). It is nil
	// when the output list has a * or the statement returns no target
	// list the parser can see.
	Positions []bool
}

// Derived computes which outputs of s derive from the columns for which
// masked(name) is true (name in lower case). Column masking by name alone
// would let "SELECT email AS x" through; this closes that for everything
// the parse tree shows. Whole-row and catalog tricks are left to the
// content detectors.
func (s *Statement) Derived(masked func(string) bool) Outputs {
	out := Outputs{Names: map[string]bool{}}
	if s.root == nil {
		return out
	}
	targets := s.resTargets()
	tainted := func(refs []string) bool {
		for _, r := range refs {
			if masked(r) || out.Names[r] {
				return true
			}
		}
		return false
	}
	// Fixpoint: an alias of an alias of a masked column is masked too.
	for changed := true; changed; {
		changed = false
		for _, t := range targets {
			if t.name != "" && !out.Names[t.name] && !masked(t.name) && tainted(t.refs) {
				out.Names[t.name] = true
				changed = true
			}
		}
	}
	if sel := s.root.GetSelectStmt(); sel != nil {
		out.Positions = s.selectShape(sel).positions(tainted)
	}
	return out
}

// targetSet holds the ResTargets of one statement's tree, in the order a
// pre-order walk meets them, and their names and column references once
// Derived first needs them. The tree never changes, so one computation
// serves every session that runs the statement.
type targetSet struct {
	rts []*pg_query.ResTarget // filled by the analysis walk

	once sync.Once
	list []target

	selOnce sync.Once
	sel     *selShape
}

type target struct {
	name string
	refs []string
}

// resTargets returns the statement's output targets with their column
// references.
func (s *Statement) resTargets() []target {
	ts := s.targets
	if ts == nil {
		// Not made by Analyze: walk the tree here.
		ts = &targetSet{}
		collectTargets(s.root.ProtoReflect(), func(rt *pg_query.ResTarget) { ts.rts = append(ts.rts, rt) })
	}
	ts.once.Do(func() {
		ts.list = make([]target, len(ts.rts))
		for i, rt := range ts.rts {
			ts.list[i] = target{name: strings.ToLower(rt.Name), refs: columnRefs(rt.Val)}
		}
	})
	return ts.list
}

// selShape is a SELECT's output list as far as masking by position needs
// it: each output's column references, or the two sides of a set
// operation. A nil *selShape has no positions: an output is a *, or the
// parser shows no target list. It is computed once per statement tree,
// since walking the tree for column references costs more than the rest
// of a cached statement's check.
type selShape struct {
	refs [][]string
	l, r *selShape // a set operation's sides; refs is then nil
}

// selectShape returns the shape of sel, the statement's top-level SELECT.
func (s *Statement) selectShape(sel *pg_query.SelectStmt) *selShape {
	ts := s.targets
	if ts == nil {
		return selShapeOf(sel)
	}
	ts.selOnce.Do(func() { ts.sel = selShapeOf(sel) })
	return ts.sel
}

func selShapeOf(sel *pg_query.SelectStmt) *selShape {
	if sel == nil {
		return nil
	}
	if sel.Larg != nil || sel.Rarg != nil {
		l, r := selShapeOf(sel.Larg), selShapeOf(sel.Rarg)
		if l == nil || r == nil {
			return nil
		}
		return &selShape{l: l, r: r}
	}
	if len(sel.TargetList) == 0 {
		return nil
	}
	refs := make([][]string, len(sel.TargetList))
	for i, n := range sel.TargetList {
		rt := n.GetResTarget()
		if rt == nil {
			return nil
		}
		if cr := rt.Val.GetColumnRef(); cr != nil {
			for _, f := range cr.Fields {
				if f.GetAStar() != nil {
					return nil
				}
			}
		}
		refs[i] = columnRefs(rt.Val)
	}
	return &selShape{refs: refs}
}

// positions flags the outputs (of either side of a set operation) that
// read a tainted column.
func (sh *selShape) positions(tainted func([]string) bool) []bool {
	if sh == nil {
		return nil
	}
	if sh.refs == nil {
		l, r := sh.l.positions(tainted), sh.r.positions(tainted)
		if l == nil || r == nil || len(l) != len(r) {
			return nil
		}
		for i := range l {
			l[i] = l[i] || r[i]
		}
		return l
	}
	pos := make([]bool, len(sh.refs))
	for i, refs := range sh.refs {
		pos[i] = tainted(refs)
	}
	return pos
}

// collectTargets calls fn for every ResTarget in the tree.
func collectTargets(m protoreflect.Message, fn func(*pg_query.ResTarget)) {
	if !m.IsValid() {
		return
	}
	if rt, ok := m.Interface().(*pg_query.ResTarget); ok {
		fn(rt)
	}
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsList() && fd.Message() != nil:
			l := v.List()
			for i := 0; i < l.Len(); i++ {
				collectTargets(l.Get(i).Message(), fn)
			}
		case fd.IsMap():
		case fd.Message() != nil:
			collectTargets(v.Message(), fn)
		}
		return true
	})
}

// columnRefs returns the column names (last field, lower case) referenced
// anywhere in n.
func columnRefs(n *pg_query.Node) []string {
	if n == nil {
		return nil
	}
	var refs []string
	var walk func(m protoreflect.Message)
	walk = func(m protoreflect.Message) {
		if !m.IsValid() {
			return
		}
		if cr, ok := m.Interface().(*pg_query.ColumnRef); ok && len(cr.Fields) > 0 {
			if s := cr.Fields[len(cr.Fields)-1].GetString_(); s != nil {
				refs = append(refs, strings.ToLower(s.Sval))
			}
		}
		m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
			switch {
			case fd.IsList() && fd.Message() != nil:
				l := v.List()
				for i := 0; i < l.Len(); i++ {
					walk(l.Get(i).Message())
				}
			case fd.IsMap():
			case fd.Message() != nil:
				walk(v.Message())
			}
			return true
		})
	}
	walk(n.ProtoReflect())
	return refs
}
