use std::path::{Path, PathBuf};

use crate::{DataError, Dataset, Segment, dataset::Series};

/// How to read a CSV file into a [`Dataset`].
#[derive(Debug, Clone, Default)]
pub struct CsvOptions {
    /// Column holding time stamps (numeric or ISO-8601). Used for ordering checks, gap
    /// detection and `dt`; never a feature.
    pub time_column: Option<String>,
    /// Column naming the series in a long-format file (e.g. `unique_id`); never a feature.
    pub series_column: Option<String>,
    /// Keep only this series (requires `series_column`).
    pub series: Option<String>,
    /// Feature columns to keep, in this order; default: every other column.
    pub features: Option<Vec<String>>,
    /// Sampling interval when there is no time column (default 1).
    pub dt: Option<f64>,
    /// How to treat missing rows (default: a gap cuts the series; no window spans it).
    pub fill: Fill,
    /// Columns read as categories and one-hot encoded into 0/1 columns named
    /// `COLUMN=value`, one per value seen in the file (sorted), or exactly those named in
    /// `features`. The series column may be one (a pooled model's series id as a feature).
    pub categorical: Vec<String>,
}

/// What to do with missing rows: a step between two rows that is a whole number of sampling
/// intervals longer than one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "policy", rename_all = "kebab-case")]
pub enum Fill {
    /// Leave them out: the series is cut at the gap and no window spans it.
    #[default]
    None,
    /// Repeat the last row before the gap, for gaps of at most `limit` missing rows.
    Forward {
        /// Longest gap filled, in missing rows; longer gaps still cut the series.
        limit: usize,
    },
    /// Interpolate every column linearly across gaps of at most `limit` missing rows.
    Linear {
        /// Longest gap filled, in missing rows.
        limit: usize,
    },
}

impl std::str::FromStr for Fill {
    type Err = String;

    /// `none`, `forward[:LIMIT]` or `linear[:LIMIT]` (limit in missing rows, default 3).
    fn from_str(s: &str) -> Result<Self, String> {
        let (name, limit) = s.split_once(':').unwrap_or((s, "3"));
        let limit: usize = limit
            .parse()
            .map_err(|_| format!("--fill {s:?}: the limit must be a whole number of rows"))?;
        match name {
            "none" => Ok(Self::None),
            "forward" => Ok(Self::Forward { limit }),
            "linear" => Ok(Self::Linear { limit }),
            _ => Err(format!(
                "--fill {s:?}: use none, forward[:LIMIT] or linear[:LIMIT]"
            )),
        }
    }
}

/// A step longer than this multiple of the median step starts a new segment.
const GAP_FACTOR: f64 = 1.5;

/// Loads a CSV file with a header row. Every cell of a feature column must be a finite
/// number; time stamps must strictly increase within a series. Errors name the file, the
/// row (the header is row 1) and the column.
///
/// ```
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("d.csv");
/// std::fs::write(&path, "t,x\n0,1.5\n1,2.5\n2,3.5\n").unwrap();
/// let opts = tns_data::CsvOptions { time_column: Some("t".into()), ..Default::default() };
/// let data = tns_data::load_csv(&path, &opts).unwrap();
/// assert_eq!(data.columns(), ["x"]);
/// assert_eq!(data.rows(), 3);
///
/// std::fs::write(&path, "t,x\n0,1.5\n1,oops\n").unwrap();
/// let err = tns_data::load_csv(&path, &opts).unwrap_err().to_string();
/// assert!(err.contains("row 3") && err.contains("\"x\""), "{err}");
/// ```
pub fn load_csv(path: &Path, options: &CsvOptions) -> Result<Dataset, DataError> {
    // A device (`/dev/zero`) would never end and a FIFO could block: only regular files.
    let meta = std::fs::metadata(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    if !meta.is_file() {
        return Err(DataError::NotAFile {
            path: path.to_path_buf(),
        });
    }
    load(CsvSource::File(path), options)
}

/// [`load_csv`] on CSV text held in memory (a data frame written as CSV by a caller in
/// another language), read exactly as a file would be; errors name the data `name`.
pub fn load_csv_bytes(
    name: &str,
    bytes: &[u8],
    options: &CsvOptions,
) -> Result<Dataset, DataError> {
    load(
        CsvSource::Bytes {
            name: Path::new(name),
            bytes,
        },
        options,
    )
}

/// Where the CSV text comes from; read once for the categories of unlisted one-hot columns
/// and once for the data.
#[derive(Clone, Copy)]
enum CsvSource<'a> {
    File(&'a Path),
    Bytes { name: &'a Path, bytes: &'a [u8] },
}

impl CsvSource<'_> {
    fn name(&self) -> &Path {
        match self {
            Self::File(path) => path,
            Self::Bytes { name, .. } => name,
        }
    }

    fn reader(&self) -> Result<csv::Reader<Box<dyn std::io::Read + '_>>, DataError> {
        let input: Box<dyn std::io::Read + '_> = match self {
            Self::File(path) => {
                Box::new(std::fs::File::open(path).map_err(|source| DataError::Io {
                    path: path.to_path_buf(),
                    source,
                })?)
            }
            Self::Bytes { bytes, .. } => Box::new(*bytes),
        };
        Ok(csv::ReaderBuilder::new()
            .has_headers(true)
            .trim(csv::Trim::All)
            .from_reader(input))
    }
}

