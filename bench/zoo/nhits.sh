#!/usr/bin/env bash
# TNS's N-HiTS against NeuralForecast's on EPF FR, h=24 (issue 15's accuracy goal; not in
# CI): the real-data benchmark's split and test origins, 168-hour input, the two day-ahead
# forecasts and hour/day-of-week of the predicted hours as future inputs, 3 seeds each.
# TNS: `--network nhits:3,1,512,2` (kernels 4, 2, 1; knots 6, 12, 24; two 512-wide layers per
# block, as NeuralForecast's defaults), lr 5e-4, System A (correcting the last value), early
# stopping on validation. NeuralForecast: bench/realdata/nhits.py (its defaults, 1000 steps
# at most, early stopping). Both on every core of this machine, one after the other; the time
# is each command's wall clock (TNS: `tns train`, data loading and calibration included;
# NeuralForecast: its fit and rolling forecast).
#   bash bench/zoo/nhits.sh     # → results/zoo/nhits-fr.{json,md}
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release -q -p tns-cli
work=target/zoo-nhits
mkdir -p "$work" results/zoo
tns=$work/tns
cp target/release/tns "$tns"
nhits=target/nhits-venv
[ -x "$nhits/bin/python" ] || python3 -m venv "$nhits"
"$nhits/bin/pip" install --quiet --disable-pip-version-check -r bench/realdata/nhits-requirements.txt
data=../shared/data/epf_fr_be.csv
common=(--data "$data" --time-column ds --series-column unique_id --series FR --targets y
        --horizon 24 --origin-every 24 --future gen_forecast,system_load --calendar hour,dow
        --lookback 168)
: > "$work/times.csv"
models=()
for seed in 1 2 3; do
  start=$EPOCHREALTIME
  "$tns" train "${common[@]}" --model system-a --network nhits:3,1,512,2 --lr 5e-4 \
      --seed "$seed" --name "tns-nhits-seed$seed" -o "$work/tns-nhits-seed$seed.tns" 2>/dev/null
  echo "tns-nhits-seed$seed,$(awk "BEGIN { print $EPOCHREALTIME - $start }")" >> "$work/times.csv"
  models+=("$work/tns-nhits-seed$seed.tns")
done
"$tns" eval --data "$data" "${models[@]}" --season 168 --predictions "$work/tns.csv" > /dev/null
cat > "$work/task.json" <<JSON
{"name": "fr-h24", "series": ["FR"], "horizon": 24, "lookback": 168, "season": 168,
 "split": [60, 15, 10, 15], "covariates": ["gen_forecast", "system_load"]}
JSON
for seed in 1 2 3; do
  start=$EPOCHREALTIME
  "$nhits/bin/python" bench/realdata/nhits.py "$data" "$work/task.json" "$work/tns.csv" \
      "$work/nf-seed$seed.csv" "$seed" > "$work/nf-seed$seed.log" 2>&1
  echo "nf-nhits-seed$seed,$(awk "BEGIN { print $EPOCHREALTIME - $start }")" >> "$work/times.csv"
done
python3 bench/zoo/nhits_table.py "$work" results/zoo/nhits-fr
cat results/zoo/nhits-fr.md
