use std::io::Write;
use std::path::Path;

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

/// Suffix of the temporary files [`write_atomic`] writes beside their target.
pub const PARTIAL_SUFFIX: &str = ".tns-partial";

/// Age after which a temporary file of ours is taken for the leftover of a killed write (no
/// write of ours takes this long: the bytes are in memory before the file is created).
const STALE_PARTIAL: std::time::Duration = std::time::Duration::from_secs(600);

/// Writes `bytes` to a temporary file beside `path` (`.NAME.XXXXXX.tns-partial`) and renames
/// it into place, so a reader never sees a half-written file and a failed write leaves the
/// old file intact. The file gets the permissions a new file gets (`0666` less the umask),
/// not the temporary file's private `0600`. Temporaries of earlier writes to `path` that were
/// killed before their rename are removed once stale.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map_or_else(|| "output".into(), |n| n.to_string_lossy().into_owned());
    let prefix = format!(".{name}.");
    remove_stale_partials(dir, &prefix);
    let mut builder = tempfile::Builder::new();
    builder.prefix(&prefix).suffix(PARTIAL_SUFFIX);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        // Created with open(2)'s mode, so the umask applies as for any new file.
        builder.permissions(std::fs::Permissions::from_mode(0o666));
    }
    let mut tmp = builder.tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Removes `dir/PREFIX*.tns-partial` files older than [`STALE_PARTIAL`]; errors (a file
/// another process removed first, a folder we cannot list) are not the write's concern.
fn remove_stale_partials(dir: &Path, prefix: &str) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let file_name = file_name.to_string_lossy();
        let ours = file_name.starts_with(prefix) && file_name.ends_with(PARTIAL_SUFFIX);
        let stale = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > STALE_PARTIAL);
        if ours && stale {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn atomic_writes_get_the_umask_permissions_of_a_new_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let ours = dir.path().join("model.tns");
        write_atomic(&ours, b"abc").unwrap();
        // A file made the ordinary way gets 0666 less the umask: ours must match it, not
        // the temporary file's 0600.
        let plain = dir.path().join("plain");
        std::fs::File::create(&plain).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&ours), mode(&plain));
        assert_eq!(std::fs::read(&ours).unwrap(), b"abc");
    }

    #[test]
    fn stale_temporaries_of_killed_writes_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out.csv");
        let partial = |tag: &str| dir.path().join(format!(".out.csv.{tag}{PARTIAL_SUFFIX}"));
        let (stale, fresh, other) = (
            partial("stale1"),
            partial("fresh1"),
            dir.path()
                .join(format!(".other.csv.old111{PARTIAL_SUFFIX}")),
        );
        let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        for p in [&stale, &fresh, &other] {
            let f = std::fs::File::create(p).unwrap();
            if p != &fresh {
                f.set_modified(hour_ago).unwrap();
            }
        }
        write_atomic(&target, b"x").unwrap();
        // The stale leftover of a write to out.csv is gone; a fresh one (a write that may
        // still be running) and another target's are left alone.
        assert!(!stale.exists());
        assert!(fresh.exists() && other.exists());
        let leftovers = std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| {
                let name = e.as_ref().unwrap().file_name();
                name.to_string_lossy().ends_with(PARTIAL_SUFFIX)
            })
            .count();
        assert_eq!(leftovers, 2, "the write left a temporary of its own");
    }
}
