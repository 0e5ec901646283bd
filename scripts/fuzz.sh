#!/usr/bin/env bash
# fuzz.sh — run every fuzz target of the module, one after another.
#
#   scripts/fuzz.sh [FUZZTIME]       FUZZTIME per target, default 10s
#   scripts/fuzz.sh --list           print "import/path FuzzName" lines only
#
# Targets are found, not listed: every `func FuzzXxx(f *testing.F)` in the test
# files of the packages of this module (`go list ./...`, so bench/, its own
# module, is left out), so a new target joins `make test` and `make fuzz` by
# itself. `go test -fuzz` takes one package and one target at a time.
# A failing input is written to the package's testdata/fuzz/FuzzXxx/ and the
# script stops with go test's exit code: commit that file with the fix.
set -euo pipefail

cd "$(dirname "$0")/.."

list_targets() {
	local pkg dir files f
	# -e: a package that does not build yet is still listed (its fuzz run fails loudly).
	while IFS='|' read -r pkg dir files; do
		for f in $files; do
			sed -nE 's/^func (Fuzz[A-Za-z0-9_]*)\([A-Za-z0-9_]+ \*testing\.F\).*/\1/p' "$dir/$f" |
				while read -r name; do printf '%s %s\n' "$pkg" "$name"; done
		done
	done < <(go list -e -f '{{.ImportPath}}|{{.Dir}}|{{join .TestGoFiles " "}} {{join .XTestGoFiles " "}}' ./...)
}

if [[ ${1:-} == --list ]]; then
	list_targets
	exit 0
fi

fuzztime=${1:-10s}

# fuzz_one PKG NAME — fuzz one target for $fuzztime. Go 1.26's fuzzing
# coordinator can fail a target with a bare "context deadline exceeded" just
# as -fuzztime ends, with no failing input (golang/go#75804, fixed in Go
# 1.27): that outcome, and only that one, is run again once. A failure that
# writes a failing input always fails at once.
fuzz_one() {
	local pkg=$1 name=$2 out attempt
	out=$(mktemp)
	for attempt in 1 2; do
		if go test -run='^$' -fuzz="^${name}\$" -fuzztime="$fuzztime" "$pkg" 2>&1 | tee "$out"; then
			rm -f "$out"
			return 0
		fi
		if ((attempt == 1)) && grep -q '^    context deadline exceeded$' "$out" && ! grep -q 'Failing input written to' "$out"; then
			echo "fuzz: $name: 'context deadline exceeded' with no failing input (Go's fuzzing coordinator, golang/go#75804); once more"
			continue
		fi
		rm -f "$out"
		return 1
	done
}
mapfile -t targets < <(list_targets)
if ((${#targets[@]} == 0)); then
	echo "fuzz: no fuzz targets found"
	exit 0
fi
echo "fuzz: ${#targets[@]} target(s), $fuzztime each"
start=$SECONDS
for t in "${targets[@]}"; do
	read -r pkg name <<<"$t"
	echo "fuzz: $pkg $name ($fuzztime)"
	fuzz_one "$pkg" "$name"
done
echo "fuzz: ${#targets[@]} target(s) passed in $((SECONDS - start))s"
