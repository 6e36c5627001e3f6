//! The model → ONNX graph translation.
//!
//! Every part of a TNS prediction except the certificate document becomes standard ONNX
//! operators:
//!
//! - **Normalization** is explicit `Slice`/`Mul`/`Add`/`Sub`/`Div` nodes (columns taken
//!   relative to the last row need that row, so it cannot be folded into the first layer of
//!   a GRU).
//! - **The base forecast** — last value or Kalman prior mean — is one `MatMul`. For a fixed
//!   window length the Kalman filter's gains do not depend on the data (the covariance
//!   recursion never sees an observation), so the prior mean is a linear map of the window.
//!   The exporter reads that map off the pipeline itself by probing it with unit windows, so
//!   the graph and the engine share one source of truth, and checks the map reproduces the
//!   pipeline on a random window before it writes anything.
//! - **The network**: each layer of the description lowered once — `Flatten`, `Gemm`
//!   (dense), `Relu`, ONNX `GRU` (gates reordered from PyTorch's `r, z, n` to ONNX's
//!   `z, r, h`, `linear_before_reset = 1`).
//! - **The gate**: the prior's predictive covariance is constant too, so `d² = ‖L⁻¹ r‖²` is a
//!   `MatMul` by the block-diagonal `L⁻ᵀ`, a square and a `ReduceSum`; the test is
//!   `LessOrEqual`, the decision a `Where`.
//! - **The conformal interval** is `forecast ∓ radius`; with quantile heads (CQR) it is
//!   `[Min(lower quantile − radius, forecast), Max(upper quantile + radius, forecast)]`.

use prost::Message;
use tns_certify::{GateMode, ScoreScale, linalg};
use tns_format::Manifest;
use tns_model::{
    Activation, Layer, LayerNode, ModelConfig, ModelKind, NamedTensor, Pipeline, Shape,
};

use crate::graph::{Attr, Dim, GraphBuilder, value_info};
use crate::proto::{
    GraphProto, ModelProto, OperatorSetIdProto, StringStringEntryProto, tensor_proto::DataType,
};

/// The ONNX operator set the graphs use.
pub const OPSET: i64 = 17;
/// The ONNX IR version written (the one that introduced opset 17).
pub const IR_VERSION: i64 = 8;

/// Why a model cannot be exported.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ExportError {
    /// The model description is invalid or the tensors do not match it.
    #[error("cannot export this model: {0}")]
    Description(#[from] tns_model::ConfigError),
    /// The manifest's fitted parts do not make a pipeline.
    #[error("cannot export this model: {0}")]
    Pipeline(#[from] tns_model::PipelineError),
    /// The manifest or its tensors are inconsistent.
    #[error("cannot export this model: {0}")]
    Model(String),
    /// The base forecast is not the linear map the export assumes.
    #[error(
        "the base forecast of this model is not a linear map of the window (max deviation {0:e}); it cannot be exported as a MatMul"
    )]
    NotLinear(f64),
}

/// Names of the graph's input and outputs.
pub mod names {
    /// Input: raw windows `[batch, lookback, features]`, f32, data units.
    pub const WINDOW: &str = "window";
    /// Input (models with known-future inputs): the raw future block `[batch, horizon,
    /// future]`, covariates then calendar `sin`/`cos` pairs, which the caller computes from
    /// the predicted rows' times (`tns_calendar`; the graph does not).
    pub const FUTURE: &str = "future";
    /// Output: the prediction `[batch, horizon, targets]`.
    pub const FORECAST: &str = "forecast";
    /// Output: the base forecast (last value or Kalman prior mean) `[batch, horizon, targets]`.
    pub const BASE: &str = "base";
    /// Output: the network's proposed correction in data units (learned kinds).
    pub const CORRECTION: &str = "correction";
    /// Output: the gate's Mahalanobis statistic `d²` per step `[batch, horizon]` (System B).
    pub const GATE_STATISTIC: &str = "gate_statistic";
    /// Output: whether each step passed the gate `[batch, horizon]`, bool (System B).
    pub const GATE_PASSED: &str = "gate_passed";
    /// Output: lower end of the conformal interval (calibrated models).
    pub const LOWER: &str = "lower";
    /// Output: upper end of the conformal interval (calibrated models).
    pub const UPPER: &str = "upper";
    /// Output: the lower quantile forecast, base + scaled quantile head (quantile heads).
    pub const QUANTILE_LOWER: &str = "quantile_lower";
    /// Output: the upper quantile forecast (quantile heads).
    pub const QUANTILE_UPPER: &str = "quantile_upper";
}

