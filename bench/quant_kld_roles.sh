#!/usr/bin/env bash
# Where the KLD of a quantized model comes from: quantizes the `--realistic` synthetic hxa079 of quant_kld_test
# (tiny, 3 layers, seed 3) one role at a time and with every single scheme, and prints mean KLD(bf16 ‖ quantized)
# and top-1 agreement from `hxforge verify --against` on 64 seeded tokens, next to the issue-#4 limits.
#
# usage: bench/quant_kld_roles.sh [HXFORGE_BINARY] [WORK_DIR]      (about a minute on 2 cores)
set -euo pipefail
hxforge=${1:-build/hxforge}
work=${2:-$(mktemp -d)}
mkdir -p "$work"
"$hxforge" synth --quiet --arch hxa079 --preset tiny --layers 3 --realistic --seed 3 --out "$work/original" --force \
  > /dev/null

# kld_of MODEL: "mean-KLD top-1" of MODEL against the original.
kld_of() {
  "$hxforge" verify "$1" --against "$work/original" --num-tokens 64 --json "$work/report.json" --force > /dev/null
  python3 -c "import json; r = json.load(open('$work/report.json')); print('%.6f %.3f' % (r['kld']['mean'], r['top1_agreement']))"
}

printf '%-34s %12s %8s %10s\n' "quantized" "mean KLD" "top-1" "limit"
declare -A limits=([int8]=0.0015 [fp8]=0.004 [fp6]=0.0055 [fp5]=0.011 [int4]=0.031)
for scheme in int8 fp8 fp6 fp5 int4; do
  "$hxforge" quantize --quiet "$work/original" --scheme "$scheme" --out "$work/q" --force > /dev/null
  read -r kld top1 <<< "$(kld_of "$work/q")"
  printf '%-34s %12s %8s %10s\n' "every weight, $scheme (head int8)" "$kld" "$top1" "${limits[$scheme]}"
done
for role in head rwkv_receptance rwkv_key rwkv_value rwkv_output attention_q attention_k attention_v attention_o \
            mlp_gate mlp_up mlp_down; do
  other_head=$([ "$role" = head ] && echo '' || echo ', "head": "keep"')
  echo "{\"roles\": {\"$role\": \"int8\"$other_head}}" > "$work/policy.json"
  "$hxforge" quantize --quiet "$work/original" --policy "$work/policy.json" --out "$work/q" --force > /dev/null
  read -r kld top1 <<< "$(kld_of "$work/q")"
  printf '%-34s %12s %8s %10s\n' "only $role, int8" "$kld" "$top1" ""
done
