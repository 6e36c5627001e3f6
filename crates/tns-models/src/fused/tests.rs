use super::*;
use candle_core::{Device, Var};
use candle_nn::rnn::{GRUConfig, LSTMConfig, RNN};
use candle_nn::{VarBuilder, VarMap};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Gru,
    Lstm,
}

impl Kind {
    fn gates(self) -> usize {
        match self {
            Self::Gru => 3,
            Self::Lstm => 4,
        }
    }
}

/// A recurrent layer's weights and an input, in f64.
struct Case {
    kind: Kind,
    batch: usize,
    steps: usize,
    inputs: usize,
    hidden: usize,
    x: Vec<f64>,
    w_ih: Vec<f64>,
    w_hh: Vec<f64>,
    b_ih: Vec<f64>,
    b_hh: Vec<f64>,
    /// Weights of the scalar loss `Σ c ⊙ states` (every step's state).
    c: Vec<f64>,
}

impl Case {
    fn new(
        kind: Kind,
        batch: usize,
        steps: usize,
        inputs: usize,
        hidden: usize,
        seed: u64,
    ) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut draw =
            |n: usize, s: f64| -> Vec<f64> { (0..n).map(|_| rng.random_range(-s..s)).collect() };
        let g = kind.gates() * hidden;
        Self {
            kind,
            batch,
            steps,
            inputs,
            hidden,
            x: draw(batch * steps * inputs, 1.5),
            w_ih: draw(g * inputs, 0.6),
            w_hh: draw(g * hidden, 0.6),
            b_ih: draw(g, 0.3),
            b_hh: draw(g, 0.3),
            c: draw(batch * steps * hidden, 1.0),
        }
    }

    fn vars(&self, dtype: DType) -> [Var; 5] {
        let dev = Device::Cpu;
        let g = self.kind.gates() * self.hidden;
        let var = |v: &[f64], shape: &[usize]| {
            Var::from_tensor(
                &Tensor::from_slice(v, shape, &dev)
                    .unwrap()
                    .to_dtype(dtype)
                    .unwrap(),
            )
            .unwrap()
        };
        [
            var(&self.x, &[self.batch, self.steps, self.inputs]),
            var(&self.w_ih, &[g, self.inputs]),
            var(&self.w_hh, &[g, self.hidden]),
            var(&self.b_ih, &[g]),
            var(&self.b_hh, &[g]),
        ]
    }

    /// `Σ c ⊙ states` over every step's state `[B, T, H]` or the last `[B, H]`.
    fn loss(&self, states: &Tensor) -> Tensor {
        let c = Tensor::from_slice(&self.c, (self.batch, self.steps, self.hidden), &Device::Cpu)
            .unwrap()
            .to_dtype(states.dtype())
            .unwrap();
        let c = if states.rank() == 2 {
            c.narrow(1, self.steps - 1, 1).unwrap().squeeze(1).unwrap()
        } else {
            c
        };
        (states * c).unwrap().sum_all().unwrap()
    }

    /// The fused op's states.
    fn fused(&self, v: &[Var; 5], states: States) -> Tensor {
        let t = |k: usize| v[k].as_tensor();
        match self.kind {
            Kind::Gru => sequence::<Gru>(t(0), t(1), t(2), t(3), t(4), states),
            Kind::Lstm => sequence::<Lstm>(t(0), t(1), t(2), t(3), t(4), states),
        }
        .unwrap()
    }

    /// Candle's states, all or the last.
    fn reference_states(&self, v: &[Var; 5], states: States) -> Tensor {
        let all = self.reference(v);
        match states {
            States::All => all,
            States::Last => all
                .narrow(1, self.steps - 1, 1)
                .unwrap()
                .squeeze(1)
                .unwrap(),
        }
    }

    /// Candle's cells, step by step (the op-by-op graph the fused op replaces).
    fn reference(&self, v: &[Var; 5]) -> Tensor {
        let map = VarMap::new();
        {
            let mut data = map.data().lock().unwrap();
            for (name, var) in [
                ("weight_ih_l0", &v[1]),
                ("weight_hh_l0", &v[2]),
                ("bias_ih_l0", &v[3]),
                ("bias_hh_l0", &v[4]),
            ] {
                data.insert(name.into(), var.clone());
            }
        }
        let vb = VarBuilder::from_varmap(&map, v[0].dtype(), &Device::Cpu);
        let x = |t: usize| {
            v[0].as_tensor()
                .narrow(1, t, 1)
                .unwrap()
                .squeeze(1)
                .unwrap()
        };
        let mut states = Vec::new();
        match self.kind {
            Kind::Gru => {
                let cell = candle_nn::rnn::gru(self.inputs, self.hidden, GRUConfig::default(), vb)
                    .unwrap();
                let mut s = cell.zero_state(self.batch).unwrap();
                for t in 0..self.steps {
                    s = cell.step(&x(t), &s).unwrap();
                    states.push(s.h().clone());
                }
            }
            Kind::Lstm => {
                let cell =
                    candle_nn::rnn::lstm(self.inputs, self.hidden, LSTMConfig::default(), vb)
                        .unwrap();
                let mut s = cell.zero_state(self.batch).unwrap();
                for t in 0..self.steps {
                    s = cell.step(&x(t), &s).unwrap();
                    states.push(s.h().clone());
                }
            }
        }
        Tensor::stack(&states, 1).unwrap()
    }
}

