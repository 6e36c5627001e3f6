#!/usr/bin/env bash
# The zoo's accuracy on generated data (issue 15; not in CI): each network alone (System A,
# correcting the last value) and as System B's correction, beside the GRU and the MLP, on the
# `turn` and `mixed` trajectories (24,000 rows, the default split), 10 epochs each.
#   bash bench/zoo/accuracy.sh     # → results/zoo/accuracy-{turn,mixed}.md
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release -q -p tns-cli
tns=target/release/tns
work=target/zoo-accuracy
mkdir -p "$work" results/zoo
for regime in turn mixed; do
  synth=(--synth trajectory --regime "$regime")
  models=()
  for network in gru:32 mlp:64,64 lstm:32 tcn:16,3,2 dlinear:5 nhits:3,1,64,2 transformer:32,4,2,2 s4d:32,16,2 mamba:32,16,2,4,2; do
    for kind in system-a system-b; do
      name="$kind-${network//[:,]/-}"
      "$tns" train "${synth[@]}" --model "$kind" --network "$network" --name "$name" \
          --epochs 10 -o "$work/$regime-$name.tns" 2>/dev/null
      models+=("$work/$regime-$name.tns")
    done
  done
  "$tns" eval "${synth[@]}" "${models[@]}" --reference system-b-gru-32 \
      --adaptive-gamma 0 --report "$work/$regime" > /dev/null
  {
    echo "Produced by \`bash bench/zoo/accuracy.sh\` (generated \`$regime\`, 24,000 rows, default split, 10 epochs each; \`tns eval\` on the test split, ΔMSE against System B over the GRU):"
    echo
    sed -n '1,/^$/p' "$work/$regime.md"
  } > "results/zoo/accuracy-$regime.md"
  cat "results/zoo/accuracy-$regime.md"
done
