use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::sync::Arc;
use tns_calendar::Calendar;

use crate::normalize::Welford;
use crate::{DataError, Dataset, Normalization, Segment};

/// The forecast origins (last input rows, in series rows) of split `k` in the segment
/// `seg_start..seg_end`, for split `bounds`: every admissible row `r` with
/// `(r + lead) % every == 0` (`every`: the stride for train and validation, the origin spacing
/// for calibration and test), so that origins fall at the same phase for every lookback
/// (day-ahead: every day at the same hour).
fn origins(
    spec: &WindowSpec,
    seg_start: usize,
    seg_end: usize,
    bounds: &[usize],
    k: usize,
) -> std::iter::StepBy<std::ops::Range<usize>> {
    let every = if k < 2 {
        spec.stride
    } else {
        spec.origin_every
    };
    let lo = (seg_start + spec.lookback - 1).max(bounds[k].saturating_sub(spec.lead));
    let hi = (seg_end.min(bounds[k + 1]) + 1).saturating_sub(spec.lead + spec.horizon);
    let first = lo + (every - (lo + spec.lead) % every) % every;
    (first..hi.max(first)).step_by(every)
}

/// Most bytes the windows of one dataset may take (4 GiB): see [`DataError::TooManyWindows`].
pub const MAX_WINDOW_BYTES: u64 = 4 << 30;

/// How rows become examples: `lookback` rows of all features in, the target columns at
/// `lead, lead+1, …, lead+horizon-1` rows after the last input row out.
///
/// `lead = 1, horizon = 1` is next-step prediction; the seed design (position 500 ms ahead at
/// 2 kHz) is `lead = 1000, horizon = 1`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WindowSpec {
    /// Input rows per window (`L`).
    pub lookback: usize,
    /// Predicted steps (`H`).
    pub horizon: usize,
    /// Rows between the last input row and the first predicted row (≥ 1).
    pub lead: usize,
    /// Rows between consecutive training and validation windows (sampling the examples).
    pub stride: usize,
    /// Rows between consecutive calibration and test forecast origins (`24` on hourly data:
    /// one day-ahead forecast a day, at the same hour), so that the conformal radii are
    /// calibrated on the origins the model is scored and used on.
    pub origin_every: usize,
    /// Column indices of the targets (`T` of them).
    pub targets: Vec<usize>,
    /// Column indices of the known-future covariates, read at the predicted rows.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub future: Vec<usize>,
    /// Calendar features of the predicted rows' times, after the covariates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calendar: Option<Calendar>,
}

impl WindowSpec {
    /// Next-step prediction of `targets` from `lookback` rows, stride 1.
    pub fn next_step(lookback: usize, targets: Vec<usize>) -> Self {
        Self {
            lookback,
            horizon: 1,
            lead: 1,
            stride: 1,
            origin_every: 1,
            targets,
            future: Vec::new(),
            calendar: None,
        }
    }

    /// Values per predicted step of the future block.
    pub fn future_width(&self) -> usize {
        self.future.len() + self.calendar.as_ref().map_or(0, Calendar::width)
    }

    /// Consecutive rows one window needs: `lookback + lead + horizon - 1`.
    pub fn span(&self) -> usize {
        self.lookback + self.lead + self.horizon - 1
    }

    fn validate(&self, columns: usize) -> Result<(), DataError> {
        let bad = |m: String| Err(DataError::BadSpec(m));
        if self.lookback == 0 || self.horizon == 0 || self.lead == 0 || self.stride == 0 {
            return bad(format!(
                "lookback ({}), horizon ({}), lead ({}) and stride ({}) must all be at least 1",
                self.lookback, self.horizon, self.lead, self.stride
            ));
        }
        if self.targets.is_empty() {
            return bad("at least one target column is needed".into());
        }
        if let Some(t) = self.targets.iter().find(|&&t| t >= columns) {
            return bad(format!(
                "target column index {t} ≥ number of columns {columns}"
            ));
        }
        if let Some(c) = self.future.iter().find(|&&c| c >= columns) {
            return bad(format!(
                "future column index {c} ≥ number of columns {columns}"
            ));
        }
        if let Some(calendar) = &self.calendar {
            calendar
                .validate()
                .map_err(|e| DataError::BadSpec(e.to_string()))?;
        }
        Ok(())
    }
}

