#!/usr/bin/env bash
# make bench: the same workloads, interleaved and repeated, on
#   plain  the backing disk itself
#   pass   an ezfs mount outside zones (its own passthrough: kernel FUSE passthrough)
#   dpass  the same through the daemon (-o nopassthrough): the go-fuse data path, the
#          ceiling for zone files, whose bytes must pass through the daemon
#   zone   an ezfs zone
#   gcfs   gocryptfs on the same disk: Debian's (installed if missing)
#   gcfs2  a second gocryptfs, GOCRYPTFS_BIN (default: the current one the machine has at
#          ../shared/tools/gocryptfs-2.6.1), when it exists and is another binary
# then medians, ratios, and BENCHMARKS.md. Public tools only: dd, fio, tar, ls, cat, rm,
# xargs.
# Each round visits the targets in a rotated order, and every timed step starts after a
# sync and a pause (BENCH_SETTLE seconds), so that one target's writeback and discards
# are not billed to the next. Creates start with a cold cache too: right after the
# rm -rf of 11,000 files, ext4 (without a journal) scans the cached inode tables for
# recently deleted inodes on every allocation, which doubled the time of any create.
# BENCH_ROUNDS (default 3), BENCH_READS (cold reads of each streaming file per round,
# default 3), BENCH_GIB (size of the streaming file, default 1),
# BENCH_FIO_SECONDS (default 10), BENCH_SETTLE (default 3), BENCH_DIR (default a folder
# under /var/tmp).
set -euo pipefail
# The commit measured, read before the run: the tree may move on while it runs.
VERSION=$(git -C "$(dirname "$0")/.." rev-parse --short HEAD 2>/dev/null || echo unknown)
EZFS=$(realpath "${1:-bin/ezfs}")
ROUNDS=${BENCH_ROUNDS:-3}
READS=${BENCH_READS:-3}
GIB=${BENCH_GIB:-1}
FIO_SECONDS=${BENCH_FIO_SECONDS:-10}
SETTLE=${BENCH_SETTLE:-3}
OUT=${BENCH_OUT:-BENCHMARKS.md}
GOCRYPTFS2=${GOCRYPTFS_BIN:-$(dirname "$0")/../../shared/tools/gocryptfs-2.6.1}

need=()
command -v gocryptfs >/dev/null || need+=(gocryptfs)
command -v fio >/dev/null || need+=(fio)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
[ "$(id -u)" = 0 ] || { echo "bench: run as root (mounts, drop_caches)" >&2; exit 1; }

