#!/usr/bin/env bash
# make bench-scale: the cost per file at a million files, in one run, on
#   zone   an ezfs zone
#   dpass  an ezfs mount with -o nopassthrough (plain files through the daemon)
#   gcfs   gocryptfs: Debian's (installed if missing)
#   gcfs2  a second gocryptfs, GOCRYPTFS_BIN (default ../shared/tools/gocryptfs-2.6.1
#          beside the repository), when it exists and is another binary
# Each step on every target in turn (in an order rotated at each step): one directory
# of BIG empty files (create, cold `ls -l`, cold `stat` of every file), then FILES empty
# files spread over DIRS directories (create, cold `ls -lR`, cold `stat` of all), then
# `rm -rf` of everything, then the big directory's last rounds (the rounds bracket the
# million, see below). Every timed step starts after a sync and
# `echo 3 > /proc/sys/vm/drop_caches`, once every daemon is idle again. The ezfs daemons' VmRSS
# is read after each step, and the zone daemon's peak (VmHWM, reset after the mount:
# the passphrase's Argon2id peak is not the files'). Writes BENCH_SCALE_OUT (default
# BENCHMARKS-scale.md; make bench rewrites BENCHMARKS.md, so the scale run has a file
# of its own). Not part of make test: at the default counts it runs for about 20
# minutes on this project's 2-core machine (a tenth of them: 2 minutes).
# BENCH_SCALE_FILES (default 1000000), BENCH_SCALE_DIRS (1000), BENCH_SCALE_BIG
# (100000), BENCH_SCALE_ROUNDS (the big directory's rounds, default 3),
# BENCH_SCALE_TARGETS (the order, default "zone dpass gcfs gcfs2"),
# BENCH_DIR (default a folder under /var/tmp).
set -euo pipefail
# The commit measured, read before the run: the tree may move on while it runs.
VERSION=$(git -C "$(dirname "$0")/.." rev-parse --short HEAD 2>/dev/null || echo unknown)
EZFS=$(realpath "${1:-bin/ezfs}")
FILES=${BENCH_SCALE_FILES:-1000000}
DIRS=${BENCH_SCALE_DIRS:-1000}
BIG=${BENCH_SCALE_BIG:-100000}
ROUNDS=${BENCH_SCALE_ROUNDS:-3}
OUT=${BENCH_SCALE_OUT:-BENCHMARKS-scale.md}
GOCRYPTFS2=${GOCRYPTFS_BIN:-$(dirname "$0")/../../shared/tools/gocryptfs-2.6.1}
read -ra ORDER <<< "${BENCH_SCALE_TARGETS:-zone dpass gcfs gcfs2}"
[ "$(id -u)" = 0 ] || { echo "bench-scale: run as root (mounts, drop_caches)" >&2; exit 1; }
[ $((FILES % DIRS)) = 0 ] || { echo "bench-scale: BENCH_SCALE_FILES must be a multiple of BENCH_SCALE_DIRS" >&2; exit 1; }
command -v gocryptfs >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gocryptfs >/dev/null; }

