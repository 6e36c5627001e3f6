#!/usr/bin/env bash
# Day-ahead backtest on ../shared/data/pedestrian.csv as it is (four sensors, midnight written
# as a bare date, missing hours): 4 rolling folds over the last 20% of the time range, an
# expanding history refitted per fold, next 24 hours issued every day at 23:00.
#
#   bash bench/realdata/pedestrian.sh      # → results/realdata/pedestrian{,-calendar}.{md,json}
#
# The second backtest gives the MLP a week of history and the predicted hours' hour of day and
# day of week (--calendar; the timestamps are Melbourne time as written), beside the weekly
# seasonal naive forecast on the same folds.
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
target/release/tns backtest --data ../shared/data/pedestrian.csv --time-column Date_Time \
    --series-column unique_id --targets y \
    --models seasonal-naive,mlp --calendar hour,dow \
    --season 168 --lookback 168 --horizon 24 --origin-every 24 --folds 4 \
    --report "$out/pedestrian-calendar.json" \
    --predictions target/realdata-work/pedestrian-calendar-predictions.csv \
    > "$out/pedestrian-calendar.md"
cat "$out/pedestrian.md" "$out/pedestrian-calendar.md"