work=$(mktemp -d "${BENCH_DIR:-/var/tmp}/ezfs-bench.XXXXXX")
export EZFS_PASSPHRASE=bench-passphrase
cleanup() {
  for m in ezmnt dpmnt; do
    "$EZFS" umount "$work/$m" 2>/dev/null || umount -l "$work/$m" 2>/dev/null || true
  done
  for m in gcmnt gc2mnt; do
    fusermount3 -u "$work/$m" 2>/dev/null || umount -l "$work/$m" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work"/{plain,ezback,ezmnt,dpback,dpmnt,gcback,gcmnt,gc2back,gc2mnt}

"$EZFS" init "$work/ezback" >/dev/null
"$EZFS" mount "$work/ezback" "$work/ezmnt" >/dev/null
"$EZFS" key create bench --mount "$work/ezmnt" >/dev/null
mkdir "$work/ezmnt/zone" "$work/ezmnt/pass"
"$EZFS" init "$work/dpback" >/dev/null
"$EZFS" mount -o nopassthrough "$work/dpback" "$work/dpmnt" >/dev/null
"$EZFS" zone create "$work/ezmnt/zone" --key bench >/dev/null
echo gocryptfs-bench > "$work/gcpass"
gocryptfs -q -init -passfile "$work/gcpass" "$work/gcback"
gocryptfs -q -nosyslog -passfile "$work/gcpass" "$work/gcback" "$work/gcmnt"
results=$work/results
: > "$results"
record() { echo "$1 $2 $3" >> "$results"; } # workload target value
gcversion() { "$1" -version | head -1 | cut -d';' -f1; }
record label gcfs "$(gcversion gocryptfs)"
declare -A DIR=([plain]="$work/plain" [pass]="$work/ezmnt/pass" [dpass]="$work/dpmnt" [zone]="$work/ezmnt/zone" [gcfs]="$work/gcmnt")
ALL=(plain pass dpass zone gcfs)
if [ -x "$GOCRYPTFS2" ] && [ "$(realpath "$GOCRYPTFS2")" != "$(realpath "$(command -v gocryptfs)")" ]; then
  "$GOCRYPTFS2" -q -init -passfile "$work/gcpass" "$work/gc2back"
  "$GOCRYPTFS2" -q -nosyslog -passfile "$work/gcpass" "$work/gc2back" "$work/gc2mnt"
  record label gcfs2 "$(gcversion "$GOCRYPTFS2")"
  DIR[gcfs2]="$work/gc2mnt"
  ALL+=(gcfs2)
fi
ezpid=$("$EZFS" status --json --mount "$work/ezmnt" | sed -n 's/.*"pid": \([0-9]*\).*/\1/p' | head -1)

# rotated N: the targets, starting with the Nth (mod their count).
rotated() { local k=$(($1 % ${#ALL[@]})); echo "${ALL[@]:k}" "${ALL[@]:0:k}"; }
tar -C /usr/local/go -cf "$work/tree.tar" src
files=$(tar -tf "$work/tree.tar" | grep -vc '/$')

now() { date +%s.%N; }
elapsed() { echo "$(now) - $1" | bc -l; }
settle() { sync; sleep "$SETTLE"; }
drop() { settle; echo 3 > /proc/sys/vm/drop_caches; }

for round in $(seq 1 "$ROUNDS"); do
  echo "round $round of $ROUNDS" >&2
  read -ra TARGETS <<< "$(rotated $((round - 1)))"
  for t in "${TARGETS[@]}"; do
    d=${DIR[$t]}
    [ "$t" = zone ] && echo 5 > "/proc/$ezpid/clear_refs" # reset the daemon's peak RSS
    drop; s=$(now)
    dd if=/dev/zero of="$d/stream" bs=1M count=$((GIB * 1024)) conv=fsync status=none
    record write "$t" "$(echo "$GIB * 1024 / $(elapsed "$s")" | bc -l)"
    [ "$t" = zone ] && record rss zone "$(awk '/VmHWM/ {print $2 / 1024}' "/proc/$ezpid/status")"
  done
  # Reads start once every file is written, so that no read directly follows its own
  # file's write, and each file is read READS times, in rotated orders: the cold
  # streaming read is the noisiest figure on a virtual disk.
  for i in $(seq 1 "$READS"); do
    for t in $(rotated $((round + i - 2))); do
      drop; s=$(now)
      dd if="${DIR[$t]}/stream" of=/dev/null bs=1M status=none
      record read "$t" "$(echo "$GIB * 1024 / $(elapsed "$s")" | bc -l)"
    done
  done
  for t in "${ALL[@]}"; do rm -f "${DIR[$t]}/stream"; done
  for t in "${TARGETS[@]}"; do
    d=${DIR[$t]}
    drop; s=$(now); tar -C "$d" -xf "$work/tree.tar"; sync; record untar "$t" "$(elapsed "$s")"
    drop; s=$(now); ls -lR "$d/src" > /dev/null; record ls "$t" "$(elapsed "$s")"
    drop; s=$(now); (cd "$d" && find src -type f -print0 | xargs -0 cat > /dev/null); record cat "$t" "$(elapsed "$s")"
    settle; s=$(now); rm -rf "$d/src"; sync; record rm "$t" "$(elapsed "$s")"
    mkdir "$d/many"
    drop; s=$(now); (cd "$d/many" && seq -f "f%05g" 1 10000 | xargs touch); sync; record create "$t" "$(elapsed "$s")"
    rm -rf "$d/many"
  done
  for t in "${TARGETS[@]}"; do
    d=${DIR[$t]}
    for rw in randread randwrite; do
      settle
      iops=$(fio --name=bench --filename="$d/fio" --size=256M --rw=$rw --bs=4k --ioengine=psync \
        --runtime="$FIO_SECONDS" --time_based --invalidate=1 --output-format=terse --terse-version=3 |
        awk -F';' -v rw=$rw '{print (rw == "randread") ? $8 : $49}')
      record "$rw" "$t" "$iops"
    done
    rm -f "$d/fio"
  done
done

# What follows this line in BENCHMARKS.md is kept: the figures of the other benchmarks
# (make bench-fsck, ...), which this script does not run.
KEEP_MARK='<!-- bench.sh keeps what follows -->'
kept=""
if [ -f "$OUT" ]; then
  kept=$(awk -v m="$KEEP_MARK" 'found || $0 == m { found = 1; print }' "$OUT")
fi
{
  echo "# ezfs benchmarks"
  echo
  echo "Latest run of \`make bench\` ($(date -u +%Y-%m-%d)): $ROUNDS interleaved rounds, medians"
  echo "($((ROUNDS * READS)) samples for the streaming read, $ROUNDS for the others)."
  echo "Ratios are how many times better the ezfs zone does (rates: zone ÷ other; times: other ÷ zone),"
  echo "so above 1.00× the zone is faster."
  echo
  "$(dirname "$0")/bench-table.sh" "$results"
  echo
  echo "Workloads: streaming write of ${GIB} GiB (\`dd bs=1M conv=fsync\`); streaming read of it"
  echo "with a cold page cache, $READS times per round once all targets are written; untar of"
  echo "the Go source tree ($files files); \`ls -lR\` of it (cold); \`cat\` of every file of it"
  echo "(cold, \`find | xargs cat\`); \`rm -rf\` of it;"
  echo "creating 10,000 empty files (\`xargs touch\`, cold cache); fio 4 KiB random read and"
  echo "random write (psync, ${FIO_SECONDS} s, 256 MiB file). Every timed step starts after a sync"
  echo "and a ${SETTLE} s pause; each round visits the targets in a rotated order."
  echo
  echo "Columns: the plain backing disk; a folder outside zones of an ezfs mount as mounted by"
  echo "default, whose file data the kernel's FUSE passthrough serves without the daemon"
  echo "(kernel); the same with \`-o nopassthrough\`, every byte through the daemon, the go-fuse"
  echo "data path a zone file takes too (daemon); an ezfs zone; each gocryptfs the run had"
  echo "(Debian's, and GOCRYPTFS_BIN: by default the current release the machine has), with"
  echo "their default options."
  echo
  echo "Machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(free -g | awk '/Mem/ {print $2}') GiB,"
  echo "kernel $(uname -r), backing file system $(stat -f -c %T "$work")."
  echo "Versions: ezfs $VERSION,"
  echo "$(gocryptfs -version | head -1),"
  [ -n "${DIR[gcfs2]:-}" ] && echo "$("$GOCRYPTFS2" -version | head -1),"
  echo "$(fio --version), $(go version | cut -d' ' -f3)."
  echo
  echo "Reproduce: \`make bench\` (as root; installs gocryptfs and fio if missing;"
  echo "\`GOCRYPTFS_BIN=path make bench\` for another second gocryptfs)."
  if [ -n "$kept" ]; then
    echo
    echo "$kept"
  fi
} > "$OUT"
cat "$OUT"
