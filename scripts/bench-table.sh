#!/usr/bin/env bash
# bench-table.sh RESULTS: the tables of BENCHMARKS.md from the samples scripts/bench.sh
# recorded, one "workload target value" per line: medians, ratios of the zone to the
# other targets, and the spread of every figure. Ratios say how many times better the
# zone is: for rates zone/other, for times other/zone.
set -euo pipefail
results=$1
TARGETS=(plain pass dpass zone gcfs)
WORKLOADS=(write read untar ls rm create randread randwrite)

samples() { grep "^$1 $2 " "$results" | awk '{print $3}' | sort -g; }
median() { samples "$1" "$2" | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
spread() { samples "$1" "$2" | sed -n '1p;$p'; }
unit() {
  case $1 in
    write|read) echo "MiB/s" ;;
    randread|randwrite) echo "IOPS" ;;
    *) echo "s" ;;
  esac
}

printf '| workload | unit | plain disk | ezfs passthrough (kernel) | ezfs passthrough (daemon) | ezfs zone | gocryptfs | zone vs passthrough (kernel) | zone vs passthrough (daemon) | zone vs gocryptfs |\n'
printf '|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n'
for w in "${WORKLOADS[@]}"; do
  u=$(unit "$w")
  p=$(median "$w" plain); e=$(median "$w" pass); dp=$(median "$w" dpass); z=$(median "$w" zone); g=$(median "$w" gcfs)
  if [ "$u" = s ]; then
    r1=$(echo "$e / $z" | bc -l); r2=$(echo "$dp / $z" | bc -l); r3=$(echo "$g / $z" | bc -l)
  else
    r1=$(echo "$z / $e" | bc -l); r2=$(echo "$z / $dp" | bc -l); r3=$(echo "$z / $g" | bc -l)
  fi
  printf '| %s | %s | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f× | %.2f× | %.2f× |\n' "$w" "$u" "$p" "$e" "$dp" "$z" "$g" "$r1" "$r2" "$r3"
done

printf '\nSpread (lowest–highest sample) of the figures above:\n\n'
printf '| workload | plain disk | ezfs passthrough (kernel) | ezfs passthrough (daemon) | ezfs zone | gocryptfs |\n'
printf '|---|---:|---:|---:|---:|---:|\n'
for w in "${WORKLOADS[@]}"; do
  f='%.0f'
  [ "$(unit "$w")" = s ] && f='%.2f'
  printf '| %s |' "$w"
  for t in "${TARGETS[@]}"; do
    # shellcheck disable=SC2046 # two numbers, lowest and highest
    printf " $f–$f |" $(spread "$w" "$t")
  done
  printf '\n'
done

printf '\nezfs daemon peak RSS during the streaming write into the zone: %.0f MiB (median)\n' "$(median rss zone)"
