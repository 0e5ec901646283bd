# kiln — everyday commands. `make` (or `make help`) lists them.
#
# `make test` is the one command CI runs (.ci/run): it starts the test services,
# installs the linter on first use (once per machine:
# see tools/golangci-lint), and runs lint (go vet's analyzers included), the race-enabled tests
# and a short fuzz pass, side by side where they can (scripts/test.sh), and
# ends with a summary of the steps and their times. It needs only Go, and
# apt-get for the services.

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-print-directory

GO ?= go
BIN := $(CURDIR)/bin

# golangci-lint is pinned and installed into ./bin with `go install pkg@version`,
# so it never enters go.mod. Bump the version here and `make lint` reinstalls.
GOLANGCI_LINT_VERSION := v2.15.0
GOLANGCI_LINT := $(BIN)/golangci-lint

# Fuzzing time per target: FUZZTIME for `make fuzz`, TEST_FUZZTIME in `make test`
# (empty: no fuzz pass there, the seed corpora run as tests; 5s, say, adds one).
FUZZTIME ?= 1m
TEST_FUZZTIME ?=

# The chaos suite's long run (`make chaos`): how long every scenario keeps its
# load and faults going, where the reports go (one JSON object per scenario
# and line), and the `go test` flags (four scenarios at a time: about 10
# minutes in all; add -race to look for races too). `make test` runs the
# suite at its CI size (about 5 s of load per scenario).
CHAOS_DURATION ?= 3m
CHAOS_REPORT ?= chaos-report.jsonl
CHAOS_FLAGS ?= -parallel=4

# Where the tests find Redis and PostgreSQL. Set them in the environment to use
# other servers; scripts/services.sh starts local ones for these URLs if needed.
export KILN_TEST_REDIS_URL ?= redis://127.0.0.1:6379/0
export KILN_TEST_POSTGRES_URL ?= postgres://kiln:kiln@127.0.0.1:5432/kiln_test?sslmode=disable

VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo devel)

.PHONY: help
help: ## list the targets
	@echo 'Usage: make TARGET'
	@echo
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_\/-]+:.*## / {printf "  %-14s %s\n", $$1, $$2}' $(MAKEFILE_LIST)
	@echo
	@echo 'Variables: FUZZTIME=$(FUZZTIME) (make fuzz), TEST_FUZZTIME=$(TEST_FUZZTIME) (make test),'
	@echo '           CHAOS_DURATION=$(CHAOS_DURATION) CHAOS_REPORT=$(CHAOS_REPORT) CHAOS_FLAGS=$(CHAOS_FLAGS) (make chaos),'
	@echo '           KILN_TEST_REDIS_URL, KILN_TEST_POSTGRES_URL (see scripts/services.sh)'

.PHONY: build
build: ## build the kiln binary into bin/kiln
	$(GO) build -ldflags '-X main.version=$(VERSION)' -o $(BIN)/kiln ./cmd/kiln

.PHONY: run
run: build ## build, then run bin/kiln server on 127.0.0.1:7878 (the embedded store in ./kiln-data)
	$(BIN)/kiln server

.PHONY: test
test: ## everything CI runs: services/up, lint (with vet), race tests (all stores required), browser tests (TEST_FUZZTIME=5s: and a short fuzz pass); then a summary
	@GO='$(GO)' TEST_FUZZTIME='$(TEST_FUZZTIME)' scripts/test.sh

# The dashboard's browser tests: Chromium comes from scripts/services.sh
# (Debian's chromium), playwright-core from npm ci with the committed
# package-lock.json (node_modules stays in the test folder, ignored by git).
# DASHBOARD_SHOTS=docs/dashboard writes the screenshots docs/dashboard.md shows.
E2E := server/dashboard/testdata/e2e
.PHONY: test/browser
test/browser: ## the dashboard's browser tests in headless Chromium (installs playwright-core with npm ci when missing)
	@command -v npm >/dev/null || { echo 'npm is missing: apt-get install npm' >&2; exit 1; }
	@if [ ! -d $(E2E)/node_modules/playwright-core ]; then cd $(E2E) && npm ci --no-audit --no-fund; fi
	KILN_TEST_BROWSER=1 KILN_TEST_REQUIRE_ALL=1 KILN_DASHBOARD_SHOTS=$(if $(DASHBOARD_SHOTS),$(abspath $(DASHBOARD_SHOTS))) \
		$(GO) test -count=1 -timeout 5m -run '^TestBrowser$$' ./server/dashboard/

