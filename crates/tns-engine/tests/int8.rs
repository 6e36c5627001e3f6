//! INT8 plans on real models: both instruction sets and both paths (single, batch) agree,
//! and the INT8 prediction stays close to the f32 one.

mod common;

use std::sync::Arc;

use common::{Shape, data, fitted, windows};
use tns_engine::{Engine, Isa, Predictor};
use tns_model::ModelKind;

#[test]
fn int8_plans_agree_across_isas_and_paths_and_stay_close_to_f32() {
    let (splits, dt) = data(Shape::Compact, 6000);
    for kind in [
        ModelKind::Linear,
        ModelKind::Mlp,
        ModelKind::SystemA,
        ModelKind::SystemB,
    ] {
        let model = fitted(kind, Shape::Compact, &splits, dt);
        let (manifest, tensors) = common::int8(&model.manifest, &model.tensors);
        let per = model.manifest.config.lookback * model.manifest.config.features.len();
        let windows = windows(&splits, 1000, per);
        let n = windows.len() / per;
        let f32_engine = Engine::new(model.manifest.clone(), &model.tensors).unwrap();
        let mut f32_out = vec![f32_engine.empty_prediction(); n];
        f32_engine.predict_batch(&windows, &mut f32_out).unwrap();
        let mut isas = vec![Isa::Portable];
        if Isa::detect() == Isa::Avx2Fma {
            isas.push(Isa::Avx2Fma);
        }
        let mut by_isa = Vec::new();
        for isa in isas {
            let engine = Arc::new(Engine::with_isa(manifest.clone(), &tensors, isa).unwrap());
            assert!(engine.network().unwrap().is_int8());
            let mut batch = vec![engine.empty_prediction(); n];
            engine.predict_batch(&windows, &mut batch).unwrap();
            let mut predictor = Predictor::new(engine.clone());
            for (i, b) in batch.iter().enumerate() {
                let single = predictor.predict(&windows[i * per..(i + 1) * per]).unwrap();
                assert_eq!(single.values(), b.values(), "{kind:?} {isa:?} window {i}");
            }
            by_isa.push(batch);
        }
        let scale = &model.manifest.residual_scale;
        let mut worst = 0f64;
        for (i, f) in f32_out.iter().enumerate() {
            for (isa_out, isa_name) in by_isa.iter().zip(["portable", "avx2"]) {
                let (a, b) = (
                    &isa_out[i].forecast.correction,
                    &by_isa[0][i].forecast.correction,
                );
                if let (Some(a), Some(b)) = (a, b) {
                    // The integer products are exact on both ISAs, but the GRU's f32 gates
                    // (FMA or not) can differ in the last bit, and then an activation code
                    // may round the other way: one step of 2⁻¹⁵ of the layer's input range.
                    for (k, (x, y)) in a.iter().zip(b).enumerate() {
                        assert!(
                            (x - y).abs() <= 1e-3 * y.abs().max(scale[k]),
                            "{kind:?} {isa_name} window {i}: {x} vs {y}"
                        );
                    }
                }
            }
            let (q, r) = (
                by_isa[0][i].forecast.correction.as_ref().unwrap(),
                f.forecast.correction.as_ref().unwrap(),
            );
            for (k, (x, y)) in q.iter().zip(r).enumerate() {
                worst = worst.max((x - y).abs() / scale[k]);
            }
        }
        // INT8 changes the correction by a small fraction of its typical size, not more.
        assert!(
            worst < 0.1,
            "{kind:?}: INT8 correction differs from f32 by {worst} residual scales"
        );
        eprintln!("{kind:?}: worst |int8 − f32| correction = {worst:.2e} residual scales");
    }
}