fn grads(loss: &Tensor, v: &[Var; 5]) -> Vec<Vec<f64>> {
    let g = loss.backward().unwrap();
    v.iter()
        .map(|var| {
            g.get(var.as_tensor())
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_dtype(DType::F64)
                .unwrap()
                .to_vec1()
                .unwrap()
        })
        .collect()
}

fn worst(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs() / y.abs().max(1.0))
        .fold(0.0, f64::max)
}

fn flat(t: &Tensor) -> Vec<f64> {
    t.flatten_all()
        .unwrap()
        .to_dtype(DType::F64)
        .unwrap()
        .to_vec1()
        .unwrap()
}

#[test]
fn matches_candles_cell_graphs_forward_and_backward() {
    // 37 rows: two full shards and a partial one; the backward pass reads the forward's
    // kept traces. 1,100 rows: more than a kept batch, so the backward recomputes them.
    for kind in [Kind::Gru, Kind::Lstm] {
        for (case, dtype, tolerance) in [
            (Case::new(kind, 37, 9, 3, 5, 1), DType::F64, 1e-12),
            (Case::new(kind, 37, 9, 3, 5, 1), DType::F32, 1e-5),
            (Case::new(kind, 1_100, 4, 2, 3, 4), DType::F64, 1e-12),
        ] {
            for states in [States::All, States::Last] {
                let v = case.vars(dtype);
                let (fused, reference) =
                    (case.fused(&v, states), case.reference_states(&v, states));
                let e = worst(&flat(&fused), &flat(&reference));
                assert!(e < tolerance, "{kind:?} {dtype:?} {states:?} forward: {e}");
                let (gf, gr) = (
                    grads(&case.loss(&fused), &v),
                    grads(&case.loss(&reference), &v),
                );
                for (k, (a, b)) in gf.iter().zip(&gr).enumerate() {
                    let e = worst(a, b);
                    assert!(
                        e < tolerance,
                        "{kind:?} {dtype:?} {states:?} gradient {k}: {e}"
                    );
                }
            }
        }
    }
}

#[test]
fn gradients_match_central_finite_differences() {
    for kind in [Kind::Gru, Kind::Lstm] {
        let case = Case::new(kind, 3, 6, 2, 4, 2);
        let v = case.vars(DType::F64);
        let analytic = grads(&case.loss(&case.fused(&v, States::All)), &v);
        let eps = 1e-6;
        for (k, var) in v.iter().enumerate() {
            let base = var
                .as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f64>()
                .unwrap();
            for i in 0..base.len() {
                let loss_at = |delta: f64| {
                    let mut moved = base.clone();
                    moved[i] += delta;
                    var.set(&Tensor::from_vec(moved, var.shape(), &Device::Cpu).unwrap())
                        .unwrap();
                    let l = case
                        .loss(&case.fused(&v, States::All))
                        .to_scalar::<f64>()
                        .unwrap();
                    var.set(&Tensor::from_vec(base.clone(), var.shape(), &Device::Cpu).unwrap())
                        .unwrap();
                    l
                };
                let numeric = (loss_at(eps) - loss_at(-eps)) / (2.0 * eps);
                let a = analytic[k][i];
                assert!(
                    (a - numeric).abs() < 1e-7 * a.abs().max(1.0),
                    "{kind:?} tensor {k} entry {i}: analytic {a}, numeric {numeric}"
                );
            }
        }
    }
}

#[test]
fn results_do_not_depend_on_the_thread_count() {
    for kind in [Kind::Gru, Kind::Lstm] {
        let case = Case::new(kind, 70, 12, 3, 8, 3);
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                let v = case.vars(DType::F32);
                let h = case.fused(&v, States::Last);
                let mut out = vec![h.flatten_all().unwrap().to_vec1::<f32>().unwrap()];
                let g = case.loss(&h).backward().unwrap();
                for var in &v {
                    out.push(
                        g.get(var.as_tensor())
                            .unwrap()
                            .flatten_all()
                            .unwrap()
                            .to_vec1::<f32>()
                            .unwrap(),
                    );
                }
                out
            })
        };
        let one = run(1);
        for threads in [2, 3] {
            let other = run(threads);
            for (a, b) in one.iter().zip(&other) {
                let same = a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits());
                assert!(same, "{kind:?}: {threads} threads differ from 1");
            }
        }
    }
}

#[test]
fn mismatched_shapes_are_an_error() {
    let dev = Device::Cpu;
    let x = Tensor::zeros((2, 3, 4), DType::F32, &dev).unwrap();
    let w_ih = Tensor::zeros((12, 4), DType::F32, &dev).unwrap();
    let w_hh = Tensor::zeros((12, 4), DType::F32, &dev).unwrap();
    let b = Tensor::zeros(12, DType::F32, &dev).unwrap();
    // W_ih for 5 inputs against a 4-channel sequence.
    let wide = Tensor::zeros((12, 5), DType::F32, &dev).unwrap();
    assert!(sequence::<Gru>(&x, &w_ih, &w_hh, &b, &b, States::All).is_ok());
    let err = sequence::<Gru>(&x, &wide, &w_hh, &b, &b, States::Last)
        .unwrap_err()
        .to_string();
    assert!(err.contains("do not fit"), "{err}");
    // 12 gate rows are 3 LSTM units but the recurrent weights have 4 columns.
    assert!(sequence::<Lstm>(&x, &w_ih, &w_hh, &b, &b, States::All).is_err());
}
