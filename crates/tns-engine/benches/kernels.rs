//! Criterion benches of the engine's kernels: the network forward pass per kind and
//! instruction set, the lane-blocked batch forward, and the full single-sample predict.
//! `cargo bench -p tns-engine`.

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use tns_data::synth::{Regime, TrajectoryConfig, trajectory};
use tns_data::{SplitFractions, WindowSpec};
use tns_engine::{Engine, Isa, LANES, Predictor};
use tns_model::{ModelConfig, ModelKind};
use tns_train::{FitOptions, TrainConfig, fit_model};

const COLUMNS: [&str; 4] = ["x", "y", "vx", "vy"];

/// One compiled model per kind, weight type and instruction set.
type Compiled = Vec<(String, Isa, Arc<Engine>)>;

fn engines() -> (Compiled, Vec<f64>) {
    let data = trajectory(&TrajectoryConfig::compact(Regime::Mixed, 4000, 1));
    let spec = WindowSpec::next_step(10, data.column_indices(&COLUMNS).unwrap());
    let splits = data.windows(&spec, &SplitFractions::default()).unwrap();
    let options = FitOptions {
        train: TrainConfig {
            epochs: 1,
            ..Default::default()
        },
        ..Default::default()
    };
    let mut isas = vec![Isa::Portable];
    if Isa::detect() == Isa::Avx2Fma {
        isas.push(Isa::Avx2Fma);
    }
    let mut out = Vec::new();
    for kind in [
        ModelKind::Linear,
        ModelKind::Mlp,
        ModelKind::SystemA,
        ModelKind::SystemB,
    ] {
        let config = ModelConfig::new(kind.name(), kind, &COLUMNS, &COLUMNS, 10, 1, 1);
        let model = fit_model(&config, data.dt(), &splits, &options).unwrap();
        let matrices = model.manifest.config.matrix_weights().unwrap();
        let (quantization, int8_tensors) =
            tns_format::quantize_int8(&model.tensors, &matrices).unwrap();
        let mut int8_manifest = model.manifest.clone();
        int8_manifest.quantization = Some(quantization);
        for &isa in &isas {
            let engine = Engine::with_isa(model.manifest.clone(), &model.tensors, isa).unwrap();
            out.push((kind.name().to_string(), isa, Arc::new(engine)));
            let engine = Engine::with_isa(int8_manifest.clone(), &int8_tensors, isa).unwrap();
            out.push((format!("{}-int8", kind.name()), isa, Arc::new(engine)));
        }
    }
    (out, splits.test.inputs().to_vec())
}

fn kernels(c: &mut Criterion) {
    let (engines, windows) = engines();
    for (kind, isa, engine) in &engines {
        let per = engine.input_len();
        let net = engine.network().unwrap();
        let mut scratch = net.scratch();
        let mut x = vec![0f32; per];
        engine.pipeline().normalize_into(&windows[..per], &mut x);
        let mut y = vec![0f32; net.outputs()];
        let name = format!("{kind}/{}", isa.name());
        c.bench_function(&format!("forward/{name}"), |b| {
            b.iter(|| net.forward(black_box(&x), &mut y, &mut scratch))
        });
        let xs: Vec<f32> = x.iter().copied().cycle().take(per * LANES).collect();
        let mut ys = vec![0f32; net.outputs() * LANES];
        c.bench_function(&format!("forward_lanes/{name}"), |b| {
            b.iter(|| net.forward_lanes(black_box(&xs), &mut ys, &mut scratch))
        });
        let mut predictor = Predictor::new(engine.clone());
        let w = &windows[..per];
        c.bench_function(&format!("predict/{name}"), |b| {
            b.iter(|| {
                black_box(predictor.predict(black_box(w)).unwrap());
            })
        });
    }
}

criterion_group!(benches, kernels);
criterion_main!(benches);