/// Translates a loaded model into an ONNX model.
///
/// ```no_run
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let (manifest, tensors) = tns_format::load_model(std::path::Path::new("model.tns"))?;
/// let onnx = tns_onnx::export(&manifest, &tensors)?;
/// std::fs::write("model.onnx", tns_onnx::encode(&onnx))?;
/// # Ok(()) }
/// ```
pub fn export(manifest: &Manifest, tensors: &[NamedTensor]) -> Result<ModelProto, ExportError> {
    let c = &manifest.config;
    let pipeline = manifest.pipeline()?;
    let (lookback, features) = (c.lookback, c.features.len());
    let (horizon, targets) = (c.horizon, c.targets.len());
    let width = horizon * targets;
    let mut g = GraphBuilder::default();
    let window = names::WINDOW;
    let out_shape = g.constant_i64("shape_forecast", vec![-1, horizon as i64, targets as i64]);
    let to_forecast_shape = |g: &mut GraphBuilder, flat: &str, name: &str| {
        g.node("Reshape", &[flat, &out_shape], name, vec![])
    };

    // Base forecast, a linear map B of the window plus an offset, evaluated as
    // (window − last row) · B + last row · ΣB + offset: the same sum in exact arithmetic, but
    // in f32 the large common level of positions or prices no longer passes through B's
    // large, alternating-sign gains.
    // The map covers the whole model input: a structural prior regressed on known-future
    // covariates reads the future block too (its rows of the map are zero otherwise).
    let past = lookback * features;
    let future_len = c.horizon * c.future_width();
    let (mut base_matrix, base_offset) = linear_base(&pipeline, past + future_len, width)?;
    let future_matrix = base_matrix.split_off(past * width);
    let reads_future = future_matrix.iter().any(|&v| v != 0.0);
    let row_sums: Vec<f32> = (0..features * width)
        .map(|k| {
            let (f, j) = (k / width, k % width);
            (0..lookback)
                .map(|l| f64::from(base_matrix[(l * features + f) * width + j]))
                .sum::<f64>() as f32
        })
        .collect();
    let last = last_row(&mut g, lookback);
    let from_last = g.node("Sub", &[window, &last], "window_from_last", vec![]);
    let flat = g.node(
        "Flatten",
        &[&from_last],
        "window_from_last_flat",
        vec![Attr::Int("axis", 1)],
    );
    let b = g.constant("base_matrix", &[lookback * features, width], base_matrix);
    let moves = g.node("MatMul", &[&flat, &b], "base_moves", vec![]);
    let last_flat = g.node(
        "Flatten",
        &[&last],
        "last_row_flat",
        vec![Attr::Int("axis", 1)],
    );
    let b_sum = g.constant("base_matrix_row_sums", &[features, width], row_sums);
    let level = g.node("MatMul", &[&last_flat, &b_sum], "base_level", vec![]);
    let offset = g.constant("base_offset", &[width], base_offset);
    let level = g.node("Add", &[&level, &offset], "base_level_offset", vec![]);
    let mut base_flat = g.node("Add", &[&moves, &level], "base_flat", vec![]);
    if reads_future {
        let future_flat = g.node(
            "Flatten",
            &[names::FUTURE],
            "future_flat",
            vec![Attr::Int("axis", 1)],
        );
        let bf = g.constant("base_future_matrix", &[future_len, width], future_matrix);
        let regression = g.node("MatMul", &[&future_flat, &bf], "base_regression", vec![]);
        base_flat = g.node(
            "Add",
            &[&base_flat, &regression],
            "base_with_regression",
            vec![],
        );
    }
    let mut outputs = vec![(
        names::BASE,
        to_forecast_shape(&mut g, &base_flat, names::BASE),
    )];

    let forecast_flat = match &c.network {
        None => base_flat.clone(),
        Some(_) => {
            let mut normalized = normalize(&mut g, manifest)?;
            if c.network_rows() < c.lookback {
                // The network reads the window's last rows; the base read all of them.
                let starts = g.constant_i64(
                    "network_rows_start",
                    vec![(c.lookback - c.network_rows()) as i64],
                );
                let ends = g.constant_i64("network_rows_end", vec![c.lookback as i64]);
                let axes = g.constant_i64("network_rows_axis", vec![1]);
                normalized = g.node(
                    "Slice",
                    &[&normalized, &starts, &ends, &axes],
                    "window_network_rows",
                    vec![],
                );
            }
            let future = (c.future_width() > 0).then(|| normalize_future(&mut g, manifest));
            let mut net_out = network_graph(&mut g, &normalized, future.as_deref(), tensors, c)?;
            let scale: Vec<f32> = manifest.residual_scale.iter().map(|&s| s as f32).collect();
            let scale = g.constant("residual_scale", &[width], scale);
            if c.quantile_heads.is_some() {
                // The network's output is [batch, horizon, (point, lower, upper), targets].
                let heads =
                    g.constant_i64("shape_heads", vec![-1, horizon as i64, 3, targets as i64]);
                let by_head = g.node("Reshape", &[&net_out, &heads], "network_heads", vec![]);
                let flat = g.constant_i64("shape_head_flat", vec![-1, width as i64]);
                let axes = g.constant_i64("heads_axis", vec![2]);
                let head = |g: &mut GraphBuilder, k: i64, name: &str| {
                    let start = g.constant_i64(&format!("{name}_start"), vec![k]);
                    let end = g.constant_i64(&format!("{name}_end"), vec![k + 1]);
                    let one = g.node(
                        "Slice",
                        &[&by_head, &start, &end, &axes],
                        &format!("{name}_head"),
                        vec![],
                    );
                    g.node("Reshape", &[&one, &flat], &format!("{name}_flat"), vec![])
                };
                let point = head(&mut g, 0, "point");
                for (k, name) in [(1, names::QUANTILE_LOWER), (2, names::QUANTILE_UPPER)] {
                    let out = head(&mut g, k, name);
                    let scaled = g.node("Mul", &[&out, &scale], &format!("{name}_scaled"), vec![]);
                    let q = g.node(
                        "Add",
                        &[&base_flat, &scaled],
                        &format!("{name}_quantile_flat"),
                        vec![],
                    );
                    outputs.push((name, to_forecast_shape(&mut g, &q, name)));
                }
                net_out = point;
            }
            let correction = g.node("Mul", &[&net_out, &scale], "correction_flat", vec![]);
            outputs.push((
                names::CORRECTION,
                to_forecast_shape(&mut g, &correction, names::CORRECTION),
            ));
            let applied = match pipeline.gate() {
                None => correction,
                Some(gate) => {
                    let applied = gate_graph(&mut g, &pipeline, gate, &correction, c)?;
                    outputs.push((names::GATE_STATISTIC, names::GATE_STATISTIC.to_string()));
                    outputs.push((names::GATE_PASSED, names::GATE_PASSED.to_string()));
                    applied
                }
            };
            g.node("Add", &[&base_flat, &applied], "forecast_flat", vec![])
        }
    };
    let forecast = to_forecast_shape(&mut g, &forecast_flat, names::FORECAST);
    outputs.insert(0, (names::FORECAST, forecast.clone()));
    if let Some(cal) = pipeline.conformal() {
        let mut radii = match &cal.by_hour {
            None => {
                let radii: Vec<f32> = cal.radii.iter().map(|&r| r as f32).collect();
                g.constant("conformal_radii", &[horizon, targets], radii)
            }
            Some(by_hour) => hour_radii_graph(&mut g, &pipeline, &by_hour.radii)?,
        };
        if let ScoreScale::WindowVolatility { rows, floor } = &cal.scale {
            let scale = window_volatility_graph(&mut g, &pipeline, *rows, floor);
            radii = g.node("Mul", &[&scale, &radii], "conformal_scaled_radii", vec![]);
        }
        if cal.quantile_regression {
            let grown = |g: &mut GraphBuilder, op, quantile, end, name: &str| {
                let moved = g.node(op, &[quantile, &radii], &format!("{name}_moved"), vec![]);
                g.node(end, &[&moved, &forecast], name, vec![]);
            };
            grown(&mut g, "Sub", names::QUANTILE_LOWER, "Min", names::LOWER);
            grown(&mut g, "Add", names::QUANTILE_UPPER, "Max", names::UPPER);
        } else {
            g.node("Sub", &[&forecast, &radii], names::LOWER, vec![]);
            g.node("Add", &[&forecast, &radii], names::UPPER, vec![]);
        }
        outputs.push((names::LOWER, names::LOWER.to_string()));
        outputs.push((names::UPPER, names::UPPER.to_string()));
    }

    let graph_outputs = outputs
        .iter()
        .map(|(name, _)| output_info(name, horizon, targets))
        .collect();
    let doc = doc_string(manifest, &pipeline, &outputs);
    let graph = GraphProto {
        name: Some(c.name.clone()),
        node: g.nodes,
        initializer: g.initializers,
        input: graph_inputs(c),
        output: graph_outputs,
        doc_string: Some(doc.clone()),
        ..Default::default()
    };
    let mut metadata = vec![
        ("tns.kind", c.kind.name().to_string()),
        ("tns.format_version", manifest.format_version.to_string()),
        ("tns.model_sha256", manifest.sha256()),
        ("tns.tensors_sha256", manifest.tensors_sha256.clone()),
        ("tns.targets", c.targets.join(",")),
        ("tns.features", c.features.join(",")),
    ];
    if let Some(future) = &c.future {
        metadata.push(("tns.future", future.names().join(",")));
        if let Some(calendar) = &future.calendar {
            metadata.push(("tns.calendar_step_seconds", calendar.step.to_string()));
            let zone = calendar.timezone.clone().unwrap_or_else(|| "UTC".into());
            metadata.push(("tns.calendar_timezone", zone));
        }
    }
    if let Some(gate) = pipeline.gate() {
        metadata.push(("tns.gate_alpha", gate.alpha().to_string()));
        metadata.push(("tns.gate_threshold", gate.threshold().to_string()));
    }
    if let Some(cal) = pipeline.conformal() {
        metadata.push(("tns.conformal_alpha", cal.alpha.to_string()));
    }
    Ok(ModelProto {
        ir_version: Some(IR_VERSION),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(OPSET),
        }],
        producer_name: Some("tns".to_string()),
        producer_version: Some(env!("CARGO_PKG_VERSION").to_string()),
        model_version: Some(i64::from(manifest.format_version)),
        doc_string: Some(doc),
        graph: Some(graph),
        metadata_props: metadata
            .into_iter()
            .map(|(k, v)| StringStringEntryProto {
                key: Some(k.to_string()),
                value: Some(v),
            })
            .collect(),
        ..Default::default()
    })
}

/// The graph's inputs: the window, and the future block for models with future inputs.
fn graph_inputs(c: &ModelConfig) -> Vec<crate::proto::ValueInfoProto> {
    let (lookback, features) = (c.lookback, c.features.len());
    let mut inputs = vec![value_info(
        names::WINDOW,
        DataType::Float,
        &[Dim::Batch, Dim::Fixed(lookback), Dim::Fixed(features)],
        &format!(
            "raw windows [batch, lookback={lookback}, features={}], data units",
            c.features.join(",")
        ),
    )];
    if let Some(future) = &c.future {
        inputs.push(value_info(
            names::FUTURE,
            DataType::Float,
            &[Dim::Batch, Dim::Fixed(c.horizon), Dim::Fixed(future.width())],
            &format!(
                "raw known-future inputs [batch, horizon={}, future={}] at the predicted rows; calendar pairs are sin/cos(2π·fraction of the cycle) of the row's local time",
                c.horizon,
                future.names().join(",")
            ),
        ));
    }
    inputs
}

/// The protobuf bytes of an exported model.
pub fn encode(model: &ModelProto) -> Vec<u8> {
    model.encode_to_vec()
}

fn output_info(name: &str, horizon: usize, targets: usize) -> crate::proto::ValueInfoProto {
    let per_step = [Dim::Batch, Dim::Fixed(horizon)];
    let per_value = [Dim::Batch, Dim::Fixed(horizon), Dim::Fixed(targets)];
    match name {
        names::GATE_STATISTIC => value_info(
            name,
            DataType::Float,
            &per_step,
            "Mahalanobis d² of the correction under the prior's predictive covariance",
        ),
        names::GATE_PASSED => value_info(
            name,
            DataType::Bool,
            &per_step,
            "d² ≤ chi-square threshold: the correction was accepted",
        ),
        names::FORECAST => value_info(name, DataType::Float, &per_value, "the prediction"),
        names::BASE => value_info(
            name,
            DataType::Float,
            &per_value,
            "base forecast: last value or Kalman prior mean",
        ),
        names::CORRECTION => value_info(
            name,
            DataType::Float,
            &per_value,
            "the network's proposed correction, data units",
        ),
        names::QUANTILE_LOWER | names::QUANTILE_UPPER => value_info(
            name,
            DataType::Float,
            &per_value,
            "quantile forecast: base + the quantile head's scaled output",
        ),
        _ => value_info(name, DataType::Float, &per_value, "conformal interval end"),
    }
}