/// Fractions of each series' rows given to train / validation / calibration / test, in
/// chronological order.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SplitFractions {
    /// Training share (default 0.60).
    pub train: f64,
    /// Validation share for early stopping (default 0.15).
    pub val: f64,
    /// Calibration share for the conformal radii (default 0.10).
    pub cal: f64,
    /// Test share (default 0.15).
    pub test: f64,
}

/// Where a model's data came from and how it was cut, recorded in the model file so that
/// `tns eval`, `predict`, `quantize` read the same columns, series and split without the
/// user repeating flags.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataSpec {
    /// The time column, if any (never a feature).
    pub time_column: Option<String>,
    /// The series column of a long-format file.
    pub series_column: Option<String>,
    /// The one series the model was trained on, when a filter was given.
    pub series: Option<String>,
    /// The chronological split.
    pub split: Split,
    /// Rows between training and validation windows.
    pub stride: usize,
    /// Rows between calibration and test forecast origins.
    #[serde(default = "one")]
    pub origin_every: usize,
    /// Time between rows (the median step), so that scoring a file can tell gaps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dt: Option<f64>,
    /// How missing rows were filled.
    #[serde(default)]
    pub fill: crate::Fill,
    /// Columns one-hot encoded as `COLUMN=value` features (the series column among them
    /// when the series id is a feature).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub categorical: Vec<String>,
}

fn one() -> usize {
    1
}

/// How each series is cut into train / validation / calibration / test, in time order.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "by", rename_all = "kebab-case")]
pub enum Split {
    /// Fractions of each series' rows (default 60/15/10/15).
    Fractions(SplitFractions),
    /// The first time (in the time column's unit: seconds since 1970 for date-times) of
    /// validation, calibration and test; rows before `val_start` (and from `train_start`,
    /// when given) train.
    Dates {
        /// First training time (a sliding window); `None`: from the first row.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        train_start: Option<f64>,
        /// First validation time.
        val_start: f64,
        /// First calibration time.
        cal_start: f64,
        /// First test time.
        test_start: f64,
    },
}

impl Default for Split {
    fn default() -> Self {
        Self::Fractions(SplitFractions::default())
    }
}

impl Split {
    /// Row boundaries `[0, val, cal, test, rows]` of one series.
    fn bounds(&self, series: &crate::Series) -> Result<[usize; 5], DataError> {
        let rows = series.rows();
        let mut bounds = [0usize; 5];
        match *self {
            Self::Fractions(fractions) => {
                let parts = [
                    fractions.train,
                    fractions.val,
                    fractions.cal,
                    fractions.test,
                ];
                if parts.iter().any(|f| !(f.is_finite() && *f > 0.0)) {
                    return Err(DataError::BadSpec(format!(
                        "split fractions must all be positive, got {parts:?}"
                    )));
                }
                let total: f64 = parts.iter().sum();
                let mut acc = 0.0;
                for (k, p) in parts.iter().enumerate() {
                    acc += p;
                    bounds[k + 1] = ((acc / total) * rows as f64).round() as usize;
                }
            }
            Self::Dates {
                train_start,
                val_start,
                cal_start,
                test_start,
            } => {
                let starts = [val_start, cal_start, test_start];
                if let Some(t) = train_start {
                    if !(t.is_finite() && t < val_start) {
                        return Err(DataError::BadSpec(format!(
                            "the training start {t} must be finite and before the validation start {val_start}"
                        )));
                    }
                    let times = series.segments.iter().flat_map(|s| s.times.iter());
                    bounds[0] = times.filter(|&&x| x < t).count();
                }
                // Finite first, so that the order test never meets a NaN.
                if starts.iter().any(|t| !t.is_finite()) || starts.windows(2).any(|w| w[0] >= w[1])
                {
                    return Err(DataError::BadSpec(format!(
                        "split dates must be finite and increasing (validation < calibration < test), got {starts:?}"
                    )));
                }
                let times = series.segments.iter().flat_map(|s| s.times.iter());
                for (k, start) in starts.iter().enumerate() {
                    bounds[k + 1] = times.clone().filter(|&&t| t < *start).count();
                }
            }
        }
        bounds[4] = rows;
        Ok(bounds)
    }