fn load(source: CsvSource<'_>, options: &CsvOptions) -> Result<Dataset, DataError> {
    let path = source.name();
    let p = || path.to_path_buf();
    let mut reader = source.reader()?;
    let header: Vec<String> = reader
        .headers()
        .map_err(|e| csv_error(p(), e))?
        .iter()
        .map(str::to_string)
        .collect();
    for (i, name) in header.iter().enumerate() {
        if name.is_empty() || header[..i].contains(name) {
            return Err(DataError::BadHeader {
                path: p(),
                column: name.clone(),
            });
        }
    }
    let find = |name: &str| {
        header
            .iter()
            .position(|h| h == name)
            .ok_or_else(|| DataError::MissingColumn {
                path: p(),
                column: name.to_string(),
                available: header.join(", "),
            })
    };
    let time_col = options.time_column.as_deref().map(find).transpose()?;
    let series_col = options.series_column.as_deref().map(find).transpose()?;
    if options.series.is_some() && series_col.is_none() {
        return Err(DataError::BadSpec(
            "selecting a series needs the series column to be named".into(),
        ));
    }
    let mut reader_records = reader.records().peekable();
    // The first data row decides which unrequested columns are text or dates: those are
    // skipped (and reported), never silently read as numbers.
    let first: Option<csv::StringRecord> = match reader_records.peek() {
        Some(Ok(r)) => Some(r.clone()),
        _ => None,
    };
    let mut skipped = Vec::new();
    let categorical: Vec<usize> = options
        .categorical
        .iter()
        .map(|n| find(n))
        .collect::<Result<_, _>>()?;
    if let Some(&c) = categorical.iter().find(|&&c| Some(c) == time_col) {
        return Err(DataError::BadSpec(format!(
            "the time column {:?} cannot be categorical",
            header[c]
        )));
    }
    let feature_cols: Vec<Source> = match &options.features {
        Some(names) => {
            let cols = names
                .iter()
                .map(|n| match n.split_once('=') {
                    Some((column, value)) if categorical.iter().any(|&c| header[c] == column) => {
                        Ok(Source::OneHot {
                            column: find(column)?,
                            value: value.to_string(),
                        })
                    }
                    _ => find(n).map(Source::Column),
                })
                .collect::<Result<Vec<_>, _>>()?;
            if let Some(Source::Column(c)) = cols
                .iter()
                .find(|s| matches!(s, Source::Column(c) if Some(*c) == time_col))
            {
                return Err(DataError::BadSpec(format!(
                    "the time column {:?} cannot be a feature; calendar features come from it instead",
                    header[*c]
                )));
            }
            cols
        }
        None => {
            let categories = distinct_values(source, &categorical)?;
            let mut cols = Vec::new();
            for (c, name) in header.iter().enumerate() {
                if let Some(k) = categorical.iter().position(|&x| x == c) {
                    cols.extend(categories[k].iter().map(|value| Source::OneHot {
                        column: c,
                        value: value.clone(),
                    }));
                    continue;
                }
                if Some(c) == time_col || Some(c) == series_col {
                    continue;
                }
                let numeric = first
                    .as_ref()
                    .and_then(|r| r.get(c))
                    .is_none_or(|cell| cell.is_empty() || parse_cell(cell).is_some());
                if numeric {
                    cols.push(Source::Column(c));
                } else {
                    skipped.push(name.clone());
                }
            }
            cols
        }
    };
    if feature_cols.is_empty() {
        return Err(DataError::BadSpec(format!(
            "{}: no feature column left (columns: {})",
            path.display(),
            header.join(", ")
        )));
    }

    // Rows grouped by series, in file order of first appearance.
    let mut series: Vec<RawSeries> = Vec::new();
    let mut record;
    let mut row_no: u64 = 1;
    loop {
        match reader_records.next() {
            Some(Ok(r)) => record = r,
            None => break,
            Some(Err(e)) => return Err(csv_error(p(), e)),
        }
        row_no = record.position().map_or(row_no + 1, |pos| pos.line());
        if record.len() != header.len() {
            return Err(DataError::RaggedRow {
                path: p(),
                row: row_no,
                expected: header.len(),
                found: record.len(),
            });
        }
        let id = series_col.map_or("main", |c| &record[c]);
        if options.series.as_deref().is_some_and(|want| want != id) {
            continue;
        }
        let slot = match series.iter().position(|s| s.0 == id) {
            Some(i) => i,
            None => {
                series.push((id.to_string(), Vec::new(), Vec::new(), Vec::new()));
                series.len() - 1
            }
        };
        let (_, values, times, rows) = &mut series[slot];
        for source in &feature_cols {
            values.push(match source {
                Source::Column(c) => parse_number(path, row_no, &header[*c], &record[*c])?,
                Source::OneHot { column, value } => f64::from(u8::from(&record[*column] == value)),
            });
        }
        let t = match time_col {
            Some(c) => parse_time(path, row_no, &header[c], &record[c])?,
            None => times.len() as f64,
        };
        times.push(t);
        rows.push(row_no);
    }
    if let Some(want) = &options.series
        && series.is_empty()
    {
        return Err(DataError::BadSpec(format!(
            "{}: no row has series {want:?}",
            path.display()
        )));
    }
    let f = feature_cols.len();
    let time_name = time_col.map(|c| header[c].clone());
    let mut steps = Vec::new();
    for (_, _, times, rows) in &series {
        for i in 1..times.len() {
            let d = times[i] - times[i - 1];
            if d <= 0.0 {
                return Err(DataError::UnsortedTime {
                    path: p(),
                    row: rows[i],
                    column: time_name.clone().unwrap_or_default(),
                    value: times[i].to_string(),
                    previous: times[i - 1].to_string(),
                });
            }
            steps.push(d);
        }
    }
    let dt = match (time_col, options.dt) {
        (_, Some(dt)) => dt,
        (Some(_), None) if !steps.is_empty() => median(&mut steps.clone()),
        _ => 1.0,
    };
    let mut filled = 0;
    let out: Vec<Series> = series
        .into_iter()
        .map(|(id, values, times, _)| {
            let (values, times, added) = fill_gaps(values, times, f, dt, options.fill);
            filled += added;
            Series {
                id,
                segments: split_at_gaps(values, times, f, dt),
            }
        })
        .collect();
    let names = feature_cols
        .iter()
        .map(|s| match s {
            Source::Column(c) => header[*c].clone(),
            Source::OneHot { column, value } => format!("{}={value}", header[*column]),
        })
        .collect();
    let mut data = Dataset::new(names, out, dt)?;
    data.set_skipped_columns(skipped);
    data.set_filled_rows(filled);
    Ok(data)
}

