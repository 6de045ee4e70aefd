GO      ?= go
BIN     := bin/ezfs
# Longer random-operation runs: make test EZFS_RANDOM_OPS=200000
EZFS_RANDOM_OPS ?=

.PHONY: all build deps vault test unit integration demo vet fuzz bench bench-scale bench-go bench-reencrypt bench-fsck clean install uninstall

# make install [PREFIX=/usr/local] [DESTDIR=]: the binary, the mount helper mount(8) runs
# for type fuse.ezfs (util-linux looks in /sbin only, so SBINDIR is not under PREFIX;
# /sbin is /usr/sbin on merged-/usr systems), the systemd unit ezfs@.service, the man
# page ezfs(8) and the bash completion, the last two made by the binary from its help.
PREFIX      ?= /usr/local
DESTDIR     ?=
BINDIR      ?= $(PREFIX)/bin
SBINDIR     ?= /sbin
MANDIR      ?= $(PREFIX)/share/man
UNITDIR     ?= $(PREFIX)/lib/systemd/system
BASHCOMPDIR ?= $(PREFIX)/share/bash-completion/completions
INSTALLED   := $(BINDIR)/ezfs $(SBINDIR)/mount.fuse.ezfs $(MANDIR)/man8/ezfs.8 $(UNITDIR)/ezfs@.service $(BASHCOMPDIR)/ezfs

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

# Cost per file at a million files: a zone, the daemon's passthrough and gocryptfs;
# writes BENCHMARKS-scale.md. BENCH_SCALE_FILES, BENCH_SCALE_DIRS, BENCH_SCALE_BIG scale
# it (1,000,000 files over 1,000 directories and one of 100,000 by default).
bench-scale: deps build
	scripts/bench-scale.sh $(BIN)

# Go benchmarks of the crypto and format code: regressions show without a mount.
bench-go:
	$(GO) test -run '^$$' -bench . -benchmem ./crypto/ ./fs/

# Reencrypt throughput on 100,000 files (EZFS_BENCH_FILES to change), in files/s.
bench-reencrypt:
	$(GO) test -run '^$$' -bench BenchmarkReencrypt -benchtime 1x ./zones/

# fsck throughput on 100,000 files (EZFS_BENCH_FILES to change), in files/s, without
# and with --full.
bench-fsck:
	$(GO) test -run '^$$' -bench BenchmarkFsck -benchtime 1x -timeout 30m ./fsck/

demo: deps build
	@scripts/demo.sh $(BIN)

install: build
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(SBINDIR) $(DESTDIR)$(MANDIR)/man8 $(DESTDIR)$(UNITDIR) $(DESTDIR)$(BASHCOMPDIR)
	install -m 0755 $(BIN) $(DESTDIR)$(BINDIR)/ezfs
	ln -sfn $(BINDIR)/ezfs $(DESTDIR)$(SBINDIR)/mount.fuse.ezfs
	$(BIN) doc man > $(DESTDIR)$(MANDIR)/man8/ezfs.8
	$(BIN) doc bash > $(DESTDIR)$(BASHCOMPDIR)/ezfs
	sed 's|@BINDIR@|$(BINDIR)|g' scripts/systemd/ezfs@.service.in > $(DESTDIR)$(UNITDIR)/ezfs@.service
	chmod 0644 $(DESTDIR)$(MANDIR)/man8/ezfs.8 $(DESTDIR)$(BASHCOMPDIR)/ezfs $(DESTDIR)$(UNITDIR)/ezfs@.service

uninstall:
	rm -f $(addprefix $(DESTDIR),$(INSTALLED))

clean:
	rm -rf bin