    /// One line for the training log: what the split is.
    pub fn describe(&self) -> String {
        match self {
            Self::Fractions(f) => {
                let total = f.train + f.val + f.cal + f.test;
                let pct = |x: f64| 100.0 * x / total;
                format!(
                    "train {:.0}% / validation {:.0}% / calibration {:.0}% / test {:.0}% of each series' rows",
                    pct(f.train),
                    pct(f.val),
                    pct(f.cal),
                    pct(f.test)
                )
            }
            Self::Dates {
                train_start,
                val_start,
                cal_start,
                test_start,
            } => format!(
                "train {}before {}, validation from {}, calibration from {}, test from {}",
                train_start.map_or(String::new(), |t| format!(
                    "from {} ",
                    crate::format_time(t)
                )),
                crate::format_time(*val_start),
                crate::format_time(*val_start),
                crate::format_time(*cal_start),
                crate::format_time(*test_start)
            ),
        }
    }
}

impl Default for SplitFractions {
    fn default() -> Self {
        Self {
            train: 0.60,
            val: 0.15,
            cal: 0.10,
            test: 0.15,
        }
    }
}

/// Windows of one split, stored densely in `f64` and in the data's own units. Each
/// window's input is the past `[lookback, features]` followed by the known-future block
/// `[horizon, future]` (empty without future inputs): one model input.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowSet {
    lookback: usize,
    features: usize,
    horizon: usize,
    targets: usize,
    future: usize,
    /// The rows the windows read (`[rows, features]` each): the data's gap-free stretches,
    /// shared with the other splits, or one window's own rows when pushed whole.
    sources: Vec<Arc<[f64]>>,
    /// Per window: the source and the row its past window starts at. Windows are views, not
    /// copies: memory does not grow with windows × lookback.
    views: Vec<(usize, usize)>,
    /// Future blocks, `[len, horizon × future]` (known-future covariates and calendar values:
    /// computed per window).
    futures: Vec<f64>,
    outputs: Vec<f64>,
    origins: Vec<WindowOrigin>,
}

/// Where a window came from: the series index and the row (within the series) of its first
/// input row. Used to order and plot windows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WindowOrigin {
    /// Index into [`Dataset::series`].
    pub series: usize,
    /// Row within the series of the first input row.
    pub row: usize,
    /// Time of the last input row: when the forecast is issued.
    pub time: f64,
}

impl WindowSet {
    /// An empty set with the given shape.
    pub fn empty(lookback: usize, features: usize, horizon: usize, targets: usize) -> Self {
        Self {
            lookback,
            features,
            horizon,
            targets,
            future: 0,
            sources: Vec::new(),
            views: Vec::new(),
            futures: Vec::new(),
            outputs: Vec::new(),
            origins: Vec::new(),
        }
    }

    /// The same empty set with `width` future values per predicted step.
    pub fn with_future(mut self, width: usize) -> Self {
        self.future = width;
        self
    }

    /// Values of one model input: `lookback × features + horizon × future`.
    pub fn input_len(&self) -> usize {
        self.lookback * self.features + self.horizon * self.future
    }

    fn check_shapes(&self, future: &[f64], output: &[f64]) {
        assert_eq!(
            future.len(),
            self.horizon * self.future,
            "future block shape"
        );
        assert_eq!(
            output.len(),
            self.horizon * self.targets,
            "output window shape"
        );
    }

    /// Appends one window, copying its rows; `input` is `[lookback, features]` then
    /// `[horizon, future]` and `output` `[horizon, targets]`, all row-major.
    pub fn push(&mut self, input: &[f64], output: &[f64], origin: WindowOrigin) {
        assert_eq!(input.len(), self.input_len(), "input window shape");
        let (past, future) = input.split_at(self.lookback * self.features);
        self.check_shapes(future, output);
        self.sources.push(Arc::from(past));
        self.views.push((self.sources.len() - 1, 0));
        self.futures.extend_from_slice(future);
        self.outputs.extend_from_slice(output);
        self.origins.push(origin);
    }

    /// Appends a window that reads `lookback` rows of `source` (`[rows, features]`) from
    /// `row` on, without copying them.
    pub fn push_view(
        &mut self,
        source: &Arc<[f64]>,
        row: usize,
        future: &[f64],
        output: &[f64],
        origin: WindowOrigin,
    ) {
        assert!(
            (row + self.lookback) * self.features <= source.len(),
            "window rows outside the source"
        );
        self.check_shapes(future, output);
        if !self.sources.last().is_some_and(|s| Arc::ptr_eq(s, source)) {
            self.sources.push(Arc::clone(source));
        }
        self.views.push((self.sources.len() - 1, row));
        self.futures.extend_from_slice(future);
        self.outputs.extend_from_slice(output);
        self.origins.push(origin);
    }

