#!/usr/bin/env bash
# Benchmark of `hxforge convert` on full-width synthetic teachers: throughput against `cp` of the same bytes and peak
# anonymous memory (RssAnon sampled from /proc every 50 ms; file-backed pages of the mapped teacher do not count).
#
#   bench/convert_bench.sh [--hxforge build/hxforge] [--work DIR] [--reka-layers N] [--gemma-layers N] [--verify]
#
#   --reka-layers N   depth of the synthetic Reka Flash 3 teacher (hidden 6144, vocab 100352; 44 = the real model,
#                     ~42 GB bf16, needing ~90 GB free for teacher + student). Default 4 (~6 GB).
#   --gemma-layers N  depth of the synthetic Gemma-4 E2B text stack (35 = the real one, ~8.6 GB). Default 35.
#   --verify          also time the run with the built-in verification (re-hash, forward pass, probe).
#
# The full-size Reka case, when disk allows:  bench/convert_bench.sh --reka-layers 44 --work /big/disk
set -euo pipefail

HXFORGE=build/hxforge
WORK=/tmp/hxforge-convert-bench
REKA_LAYERS=4
GEMMA_LAYERS=35
VERIFY=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --hxforge) HXFORGE=$2; shift 2 ;;
    --work) WORK=$2; shift 2 ;;
    --reka-layers) REKA_LAYERS=$2; shift 2 ;;
    --gemma-layers) GEMMA_LAYERS=$2; shift 2 ;;
    --verify) VERIFY=1; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
HXFORGE=$(realpath "$HXFORGE")
mkdir -p "$WORK"
echo "free disk:"; df -h "$WORK" | tail -1

# Runs a command, printing "seconds peak_rss_anon_kib".
measure() {
  local start end peak=0 rss pid
  start=$(date +%s.%N)
  "$@" >/dev/null &
  pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    rss=$(awk '/^RssAnon:/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
    [[ -n "$rss" && "$rss" -gt "$peak" ]] && peak=$rss
    sleep 0.05
  done
  wait "$pid"
  end=$(date +%s.%N)
  echo "$(echo "$end - $start" | bc) $peak"
}

# The bytes a conversion wrote (weights only).
weights_bytes() { du -cb "$1"/*.safetensors "$1"/*.pth 2>/dev/null | tail -1 | cut -f1; }

report() {  # name teacher_bytes student_bytes cp_seconds convert_seconds peak_kib
  awk -v n="$1" -v tb="$2" -v sb="$3" -v cps="$4" -v cs="$5" -v pk="$6" 'BEGIN {
    printf "%-34s teacher %6.2f GB  student %6.2f GB  cp %6.1f s (%5.2f GB/s)  convert %6.1f s (%5.2f GB/s written, %4.2fx cp time)  peak RssAnon %7.1f MiB\n",
      n, tb/1e9, sb/1e9, cps, tb/1e9/cps, cs, sb/1e9/cs, cs/cps, pk/1024 }'
}

run_case() {  # name synth-args convert-args
  local name=$1 synth_args=$2 convert_args=$3
  local teacher="$WORK/$name-teacher" student="$WORK/$name-student" copy="$WORK/$name-copy"
  rm -rf "$teacher" "$student" "$copy"
  echo "== $name: synth $synth_args"
  # shellcheck disable=SC2086
  "$HXFORGE" synth $synth_args --realistic --shard-size 5000000000 --out "$teacher" -q
  sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
  local tb; tb=$(du -cb "$teacher"/*.safetensors | tail -1 | cut -f1)
  read -r cps _ < <(measure cp -r "$teacher" "$copy")
  rm -rf "$copy"; sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
  # shellcheck disable=SC2086
  read -r cs peak < <(measure "$HXFORGE" convert "$teacher" $convert_args --no-verify -q --out "$student")
  report "$name (--no-verify)" "$tb" "$(weights_bytes "$student")" "$cps" "$cs" "$peak"
  if [[ $VERIFY == 1 ]]; then
    rm -rf "$student"; sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
    # shellcheck disable=SC2086
    read -r cs peak < <(measure "$HXFORGE" convert "$teacher" $convert_args -q --out "$student")
    report "$name (verified + probe)" "$tb" "$(weights_bytes "$student")" "$cps" "$cs" "$peak"
  fi
  rm -rf "$teacher" "$student"
}

# Reka: the l6 plan restricted to the layers the (possibly shortened) teacher has.
attention=$(echo 8 15 22 29 36 43 | tr ' ' '\n' | awk -v n="$REKA_LAYERS" '$1 < n' | paste -sd, -)
run_case "reka-flash-3 x$REKA_LAYERS -> hxa079" "--arch llama --preset reka-flash-3 --layers $REKA_LAYERS" \
  "--to hxa079 --layout reka-hxa079-l6 --attention-layers ${attention:-none}"
run_case "gemma4-e2b x$GEMMA_LAYERS -> hxa07i" "--arch gemma4 --preset gemma4-e2b --layers $GEMMA_LAYERS" \
  "--to hxa07i --layout gemma4-e2b-hxa07i"