.PHONY: test/short
test/short: ## quick tests: -short, no race detector; stores that are not running are skipped
	$(GO) test -short -shuffle=on -timeout 5m ./...

.PHONY: vet
vet: ## go vet ./...
	$(GO) vet ./...

.PHONY: lint
# --allow-parallel-runners: golangci-lint refuses to start while another
# golangci-lint runs on the machine (another clone's `make test`, an editor);
# its cache is safe to share, so both run.
lint: tools/golangci-lint ## golangci-lint with .golangci.yml (installs it into bin/ on first use), the bench module too
	$(GOLANGCI_LINT) run --allow-parallel-runners ./...
	cd bench && $(GOLANGCI_LINT) run --allow-parallel-runners ./...

.PHONY: generate
generate: ## regenerate Go from its sources (the error catalogue and event kinds: server/api/errors.json, events.json)
	$(GO) generate ./...

.PHONY: fmt
fmt: tools/golangci-lint ## format the code (gofmt -s, goimports) as lint checks it
	$(GOLANGCI_LINT) fmt ./...

.PHONY: chaos
chaos: ## the chaos suite's long run: every scenario for CHAOS_DURATION (3m), ~10 min; tables on stdout, JSON in CHAOS_REPORT
	@echo '==> services/up'; $(MAKE) services/up >/dev/null
	rm -f $(CHAOS_REPORT)
	KILN_TEST_REQUIRE_ALL=1 $(GO) test $(CHAOS_FLAGS) -count=1 -v -timeout 0 -run '^TestChaos' ./internal/chaos \
		-chaos.duration=$(CHAOS_DURATION) -chaos.json=$(CURDIR)/$(CHAOS_REPORT)

.PHONY: fuzz
fuzz: ## run every fuzz target for FUZZTIME each (default 1m)
	scripts/fuzz.sh $(FUZZTIME)

.PHONY: bench
bench: ## run the benchmarks of the module
	$(GO) test -run='^$$' -bench=. -benchmem ./...

.PHONY: services/up
services/up: ## make sure Redis 7 and PostgreSQL 15 run (installs them with apt-get if missing)
	scripts/services.sh

.PHONY: tidy
tidy: ## go mod tidy (and the modules of bench/ and of the iron_go3 and goworker acceptance tests)
	$(GO) mod tidy
	@if [ -f bench/go.mod ]; then echo 'cd bench && $(GO) mod tidy'; cd bench && $(GO) mod tidy; fi
	cd server/ironapi/testdata/irongo3 && $(GO) mod tidy
	cd resque/testdata/goworker && $(GO) mod tidy

# Installs golangci-lint only when bin/golangci-lint is missing or another version
# (read from the binary's build info, so no guessing from its output). The binary
# is built once per machine and version into TOOLS_CACHE (outside the clone), and
# bin/golangci-lint links to it: a fresh clone on a machine that already ran
# `make test` (CI clones afresh every time) reuses it instead of compiling it
# again: on a new machine `go install` downloads about 310 MB of modules (75 s)
# and compiles them, which took 32 minutes on a 2-core VM whose load average
# other jobs kept near 32 (there is no prebuilt release to fetch instead: only
# the Go module proxy, Debian's and npm's registries are reachable, and Debian
# has no golangci-lint). `make test` runs this in the background beside the
# tests (scripts/test.sh). golangci-lint keeps its own
# analysis cache outside the clone too (GOLANGCI_LINT_CACHE, by default in the
# user's cache folder), so an unchanged package is not analysed again.
TOOLS_CACHE ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/kiln-tools
.PHONY: tools/golangci-lint
tools/golangci-lint:
	@version() { { $(GO) version -m "$$1" 2>/dev/null || true; } | awk '$$1 == "mod" {print $$3}'; }; \
	if [ "$$(version $(GOLANGCI_LINT))" != "$(GOLANGCI_LINT_VERSION)" ]; then \
		cached=$(TOOLS_CACHE)/golangci-lint-$(GOLANGCI_LINT_VERSION); \
		if [ "$$(version $$cached/golangci-lint)" != "$(GOLANGCI_LINT_VERSION)" ]; then \
			echo "installing golangci-lint $(GOLANGCI_LINT_VERSION) into $$cached (once per machine: minutes of compiling, see the Makefile)"; \
			GOBIN=$$cached $(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION); \
		fi; \
		mkdir -p $(BIN); \
		ln -sfn $$cached/golangci-lint $(GOLANGCI_LINT); \
	fi
