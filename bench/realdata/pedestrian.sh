#!/usr/bin/env bash
# Day-ahead backtest on ../shared/data/pedestrian.csv as it is (four sensors, midnight written
# as a bare date, missing hours): 4 rolling folds over the last 20% of the time range, an
# expanding history refitted per fold, next 24 hours issued every day at 23:00.
#
#   bash bench/realdata/pedestrian.sh      # → results/realdata/pedestrian.{md,json}
set -euo pipefail
cd "$(dirname "$0")/../.."
out=results/realdata
mkdir -p "$out" target/realdata-work
cargo build --release -q -p tns-cli
target/release/tns backtest --data ../shared/data/pedestrian.csv --time-column Date_Time \
    --series-column unique_id --targets y \
    --models persistence,seasonal-naive,linear,mlp,system-b \
    --season 168 --lookback 48 --horizon 24 --origin-every 24 --folds 4 \
    --report "$out/pedestrian.json" \
    --predictions target/realdata-work/pedestrian-predictions.csv \
    > "$out/pedestrian.md"
cat "$out/pedestrian.md"
