// Command mysqlclient is the go-sql-driver/mysql client the end-to-end
// tests run inside a logged-in session, so its connections go through
// Warden's BPF redirection like any user's program. It prints one
// "key: value" line per result for the test to check.
package main

import (
	"crypto/tls"
	"crypto/x509"
	"database/sql"
	"fmt"
	"os"
	"strings"

	"github.com/go-sql-driver/mysql"
)

func main() {
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: mysqlclient DSN MODE [CA]")
		os.Exit(2)
	}
	dsn, mode := os.Args[1], os.Args[2]
	if len(os.Args) == 4 {
		// Verify the agent's certificate against its client authority,
		// host name included.
		pem, err := os.ReadFile(os.Args[3])
		if err != nil {
			fail(err)
		}
		roots := x509.NewCertPool()
		roots.AppendCertsFromPEM(pem)
		if err := mysql.RegisterTLSConfig("warden", &tls.Config{RootCAs: roots, ServerName: "127.0.0.1"}); err != nil {
			fail(err)
		}
	}
	db, err := sql.Open("mysql", dsn)
	if err != nil {
		fail(err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	switch mode {
	case "mask":
		// Arguments make the driver prepare the statement: binary rows.
		rows, err := db.Query("select id, email, ssn, card, note, id * 2 from customers where id > ? order by id", 0)
		if err != nil {
			fail(err)
		}
		for rows.Next() {
			var id, twice int64
			var email, ssn, card, note sql.NullString
			if err := rows.Scan(&id, &email, &ssn, &card, &note, &twice); err != nil {
				fail(err)
			}
			fmt.Printf("binary: %d|%s|%s|%s|%s|%d\n", id, email.String, ssn.String, card.String, note.String, twice)
		}
		if err := rows.Err(); err != nil {
			fail(err)
		}
		var alias string
		if err := db.QueryRow("select ssn as x from customers where id = ?", 1).Scan(&alias); err != nil {
			fail(err)
		}
		fmt.Printf("alias: %s\n", alias)
		var text string
		if err := db.QueryRow("select email from customers where id = 1").Scan(&text); err != nil {
			fail(err)
		}
		fmt.Printf("text: %s\n", text)
	case "deny":
		_, err := db.Prepare("DELETE FROM customers")
		fmt.Printf("prepare: %v\n", err)
		_, err = db.Exec("DROP TABLE customers")
		fmt.Printf("exec: %v\n", err)
		var n int
		err = db.QueryRow("select count(*) from customers").Scan(&n)
		fmt.Printf("count: %d %v\n", n, err)
	case "multi":
		// multiStatements=true in the DSN: one text, two statements.
		_, err := db.Exec("select 1; drop table customers")
		fmt.Printf("multi: %v\n", err)
	case "whoami":
		var user string
		if err := db.QueryRow("select current_user()").Scan(&user); err != nil {
			fail(err)
		}
		fmt.Printf("user: %s\n", user)
	default:
		fail(fmt.Errorf("unknown mode %q", mode))
	}
}

func fail(err error) {
	fmt.Printf("error: %s\n", strings.ReplaceAll(err.Error(), "\n", " "))
	os.Exit(1)
}
