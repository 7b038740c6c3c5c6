#!/usr/bin/env bash
# Warden demo: everything on one host with embedded defaults.
#
#   dev IdP (NOT FOR PRODUCTION) → warden login → wardend (BPF + proxy)
#   → a protected PostgreSQL → signed events → warden-collector (embedded NATS)
#   → warden events, read by sam of the SOC with his own verified ID token
#
# The demo attaches its BPF programs to a cgroup subtree of its own and runs
# its shells there, so nothing else on this host is affected. In production
# wardend attaches to the cgroup2 root (cgroup_root: "").
#
# At the end it prints the web console's URL and keeps the dev IdP, the
# collector and wardend running until Ctrl-C. DEMO_EXIT=1 (for scripts:
# `make demo DEMO_EXIT=1`) ends right after the last step instead. Either
# way, everything it started is stopped and removed on exit.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
bin="$here/bin"
export PATH="$bin:$PATH"
# Whose token the collector commands carry is set below; nothing from the
# caller's environment stands in for it.
unset WARDEN_TOKEN_FILE WARDEN_COLLECTOR_CA

if [ "$(id -u)" -ne 0 ]; then
	echo "demo: run as root: sudo make demo" >&2
	exit 1
fi

work=$(mktemp -d /tmp/warden-demo.XXXXXX)
chmod 755 "$work"
cg2=$(awk '$9 == "cgroup2" { print $5; exit }' /proc/self/mountinfo)
[ -n "$cg2" ] || { echo "demo: no cgroup2 mount found" >&2; exit 1; }
cgroot="$cg2/warden-demo-$$"
pgport=55432
pids=()
# warden login caches the ID token per user; the demo's logins keep theirs
# in the demo's directory, removed at the end, not in root's home.
export XDG_CACHE_HOME=$work/cache

bold() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
step() { printf '\033[36m$ %s\033[0m\n' "$*"; }

cleanup() {
	set +e
	# A second Ctrl-C must not cut the cleanup short.
	trap '' INT TERM
	bold "cleaning up"
	# Leave the demo cgroup before removing it.
	echo $$ > "$cg2/cgroup.procs" 2>/dev/null
	for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null; done
	for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null; done
	[ -f "$work/agent.yaml" ] && wardend uninstall --config "$work/agent.yaml" >/dev/null 2>&1
	[ -d "$work/pg" ] && su postgres -s /bin/sh -c "$pgbin/pg_ctl -D $work/pg -m fast stop" >/dev/null 2>&1
	if [ -d "$cgroot" ]; then
		echo 1 > "$cgroot/cgroup.kill" 2>/dev/null
		sleep 0.3
		find "$cgroot" -depth -type d -exec rmdir {} \; 2>/dev/null
	fi
	[ -f /etc/ssh/ssh_known_hosts ] && sed -i '/ warden-demo$/d' /etc/ssh/ssh_known_hosts
	rm -rf "$work"
	echo "done; logs were in $work (removed)"
}
trap cleanup EXIT

