package sqlguard

import "github.com/wardenhq/warden/pkg/guard"

// Request returns the statement in the terms the rules are written in.
// It shares the statement's slices; Text is the normalised statement, so
// the request is safe to record.
func (s *Statement) Request() guard.Request {
	return guard.Request{
		Kinds:     s.Kinds,
		Tables:    s.Tables,
		Functions: s.Functions,
		NoWhere:   s.NoWhere,
		Text:      s.Normalized,
		Exact:     s.Text,
	}
}

// Requests returns the requests of a batch of statements, in order, so a
// verdict's Index is also the index of the statement that matched.
func Requests(stmts []*Statement) []guard.Request {
	reqs := make([]guard.Request, len(stmts))
	for i, s := range stmts {
		reqs[i] = s.Request()
	}
	return reqs
}
