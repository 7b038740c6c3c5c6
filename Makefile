# Warden. The two commands a new host needs (as root; sudo where you are not):
#   make demo   the whole flow on embedded defaults
#   make test   every test, BPF and end-to-end included (needs root)

# sudo resets PATH; find the Go toolchain in /usr/local/go anyway. Where
# there is none yet, "go" is looked up when it runs, so the distribution's
# that `deps` installs is found.
export PATH := /usr/local/go/bin:$(PATH)
GO ?= $(shell command -v go 2>/dev/null || echo go)
export GOFLAGS ?= -buildvcs=false

BIN := bin
CMDS := wardend warden warden-collector warden-devidp

.PHONY: all deps generate check-generated ui check-ui build lint test test-unit bench fuzz demo clean

all: build

# Install the system packages the build, tests and demo need (Debian/Ubuntu).
deps:
	./deploy/install-deps.sh

# Regenerate the BPF objects and Go loaders from bpf/*.c (needs clang).
generate:
	$(GO) generate ./bpf/...

# Fail if the committed BPF objects do not match the C sources.
check-generated: generate
	@git diff --exit-code --stat -- bpf/ || { echo "bpf/: generated files are stale; run 'make generate' and commit" >&2; exit 1; }

# Rebuild the web console's front-end files (collector/console/web/dist,
# embedded with go:embed, so `go build` needs no Node): npm ci installs
# what package-lock.json records, build.mjs copies the built files.
UI := collector/console/web
ui:
	cd $(UI) && npm ci --ignore-scripts --no-audit --no-fund && node build.mjs

# Fail if the committed console files differ from a rebuild.
check-ui: ui
	@git diff --exit-code --stat -- $(UI)/dist/ && test -z "$$(git status --porcelain -- $(UI)/dist/)" || \
		{ git status --short -- $(UI)/dist/; echo "$(UI)/dist/: stale; run 'make ui' and commit" >&2; exit 1; }

build:
	$(GO) build -o $(BIN)/ $(addprefix ./cmd/,$(CMDS))

# go vet and staticcheck (pinned in go.mod as a tool); both must be clean.
lint:
	$(GO) vet ./...
	$(GO) tool staticcheck ./...

# Everything, as root: unit, kernel and end-to-end tests; then the
# collector suite again on PostgreSQL (a server the test harness starts).
# What tests save with t.ArtifactDir (the console test's screenshots, one
# per step) is kept under $(ARTIFACTS).
ARTIFACTS ?= test-artifacts
test: deps
	$(GO) vet ./...
	mkdir -p $(ARTIFACTS)
	$(GO) test -count=1 -timeout 45m -artifacts -outputdir $(abspath $(ARTIFACTS)) ./...
	WARDEN_TEST_STORE=postgres $(GO) test -count=1 -timeout 15m ./collector/...

# Only what runs without root.
test-unit:
	$(GO) test -count=1 ./pkg/... ./agent/config/... ./agent/proxy/... ./collector/...

bench: deps
	WARDEN_BENCH=1 $(GO) test -count=1 -timeout 60m -run '^TestBench' -v ./tests/bench/

# Each fuzz target on top of its committed seed corpus (testdata/fuzz/),
# as CI runs them: a fixed number of executions each (about 20 s here),
# since a -fuzztime duration can fail spuriously with "context deadline
# exceeded" in Go 1.26 (go.dev/issue/75804). FUZZTIME=60s (say) runs every
# target for that long instead. Minimizing is capped: the analysis cache
# makes coverage depend on earlier inputs, so minimizing a new input rarely
# converges and would otherwise take the whole run.
FUZZ := ./pkg/protocol/postgres/:FuzzMessages:160000x ./pkg/masking/:FuzzMask:140000x \
	./pkg/protocol/postgres/:FuzzCopy:140000x ./pkg/redact/:FuzzRedact:120000x \
	./pkg/sqlguard/:FuzzAnalyze:300000x ./pkg/sqlguard/:FuzzShape:350000x \
	./pkg/protocol/mysql/:FuzzPackets:50000x ./pkg/mysqlguard/:FuzzAnalyze:150000x \
	./pkg/protocol/http/:FuzzCanonical:200000x ./pkg/protocol/http/:FuzzCheckHead:100000x \
	./pkg/protocol/redis/:FuzzRESP:150000x ./pkg/protocol/rdp/:FuzzX224:100000x \
	./pkg/sshcmd/:FuzzPrograms:150000x ./agent/recording/:FuzzChunks:20000x ./agent/recording/:FuzzParseCast:100000x \
	./agent/proxy/ssh/:FuzzSFTPTap:60000x ./collector/ingest/:FuzzDecode:100000x
fuzz:
	@set -e; for t in $(FUZZ); do \
		pkg=$${t%%:*}; rest=$${t#*:}; name=$${rest%%:*}; n=$${rest#*:}; \
		echo "fuzz $$name ($(or $(FUZZTIME),$$n))"; \
		$(GO) test -run '^$$' -fuzz "^$$name$$" -fuzztime $(or $(FUZZTIME),$$n) -fuzzminimizetime 3s "$$pkg"; \
	done

demo: deps build
	./deploy/demo.sh

clean:
	rm -rf $(BIN)