    /// Number of windows.
    pub fn len(&self) -> usize {
        self.origins.len()
    }

    /// True when the set holds no window.
    pub fn is_empty(&self) -> bool {
        self.origins.is_empty()
    }

    /// `L`.
    pub fn lookback(&self) -> usize {
        self.lookback
    }

    /// `F`.
    pub fn features(&self) -> usize {
        self.features
    }

    /// `H`.
    pub fn horizon(&self) -> usize {
        self.horizon
    }

    /// `T`.
    pub fn targets(&self) -> usize {
        self.targets
    }

    /// Values per predicted step of the future block.
    pub fn future_width(&self) -> usize {
        self.future
    }

    /// Model input `i`: the past window `[lookback, features]`, then the future block;
    /// borrowed from the rows when there is no future block, assembled otherwise.
    pub fn input(&self, i: usize) -> Cow<'_, [f64]> {
        if self.future == 0 {
            Cow::Borrowed(self.past(i))
        } else {
            let mut input = Vec::with_capacity(self.input_len());
            input.extend_from_slice(self.past(i));
            input.extend_from_slice(self.future_block(i));
            Cow::Owned(input)
        }
    }

    /// The past window of input `i`, `[lookback, features]` row-major.
    pub fn past(&self, i: usize) -> &[f64] {
        let (source, row) = self.views[i];
        let f = self.features;
        &self.sources[source][row * f..(row + self.lookback) * f]
    }

    /// The future block of input `i`, `[horizon, future]` row-major (empty without one).
    pub fn future_block(&self, i: usize) -> &[f64] {
        let n = self.horizon * self.future;
        &self.futures[i * n..(i + 1) * n]
    }

    /// Target block `i`, `[horizon, targets]` row-major.
    pub fn output(&self, i: usize) -> &[f64] {
        let n = self.horizon * self.targets;
        &self.outputs[i * n..(i + 1) * n]
    }

    /// All model inputs, `[len, input_len]`, assembled (a copy: for predicting a whole split
    /// at once).
    pub fn inputs(&self) -> Vec<f64> {
        let mut all = Vec::with_capacity(self.len() * self.input_len());
        for i in 0..self.len() {
            all.extend_from_slice(self.past(i));
            all.extend_from_slice(self.future_block(i));
        }
        all
    }

    /// All outputs, `[len, horizon, targets]`.
    pub fn outputs(&self) -> &[f64] {
        &self.outputs
    }

    /// Origin of window `i`.
    pub fn origin(&self, i: usize) -> WindowOrigin {
        self.origins[i]
    }

    /// The windows at `indices`, in that order (views of the same rows).
    pub fn select(&self, indices: &[usize]) -> Self {
        let mut out = Self::empty(self.lookback, self.features, self.horizon, self.targets)
            .with_future(self.future);
        for &i in indices {
            let (source, row) = self.views[i];
            out.push_view(
                &self.sources[source],
                row,
                self.future_block(i),
                self.output(i),
                self.origins[i],
            );
        }
        out
    }
}

/// The four chronological splits plus what was fitted on the training split.
#[derive(Debug, Clone)]
pub struct Splits {
    /// Training windows.
    pub train: WindowSet,
    /// Validation windows (early stopping).
    pub val: WindowSet,
    /// Calibration windows (conformal radii).
    pub cal: WindowSet,
    /// Test windows (reported metrics).
    pub test: WindowSet,
    /// z-score fitted on the training rows only.
    pub normalization: Normalization,
    /// The training rows as gap-free stretches, for fitting the Kalman prior.
    pub train_rows: Vec<Segment>,
}

impl Dataset {
    /// Cuts every series chronologically into train/val/cal/test by `fractions`, then makes
    /// the windows of each split; a window never straddles two splits or a gap. The
    /// normalization is fitted on the training rows only.
    pub fn windows(
        &self,
        spec: &WindowSpec,
        fractions: &SplitFractions,
    ) -> Result<Splits, DataError> {
        self.windows_split(spec, &Split::Fractions(*fractions))
    }

