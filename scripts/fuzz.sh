#!/usr/bin/env bash
# fuzz.sh — run every fuzz target of the module, one after another.
#
#   scripts/fuzz.sh [FUZZTIME]       FUZZTIME per target, default 10s
#   scripts/fuzz.sh --list           print "import/path FuzzName" lines only
#   scripts/fuzz.sh --build DIR      only build the fuzz test binaries into DIR
#
# Targets are found, not listed: every `func FuzzXxx(f *testing.F)` in the test
# files of the packages of this module (`go list ./...`, so bench/, its own
# module, is left out), so a new target joins `make test` and `make fuzz` by
# itself.
#
# `go test -fuzz` takes one package and one target at a time, and compiles and
# links the package's test binary again for every target. This script builds
# each package's test binary once, with the same coverage instrumentation
# (`go test -c -fuzz=.`), and runs that binary once per target of the package
# the way `go test -fuzz` does: in the package's folder, with the same fuzz
# cache (GOCACHE/fuzz/PKG), so the seed corpus in testdata/fuzz/ and the
# inputs found by earlier runs are used alike. With FUZZ_BIN_DIR set, binaries
# already in that folder (from `--build`, which `make test` runs while the
# tests run) are used instead of building them again.
#
# A failing input is written to the package's testdata/fuzz/FuzzXxx/ and the
# script stops with the test binary's exit code: commit that file with the fix.
set -euo pipefail

cd "$(dirname "$0")/.."

# list_targets — "import/path FuzzName /package/folder" lines.
list_targets() {
	local pkg dir files f
	# -e: a package that does not build yet is still listed (its build fails loudly).
	while IFS='|' read -r pkg dir files; do
		for f in $files; do
			sed -nE 's/^func (Fuzz[A-Za-z0-9_]*)\([A-Za-z0-9_]+ \*testing\.F\).*/\1/p' "$dir/$f" |
				while read -r name; do printf '%s %s %s\n' "$pkg" "$name" "$dir"; done
		done
	done < <(go list -e -f '{{.ImportPath}}|{{.Dir}}|{{join .TestGoFiles " "}} {{join .XTestGoFiles " "}}' ./...)
}

# bin_name PKG — the test binary's file name in the binaries' folder.
bin_name() { printf '%s.fuzz.test' "${1//\//_}"; }

# build_bins DIR PKG... — build each package's fuzz-instrumented test binary
# into DIR, skipping those already there. -fuzz only switches the
# instrumentation on here; which target runs is chosen when the binary runs.
build_bins() {
	local dir=$1 pkg bin
	shift
	mkdir -p "$dir"
	for pkg in "$@"; do
		bin="$dir/$(bin_name "$pkg")"
		[[ -x $bin ]] && continue
		echo "fuzz: building $pkg"
		go test -c -fuzz=. -o "$bin.tmp" "$pkg"
		mv "$bin.tmp" "$bin"
	done
}

# packages TARGETS... — the packages of "pkg name" lines, each once, in order.
packages() { printf '%s\n' "$@" | awk '!seen[$1]++ {print $1}'; }

if [[ ${1:-} == --list ]]; then
	list_targets | cut -d' ' -f1-2
	exit 0
fi

mapfile -t targets < <(list_targets)

if [[ ${1:-} == --build ]]; then
	[[ -n ${2:-} ]] || { echo "usage: scripts/fuzz.sh --build DIR" >&2; exit 2; }
	mapfile -t pkgs < <(packages "${targets[@]}")
	build_bins "$2" "${pkgs[@]}"
	exit 0
fi

fuzztime=${1:-10s}
if ((${#targets[@]} == 0)); then
	echo "fuzz: no fuzz targets found"
	exit 0
fi

bindir=${FUZZ_BIN_DIR:-}
if [[ -z $bindir ]]; then
	bindir=$(mktemp -d -t kiln-fuzz.XXXXXX)
	trap 'rm -rf "$bindir"' EXIT
fi
fuzzcache="$(go env GOCACHE)/fuzz"

# fuzz_one PKG NAME DIR — fuzz one target for $fuzztime. Go 1.26's fuzzing
# coordinator can fail a target with a bare "context deadline exceeded" just
# as -fuzztime ends, with no failing input (golang/go#75804, fixed in Go
# 1.27): that outcome, and only that one, is run again once. A failure that
# writes a failing input always fails at once.
fuzz_one() {
	local pkg=$1 name=$2 dir=$3 bin out attempt
	bin="$(cd "$bindir" && pwd)/$(bin_name "$pkg")"
	out=$(mktemp)
	for attempt in 1 2; do
		# The flags `go test -fuzz` gives the binary (-test.timeout covers the
		# seed corpus run; fuzzing itself is bounded by -test.fuzztime).
		if (cd "$dir" && "$bin" -test.paniconexit0 -test.timeout=10m -test.run='^$' \
			-test.fuzz="^${name}\$" -test.fuzztime="$fuzztime" \
			-test.fuzzcachedir="$fuzzcache/$pkg") 2>&1 | tee "$out"; then
			rm -f "$out"
			return 0
		fi
		if ((attempt == 1)) && grep -q '^    context deadline exceeded$' "$out" && ! grep -q 'Failing input written to' "$out"; then
			echo "fuzz: $name: 'context deadline exceeded' with no failing input (Go's fuzzing coordinator, golang/go#75804); once more"
			continue
		fi
		rm -f "$out"
		echo "fuzz: FAIL $pkg $name"
		return 1
	done
}

start=$SECONDS
mapfile -t pkgs < <(packages "${targets[@]}")
build_bins "$bindir" "${pkgs[@]}"
built=$((SECONDS - start))
echo "fuzz: ${#targets[@]} target(s) in ${#pkgs[@]} package(s), $fuzztime each"
for t in "${targets[@]}"; do
	read -r pkg name dir <<<"$t"
	echo "fuzz: $pkg $name ($fuzztime)"
	fuzz_one "$pkg" "$name" "$dir"
done
echo "fuzz: ${#targets[@]} target(s) passed in $((SECONDS - start))s (building the test binaries: ${built}s)"