work=$(mktemp -d "${BENCH_DIR:-/var/tmp}/ezfs-scale.XXXXXX")
export EZFS_PASSPHRASE=bench-passphrase
cleanup() {
  for m in ezmnt dpmnt; do "$EZFS" umount "$work/$m" 2>/dev/null || umount -l "$work/$m" 2>/dev/null || true; done
  for m in gcmnt gc2mnt; do fusermount3 -u "$work/$m" 2>/dev/null || umount -l "$work/$m" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work"/{ezback,ezmnt,dpback,dpmnt,gcback,gcmnt,gc2back,gc2mnt}
results=$work/results
: > "$results"
record() { echo "$1 $2 $3" >> "$results"; } # step target value

ezpid() { "$EZFS" status --json --mount "$1" | sed -n 's/.*"pid": \([0-9]*\).*/\1/p' | head -1; }
"$EZFS" init "$work/ezback" >/dev/null
"$EZFS" mount "$work/ezback" "$work/ezmnt" >/dev/null
"$EZFS" key create bench --mount "$work/ezmnt" >/dev/null
mkdir "$work/ezmnt/zone"
"$EZFS" zone create "$work/ezmnt/zone" --key bench >/dev/null
"$EZFS" init "$work/dpback" >/dev/null
"$EZFS" mount -o nopassthrough "$work/dpback" "$work/dpmnt" >/dev/null
declare -A DIR=([zone]="$work/ezmnt/zone" [dpass]="$work/dpmnt") PID=([zone]=$(ezpid "$work/ezmnt") [dpass]=$(ezpid "$work/dpmnt"))
echo gocryptfs-bench > "$work/gcpass"
# gcmount BIN BACKING MNT TARGET: a gocryptfs in the foreground, so its PID is known.
gcmount() {
  "$1" -q -init -passfile "$work/gcpass" "$2"
  "$1" -fg -q -nosyslog -passfile "$work/gcpass" "$2" "$3" &
  PID[$4]=$!
  DIR[$4]=$3
  for _ in $(seq 100); do mountpoint -q "$3" && return; sleep 0.1; done
  echo "bench-scale: $1 did not mount" >&2; exit 1
}
gcversion() { "$1" -version | head -1 | cut -d';' -f1; }
gcmount gocryptfs "$work/gcback" "$work/gcmnt" gcfs
declare -A LABEL=([zone]="ezfs zone" [dpass]="ezfs daemon passthrough" [gcfs]="$(gcversion gocryptfs)")
if [ -x "$GOCRYPTFS2" ] && [ "$(realpath "$GOCRYPTFS2")" != "$(realpath "$(command -v gocryptfs)")" ]; then
  gcmount "$GOCRYPTFS2" "$work/gc2back" "$work/gc2mnt" gcfs2
  LABEL[gcfs2]="$(gcversion "$GOCRYPTFS2")"
fi
TARGETS=()
for t in "${ORDER[@]}"; do [ -n "${DIR[$t]:-}" ] && TARGETS+=("$t"); done

now() { date +%s.%N; }
elapsed() { echo "$(now) - $1" | bc -l; }
drop() { sync; echo 3 > /proc/sys/vm/drop_caches; settle; }
# settle: waits (at most 20 s) until every daemon is idle. drop_caches makes the kernel
# forget the inodes the last step left, and sends their daemon 100,000 FORGETs, which
# it works off while the next step runs: without the wait, a step is slowed by the
# daemon measured before it (gocryptfs's took the next step's `stat` from 1.2 s to 2.4 s).
busy() { local p s=0; for p in "${PID[@]}"; do s=$((s + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo $s; }
settle() {
  local a b n
  a=$(busy)
  for n in $(seq 100); do
    sleep 0.2
    b=$(busy)
    [ $((b - a)) -le 1 ] && return
    a=$b
  done
}
rss() { awk '/VmRSS/ {print $2 / 1024}' "/proc/${PID[$1]}/status"; }
peak() { awk '/VmHWM/ {print $2 / 1024}' "/proc/${PID[$1]}/status"; }
# timed STEP TARGET COMMAND...: runs the command on a cold cache, records its time and
# the target's RSS after it.
timed() {
  local step=$1 t=$2 s
  shift 2
  drop
  s=$(now)
  "$@"
  sync
  record "$step" "$t" "$(elapsed "$s")"
  record "rss-$step" "$t" "$(rss "$t")"
}
mkfiles() { (cd "$1" && seq -f "f%07g" 1 "$2" | xargs touch); }
mktree() { local i; for i in $(seq -f "d%04g" 1 "$DIRS"); do mkdir "$1/$i"; mkfiles "$1/$i" $((FILES / DIRS)); done; }
statall() { find "$1" -type f -print0 | xargs -0 stat -c %s > /dev/null; }
# The steps, each on a target's folder.
step_create_big() { mkfiles "$1/big" "$BIG"; }
step_ls_big() { ls -l "$1/big" > /dev/null; }
step_stat_big() { statall "$1/big"; }
step_create_tree() { mktree "$1/tree"; }
step_ls_tree() { ls -lR "$1/tree" > /dev/null; }
step_stat_tree() { statall "$1/tree"; }
step_rm() { rm -rf "$1/big" "$1/tree"; }
STEPS=(create-big ls-big stat-big create-tree ls-tree stat-tree rm)
# rotated N: the targets, starting with the Nth (mod their count).
rotated() { local k=$(($1 % ${#TARGETS[@]})); echo "${TARGETS[@]:k}" "${TARGETS[@]:0:k}"; }

for t in "${TARGETS[@]}"; do
  mkdir "${DIR[$t]}/big" "${DIR[$t]}/tree"
  echo 5 > "/proc/${PID[$t]}/clear_refs" # the peak from here on
  record rss-mount "$t" "$(rss "$t")"
done
# Step by step, every target in turn, in an order rotated at each step: a load that
# comes and goes on the machine is spread over the targets instead of falling on
# whichever ran at the time.
# The directory of BIG files is made, listed and stat'ed ROUNDS times (made again after
# an untimed rm between rounds), the million once: one sample of a step on a busy
# machine can be a tenth off, and the medians of the big directory are what the
# gocryptfs ratios are read from. The rounds bracket the million (ROUNDS/2 of them
# come after its `rm`): the growth ratios set the million against the big directory,
# and this machine's speed drifts by a sixth within half an hour (the same zone
# sequence alone: 99-104 µs per create, then 125), which rounds all before it would
# read as growth.
i=0
step() { # step NAME: NAME on every target, in an order rotated at each call
  echo "bench-scale: $1" >&2
  local t
  for t in $(rotated "$i"); do timed "$1" "$t" "step_${1//-/_}" "${DIR[$t]}"; done
  i=$((i + 1))
}
biground() { # biground N: the Nth round of the big directory
  if [ "$1" -gt 1 ]; then
    for t in "${TARGETS[@]}"; do rm -rf "${DIR[$t]}/big"; mkdir "${DIR[$t]}/big"; done
  fi
  for s in create-big ls-big stat-big; do step "$s"; done
}
before=$((ROUNDS - ROUNDS / 2))
for r in $(seq 1 "$before"); do biground "$r"; done
for s in create-tree ls-tree stat-tree; do step "$s"; done
for t in "${TARGETS[@]}"; do record peak "$t" "$(peak "$t")"; done
step rm
for r in $(seq $((before + 1)) "$ROUNDS"); do biground "$r"; done

# Report.
# val STEP TARGET: the median of the step's samples on the target.
val() {
  awk -v s="$1" -v t="$2" '$1 == s && $2 == t {print $3}' "$results" | sort -g |
    awk '{v[NR] = $1} END {if (NR) print v[int((NR + 1) / 2)]}'
}
fmt() { [ -n "$1" ] && printf "%.${2:-2}f" "$1" || printf -- "-"; }
perfile() { [ -n "$1" ] && printf "%.0f" "$(echo "$1 * 1000000 / $2" | bc -l)" || printf -- "-"; }
ratio() { [ -n "$1" ] && [ -n "$2" ] && printf "%.2f×" "$(echo "$2 / $1" | bc -l)" || printf -- "-"; }
GC=()
for t in gcfs gcfs2; do [ -n "${LABEL[$t]:-}" ] && [[ " ${TARGETS[*]} " = *" $t "* ]] && GC+=("$t"); done
declare -A COUNT=([create-big]=$BIG [ls-big]=$BIG [stat-big]=$BIG [create-tree]=$FILES [ls-tree]=$FILES [stat-tree]=$FILES [rm]=$((FILES + BIG)))
declare -A WHAT=([create-big]="create, one directory" [ls-big]="\`ls -l\` of it" [stat-big]="\`stat\` of every file"
  [create-tree]="create, $DIRS directories" [ls-tree]="\`ls -lR\` of them" [stat-tree]="\`stat\` of every file" [rm]="\`rm -rf\` of all")
{
  echo "# ezfs at scale"
  echo
  echo "Latest run of \`make bench-scale\` ($(date -u +%Y-%m-%d), $((SECONDS / 60)) minutes): $BIG empty files in one directory, then"
  echo "$FILES empty files over $DIRS directories; each step on every target in turn (${TARGETS[*]},"
  echo "rotated at each step), every step on a cold cache (\`sync; echo 3 > /proc/sys/vm/drop_caches\`, then a wait until every daemon is idle). Seconds, and µs per file;"
  echo "The directory of $BIG: medians of $ROUNDS rounds, $((ROUNDS / 2)) of them after the $FILES; the $FILES: one. Ratios are gocryptfs's"
  echo "time ÷ the zone's, so above 1.00× the zone is faster."
  echo
  printf "| step | files |"
  for t in "${TARGETS[@]}"; do printf " %s s | µs/file |" "${LABEL[$t]}"; done
  for g in "${GC[@]}"; do printf " zone vs %s |" "${LABEL[$g]}"; done
  echo
  printf "|---|---:|"
  for _ in "${TARGETS[@]}"; do printf -- "---:|---:|"; done
  for _ in "${GC[@]}"; do printf -- "---:|"; done
  echo
  for s in "${STEPS[@]}"; do
    printf "| %s | %s |" "${WHAT[$s]}" "${COUNT[$s]}"
    for t in "${TARGETS[@]}"; do printf " %s | %s |" "$(fmt "$(val "$s" "$t")")" "$(perfile "$(val "$s" "$t")" "${COUNT[$s]}")"; done
    for g in "${GC[@]}"; do printf " %s |" "$(ratio "$(val "$s" zone)" "$(val "$s" "$g")")"; done
    echo
  done
  echo
  echo "Growth: time per file at $FILES files ÷ time per file at $BIG (1.00× is linear)."
  echo
  printf "| step |"; for t in "${TARGETS[@]}"; do printf " %s |" "${LABEL[$t]}"; done; echo
  printf "|---|"; for _ in "${TARGETS[@]}"; do printf -- "---:|"; done; echo
  for p in "create create-big create-tree" "\`ls -l\` / \`ls -lR\` ls-big ls-tree" "\`stat\` stat-big stat-tree"; do
    read -r -a w <<< "$p"
    n=${#w[@]}
    printf "| %s |" "${w[*]:0:n-2}"
    for t in "${TARGETS[@]}"; do
      a=$(val "${w[n-2]}" "$t"); b=$(val "${w[n-1]}" "$t")
      if [ -n "$a" ] && [ -n "$b" ]; then printf " %.2f× |" "$(echo "($b / $FILES) / ($a / $BIG)" | bc -l)"; else printf " - |"; fi
    done
    echo
  done
  echo
  echo "Daemon memory (VmRSS, MiB) after each step; peak is VmHWM over the steps before \`rm\`."
  echo
  printf "| after |"; for t in "${TARGETS[@]}"; do printf " %s |" "${LABEL[$t]}"; done; echo
  printf "|---|"; for _ in "${TARGETS[@]}"; do printf -- "---:|"; done; echo
  for s in mount "${STEPS[@]}"; do
    printf "| %s |" "${WHAT[$s]:-mount}"
    for t in "${TARGETS[@]}"; do printf " %s |" "$(fmt "$(val "rss-$s" "$t")" 0)"; done
    echo
  done
  printf "| peak |"; for t in "${TARGETS[@]}"; do printf " %s |" "$(fmt "$(val peak "$t")" 0)"; done; echo
  echo
  echo "The big directory's samples in the order they were taken, seconds (the medians above are of these):"
  echo
  for s in create-big ls-big stat-big; do
    for t in "${TARGETS[@]}"; do
      echo "- ${WHAT[$s]}, ${LABEL[$t]}: $(awk -v s="$s" -v t="$t" '$1 == s && $2 == t {printf "%s%.2f", sep, $3; sep = ", "}' "$results")"
    done
  done
  echo
  echo "Machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(free -g | awk '/Mem/ {print $2}') GiB,"
  echo "kernel $(uname -r), backing file system $(stat -f -c %T "$work")."
  echo "Versions: ezfs $VERSION, $(go version | cut -d' ' -f3);"
  for g in "${GC[@]}"; do echo "${LABEL[$g]};"; done
  echo "$(ls --version | head -1), $(stat --version | head -1)."
  echo
  echo "Reproduce: \`make bench-scale\` (as root; installs gocryptfs if missing). Smaller runs:"
  echo "\`BENCH_SCALE_FILES=20000 BENCH_SCALE_DIRS=20 BENCH_SCALE_BIG=2000 make bench-scale\`."
} > "$OUT"
cat "$OUT"
