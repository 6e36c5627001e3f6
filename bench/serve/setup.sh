# Sourced by the load tests (run.sh, pinned.sh) from the repository root: installs oha into
# bench/serve/.tools, builds tns and trains the served System B once. Sets OUT, TOOLS, MODEL.
OUT=${OUT:-results/serve}
TOOLS=bench/serve/.tools
if ! [ -x "$TOOLS/bin/oha" ]; then
    cargo install oha --locked --version 1.16.0 --root "$TOOLS"
fi
cargo build --release --bin tns
mkdir -p "$OUT/models"
MODEL="$OUT/models/system-b.tns"
if ! [ -f "$MODEL" ]; then
    ./target/release/tns train --synth trajectory --epochs 10 -o "$MODEL"
fi
