#!/usr/bin/env bash
# services.sh — make sure the real services kiln's tests talk to are running,
# and what else `make test` needs from the machine beyond Go.
#
#   scripts/services.sh            ensure Redis 7 and PostgreSQL 15, print the env
#   eval "$(scripts/services.sh)"  ... and export it into the current shell
#
# What it does, in order, and only as much as needed:
#   0. Install what is missing from Debian's packages, in one apt-get call:
#      redis-server, postgresql, gcc (the race detector needs cgo),
#      bubblewrap (the code package runner's sandbox, whose tests must run),
#      chromium, nodejs and npm (the dashboard's browser tests).
#   1. Redis: if KILN_TEST_REDIS_URL answers PING, use it. Otherwise start
#      redis-server on loopback with nothing kept on disk, and wait until it
#      answers.
#   2. PostgreSQL: if KILN_TEST_POSTGRES_URL accepts a query, use it. Otherwise
#      start the cluster, wait until it accepts connections, and create the test
#      role and database.
#   3. Print `export KILN_TEST_REDIS_URL=...` and `export KILN_TEST_POSTGRES_URL=...`
#      on stdout. Everything else goes to stderr, so the output can be eval'ed.
#
# The URLs may be set by the caller (the Makefile sets the defaults below). A
# URL that points to another machine is only checked, never installed.
# When everything already runs the script takes well under a second, so
# `make test` calls it every time. Installing needs root (it uses apt-get).
set -euo pipefail

REDIS_URL_DEFAULT='redis://127.0.0.1:6379/0'
# A password role, not `postgres`: a fresh Debian cluster uses scram-sha-256 for
# TCP connections from 127.0.0.1, and a machine set to trust ignores the password.
POSTGRES_URL_DEFAULT='postgres://kiln:kiln@127.0.0.1:5432/kiln_test?sslmode=disable'

KILN_TEST_REDIS_URL="${KILN_TEST_REDIS_URL:-$REDIS_URL_DEFAULT}"
KILN_TEST_POSTGRES_URL="${KILN_TEST_POSTGRES_URL:-$POSTGRES_URL_DEFAULT}"

READY_TIMEOUT_S="${KILN_SERVICES_READY_TIMEOUT:-30}" # per service, bounded

log() { printf 'services: %s\n' "$*" >&2; }
die() { printf 'services: error: %s\n' "$*" >&2; exit 1; }

is_local_host() {
	case "$1" in
	127.0.0.1 | localhost | ::1 | '[::1]') return 0 ;;
	*) return 1 ;;
	esac
}

# wait_for NAME CMD... — run CMD until it succeeds, at most READY_TIMEOUT_S.
wait_for() {
	local name=$1 i
	shift
	for ((i = 0; i < READY_TIMEOUT_S * 5; i++)); do
		if "$@" >/dev/null 2>&1; then
			return 0
		fi
		sleep 0.2
	done
	die "$name is not ready after ${READY_TIMEOUT_S}s (tried: $*)"
}

# apt_install PKG... — install Debian packages; refresh the lists only when the
# install fails without doing so (they may be old or missing on a new machine).
apt_install() {
	command -v apt-get >/dev/null || die "apt-get not found: install $* by hand"
	[[ $(id -u) == 0 ]] || die "installing $* needs root (apt-get); run as root or install them by hand"
	log "installing $* from Debian's packages (one-off, takes a minute)"
	export DEBIAN_FRONTEND=noninteractive
	# Another apt-get may hold dpkg's lock (a new machine often runs one at
	# boot): wait for it, up to 5 minutes, instead of failing at once.
	local apt=(apt-get -o DPkg::Lock::Timeout=300)
	if ! "${apt[@]}" install -y -q "$@" >&2; then
		log "apt-get install failed; running apt-get update and trying again"
		"${apt[@]}" update -q >&2
		"${apt[@]}" install -y -q "$@" >&2
	fi
}