/// Reads the base forecast's linear map off the pipeline: `offset = base(0)`, row `i` of the
/// matrix is `base(eᵢ) − offset`. Verifies the map on a deterministic pseudo-random window.
fn linear_base(
    pipeline: &Pipeline,
    inputs: usize,
    width: usize,
) -> Result<(Vec<f32>, Vec<f32>), ExportError> {
    let mut window = vec![0.0; inputs];
    let (offset, _) = pipeline.base(&window);
    let mut matrix = vec![0.0f64; inputs * width];
    for i in 0..inputs {
        window[i] = 1.0;
        let (b, _) = pipeline.base(&window);
        window[i] = 0.0;
        for (j, (v, o)) in b.iter().zip(&offset).enumerate() {
            matrix[i * width + j] = v - o;
        }
    }
    // A fixed, non-trivial window: a sum of sines of the index.
    let probe: Vec<f64> = (0..inputs)
        .map(|i| (i as f64 * 0.37).sin() * 3.0 + (i as f64 * 0.011).cos())
        .collect();
    let (expected, _) = pipeline.base(&probe);
    let worst = (0..width)
        .map(|j| {
            let linear: f64 = offset[j]
                + (0..inputs)
                    .map(|i| probe[i] * matrix[i * width + j])
                    .sum::<f64>();
            (linear - expected[j]).abs() / expected[j].abs().max(1.0)
        })
        .fold(0.0, f64::max);
    if worst > 1e-9 {
        return Err(ExportError::NotLinear(worst));
    }
    Ok((
        matrix.iter().map(|&v| v as f32).collect(),
        offset.iter().map(|&v| v as f32).collect(),
    ))
}

/// The window's last row `[batch, 1, features]`, named `last_row`.
/// The window's conformal score scale `[batch, 1, targets]`: the mean absolute one-row
/// change of each target over the window's last `rows` rows, at least `floor`
/// ([`tns_certify::window_volatility`]).
fn window_volatility_graph(
    g: &mut GraphBuilder,
    pipeline: &Pipeline,
    rows: usize,
    floor: &[f64],
) -> String {
    let lookback = pipeline.lookback();
    let recent = slice(
        g,
        names::WINDOW,
        1,
        (lookback - rows, lookback),
        "scale_rows",
    );
    let columns = g.constant_i64(
        "scale_target_columns",
        pipeline
            .target_columns()
            .iter()
            .map(|&c| c as i64)
            .collect(),
    );
    let targets = g.node(
        "Gather",
        &[&recent, &columns],
        "scale_targets",
        vec![Attr::Int("axis", 2)],
    );
    let later = slice(g, &targets, 1, (1, rows), "scale_later");
    let earlier = slice(g, &targets, 1, (0, rows - 1), "scale_earlier");
    let change = g.node("Sub", &[&later, &earlier], "scale_change", vec![]);
    let change = g.node("Abs", &[&change], "scale_abs_change", vec![]);
    // A mean over the rows as a product with a constant column: onnxruntime's ReduceMean
    // sums in an order that depends on the batch size, and a window's interval must not
    // depend on its batch.
    let perm = || vec![Attr::Ints("perm", vec![0, 2, 1])];
    let change = g.node("Transpose", &[&change], "scale_change_by_target", perm());
    let changes = rows - 1;
    let mean = g.constant(
        "scale_mean_weights",
        &[changes, 1],
        vec![1.0 / changes as f32; changes],
    );
    let volatility = g.node(
        "MatMul",
        &[&change, &mean],
        "scale_volatility_by_target",
        vec![],
    );
    let volatility = g.node("Transpose", &[&volatility], "scale_volatility", perm());
    let floor: Vec<f32> = floor.iter().map(|&f| f as f32).collect();
    let floor = g.constant("scale_floor", &[floor.len()], floor);
    g.node("Max", &[&volatility, &floor], "conformal_scale", vec![])
}

/// The conformal radii `[batch, horizon, targets]` of a calibration by hour of day: the hour
/// of each predicted step is the one whose angle is nearest the future block's `hour`
/// calendar pair (`ArgMax` of its products with the 24 hours' `sin`, `cos`), and picks that
/// hour's radii out of `radii` (`[24, horizon, targets]`) with a `Gather`.
fn hour_radii_graph(
    g: &mut GraphBuilder,
    pipeline: &Pipeline,
    radii: &[f64],
) -> Result<String, ExportError> {
    let column = pipeline
        .hour_column()
        .ok_or_else(|| ExportError::Model(tns_model::PipelineError::NoHour.to_string()))?
        as i64;
    let (horizon, hours) = (pipeline.horizon(), tns_certify::HOURS);
    let targets = radii.len() / (hours * horizon);
    let starts = g.constant_i64("hour_pair_start", vec![column]);
    let ends = g.constant_i64("hour_pair_end", vec![column + 2]);
    let axes = g.constant_i64("hour_pair_axis", vec![2]);
    let pair = g.node(
        "Slice",
        &[names::FUTURE, &starts, &ends, &axes],
        "hour_pair",
        vec![],
    );
    let angles: Vec<f32> = (0..2)
        .flat_map(|part| {
            (0..hours).map(move |h| {
                let angle = std::f64::consts::TAU * h as f64 / hours as f64;
                (if part == 0 { angle.sin() } else { angle.cos() }) as f32
            })
        })
        .collect();
    let angles = g.constant("hour_angles", &[2, hours], angles);
    let closeness = g.node("MatMul", &[&pair, &angles], "hour_closeness", vec![]);
    let hour = g.node(
        "ArgMax",
        &[&closeness],
        "step_hour",
        vec![Attr::Int("axis", 2), Attr::Int("keepdims", 0)],
    );
    // Row hour · H + step of the table [24 · H, T].
    let per_hour = g.constant_i64("hour_rows", vec![horizon as i64]);
    let row = g.node("Mul", &[&hour, &per_hour], "hour_first_row", vec![]);
    let steps = g.constant_i64("hour_steps", (0..horizon as i64).collect());
    let row = g.node("Add", &[&row, &steps], "hour_radius_row", vec![]);
    let table: Vec<f32> = radii.iter().map(|&r| r as f32).collect();
    let table = g.constant(
        "conformal_radii_by_hour",
        &[hours * horizon, targets],
        table,
    );
    Ok(g.node(
        "Gather",
        &[&table, &row],
        "conformal_radii",
        vec![Attr::Int("axis", 0)],
    ))
}

fn last_row(g: &mut GraphBuilder, lookback: usize) -> String {
    let starts = g.constant_i64("last_row_start", vec![lookback as i64 - 1]);
    let ends = g.constant_i64("last_row_end", vec![lookback as i64]);
    let axes = g.constant_i64("last_row_axis", vec![1]);
    g.node(
        "Slice",
        &[names::WINDOW, &starts, &ends, &axes],
        "last_row",
        vec![],
    )
}

/// `(window − centre) / std` (needs the `last_row` node), where the centre is the last row for relative columns and the
/// training mean for the others.
fn normalize(g: &mut GraphBuilder, manifest: &Manifest) -> Result<String, ExportError> {
    let n = &manifest.normalization;
    let f = n.mean.len();
    let std: Vec<f32> = n.std.iter().map(|&s| s as f32).collect();
    let mean: Vec<f32> = n
        .mean
        .iter()
        .zip(&n.relative)
        .map(|(&m, &rel)| if rel { 0.0 } else { m as f32 })
        .collect();
    let mean = g.constant("norm_mean", &[f], mean);
    let std = g.constant("norm_std", &[f], std);
    let centre = if n.relative.iter().any(|&r| r) {
        let mask: Vec<f32> = n.relative.iter().map(|&r| f32::from(u8::from(r))).collect();
        let mask = g.constant("norm_relative_mask", &[f], mask);
        let last_masked = g.node("Mul", &["last_row", &mask], "last_row_relative", vec![]);
        g.node("Add", &[&last_masked, &mean], "norm_centre", vec![])
    } else {
        mean
    };
    let centred = g.node("Sub", &[names::WINDOW, &centre], "window_centred", vec![]);
    Ok(g.node("Div", &[&centred, &std], "window_normalized", vec![]))
}

/// `(future − mean) / std`, flattened to `[batch, horizon · future]`.
fn normalize_future(g: &mut GraphBuilder, manifest: &Manifest) -> String {
    let n = &manifest.normalization;
    let w = n.future_mean.len();
    let as_f32 = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<_>>();
    let mean = g.constant("future_mean", &[w], as_f32(&n.future_mean));
    let std = g.constant("future_std", &[w], as_f32(&n.future_std));
    let centred = g.node("Sub", &[names::FUTURE, &mean], "future_centred", vec![]);
    let scaled = g.node("Div", &[&centred, &std], "future_normalized", vec![]);
    g.node(
        "Flatten",
        &[&scaled],
        "future_normalized_flat",
        vec![Attr::Int("axis", 1)],
    )
}

fn weights<'a>(tensors: &'a [NamedTensor], name: &str) -> Result<&'a NamedTensor, ExportError> {
    tensors
        .iter()
        .find(|t| t.name == name)
        .ok_or_else(|| tns_model::ConfigError::MissingTensor(name.to_string()).into())
}

