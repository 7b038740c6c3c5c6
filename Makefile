# Warden. The two commands a new host needs:
#   sudo make demo   the whole flow on embedded defaults
#   sudo make test   every test, BPF and end-to-end included (needs root)

# sudo resets PATH; find the Go toolchain anyway.
GO ?= $(shell command -v go 2>/dev/null || echo /usr/local/go/bin/go)
export PATH := $(dir $(GO)):$(PATH)
export GOFLAGS ?= -buildvcs=false

BIN := bin
CMDS := wardend warden warden-collector warden-devidp

.PHONY: all deps generate check-generated build test test-unit bench fuzz demo clean

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

build:
	$(GO) build -o $(BIN)/ $(addprefix ./cmd/,$(CMDS))

# Everything, as root: unit, kernel and end-to-end tests.
test: deps
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 45m ./...

# Only what runs without root.
test-unit:
	$(GO) test -count=1 ./pkg/... ./agent/config/... ./collector/...

bench: deps
	WARDEN_BENCH=1 $(GO) test -count=1 -timeout 60m -run '^TestBench' -v ./tests/bench/

# Each fuzz target for FUZZTIME on top of its committed seed corpus
# (testdata/fuzz/), as CI runs them.
FUZZTIME ?= 20s
FUZZ := ./pkg/protocol/postgres/:FuzzMessages ./pkg/masking/:FuzzMask \
	./pkg/sqlguard/:FuzzAnalyze ./pkg/sqlguard/:FuzzShape
fuzz:
	@set -e; for t in $(FUZZ); do \
		echo "fuzz $${t#*:} ($(FUZZTIME))"; \
		$(GO) test -run '^$$' -fuzz "^$${t#*:}$$" -fuzztime $(FUZZTIME) "$${t%%:*}"; \
	done

demo: deps build
	./deploy/demo.sh

clean:
	rm -rf $(BIN)
