package policy

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
)

// Error is one problem found in a policy file. Parse returns every Error it
// finds, joined with errors.Join so that the message has one per line; use
// errors.As, or Errors, to get at them individually.
type Error struct {
	// Source is the file name passed to Parse or Load.
	Source string
	// Line and Column are 1-based. Column is 0 when only the line is known
	// (YAML syntax errors); both are 0 for problems with the whole file.
	Line, Column int
	// Msg describes the problem, prefixed by where in the policy it is, for
	// example `target "orders-db": protocol "mongo" is not one of ...`.
	Msg string
}

// Error formats the problem as source:line:column: message.
func (e *Error) Error() string {
	switch {
	case e.Line == 0:
		return fmt.Sprintf("%s: %s", e.Source, e.Msg)
	case e.Column == 0:
		return fmt.Sprintf("%s:%d: %s", e.Source, e.Line, e.Msg)
	default:
		return fmt.Sprintf("%s:%d:%d: %s", e.Source, e.Line, e.Column, e.Msg)
	}
}

// Errors returns the individual problems in an error returned by Parse,
// Load or a Watcher, in file order. It returns nil if err holds none, for
// example when the file could not be read at all.
func Errors(err error) []*Error {
	var out []*Error
	var walk func(error)
	walk = func(err error) {
		if e, ok := err.(*Error); ok {
			out = append(out, e)
			return
		}
		switch u := err.(type) {
		case interface{ Unwrap() []error }:
			for _, e := range u.Unwrap() {
				walk(e)
			}
		case interface{ Unwrap() error }:
			walk(u.Unwrap())
		}
	}
	if err != nil {
		walk(err)
	}
	return out
}

// joinErrors sorts problems into file order and joins them, so that the
// operator reads them top to bottom regardless of which check found them.
func joinErrors(errs []*Error) error {
	if len(errs) == 0 {
		return nil
	}
	slices.SortStableFunc(errs, func(a, b *Error) int {
		return cmp.Or(cmp.Compare(a.Line, b.Line), cmp.Compare(a.Column, b.Column))
	})
	list := make([]error, len(errs))
	for i, e := range errs {
		list[i] = e
	}
	return errors.Join(list...)
}
