package redact

import (
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/wardenhq/warden/pkg/policy"
)

// argvCases are real command lines and what the audit log must show.
var argvCases = []struct {
	name     string
	in, want []string
}{
	// Connection strings and URLs.
	{"libpq key/value", []string{"psql", "host=db user=postgres password=TopSecret-333 dbname=postgres", "-c", "select 1"},
		[]string{"psql", "host=db user=postgres password=[redacted:password] dbname=postgres", "-c", "select 1"}},
	{"libpq quoted value", []string{"psql", "host=db password='a b\\' c' user=x"},
		[]string{"psql", "host=db password='[redacted:password]' user=x"}},
	{"postgres URI", []string{"psql", "postgresql://app:S3cr3t@db:5432/orders?sslmode=require"},
		[]string{"psql", "postgresql://app:[redacted:password]@db:5432/orders?sslmode=require"}},
	{"URI password in query", []string{"pg_dump", "-d", "postgres://db/orders?user=app&password=S3cr3t&sslmode=require"},
		[]string{"pg_dump", "-d", "postgres://db/orders?user=app&password=[redacted:password]&sslmode=require"}},
	{"JDBC", []string{"java", "-jar", "etl.jar", "jdbc:sqlserver://db:1433;databaseName=orders;user=etl;password=Etl#2024;encrypt=true"},
		[]string{"java", "-jar", "etl.jar", "jdbc:sqlserver://db:1433;databaseName=orders;user=etl;password=[redacted:password];encrypt=true"}},
	{"ODBC braces", []string{"isql", "-k", "DSN=orders;UID=etl;PWD={p;w}"},
		[]string{"isql", "-k", "DSN=orders;UID=etl;PWD={[redacted:password]}"}},
	{"redis URL", []string{"redis-cli", "-u", "redis://default:R3dis@cache:6379/0", "ping"},
		[]string{"redis-cli", "-u", "redis://default:[redacted:password]@cache:6379/0", "ping"}},
	{"git token as user", []string{"git", "clone", "https://ghp_16C7e42F292c6912E7710c838347Ae178B4a@github.com/acme/app.git"},
		[]string{"git", "clone", "https://[redacted:token]@github.com/acme/app.git"}},
	{"URL without credentials", []string{"curl", "-fsSL", "https://get.example.com/install.sh?v=2"},
		[]string{"curl", "-fsSL", "https://get.example.com/install.sh?v=2"}},

	// MySQL and MariaDB: -p takes its value attached only.
	{"mysql -pSECRET", []string{"mysql", "-uroot", "-pS3cret!", "-h", "db", "orders"},
		[]string{"mysql", "-uroot", "-p[redacted:password]", "-h", "db", "orders"}},
	{"mysql -p prompts", []string{"mysql", "-u", "root", "-p", "orders"},
		[]string{"mysql", "-u", "root", "-p", "orders"}},
	{"mariadb bundle", []string{"mariadb", "-vBpS3cret", "-e", "select 1"},
		[]string{"mariadb", "-vBp[redacted:password]", "-e", "select 1"}},
	{"mysql --password=", []string{"mysqldump", "--user=backup", "--password=B4ckup", "--all-databases"},
		[]string{"mysqldump", "--user=backup", "--password=[redacted:password]", "--all-databases"}},
	{"mysql --password next", []string{"mysql", "--password", "S3cret", "orders"},
		[]string{"mysql", "--password", "[redacted:password]", "orders"}},
	{"mysql abbreviated", []string{"mysql", "--pass=S3cret", "--host=db"},
		[]string{"mysql", "--pass=[redacted:password]", "--host=db"}},
	{"mysql -u takes a value", []string{"mysql", "-u", "mysql", "-pS3cret"},
		[]string{"mysql", "-u", "mysql", "-p[redacted:password]"}},
	{"mysqladmin password", []string{"mysqladmin", "-u", "root", "password", "N3wPass"},
		[]string{"mysqladmin", "-u", "root", "password", "[redacted:password]"}},

	// Other clients.
	{"sshpass", []string{"sshpass", "-p", "hunter2", "ssh", "-o", "StrictHostKeyChecking=no", "bob@bastion"},
		[]string{"sshpass", "-p", "[redacted:password]", "ssh", "-o", "StrictHostKeyChecking=no", "bob@bastion"}},
	{"sshpass attached", []string{"sshpass", "-phunter2", "scp", "f", "h:"},
		[]string{"sshpass", "-p[redacted:password]", "scp", "f", "h:"}},
	{"redis-cli -a", []string{"redis-cli", "-h", "cache", "-a", "R3dis", "--no-auth-warning", "info"},
		[]string{"redis-cli", "-h", "cache", "-a", "[redacted:password]", "--no-auth-warning", "info"}},
	{"redis-cli --pass and AUTH", []string{"redis-cli", "--pass", "R3dis", "AUTH", "app", "AppPw"},
		[]string{"redis-cli", "--pass", "[redacted:password]", "AUTH", "app", "[redacted:password]"}},
	{"redis-cli CONFIG SET requirepass", []string{"redis-cli", "CONFIG", "SET", "requirepass", "N3w"},
		[]string{"redis-cli", "CONFIG", "SET", "requirepass", "[redacted:password]"}},
	{"redis ACL SETUSER", []string{"redis-cli", "ACL", "SETUSER", "alice", "on", ">p1pp0", "~cached:*", "+get"},
		[]string{"redis-cli", "ACL", "SETUSER", "alice", "on", ">[redacted:password]", "~cached:*", "+get"}},
	{"curl -u and Authorization", []string{"curl", "-u", "alice:Wonder1and", "-H", "Authorization: Bearer abc.def", "https://api"},
		[]string{"curl", "-u", "alice:[redacted:password]", "-H", "Authorization: Bearer [redacted:token]", "https://api"}},
	{"curl bundle and --header", []string{"curl", "-sSu", "alice:Wonder1and", "--header", "X-Api-Key: k-123", "https://api"},
		[]string{"curl", "-sSu", "alice:[redacted:password]", "--header", "X-Api-Key: [redacted:key]", "https://api"}},
	{"curl --user prompts", []string{"curl", "--user", "alice", "https://api"},
		[]string{"curl", "--user", "alice", "https://api"}},
	{"curl basic, cookie, form", []string{"curl", "-H", "authorization: Basic YWxpY2U6cHc=", "-b", "session=abc123", "-d", "user=bob&password=Pw1", "https://x"},
		[]string{"curl", "-H", "authorization: Basic [redacted:credentials]", "-b", "[redacted:cookie]", "-d", "user=bob&password=[redacted:password]", "https://x"}},
	{"curl JSON body", []string{"curl", "-X", "POST", "-d", `{"username":"bob","password":"Pw\"1","keep":"x"}`, "https://api/login"},
		[]string{"curl", "-X", "POST", "-d", `{"username":"bob","password":"[redacted:password]","keep":"x"}`, "https://api/login"}},
	{"wget --header=", []string{"wget", "--header=Authorization: token ghp_x", "https://x"},
		[]string{"wget", "--header=Authorization: token [redacted:token]", "https://x"}},
	{"htpasswd -b", []string{"htpasswd", "-b", "/etc/nginx/.htpasswd", "bob", "Pw1"},
		[]string{"htpasswd", "-b", "/etc/nginx/.htpasswd", "bob", "[redacted:password]"}},
	{"htpasswd -nbB", []string{"htpasswd", "-nbB", "bob", "Pw1"},
		[]string{"htpasswd", "-nbB", "bob", "[redacted:password]"}},
	{"htpasswd prompts", []string{"htpasswd", "-c", "/etc/nginx/.htpasswd", "bob"},
		[]string{"htpasswd", "-c", "/etc/nginx/.htpasswd", "bob"}},
	{"ldapsearch -w", []string{"ldapsearch", "-x", "-D", "cn=admin,dc=corp", "-w", "Ld4p", "-b", "dc=corp"},
		[]string{"ldapsearch", "-x", "-D", "cn=admin,dc=corp", "-w", "[redacted:password]", "-b", "dc=corp"}},
	{"openssl pass:", []string{"openssl", "pkcs12", "-in", "a.p12", "-passin", "pass:Pk12", "-passout", "env:OUT"},
		[]string{"openssl", "pkcs12", "-in", "a.p12", "-passin", "pass:[redacted:password]", "-passout", "env:OUT"}},
	{"keytool", []string{"keytool", "-list", "-keystore", "k.jks", "-storepass", "changeit"},
		[]string{"keytool", "-list", "-keystore", "k.jks", "-storepass", "[redacted:password]"}},
	{"docker login", []string{"docker", "login", "-u", "ci", "-p", "Dck3r", "registry.corp"},
		[]string{"docker", "login", "-u", "ci", "-p", "[redacted:password]", "registry.corp"}},
	{"docker run -p is a port", []string{"docker", "run", "-p", "8080:80", "-e", "DB_PASSWORD=x1", "nginx"},
		[]string{"docker", "run", "-p", "8080:80", "-e", "DB_PASSWORD=[redacted:password]", "nginx"}},
	{"sqlplus login", []string{"sqlplus", "-S", "scott/T1ger@orcl", "@report.sql"},
		[]string{"sqlplus", "-S", "scott/[redacted:password]@orcl", "@report.sql"}},
	{"xfreerdp", []string{"xfreerdp", "/v:win01", "/u:admin", "/p:Rdp!1"},
		[]string{"xfreerdp", "/v:win01", "/u:admin", "/p:[redacted:password]"}},
	{"smbclient", []string{"smbclient", "//fs/share", "-U", "corp\\bob%Smb1"},
		[]string{"smbclient", "//fs/share", "-U", "corp\\bob%[redacted:password]"}},
	{"kubectl from-literal", []string{"kubectl", "create", "secret", "generic", "db", "--from-literal=password=K8s"},
		[]string{"kubectl", "create", "secret", "generic", "db", "--from-literal=password=[redacted:secret]"}},
	{"vault login", []string{"vault", "login", "hvs.CAESIJ"},
		[]string{"vault", "login", "[redacted:token]"}},

	// Secret-named flags, in both forms.
	{"--token next", []string{"kubectl", "--token", "eyJx", "get", "pods"},
		[]string{"kubectl", "--token", "[redacted:token]", "get", "pods"}},
	{"--api-key= and --client-secret", []string{"deploy", "--api-key=k-123", "--client-secret", "cs", "--region", "eu"},
		[]string{"deploy", "--api-key=[redacted:key]", "--client-secret", "[redacted:secret]", "--region", "eu"}},
	{"--db-password and -token", []string{"app", "--db-password", "pw", "-token", "t0k"},
		[]string{"app", "--db-password", "[redacted:password]", "-token", "[redacted:token]"}},
	{"not secrets", []string{"app", "--password-file", "/run/pw", "--token-ttl", "1h", "--no-password", "--max-tokens", "100"},
		[]string{"app", "--password-file", "/run/pw", "--token-ttl", "1h", "--no-password", "--max-tokens", "100"}},
	{"psql --password prompts", []string{"psql", "--password", "orders"},
		[]string{"psql", "--password", "orders"}},
	{"java property", []string{"java", "-Djavax.net.ssl.keyStorePassword=changeit", "-jar", "app.jar"},
		[]string{"java", "-Djavax.net.ssl.keyStorePassword=[redacted:password]", "-jar", "app.jar"}},
	{"sshd setting", []string{"ssh", "-o", "PasswordAuthentication=no", "host"},
		[]string{"ssh", "-o", "PasswordAuthentication=no", "host"}},

	// Environment assignments.
	{"env", []string{"env", "PGPASSWORD=Pg1 x", "MYSQL_PWD=My1", "AWS_SECRET_ACCESS_KEY=wJalr/K7", "PATH=/bin", "psql"},
		[]string{"env", "PGPASSWORD=[redacted:password]", "MYSQL_PWD=[redacted:password]", "AWS_SECRET_ACCESS_KEY=[redacted:secret]", "PATH=/bin", "psql"}},
	{"sudo env wrapper", []string{"sudo", "-u", "postgres", "env", "REDISCLI_AUTH=R1", "SSHPASS=S1", "redis-cli", "ping"},
		[]string{"sudo", "-u", "postgres", "env", "REDISCLI_AUTH=[redacted:credentials]", "SSHPASS=[redacted:password]", "redis-cli", "ping"}},

	// Command lines.
	{"sh -c assignment", []string{"sh", "-c", "PGPASSWORD=Pg9 psql -h db -c 'select 1'"},
		[]string{"sh", "-c", "PGPASSWORD=[redacted:password] psql -h db -c 'select 1'"}},
	{"bash -lc mysql", []string{"bash", "-lc", "mysql -uroot -pTopSecret -e 'select 1' && echo ok"},
		[]string{"bash", "-lc", "mysql -uroot -p[redacted:password] -e 'select 1' && echo ok"}},
	{"sh -c nested SQL", []string{"/bin/sh", "-c", `psql -c "ALTER ROLE app PASSWORD 'Pg8'"`},
		[]string{"/bin/sh", "-c", `psql -c "ALTER ROLE app PASSWORD '[redacted:password]'"`}},
	{"su -c", []string{"su", "-", "postgres", "-c", "export PGPASSWORD=Pg7; psql"},
		[]string{"su", "-", "postgres", "-c", "export PGPASSWORD=[redacted:password]; psql"}},
	{"ssh remote command", []string{"ssh", "-i", "k", "db01", "mysql -pRem0te -e 'show databases'"},
		[]string{"ssh", "-i", "k", "db01", "mysql -p[redacted:password] -e 'show databases'"}},
	{"ssh remote argv", []string{"ssh", "db01", "redis-cli", "-a", "R2", "ping"},
		[]string{"ssh", "db01", "redis-cli", "-a", "[redacted:password]", "ping"}},

	// SQL in -c and -e.
	{"create role", []string{"psql", "-h", "db", "-c", "create role r1 login password 'TopSecret-111'"},
		[]string{"psql", "-h", "db", "-c", "create role r1 login password '[redacted:password]'"}},
	{"encrypted password, doubled quote", []string{"psql", "--command=ALTER ROLE x WITH ENCRYPTED PASSWORD 'it''s'"},
		[]string{"psql", "--command=ALTER ROLE x WITH ENCRYPTED PASSWORD '[redacted:password]'"}},
	{"dollar quoted", []string{"psql", "-c", "ALTER USER x PASSWORD $pw$a'b$pw$"},
		[]string{"psql", "-c", "ALTER USER x PASSWORD $pw$[redacted:password]$pw$"}},
	{"identified by, set password", []string{"mysql", "-e", "CREATE USER 'u'@'%' IDENTIFIED WITH caching_sha2_password BY 'M1'; SET PASSWORD FOR 'u'@'%' = 'M2'"},
		[]string{"mysql", "-e", "CREATE USER 'u'@'%' IDENTIFIED WITH caching_sha2_password BY '[redacted:password]'; SET PASSWORD FOR 'u'@'%' = '[redacted:password]'"}},
	{"mariadb password()", []string{"mariadb", "--execute=SET PASSWORD = PASSWORD(\"M3\")"},
		[]string{"mariadb", "--execute=SET PASSWORD = PASSWORD(\"[redacted:password]\")"}},
	{"oracle unquoted", []string{"sqlplus", "/", "as", "sysdba", "@x", "ALTER USER app IDENTIFIED BY Or4cle;"},
		[]string{"sqlplus", "/", "as", "sysdba", "@x", "ALTER USER app IDENTIFIED BY [redacted:password];"}},
	{"sql server", []string{"sqlcmd", "-S", "db", "-U", "sa", "-P", "Sql1", "-Q", "CREATE LOGIN l WITH PASSWORD = N'Sql2'"},
		[]string{"sqlcmd", "-S", "db", "-U", "sa", "-P", "[redacted:password]", "-Q", "CREATE LOGIN l WITH PASSWORD = N'[redacted:password]'"}},
	{"plain query", []string{"psql", "-c", "SELECT password_hash FROM users WHERE id = 1"},
		[]string{"psql", "-c", "SELECT password_hash FROM users WHERE id = 1"}},

	// Content detectors.
	{"jwt", []string{"curl", "https://api/me?access=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln"},
		[]string{"curl", "https://api/me?access=[redacted:jwt]"}},
	{"aws access key", []string{"aws", "configure", "set", "aws_access_key_id", "AKIAIOSFODNN7EXAMPLE"},
		[]string{"aws", "configure", "set", "aws_access_key_id", "[redacted:aws_access_key]"}},
	{"aws secret", []string{"aws", "configure", "set", "aws_secret_access_key", "wJalrXUtnFEMI/K7MDENG"},
		[]string{"aws", "configure", "set", "aws_secret_access_key", "[redacted:secret]"}},
	{"private key", []string{"ssh-add", "-", "-----BEGIN OPENSSH PRIVATE KEY-----\nb3Blbg==\n-----END OPENSSH PRIVATE KEY-----"},
		[]string{"ssh-add", "-", "[redacted:private_key]"}},
	{"card", []string{"psql", "-c", "insert into cards values ('4111 1111 1111 1111')"},
		[]string{"psql", "-c", "insert into cards values ('[redacted:credit_card]')"}},
	{"not a card", []string{"sleep", "4111111111111112"},
		[]string{"sleep", "4111111111111112"}},

	// Nothing to redact.
	{"plain", []string{"ls", "-la", "/tmp"}, []string{"ls", "-la", "/tmp"}},
	{"grep password", []string{"grep", "-r", "password", "/etc/app"}, []string{"grep", "-r", "password", "/etc/app"}},
}