/// A `Gemm` with the stored `[out, in]` weight (`transB = 1`).
fn dense(
    g: &mut GraphBuilder,
    tensors: &[NamedTensor],
    prefix: &str,
    input: &str,
    output: &str,
) -> Result<String, ExportError> {
    let w = weights(tensors, &format!("{prefix}.weight"))?;
    let b = weights(tensors, &format!("{prefix}.bias"))?;
    let w = g.constant(&format!("{prefix}.weight"), &w.shape, w.data.clone());
    let b = g.constant(&format!("{prefix}.bias"), &b.shape, b.data.clone());
    Ok(g.node(
        "Gemm",
        &[input, &w, &b],
        output,
        vec![Attr::Int("transB", 1)],
    ))
}

/// The network on normalized windows `[batch, lookback, features]` (and the normalized,
/// flattened future block) → `[batch, H·T]`: each layer of the description lowered to ONNX
/// operators.
fn network_graph(
    g: &mut GraphBuilder,
    normalized: &str,
    future: Option<&str>,
    tensors: &[NamedTensor],
    config: &ModelConfig,
) -> Result<String, ExportError> {
    config.check_tensors(tensors)?;
    let layers = config.layers()?;
    let mut x = normalized.to_string();
    for node in &layers {
        x = lower_layer(g, node, &x, future, tensors)?;
    }
    Ok(g.node("Identity", &[&x], "net_out", vec![]))
}

/// One layer as ONNX nodes: sequences are `[batch, steps, channels]`, vectors `[batch, n]`;
/// `future` is the normalized future block `[batch, horizon · future]`.
fn lower_layer(
    g: &mut GraphBuilder,
    node: &LayerNode,
    input: &str,
    future: Option<&str>,
    tensors: &[NamedTensor],
) -> Result<String, ExportError> {
    let name = &node.name;
    Ok(match node.layer {
        Layer::ConcatFuture { .. } => {
            let future = future.ok_or_else(|| {
                ExportError::Model(
                    "the network takes future inputs the model does not declare".into(),
                )
            })?;
            g.node(
                "Concat",
                &[input, future],
                &format!("{name}.out"),
                vec![Attr::Int("axis", 1)],
            )
        }
        Layer::Flatten => g.node(
            "Flatten",
            &[input],
            &format!("{name}.out"),
            vec![Attr::Int("axis", 1)],
        ),
        Layer::Dense { .. } => dense(g, tensors, name, input, &format!("{name}.out"))?,
        Layer::Activation(Activation::Relu) => {
            g.node("Relu", &[input], &format!("{name}.out"), vec![])
        }
        Layer::Decompose { kernel } => {
            let steps = match node.input {
                Shape::Sequence { steps, .. } => steps,
                Shape::Vector(_) => {
                    return Err(ExportError::Model(format!(
                        "layer {name} decomposes a sequence, not a vector"
                    )));
                }
            };
            // The trend per channel, as [B, C, L] · W.
            let weights = tns_model::moving_average_matrix(steps, kernel)
                .into_iter()
                .map(|w| w as f32)
                .collect();
            let a_t = g.constant(&format!("{name}.average"), &[steps, steps], weights);
            let perm = || vec![Attr::Ints("perm", vec![0, 2, 1])];
            let by_channel = g.node("Transpose", &[input], &format!("{name}.by_channel"), perm());
            let trend = g.node(
                "MatMul",
                &[&by_channel, &a_t],
                &format!("{name}.trend_t"),
                vec![],
            );
            let trend = g.node("Transpose", &[&trend], &format!("{name}.trend"), perm());
            let remainder = g.node(
                "Sub",
                &[input, &trend],
                &format!("{name}.remainder"),
                vec![],
            );
            let flat = |g: &mut GraphBuilder, x: &str, out: &str| {
                g.node("Flatten", &[x], out, vec![Attr::Int("axis", 1)])
            };
            let trend = flat(g, &trend, &format!("{name}.trend_flat"));
            let remainder = flat(g, &remainder, &format!("{name}.remainder_flat"));
            g.node(
                "Concat",
                &[&trend, &remainder],
                &format!("{name}.out"),
                vec![Attr::Int("axis", 1)],
            )
        }
        Layer::TcnBlock {
            kernel, dilation, ..
        } => {
            // Convolutions run on [B, C, L]; causal: (K − 1)·dilation zeros before the first row.
            let perm = || vec![Attr::Ints("perm", vec![0, 2, 1])];
            let by_channel = g.node("Transpose", &[input], &format!("{name}.by_channel"), perm());
            let conv =
                |g: &mut GraphBuilder, x: &str, part: &str, kernel: usize, dilation: usize| {
                    let weight = weights(tensors, &format!("{name}.{part}.weight"))?;
                    let bias = weights(tensors, &format!("{name}.{part}.bias"))?;
                    let w = g.constant(
                        &format!("{name}.{part}.W"),
                        &weight.shape,
                        weight.data.clone(),
                    );
                    let b = g.constant(&format!("{name}.{part}.B"), &bias.shape, bias.data.clone());
                    let reach = ((kernel - 1) * dilation) as i64;
                    Ok::<_, ExportError>(g.node(
                        "Conv",
                        &[x, &w, &b],
                        &format!("{name}.{part}.out"),
                        vec![
                            Attr::Ints("dilations", vec![dilation as i64]),
                            Attr::Ints("pads", vec![reach, 0]),
                            Attr::Ints("kernel_shape", vec![kernel as i64]),
                        ],
                    ))
                };
            let inner = conv(g, &by_channel, "conv1", kernel, dilation)?;
            let inner = g.node("Relu", &[&inner], &format!("{name}.relu1"), vec![]);
            let inner = conv(g, &inner, "conv2", kernel, dilation)?;
            let inner = g.node("Relu", &[&inner], &format!("{name}.relu2"), vec![]);
            let residual = if node.input.channels() != node.output.channels() {
                conv(g, &by_channel, "down", 1, 1)?
            } else {
                by_channel
            };
            let sum = g.node("Add", &[&inner, &residual], &format!("{name}.sum"), vec![]);
            let sum = g.node("Relu", &[&sum], &format!("{name}.relu"), vec![]);
            g.node("Transpose", &[&sum], &format!("{name}.out"), perm())
        }
        Layer::LastStep => {
            let steps = node.input.len() / node.input.channels().max(1);
            let last = slice(g, input, 1, (steps - 1, steps), &format!("{name}.row"));
            g.node(
                "Flatten",
                &[&last],
                &format!("{name}.out"),
                vec![Attr::Int("axis", 1)],
            )
        }
        Layer::Nhits { .. } => nhits(g, node, input, future, tensors)?,
        Layer::PatchEmbed {
            patch,
            stride,
            d_model,
            independent,
        } => {
            let channels = node.input.channels();
            let sequences = if independent { channels } else { 1 };
            let tokens = node.output.len() / d_model.max(1) / sequences;
            // Channel independence cuts each channel alone: [B, L, C] → [B, C, L] first, the
            // tokens then [B, C, P, patch] and the rows below read along axis 2.
            let (input, axis) = if independent {
                let by_channel = g.node(
                    "Transpose",
                    &[input],
                    &format!("{name}.by_channel"),
                    vec![Attr::Ints("perm", vec![0, 2, 1])],
                );
                (by_channel, 2)
            } else {
                (input.to_string(), 1)
            };
            let input = input.as_str();
            // Overlapping tokens gather their rows first: [B, L, C] → [B, P, patch, C].
            let rows = if stride == patch {
                input.to_string()
            } else {
                let index = g.constant_i64_shaped(
                    &format!("{name}.rows"),
                    &[tokens, patch],
                    (0..tokens)
                        .flat_map(|t| (0..patch).map(move |r| (t * stride + r) as i64))
                        .collect(),
                );
                g.node(
                    "Gather",
                    &[input, &index],
                    &format!("{name}.gathered"),
                    vec![Attr::Int("axis", axis)],
                )
            };
            let patches = reshape(
                g,
                &rows,
                vec![0, (sequences * tokens) as i64, node.token_inputs() as i64],
                &format!("{name}.patches"),
            );
            let embedded = times_transposed(g, tensors, &format!("{name}.weight"), &patches)?;
            let bias = weights(tensors, &format!("{name}.bias"))?;
            let bias = g.constant(&format!("{name}.bias"), &bias.shape, bias.data.clone());
            g.node("Add", &[&embedded, &bias], &format!("{name}.out"), vec![])
        }
        Layer::RmsNorm => rms_norm(g, tensors, input, name)?,
        Layer::S4dBlock { .. } => s4d_block(g, node, input, tensors)?,
        Layer::MambaBlock { .. } => mamba_block(g, node, input, tensors)?,
        Layer::TransformerBlock {
            heads,
            kv_heads,
            causal,
            sequences: 1,
            ..
        } => transformer_block(g, node, input, tensors, (heads, kv_heads), causal)?,
        // Independent sequences side by side in the batch axis: [B, S · P, d] → [B · S, P, d]
        // through the block, then back.
        Layer::TransformerBlock {
            heads,
            kv_heads,
            causal,
            sequences,
            ..
        } => {
            let (d, tokens) = (
                node.input.channels(),
                node.input.len() / node.input.channels(),
            );
            let apart = reshape(
                g,
                input,
                vec![-1, (tokens / sequences) as i64, d as i64],
                &format!("{name}.apart"),
            );
            let sequence = Shape::Sequence {
                steps: tokens / sequences,
                channels: d,
            };
            let one = LayerNode {
                input: sequence,
                output: sequence,
                ..node.clone()
            };
            let out = transformer_block(g, &one, &apart, tensors, (heads, kv_heads), causal)?;
            reshape(
                g,
                &out,
                vec![-1, tokens as i64, d as i64],
                &format!("{name}.together"),
            )
        }
        // PyTorch stacks the GRU's gates r, z, n; ONNX wants z, r, h.
        Layer::Gru { hidden } => recurrent(
            g,
            node,
            tensors,
            input,
            Recurrent {
                op: "GRU",
                hidden,
                order: &[1, 0, 2],
                sequence: false,
                attrs: vec![Attr::Int("linear_before_reset", 1)],
            },
        )?,
        // PyTorch stacks the LSTM's gates i, f, g, o; ONNX wants i, o, f, c.
        Layer::Lstm { hidden, sequence } => recurrent(
            g,
            node,
            tensors,
            input,
            Recurrent {
                op: "LSTM",
                hidden,
                order: &[0, 3, 1, 2],
                sequence,
                attrs: Vec::new(),
            },
        )?,
    })
}

