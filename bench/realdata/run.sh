#!/usr/bin/env bash
# The real-data benchmark (not in CI): TNS models and baselines on ../shared/data/epf_fr_be.csv,
# same chronological 60/15/10/15 split per series and the same forecast origins for every model.
#
#   bash bench/realdata/run.sh            # → results/realdata/epf.{json,md}
#   TNS_NHITS=1 bash bench/realdata/run.sh  # also NeuralForecast's N-HiTS (installs torch)
#   TNS_REUSE=1 …                            # keep the models and N-HiTS forecasts already in
#                                            # target/realdata-work (re-evaluate after a change
#                                            # to evaluation only; retrain after any other)
#
# Tasks: both series one hour ahead (origins every hour); FR and BE day-ahead (24 hours,
# calibration and test origins every 24 rows at 23:00; training windows at every hour). TNS models: persistence, seasonal naive (168), linear, MLP,
# System A and System B (GRU, and over the MLP), lookback 48 for the learned models (and the
# MLP at lookback 168, a week, as `mlp-168`), using the past of every column (price, the two
# day-ahead forecasts, week day); and the same information LightGBM has, as `*-fx`: linear and
# MLP at lookback 168 and System A at 48 with the day-ahead forecasts `gen_forecast` and
# `system_load` as known-future covariates and hour and day-of-week calendar features of the
# predicted hours (--future, --calendar; timestamps as written, no time zone conversion);
# the structural Kalman prior alone (`kalman-structural`) and System B over the MLP correcting
# it with those inputs (`system-b-structural-fx`); the same prior regressed on the two
# day-ahead forecasts (`kalman-structural-x`, and with a damped slope `kalman-structural-x-damped`) and System B correcting it (`system-b-structural-x`). System B's gate mode is chosen on the
# calibration split (--gate-mode auto, the default). The zoo over a week with every input:
# DLinear, LSTM, TCN, N-HiTS (alone and under System B), a transformer, S4D and Mamba; System B recalibrated
# with normalized scores (`*-norm`) and by hour of day (`*-hour`, `*-norm-hour`); System B with
# quantile heads and conformalized quantile regression (`*-cqr`, `*-cqr-norm-hour`).
# Baselines (bench/realdata/baselines.py, pinned in requirements.txt): seasonal naive, ridge on
# lags, LightGBM with lags, calendar and the known-future covariates.
set -euo pipefail
cd "$(dirname "$0")/../.."
data=../shared/data/epf_fr_be.csv
out=results/realdata
# Models and per-forecast CSVs stay in target/ (not committed) so that the baselines can be
# rerun alone: python bench/realdata/baselines.py DATA TASK.json PREDICTIONS.csv OUT.json
work=target/realdata-work
mkdir -p "$out" "$work"
cargo build --release -q -p tns-cli
# A copy, so that rebuilding the workspace during the run cannot change the binary mid-way.
tns=$work/tns
cp target/release/tns "$tns"
venv=target/realdata-venv
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check -r bench/realdata/requirements.txt

# `tns train ARGS… -o FILE`, skipped under TNS_REUSE=1 when FILE (the last argument) exists.
train() {
  if [ "${TNS_REUSE:-0}" = 1 ] && [ -f "${!#}" ]; then return; fi
  "$tns" train "$@"
}

