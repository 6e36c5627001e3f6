use tns_data::Dataset;
use tns_kalman::Axis;

use crate::TrainError;

/// Parses `x:vx,y:vy` style Kalman axes (position:velocity pairs, or bare positions for a
/// local linear trend) against `data`'s columns. Without a spec: `x:vx,y:vy` when those
/// columns exist, else one trend axis per target.
pub fn parse_axes(
    spec: Option<&[String]>,
    data: &Dataset,
    targets: &[String],
) -> Result<Vec<Axis>, TrainError> {
    let col = |name: &str| -> Result<usize, TrainError> {
        data.column_indices(&[name])
            .map(|v| v[0])
            .map_err(|e| TrainError::Config(format!("axis column {name:?}: {e}")))
    };
    let default_kinematic = ["x", "y", "vx", "vy"]
        .iter()
        .all(|c| data.columns().iter().any(|d| d == c));
    let items: Vec<String> = match spec {
        Some(items) => items.to_vec(),
        None if default_kinematic => vec!["x:vx".into(), "y:vy".into()],
        None => targets.to_vec(),
    };
    items
        .iter()
        .map(|item| match item.split_once(':') {
            Some((p, v)) => Ok(Axis {
                position: col(p)?,
                velocity: Some(col(v)?),
            }),
            None => Ok(Axis {
                position: col(item)?,
                velocity: None,
            }),
        })
        .collect()
}
