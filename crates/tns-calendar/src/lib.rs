//! Calendar features of timestamps: hour of day, day of week, month, day of year (and
//! minute of day for sub-hourly data), each as a `sin`/`cos` pair so that 23:00 and 00:00
//! are neighbours, computed in UTC or in an IANA time zone (`Europe/Paris`), daylight
//! saving time included.
//!
//! One function computes them ([`ResolvedCalendar::values_at`], on a calendar whose time
//! zone was looked up once by [`Calendar::resolve`]); training windows, the engine's inputs,
//! the server and sessions all call it, so a model sees the same features for the
//! same timestamp wherever it runs. Timestamps are seconds since 1970-01-01 00:00 UTC; a
//! time written without an offset in a data file is read as UTC, so without a time zone
//! the features are those of the time as written.
//!
//! ```
//! use tns_calendar::{Calendar, CalendarFeature};
//! let cal = Calendar::new(vec![CalendarFeature::Hour], Some("Europe/Paris"), 3600.0).unwrap();
//! assert_eq!(cal.columns(), ["hour_sin", "hour_cos"]);
//! // 2021-06-01 10:00 UTC is 12:00 in Paris (summer time): the angle is half a turn.
//! let mut row = [0.0; 2];
//! cal.resolve().unwrap().values_at(1_622_541_600.0, &mut row).unwrap();
//! assert!(row[0].abs() < 1e-12 && (row[1] + 1.0).abs() < 1e-12);
//! ```

use chrono::{DateTime, Datelike, NaiveDateTime, Timelike};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

/// One calendar feature: a position in a cycle, given to the model as `sin` and `cos`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CalendarFeature {
    /// Minute of the day (`minute`), for sub-hourly data: period 1440 minutes.
    MinuteOfDay,
    /// Hour of the day (`hour`), whole hours: period 24.
    Hour,
    /// Day of the week (`dow`), Monday first: period 7.
    DayOfWeek,
    /// Month of the year (`month`): period 12.
    Month,
    /// Day of the year (`doy`): period 365 or 366.
    DayOfYear,
}

/// The names `--calendar` accepts, for help texts and errors.
pub const CALENDAR_SYNTAX: &str = "minute, hour, dow, month, doy (comma-separated)";

impl CalendarFeature {
    /// Every feature, in the order `--calendar` lists them.
    pub const ALL: [Self; 5] = [
        Self::MinuteOfDay,
        Self::Hour,
        Self::DayOfWeek,
        Self::Month,
        Self::DayOfYear,
    ];

    /// The short name (`hour`), also the stem of its two columns (`hour_sin`, `hour_cos`).
    pub fn name(self) -> &'static str {
        match self {
            Self::MinuteOfDay => "minute",
            Self::Hour => "hour",
            Self::DayOfWeek => "dow",
            Self::Month => "month",
            Self::DayOfYear => "doy",
        }
    }

    /// The position in the cycle, in `[0, 1)`, of a local time.
    fn fraction(self, t: NaiveDateTime) -> f64 {
        match self {
            Self::MinuteOfDay => f64::from(t.num_seconds_from_midnight()) / 86_400.0,
            Self::Hour => f64::from(t.hour()) / 24.0,
            Self::DayOfWeek => f64::from(t.weekday().num_days_from_monday()) / 7.0,
            Self::Month => f64::from(t.month0()) / 12.0,
            Self::DayOfYear => {
                let days = if t.date().leap_year() { 366.0 } else { 365.0 };
                f64::from(t.ordinal0()) / days
            }
        }
    }
}

impl std::str::FromStr for CalendarFeature {
    type Err = CalendarError;
    fn from_str(s: &str) -> Result<Self, CalendarError> {
        Self::ALL
            .into_iter()
            .find(|f| f.name() == s.trim())
            .ok_or_else(|| CalendarError::UnknownFeature(s.to_string()))
    }
}

