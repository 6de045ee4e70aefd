#!/usr/bin/env bash
# Builds the HashiCorp Vault server the integration tests run as `vault server -dev`,
# from the Go module proxy, and caches it (about 15 minutes on 2 cores when cold).
# Prints the binary's path. Vault 1.15 is BUSL-licensed: a test tool, never shipped.
#
# Vault's go.mod replaces its api and sdk modules with folders the module zip lacks, so
# `go install` fails; a throwaway module that repeats Vault's requirements (and go.sum)
# and points api and sdk at tagged versions that compile with it builds the server.
set -euo pipefail
VERSION=1.15.0
SDK=v0.10.2
API=v1.11.0
cache=${EZFS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ezfs}
bin=$cache/vault-$VERSION/vault
if [ -x "$bin" ] && "$bin" version >/dev/null 2>&1; then
  echo "$bin"
  exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
src=$(GOFLAGS= go mod download -json "github.com/hashicorp/vault@v$VERSION" |
  sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
[ -f "$src/go.mod" ] || { echo "vault.sh: could not download Vault v$VERSION" >&2; exit 1; }
{
  echo "module ezfs.test/vaultbuild"
  echo
  echo "go 1.21"
  echo
  echo "require github.com/hashicorp/vault v$VERSION"
  echo
  # Vault's own require blocks, so every dependency stays at Vault's version.
  awk '/^require \($/ {on=1; print; next} on && /^\)$/ {on=0; print; next} on {print}' "$src/go.mod"
  echo
  echo "replace github.com/hashicorp/vault/sdk => github.com/hashicorp/vault/sdk $SDK"
  echo "replace github.com/hashicorp/vault/api => github.com/hashicorp/vault/api $API"
} > go.mod
cp "$src/go.sum" go.sum
chmod u+w go.sum
mkdir -p "$(dirname "$bin")"
echo "vault.sh: building Vault v$VERSION (cached in $bin afterwards)" >&2
GOFLAGS=-mod=mod go build -o "$bin.tmp" github.com/hashicorp/vault
mv "$bin.tmp" "$bin"
echo "$bin"
