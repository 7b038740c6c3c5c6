#!/usr/bin/env bash
# Installs what Warden's build, tests and demo need on Debian or Ubuntu.
# Idempotent: packages already present are left alone.
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
	echo "install-deps: run as root (sudo make ...)" >&2
	exit 1
fi

packages=(
	clang llvm libbpf-dev         # BPF: make generate
	iproute2 util-linux sudo      # tests: network namespaces, nsenter
	postgresql postgresql-client  # protected target and psql client
	pgbouncer                     # bench: PgBouncer 1.18 (session mode) beside the relay and Warden
	mariadb-client redis-tools    # e2e: real mariadb and redis-cli command lines (redaction)
	mariadb-server sysbench       # e2e and bench: the MySQL codec against a real MariaDB 10.11
	sshpass apache2-utils         # e2e: sshpass -p and htpasswd -b command lines (redaction)
	openssh-server openssh-client # e2e: a real sshd and ssh relayed through the agent (lifetime)
	curl ca-certificates ruby     # demo, Vagrantfile syntax check
	redis-server xrdp freerdp2-x11 xvfb # e2e: real Redis 7 and RDP server, FreeRDP client (headless under Xvfb)
	nginx-light                   # e2e and bench: the HTTP codec against a real nginx (ab, from apache2-utils, benches it)
	chromium fonts-dejavu-core fonts-liberation # e2e: the console in headless Chromium (chromedp), screenshots with real fonts
)
missing=()
for p in "${packages[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	export DEBIAN_FRONTEND=noninteractive
	apt-get update
	apt-get install -y --no-install-recommends "${missing[@]}"
fi
# The tests start their own sshd on loopback in a network namespace and
# never use the system's. openssh-server's postinst enables and, where an
# init system runs, starts ssh.service on port 22; this script leaves that
# as the package does (a machine reached over ssh needs it). To keep it off:
# systemctl disable --now ssh.service

# Go: use the one on PATH or in /usr/local/go; otherwise the distribution's,
# which fetches the version go.mod names through the module proxy.
if ! command -v go >/dev/null 2>&1 && [ ! -x /usr/local/go/bin/go ]; then
	export DEBIAN_FRONTEND=noninteractive
	apt-get install -y --no-install-recommends golang-go
fi

# Node.js and npm: make check-ui (CI) rebuilds the web console's front-end
# files. Machines of this kind have them; install the distribution's only
# where npm is missing. go build never needs them.
if ! command -v npm >/dev/null 2>&1; then
	export DEBIAN_FRONTEND=noninteractive
	apt-get install -y --no-install-recommends nodejs npm
fi