func TestArgs(t *testing.T) {
	if len(argvCases) < 40 {
		t.Fatalf("%d cases; the table must hold at least 40 real command lines", len(argvCases))
	}
	for _, tc := range argvCases {
		t.Run(tc.name, func(t *testing.T) {
			in := slices.Clone(tc.in)
			got, res := Default().Args("", in, nil)
			if !slices.Equal(got, tc.want) {
				t.Fatalf("Args(%q)\n got %q\nwant %q", tc.in, got, tc.want)
			}
			if !slices.Equal(in, tc.in) {
				t.Fatalf("input modified: %q", in)
			}
			if res.Changed != !slices.Equal(tc.in, tc.want) {
				t.Fatalf("Changed = %v", res.Changed)
			}
			again, res := Default().Args("", got, nil)
			if !slices.Equal(again, got) || res.Changed {
				t.Fatalf("not idempotent: %q -> %q", got, again)
			}
		})
	}
}

// A program is recognised by its executable when argv[0] does not name it.
func TestArgsBinary(t *testing.T) {
	got, _ := Default().Args("/usr/bin/mariadb", []string{"db-client", "-pS3cret"}, nil)
	if want := []string{"db-client", "-p[redacted:password]"}; !slices.Equal(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func TestUnchangedKeepsSlice(t *testing.T) {
	in := []string{"ls", "-la"}
	got, res := Default().Args("/bin/ls", in, nil)
	if &got[0] != &in[0] || res.Changed {
		t.Fatal("an argument vector with nothing to redact was copied")
	}
}

func TestCommandLine(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"mysql -uroot -pS3cret -e 'select 1'", "mysql -uroot -p[redacted:password] -e 'select 1'"},
		{"PGPASSWORD='a b' psql -h db; redis-cli -a R1 ping | cat", "PGPASSWORD=[redacted:password] psql -h db; redis-cli -a [redacted:password] ping | cat"},
		{`sh -c "sshpass -p 'x y' ssh h"`, `sh -c 'sshpass -p [redacted:password] ssh h'`},
		{"echo $(cat /x) `date`", "echo $(cat /x) `date`"},
		{"mysql -p'unterminated", "mysql -p[redacted:password]"},
	} {
		got, _ := Default().CommandLine(tc.in, nil)
		if got != tc.want {
			t.Errorf("CommandLine(%q)\n got %q\nwant %q", tc.in, got, tc.want)
		}
	}
}

