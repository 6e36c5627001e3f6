//! The model manifest, mutated as JSON: the golden System B file's tensors under a manifest
//! whose values, lengths, keys and types a mutator changes one node at a time. Loading must
//! return a model or an error, never panic; a model that loads must predict (or reject) a
//! window. Bytes that are not JSON fall back to libFuzzer's own mutations.
#![no_main]

use libfuzzer_sys::{fuzz_mutator, fuzz_target, fuzzer_mutate};
use serde_json::Value;

const MODEL: &[u8] = include_bytes!("../../tests/fixtures/golden-system-b-v1.tns");

fuzz_target!(|manifest: &[u8]| {
    tns_engine::fuzz_manifest_check(MODEL, manifest);
});

/// A small deterministic generator seeded by libFuzzer.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Values that sit on the edges of what a manifest field can hold.
fn edge_value(rng: &mut Rng) -> Value {
    let numbers = [
        0.0, -0.0, 1.0, -1.0, 0.5, 2.0, 5.0, 99.0, 1e-300, 1e308, -1e308, 1e30, 4294967296.0,
        -3.0, 1e-12,
    ];
    match rng.below(9) {
        0 => Value::Null,
        1 => Value::Bool(rng.below(2) == 0),
        2 => Value::Array(Vec::new()),
        3 => Value::Object(serde_json::Map::new()),
        4 => Value::String(["", "x", "y", "mlp", "system-b", "gru:8", "hour", "Europe/Paris"]
            [rng.below(8)]
            .into()),
        5 => Value::from(u64::MAX),
        6 => Value::from(rng.below(300) as u64),
        _ => Value::from(numbers[rng.below(numbers.len())]),
    }
}

/// Counts the nodes of `v` (itself included).
fn count(v: &Value) -> usize {
    1 + match v {
        Value::Array(a) => a.iter().map(count).sum(),
        Value::Object(o) => o.values().map(count).sum(),
        _ => 0,
    }
}

/// Applies one mutation to the `target`-th node (pre-order) of `v`; returns whether it did.
fn mutate_node(v: &mut Value, target: &mut usize, rng: &mut Rng) -> bool {
    if *target == 0 {
        match (rng.below(6), &mut *v) {
            // Shorten or lengthen an array (lengths that disagree with the description).
            (0, Value::Array(a)) if !a.is_empty() => {
                a.truncate(rng.below(a.len()));
            }
            (1, Value::Array(a)) if !a.is_empty() => {
                let copy = a[rng.below(a.len())].clone();
                a.push(copy);
            }
            // Swap two elements (targets swapped, axes reordered).
            (2, Value::Array(a)) if a.len() > 1 => {
                let (i, j) = (rng.below(a.len()), rng.below(a.len()));
                a.swap(i, j);
            }
            // Drop a key (a field missing).
            (3, Value::Object(o)) if !o.is_empty() => {
                let key = o.keys().nth(rng.below(o.len())).cloned();
                if let Some(key) = key {
                    o.remove(&key);
                }
            }
            // Scale a number (a parameter far out of range).
            (4, Value::Number(n)) => {
                let x = n.as_f64().unwrap_or(0.0);
                let factor = [1e6, -1.0, 1e-6, 1e300, 0.0][rng.below(5)];
                *v = serde_json::Number::from_f64(x * factor).map_or(Value::Null, Value::Number);
            }
            _ => *v = edge_value(rng),
        }
        return true;
    }
    *target -= 1;
    match v {
        Value::Array(a) => a.iter_mut().any(|c| mutate_node(c, target, rng)),
        Value::Object(o) => o.values_mut().any(|c| mutate_node(c, target, rng)),
        _ => false,
    }
}

fuzz_mutator!(|data: &mut [u8], size: usize, max_size: usize, seed: u32| {
    let parsed = std::str::from_utf8(&data[..size])
        .ok()
        .and_then(|s| serde_json::from_str::<Value>(s).ok());
    let Some(mut value) = parsed else {
        return fuzzer_mutate(data, size, max_size);
    };
    let mut rng = Rng(u64::from(seed) | 1 << 32);
    // One to three node mutations per call.
    for _ in 0..=rng.below(3) {
        let mut target = rng.below(count(&value));
        mutate_node(&mut value, &mut target, &mut rng);
    }
    let out = value.to_string();
    if out.len() > max_size {
        return fuzzer_mutate(data, size, max_size);
    }
    data[..out.len()].copy_from_slice(out.as_bytes());
    out.len()
});
