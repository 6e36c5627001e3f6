//! Data for TNS: tabular time series, the built-in generators, windowing, chronological
//! splits and z-score normalization.
//!
//! Everything downstream (the Kalman prior, the networks, evaluation) consumes the
//! [`WindowSet`]s produced here, so this crate is the single place where rows become
//! `[lookback, features] → [horizon, targets]` examples.
//!
//! ```
//! use tns_data::{synth, SplitFractions, WindowSpec};
//!
//! let data = synth::trajectory(&synth::TrajectoryConfig::compact(synth::Regime::Cv, 2_000, 7));
//! let spec = WindowSpec::next_step(10, data.column_indices(&["x", "y", "vx", "vy"]).unwrap());
//! let splits = data.windows(&spec, &SplitFractions::default()).unwrap();
//! assert_eq!(splits.train.lookback(), 10);
//! assert!(splits.train.len() > splits.test.len());
//! ```

mod csv_load;
mod dataset;
pub use dataset::Series;
mod error;
mod normalize;
pub mod synth;
mod window;

pub use csv_load::{CsvOptions, Fill, load_csv, load_csv_bytes, parse_cell};
pub use dataset::{Dataset, PARTIAL_SUFFIX, Segment, write_atomic};
pub use error::DataError;
pub use normalize::Normalization;
/// Timestamps are read and written by `tns-calendar`, which the server shares.
pub use tns_calendar::{format_time, is_date_time, json_time, parse_timestamp};
pub use window::{
    DataSpec, MAX_WINDOW_BYTES, Split, SplitFractions, Splits, WindowOrigin, WindowSet, WindowSpec,
};