func TestText(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"GET /api/v1/items?page=2&api_key=abc123&q=x HTTP/1.1", "GET /api/v1/items?page=2&api_key=[redacted:key]&q=x HTTP/1.1"},
		{"dial postgres://app:pw@db/x failed", "dial postgres://app:[redacted:password]@db/x failed"},
		{"Authorization: Bearer xyz\nHost: h", "Authorization: Bearer [redacted:token]\nHost: h"},
		{"nothing here", "nothing here"},
	} {
		if got := Default().Text(tc.in); got != tc.want {
			t.Errorf("Text(%q)\n got %q\nwant %q", tc.in, got, tc.want)
		}
	}
}

func TestMarker(t *testing.T) {
	for s, want := range map[string]bool{"[redacted:password]": true, "[redacted:aws_access_key]": true, "[redacted:]": false,
		"[redacted:Password]": false, "x[redacted:password]": false, "[redacted:a b]": false} {
		if IsMarker(s) != want {
			t.Errorf("IsMarker(%q) = %v", s, !want)
		}
	}
}

// The policy's list of built-in names, which it validates exemptions
// against, is this package's list.
func TestBuiltinsMatchPolicy(t *testing.T) {
	if !slices.Equal(Builtins(), policy.RedactionBuiltins()) {
		t.Fatalf("redact %v, policy %v", Builtins(), policy.RedactionBuiltins())
	}
}