/// `[batch, rows, width]` max-pooled over rows in groups of `pool` anchored at the last row
/// ([`tns_model::nhits::pool_groups`]): `MaxPool` on `[batch, width, rows]` with the missing
/// rows of the first group as padding (which a max ignores), then flattened.
fn max_pool_rows(g: &mut GraphBuilder, x: &str, rows: usize, pool: usize, name: &str) -> String {
    let perm = || vec![Attr::Ints("perm", vec![0, 2, 1])];
    let pooled = if pool > 1 {
        let by_channel = g.node("Transpose", &[x], &format!("{name}.by_channel"), perm());
        let missing = (rows.div_ceil(pool) * pool - rows) as i64;
        let pooled = g.node(
            "MaxPool",
            &[&by_channel],
            &format!("{name}.pooled_t"),
            vec![
                Attr::Ints("kernel_shape", vec![pool as i64]),
                Attr::Ints("strides", vec![pool as i64]),
                Attr::Ints("pads", vec![missing, 0]),
            ],
        );
        g.node("Transpose", &[&pooled], &format!("{name}.pooled"), perm())
    } else {
        x.to_string()
    };
    g.node(
        "Flatten",
        &[&pooled],
        &format!("{name}.flat"),
        vec![Attr::Int("axis", 1)],
    )
}

/// An N-HiTS layer ([`Layer::Nhits`]): per block, pooling, the MLP as `Gemm`s, the knots
/// interpolated as a `MatMul` with [`tns_model::nhits::interpolation_matrix`], the backcast
/// subtracted from the window the next block reads.
fn nhits(
    g: &mut GraphBuilder,
    node: &LayerNode,
    input: &str,
    future: Option<&str>,
    tensors: &[NamedTensor],
) -> Result<String, ExportError> {
    let name = &node.name;
    let d = node
        .nhits_dims()
        .ok_or_else(|| ExportError::Model(format!("layer {name} is not N-HiTS")))?;
    let shape = |g: &mut GraphBuilder, what: &str, dims: [usize; 2]| {
        g.constant_i64(
            &format!("{name}.{what}_shape"),
            vec![0, dims[0] as i64, dims[1] as i64],
        )
    };
    let future = match (future, d.future) {
        (_, 0) => None,
        (Some(f), width) => {
            let s = shape(g, "future", [d.horizon, width]);
            Some(g.node("Reshape", &[f, &s], &format!("{name}.future"), vec![]))
        }
        (None, _) => {
            return Err(ExportError::Model(
                "the network takes future inputs the model does not declare".into(),
            ));
        }
    };
    let window_shape = shape(g, "window", [d.steps, d.channels]);
    let mut residual = input.to_string();
    let mut sum: Option<String> = None;
    for b in node.nhits_blocks() {
        let p = &b.prefix;
        let mut parts = vec![max_pool_rows(
            g,
            &residual,
            d.steps,
            b.pool,
            &format!("{p}.window"),
        )];
        if let Some(f) = &future {
            parts.push(max_pool_rows(
                g,
                f,
                d.horizon,
                b.pool,
                &format!("{p}.future"),
            ));
        }
        let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
        let mut h = g.node(
            "Concat",
            &parts,
            &format!("{p}.input"),
            vec![Attr::Int("axis", 1)],
        );
        for layer in ["mlp.0", "mlp.1"] {
            h = dense(
                g,
                tensors,
                &format!("{p}.{layer}"),
                &h,
                &format!("{p}.{layer}.out"),
            )?;
            h = g.node("Relu", &[&h], &format!("{p}.{layer}.relu"), vec![]);
        }
        let knots = dense(
            g,
            tensors,
            &format!("{p}.forecast"),
            &h,
            &format!("{p}.knots"),
        )?;
        let knots_shape = g.constant_i64(
            &format!("{p}.knots_shape"),
            vec![0, b.knots as i64, d.targets as i64],
        );
        let knots = g.node(
            "Reshape",
            &[&knots, &knots_shape],
            &format!("{p}.knots_by_step"),
            vec![],
        );
        let perm = || vec![Attr::Ints("perm", vec![0, 2, 1])];
        let knots = g.node(
            "Transpose",
            &[&knots],
            &format!("{p}.knots_by_target"),
            perm(),
        );
        let m = tns_model::nhits::interpolation_matrix(d.horizon, b.knots)
            .into_iter()
            .map(|w| w as f32)
            .collect();
        let m = g.constant(&format!("{p}.interpolation"), &[b.knots, d.horizon], m);
        let part = g.node(
            "MatMul",
            &[&knots, &m],
            &format!("{p}.forecast_by_target"),
            vec![],
        );
        let part = g.node(
            "Transpose",
            &[&part],
            &format!("{p}.forecast_by_step"),
            perm(),
        );
        let part = g.node(
            "Flatten",
            &[&part],
            &format!("{p}.forecast"),
            vec![Attr::Int("axis", 1)],
        );
        sum = Some(match sum {
            Some(total) => g.node("Add", &[&total, &part], &format!("{p}.sum"), vec![]),
            None => part,
        });
        if b.backcast {
            let back = dense(
                g,
                tensors,
                &format!("{p}.backcast"),
                &h,
                &format!("{p}.backcast.out"),
            )?;
            let back = g.node(
                "Reshape",
                &[&back, &window_shape],
                &format!("{p}.backcast_rows"),
                vec![],
            );
            residual = g.node("Sub", &[&residual, &back], &format!("{p}.residual"), vec![]);
        }
    }
    sum.ok_or_else(|| ExportError::Model(format!("layer {name} has no blocks")))
}

/// `x · Wᵀ` for the stored weight `name` (`[out, in]`), on the last axis of `x`.
fn times_transposed(
    g: &mut GraphBuilder,
    tensors: &[NamedTensor],
    name: &str,
    x: &str,
) -> Result<String, ExportError> {
    let w = weights(tensors, name)?;
    let (rows, cols) = (w.shape[0], w.shape[1]);
    let transposed = (0..cols)
        .flat_map(|c| (0..rows).map(move |r| (r, c)))
        .map(|(r, c)| w.data[r * cols + c])
        .collect();
    let w = g.constant(&format!("{name}.T"), &[cols, rows], transposed);
    Ok(g.node("MatMul", &[x, &w], &format!("{name}.out"), vec![]))
}

/// RMSNorm of the last axis with the gain `{prefix}.weight`: `x / √(mean(x²) + ε) ⊙ g`. The
/// mean is a product with a constant column (a window's result must not depend on its batch,
/// which a `ReduceMean`'s summation order may).
fn rms_norm(
    g: &mut GraphBuilder,
    tensors: &[NamedTensor],
    x: &str,
    prefix: &str,
) -> Result<String, ExportError> {
    let gain = weights(tensors, &format!("{prefix}.weight"))?;
    let width = gain.data.len();
    let squares = g.node("Mul", &[x, x], &format!("{prefix}.squares"), vec![]);
    let column = g.constant(
        &format!("{prefix}.mean_weights"),
        &[width, 1],
        vec![1.0 / width as f32; width],
    );
    let mean = g.node(
        "MatMul",
        &[&squares, &column],
        &format!("{prefix}.mean"),
        vec![],
    );
    let eps = g.constant(
        &format!("{prefix}.eps"),
        &[1],
        vec![tns_model::RMS_NORM_EPS as f32],
    );
    let mean = g.node("Add", &[&mean, &eps], &format!("{prefix}.mean_eps"), vec![]);
    let root = g.node("Sqrt", &[&mean], &format!("{prefix}.root"), vec![]);
    let normed = g.node("Div", &[x, &root], &format!("{prefix}.normed"), vec![]);
    let gain = g.constant(&format!("{prefix}.gain"), &[width], gain.data.clone());
    Ok(g.node("Mul", &[&normed, &gain], &format!("{prefix}.out"), vec![]))
}

