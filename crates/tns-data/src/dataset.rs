use std::io::Write;
use std::path::Path;

use tempfile::NamedTempFile;

use crate::DataError;

/// One contiguous stretch of rows of one series: no gap in time inside it, so a window
/// may span any rows of it but never two segments.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    /// Row-major values, `rows × columns`.
    pub values: Vec<f64>,
    /// Time stamps (seconds, or the file's numeric unit), one per row.
    pub times: Vec<f64>,
}

impl Segment {
    /// Number of rows in this segment.
    pub fn rows(&self) -> usize {
        self.times.len()
    }
}

/// A named series (one `unique_id` of a long-format file, or the only series) made of
/// segments in chronological order.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// The series identifier (`"main"` when the file has no series column).
    pub id: String,
    /// Contiguous segments, in time order.
    pub segments: Vec<Segment>,
}

impl Series {
    /// Total rows over all segments.
    pub fn rows(&self) -> usize {
        self.segments.iter().map(Segment::rows).sum()
    }
}

/// Numeric multivariate time series: one or more series sharing the same columns, each
/// split into gap-free segments, with a nominal sampling interval `dt`.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    columns: Vec<String>,
    series: Vec<Series>,
    dt: f64,
    skipped: Vec<String>,
    filled: usize,
}

impl Dataset {
    /// Builds a dataset, checking that every row has one value per column.
    ///
    /// ```
    /// use tns_data::{Dataset, Segment};
    /// let seg = Segment { values: vec![1.0, 2.0, 3.0, 4.0], times: vec![0.0, 1.0] };
    /// let d = Dataset::single(vec!["a".into(), "b".into()], vec![seg], 1.0).unwrap();
    /// assert_eq!(d.rows(), 2);
    /// ```
    pub fn new(columns: Vec<String>, series: Vec<Series>, dt: f64) -> Result<Self, DataError> {
        if !(dt.is_finite() && dt > 0.0) {
            return Err(DataError::BadSpec(format!(
                "sampling interval dt must be positive and finite, got {dt}"
            )));
        }
        for s in &series {
            for seg in &s.segments {
                if seg.values.len() != seg.rows() * columns.len() {
                    return Err(DataError::BadSpec(format!(
                        "series {:?}: {} values for {} rows of {} columns",
                        s.id,
                        seg.values.len(),
                        seg.rows(),
                        columns.len()
                    )));
                }
            }
        }
        Ok(Self {
            columns,
            series,
            dt,
            skipped: Vec::new(),
            filled: 0,
        })
    }

    /// Columns of the source file that were not loaded because they hold text or dates and
    /// were not asked for (the CLI names them in one notice line).
    pub fn skipped_columns(&self) -> &[String] {
        &self.skipped
    }

    /// Rows the loader inserted to fill gaps (its `--fill` policy).
    pub fn filled_rows(&self) -> usize {
        self.filled
    }

    /// Records how many rows the loader filled in.
    pub(crate) fn set_filled_rows(&mut self, filled: usize) {
        self.filled = filled;
    }

    /// Records the columns the loader skipped.
    pub(crate) fn set_skipped_columns(&mut self, skipped: Vec<String>) {
        self.skipped = skipped;
    }

    /// A dataset with one series called `main`.
    pub fn single(
        columns: Vec<String>,
        segments: Vec<Segment>,
        dt: f64,
    ) -> Result<Self, DataError> {
        Self::new(
            columns,
            vec![Series {
                id: "main".into(),
                segments,
            }],
            dt,
        )
    }

    /// Column names, in storage order.
    pub fn columns(&self) -> &[String] {
        &self.columns
    }

    /// The series, in file order.
    pub fn series(&self) -> &[Series] {
        &self.series
    }

    /// Nominal sampling interval.
    pub fn dt(&self) -> f64 {
        self.dt
    }

    /// Total rows over all series.
    pub fn rows(&self) -> usize {
        self.series.iter().map(Series::rows).sum()
    }

    /// Index of each named column, or an error naming the first unknown one.
    pub fn column_indices<S: AsRef<str>>(&self, names: &[S]) -> Result<Vec<usize>, DataError> {
        names
            .iter()
            .map(|n| {
                self.columns
                    .iter()
                    .position(|c| c == n.as_ref())
                    .ok_or_else(|| DataError::UnknownColumn(n.as_ref().to_string()))
            })
            .collect()
    }

    /// Writes the dataset as CSV with a leading time column `t` (and a `series` column when
    /// there is more than one series). Segments are separated by a time gap, so that loading
    /// the file with `--time-column t` restores the same segments. The write is atomic.
    pub fn write_csv(&self, path: &Path) -> Result<(), DataError> {
        let io_err = |source| DataError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut out = Vec::new();
        let multi = self.series.len() > 1;
        let mut header = Vec::new();
        if multi {
            header.push("series".to_string());
        }
        header.push("t".to_string());
        header.extend(self.columns.iter().cloned());
        writeln!(out, "{}", header.join(",")).map_err(io_err)?;
        for s in &self.series {
            for seg in &s.segments {
                for (r, t) in seg.times.iter().enumerate() {
                    if multi {
                        write!(out, "{},", s.id).map_err(io_err)?;
                    }
                    write!(out, "{t}").map_err(io_err)?;
                    for v in &seg.values[r * self.columns.len()..(r + 1) * self.columns.len()] {
                        write!(out, ",{v}").map_err(io_err)?;
                    }
                    writeln!(out).map_err(io_err)?;
                }
            }
        }
        write_atomic(path, &out).map_err(io_err)
    }
}

/// Writes `bytes` to a temporary file beside `path` and renames it into place, so a reader
/// never sees a half-written file and a failed write leaves the old file intact.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = NamedTempFile::new_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}
