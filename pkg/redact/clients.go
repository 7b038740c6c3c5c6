package redact

import "strings"

// client is what Warden knows about one program's command line: the
// options whose values are secrets, how its short options bundle, and
// positional arguments that are secrets.
type client struct {
	// opts are the options with a secret (or a command line) as value.
	opts []option
	// bundle lists the short options that take no value, so that a
	// bundle like curl's -sSu or mysql's -vpSECRET is read as the program
	// reads it. Empty: single-dash arguments are matched whole only.
	bundle string
	// bundleValue lists the short options that take a value but are not
	// secrets (mysql's -u, -h): in a bundle their value ends the bundle.
	bundleValue string
	// switches look like secret flags to the generic rule but take no
	// value (psql's --password prompts): the next argument is not theirs.
	switches []string
	// shell: the program is a shell; with -c (alone or in a bundle) its
	// first operand is a command line.
	shell bool
	// remote: operands holding blanks are command lines run by a shell
	// (ssh's remote command, watch's command).
	remote bool
	// operands, when set, redacts secrets among the program's operands:
	// ops are the indexes of its non-option arguments, in order.
	operands func(p *pass, ops []int)
}

// option is a flag whose value the rule rewrites.
type option struct {
	// flag as typed: "-p", "--password", "-storepass", "/p:".
	flag string
	// attached: the value may follow in the same argument: -pVALUE for a
	// one-letter flag, --flag=VALUE or -flag=VALUE for a long one, and
	// /p:VALUE for a flag that ends in ':' or '='.
	attached bool
	// separate: the value may be the next argument.
	separate bool
	// abbrev, if not zero, accepts unique abbreviations of a long flag
	// down to that many letters, as MySQL's option parser does
	// (--pass=SECRET is --password=SECRET).
	abbrev int
	// kind names the value in its marker.
	kind string
	// value rewrites the value; nil replaces it whole (or, for a
	// script option, redacts it as a command line). Values that are
	// already markers are never passed in.
	value func(c *config, v, kind string, depth int) string
	// after, if set, limits the option to after this operand (docker's -p
	// is a password only in "docker login").
	after string
	// script: the value is a command line (su -c).
	script bool
}

// whole is the value rewrite of most options.
func whole(_ *config, v, kind string, _ int) string {
	if v == "" || IsMarker(v) {
		return v
	}
	return Marker(kind)
}

// keepBefore returns a rewrite that keeps what comes before the first sep
// (the user in curl's user:password) and redacts the rest. A value without
// sep holds no secret: the program prompts for it.
func keepBefore(sep byte) func(*config, string, string, int) string {
	return func(_ *config, v, kind string, _ int) string {
		i := indexOutsideMarkers(v, sep)
		if i < 0 {
			return v
		}
		rest := v[i+1:]
		if rest == "" || IsMarker(rest) {
			return v
		}
		return v[:i+1] + Marker(kind)
	}
}

// afterPrefix returns a rewrite that redacts what follows prefix, and
// leaves values without it alone (openssl's pass:SECRET, but env:VAR).
func afterPrefix(prefix string) func(*config, string, string, int) string {
	return func(_ *config, v, kind string, _ int) string {
		rest, ok := strings.CutPrefix(v, prefix)
		if !ok || rest == "" || IsMarker(rest) {
			return v
		}
		return prefix + Marker(kind)
	}
}

// headerValue rewrites a header given as an option value (curl -H).
func headerValue(c *config, v, _ string, _ int) string {
	if c.on(ruleHeaders) {
		return redactHeader(v)
	}
	return v
}

// cookieValue redacts a cookie string (name=value pairs), not a cookie
// file name.
func cookieValue(_ *config, v, kind string, _ int) string {
	if !strings.Contains(v, "=") || IsMarker(v) {
		return v
	}
	return Marker(kind)
}

// commandValue is an option whose value is a shell command line (su -c).
func commandValue(c *config, v, _ string, depth int) string {
	return c.commandLine(v, depth+1)
}

// literalValue is kubectl's --from-literal=KEY=VALUE: the key stays.
func literalValue(_ *config, v, kind string, _ int) string {
	return keepBefore('=')(nil, v, kind, 0)
}

func opts(kind string, attached, separate bool, flags ...string) []option {
	out := make([]option, len(flags))
	for i, f := range flags {
		out[i] = option{flag: f, attached: attached, separate: separate, kind: kind}
	}
	return out
}

func with(os []option, f func(*option)) []option {
	for i := range os {
		f(&os[i])
	}
	return os
}

