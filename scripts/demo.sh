#!/usr/bin/env bash
# The main job of ezfs, end to end, on embedded defaults in a temporary folder:
# init, mount, key and zone, files, what the disk holds, a key roll, unmount.
set -euo pipefail
EZFS=$(realpath "${1:-bin/ezfs}")
# Embedded default for the demo only; real use reads a prompt or --passphrase-file.
export EZFS_PASSPHRASE="${EZFS_PASSPHRASE:-ezfs demo passphrase}"

work=$(mktemp -d /tmp/ezfs-demo.XXXXXX)
backing=$work/backing mnt=$work/mnt
cleanup() {
  if grep -q " $mnt fuse.ezfs" /proc/self/mounts 2>/dev/null; then
    "$EZFS" umount "$mnt" || umount -l "$mnt" || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$backing" "$mnt"

if [ -t 1 ]; then bold=$'\033[1m' off=$'\033[0m'; else bold='' off=''; fi
step() { printf '\n%s== %s%s\n' "$bold" "$*" "$off"; }
run() { printf '$ %s\n' "$*" | sed "s#$work#\$DEMO#g"; "$@" 2>&1 | sed "s#$work#\$DEMO#g"; }

step "1. Initialise a backing directory: keystore + RSA-3072 main key sealed by a passphrase"
run "$EZFS" init "$backing"

step "2. Mount it (the daemon keeps serving in the background)"
run "$EZFS" mount "$backing" "$mnt"
run "$EZFS" status --mount "$mnt"

step "3. Create a zone key and make an empty directory an encryption zone"
run "$EZFS" key create finance --mount "$mnt"
mkdir "$mnt/finance"
run "$EZFS" zone create "$mnt/finance" --key finance

step "4. Applications write with ordinary tools"
echo "Q3 revenue: 1,234,567 EUR -- CONFIDENTIAL" > "$mnt/finance/report.txt"
seq 1 20000 > "$mnt/finance/numbers.txt"
echo "not secret" > "$mnt/readme.txt"
run cat "$mnt/finance/report.txt"
run ls -l "$mnt" "$mnt/finance"

step "5. The backing disk holds ciphertext and a wrapped data key per file"
run xxd -l 96 "$backing/finance/report.txt"
run getfattr -n user.ezfs.edek -e hex "$backing/finance/report.txt"
if grep -q CONFIDENTIAL "$backing/finance/report.txt"; then
  echo "FAIL: plaintext found on the backing disk" >&2; exit 1
fi
echo "grep CONFIDENTIAL on the backing file: not found (ciphertext)"
echo "files outside zones pass through in the clear: $(cat "$backing/readme.txt")"
run "$EZFS" file info "$mnt/finance/report.txt"

step "6. Roll the zone key: new files use finance@2, old files stay on finance@1"
run "$EZFS" key roll finance --mount "$mnt"
echo "written after the roll" > "$mnt/finance/after-roll.txt"
run "$EZFS" file info "$mnt/finance/report.txt"
run "$EZFS" file info "$mnt/finance/after-roll.txt"
run cat "$mnt/finance/report.txt" "$mnt/finance/after-roll.txt"

step "7. Roll again and reencrypt: every file's data key re-wrapped with the newest version, contents untouched"
for i in $(seq 1 200); do echo "invoice $i" > "$mnt/finance/invoice-$i.txt"; done
run "$EZFS" key roll finance --mount "$mnt"
run "$EZFS" reencrypt start "$mnt/finance" --wait
run "$EZFS" reencrypt status "$mnt/finance"
run "$EZFS" file info "$mnt/finance/report.txt"

step "8. The protection chain: every zone key version, the main key version wrapping it, and how many files use it"
run "$EZFS" key describe finance --mount "$mnt"

step "9. Unmount; remount; everything reads back; unmount again"
run "$EZFS" umount "$mnt"
run "$EZFS" mount "$backing" "$mnt"
cmp <(seq 1 20000) "$mnt/finance/numbers.txt" && echo "numbers.txt identical after remount"
run "$EZFS" umount "$mnt"
if grep -q " $mnt fuse.ezfs" /proc/self/mounts; then
  echo "FAIL: still mounted" >&2; exit 1
fi
echo
echo "demo complete: nothing left mounted; $work removed on exit"
