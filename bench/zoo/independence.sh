#!/usr/bin/env bash
# Channel independence (issue 16, PatchTST's option; not in CI): the same transformer with a
# head on every token, its tokens mixing every channel (`flatten`) or each channel cut into its
# own tokens through one shared embedding (`flatten,independent`).
# - generated `turn` and `mixed` (24,000 rows, default split, 10 epochs), System A and as
#   System B's correction;
# - the EPF tasks of bench/realdata/run.sh (same data, split, origins, options and lookback as
#   its `patchtst-168-fx`, which this retrains), beside seasonal naive.
#   bash bench/zoo/independence.sh   # → results/zoo/independence-{turn,mixed,both-h1,fr-h24,be-h24}.md
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release -q -p tns-cli
tns=target/release/tns
work=target/zoo-independence
mkdir -p "$work" results/zoo
header() {
  echo "Produced by \`bash bench/zoo/independence.sh\` ($1; \`tns eval\` on the test split, ΔMSE against \`$2\`):"
  echo
}
for regime in turn mixed; do
  synth=(--synth trajectory --regime "$regime")
  models=()
  for kind in system-a system-b; do
    for variant in flatten flatten,independent; do
      name="$kind-transformer-${variant//,/-}"
      "$tns" train "${synth[@]}" --model "$kind" --network "transformer:32,4,2,2,2,$variant" \
          --name "$name" --epochs 10 -o "$work/$regime-$name.tns" 2>/dev/null
      models+=("$work/$regime-$name.tns")
    done
  done
  "$tns" eval "${synth[@]}" "${models[@]}" --reference system-b-transformer-flatten \
      --adaptive-gamma 0 --report "$work/$regime" > /dev/null
  { header "generated \`$regime\`, 24,000 rows, default split, 10 epochs each, transformer:32,4,2,2,2 with 5 tokens of 2 rows" system-b-transformer-flatten
    sed -n '1,/^$/p' "$work/$regime.md"; } > "results/zoo/independence-$regime.md"
  cat "results/zoo/independence-$regime.md"
done
data=../shared/data/epf_fr_be.csv
task() {
  local name=$1 series=$2 horizon=$3 every=$4
  local filter=()
  if [ "$series" != both ]; then filter=(--series "$series"); fi
  local common=(--data "$data" --time-column ds --series-column unique_id "${filter[@]}"
                --targets y --horizon "$horizon" --origin-every "$every")
  local known=(--future gen_forecast,system_load --calendar hour,dow)
  "$tns" train "${common[@]}" --model seasonal-naive --season 168 -o "$work/$name-seasonal-naive.tns"
  for variant in flatten flatten,independent; do
    local suffix=${variant/flatten,independent/ci}
    suffix=${suffix/flatten/}
    "$tns" train "${common[@]}" "${known[@]}" --model system-a \
        --network "transformer:32,4,2,2,24,12,$variant" --lr 1e-3 \
        --name "patchtst${suffix:+-$suffix}-168-fx" --lookback 168 \
        -o "$work/$name-patchtst${suffix:+-$suffix}-168-fx.tns"
  done
  "$tns" eval --data "$data" "$work/$name-seasonal-naive.tns" "$work/$name-patchtst-168-fx.tns" \
      "$work/$name-patchtst-ci-168-fx.tns" --reference patchtst-168-fx --season 168 \
      --report "$work/$name" > /dev/null
  { header "EPF \`$name\` (series $series, horizon $horizon, an origin every $every rows), the split and options of bench/realdata/run.sh, transformer:32,4,2,2,24,12 over 168 rows with the future covariates and calendar" patchtst-168-fx
    sed -n '1,/^$/p' "$work/$name.md"; } > "results/zoo/independence-$name.md"
  cat "results/zoo/independence-$name.md"
}
task both-h1 both 1 1
task fr-h24 FR 24 24
task be-h24 BE 24 24