func cat(lists ...[]option) []option {
	var out []option
	for _, l := range lists {
		out = append(out, l...)
	}
	return out
}

// Client families.
var (
	// MySQL and MariaDB clients: -p takes its value only attached (-p
	// alone, or -p followed by an argument, prompts: "mysql -p dbname");
	// --password=SECRET, and --password SECRET, where the client would in
	// fact prompt and take SECRET as the database name, which is too
	// likely a mistake with a real password to record. my_getopt accepts
	// abbreviations (--pass=, --passw=).
	mysqlClient = &client{
		opts: []option{
			{flag: "-p", attached: true, kind: "password"},
			{flag: "--password", attached: true, separate: true, abbrev: 3, kind: "password"},
		},
		bundle:      "?IABNcCTfHiLGboqrUstnvVEwXWjRkKyYz",
		bundleValue: "DehPSuO#",
		operands:    mysqladminOperands,
	}
	// PostgreSQL clients: --password and -W force a prompt.
	pgClient    = &client{switches: []string{"--password", "-W"}}
	shellClient = &client{shell: true}
)

// clients maps program names to what Warden knows of them.
var clients = map[string]*client{
	"sshpass": {opts: opts("password", true, true, "-p")},
	"redis-cli": {
		opts:     cat(opts("password", true, true, "-a"), opts("password", true, true, "--pass")),
		switches: []string{"--askpass"},
		operands: redisOperands,
	},
	"curl": {
		opts: cat(
			with(opts("password", true, true, "-u", "--user", "-U", "--proxy-user"), func(o *option) { o.value = keepBefore(':') }),
			with(opts("authorization", true, true, "-H", "--header", "--proxy-header"), func(o *option) { o.value = headerValue }),
			with(opts("cookie", true, true, "-b", "--cookie"), func(o *option) { o.value = cookieValue }),
			with(opts("password", true, true, "-E", "--cert", "--proxy-cert"), func(o *option) { o.value = keepBefore(':') }),
			opts("token", true, true, "--oauth2-bearer"),
		),
		bundle: "0123456aBfgGIiJjkKlLMnNOpqRsSvVZ#:",
	},
	"wget":       {opts: with(opts("authorization", true, true, "--header"), func(o *option) { o.value = headerValue })},
	"htpasswd":   {bundle: "cnmBdspDvbix", bundleValue: "Cr", operands: htpasswdOperands},
	"ssh":        {remote: true},
	"watch":      {remote: true},
	"su":         {opts: with(opts("command", true, true, "-c", "--command", "--session-command"), func(o *option) { o.script = true })},
	"runuser":    {opts: with(opts("command", true, true, "-c", "--command", "--session-command"), func(o *option) { o.script = true })},
	"script":     {opts: with(opts("command", true, true, "-c", "--command"), func(o *option) { o.script = true })},
	"flock":      {opts: with(opts("command", true, true, "-c", "--command"), func(o *option) { o.script = true })},
	"ssh-keygen": {opts: opts("passphrase", true, true, "-N", "-P")},
	"openssl": {opts: cat(
		with(opts("password", false, true, "-passin", "-passout", "-pass", "-password"), func(o *option) { o.value = afterPrefix("pass:") }),
		opts("password", false, true, "-k"),
	)},
	"keytool": {opts: opts("password", true, true, "-storepass", "-keypass", "-srcstorepass", "-deststorepass",
		"-srckeypass", "-destkeypass", "-new")},
	"ipmitool":      {opts: opts("password", true, true, "-P")},
	"sqlcmd":        {opts: opts("password", true, true, "-P")},
	"bcp":           {opts: opts("password", true, true, "-P")},
	"mosquitto_pub": {opts: opts("password", true, true, "-P")},
	"mosquitto_sub": {opts: opts("password", true, true, "-P")},
	"zip":           {opts: opts("password", true, true, "-P")},
	"unzip":         {opts: opts("password", true, true, "-P")},
	"7z":            {opts: opts("password", true, false, "-p")},
	"7za":           {opts: opts("password", true, false, "-p")},
	"rar":           {opts: opts("password", true, false, "-p")},
	"unrar":         {opts: opts("password", true, false, "-p")},
	"useradd":       {opts: opts("password", true, true, "-p")},
	"usermod":       {opts: opts("password", true, true, "-p")},
	"rdesktop":      {opts: opts("password", true, true, "-p")},
	"xfreerdp":      {opts: opts("password", true, false, "/p:", "/gp:", "/password:")},
	"sdl-freerdp":   {opts: opts("password", true, false, "/p:", "/gp:", "/password:")},
	"wlfreerdp":     {opts: opts("password", true, false, "/p:", "/gp:", "/password:")},
	"smbclient":     {opts: with(opts("password", true, true, "-U", "--user"), func(o *option) { o.value = keepBefore('%') })},
	"rpcclient":     {opts: with(opts("password", true, true, "-U", "--user"), func(o *option) { o.value = keepBefore('%') })},
	"smbcacls":      {opts: with(opts("password", true, true, "-U", "--user"), func(o *option) { o.value = keepBefore('%') })},
	"lftp":          {opts: with(opts("password", true, true, "-u", "--user"), func(o *option) { o.value = keepBefore(',') })},
	"mongo":         {opts: opts("password", true, true, "-p")},
	"mongosh":       {opts: opts("password", true, true, "-p")},
	"mongodump":     {opts: opts("password", true, true, "-p")},
	"mongorestore":  {opts: opts("password", true, true, "-p")},
	"mongoexport":   {opts: opts("password", true, true, "-p")},
	"mongoimport":   {opts: opts("password", true, true, "-p")},
	"snmpwalk":      {opts: cat(opts("password", true, true, "-A", "-X"), opts("secret", true, true, "-c"))},
	"snmpget":       {opts: cat(opts("password", true, true, "-A", "-X"), opts("secret", true, true, "-c"))},
	"snmpset":       {opts: cat(opts("password", true, true, "-A", "-X"), opts("secret", true, true, "-c"))},
	"snmpbulkwalk":  {opts: cat(opts("password", true, true, "-A", "-X"), opts("secret", true, true, "-c"))},
	"kubectl":       {opts: with(opts("secret", true, true, "--from-literal"), func(o *option) { o.value = literalValue })},
	"oc":            {opts: with(opts("secret", true, true, "--from-literal"), func(o *option) { o.value = literalValue })},
	"gh":            {opts: with(opts("secret", true, true, "-b", "--body"), func(o *option) { o.after = "secret" })},
	"sqlplus":       {operands: sqlplusOperands},
	"rabbitmqctl":   {operands: rabbitmqOperands},
	"vault":         {operands: vaultOperands},
	"wpa_passphrase": {operands: func(p *pass, ops []int) {
		if len(ops) >= 2 {
			p.wholeAt(ops[1], "password")
		}
	}},
	"isql": {operands: func(p *pass, ops []int) { // isql DSN [USER [PASSWORD]]
		if len(ops) >= 3 {
			p.wholeAt(ops[2], "password")
		}
	}},
}