run_task() {
  local name=$1 series=$2 horizon=$3 every=$4
  local filter=() ids='["FR", "BE"]'
  if [ "$series" != both ]; then filter=(--series "$series"); ids="[\"$series\"]"; fi
  local common=(--data "$data" --time-column ds --series-column unique_id "${filter[@]}"
                --targets y --horizon "$horizon" --origin-every "$every")
  local models=()
  for kind in persistence linear mlp system-a system-b; do
    train "${common[@]}" --model "$kind" --lookback 48 -o "$work/$name-$kind.tns"
    models+=("$work/$name-$kind.tns")
  done
  train "${common[@]}" --model system-b --network mlp:64,64 --name system-b-mlp \
         --lookback 48 -o "$work/$name-system-b-mlp.tns"
  train "${common[@]}" --model mlp --name mlp-168 --lookback 168 -o "$work/$name-mlp-168.tns"
  train "${common[@]}" --model seasonal-naive --season 168 -o "$work/$name-seasonal-naive.tns"
  models+=("$work/$name-system-b-mlp.tns" "$work/$name-mlp-168.tns" "$work/$name-seasonal-naive.tns")
  local known=(--future gen_forecast,system_load --calendar hour,dow)
  train "${common[@]}" "${known[@]}" --model linear --name linear-168-fx --lookback 168 \
         -o "$work/$name-linear-168-fx.tns"
  train "${common[@]}" "${known[@]}" --model mlp --name mlp-168-fx --lookback 168 \
         -o "$work/$name-mlp-168-fx.tns"
  train "${common[@]}" "${known[@]}" --model system-a --name system-a-fx --lookback 48 \
         -o "$work/$name-system-a-fx.tns"
  models+=("$work/$name-linear-168-fx.tns" "$work/$name-mlp-168-fx.tns" "$work/$name-system-a-fx.tns")
  # The structural prior (local level + daily seasonal, 4 harmonics, fitted by maximum
  # likelihood) alone, and System B correcting it with the MLP and the same inputs.
  train "${common[@]}" --model kalman --name kalman-structural --lookback 168 \
         --seasons 24:4 -o "$work/$name-kalman-structural.tns"
  train "${common[@]}" "${known[@]}" --model system-b --network mlp:64,64 \
         --name system-b-structural-fx --lookback 168 --seasons 24:4 \
         -o "$work/$name-system-b-structural-fx.tns"
  models+=("$work/$name-kalman-structural.tns" "$work/$name-system-b-structural-fx.tns")
  # The same structural prior regressed on the two day-ahead forecasts (β fitted with the
  # variances by maximum likelihood; the forecast adds β·x of the predicted hours), alone and
  # corrected by System B over the MLP with the same inputs.
  local regressors=(--prior-regressors gen_forecast,system_load)
  train "${common[@]}" "${known[@]}" --model kalman --name kalman-structural-x --lookback 168 \
         --seasons 24:4 "${regressors[@]}" -o "$work/$name-kalman-structural-x.tns"
  train "${common[@]}" "${known[@]}" --model system-b --network mlp:64,64 \
         --name system-b-structural-x --lookback 168 --seasons 24:4 "${regressors[@]}" \
         -o "$work/$name-system-b-structural-x.tns"
  models+=("$work/$name-kalman-structural-x.tns" "$work/$name-system-b-structural-x.tns")
  # The same System B with quantile heads (pinball loss at 0.05 and 0.95 beside the point),
  # its interval conformalized quantile regression (`*-cqr`), and recalibrated with
  # normalized scores by hour of day (`*-cqr-norm-hour`).
  train "${common[@]}" "${known[@]}" --model system-b --network mlp:64,64 --quantile-heads \
         --name system-b-structural-x-cqr --lookback 168 --seasons 24:4 "${regressors[@]}" \
         -o "$work/$name-system-b-structural-x-cqr.tns"
  "$tns" calibrate "$work/$name-system-b-structural-x-cqr.tns" --interval normalized \
      --interval-by hour --name system-b-structural-x-cqr-norm-hour --data "$data" \
      --time-column ds --series-column unique_id "${filter[@]}" \
      -o "$work/$name-system-b-structural-x-cqr-norm-hour.tns"
  models+=("$work/$name-system-b-structural-x-cqr.tns" "$work/$name-system-b-structural-x-cqr-norm-hour.tns")
  # The same regressed prior with a damped slope (φ fitted by maximum likelihood with the
  # variances; `--trend damped`).
  train "${common[@]}" "${known[@]}" --model kalman --name kalman-structural-x-damped \
         --lookback 168 --seasons 24:4 --trend damped "${regressors[@]}" \
         -o "$work/$name-kalman-structural-x-damped.tns"
  models+=("$work/$name-kalman-structural-x-damped.tns")
  # DLinear (moving-average trend + remainder, one linear map; kernel 25) over a week with
  # every input, alone (correcting the last value) and as System B's correction of the
  # regressed structural prior.
  train "${common[@]}" "${known[@]}" --model system-a --network dlinear:25 --name dlinear-168-fx \
         --lookback 168 -o "$work/$name-dlinear-168-fx.tns"
  train "${common[@]}" "${known[@]}" --model system-b --network dlinear:25 \
         --name system-b-structural-x-dlinear --lookback 168 --seasons 24:4 "${regressors[@]}" \
         -o "$work/$name-system-b-structural-x-dlinear.tns"
  models+=("$work/$name-dlinear-168-fx.tns" "$work/$name-system-b-structural-x-dlinear.tns")
  # An LSTM and a TCN (receptive field 253 rows) over a week with every input, correcting the
  # last value. The TCN trains on Candle's convolution graph (no fused op), about 28 s an
  # epoch on both series: 6 epochs.
  train "${common[@]}" "${known[@]}" --model system-a --network lstm:32 --name lstm-168-fx \
         --lookback 168 -o "$work/$name-lstm-168-fx.tns"
  train "${common[@]}" "${known[@]}" --model system-a --network tcn:16,3,6 --name tcn-168-fx \
         --lookback 168 --epochs 6 -o "$work/$name-tcn-168-fx.tns"
  models+=("$work/$name-lstm-168-fx.tns" "$work/$name-tcn-168-fx.tns")
  # N-HiTS (kernels 4, 2, 1; two 512-wide layers per block, as NeuralForecast's defaults) over
  # a week with every input, alone and as System B's correction of the regressed structural
  # prior (bench/zoo/nhits.sh compares it with NeuralForecast's over 3 seeds).
  train "${common[@]}" "${known[@]}" --model system-a --network nhits:3,1,512,2 --lr 5e-4 \
         --name nhits-168-fx --lookback 168 -o "$work/$name-nhits-168-fx.tns"
  train "${common[@]}" "${known[@]}" --model system-b --network nhits:3,1,512,2 --lr 5e-4 \
         --name system-b-structural-x-nhits --lookback 168 --seasons 24:4 "${regressors[@]}" \
         -o "$work/$name-system-b-structural-x-nhits.tns"
  models+=("$work/$name-nhits-168-fx.tns" "$work/$name-system-b-structural-x-nhits.tns")
  # A transformer over a week with every input: 7 tokens of a day each (patch 24), two blocks.
  train "${common[@]}" "${known[@]}" --model system-a --network transformer:32,4,2,2,24 \
         --lr 1e-3 --name transformer-168-fx --lookback 168 -o "$work/$name-transformer-168-fx.tns"
  models+=("$work/$name-transformer-168-fx.tns")
  # The same transformer PatchTST's way: 13 overlapping tokens of a day every 12 hours and a
  # head on every token flattened.
  train "${common[@]}" "${known[@]}" --model system-a --network transformer:32,4,2,2,24,12,flatten \
         --lr 1e-3 --name patchtst-168-fx --lookback 168 -o "$work/$name-patchtst-168-fx.tns"
  models+=("$work/$name-patchtst-168-fx.tns")
  # S4D over a week with every input: 32 channels of 16 real diagonal modes, two blocks.
  train "${common[@]}" "${known[@]}" --model system-a --network s4d:32,16,2 \
         --lr 1e-3 --name s4d-168-fx --lookback 168 -o "$work/$name-s4d-168-fx.tns"
  models+=("$work/$name-s4d-168-fx.tns")
  # Mamba over a week with every input: 16 channels, 32 inner, 8 modes, convolution 4, two
  # blocks; 12 epochs at most (about 40 s an epoch on both series: its elementwise steps run
  # as Candle ops over [batch, 168, 32] tensors).
  train "${common[@]}" "${known[@]}" --model system-a --network mamba:16,8,2,4,2 \
         --lr 1e-3 --epochs 12 --name mamba-168-fx --lookback 168 -o "$work/$name-mamba-168-fx.tns"
  models+=("$work/$name-mamba-168-fx.tns")
  # The same two and the MLP with every input, recalibrated (no retraining) with scores
  # normalized by each window's volatility (`tns calibrate --interval normalized`), as `*-norm`.
  for m in kalman-structural-x system-b-structural-x mlp-168-fx; do
    "$tns" calibrate "$work/$name-$m.tns" --interval normalized --name "$m-norm" \
        --data "$data" --time-column ds --series-column unique_id "${filter[@]}" \
        -o "$work/$name-$m-norm.tns"
    models+=("$work/$name-$m-norm.tns")
  done
  # The same System B recalibrated by the hour of day of the predicted step (Mondrian), with
  # split and normalized scores, as `*-hour` and `*-norm-hour`.
  for scores in split normalized; do
    local suffix=hour
    [ "$scores" = normalized ] && suffix=norm-hour
    "$tns" calibrate "$work/$name-system-b-structural-x.tns" --interval "$scores" --interval-by hour \
        --name "system-b-structural-x-$suffix" --data "$data" --time-column ds \
        --series-column unique_id "${filter[@]}" -o "$work/$name-system-b-structural-x-$suffix.tns"
    models+=("$work/$name-system-b-structural-x-$suffix.tns")
  done
  "$tns" eval --data "$data" "${models[@]}" --reference system-b --season 168 \
         --report "$out/$name-tns" --predictions "$work/$name-predictions.csv" \
         --plots "$out/plots-$name"
  cat > "$work/$name.json" <<JSON
{"name": "$name", "series": $ids, "horizon": $horizon, "lookback": 48, "season": 168,
 "split": [60, 15, 10, 15], "covariates": ["gen_forecast", "system_load"]}
JSON
  local extra=()
  if [ "${TNS_NHITS:-0}" = 1 ]; then
    [ "${TNS_REUSE:-0}" = 1 ] && [ -f "$work/$name-nhits.csv" ] ||
    "$nhits/bin/python" bench/realdata/nhits.py "$data" "$work/$name.json" \
        "$work/$name-predictions.csv" "$work/$name-nhits.csv"
    extra=("$work/$name-nhits.csv")
  fi
  "$venv/bin/python" bench/realdata/baselines.py "$data" "$work/$name.json" \
      "$work/$name-predictions.csv" "$out/$name.json" "${extra[@]}"
}

# N-HiTS (NeuralForecast, torch) runs with TNS_NHITS=1, in its own environment.
nhits=target/nhits-venv
if [ "${TNS_NHITS:-0}" = 1 ]; then
  [ -x "$nhits/bin/python" ] || python3 -m venv "$nhits"
  "$nhits/bin/pip" install --quiet --disable-pip-version-check -r bench/realdata/nhits-requirements.txt
fi

run_task both-h1 both 1 1
run_task fr-h24 FR 24 24
run_task be-h24 BE 24 24
"$venv/bin/python" bench/realdata/table.py "$out" > "$out/epf.md"
cat "$out/epf.md"