/// An S4D block ([`Layer::S4dBlock`]) on `[batch, L, d]`: the state-space model as one
/// depthwise causal `Conv` with its kernel ([`tns_model::s4d::kernel`], computed here in
/// f64; `L − 1` zeros before the first row), the skip as `Mul`, SiLU as `Sigmoid` and `Mul`,
/// then the output map and the residual.
fn s4d_block(
    g: &mut GraphBuilder,
    node: &LayerNode,
    input: &str,
    tensors: &[NamedTensor],
) -> Result<String, ExportError> {
    let name = &node.name;
    let d = node.input.channels();
    let steps = node.input.len() / d.max(1);
    let part = |p: &str| weights(tensors, &format!("{name}.{p}"));
    let kernel = tns_model::s4d::kernel(
        &part("log_dt")?.data,
        &part("log_a")?.data,
        &part("c")?.data,
        steps,
    );
    // ONNX's Conv correlates (`y_t = Σ_j w_j x_{t + j − (L − 1)}`): the kernel reversed.
    let reversed = kernel
        .chunks_exact(steps.max(1))
        .flat_map(|row| row.iter().rev().map(|&k| k as f32))
        .collect();
    let w = g.constant(&format!("{name}.kernel"), &[d, 1, steps], reversed);
    let normed = rms_norm(g, tensors, input, &format!("{name}.norm"))?;
    let perm = || vec![Attr::Ints("perm", vec![0, 2, 1])];
    let by_channel = g.node(
        "Transpose",
        &[&normed],
        &format!("{name}.by_channel"),
        perm(),
    );
    let convolved = g.node(
        "Conv",
        &[&by_channel, &w],
        &format!("{name}.convolved"),
        vec![
            Attr::Int("group", d as i64),
            Attr::Ints("pads", vec![steps as i64 - 1, 0]),
            Attr::Ints("kernel_shape", vec![steps as i64]),
        ],
    );
    let convolved = g.node("Transpose", &[&convolved], &format!("{name}.ssm"), perm());
    let skip = g.constant(&format!("{name}.skip"), &[d], part("skip")?.data.clone());
    let skipped = g.node("Mul", &[&normed, &skip], &format!("{name}.skipped"), vec![]);
    let z = g.node("Add", &[&convolved, &skipped], &format!("{name}.z"), vec![]);
    let activated = silu(g, &z, &format!("{name}.silu"));
    let projected = times_transposed(g, tensors, &format!("{name}.out.weight"), &activated)?;
    let bias = part("out.bias")?;
    let bias = g.constant(&format!("{name}.out.B"), &bias.shape, bias.data.clone());
    let projected = g.node(
        "Add",
        &[&projected, &bias],
        &format!("{name}.projected"),
        vec![],
    );
    Ok(g.node("Add", &[input, &projected], &format!("{name}.out"), vec![]))
}

/// `x[…, start..end]` along `axis`.
fn slice(
    g: &mut GraphBuilder,
    x: &str,
    axis: i64,
    (start, end): (usize, usize),
    out: &str,
) -> String {
    let starts = g.constant_i64(&format!("{out}.start"), vec![start as i64]);
    let ends = g.constant_i64(&format!("{out}.end"), vec![end as i64]);
    let axes = g.constant_i64(&format!("{out}.axis"), vec![axis]);
    g.node("Slice", &[x, &starts, &ends, &axes], out, vec![])
}

/// `x` reshaped to `shape` (0 keeps the batch).
fn reshape(g: &mut GraphBuilder, x: &str, shape: Vec<i64>, out: &str) -> String {
    let shape = g.constant_i64(&format!("{out}.shape"), shape);
    g.node("Reshape", &[x, &shape], out, vec![])
}

/// `x ⊙ σ(x)`.
fn silu(g: &mut GraphBuilder, x: &str, out: &str) -> String {
    let gate = g.node("Sigmoid", &[x], &format!("{out}.sigmoid"), vec![]);
    g.node("Mul", &[x, &gate], out, vec![])
}

/// A Mamba block ([`Layer::MambaBlock`]) on `[batch, L, d]`: the maps as `MatMul`, the
/// convolution as a depthwise causal `Conv`, `Δ` through `Softplus`, the decays
/// `exp(Δ A)` and inputs `Δ B v` of every step computed at once (`[batch, L, E, N]`), and the
/// recurrence `h ← decay ⊙ h + input`, `o = h C` as a `Scan` over the steps.
fn mamba_block(
    g: &mut GraphBuilder,
    node: &LayerNode,
    input: &str,
    tensors: &[NamedTensor],
) -> Result<String, ExportError> {
    let name = &node.name;
    let m = node
        .mamba_dims()
        .ok_or_else(|| ExportError::Model(format!("layer {name} is not a Mamba block")))?;
    let (e, n, r, k) = (m.inner, m.state, m.rank, m.conv);
    let steps = node.input.len() / m.d_model.max(1);
    let l = steps as i64;
    let part = |p: &str| weights(tensors, &format!("{name}.{p}"));
    let normed = rms_norm(g, tensors, input, &format!("{name}.norm"))?;
    let xz = times_transposed(g, tensors, &format!("{name}.in.weight"), &normed)?;
    let v = slice(g, &xz, 2, (0, e), &format!("{name}.v"));
    let z = slice(g, &xz, 2, (e, 2 * e), &format!("{name}.z"));
    let perm = || vec![Attr::Ints("perm", vec![0, 2, 1])];
    let by_channel = g.node("Transpose", &[&v], &format!("{name}.v_by_channel"), perm());
    let taps = part("conv.weight")?;
    let w = g.constant(&format!("{name}.conv.W"), &[e, 1, k], taps.data.clone());
    let b = g.constant(
        &format!("{name}.conv.B"),
        &[e],
        part("conv.bias")?.data.clone(),
    );
    let convolved = g.node(
        "Conv",
        &[&by_channel, &w, &b],
        &format!("{name}.conv.out"),
        vec![
            Attr::Int("group", e as i64),
            Attr::Ints("pads", vec![k as i64 - 1, 0]),
            Attr::Ints("kernel_shape", vec![k as i64]),
        ],
    );
    let convolved = g.node(
        "Transpose",
        &[&convolved],
        &format!("{name}.conv.rows"),
        perm(),
    );
    let vc = silu(g, &convolved, &format!("{name}.vc"));
    let dbc = times_transposed(g, tensors, &format!("{name}.x.weight"), &vc)?;
    let low = slice(g, &dbc, 2, (0, r), &format!("{name}.dt_low"));
    let bm = slice(g, &dbc, 2, (r, r + n), &format!("{name}.b"));
    let cm = slice(g, &dbc, 2, (r + n, r + 2 * n), &format!("{name}.c"));
    let delta = times_transposed(g, tensors, &format!("{name}.dt.weight"), &low)?;
    let dt_bias = part("dt.bias")?;
    let dt_bias = g.constant(&format!("{name}.dt.B"), &[e], dt_bias.data.clone());
    let delta = g.node(
        "Add",
        &[&delta, &dt_bias],
        &format!("{name}.dt_pre"),
        vec![],
    );
    let delta = g.node("Softplus", &[&delta], &format!("{name}.delta"), vec![]);
    let a: Vec<f32> = part("a_log")?
        .data
        .iter()
        .map(|&x| -f64::from(x).exp() as f32)
        .collect();
    let a = g.constant(&format!("{name}.A"), &[e, n], a);
    let delta4 = reshape(
        g,
        &delta,
        vec![0, l, e as i64, 1],
        &format!("{name}.delta4"),
    );
    let scaled = g.node("Mul", &[&delta4, &a], &format!("{name}.delta_a"), vec![]);
    let decays = g.node("Exp", &[&scaled], &format!("{name}.decays"), vec![]);
    let dv = g.node("Mul", &[&delta, &vc], &format!("{name}.delta_v"), vec![]);
    let dv = reshape(g, &dv, vec![0, l, e as i64, 1], &format!("{name}.delta_v4"));
    let bm = reshape(g, &bm, vec![0, l, 1, n as i64], &format!("{name}.b4"));
    let pushes = g.node("Mul", &[&dv, &bm], &format!("{name}.pushes"), vec![]);
    let cm = reshape(g, &cm, vec![0, l, n as i64, 1], &format!("{name}.c4"));
    // The zero start state [batch, E, N], shaped from the first step's decays.
    let first = slice(g, &decays, 1, (0, 1), &format!("{name}.first"));
    let zero = g.constant(&format!("{name}.zero"), &[1], vec![0.0]);
    let start = g.node("Mul", &[&first, &zero], &format!("{name}.start4"), vec![]);
    let start = reshape(
        g,
        &start,
        vec![0, e as i64, n as i64],
        &format!("{name}.h0"),
    );
    let body = scan_body(name, e, n);
    let (last, outputs) = (format!("{name}.h_last"), format!("{name}.scan_out"));
    g.node_with_outputs(
        "Scan",
        &[&start, &decays, &pushes, &cm],
        &[&last, &outputs],
        vec![
            Attr::Graph("body", Box::new(body)),
            Attr::Int("num_scan_inputs", 3),
            Attr::Ints("scan_input_axes", vec![1, 1, 1]),
            Attr::Ints("scan_output_axes", vec![1]),
        ],
    );
    let o = reshape(g, &outputs, vec![0, l, e as i64], &format!("{name}.o_scan"));
    let skip = g.constant(&format!("{name}.D"), &[e], part("skip")?.data.clone());
    let skipped = g.node("Mul", &[&vc, &skip], &format!("{name}.skipped"), vec![]);
    let o = g.node("Add", &[&o, &skipped], &format!("{name}.o"), vec![]);
    let gate = silu(g, &z, &format!("{name}.z_silu"));
    let gated = g.node("Mul", &[&o, &gate], &format!("{name}.gated"), vec![]);
    let projected = times_transposed(g, tensors, &format!("{name}.out.weight"), &gated)?;
    Ok(g.node("Add", &[input, &projected], &format!("{name}.out"), vec![]))
}