func TestPolicy(t *testing.T) {
	r := New(policy.Redaction{
		Binaries: []policy.RedactionBinary{
			{Names: []string{"acmectl"}, Flags: []string{"-k", "--license", "-session"}, Kind: "license"},
			{Names: []string{"mysql"}, Flags: []string{"--login-key"}},
		},
		Patterns: []policy.RedactionPattern{
			{Name: "acme-key", Regexp: regexp.MustCompile(`acme_[A-Za-z0-9]{8}`)},
			{Name: "pin", Regexp: regexp.MustCompile(`pin:(\d+)`), Kind: "pin"},
		},
		Exemptions: []policy.RedactionExemption{
			{Name: "forensics", Groups: []string{"ir"}, Builtins: []string{policy.RedactionAll}, Reason: "IR-17"},
			{Name: "sql-visible", Groups: []string{"dba"}, Builtins: []string{"sql"}, Reason: "DBA-3"},
		},
	})
	cases := []struct {
		groups   []string
		in, want []string
		exempt   []string
	}{
		{nil, []string{"acmectl", "-kL1", "--license", "L2", "--license=L3", "-session=S", "run"},
			[]string{"acmectl", "-k[redacted:license]", "--license", "[redacted:license]", "--license=[redacted:license]", "-session=[redacted:license]", "run"}, nil},
		{nil, []string{"mysql", "--login-key", "K", "-pP"},
			[]string{"mysql", "--login-key", "[redacted:secret]", "-p[redacted:password]"}, nil},
		{nil, []string{"echo", "x acme_AbCd1234 y", "pin:1234"},
			[]string{"echo", "x [redacted:acme-key] y", "pin:[redacted:pin]"}, nil},
		// Exempt from everything built in; the policy's own rules stay.
		{[]string{"ir"}, []string{"mysql", "-pP", "--login-key", "K", "acme_AbCd1234"},
			[]string{"mysql", "-pP", "--login-key", "[redacted:secret]", "[redacted:acme-key]"}, []string{"forensics"}},
		// Exempt from one built-in only.
		{[]string{"dba", "eng"}, []string{"psql", "-c", "alter role x password 'P'", "password=Q"},
			[]string{"psql", "-c", "alter role x password 'P'", "password=[redacted:password]"}, []string{"sql-visible"}},
	}
	for _, tc := range cases {
		got, res := r.Args("", tc.in, tc.groups)
		if !slices.Equal(got, tc.want) {
			t.Errorf("Args(%q, groups %v)\n got %q\nwant %q", tc.in, tc.groups, got, tc.want)
		}
		if !slices.Equal(res.Exemptions, tc.exempt) {
			t.Errorf("Args(%q, groups %v): exemptions %v, want %v", tc.in, tc.groups, res.Exemptions, tc.exempt)
		}
	}
	// Text takes no groups: logs are redacted for everyone.
	if got := r.Text("pw=x acme_AbCd1234"); strings.Contains(got, "acme_AbCd1234") || strings.Contains(got, "pw=x") {
		t.Fatalf("Text: %q", got)
	}
}
