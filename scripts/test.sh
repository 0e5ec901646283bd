#!/usr/bin/env bash
# test.sh — everything CI runs (`make test` calls it), then a summary of the
# steps: how long each took (wall clock, and the CPU time it used), and
# whether it passed. It exits non-zero when any step failed, after the summary.
#
# The steps, in three lines that run side by side (the machine has 2 cores:
# the lines use the time the tests spend waiting, and a fresh machine compiles
# the linter while the tests run instead of before them):
#
#   checks:  install golangci-lint if missing (once per machine), then lint
#            (which runs go vet's analyzers too: govet in .golangci.yml)
#   builds:  with TEST_FUZZTIME set, build the fuzz test binaries
#            (scripts/fuzz.sh --build)
#   tests:   services/up, go test -race ./..., the iron_go3 and goworker
#            modules, the dashboard's browser tests (make test/browser)
#
# and then, with TEST_FUZZTIME set, when the tests and the binaries are done,
# a short fuzz pass (TEST_FUZZTIME per target) on the binaries just built.
# Without it (the default) the fuzz targets run their seed corpora as tests,
# in go test, and `make fuzz` fuzzes: the fuzzing build instruments every
# dependency, a third build of the whole tree that cost 40 % of make test's
# CPU (docs/decisions/007-make-test-steps.md). Each line's steps depend on
# the one before; a step whose input failed is skipped (SKIP). Output of the
# tests line streams; the other lines' output is printed, whole, when they
# end (and is in the log folder printed at the start).
#
# Variables: GO, MAKE, TEST_FUZZTIME (default empty: no fuzz pass; 5s, say,
# fuzzes each target that long), TEST_SERIAL=1 runs the lines one after
# another (to see each step's time alone).
set -uo pipefail

cd "$(dirname "$0")/.."

GO=${GO:-go}
MAKE=${MAKE:-make}
TEST_FUZZTIME=${TEST_FUZZTIME:-}
TEST_SERIAL=${TEST_SERIAL:-}

logdir=$(mktemp -d -t kiln-test.XXXXXX)
mkdir -p "$logdir/steps"
fuzzbin="$logdir/fuzz-bin"

# ----------------------------------------------------------------- steps ----

# step NAME CMD... — run one step, record its start, wall and CPU time and
# result in $logdir/steps/ (read by summary), and return its exit code.
step() {
	local name=$1 t0 rc
	shift
	t0=$EPOCHREALTIME
	echo "==> $name"
	# A subshell per step, so `times` reports the CPU time of this step's
	# processes alone (user and system time of the children it waited for).
	(
		"$@"
		rc=$?
		times >"$logdir/steps/$t0.cpu"
		exit "$rc"
	)
	rc=$?
	record "$name" "$t0" "$rc"
	if ((rc == 0)); then
		echo "==> $name: passed in $(secs "$t0")s"
	else
		echo "==> $name: FAILED (exit $rc) after $(secs "$t0")s"
	fi
	return "$rc"
}

# skip NAME WHY — record a step that did not run because WHY.
skip() {
	echo "==> $1: skipped ($2)"
	printf '%s\t%s\t%s\t%s\t%s\n' "$EPOCHREALTIME" "$1" SKIP 0 "$2" >"$logdir/steps/$EPOCHREALTIME.rec"
}

record() {
	local name=$1 t0=$2 rc=$3 cpu=0 status=PASS
	((rc == 0)) || status="FAIL"
	if [[ -f $logdir/steps/$t0.cpu ]]; then
		cpu=$(tail -n 1 "$logdir/steps/$t0.cpu" | cpu_secs)
	fi
	printf '%s\t%s\t%s\t%s\t%s\n' "$t0" "$name" "$status" "$(secs "$t0")" "$cpu" >"$logdir/steps/$t0.rec"
}

# secs T0 — seconds since T0 (an $EPOCHREALTIME), one decimal.
secs() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN {printf "%.1f", b - a}'; }

# cpu_secs — `times`' "1m2.500s 0m3.250s" (user, system) as seconds.
cpu_secs() {
	awk '{ t = 0; for (i = 1; i <= 2; i++) { split($i, p, /[ms]/); t += p[1] * 60 + p[2] }; printf "%.0f", t }'
}

# ----------------------------------------------------------------- lines ----

lint_line() {
	step "golangci-lint install (if missing)" "$MAKE" --no-print-directory tools/golangci-lint || {
		skip "lint" "golangci-lint is not installed"
		return 1
	}
	# As `make lint` does (see the Makefile): another golangci-lint may be running.
	local rc=0
	step "lint" ./bin/golangci-lint run --allow-parallel-runners ./... || rc=1
	# The bench module is a module of its own, linted from its folder with
	# the same .golangci.yml.
	step "lint (bench module)" sh -c 'cd bench && ../bin/golangci-lint run --allow-parallel-runners ./...' || rc=1
	return $rc
}

# go vet's analyzers run in the lint step (govet with every analyzer on, in
# .golangci.yml), so `go vet ./...` (make vet) is not a step of its own.
build_line() {
	if [[ -z $TEST_FUZZTIME ]]; then
		skip "fuzz: build the test binaries" "TEST_FUZZTIME not set; make fuzz fuzzes"
		return 0
	fi
	step "fuzz: build the test binaries" scripts/fuzz.sh --build "$fuzzbin"
}