/// One step of a Mamba block's scan: state `h` `[batch, E, N]`, decays and pushes
/// `[batch, E, N]`, read-out `c` `[batch, N, 1]` → `h' = decay ⊙ h + push`, `o = h' c`
/// (`[batch, E, 1]`).
fn scan_body(name: &str, e: usize, n: usize) -> GraphProto {
    let mut body = GraphBuilder::default();
    let io = |what: &str| format!("{name}.scan.{what}");
    let decayed = body.node("Mul", &[&io("decay"), &io("h")], &io("decayed"), vec![]);
    body.node("Add", &[&decayed, &io("push")], &io("h_next"), vec![]);
    body.node("MatMul", &[&io("h_next"), &io("c")], &io("o"), vec![]);
    let state = [Dim::Batch, Dim::Fixed(e), Dim::Fixed(n)];
    let info = |what: &str, shape: &[Dim]| value_info(&io(what), DataType::Float, shape, "");
    GraphProto {
        name: Some(io("body")),
        node: body.nodes,
        input: vec![
            info("h", &state),
            info("decay", &state),
            info("push", &state),
            info("c", &[Dim::Batch, Dim::Fixed(n), Dim::Fixed(1)]),
        ],
        output: vec![
            info("h_next", &state),
            info("o", &[Dim::Batch, Dim::Fixed(e), Dim::Fixed(1)]),
        ],
        ..Default::default()
    }
}

/// A transformer block ([`Layer::TransformerBlock`]) on tokens `[batch, P, d]`: RMSNorm and
/// rotary embeddings written out, attention as `MatMul`, `Softmax`, `MatMul` per head, key and
/// value heads shared by `Gather`, SwiGLU as `Sigmoid` and `Mul`.
fn transformer_block(
    g: &mut GraphBuilder,
    node: &LayerNode,
    input: &str,
    tensors: &[NamedTensor],
    (heads, kv_heads): (usize, usize),
    causal: bool,
) -> Result<String, ExportError> {
    let name = &node.name;
    let d = node.input.channels();
    let tokens = node.input.len() / d.max(1);
    let head = d / heads.max(1);
    let half = head / 2;
    let angles = tns_model::rope_angles(tokens, head);
    let table = |f: fn(f64) -> f64| angles.iter().map(|&a| f(a) as f32).collect::<Vec<_>>();
    let cos = g.constant(
        &format!("{name}.rope_cos"),
        &[tokens, half],
        table(f64::cos),
    );
    let sin = g.constant(
        &format!("{name}.rope_sin"),
        &[tokens, half],
        table(f64::sin),
    );
    let normed = rms_norm(g, tensors, input, &format!("{name}.norm1"))?;
    // [B, P, n · d_head] → [B, n, P, d_head], turned by the rotary angles when `rotate`.
    let split = |g: &mut GraphBuilder, part: &str, n: usize, rotate: bool| {
        let projected = times_transposed(g, tensors, &format!("{name}.{part}.weight"), &normed)?;
        let shape = g.constant_i64(
            &format!("{name}.{part}.heads_shape"),
            vec![0, tokens as i64, n as i64, head as i64],
        );
        let x = g.node(
            "Reshape",
            &[&projected, &shape],
            &format!("{name}.{part}.split"),
            vec![],
        );
        let x = g.node(
            "Transpose",
            &[&x],
            &format!("{name}.{part}.heads"),
            vec![Attr::Ints("perm", vec![0, 2, 1, 3])],
        );
        if !rotate {
            return Ok::<_, ExportError>(x);
        }
        let x1 = slice(g, &x, 3, (0, half), &format!("{name}.{part}.first"));
        let x2 = slice(g, &x, 3, (half, 2 * half), &format!("{name}.{part}.second"));
        let mul = |g: &mut GraphBuilder, a: &str, b: &str, out: &str| {
            g.node("Mul", &[a, b], &format!("{name}.{part}.{out}"), vec![])
        };
        let (a, b) = (mul(g, &x1, &cos, "x1cos"), mul(g, &x2, &sin, "x2sin"));
        let first = g.node("Sub", &[&a, &b], &format!("{name}.{part}.rot1"), vec![]);
        let (a, b) = (mul(g, &x2, &cos, "x2cos"), mul(g, &x1, &sin, "x1sin"));
        let second = g.node("Add", &[&a, &b], &format!("{name}.{part}.rot2"), vec![]);
        Ok(g.node(
            "Concat",
            &[&first, &second],
            &format!("{name}.{part}.rotated"),
            vec![Attr::Int("axis", 3)],
        ))
    };
    let q = split(g, "q", heads, true)?;
    let group = heads / kv_heads.max(1);
    let share = g.constant_i64(
        &format!("{name}.kv_index"),
        (0..heads).map(|h| (h / group) as i64).collect(),
    );
    let k = split(g, "k", kv_heads, true)?;
    let k = g.node(
        "Gather",
        &[&k, &share],
        &format!("{name}.k.shared"),
        vec![Attr::Int("axis", 1)],
    );
    let v = split(g, "v", kv_heads, false)?;
    let v = g.node(
        "Gather",
        &[&v, &share],
        &format!("{name}.v.shared"),
        vec![Attr::Int("axis", 1)],
    );
    let kt = g.node(
        "Transpose",
        &[&k],
        &format!("{name}.k.t"),
        vec![Attr::Ints("perm", vec![0, 1, 3, 2])],
    );
    let scores = g.node("MatMul", &[&q, &kt], &format!("{name}.scores"), vec![]);
    let scale = g.constant(
        &format!("{name}.scale"),
        &[1],
        vec![1.0 / (head as f32).sqrt()],
    );
    let scores = g.node("Mul", &[&scores, &scale], &format!("{name}.scaled"), vec![]);
    // Causal: a large negative number added where a key follows its query, whose weight
    // e^(−1e9 − max) is then exactly 0 in f32 (the engine never scores those keys).
    let scores = if causal {
        let mask = g.constant(
            &format!("{name}.causal_mask"),
            &[tokens, tokens],
            (0..tokens * tokens)
                .map(|at| if at % tokens > at / tokens { -1e9 } else { 0.0 })
                .collect(),
        );
        g.node("Add", &[&scores, &mask], &format!("{name}.masked"), vec![])
    } else {
        scores
    };
    let weights_ = g.node(
        "Softmax",
        &[&scores],
        &format!("{name}.attention"),
        vec![Attr::Int("axis", -1)],
    );
    let mixed = g.node("MatMul", &[&weights_, &v], &format!("{name}.mixed"), vec![]);
    let mixed = g.node(
        "Transpose",
        &[&mixed],
        &format!("{name}.mixed_t"),
        vec![Attr::Ints("perm", vec![0, 2, 1, 3])],
    );
    let mixed = reshape(
        g,
        &mixed,
        vec![0, tokens as i64, d as i64],
        &format!("{name}.merged"),
    );
    let attended = times_transposed(g, tensors, &format!("{name}.o.weight"), &mixed)?;
    let hidden = g.node(
        "Add",
        &[input, &attended],
        &format!("{name}.hidden"),
        vec![],
    );
    let normed = rms_norm(g, tensors, &hidden, &format!("{name}.norm2"))?;
    let gate = times_transposed(g, tensors, &format!("{name}.gate.weight"), &normed)?;
    let activated = silu(g, &gate, &format!("{name}.silu"));
    let up = times_transposed(g, tensors, &format!("{name}.up.weight"), &normed)?;
    let inner = g.node("Mul", &[&activated, &up], &format!("{name}.inner"), vec![]);
    let down = times_transposed(g, tensors, &format!("{name}.down.weight"), &inner)?;
    Ok(g.node("Add", &[&hidden, &down], &format!("{name}.out"), vec![]))
}