func init() {
	for _, n := range []string{"mysql", "mariadb", "mysqldump", "mariadb-dump", "mysqladmin", "mariadb-admin",
		"mysqlimport", "mariadb-import", "mysqlshow", "mariadb-show", "mysqlcheck", "mariadb-check", "mysqlbinlog",
		"mariadb-binlog", "mysqlslap", "mariadb-slap", "mysqlpump", "mysqlsh", "mysql_upgrade", "mariadb-upgrade",
		"mariadb-backup", "mariabackup", "mysql_secure_installation"} {
		clients[n] = mysqlClient
	}
	for _, n := range []string{"psql", "pg_dump", "pg_dumpall", "pg_restore", "pg_basebackup", "pg_receivewal",
		"pg_recvlogical", "createdb", "createuser", "dropdb", "dropuser", "vacuumdb", "reindexdb", "clusterdb",
		"pg_isready", "pgbench", "pg_amcheck"} {
		clients[n] = pgClient
	}
	for _, n := range []string{"sh", "bash", "dash", "zsh", "ksh", "mksh", "ash", "fish", "busybox"} {
		clients[n] = shellClient
	}
	for _, n := range []string{"valkey-cli", "keydb-cli"} {
		clients[n] = clients["redis-cli"]
	}
	for _, n := range []string{"ldapsearch", "ldapadd", "ldapmodify", "ldapdelete", "ldapmodrdn", "ldapcompare",
		"ldapwhoami", "ldapexop", "ldappasswd"} {
		c := &client{opts: opts("password", true, true, "-w"), bundle: "AcCFLMnNQrtuvWxZIj", bundleValue: "bDeEfhHlopPsSTUXYyzaK"}
		if n == "ldappasswd" {
			c.opts = opts("password", true, true, "-w", "-s", "-a")
			c.bundleValue = "bDeEfhHlopPSTUXYyzK"
		}
		clients[n] = c
	}
	for _, n := range []string{"docker", "podman", "nerdctl", "buildah", "skopeo", "helm", "oras"} {
		clients[n] = &client{opts: with(opts("password", true, true, "-p"), func(o *option) { o.after = "login" })}
	}
	clients["aws"] = &client{operands: awsOperands}
}