# services — scripts/services.sh; its stdout is the `export` lines, not needed here.
services() { scripts/services.sh >/dev/null; }

# KILN_TEST_REQUIRE_ALL=1: a store or sandbox that cannot run fails its tests
# instead of skipping them.
gotest() { KILN_TEST_REQUIRE_ALL=1 "$GO" test "$@"; }
gotest_in() { (cd "$1" && shift && gotest "$@"); }

test_line() {
	step "services/up" services || {
		skip "go test -race ./..." "services/up failed"
		skip "iron_go3 acceptance" "services/up failed"
		skip "goworker interop" "services/up failed"
		skip "dashboard browser tests" "services/up failed"
		return 1
	}
	local rc=0
	step "go test -race ./..." gotest -race -shuffle=on -timeout 15m ./... || rc=1
	# Modules of their own (their clients never become dependencies of kiln).
	step "iron_go3 acceptance" gotest_in server/ironapi/testdata/irongo3 -race -shuffle=on -timeout 5m ./... || rc=1
	step "goworker interop" gotest_in resque/testdata/goworker -race -timeout 5m ./... || rc=1
	step "dashboard browser tests" "$MAKE" --no-print-directory test/browser || rc=1
	return "$rc"
}

# -------------------------------------------------- background processes ----

declare -A bg_pid=()

# start_bg NAME FUNC — run FUNC in the background, its output in $logdir/NAME.log.
start_bg() {
	if [[ -n $TEST_SERIAL ]]; then
		"$2" 2>&1 | tee "$logdir/$1.log"
		echo "${PIPESTATUS[0]}" >"$logdir/$1.rc"
		return
	fi
	echo "==> $1 line: started in the background (output: $logdir/$1.log)"
	"$2" >"$logdir/$1.log" 2>&1 &
	bg_pid[$1]=$!
}

# wait_bg NAME — wait for a background line and print its output.
wait_bg() {
	local rc
	if [[ -n $TEST_SERIAL ]]; then
		return "$(cat "$logdir/$1.rc")"
	fi
	wait "${bg_pid[$1]}"
	rc=$?
	unset "bg_pid[$1]"
	echo "==> $1 line (background): output"
	sed 's/^/    /' "$logdir/$1.log"
	return "$rc"
}

# kill_tree PID — end a background line and everything it started.
kill_tree() {
	local child
	for child in $(ps -o pid= --ppid "$1" 2>/dev/null); do
		kill_tree "$child"
	done
	kill "$1" 2>/dev/null || true
}

stop_bg() {
	local name
	for name in "${!bg_pid[@]}"; do
		kill_tree "${bg_pid[$name]}"
	done
}
# On the way out: end the background lines, delete the fuzz binaries, and keep
# the logs only when something failed.
cleanup() {
	stop_bg
	rm -rf "$fuzzbin"
	[[ ${keep_logs:-} ]] || rm -rf "$logdir"
}
trap 'keep_logs=1; exit 130' INT TERM
trap cleanup EXIT

# --------------------------------------------------------------- summary ----

summary() {
	local start=$1 rc=$2
	echo
	echo "==> make test: summary (wall clock; CPU is user+system time of the step's processes)"
	printf '    %-36s %-6s %8s %8s\n' STEP RESULT WALL CPU
	sort -n "$logdir"/steps/*.rec | while IFS=$'\t' read -r _ name status wall cpu; do
		if [[ $status == SKIP ]]; then
			printf '    %-36s %-6s %8s %8s  (%s)\n' "$name" "$status" - - "$cpu"
		else
			printf '    %-36s %-6s %7ss %7ss\n' "$name" "$status" "$wall" "$cpu"
		fi
	done
	printf '    %-36s %-6s %7ss  (%s cores, load average %s)\n' total "$( ((rc == 0)) && echo PASS || echo FAIL)" \
		"$(secs "$start")" "$(nproc)" "$(cut -d' ' -f1-3 /proc/loadavg)"
	if ((rc != 0)); then
		keep_logs=1
		echo "    logs (kept because a step failed): $logdir"
	fi
}

# ------------------------------------------------------------------ main ----

main() {
	local start=$EPOCHREALTIME rc=0
	echo "==> make test: $($GO version | cut -d' ' -f3-), $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg), logs in $logdir"
	start_bg lint lint_line
	start_bg builds build_line

	test_line || rc=1
	wait_bg builds || rc=1
	# Fuzzing gets the cores to itself: it runs for a fixed time, and what it
	# finds depends on how many inputs it tries in that time. (A binary that
	# failed to build is built again here, and fails the step.)
	wait_bg lint || rc=1
	if [[ -n $TEST_FUZZTIME ]]; then
		FUZZ_BIN_DIR=$fuzzbin step "fuzz ($TEST_FUZZTIME per target)" scripts/fuzz.sh "$TEST_FUZZTIME" || rc=1
	else
		skip "fuzz" "TEST_FUZZTIME not set; the seed corpora ran in go test"
	fi
	summary "$start" "$rc"
	return "$rc"
}

main