/// A recurrent layer as the ONNX operator of that name.
struct Recurrent<'a> {
    op: &'static str,
    hidden: usize,
    /// PyTorch's gate blocks in ONNX's order.
    order: &'a [usize],
    /// Every step's state `[batch, steps, H]`, or the last `[batch, H]`.
    sequence: bool,
    attrs: Vec<Attr<'a>>,
}

/// A recurrent layer of PyTorch's layout (`weight_ih_l0`, `weight_hh_l0`, two biases) as
/// one ONNX `GRU` or `LSTM` node on the sequence-major input, its gate blocks reordered.
fn recurrent(
    g: &mut GraphBuilder,
    node: &LayerNode,
    tensors: &[NamedTensor],
    input: &str,
    r: Recurrent<'_>,
) -> Result<String, ExportError> {
    let (name, h, channels) = (&node.name, r.hidden, node.input.channels());
    let gates = r.order.len();
    let reorder = |t: &NamedTensor, cols: usize| -> Vec<f32> {
        r.order
            .iter()
            .flat_map(|&k| t.data[k * h * cols..(k + 1) * h * cols].iter().copied())
            .collect()
    };
    let tensor = |suffix: &str| weights(tensors, &format!("{name}.{suffix}"));
    let w = g.constant(
        &format!("{name}.W"),
        &[1, gates * h, channels],
        reorder(tensor("weight_ih_l0")?, channels),
    );
    let rr = g.constant(
        &format!("{name}.R"),
        &[1, gates * h, h],
        reorder(tensor("weight_hh_l0")?, h),
    );
    let b = g.constant(
        &format!("{name}.B"),
        &[1, 2 * gates * h],
        [
            reorder(tensor("bias_ih_l0")?, 1),
            reorder(tensor("bias_hh_l0")?, 1),
        ]
        .concat(),
    );
    let seq_major = g.node(
        "Transpose",
        &[input],
        &format!("{name}.in"),
        vec![Attr::Ints("perm", vec![1, 0, 2])],
    );
    let (all, last) = (format!("{name}.all"), format!("{name}.last"));
    let mut attrs = vec![Attr::Int("hidden_size", h as i64)];
    attrs.extend(r.attrs);
    let outputs: [&str; 2] = if r.sequence { [&all, ""] } else { ["", &last] };
    g.node_with_outputs(r.op, &[&seq_major, &w, &rr, &b], &outputs, attrs);
    if r.sequence {
        // Y is [steps, directions = 1, batch, H].
        let axis1 = g.constant_i64(&format!("{name}.axis_1"), vec![1]);
        let steps = g.node("Squeeze", &[&all, &axis1], &format!("{name}.steps"), vec![]);
        Ok(g.node(
            "Transpose",
            &[&steps],
            &format!("{name}.out"),
            vec![Attr::Ints("perm", vec![1, 0, 2])],
        ))
    } else {
        let axis0 = g.constant_i64(&format!("{name}.axis_0"), vec![0]);
        Ok(g.node("Squeeze", &[&last, &axis0], &format!("{name}.out"), vec![]))
    }
}

/// The chi-square gate on the correction `[batch, H·T]`; returns the correction to add.
fn gate_graph(
    g: &mut GraphBuilder,
    pipeline: &Pipeline,
    gate: &tns_certify::Gate,
    correction: &str,
    config: &ModelConfig,
) -> Result<String, ExportError> {
    let (horizon, t) = (config.horizon, config.targets.len());
    let width = horizon * t;
    let zero_window = vec![0.0; pipeline.input_len()];
    let (_, covariance) = pipeline.base(&zero_window);
    let covariance = covariance.ok_or_else(|| {
        ExportError::Model("a gated model needs the Kalman prior's covariance".into())
    })?;
    // Block-diagonal L⁻ᵀ so that the row vector r · L⁻ᵀ = (L⁻¹ r)ᵀ.
    let mut whitening = vec![0.0f32; width * width];
    let (mut factor, mut inverse) = (vec![0.0; t * t], vec![0.0; t * t]);
    for step in 0..horizon {
        linalg::cholesky(
            &covariance[step * t * t..(step + 1) * t * t],
            t,
            &mut factor,
        )
        .map_err(|e| ExportError::Model(format!("prior covariance at step {step}: {e}")))?;
        linalg::invert_lower(&factor, t, &mut inverse);
        for i in 0..t {
            for j in 0..t {
                whitening[(step * t + j) * width + step * t + i] = inverse[i * t + j] as f32;
            }
        }
    }
    let whitening = g.constant("gate_whitening", &[width, width], whitening);
    let whitened = g.node("MatMul", &[correction, &whitening], "gate_whitened", vec![]);
    let squared = g.node("Mul", &[&whitened, &whitened], "gate_squared", vec![]);
    let per_step_shape = g.constant_i64("shape_steps", vec![-1, horizon as i64, t as i64]);
    let squared = g.node(
        "Reshape",
        &[&squared, &per_step_shape],
        "gate_squared_steps",
        vec![],
    );
    let axis2 = g.constant_i64("axis_2", vec![2]);
    let statistic = g.node(
        "ReduceSum",
        &[&squared, &axis2],
        names::GATE_STATISTIC,
        vec![Attr::Int("keepdims", 0)],
    );
    let threshold = g.constant("gate_threshold", &[], vec![gate.threshold() as f32]);
    let passed = g.node(
        "LessOrEqual",
        &[&statistic, &threshold],
        names::GATE_PASSED,
        vec![],
    );
    let passed_steps = g.node("Unsqueeze", &[&passed, &axis2], "gate_passed_steps", vec![]);
    let correction_steps = g.node(
        "Reshape",
        &[correction, &per_step_shape],
        "correction_steps",
        vec![],
    );
    let zero = g.constant("zero", &[], vec![0.0]);
    let applied = match gate.mode() {
        // The correction whatever the test says: the statistic and decision are outputs.
        GateMode::Keep => g.node(
            "Identity",
            &[&correction_steps],
            "gate_applied_steps",
            vec![],
        ),
        GateMode::Reject => g.node(
            "Where",
            &[&passed_steps, &correction_steps, &zero],
            "gate_applied_steps",
            vec![],
        ),
        GateMode::Shrink => {
            // Scale 1 inside the ellipsoid, sqrt(χ²/d²) outside; a NaN statistic (non-finite
            // correction) keeps the prior, as the engine does.
            let one = g.constant("one", &[], vec![1.0]);
            let ratio = g.node("Div", &[&threshold, &statistic], "gate_ratio", vec![]);
            let shrink = g.node("Sqrt", &[&ratio], "gate_shrink", vec![]);
            let scale = g.node("Where", &[&passed, &one, &shrink], "gate_scale", vec![]);
            let scale = g.node("Unsqueeze", &[&scale, &axis2], "gate_scale_steps", vec![]);
            let scaled = g.node("Mul", &[&correction_steps, &scale], "gate_scaled", vec![]);
            let nan = g.node("IsNaN", &[&statistic], "gate_nan", vec![]);
            let finite = g.node("Not", &[&nan], "gate_finite", vec![]);
            let finite = g.node("Unsqueeze", &[&finite, &axis2], "gate_finite_steps", vec![]);
            g.node(
                "Where",
                &[&finite, &scaled, &zero],
                "gate_applied_steps",
                vec![],
            )
        }
    };
    let flat_shape = g.constant_i64("shape_flat", vec![-1, width as i64]);
    Ok(g.node("Reshape", &[&applied, &flat_shape], "gate_applied", vec![]))
}

fn doc_string(manifest: &Manifest, pipeline: &Pipeline, outputs: &[(&str, String)]) -> String {
    let c = &manifest.config;
    let mut doc = format!(
        "TNS {} model {:?} (sha256 {}). Input `window` [batch, {}, {}] in data units{}. Outputs: {}.",
        c.kind.name(),
        c.name,
        manifest.sha256(),
        c.lookback,
        c.features.len(),
        c.future.as_ref().map_or(String::new(), |f| format!(
            "; input `future` [batch, {}, {}] ({}) in data units, calendar pairs computed by the caller",
            c.horizon,
            f.width(),
            f.names().join(", ")
        )),
        outputs
            .iter()
            .map(|(n, _)| *n)
            .collect::<Vec<_>>()
            .join(", ")
    );
    if c.kind.base() == tns_model::Base::KalmanPrior {
        doc.push_str(
            " The Kalman prior is unrolled over the fixed window into one MatMul (its gains do not depend on the data).",
        );
    }
    if let Some(gate) = pipeline.gate() {
        doc.push_str(&format!(
            " The gate is exported: d² = ||L⁻¹ r||² per step against chi-square threshold {:.6} (alpha {}).",
            gate.threshold(),
            gate.alpha()
        ));
    }
    doc.push_str(
        " Not exported: the certificate document (JSON) and the Cholesky residual check; inputs are not checked for NaN/Inf (the TNS engine rejects them, ONNX propagates them).",
    );
    if c.kind == ModelKind::Persistence || c.kind == ModelKind::Kalman {
        doc.push_str(" This kind has no network: forecast = base.");
    }
    doc
}
