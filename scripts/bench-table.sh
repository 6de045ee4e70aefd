#!/usr/bin/env bash
# bench-table.sh RESULTS: the tables of BENCHMARKS.md from the samples scripts/bench.sh
# recorded, one "workload target value" per line: medians, ratios of the zone to the
# other targets, and the spread of every figure. Ratios say how many times better the
# zone is: for rates zone/other, for times other/zone. Every gocryptfs the run had is a
# target gcfs, gcfs2, ...; a line "label TARGET words" names it in the headers.
set -euo pipefail
results=$1
WORKLOADS=(write read untar ls cat rm create randread randwrite)
read -ra GCFS <<< "$(awk '$2 ~ /^gcfs[0-9]*$/ && $1 != "label" {print $2}' "$results" | sort -u | xargs)"
TARGETS=(plain pass dpass zone "${GCFS[@]}")
RATIO=(pass dpass "${GCFS[@]}")

label() {
  local l
  l=$(awk -v t="$1" '$1 == "label" && $2 == t {$1 = $2 = ""; sub(/^ +/, ""); print; exit}' "$results")
  case $1 in
    plain) echo "plain disk" ;;
    pass) echo "ezfs passthrough (kernel)" ;;
    dpass) echo "ezfs passthrough (daemon)" ;;
    zone) echo "ezfs zone" ;;
    *) echo "${l:-gocryptfs}" ;;
  esac
}
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
row() { printf '| %s ' "$@"; printf '|\n'; }
rule() { printf '|---|'; [ "$1" = 1 ] && printf -- '---|'; printf -- '---:|%.0s' $(seq 1 "$2"); printf '\n'; }

# Workloads a run did not measure (an older results file) are left out.
measured=()
for w in "${WORKLOADS[@]}"; do grep -q "^$w zone " "$results" && measured+=("$w"); done

heads=()
for t in "${TARGETS[@]}"; do heads+=("$(label "$t")"); done
for t in "${RATIO[@]}"; do heads+=("zone vs $(label "$t")"); done
row workload unit "${heads[@]}"
rule 1 $((${#TARGETS[@]} + ${#RATIO[@]}))
for w in "${measured[@]}"; do
  u=$(unit "$w")
  z=$(median "$w" zone)
  cells=()
  for t in "${TARGETS[@]}"; do cells+=("$(printf '%.2f' "$(median "$w" "$t")")"); done
  for t in "${RATIO[@]}"; do
    o=$(median "$w" "$t")
    if [ "$u" = s ]; then r=$(echo "$o / $z" | bc -l); else r=$(echo "$z / $o" | bc -l); fi
    cells+=("$(printf '%.2f×' "$r")")
  done
  row "$w" "$u" "${cells[@]}"
done

printf '\nSpread (lowest–highest sample) of the figures above:\n\n'
heads=()
for t in "${TARGETS[@]}"; do heads+=("$(label "$t")"); done
row workload "${heads[@]}"
rule 0 ${#TARGETS[@]}
for w in "${measured[@]}"; do
  f='%.0f'
  [ "$(unit "$w")" = s ] && f='%.2f'
  cells=()
  for t in "${TARGETS[@]}"; do
    # shellcheck disable=SC2046 # two numbers, lowest and highest
    cells+=("$(printf "$f–$f" $(spread "$w" "$t"))")
  done
  row "$w" "${cells[@]}"
done

printf '\nezfs daemon peak RSS during the streaming write into the zone: %.0f MiB (median)\n' "$(median rss zone)"
