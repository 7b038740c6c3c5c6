package sqlguard

import (
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
)

// cacheCorpus covers multi-statement texts, COPY, nested statements and
// aliases of masked columns.
var cacheCorpus = []string{
	"select 1", "SELECT 1; DROP TABLE t", "/**/DrOp/**/ TABLE t", "delete from t", "",
	"with d as (delete from t returning *) select * from d", "copy (select 1) to stdout with (format csv)",
	"copy t (a, b) to stdout with (format csv, header true)", "prepare p as select $1", `select "E""x" from "T"`,
	"select email as e, id from users", "select x from (select email as x from users) s",
	"select id from a union select email from b", "select lower(email) from users; select * from users",
	"SELECT abalance FROM pgbench_accounts WHERE aid = 42;", "update t set a = 1", "begin; commit",
}

// statementView is what a caller can observe of a statement.
type statementView struct {
	Text, Normalized, Fingerprint string
	Kinds, Tables, Functions      []string
	NoWhere                       bool
	Copy                          *Copy
	Derived                       Outputs
	DerivedWalk                   Outputs // through collectTargets, as before the cache
}

func view(s *Statement) statementView {
	masked := func(c string) bool { return c == "email" || c == "a" }
	walked := *s
	walked.targets = nil
	return statementView{s.Text, s.Normalized, s.Fingerprint, s.Kinds, s.Tables, s.Functions, s.NoWhere, s.Copy,
		s.Derived(masked), walked.Derived(masked)}
}

func views(stmts []*Statement) []statementView {
	var out []statementView
	for _, s := range stmts {
		out = append(out, view(s))
	}
	return out
}

// checkCached asserts that Analyze (first and repeated calls) gives what an
// uncached analysis gives.
func checkCached(t *testing.T, sql string) {
	t.Helper()
	fresh, _, ferr := analyze(sql)
	for range 2 {
		got, err := Analyze(sql)
		if (err != nil) != (ferr != nil) {
			t.Fatalf("%q: error %v, uncached %v", sql, err, ferr)
		}
		if err != nil {
			continue
		}
		if g, w := views(got), views(fresh); !reflect.DeepEqual(g, w) {
			t.Fatalf("%q: cached analysis differs:\n got %+v\nwant %+v", sql, g, w)
		}
		for _, v := range views(fresh) {
			if !reflect.DeepEqual(v.Derived, v.DerivedWalk) {
				t.Fatalf("%q: derived from collected targets %+v, from a walk %+v", sql, v.Derived, v.DerivedWalk)
			}
		}
	}
}

func TestAnalyzeCacheMatchesFresh(t *testing.T) {
	for _, sql := range cacheCorpus {
		checkCached(t, sql)
	}
}

// A caller that changes what it got must not change what the next caller
// gets.
func TestAnalyzeCacheIsolation(t *testing.T) {
	const sql = "copy (select email from users) to stdout with (format csv)"
	first, err := Analyze(sql)
	if err != nil {
		t.Fatal(err)
	}
	fresh, _, err := analyze(sql)
	if err != nil {
		t.Fatal(err)
	}
	want := views(fresh)
	s := first[0]
	s.Kinds = append(s.Kinds, "drop")
	s.Tables[0] = "other"
	s.Functions = append(s.Functions, "pg_read_file")
	s.Copy.Format = "binary"
	s.Normalized, s.NoWhere = "x", true
	again, err := Analyze(sql)
	if err != nil {
		t.Fatal(err)
	}
	if got := views(again); !reflect.DeepEqual(got, want) {
		t.Fatalf("cached analysis changed by a caller:\n got %+v\nwant %+v", got, want)
	}
}

func TestAnalyzeCacheBounded(t *testing.T) {
	c := newAnalysisCache(8)
	for i := range 100 {
		sql := fmt.Sprintf("select %d", i)
		stmts, _, err := analyze(sql)
		if err != nil {
			t.Fatal(err)
		}
		c.put(&cacheEntry{key: sql, stmts: stmts})
		c.get("select 0") // keep one entry hot
	}
	if c.order.Len() != 8 || len(c.entries) != 8 {
		t.Fatalf("cache holds %d/%d entries, bound 8", c.order.Len(), len(c.entries))
	}
	if _, ok := c.get("select 0"); !ok {
		t.Fatal("recently used entry evicted")
	}
	if _, ok := c.get("select 1"); ok {
		t.Fatal("least recently used entry kept")
	}
}

func TestAnalyzeSkipsCacheForLongText(t *testing.T) {
	long := "select 1" + strings.Repeat(" ", cacheMaxText)
	checkCached(t, long)
	shape, _, _ := shapeOf(long)
	for _, key := range []string{"t" + long, "s" + shape} {
		if _, ok := cache.get(key); ok {
			t.Fatal("over-long text cached")
		}
	}
}

// Run with -race: sessions analyse concurrently and share cached trees.
func TestAnalyzeCacheConcurrent(t *testing.T) {
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				sql := cacheCorpus[(g+i)%len(cacheCorpus)]
				if i%3 == 0 {
					sql = fmt.Sprintf("select email as e%d from users", i%5)
				}
				stmts, err := Analyze(sql)
				if err != nil {
					t.Error(err)
					return
				}
				for _, s := range stmts {
					s.Derived(func(c string) bool { return c == "email" })
					s.Kinds = append(s.Kinds, "x")
				}
			}
		})
	}
	wg.Wait()
	for _, sql := range cacheCorpus {
		checkCached(t, sql)
	}
	if !slices.Equal(must(Analyze("select 1"))[0].Kinds, []string{"select"}) {
		t.Fatal("cached kinds changed")
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