    /// Refuses, before any window is built, a window set larger than [`MAX_WINDOW_BYTES`]:
    /// windows are views of the rows, but training holds each training and validation
    /// window's normalized inputs (`lookback × features`, f32) and every window keeps its
    /// future block and targets, so memory grows with windows × lookback × columns, not with
    /// the file's size. Counted as 8 bytes a value, a bound for both.
    fn check_window_memory(&self, spec: &WindowSpec, split: &Split) -> Result<(), DataError> {
        let per = spec.lookback * self.columns().len()
            + spec.horizon * (spec.future_width() + spec.targets.len());
        let windows = self.count_windows(spec, split)?;
        let bytes = windows as f64 * per as f64 * 8.0;
        if bytes > MAX_WINDOW_BYTES as f64 {
            return Err(DataError::TooManyWindows {
                windows,
                per,
                gib: bytes / f64::from(1u32 << 30),
                limit_gib: MAX_WINDOW_BYTES >> 30,
            });
        }
        Ok(())
    }

    /// How many windows [`Dataset::windows_split`] builds over all four splits, counted from
    /// the same origin rules without building any.
    fn count_windows(&self, spec: &WindowSpec, split: &Split) -> Result<usize, DataError> {
        let mut windows = 0usize;
        for series in self.series() {
            let bounds = split.bounds(series)?;
            let mut seg_start = 0;
            for seg in &series.segments {
                let seg_end = seg_start + seg.rows();
                for k in 0..4 {
                    windows += origins(spec, seg_start, seg_end, &bounds, k).len();
                }
                seg_start = seg_end;
            }
        }
        Ok(windows)
    }