// mysqladminOperands: "mysqladmin password NEW" and "old-password NEW".
func mysqladminOperands(p *pass, ops []int) {
	for k, i := range ops {
		switch strings.ToLower(p.arg(i)) {
		case "password", "old-password":
			if k+1 < len(ops) {
				p.wholeAt(ops[k+1], "password")
			}
		}
	}
}

// htpasswdOperands: with -b the password is the last operand ("htpasswd
// -b file user pass", "htpasswd -nb user pass").
func htpasswdOperands(p *pass, ops []int) {
	if p.bundled['b'] && len(ops) >= 2 {
		p.wholeAt(ops[len(ops)-1], "password")
	}
}

// redisOperands: AUTH [user] pass, HELLO ... AUTH user pass, MIGRATE ...
// AUTH pass / AUTH2 user pass, CONFIG SET requirepass|masterauth VALUE,
// and ACL SETUSER rules >password.
func redisOperands(p *pass, ops []int) {
	for k, i := range ops {
		rest := len(ops) - k - 1
		switch strings.ToLower(p.arg(i)) {
		case "auth":
			// AUTH pass, AUTH user pass; HELLO/MIGRATE ... AUTH user pass.
			switch {
			case rest >= 2:
				p.wholeAt(ops[k+2], "password")
			case rest == 1:
				p.wholeAt(ops[k+1], "password")
			}
		case "auth2":
			if rest >= 2 {
				p.wholeAt(ops[k+2], "password")
			}
		case "requirepass", "masterauth", "masteruser-password", "tls-key-file-pass", "tls-client-key-file-pass":
			if rest >= 1 && k > 0 && strings.EqualFold(p.arg(ops[k-1]), "set") {
				p.wholeAt(ops[k+1], "password")
			}
		case "setuser":
			for _, j := range ops[k+1:] {
				if a := p.arg(j); len(a) > 1 && (a[0] == '>' || a[0] == '<') && !IsMarker(a[1:]) {
					p.set(j, a[:1]+Marker("password"))
				}
			}
		}
	}
}

// sqlplusOperands: the login user/password[@connect].
func sqlplusOperands(p *pass, ops []int) {
	for _, i := range ops {
		a := p.arg(i)
		slash := indexOutsideMarkers(a, '/')
		if slash <= 0 || strings.ContainsAny(a[:slash], " @") {
			continue
		}
		rest := a[slash+1:]
		pw, at := rest, ""
		if j := strings.LastIndexByte(rest, '@'); j >= 0 {
			pw, at = rest[:j], rest[j:]
		}
		if pw != "" && !IsMarker(pw) {
			p.set(i, a[:slash+1]+Marker("password")+at)
		}
		return
	}
}

// rabbitmqOperands: add_user, change_password and authenticate_user NAME
// PASSWORD.
func rabbitmqOperands(p *pass, ops []int) {
	for k, i := range ops {
		switch p.arg(i) {
		case "add_user", "change_password", "authenticate_user":
			if k+2 < len(ops) {
				p.wholeAt(ops[k+2], "password")
			}
		}
	}
}

// vaultOperands: "vault login TOKEN" (key=value forms are left to the
// key/value rule).
func vaultOperands(p *pass, ops []int) {
	for k, i := range ops {
		if p.arg(i) == "login" && k+1 < len(ops) && !strings.Contains(p.arg(ops[k+1]), "=") {
			p.wholeAt(ops[k+1], "token")
		}
	}
}

// awsOperands: "aws configure set aws_secret_access_key VALUE".
func awsOperands(p *pass, ops []int) {
	for k, i := range ops {
		if p.arg(i) == "set" && k+2 < len(ops) {
			if kind, ok := secretName(p.arg(ops[k+1])); ok {
				p.wholeAt(ops[k+2], kind)
			}
		}
	}
}

// indexOutsideMarkers is strings.IndexByte, skipping markers.
func indexOutsideMarkers(s string, c byte) int {
	spans := markerSpans(s)
	for i := 0; i < len(s); i++ {
		if s[i] == c && !inSpans(spans, i) {
			return i
		}
	}
	return -1
}