/// Inserts the missing rows of gaps the policy fills (steps within 10% of a whole number
/// `k ≥ 2` of intervals, `k − 1 ≤ limit`); returns the rows and how many were added.
fn fill_gaps(
    values: Vec<f64>,
    times: Vec<f64>,
    f: usize,
    dt: f64,
    fill: Fill,
) -> (Vec<f64>, Vec<f64>, usize) {
    let limit = match fill {
        Fill::None => return (values, times, 0),
        Fill::Forward { limit } | Fill::Linear { limit } => limit,
    };
    let (mut out_values, mut out_times, mut added) = (Vec::new(), Vec::new(), 0);
    for i in 0..times.len() {
        if i > 0 {
            let ratio = (times[i] - times[i - 1]) / dt;
            let k = ratio.round();
            // Only whole numbers of intervals, at least two (one missing row).
            let missing = if k >= 2.0 && (ratio - k).abs() <= 0.1 {
                k as usize - 1
            } else {
                0
            };
            if missing >= 1 && missing <= limit {
                for m in 1..=missing {
                    let w = m as f64 / k;
                    out_times.push(times[i - 1] + m as f64 * dt);
                    for c in 0..f {
                        let (a, b) = (values[(i - 1) * f + c], values[i * f + c]);
                        out_values.push(match fill {
                            Fill::Linear { .. } => a + w * (b - a),
                            _ => a,
                        });
                    }
                    added += 1;
                }
            }
        }
        out_times.push(times[i]);
        out_values.extend_from_slice(&values[i * f..(i + 1) * f]);
    }
    (out_values, out_times, added)
}

