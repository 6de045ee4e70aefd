#!/bin/bash
# Makes a golden fixture: a backing directory with its keystore, written through a real
# mount by the ezfs binary given. Run once per format version, as root; see README.md.
#   testdata/mkfixture.sh /tmp/ezfs-v1 v1
set -eu # no pipefail: yes | head ends yes with SIGPIPE
bin=$1 name=$2
out=$(cd "$(dirname "$0")" && pwd)/$name
work=$(mktemp -d)
trap 'mountpoint -q "$work/mnt" && "$bin" umount "$work/mnt"; rm -rf "$work"' EXIT
export EZFS_PASSPHRASE="ezfs golden fixture $name"
b=$work/backing m=$work/mnt
mkdir -p "$b" "$m"
"$bin" init "$b"
"$bin" mount "$b" "$m"
"$bin" key create --mount "$m" golden
mkdir "$m/z"
"$bin" zone create "$m/z" --key golden

printf 'hello, ezfs %s\n' "$name" >"$m/z/small.txt"
: >"$m/z/empty"
yes 'ezfs golden fixture: exactly 4096 bytes' | head -c 4096 >"$m/z/4096.bin"
yes 'ezfs golden fixture: 4097 bytes, one past a block' | head -c 4097 >"$m/z/4097.bin"
# A hole: 10 bytes, then a write past EOF into the sixth block; blocks 1-4 are never
# written.
printf 'head-bytes' >"$m/z/hole.bin"
printf 'tail-at' | dd of="$m/z/hole.bin" bs=1 seek=$((5 * 4096 + 123)) conv=notrunc status=none
mkdir "$m/z/sub"
yes 'nested line' | head -c 10000 >"$m/z/sub/nested.txt"
ln "$m/z/sub/nested.txt" "$m/z/linked.txt"
# A second key version: one file sealed under golden@2, the others stay at @1.
"$bin" key roll --mount "$m" golden
printf 'written after the roll\n' >"$m/z/after-roll.txt"
mkdir "$m/plain"
printf 'plain file outside any zone\n' >"$m/plain/outside.txt"

(cd "$m" && find . -type f | sort | xargs sha256sum) >"$out.sha256"
for f in $(cd "$m" && find z -type f | sort); do
	"$bin" file info --json "$m/$f" | tr -d '\n' ; echo
done >"$out.info.jsonl"
"$bin" umount "$m"
rm -f "$b/.ezfs/ezfs.log"
tar --xattrs --xattrs-include='user.*' --sparse --numeric-owner -czf "$out.tar.gz" -C "$b" .
echo "made $out.tar.gz"
