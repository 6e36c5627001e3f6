#!/usr/bin/env bash
# The structural prior with four weeks of context (--prior-context 672) on the day-ahead EPF
# tasks, beside the same prior on one week and seasonal naive, on the benchmark's split and
# origins (not in CI):
#
#   bash bench/realdata/prior_context.sh   # → results/realdata/prior-context-{fr,be}.md
#
# Models: the prior alone (local level, daily seasonal with 4 harmonics, weekly with 2) on 168
# and on 672 rows; System B over the MLP (network on the last 168 rows, the day-ahead forecasts
# and calendar as known-future inputs) correcting the 672-row prior; seasonal naive (168).
set -euo pipefail
cd "$(dirname "$0")/../.."
data=../shared/data/epf_fr_be.csv
out=results/realdata
work=target/realdata-work/prior-context
mkdir -p "$out" "$work"
cargo build --release -q -p tns-cli
tns=$work/tns
cp target/release/tns "$tns"
for series in FR BE; do
  lower=$(echo "$series" | tr 'A-Z' 'a-z')
  common=(--data "$data" --time-column ds --series-column unique_id --series "$series"
          --targets y --horizon 24 --origin-every 24)
  "$tns" train "${common[@]}" --model kalman --name structural-week --lookback 168 \
         --seasons 24:4,168:2 -o "$work/$lower-week.tns"
  "$tns" train "${common[@]}" --model kalman --name structural-4-weeks --lookback 168 \
         --prior-context 672 --seasons 24:4,168:2 -o "$work/$lower-4-weeks.tns"
  "$tns" train "${common[@]}" --model system-b --network mlp:64,64 --name system-b-4-weeks-fx \
         --lookback 168 --prior-context 672 --seasons 24:4,168:2 \
         --future gen_forecast,system_load --calendar hour,dow -o "$work/$lower-b.tns"
  "$tns" train "${common[@]}" --model seasonal-naive --season 168 -o "$work/$lower-sn.tns"
  "$tns" eval --data "$data" "$work/$lower-week.tns" "$work/$lower-4-weeks.tns" \
         "$work/$lower-b.tns" "$work/$lower-sn.tns" --season 168 \
         --reference seasonal-naive > "$out/prior-context-$lower.md"
done
cat "$out"/prior-context-*.md
