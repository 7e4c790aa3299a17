//! Sizes on the command line: bytes, or a number with a binary suffix.

/// Parses `50M`, `4G`, `1000000000`, `1.5G`, `2MiB`: suffixes K, M, G, T (also
/// KiB…TiB and lower case) are powers of 1024.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, suffix) = t.split_at(split);
    let shift = match suffix.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => {
            return Err(format!(
                "{s:?}: unknown size suffix {suffix:?} (use K, M, G or T)"
            ))
        }
    };
    if num.is_empty() {
        return Err(format!(
            "{s:?}: not a size (expected bytes, or a number with K, M, G or T)"
        ));
    }
    let bad = || format!("{s:?}: not a size (expected bytes, or a number with K, M, G or T)");
    let too_big = || format!("{s:?}: too large");
    match num.split_once('.') {
        None => num
            .parse::<u64>()
            .map_err(|_| bad())?
            .checked_mul(1u64 << shift)
            .ok_or_else(too_big),
        Some((whole, frac)) => {
            if frac.contains('.') || (whole.is_empty() && frac.is_empty()) {
                return Err(bad());
            }
            let w: u64 = if whole.is_empty() {
                0
            } else {
                whole.parse().map_err(|_| bad())?
            };
            let digits = frac.len().min(9);
            let f: u64 = if digits == 0 {
                0
            } else {
                frac[..digits].parse().map_err(|_| bad())?
            };
            let scale = 10u64.pow(digits as u32);
            let whole_bytes = w.checked_mul(1u64 << shift).ok_or_else(too_big)?;
            let frac_bytes = (u128::from(f) << shift) / u128::from(scale);
            if shift == 0 && f != 0 {
                return Err(format!("{s:?}: a size in bytes cannot have a fraction"));
            }
            whole_bytes
                .checked_add(frac_bytes as u64)
                .ok_or_else(too_big)
        }
    }
}

/// `52428800` as `50 MiB`, `1000000000` as `953.7 MiB`.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut v = bytes as f64;
    let mut unit = "B";
    for u in UNITS {
        if v < 1024.0 {
            break;
        }
        v /= 1024.0;
        unit = u;
    }
    if v.fract() == 0.0 {
        format!("{v:.0} {unit}")
    } else {
        format!("{v:.1} {unit}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("50M"), Ok(52428800));
        assert_eq!(parse_size("4G"), Ok(4 << 30));
        assert_eq!(parse_size("1000000000"), Ok(1000000000));
        assert_eq!(parse_size("2MiB"), Ok(2 << 20));
        assert_eq!(parse_size("1.5G"), Ok(3 << 29));
        assert_eq!(parse_size("1t"), Ok(1 << 40));
        assert!(parse_size("").is_err());
        assert!(parse_size("M").is_err());
        assert!(parse_size("12Q").is_err());
        assert!(parse_size("1.5").is_err());
        assert!(parse_size("99999999999999999999").is_err());
        assert!(parse_size("20000000T").is_err());
        assert!(parse_size("-1").is_err());
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human(52428800), "50 MiB");
        assert_eq!(human(1000000000), "953.7 MiB");
        assert_eq!(human(100), "100 B");
    }
}
