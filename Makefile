GO      ?= go
BIN     := bin/ezfs
# Longer random-operation runs: make test EZFS_RANDOM_OPS=200000
EZFS_RANDOM_OPS ?=

.PHONY: all build deps vault test unit integration demo vet fuzz bench bench-go bench-reencrypt clean

all: build

build:
	$(GO) build -o $(BIN) ./cmd/ezfs

deps:
	@scripts/deps.sh

# The Vault server the integration tests run (built once from the Go module proxy,
# then cached in ~/.cache/ezfs).
vault:
	@scripts/vault.sh >/dev/null

vet:
	$(GO) vet ./...
	@test -z "$$(gofmt -l . | tee /dev/stderr)" || { echo "gofmt needed"; exit 1; }

# Every test: unit tests, fuzz seeds, and integration tests on real FUSE mounts (root).
test: deps vault vet
	EZFS_RANDOM_OPS=$(EZFS_RANDOM_OPS) $(GO) test -count=1 -timeout 25m ./...

unit:
	$(GO) test -count=1 $$($(GO) list ./... | grep -v /integration)

integration: deps vault
	$(GO) test -count=1 -timeout 25m -v ./integration/

fuzz:
	$(GO) test -run '^$$' -fuzz FuzzParseEDEK -fuzztime 60s ./crypto/

# ezfs zone vs its own passthrough vs gocryptfs vs the plain disk; writes BENCHMARKS.md.
bench: deps build
	scripts/bench.sh $(BIN)

# Go benchmarks of the crypto and format code: regressions show without a mount.
bench-go:
	$(GO) test -run '^$$' -bench . -benchmem ./crypto/ ./fs/

# Reencrypt throughput on 100,000 files (EZFS_BENCH_FILES to change), in files/s.
bench-reencrypt:
	$(GO) test -run '^$$' -bench BenchmarkReencrypt -benchtime 1x ./zones/

demo: deps build
	@scripts/demo.sh $(BIN)

clean:
	rm -rf bin