# ------------------------------------------------------------- packages ----
# install_missing — one apt-get call for everything missing. A service that
# already answers at its URL needs nothing, even if its tools are elsewhere.
install_missing() {
	local pkgs=()
	if ! { command -v redis-cli >/dev/null && redis_ping; } &&
		! { command -v redis-server >/dev/null && command -v redis-cli >/dev/null; }; then
		pkgs+=(redis-server)
	fi
	if ! command -v psql >/dev/null ||
		{ ! pg_query_ok && ! { command -v pg_ctlcluster >/dev/null && compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null; }; }; then
		pkgs+=(postgresql)
	fi
	# `go test -race` needs cgo, so a C compiler and the C library headers.
	local cc=${CC:-gcc} # what cgo uses unless CC says otherwise
	if ! command -v "${cc%% *}" >/dev/null; then
		pkgs+=(gcc libc6-dev)
	fi
	# The runner's sandbox (runner.SandboxBwrap): its tests run, not skip,
	# under KILN_TEST_REQUIRE_ALL.
	if ! command -v bwrap >/dev/null; then
		pkgs+=(bubblewrap)
	fi
	# The dashboard's browser tests (make test/browser) drive Debian's
	# Chromium with playwright-core (npm), which needs node and npm.
	if [[ ! -x ${KILN_TEST_CHROMIUM:-/usr/bin/chromium} ]]; then
		pkgs+=(chromium)
	fi
	if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
		pkgs+=(nodejs npm)
	fi
	if ((${#pkgs[@]} > 0)); then
		apt_install "${pkgs[@]}"
	fi
}

# ---------------------------------------------------------------- Redis 7 ----
redis_ping() { [[ $(redis-cli -u "$KILN_TEST_REDIS_URL" ping 2>/dev/null) == PONG ]]; }

ensure_redis() {
	if command -v redis-cli >/dev/null && redis_ping; then
		log "redis: running at $KILN_TEST_REDIS_URL"
		return
	fi
	# redis://[user:pass@]host[:port][/db]
	local re='^rediss?://([^@/]*@)?([^:/]+)(:([0-9]+))?(/.*)?$'
	[[ $KILN_TEST_REDIS_URL =~ $re ]] || die "cannot parse KILN_TEST_REDIS_URL=$KILN_TEST_REDIS_URL"
	local host=${BASH_REMATCH[2]} port=${BASH_REMATCH[4]:-6379}
	is_local_host "$host" || die "redis at $KILN_TEST_REDIS_URL does not answer PING (not local: not starting one)"

	command -v redis-server >/dev/null || die "redis-server is not installed"
	local dir=/var/lib/redis logfile=/var/log/redis/ci.log
	[[ -d $dir && -w $dir ]] || dir=$(mktemp -d -t kiln-redis.XXXXXX)
	[[ -d ${logfile%/*} && -w ${logfile%/*} ]] || logfile="$dir/redis.log"
	log "redis: starting redis-server on 127.0.0.1:$port (no persistence, log $logfile)"
	redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "$port" \
		--save "" --appendonly no --dir "$dir" --logfile "$logfile" >&2
	wait_for redis redis_ping
	log "redis: ready at $KILN_TEST_REDIS_URL ($(redis-cli -u "$KILN_TEST_REDIS_URL" info server 2>/dev/null | tr -d '\r' | sed -n 's/^redis_version:/v/p'))"
}

# ---------------------------------------------------------- PostgreSQL 15 ----
pg_query_ok() { psql -w -X -A -t -q -d "$KILN_TEST_POSTGRES_URL" -c 'select 1' 2>/dev/null | grep -qx 1; }

# pg_admin SQL — run SQL as the superuser: over TCP as postgres where the
# cluster trusts loopback, else over the socket with peer auth (fresh Debian).
pg_admin() {
	local port=$1 sql=$2
	if psql -w -X -A -t -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres -d postgres -c "$sql" 2>/dev/null; then
		return 0
	fi
	[[ $(id -u) == 0 ]] || die "cannot connect to PostgreSQL as postgres; set KILN_TEST_POSTGRES_URL to a working database"
	runuser -u postgres -- psql -X -A -t -q -v ON_ERROR_STOP=1 -p "$port" -d postgres -c "$sql"
}

ensure_postgres() {
	if command -v psql >/dev/null && pg_query_ok; then
		log "postgres: running at $(redact "$KILN_TEST_POSTGRES_URL")"
		return
	fi
	# postgres://user[:pass]@host[:port]/db[?params]
	local re='^postgres(ql)?://([^:@/]+)(:([^@/]*))?@([^:/?]+)(:([0-9]+))?/([^?]+)(\?.*)?$'
	[[ $KILN_TEST_POSTGRES_URL =~ $re ]] ||
		die "cannot parse KILN_TEST_POSTGRES_URL=$(redact "$KILN_TEST_POSTGRES_URL") (want postgres://user[:pass]@host[:port]/db)"
	local user=${BASH_REMATCH[2]} pass=${BASH_REMATCH[4]} host=${BASH_REMATCH[5]}
	local port=${BASH_REMATCH[7]:-5432} db=${BASH_REMATCH[8]}
	is_local_host "$host" || die "postgres at $(redact "$KILN_TEST_POSTGRES_URL") does not accept queries (not local: not starting one)"

	command -v pg_ctlcluster >/dev/null || die "postgresql is not installed"
	local version
	version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1)
	if [[ -z $version || ! -d /etc/postgresql/$version/main ]]; then
		version=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
		log "postgres: creating cluster $version/main"
		pg_createcluster "$version" main --port "$port" >&2
	fi
	if ! pg_isready -q -h 127.0.0.1 -p "$port"; then
		log "postgres: starting cluster $version/main"
		# Exit code 2 means "already running" (say, still starting up): fine.
		pg_ctlcluster --skip-systemctl-redirect "$version" main start >&2 || [[ $? == 2 ]]
	fi
	wait_for postgres pg_isready -q -h 127.0.0.1 -p "$port"

	# The test role owns the test database, so tests can create a schema each.
	local sql_pass=${pass//\'/\'\'}
	pg_admin "$port" "DO \$\$ BEGIN
		IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$user') THEN
			CREATE ROLE \"$user\" LOGIN CREATEDB PASSWORD '$sql_pass';
		END IF; END \$\$;" >/dev/null
	if [[ -z $(pg_admin "$port" "SELECT 1 FROM pg_database WHERE datname = '$db'") ]]; then
		log "postgres: creating database $db owned by $user"
		pg_admin "$port" "CREATE DATABASE \"$db\" OWNER \"$user\"" >/dev/null
	fi
	pg_query_ok || die "postgres: cannot query $(redact "$KILN_TEST_POSTGRES_URL") after setup; see /var/log/postgresql/"
	log "postgres: ready at $(redact "$KILN_TEST_POSTGRES_URL") ($(psql -w -X -A -t -q -d "$KILN_TEST_POSTGRES_URL" -c 'show server_version' 2>/dev/null))"
}

# redact URL — hide a password in log lines (the printed env keeps it).
redact() { sed -E 's#(://[^:/@]+):[^@/]*@#\1:***@#' <<<"$1"; }

# ------------------------------------------------------- browser tests ----
# The dashboard's browser tests drive Debian's Chromium (installed above, at
# KILN_TEST_CHROMIUM, default /usr/bin/chromium) with playwright-core from
# npm, pinned by the committed package-lock.json of the tests' folder: `npm
# ci` there when it is missing. Never `npx playwright install`: no browser
# download, only Debian's and npm's packages.
E2E_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/server/dashboard/testdata/e2e"
ensure_browser() {
	local chromium=${KILN_TEST_CHROMIUM:-/usr/bin/chromium}
	[[ -x $chromium ]] || die "chromium is not installed at $chromium"
	if [[ ! -d $E2E_DIR/node_modules/playwright-core ]]; then
		log "browser tests: npm ci in $E2E_DIR"
		(cd "$E2E_DIR" && npm ci --no-audit --no-fund >&2)
	fi
	log "browser tests: $chromium, playwright-core in $E2E_DIR"
}

main() {
	local start=$EPOCHREALTIME
	install_missing
	ensure_redis
	ensure_postgres
	ensure_browser
	log "all services ready in $(awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN {printf "%.2f", b - a}')s"
	printf 'export KILN_TEST_REDIS_URL=%q\n' "$KILN_TEST_REDIS_URL"
	printf 'export KILN_TEST_POSTGRES_URL=%q\n' "$KILN_TEST_POSTGRES_URL"
}

main "$@"
