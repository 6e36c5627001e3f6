#!/usr/bin/env bash
# Interval methods on generated data (issue 12; not in CI), where calibration and test windows
# are exchangeable: System B (the default GRU) with split-conformal intervals, and the same
# with quantile heads and conformalized quantile regression (`--quantile-heads`), on the `turn`,
# `mixed` and `cv` trajectories (24,000 rows, the default split, 10 epochs each).
#   bash bench/intervals/generated.sh     # → results/intervals/generated-{turn,mixed,cv}.md
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release -q -p tns-cli
tns=target/release/tns
work=target/intervals-generated
mkdir -p "$work" results/intervals
for regime in turn mixed cv; do
  synth=(--synth trajectory --regime "$regime")
  "$tns" train "${synth[@]}" --model system-b --name system-b --epochs 10 \
      -o "$work/$regime-system-b.tns" 2>/dev/null
  "$tns" train "${synth[@]}" --model system-b --name system-b-cqr --quantile-heads --epochs 10 \
      -o "$work/$regime-system-b-cqr.tns" 2>/dev/null
  "$tns" eval "${synth[@]}" "$work/$regime-system-b.tns" "$work/$regime-system-b-cqr.tns" \
      --reference system-b --report "$work/$regime" > /dev/null
  {
    echo "Produced by \`bash bench/intervals/generated.sh\` (generated \`$regime\`, 24,000 rows, default split, 10 epochs each; \`tns eval\` on the test split; nominal coverage 90%):"
    echo
    cat "$work/$regime.md"
  } > "results/intervals/generated-$regime.md"
  cat "results/intervals/generated-$regime.md"
done
