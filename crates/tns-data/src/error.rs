use std::path::PathBuf;

/// Everything that can be wrong with input data. Messages name the file, the row
/// (1-based, counting the header as row 1) and the column so the user can fix the input.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The CSV parser failed.
    #[error("{path}: malformed CSV at row {row}: {message}")]
    Csv {
        /// The file.
        path: PathBuf,
        /// 1-based row (the header is row 1).
        row: u64,
        /// What the parser reported.
        message: String,
    },
    /// An empty or duplicate column name.
    #[error("{path}: the header is empty or has an empty or duplicate column name {column:?}")]
    BadHeader {
        /// The file.
        path: PathBuf,
        /// The column.
        column: String,
    },
    /// A requested column does not exist.
    #[error("{path}: no column named {column:?} (columns are: {available})")]
    MissingColumn {
        /// The file.
        path: PathBuf,
        /// The column.
        column: String,
        /// The columns there are.
        available: String,
    },
    /// A cell that should be a number is not.
    #[error(
        "{path}: row {row}, column {column:?}: {value:?} is not a number (nor true/false/yes/no); leave a text column out of --features or declare it --categorical"
    )]
    NotNumeric {
        /// The file.
        path: PathBuf,
        /// 1-based row (the header is row 1).
        row: u64,
        /// The column.
        column: String,
        /// The value as read.
        value: String,
    },
    /// An empty cell in a used column.
    #[error("{path}: row {row}, column {column:?}: value is missing (empty cell)")]
    MissingValue {
        /// The file.
        path: PathBuf,
        /// 1-based row (the header is row 1).
        row: u64,
        /// The column.
        column: String,
    },
    /// A NaN or infinite value.
    #[error(
        "{path}: row {row}, column {column:?}: {value} is not finite (NaN and Inf are rejected)"
    )]
    NotFinite {
        /// The file.
        path: PathBuf,
        /// 1-based row (the header is row 1).
        row: u64,
        /// The column.
        column: String,
        /// The value as read.
        value: f64,
    },
    /// A time cell that is neither a number nor an ISO-8601 date-time.
    #[error(
        "{path}: row {row}, time column {column:?}: {value:?} is neither a number nor an ISO-8601 date-time"
    )]
    BadTime {
        /// The file.
        path: PathBuf,
        /// 1-based row (the header is row 1).
        row: u64,
        /// The column.
        column: String,
        /// The value as read.
        value: String,
    },
    /// Times that do not increase.
    #[error(
        "{path}: row {row}, time column {column:?}: time {value} does not increase (previous row has {previous}); sort the file and remove duplicate times"
    )]
    UnsortedTime {
        /// The file.
        path: PathBuf,
        /// 1-based row (the header is row 1).
        row: u64,
        /// The column.
        column: String,
        /// The value as read.
        value: String,
        /// The previous row's time.
        previous: String,
    },
    /// A row with the wrong number of cells.
    #[error("{path}: row {row}: expected {expected} cells, found {found}")]
    RaggedRow {
        /// The file.
        path: PathBuf,
        /// 1-based row (the header is row 1).
        row: u64,
        /// Cells expected.
        expected: usize,
        /// Cells found.
        found: usize,
    },
    /// Too few rows for one window.
    #[error(
        "{what}: {rows} rows are too few for one window of {needed} rows (lookback + lead + horizon - 1); use a shorter lookback/horizon or more data"
    )]
    TooFewRows {
        /// What was windowed.
        what: String,
        /// Rows available.
        rows: usize,
        /// Rows (or windows) needed.
        needed: usize,
    },
    /// A split without a complete window.
    #[error(
        "the {split} split has no complete window ({needed} consecutive rows needed); provide more rows or change the split fractions"
    )]
    EmptySplit {
        /// The split.
        split: &'static str,
        /// Rows (or windows) needed.
        needed: usize,
    },
    /// The windows would take more memory than a run may use.
    #[error(
        "the {windows} windows of this split would take {gib:.1} GiB ({per} values each), over the {limit_gib} GiB limit; raise --stride or --origin-every, shorten --lookback, or select fewer columns"
    )]
    TooManyWindows {
        /// Windows over all splits.
        windows: usize,
        /// Values per window (inputs and outputs).
        per: usize,
        /// Their size in GiB.
        gib: f64,
        /// The limit in GiB.
        limit_gib: u64,
    },
    /// The path is not a regular file.
    #[error("{path} is not a regular file; give the path of a CSV file")]
    NotAFile {
        /// The path.
        path: PathBuf,
    },
    /// An invalid window specification.
    #[error("invalid window specification: {0}")]
    BadSpec(String),
    /// An invalid generator setting.
    #[error("invalid generator setting: {0}")]
    BadGenerator(String),
    /// A column name that does not exist.
    #[error("no column named {0:?}")]
    UnknownColumn(String),
}
