use std::path::PathBuf;

/// Everything that can be wrong with input data. Messages name the file, the row
/// (1-based, counting the header as row 1) and the column so the user can fix the input.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: malformed CSV at row {row}: {message}")]
    Csv {
        path: PathBuf,
        row: u64,
        message: String,
    },
    #[error("{path}: the header is empty or has an empty or duplicate column name {column:?}")]
    BadHeader { path: PathBuf, column: String },
    #[error("{path}: no column named {column:?} (columns are: {available})")]
    MissingColumn {
        path: PathBuf,
        column: String,
        available: String,
    },
    #[error("{path}: row {row}, column {column:?}: {value:?} is not a number")]
    NotNumeric {
        path: PathBuf,
        row: u64,
        column: String,
        value: String,
    },
    #[error("{path}: row {row}, column {column:?}: value is missing (empty cell)")]
    MissingValue {
        path: PathBuf,
        row: u64,
        column: String,
    },
    #[error(
        "{path}: row {row}, column {column:?}: {value} is not finite (NaN and Inf are rejected)"
    )]
    NotFinite {
        path: PathBuf,
        row: u64,
        column: String,
        value: f64,
    },
    #[error(
        "{path}: row {row}, time column {column:?}: {value:?} is neither a number nor an ISO-8601 date-time"
    )]
    BadTime {
        path: PathBuf,
        row: u64,
        column: String,
        value: String,
    },
    #[error(
        "{path}: row {row}, time column {column:?}: time {value} does not increase (previous row has {previous}); sort the file and remove duplicate times"
    )]
    UnsortedTime {
        path: PathBuf,
        row: u64,
        column: String,
        value: String,
        previous: String,
    },
    #[error("{path}: row {row}: expected {expected} cells, found {found}")]
    RaggedRow {
        path: PathBuf,
        row: u64,
        expected: usize,
        found: usize,
    },
    #[error(
        "{what}: {rows} rows are too few for one window of {needed} rows (lookback + lead + horizon - 1); use a shorter lookback/horizon or more data"
    )]
    TooFewRows {
        what: String,
        rows: usize,
        needed: usize,
    },
    #[error(
        "the {split} split has no complete window ({needed} consecutive rows needed); provide more rows or change the split fractions"
    )]
    EmptySplit { split: &'static str, needed: usize },
    #[error("invalid window specification: {0}")]
    BadSpec(String),
    #[error("invalid generator setting: {0}")]
    BadGenerator(String),
    #[error("no column named {0:?}")]
    UnknownColumn(String),
}