/// Why calendar features cannot be computed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CalendarError {
    /// A `--calendar` name that is not a feature.
    #[error("unknown calendar feature {0:?}; use {CALENDAR_SYNTAX}")]
    UnknownFeature(String),
    /// No feature, or one listed twice.
    #[error("list each calendar feature once and at least one; got {0:?}")]
    FeatureList(Vec<CalendarFeature>),
    /// Not an IANA time zone name.
    #[error("unknown time zone {0:?}; use an IANA name such as Europe/Paris or America/New_York")]
    TimeZone(String),
    /// A row spacing that is not a positive number of seconds.
    #[error("the time between rows must be positive and finite seconds, got {0}")]
    Step(f64),
    /// A timestamp outside the dates chrono represents, or not finite.
    #[error("time {0} (seconds since 1970) is not a representable date")]
    Time(f64),
}

/// Which calendar features a model takes, in which time zone, for data `step` seconds apart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Calendar {
    /// The features, in column order.
    pub features: Vec<CalendarFeature>,
    /// IANA time zone of the local time; `None`: the timestamps as written (UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// Seconds between rows: the time of the row `k` steps after an origin is
    /// `origin + k · step`.
    pub step: f64,
}

impl Calendar {
    /// A checked calendar.
    pub fn new(
        features: Vec<CalendarFeature>,
        timezone: Option<&str>,
        step: f64,
    ) -> Result<Self, CalendarError> {
        let calendar = Self {
            features,
            timezone: timezone.map(str::to_string),
            step,
        };
        calendar.validate()?;
        Ok(calendar)
    }

    /// Parses a `--calendar` list (`hour,dow`).
    pub fn parse_features(list: &str) -> Result<Vec<CalendarFeature>, CalendarError> {
        list.split(',').map(str::parse).collect()
    }

    /// Checks the feature list, the time zone and the step.
    pub fn validate(&self) -> Result<(), CalendarError> {
        let mut seen = self.features.clone();
        seen.sort_by_key(|f| f.name());
        seen.dedup();
        if self.features.is_empty() || seen.len() != self.features.len() {
            return Err(CalendarError::FeatureList(self.features.clone()));
        }
        if !(self.step.is_finite() && self.step > 0.0) {
            return Err(CalendarError::Step(self.step));
        }
        self.zone()?;
        Ok(())
    }

    fn zone(&self) -> Result<Option<Tz>, CalendarError> {
        self.timezone
            .as_deref()
            .map(|name| {
                name.parse::<Tz>()
                    .map_err(|_| CalendarError::TimeZone(name.to_string()))
            })
            .transpose()
    }

    /// The calendar ready to compute: checked, with its time zone looked up once.
    pub fn resolve(&self) -> Result<ResolvedCalendar, CalendarError> {
        self.validate()?;
        Ok(ResolvedCalendar {
            features: self.features.clone(),
            zone: self.zone()?,
            step: self.step,
        })
    }

    /// The column names, two per feature: `hour_sin`, `hour_cos`, …
    pub fn columns(&self) -> Vec<String> {
        self.features
            .iter()
            .flat_map(|f| [format!("{}_sin", f.name()), format!("{}_cos", f.name())])
            .collect()
    }

    /// Values per timestamp (two per feature).
    pub fn width(&self) -> usize {
        2 * self.features.len()
    }
}

/// A time as TNS reads it (data files, requests): a finite number as it is, an ISO-8601 date-time (RFC 3339,
/// `YYYY-MM-DD[ T]HH:MM[:SS[.f]]`, or a bare `YYYY-MM-DD` for midnight) as seconds since
/// 1970-01-01 UTC.
///
/// ```
/// assert_eq!(tns_calendar::parse_timestamp("1970-01-02"), Some(86_400.0));
/// assert_eq!(tns_calendar::parse_timestamp("1970-01-01 01:00"), Some(3_600.0));
/// assert_eq!(tns_calendar::parse_timestamp("12.5"), Some(12.5));
/// assert_eq!(tns_calendar::parse_timestamp("noon"), None);
/// ```
pub fn parse_timestamp(cell: &str) -> Option<f64> {
    use chrono::{DateTime, NaiveDate, NaiveDateTime};
    if let Ok(v) = cell.parse::<f64>()
        && v.is_finite()
    {
        return Some(v);
    }
    let secs = |dt: NaiveDateTime| dt.and_utc().timestamp_micros() as f64 * 1e-6;
    DateTime::parse_from_rfc3339(cell)
        .map(|d| d.timestamp_micros() as f64 * 1e-6)
        .ok()
        .or_else(|| {
            [
                "%Y-%m-%dT%H:%M:%S%.f",
                "%Y-%m-%d %H:%M:%S%.f",
                "%Y-%m-%dT%H:%M",
                "%Y-%m-%d %H:%M",
            ]
            .iter()
            .find_map(|fmt| NaiveDateTime::parse_from_str(cell, fmt).ok())
            .map(secs)
        })
        .or_else(|| {
            NaiveDate::parse_from_str(cell, "%Y-%m-%d")
                .ok()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .map(secs)
        })
}

