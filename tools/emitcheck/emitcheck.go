// Package emitcheck finds code that discards the error of an audit
// recorder's Emit.
//
// Emit returns an error when an event could not be recorded. A producer
// that can still refuse what it is about to do (the proxy, before it
// forwards a request) must act on it, and one that cannot must at least
// say so in code: no record, no access depends on nobody dropping that
// error by accident. The check is syntactic, so it works on a tree that
// does not build: in this module a method named Emit is an audit
// recorder's (agent/recorder.Recorder and the interfaces it satisfies), and
// every call of it is checked.
//
// Reported are a call used as a statement (x.Emit(e)), one assigned only
// to blank identifiers (_ = x.Emit(e)), one in a go or defer statement, and
// Emit taken as a method value (f := x.Emit), whose callers the check
// cannot follow.
package emitcheck

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Method is the name of the checked method.
const Method = "Emit"

// Finding is one place where Emit's error is discarded.
type Finding struct {
	Pos token.Position
	// What says how the error is discarded.
	What string
}

func (f Finding) String() string { return fmt.Sprintf("%s: %s", f.Pos, f.What) }

// File returns the findings in one parsed file, in source order.
func File(fset *token.FileSet, f *ast.File) []Finding {
	var out []Finding
	report := func(n ast.Node, what string) {
		out = append(out, Finding{Pos: fset.Position(n.Pos()), What: what})
	}
	// Selectors that are the function of a call; the others are method
	// values.
	called := map[*ast.SelectorExpr]bool{}
	ast.Inspect(f, func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.CallExpr:
			if sel := emitSelector(n.Fun); sel != nil {
				called[sel] = true
			}
		case *ast.ExprStmt:
			if isEmitCall(n.X) {
				report(n, "the error of "+Method+" is discarded (call used as a statement)")
			}
		case *ast.AssignStmt:
			if len(n.Rhs) == 1 && isEmitCall(n.Rhs[0]) && allBlank(n.Lhs) {
				report(n, "the error of "+Method+" is assigned to _")
			}
		case *ast.GoStmt:
			if isEmitCall(n.Call) {
				report(n, "the error of "+Method+" is lost in a go statement")
			}
		case *ast.DeferStmt:
			if isEmitCall(n.Call) {
				report(n, "the error of "+Method+" is lost in a defer statement")
			}
		}
		return true
	})
	// Method values, once every call is known.
	ast.Inspect(f, func(n ast.Node) bool {
		if sel, ok := n.(*ast.SelectorExpr); ok && sel.Sel.Name == Method && !called[sel] {
			report(sel, Method+" is used as a value, so the check cannot see whether its error is handled; call it")
		}
		return true
	})
	sort.SliceStable(out, func(i, j int) bool { return out[i].Pos.Offset < out[j].Pos.Offset })
	return out
}

// emitSelector returns fun as a selector of Method, or nil.
func emitSelector(fun ast.Expr) *ast.SelectorExpr {
	for {
		p, ok := fun.(*ast.ParenExpr)
		if !ok {
			break
		}
		fun = p.X
	}
	if sel, ok := fun.(*ast.SelectorExpr); ok && sel.Sel.Name == Method {
		return sel
	}
	return nil
}

func isEmitCall(e ast.Expr) bool {
	for {
		p, ok := e.(*ast.ParenExpr)
		if !ok {
			break
		}
		e = p.X
	}
	call, ok := e.(*ast.CallExpr)
	return ok && emitSelector(call.Fun) != nil
}

func allBlank(lhs []ast.Expr) bool {
	for _, e := range lhs {
		if id, ok := e.(*ast.Ident); !ok || id.Name != "_" {
			return false
		}
	}
	return true
}

// Module checks every non-test .go file below root, a module's
// directory, skipping testdata, vendor and hidden directories. File names
// in findings are relative to root.
func Module(root string) ([]Finding, error) {
	fset := token.NewFileSet()
	var out []Finding
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		if d.IsDir() {
			if path != root && (name == "testdata" || name == "vendor" || strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_")) {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(name, ".go") || strings.HasSuffix(name, "_test.go") {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, path)
		if err != nil {
			return err
		}
		f, err := parser.ParseFile(fset, rel, src, parser.SkipObjectResolution)
		if err != nil {
			return fmt.Errorf("emitcheck: %w", err)
		}
		out = append(out, File(fset, f)...)
		return nil
	})
	return out, err
}