wait_for() { # what, command...
	local what=$1; shift
	for _ in $(seq 1 200); do
		"$@" >/dev/null 2>&1 && return 0
		sleep 0.1
	done
	echo "demo: $what did not come up; see $work/*.log" >&2
	tail -n 30 "$work"/*.log >&2 || true
	exit 1
}

bold "1. a local PostgreSQL to protect (127.0.0.1:$pgport)"
pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
install -d -o postgres -g postgres "$work/pg" "$work/pgsock" "$work/pglog"
su postgres -s /bin/sh -c "$pgbin/initdb -D $work/pg -A trust -U postgres" >"$work/pg-init.log"
su postgres -s /bin/sh -c "$pgbin/pg_ctl -D $work/pg -l $work/pglog/postgres.log -o '-p $pgport -k $work/pgsock -c listen_addresses=127.0.0.1' start" >/dev/null
wait_for postgres "$pgbin/pg_isready" -h 127.0.0.1 -p $pgport
psql -h 127.0.0.1 -p $pgport -U postgres -q -c "create table customers(id int, email text, note text); insert into customers values (1, 'ada@example.com', 'card 4111 1111 1111 1111'), (2, 'alan@example.com', 'no secrets here')"

bold "2. the dev IdP (NOT FOR PRODUCTION) on 127.0.0.1:5556"
# The built-in users, and sam of the SOC, who reads the collector.
cat >"$work/users.yaml" <<'EOF'
- {sub: alice, email: alice@example.com, name: Alice Example, groups: [engineering]}
- {sub: bob, email: bob@example.com, name: Bob Example, groups: [dba, engineering]}
- {sub: mallory, email: mallory@example.com, name: Mallory Example, groups: [contractors]}
- {sub: sam, email: sam@example.com, name: Sam Example, groups: [soc]}
EOF
warden-devidp --listen 127.0.0.1:5556 --users "$work/users.yaml" >"$work/devidp.log" 2>&1 &
pids+=($!)
wait_for "dev IdP" curl -sf http://127.0.0.1:5556/.well-known/openid-configuration

mkdir -p "$cgroot"
cat >"$work/policy.yaml" <<EOF
targets:
  - name: demo-db
    protocol: postgres
    address: 127.0.0.1:$pgport
access:
  - groups: [engineering]
    targets: [demo-db]
  - groups: [contractors]        # just-in-time: only inside a window a dba approves
    targets: [demo-db]
    review: { approvers: [dba], grant: 5m }
rules:
  - name: no-ddl
    targets: [demo-db]
    when: { statements: [drop, truncate, alter] }
    action: deny
    except_groups: [dba]
  - name: unbounded-writes
    targets: [demo-db]
    when: { statements: [update, delete], no_where: true }
    action: review
    review: { approvers: [dba], hold: 1m, grant: once }
masking:
  - name: pii
    targets: [demo-db]
    columns: [email]
    detectors: [email, credit_card, ssn]
EOF
cat >"$work/agent.yaml" <<EOF
host_id: demo-host
oidc:
  issuer: http://127.0.0.1:5556
  client_id: warden
cgroup_root: $cgroot
proxy_listen: 127.0.0.1:15001
socket: $work/agent.sock
policy_file: $work/policy.yaml
nats:
  url: nats://127.0.0.1:4222
  creds_file: $work/agent.creds
spool_dir: $work/spool
key_file: $work/keys/agent.key
state_dir: $work/state
bpf_pin_dir: $work/bpf
metrics_listen: 127.0.0.1:9464
EOF
# The collector must trust the agent's key: create it before either runs,
# then enrol the bastion: its NATS creds (only its own host's subjects),
# its public keys recorded, and the agent.yaml lines it needs.
agentpub=$(wardend keygen --config "$work/agent.yaml")
step "warden-collector enroll demo-host --agent-key $agentpub"
warden-collector enroll demo-host --nats-auth "$work/nats-auth" --out "$work/agent.creds" --creds-path "$work/agent.creds" \
	--agent-key "$agentpub" --agent-keys "$work/collector-keys" --nats-url nats://127.0.0.1:4222 2>"$work/enroll.log" | sed 's/^/    /'

bold "3. warden-collector with embedded NATS (127.0.0.1:4222), API on 127.0.0.1:8181"
# The API (and the web console on the same port) serves only verified
# people: tokens of the dev IdP; groups soc and dba read.
warden-collector --embedded-nats --nats-listen 127.0.0.1:4222 --nats-store "$work/nats" \
	--store "$work/events.db" --listen 127.0.0.1:8181 --agent-keys "$work/collector-keys" --nats-auth "$work/nats-auth" \
	--oidc-issuer http://127.0.0.1:5556 --oidc-client-id warden --readers soc,dba >"$work/collector.log" 2>&1 &
pids+=($!)
wait_for collector curl -sf http://127.0.0.1:8181/healthz
export WARDEN_COLLECTOR=http://127.0.0.1:8181

bold "4. wardend: BPF on cgroup $cgroot, proxy on 127.0.0.1:15001"
wardend --config "$work/agent.yaml" >"$work/wardend.log" 2>&1 &
pids+=($!)
export WARDEN_AGENT_SOCKET=$work/agent.sock
wait_for wardend test -S "$work/agent.sock"
# The install step for SSH (docs/ssh.md): every user's ssh trusts the
# agent's host CA, whose line wardend wrote beside its socket.
mkdir -p /etc/ssh
sed -i '/ warden-demo$/d' /etc/ssh/ssh_known_hosts 2>/dev/null || true
echo "$(cat "$work/ssh_known_hosts") warden-demo" >> /etc/ssh/ssh_known_hosts
sed "s/^/    /" "$work/policy.yaml"

# From here on this script is a "user shell" inside the protected subtree.
mkdir -p "$cgroot/demo-shell"
echo $$ > "$cgroot/demo-shell/cgroup.procs"

bold "5. without a login, psql is refused by the proxy with PostgreSQL's own error"
step "psql -h 127.0.0.1 -p $pgport -U postgres -c 'select * from customers'"
psql -h 127.0.0.1 -p $pgport -U postgres -c 'select * from customers' 2>&1 | sed 's/^/    /' || true

# A user's shell on the bastion: log in with a token, then use psql as
# usual. Written to a file so events show a readable command line.
cat >"$work/user-shell.sh" <<'EOF'
step() { printf '\033[36m$ %s\033[0m\n' "$*"; }
step "warden login --token-file $(basename "$TOKEN")"
warden login --token-file "$TOKEN" || exit 1
step "warden whoami"
warden whoami | sed 's/^/    /'
for query in "$@"; do
	case $query in
	warden\ *) # a warden command, not SQL
		step "$query"
		eval "$query" 2>&1 | sed 's/^/    /' ;;
	*)
		step "psql -h 127.0.0.1 -p $PGPORT -U postgres -c \"$query\""
		# sed -u: a review's NOTICE shows while psql still waits.
		psql -h 127.0.0.1 -p "$PGPORT" -U postgres -c "$query" 2>&1 | sed -u 's/^/    /' ;;
	esac
done
EOF

bold "6. alice (group engineering) logs in and connects: emails are masked, DROP is refused"
curl -sf -d sub=alice -d format=raw http://127.0.0.1:5556/dev/token >"$work/alice.token"
TOKEN=$work/alice.token PGPORT=$pgport bash "$work/user-shell.sh" \
	'select * from customers' 'select 1; drop table customers' 'select count(*) from customers'

# approve ROLE RULE: bob (group dba) approves the first pending review of
# RULE, as an approver would from another terminal.
approve() {
	local id=""
	for _ in $(seq 1 100); do
		id=$(WARDEN_TOKEN_FILE=$work/bob.token warden review list --state pending --json 2>/dev/null |
			grep "\"rule\":\"$1\"" | head -1 | grep -o '"id":"R-[0-9A-HJKMNP-TV-Z]\{26\}"' | cut -d'"' -f4) || true
		[ -n "$id" ] && break
		sleep 0.2
	done
	[ -n "$id" ] || { echo "demo: no pending review of $1" >&2; exit 1; }
	step "warden review approve $id --reason 'ok, ticket 42'   # bob, group dba, from another terminal"
	WARDEN_TOKEN_FILE=$work/bob.token warden review approve "$id" --reason 'ok, ticket 42' 2>&1 | sed 's/^/    /'
}
curl -sf -d sub=bob -d format=raw http://127.0.0.1:5556/dev/token >"$work/bob.token"

bold "7. alice's UPDATE without WHERE waits in psql for a review; bob (group dba) approves it"
TOKEN=$work/alice.token PGPORT=$pgport bash "$work/user-shell.sh" "update customers set note = 'reviewed'" &
held=$!
approve unbounded-writes
wait $held

bold "8. mallory (group contractors) logs in; the kernel refuses her connect() with EPERM until a dba approves her request"
curl -sf -d sub=mallory -d format=raw http://127.0.0.1:5556/dev/token >"$work/mallory.token"
TOKEN=$work/mallory.token PGPORT=$pgport bash "$work/user-shell.sh" 'select 1' \
	"warden access request demo-db --reason 'incident 4711' --for 2m" || true
approve access
sleep 1
TOKEN=$work/mallory.token PGPORT=$pgport bash "$work/user-shell.sh" 'select count(*) from customers'

bold "9. the signed events at the collector, for verified readers only"
sleep 2
# mallory's login left her token in the CLI's cache; she reads nothing.
step "warden events --limit 1   # the token warden login cached: mallory's"
warden events --limit 1 2>&1 | sed 's/^/    /' || true
curl -sf -d sub=sam -d format=raw http://127.0.0.1:5556/dev/token >"$work/sam.token"
export WARDEN_TOKEN_FILE=$work/sam.token
step "export WARDEN_TOKEN_FILE=sam.token   # sam, group soc: a --readers group"
step "warden events --type net.connect --since 10m"
warden events --type net.connect --since 10m | sed 's/^/    /'
step "warden events --type db.query --since 10m"
warden events --type db.query --since 10m | sed 's/^/    /'
# Each statement is recorded before it runs; its outcome follows, linked.
step "warden events --type db.result --since 10m"
warden events --type db.result --since 10m | sed 's/^/    /'
# Every review, requested and decided, is in the signed chain too.
step "warden events --type review.decided --since 10m"
warden events --type review.decided --since 10m | sed 's/^/    /'
# The refused DROP: walk from the statement back to the person.
id=$(warden events --type db.query --user alice --json | grep -i '"statement":"drop' | head -1 | grep -o '"id":"[0-9A-HJKMNP-TV-Z]\{26\}"' | head -1 | cut -d'"' -f4) || true
if [ -n "$id" ]; then
	step "warden lineage $id"
	warden lineage "$id" | sed 's/^/    /'
fi
step "warden sessions"
warden sessions | sed 's/^/    /'

bold "demo complete"
warden-collector soc-creds sam --nats-auth "$work/nats-auth" --out "$work/sam.creds" 2>/dev/null
echo "SOC: read-only NATS creds in $work/sam.creds; tail live with"
echo "  nats --server nats://127.0.0.1:4222 --creds $work/sam.creds sub 'warden.events.>'"
echo "while the demo runs (anonymous clients are refused)."

bold "10. the web console: http://127.0.0.1:8181/"
cat <<EOF
Open http://127.0.0.1:8181/ in a browser on this host. It sends you to the dev
IdP (NOT FOR PRODUCTION), which lists its users: pick one to sign in, no password.
  sam  (group soc: --readers)  the live stream, search, sessions, lineage, replay, integrity
  bob  (group dba: --readers)  the same, and Approve/Deny on the reviews dba decides
  alice, mallory               not readers: the console refuses them, as the API does
From another machine, forward both ports first (the IdP redirects the browser):
  ssh -L 8181:127.0.0.1:8181 -L 5556:127.0.0.1:5556 root@THIS-HOST
EOF
if [ "${DEMO_EXIT:-0}" = 1 ]; then
	exit 0
fi
echo
echo "The dev IdP, warden-collector and wardend keep running; press Ctrl-C to stop and clean up."
# The EXIT trap cleans up; Ctrl-C or a TERM only has to end the loop.
trap 'exit 0' INT TERM
while sleep 1; do
	for pid in "${pids[@]}"; do
		if ! kill -0 "$pid" 2>/dev/null; then
			echo "demo: a service stopped (pid $pid); see $work/*.log" >&2
			tail -n 20 "$work"/*.log >&2 || true
			exit 1
		fi
	done
done
