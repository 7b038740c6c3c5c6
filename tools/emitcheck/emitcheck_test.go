package emitcheck

import (
	"fmt"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// snippet has one case per line; lines marked "// want" must be reported
// and no others.
const snippet = `package p

func producer(rec interface{ Emit(any) error }, e any) error {
	rec.Emit(e) // want
	_ = rec.Emit(e) // want
	(rec.Emit(e)) // want
	go rec.Emit(e) // want
	defer rec.Emit(e) // want
	emit := rec.Emit // want
	_, _ = emit, 1
	if err := rec.Emit(e); err != nil {
		return err
	}
	err := rec.Emit(e)
	if err != nil {
		return err
	}
	err = rec.Emit(e)
	check(rec.Emit(e))
	rec.Record(e)
	return rec.Emit(e)
}

func check(error) {}
`

func TestCatchesDiscardedErrors(t *testing.T) {
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "p.go", snippet, 0)
	if err != nil {
		t.Fatal(err)
	}
	var want []int
	for i, line := range strings.Split(snippet, "\n") {
		if strings.HasSuffix(line, "// want") {
			want = append(want, i+1)
		}
	}
	var got []int
	for _, fd := range File(fset, f) {
		got = append(got, fd.Pos.Line)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("reported lines %v, want %v:\n%v", got, want, File(fset, f))
	}
}

// TestModule is the check itself: no non-test file of this module
// discards the error of Emit.
func TestModule(t *testing.T) {
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	found, err := Module(root)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range found {
		t.Errorf("%s", f)
	}
}

// moduleRoot is the nearest directory above the test with a go.mod.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod above the test")
		}
		dir = parent
	}
}