    /// [`Dataset::windows`] with any [`Split`]: fractions of rows or start dates.
    pub fn windows_split(&self, spec: &WindowSpec, split: &Split) -> Result<Splits, DataError> {
        spec.validate(self.columns().len())?;
        let f = self.columns().len();
        let t = spec.targets.len();
        let fw = spec.future_width();
        let mut sets: [WindowSet; 4] = std::array::from_fn(|_| {
            WindowSet::empty(spec.lookback, f, spec.horizon, t).with_future(fw)
        });
        let mut future = vec![0.0; spec.horizon * fw];
        let calendar = spec
            .calendar
            .as_ref()
            .map(Calendar::resolve)
            .transpose()
            .map_err(|e| DataError::BadSpec(e.to_string()))?;
        let mut train_rows = Vec::new();
        let mut welford = Welford::new(f);
        let span = spec.span();
        let mut output = vec![0.0; spec.horizon * t];
        if spec.stride == 0 || spec.origin_every == 0 {
            return Err(DataError::BadSpec(
                "stride and origin spacing must be at least 1".into(),
            ));
        }
        self.check_window_memory(spec, split)?;

        for (si, series) in self.series().iter().enumerate() {
            // Split boundaries in series-row coordinates.
            let bounds = split.bounds(series)?;
            let mut seg_start = 0;
            for seg in &series.segments {
                let seg_end = seg_start + seg.rows();
                // Training rows of this segment, for normalization and the Kalman fit.
                let (a, b) = (seg_start.max(bounds[0]), seg_end.min(bounds[1]));
                if b > a {
                    let vals = seg.values[(a - seg_start) * f..(b - seg_start) * f].to_vec();
                    for row in vals.chunks_exact(f) {
                        welford.push(row);
                    }
                    train_rows.push(Segment {
                        values: vals,
                        times: seg.times[a - seg_start..b - seg_start].to_vec(),
                    });
                }
                // A window belongs to the split that holds all its target rows; its inputs
                // are history and may reach back into the split before (never across a gap).
                let (l, lead, h) = (spec.lookback, spec.lead, spec.horizon);
                // The windows of every split read this one copy of the segment's rows.
                let rows: Arc<[f64]> = Arc::from(seg.values.as_slice());
                for (k, set) in sets.iter_mut().enumerate() {
                    for r in origins(spec, seg_start, seg_end, &bounds, k) {
                        let local = r + 1 - l - seg_start;
                        let origin_time = seg.times[local + l - 1];
                        for step in 0..h {
                            let row = local + l - 1 + lead + step;
                            for (j, &c) in spec.targets.iter().enumerate() {
                                output[step * t + j] = seg.values[row * f + c];
                            }
                            let known = &mut future[step * fw..(step + 1) * fw];
                            for (j, &c) in spec.future.iter().enumerate() {
                                known[j] = seg.values[row * f + c];
                            }
                            if let Some(calendar) = &calendar {
                                // From the origin's time, as a server computes it.
                                let time = calendar.time_after(origin_time, lead + step);
                                calendar
                                    .values_at(time, &mut known[spec.future.len()..])
                                    .map_err(|e| DataError::BadSpec(e.to_string()))?;
                            }
                        }
                        let origin = WindowOrigin {
                            series: si,
                            row: r + 1 - l,
                            time: origin_time,
                        };
                        set.push_view(&rows, local, &future, &output, origin);
                    }
                }
                seg_start = seg_end;
            }
        }
        let names = ["train", "validation", "calibration", "test"];
        for (set, name) in sets.iter().zip(names) {
            if set.is_empty() {
                return Err(DataError::EmptySplit {
                    split: name,
                    needed: span,
                });
            }
        }
        let [train, val, cal, test] = sets;
        Ok(Splits {
            train,
            val,
            cal,
            test,
            normalization: welford.finish(),
            train_rows,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(rows: usize) -> Dataset {
        let values: Vec<f64> = (0..rows)
            .flat_map(|r| [r as f64, 10.0 * r as f64])
            .collect();
        let times = (0..rows).map(|r| r as f64).collect();
        Dataset::single(
            vec!["a".into(), "b".into()],
            vec![Segment { values, times }],
            1.0,
        )
        .unwrap()
    }

    #[test]
    fn windows_hold_the_right_rows_and_never_straddle_splits() {
        let d = ramp(200);
        let spec = WindowSpec {
            lookback: 5,
            horizon: 2,
            lead: 3,
            stride: 1,
            origin_every: 1,
            targets: vec![1],
            future: Vec::new(),
            calendar: None,
        };
        let s = d.windows(&spec, &SplitFractions::default()).unwrap();
        // Window starting at row r: inputs rows r..r+5, outputs rows r+4+3 and r+4+4 of column b.
        let w = s.train.input(0);
        assert_eq!(&*w, &[0.0, 0.0, 1.0, 10.0, 2.0, 20.0, 3.0, 30.0, 4.0, 40.0]);
        assert_eq!(s.train.output(0), &[70.0, 80.0]);
        // Train covers rows 0..120: the last training window's last target row is 119.
        assert_eq!(s.train.len(), 120 - spec.span() + 1);
        let last = s.train.origin(s.train.len() - 1).row;
        assert_eq!(last + spec.span(), 120);
        // Validation windows start where their first target row is 120: inputs are history
        // from the training rows, targets never straddle two splits.
        let first_target = |set: &WindowSet, i: usize| set.origin(i).row + 4 + 3;
        assert_eq!(first_target(&s.val, 0), 120);
        assert_eq!(first_target(&s.test, 0), 170);
        let last_val = s.val.len() - 1;
        assert_eq!(first_target(&s.val, last_val) + 1, 150 - 1);
        // Normalization comes from rows 0..120 only.
        assert!((s.normalization.mean[0] - 59.5).abs() < 1e-12);
    }

    #[test]
    fn windows_are_views_of_one_copy_of_the_rows() {
        let d = ramp(200);
        let spec = WindowSpec::next_step(50, vec![0]);
        let s = d.windows(&spec, &SplitFractions::default()).unwrap();
        // One segment: every split reads the same copy, whatever the lookback.
        for set in [&s.train, &s.val, &s.cal, &s.test] {
            assert_eq!(set.sources.len(), 1);
            assert!(Arc::ptr_eq(&set.sources[0], &s.train.sources[0]));
        }
        assert_eq!(s.train.sources[0].len(), 200 * 2);
        // The views read the right rows, and a selection is views too.
        let last = s.train.len() - 1;
        let row = s.train.origin(last).row;
        assert_eq!(s.train.past(last)[0], row as f64);
        let picked = s.train.select(&[last, 0]);
        assert_eq!(picked.past(0), s.train.past(last));
        assert_eq!(picked.sources.len(), 1);
        // A pushed window owns its rows.
        let mut own = WindowSet::empty(2, 1, 1, 1);
        own.push(&[1.0, 2.0], &[3.0], s.train.origin(0));
        assert_eq!(
            (&*own.input(0), own.inputs()),
            (&[1.0, 2.0][..], vec![1.0, 2.0])
        );
    }

    #[test]
    fn date_splits_honour_their_boundaries() {
        let d = ramp(200);
        let spec = WindowSpec {
            lookback: 5,
            horizon: 2,
            lead: 1,
            stride: 1,
            origin_every: 1,
            targets: vec![0],
            future: Vec::new(),
            calendar: None,
        };
        let split = Split::Dates {
            train_start: None,
            val_start: 100.0,
            cal_start: 140.0,
            test_start: 170.0,
        };
        let s = d.windows_split(&spec, &split).unwrap();
        let span = spec.span();
        for (set, lo, hi) in [
            (&s.train, 0, 100),
            (&s.val, 100, 140),
            (&s.cal, 140, 170),
            (&s.test, 170, 200),
        ] {
            assert!(!set.is_empty());
            for i in 0..set.len() {
                // Target rows: from origin + lead to origin + lead + horizon − 1.
                let first_target = set.origin(i).row + spec.lookback - 1 + spec.lead;
                let end = first_target + spec.horizon;
                assert!(
                    first_target >= lo && end <= hi,
                    "targets [{first_target}, {end}) outside [{lo}, {hi})"
                );
                assert_eq!(set.origin(i).row + span, end);
            }
        }
        // A sliding history: training targets from `train_start` on.
        let sliding = Split::Dates {
            train_start: Some(60.0),
            val_start: 100.0,
            cal_start: 140.0,
            test_start: 170.0,
        };
        let s = d.windows_split(&spec, &sliding).unwrap();
        for i in 0..s.train.len() {
            let first_target = s.train.origin(i).row + spec.lookback - 1 + spec.lead;
            assert!((60..100).contains(&first_target), "{first_target}");
        }
        let bad = Split::Dates {
            train_start: None,
            val_start: 100.0,
            cal_start: 90.0,
            test_start: 170.0,
        };
        assert!(d.windows_split(&spec, &bad).is_err());
    }

    #[test]
    fn windows_do_not_cross_gaps() {
        let seg = ramp(100).series()[0].segments[0].clone();
        let (a, b) = (seg.values[..100].to_vec(), seg.values[100..].to_vec());
        let segments = vec![
            Segment {
                values: a,
                times: seg.times[..50].to_vec(),
            },
            Segment {
                values: b,
                times: seg.times[50..].to_vec(),
            },
        ];
        let d = Dataset::single(vec!["a".into(), "b".into()], segments, 1.0).unwrap();
        let spec = WindowSpec::next_step(4, vec![0]);
        let s = d.windows(&spec, &SplitFractions::default()).unwrap();
        // No window reads rows on both sides of the gap between rows 49 and 50.
        for set in [&s.train, &s.val, &s.cal, &s.test] {
            for i in 0..set.len() {
                let start = set.origin(i).row;
                let end = start + spec.span();
                assert!(
                    end <= 50 || start >= 50,
                    "window [{start}, {end}) spans the gap"
                );
            }
        }
        // A split whose rows hold no complete window is a clear error.
        let tiny = SplitFractions {
            train: 0.9,
            val: 0.04,
            cal: 0.0001,
            test: 0.06,
        };
        assert!(matches!(
            d.windows(&spec, &tiny),
            Err(DataError::EmptySplit {
                split: "calibration",
                ..
            })
        ));
    }

    #[test]
    fn origins_fall_at_the_same_phase_for_every_split_and_lookback() {
        let d = ramp(24 * 40);
        let mut firsts = Vec::new();
        for lookback in [24, 48, 168] {
            let spec = WindowSpec {
                lookback,
                horizon: 24,
                lead: 1,
                stride: 24,
                origin_every: 24,
                targets: vec![0],
                future: Vec::new(),
                calendar: None,
            };
            let s = d.windows(&spec, &SplitFractions::default()).unwrap();
            for set in [&s.train, &s.val, &s.cal, &s.test] {
                for i in 0..set.len() {
                    // The first predicted row starts a day: origin + 1 ≡ 0 (mod 24).
                    let origin = set.origin(i).row + lookback - 1;
                    assert_eq!((origin + 1) % 24, 0, "lookback {lookback}");
                }
            }
            firsts.push(s.test.origin(0).row + lookback - 1);
        }
        // Models with different lookbacks are scored on the same test origins.
        assert!(firsts.windows(2).all(|w| w[0] == w[1]), "{firsts:?}");
    }

    #[test]
    fn future_blocks_hold_the_predicted_rows_covariates_and_calendar() {
        // Hourly rows from 1970-01-01 00:00 UTC: column a = row, b = 10·row.
        let mut d = ramp(200);
        d = Dataset::single(
            d.columns().to_vec(),
            d.series()[0]
                .segments
                .iter()
                .map(|s| Segment {
                    values: s.values.clone(),
                    times: s.times.iter().map(|t| t * 3600.0).collect(),
                })
                .collect(),
            3600.0,
        )
        .unwrap();
        let calendar =
            Calendar::new(vec![tns_calendar::CalendarFeature::Hour], None, 3600.0).unwrap();
        let spec = WindowSpec {
            lookback: 3,
            horizon: 2,
            lead: 2,
            stride: 1,
            origin_every: 1,
            targets: vec![0],
            future: vec![1],
            calendar: Some(calendar),
        };
        let s = d.windows(&spec, &SplitFractions::default()).unwrap();
        assert_eq!(s.train.input_len(), 3 * 2 + 2 * 3);
        let w = s.train.input(0);
        // Past rows 0..3; predicted rows 4 and 5: b = 40, 50 and hours 4, 5.
        assert_eq!(s.train.past(0), &[0.0, 0.0, 1.0, 10.0, 2.0, 20.0]);
        let hour = |h: f64| std::f64::consts::TAU * h / 24.0;
        let future = &w[6..];
        assert_eq!(future[0], 40.0);
        assert!((future[1] - hour(4.0).sin()).abs() < 1e-12);
        assert!((future[2] - hour(4.0).cos()).abs() < 1e-12);
        assert_eq!(future[3], 50.0);
        assert!((future[4] - hour(5.0).sin()).abs() < 1e-12);
        assert_eq!(s.train.output(0), &[4.0, 5.0]);
    }

    #[test]
    fn bad_specs_are_rejected() {
        let d = ramp(50);
        let mut spec = WindowSpec::next_step(0, vec![0]);
        assert!(d.windows(&spec, &SplitFractions::default()).is_err());
        spec.lookback = 3;
        spec.targets = vec![7];
        assert!(d.windows(&spec, &SplitFractions::default()).is_err());
    }
}

#[cfg(test)]
mod memory_tests {
    use super::*;

    #[test]
    fn the_window_count_is_known_before_building_and_bounds_memory() {
        // Two series with a gap in one: every split, stride and origin spacing.
        let segment = |rows: usize, start: f64| Segment {
            values: (0..rows * 2).map(|v| v as f64).collect(),
            times: (0..rows).map(|r| start + r as f64).collect(),
        };
        let d = Dataset::single(
            vec!["a".into(), "b".into()],
            vec![segment(150, 0.0), segment(90, 500.0)],
            1.0,
        )
        .unwrap();
        for (stride, every, lead) in [(1, 1, 1), (3, 7, 2), (2, 24, 5)] {
            let spec = WindowSpec {
                lookback: 6,
                horizon: 3,
                lead,
                stride,
                origin_every: every,
                targets: vec![1],
                future: vec![0],
                calendar: None,
            };
            let split = Split::Fractions(SplitFractions::default());
            let s = d.windows_split(&spec, &split).unwrap();
            let built = s.train.len() + s.val.len() + s.cal.len() + s.test.len();
            assert_eq!(d.count_windows(&spec, &split).unwrap(), built);
        }
        // A lookback that makes the windows outgrow the limit is refused before building.
        let huge = WindowSpec {
            lookback: 100,
            horizon: 1,
            lead: 1,
            stride: 1,
            origin_every: 1,
            targets: vec![0],
            future: Vec::new(),
            calendar: None,
        };
        let wide = Dataset::single(
            (0..3000).map(|c| format!("c{c}")).collect(),
            vec![Segment {
                values: vec![0.0; 3000 * 2000],
                times: (0..2000).map(f64::from).collect(),
            }],
            1.0,
        )
        .unwrap();
        let err = wide.windows(&huge, &SplitFractions::default()).unwrap_err();
        assert!(matches!(err, DataError::TooManyWindows { .. }), "{err}");
        assert!(err.to_string().contains("--stride"), "{err}");
    }
}
