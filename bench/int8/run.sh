#!/usr/bin/env bash
# Where INT8 pays: System B over networks of growing width, each quantized by `tns quantize`,
# which times both engines on the same test windows (alternating blocks, median per call).
# Writes results/int8/widths.{json,md}.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release --quiet -p tns-cli
tns=target/release/tns
work=target/int8-widths
out=results/int8
mkdir -p "$work" "$out"
data=(--synth trajectory --regime mixed --rows 6000)
networks=(mlp:64,64 mlp:256,256 mlp:512,512 mlp:1024,1024 gru:32 gru:128 lstm:64)
for net in "${networks[@]}"; do
  name=${net//[:,]/-}
  # One epoch: the time per window does not depend on how well the weights are trained.
  $tns train "${data[@]}" --model system-b --network "$net" --epochs 1 -o "$work/$name.tns" 2>/dev/null
  $tns quantize "$work/$name.tns" --int8 "${data[@]}" -o "$work/$name-int8.tns" \
    --report "$work/$name.json" >/dev/null
done
python3 - "$work" "$out" "${networks[@]}" <<'PY'
import json, sys
work, out, nets = sys.argv[1], sys.argv[2], sys.argv[3:]
rows = []
for net in nets:
    r = json.load(open(f"{work}/{net.replace(':', '-').replace(',', '-')}.json"))
    rows.append({"network": net, **{k: r[k] for k in ("weight_bytes_f32", "weight_bytes_int8", "mse_change")}, **r["speed"]})
json.dump(rows, open(f"{out}/widths.json", "w"), indent=2)
lines = [
    f"System B over each network on `trajectory`/`mixed`, `tns quantize --int8`; single-window time per call, median of {rows[0]['calls']:,} calls per engine on {rows[0]['isa']}, the engines alternating in blocks of 1,000.",
    "",
    "| network | f32 weights | INT8 weights | f32 µs | INT8 µs | INT8 speed-up | test MSE change |",
    "|---|---|---|---|---|---|---|",
]
for r in rows:
    speed = f"**{r['int8_speedup']:.2f}×**" if r["int8_speedup"] >= 1 else f"{r['int8_speedup']:.2f}× (slower)"
    lines.append(f"| `{r['network']}` | {r['weight_bytes_f32']:,} B | {r['weight_bytes_int8']:,} B | {r['f32_median_us']:.2f} | {r['int8_median_us']:.2f} | {speed} | {100 * r['mse_change']:+.2f}% |")
open(f"{out}/widths.md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
