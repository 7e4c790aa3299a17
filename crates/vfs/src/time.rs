//! Calendar arithmetic for the times filesystems record: days since
//! 1970-01-01 to and from a date of the proleptic Gregorian calendar, and
//! Unix seconds as text.
//!
//! The day counts follow Howard Hinnant's `days_from_civil` and
//! `civil_from_days` ("chrono-Compatible Low-Level Date Algorithms"), which
//! count in 400-year eras so that they hold for any year, before 1970 too.

/// Days in a 400-year era of the Gregorian calendar.
const DAYS_PER_ERA: i64 = 146_097;
/// Days from 0000-03-01 (the start of the era the algorithms count in) to
/// 1970-01-01.
const EPOCH_SHIFT: i64 = 719_468;

/// Days from 1970-01-01 to year `y`, month `m` (1–12), day `d` (1–31) of the
/// proleptic Gregorian calendar; negative before 1970. Values out of range
/// are not checked and give a day count nonetheless.
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    // Years start in March, so that the leap day is the last of a year.
    let (y, m) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * DAYS_PER_ERA + doe - EPOCH_SHIFT
}

/// The date (year, month 1–12, day 1–31) of the proleptic Gregorian calendar
/// that is `days` days after 1970-01-01 (before it when negative).
pub fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + EPOCH_SHIFT;
    let era = z.div_euclid(DAYS_PER_ERA);
    let doe = z - era * DAYS_PER_ERA;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Seconds since the Unix epoch as date and time of day: (year, month, day)
/// and (hour, minute, second), in UTC.
pub fn civil_from_unix(secs: i64) -> ((i64, i64, i64), (i64, i64, i64)) {
    let rem = secs.rem_euclid(86_400);
    (
        civil_from_days(secs.div_euclid(86_400)),
        (rem / 3600, rem / 60 % 60, rem % 60),
    )
}

/// Seconds since the Unix epoch as `YYYY-MM-DD HH:MM:SS` (UTC).
pub fn format_utc(secs: i64) -> String {
    let ((y, m, d), (h, mi, s)) = civil_from_unix(secs);
    format!("{y:04}-{m:02}-{d:02} {h:02}:{mi:02}:{s:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Dates and their day counts from 1970-01-01, worked out with GNU
    /// `date -u -d DATE +%s` divided by 86,400.
    const KNOWN: &[((i64, i64, i64), i64)] = &[
        ((1970, 1, 1), 0),
        ((1969, 12, 31), -1),
        ((1900, 3, 1), -25_508),
        ((1600, 2, 29), -135_081),
        ((1980, 1, 1), 3652),
        ((2000, 2, 29), 11_016),
        ((2000, 3, 1), 11_017),
        ((2024, 2, 29), 19_782),
        ((2100, 2, 28), 47_540),
        ((2100, 3, 1), 47_541),
        ((2107, 12, 31), 50_402),
        ((2400, 2, 29), 157_113),
    ];

    #[test]
    fn known_dates() {
        for &((y, m, d), days) in KNOWN {
            assert_eq!(days_from_civil(y, m, d), days, "{y}-{m}-{d}");
            assert_eq!(civil_from_days(days), (y, m, d), "{days}");
        }
    }

    #[test]
    fn every_day_round_trips() {
        // 1600-01-01 to 2500-01-01, leap days and century years included.
        let mut last = (1599, 12, 31);
        for days in -135_140..=193_579 {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
            assert!((1..=12).contains(&m) && (1..=31).contains(&d));
            // Each day follows the one before it.
            assert!((y, m, d) > last, "{last:?} then {:?}", (y, m, d));
            last = (y, m, d);
        }
    }

    #[test]
    fn text() {
        assert_eq!(format_utc(0), "1970-01-01 00:00:00");
        assert_eq!(format_utc(-1), "1969-12-31 23:59:59");
        assert_eq!(format_utc(1_709_209_804), "2024-02-29 12:30:04");
        assert_eq!(format_utc(981_173_106), "2001-02-03 04:05:06");
        assert_eq!(format_utc(4_107_542_399), "2100-02-28 23:59:59");
        assert_eq!(format_utc(4_107_542_400), "2100-03-01 00:00:00");
        assert_eq!(format_utc(-2_208_988_800), "1900-01-01 00:00:00");
    }
}