/// A time given in JSON (a request, a `tns predict -i` file): seconds since 1970, or a string
/// [`parse_timestamp`] reads; `None` for anything else.
///
/// ```
/// assert_eq!(tns_calendar::json_time(&serde_json::json!(3600)), Some(3600.0));
/// assert_eq!(tns_calendar::json_time(&serde_json::json!("1970-01-01 01:00")), Some(3600.0));
/// assert_eq!(tns_calendar::json_time(&serde_json::json!(true)), None);
/// ```
pub fn json_time(value: &serde_json::Value) -> Option<f64> {
    match value {
        serde_json::Value::Number(n) => n.as_f64().filter(|s| s.is_finite()),
        serde_json::Value::String(s) => parse_timestamp(s),
        _ => None,
    }
}

/// Whether a time read by [`parse_timestamp`] is a date-time (seconds since 1970, after 10⁸ s, March
/// 1973) rather than a step count or seconds of a recording.
pub fn is_date_time(t: f64) -> bool {
    t.is_finite() && t > 1e8
}

/// A time for people: a date-time as UTC `YYYY-MM-DD HH:MM:SS`, anything else as the number.
pub fn format_time(t: f64) -> String {
    match chrono::DateTime::from_timestamp_micros((t * 1e6) as i64) {
        Some(d) if is_date_time(t) => d.format("%Y-%m-%d %H:%M:%S").to_string(),
        _ => t.to_string(),
    }
}

/// A [`Calendar`] ready to compute: its time zone looked up once, so that computing the
/// features of a timestamp parses nothing and allocates nothing.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedCalendar {
    features: Vec<CalendarFeature>,
    zone: Option<Tz>,
    step: f64,
}

impl ResolvedCalendar {
    /// Writes the features of `time` (seconds since 1970, UTC) into `out` (two per feature).
    pub fn values_at(&self, time: f64, out: &mut [f64]) -> Result<(), CalendarError> {
        let local = self.local_time(time)?;
        for (f, pair) in self.features.iter().zip(out.chunks_exact_mut(2)) {
            let angle = std::f64::consts::TAU * f.fraction(local);
            pair[0] = angle.sin();
            pair[1] = angle.cos();
        }
        Ok(())
    }

    /// The time of the row `rows` steps after `origin`.
    pub fn time_after(&self, origin: f64, rows: usize) -> f64 {
        origin + rows as f64 * self.step
    }