/// Where a feature's values come from.
enum Source {
    /// A numeric or boolean column.
    Column(usize),
    /// 1 where a categorical column holds `value`, else 0.
    OneHot {
        /// The categorical column.
        column: usize,
        /// The category.
        value: String,
    },
}

/// The sorted distinct values of each of `columns`, read in a first pass over the file.
fn distinct_values(
    source: CsvSource<'_>,
    columns: &[usize],
) -> Result<Vec<Vec<String>>, DataError> {
    let mut sets = vec![std::collections::BTreeSet::new(); columns.len()];
    if columns.is_empty() {
        return Ok(Vec::new());
    }
    let path = source.name();
    let mut reader = source.reader()?;
    for record in reader.records() {
        let record = record.map_err(|e| csv_error(path.to_path_buf(), e))?;
        for (set, &c) in sets.iter_mut().zip(columns) {
            if let Some(v) = record.get(c) {
                set.insert(v.to_string());
            }
        }
    }
    Ok(sets.into_iter().map(|s| s.into_iter().collect()).collect())
}

/// One series while reading: id, row-major values, times, and file row numbers.
type RawSeries = (String, Vec<f64>, Vec<f64>, Vec<u64>);

fn split_at_gaps(values: Vec<f64>, times: Vec<f64>, f: usize, dt: f64) -> Vec<Segment> {
    let mut segments = Vec::new();
    let mut start = 0;
    for i in 1..=times.len() {
        if i == times.len() || times[i] - times[i - 1] > GAP_FACTOR * dt {
            segments.push(Segment {
                values: values[start * f..i * f].to_vec(),
                times: times[start..i].to_vec(),
            });
            start = i;
        }
    }
    segments
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn csv_error(path: PathBuf, e: csv::Error) -> DataError {
    let row = e.position().map_or(0, |p| p.line());
    match e.into_kind() {
        csv::ErrorKind::Io(source) => DataError::Io { path, source },
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => DataError::RaggedRow {
            path,
            row,
            expected: expected_len as usize,
            found: len as usize,
        },
        other => DataError::Csv {
            path,
            row,
            message: format!("{other:?}"),
        },
    }
}

fn parse_number(path: &Path, row: u64, column: &str, cell: &str) -> Result<f64, DataError> {
    if cell.is_empty() {
        return Err(DataError::MissingValue {
            path: path.to_path_buf(),
            row,
            column: column.to_string(),
        });
    }
    let v = parse_cell(cell).ok_or_else(|| DataError::NotNumeric {
        path: path.to_path_buf(),
        row,
        column: column.to_string(),
        value: cell.to_string(),
    })?;
    if !v.is_finite() {
        return Err(DataError::NotFinite {
            path: path.to_path_buf(),
            row,
            column: column.to_string(),
            value: v,
        });
    }
    Ok(v)
}

/// A cell as the loader reads it: a number, or a boolean word (`true/false`, `yes/no`, any
/// case) as 1 or 0.
///
/// ```
/// assert_eq!(tns_data::parse_cell("TRUE"), Some(1.0));
/// assert_eq!(tns_data::parse_cell("2.5"), Some(2.5));
/// assert_eq!(tns_data::parse_cell("FR"), None);
/// ```
pub fn parse_cell(cell: &str) -> Option<f64> {
    if let Ok(v) = cell.parse::<f64>() {
        return Some(v);
    }
    match cell.to_ascii_lowercase().as_str() {
        "true" | "yes" => Some(1.0),
        "false" | "no" => Some(0.0),
        _ => None,
    }
}

/// Seconds (for date-times) or the number itself.
fn parse_time(path: &Path, row: u64, column: &str, cell: &str) -> Result<f64, DataError> {
    tns_calendar::parse_timestamp(cell).ok_or_else(|| DataError::BadTime {
        path: path.to_path_buf(),
        row,
        column: column.to_string(),
        value: cell.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str, options: &CsvOptions) -> Result<Dataset, DataError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.csv");
        std::fs::write(&path, text).unwrap();
        load_csv(&path, options)
    }

    fn timed() -> CsvOptions {
        CsvOptions {
            time_column: Some("t".into()),
            ..Default::default()
        }
    }

    #[test]
    fn categorical_columns_are_one_hot_encoded() {
        let text = "id,day,y\nA,mon,1\nA,tue,2\nB,mon,3\nB,sun,4\n";
        let options = CsvOptions {
            series_column: Some("id".into()),
            categorical: vec!["day".into(), "id".into()],
            ..Default::default()
        };
        let d = load(text, &options).unwrap();
        assert_eq!(
            d.columns(),
            ["id=A", "id=B", "day=mon", "day=sun", "day=tue", "y"]
        );
        assert_eq!(
            d.series()[0].segments[0].values,
            [1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 2.0]
        );
        // A model's own list: the categories it was trained on, in its order; a value it
        // never saw is all zeros.
        let d = load(
            text,
            &CsvOptions {
                features: Some(vec!["day=sun".into(), "y".into()]),
                ..options
            },
        )
        .unwrap();
        assert_eq!(d.series()[1].segments[0].values, [0.0, 3.0, 1.0, 4.0]);
    }

    #[test]
    fn fill_policies_bridge_short_gaps_only() {
        // Hourly rows with 2 missing after t = 2 and 5 missing after t = 6.
        let text = "t,y\n0,0\n1,1\n2,2\n5,5\n6,6\n12,12\n13,13\n";
        let with = |fill: Fill| {
            load(
                text,
                &CsvOptions {
                    time_column: Some("t".into()),
                    dt: Some(1.0),
                    fill,
                    ..Default::default()
                },
            )
            .unwrap()
        };
        let segments = |d: &Dataset| -> Vec<Vec<f64>> {
            d.series()[0]
                .segments
                .iter()
                .map(|s| s.values.clone())
                .collect()
        };
        let none = with(Fill::None);
        assert_eq!(segments(&none).len(), 3);
        let forward = with(Fill::Forward { limit: 3 });
        assert_eq!(
            segments(&forward),
            [vec![0.0, 1.0, 2.0, 2.0, 2.0, 5.0, 6.0], vec![12.0, 13.0]]
        );
        assert_eq!(forward.filled_rows(), 2);
        let linear = with(Fill::Linear { limit: 5 });
        assert_eq!(segments(&linear).len(), 1);
        assert_eq!(linear.filled_rows(), 7);
        assert_eq!(
            &segments(&linear)[0][..7],
            &[0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
        );
        assert_eq!("linear:5".parse::<Fill>(), Ok(Fill::Linear { limit: 5 }));
        assert!("sideways".parse::<Fill>().is_err());
    }

    #[test]
    fn booleans_load_as_numbers_and_text_columns_are_skipped_and_named() {
        let text = "t,Date,holiday,flag,y,name\n\
                    2020-01-01 00:00,2020-01-01,TRUE,yes,1.5,a\n\
                    2020-01-01 01:00,2020-01-01,false,No,2.5,b\n";
        let time = CsvOptions {
            time_column: Some("t".into()),
            ..Default::default()
        };
        let d = load(text, &time).unwrap();
        assert_eq!(d.columns(), ["holiday", "flag", "y"]);
        assert_eq!(d.skipped_columns(), ["Date", "name"]);
        let seg = &d.series()[0].segments[0];
        assert_eq!(seg.values, [1.0, 1.0, 1.5, 0.0, 0.0, 2.5]);
        // Asked for by name, a text column is an error that says what to do.
        let err = load(
            text,
            &CsvOptions {
                features: Some(vec!["name".into()]),
                ..time.clone()
            },
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("\"name\"") && err.contains("--features"),
            "{err}"
        );
        // The time column is never a feature.
        let err = load(
            text,
            &CsvOptions {
                features: Some(vec!["t".into(), "y".into()]),
                ..time
            },
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("time column \"t\" cannot be a feature"),
            "{err}"
        );
    }

    #[test]
    fn every_malformed_input_names_file_row_and_column() {
        let missing = load_csv(Path::new("/nonexistent/x.csv"), &timed()).unwrap_err();
        assert!(
            missing.to_string().contains("/nonexistent/x.csv"),
            "{missing}"
        );
        let cases: &[(&str, &[&str])] = &[
            ("t,x\n0,1\n1,abc\n", &["row 3", "\"x\"", "abc"]),
            ("t,x\n0,1\n1,\n", &["row 3", "\"x\"", "missing"]),
            ("t,x\n0,1\n1,NaN\n", &["row 3", "\"x\"", "not finite"]),
            ("t,x\n0,1\n1,inf\n", &["row 3", "not finite"]),
            ("t,x\n0,1\n0,2\n", &["row 3", "\"t\"", "does not increase"]),
            ("t,x\n1,1\n0,2\n", &["row 3", "does not increase"]),
            ("t,x\n0,1\n1,2,3\n", &["row 3", "expected 2 cells, found 3"]),
            ("t,x\n0,1\nyesterday,2\n", &["row 3", "\"t\"", "ISO-8601"]),
            ("t,,x\n0,1,2\n", &["header"]),
            ("t,x,x\n0,1,2\n", &["duplicate"]),
            ("x\n1\n", &["no column named \"t\""]),
        ];
        for (text, needles) in cases {
            let err = load(text, &timed()).unwrap_err().to_string();
            assert!(err.contains("in.csv"), "{err}");
            for n in *needles {
                assert!(err.contains(n), "{text:?}: {err:?} lacks {n:?}");
            }
        }
    }

    #[test]
    fn iso_times_gaps_and_series_columns() {
        let text = "id,ds,y,load\n\
            A,2015-01-01 00:00:00,1,10\n\
            B,2015-01-01 00:00:00,5,50\n\
            A,2015-01-01 01:00:00,2,20\n\
            A,2015-01-01 02:00:00,3,30\n\
            B,2015-01-01 01:00:00,6,60\n\
            A,2015-01-01 05:00:00,4,40\n";
        let opts = CsvOptions {
            time_column: Some("ds".into()),
            series_column: Some("id".into()),
            ..Default::default()
        };
        let d = load(text, &opts).unwrap();
        assert_eq!(d.columns(), ["y", "load"]);
        assert_eq!(d.dt(), 3600.0);
        assert_eq!(d.series().len(), 2);
        // Series A has a 3-hour gap before its last row: two segments.
        assert_eq!(d.series()[0].segments.len(), 2);
        assert_eq!(
            d.series()[0].segments[0].values,
            vec![1.0, 10.0, 2.0, 20.0, 3.0, 30.0]
        );
        let only_b = load(
            text,
            &CsvOptions {
                series: Some("B".into()),
                ..opts.clone()
            },
        )
        .unwrap();
        assert_eq!(only_b.rows(), 2);
        let none = load(
            text,
            &CsvOptions {
                series: Some("C".into()),
                ..opts
            },
        );
        assert!(none.unwrap_err().to_string().contains("\"C\""));
    }

    #[test]
    fn reads_the_shared_electricity_file_when_present() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/epf_fr_be.csv");
        if !path.exists() {
            return;
        }
        let opts = CsvOptions {
            time_column: Some("ds".into()),
            series_column: Some("unique_id".into()),
            series: Some("FR".into()),
            ..Default::default()
        };
        let d = load_csv(&path, &opts).unwrap();
        assert_eq!(d.rows(), 16_080);
        assert_eq!(
            d.columns(),
            ["y", "gen_forecast", "system_load", "week_day"]
        );
        assert_eq!(d.dt(), 3600.0);
    }
}