    /// The local date and time of a timestamp.
    pub fn local_time(&self, time: f64) -> Result<NaiveDateTime, CalendarError> {
        if !time.is_finite() {
            return Err(CalendarError::Time(time));
        }
        // Whole milliseconds: data files carry no finer times, and rounding keeps a time
        // built as `origin + k · step` from landing a hair before the hour it names.
        let millis = (time * 1000.0).round();
        if millis.abs() > 8.0e15 {
            return Err(CalendarError::Time(time));
        }
        let utc =
            DateTime::from_timestamp_millis(millis as i64).ok_or(CalendarError::Time(time))?;
        Ok(match self.zone {
            Some(tz) => utc.with_timezone(&tz).naive_local(),
            None => utc.naive_utc(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> f64 {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M")
            .unwrap()
            .and_utc()
            .timestamp() as f64
    }

    #[test]
    fn features_follow_local_time_across_a_dst_change() {
        let cal = Calendar::new(
            vec![CalendarFeature::Hour, CalendarFeature::DayOfWeek],
            Some("Europe/Paris"),
            3600.0,
        )
        .unwrap();
        // Paris moved from UTC+1 to UTC+2 at 2021-03-28 01:00 UTC: local 01:00, then 03:00.
        let cal = cal.resolve().unwrap();
        let hours: Vec<u32> = ["2021-03-28 00:00", "2021-03-28 01:00", "2021-03-28 02:00"]
            .iter()
            .map(|s| cal.local_time(utc(s)).unwrap().hour())
            .collect();
        assert_eq!(hours, [1, 3, 4]);
        let mut row = [0.0; 4];
        cal.values_at(utc("2021-03-28 01:00"), &mut row).unwrap();
        let angle = std::f64::consts::TAU * 3.0 / 24.0;
        assert!((row[0] - angle.sin()).abs() < 1e-12 && (row[1] - angle.cos()).abs() < 1e-12);
        // Sunday is day 6 of a Monday-first week.
        let dow = std::f64::consts::TAU * 6.0 / 7.0;
        assert!((row[2] - dow.sin()).abs() < 1e-12);
        // Without a zone, the time as written.
        let plain = Calendar::new(vec![CalendarFeature::Hour], None, 3600.0)
            .unwrap()
            .resolve()
            .unwrap();
        assert_eq!(plain.local_time(utc("2021-03-28 01:00")).unwrap().hour(), 1);
    }

    #[test]
    fn every_feature_is_a_unit_circle_point_with_the_right_period() {
        let all = Calendar::new(CalendarFeature::ALL.to_vec(), None, 900.0).unwrap();
        assert_eq!(all.width(), 10);
        let all = all.resolve().unwrap();
        let mut a = vec![0.0; 10];
        let mut b = vec![0.0; 10];
        all.values_at(utc("2024-12-31 23:45"), &mut a).unwrap();
        for pair in a.chunks_exact(2) {
            assert!((pair[0].powi(2) + pair[1].powi(2) - 1.0).abs() < 1e-12);
        }
        // One step later is a new day, month and year: minute, hour, month and day of year
        // wrap to angle 0 (sin 0, cos 1); 2025-01-01 is a Wednesday (day 2 of 7); 2024 is a
        // leap year, so day 365 of 366 came before.
        all.values_at(all.time_after(utc("2024-12-31 23:45"), 1), &mut b)
            .unwrap();
        for k in [0, 1, 3, 4] {
            let pair = &b[2 * k..2 * k + 2];
            assert!(
                pair[0].abs() < 1e-12 && (pair[1] - 1.0).abs() < 1e-12,
                "{b:?}"
            );
        }
        let wednesday = std::f64::consts::TAU * 2.0 / 7.0;
        assert!((b[4] - wednesday.sin()).abs() < 1e-12);
        let doy = std::f64::consts::TAU * 365.0 / 366.0;
        assert!((a[8] - doy.sin()).abs() < 1e-12);
    }

    #[test]
    fn bad_settings_are_clear_errors() {
        assert!(matches!(
            Calendar::parse_features("hour,week"),
            Err(CalendarError::UnknownFeature(_))
        ));
        assert_eq!(
            Calendar::parse_features(" hour,dow").unwrap(),
            [CalendarFeature::Hour, CalendarFeature::DayOfWeek]
        );
        let twice = vec![CalendarFeature::Hour, CalendarFeature::Hour];
        assert!(Calendar::new(twice, None, 1.0).is_err());
        let err = Calendar::new(vec![CalendarFeature::Hour], Some("Mars/Olympus"), 1.0)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("Mars/Olympus") && err.contains("IANA"),
            "{err}"
        );
        assert!(Calendar::new(vec![CalendarFeature::Hour], None, 0.0).is_err());
        let cal = Calendar::new(vec![CalendarFeature::Hour], None, 1.0).unwrap();
        let resolved = cal.resolve().unwrap();
        assert!(resolved.values_at(f64::NAN, &mut [0.0; 2]).is_err());
        assert!(resolved.values_at(1e300, &mut [0.0; 2]).is_err());
        let json = serde_json::to_string(&cal).unwrap();
        assert_eq!(serde_json::from_str::<Calendar>(&json).unwrap(), cal);
    }
}
