//! Sizes on the command line (`1G`, `512M`, `4096`) and sizes in messages (`1.5 GiB`).
//!
//! Suffixes are binary and case-insensitive: `K`, `M`, `G`, `T`, `P`, `E`, optionally followed
//! by `i` and/or `B` (`1G`, `1GB`, `1GiB` all mean 2^30 bytes). A bare number is bytes.

/// Parses a size such as `4096`, `512M`, `1G` or `400GiB` into bytes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let trimmed = text.trim();
    let digits_len = trimmed.bytes().take_while(u8::is_ascii_digit).count();
    if digits_len == 0 {
        return Err(format!(
            "invalid size {text:?}: expected a number with an optional K/M/G/T/P/E suffix, e.g. 512M or 1G"
        ));
    }
    let (digits, suffix) = trimmed.split_at(digits_len);
    let number: u64 = digits
        .parse()
        .map_err(|_| format!("invalid size {text:?}: number too large"))?;
    let mut unit = suffix.trim_start().to_ascii_lowercase();
    if let Some(rest) = unit.strip_suffix('b') {
        unit = rest.to_string();
    }
    if let Some(rest) = unit.strip_suffix('i') {
        if rest.is_empty() {
            return Err(format!("invalid size {text:?}: unknown unit {suffix:?}"));
        }
        unit = rest.to_string();
    }
    let shift = match unit.as_str() {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        "p" => 50,
        "e" => 60,
        _ => {
            return Err(format!(
                "invalid size {text:?}: unknown unit {suffix:?} (use K, M, G, T, P or E)"
            ));
        }
    };
    number
        .checked_mul(1u64 << shift)
        .ok_or_else(|| format!("invalid size {text:?}: larger than 16 EiB"))
}

/// Formats bytes for people: `512 B`, `4.0 KiB`, `1.50 GiB`.
pub fn format_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if value >= 100.0 {
        format!("{value:.0} {}", UNITS[unit])
    } else if value >= 10.0 {
        format!("{value:.1} {}", UNITS[unit])
    } else {
        format!("{value:.2} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_suffixed_sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("400G"), Ok(400 << 30));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("1GB"), Ok(1 << 30));
        assert_eq!(parse_size("2T"), Ok(2 << 40));
        assert_eq!(parse_size("8K"), Ok(8192));
        assert_eq!(
            parse_size("16E"),
            Err("invalid size \"16E\": larger than 16 EiB".into())
        );
        assert_eq!(parse_size("15E"), Ok(15 << 60));
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "G",
            "1X",
            "1.5G",
            "-1",
            "1i",
            "1 GiBs",
            "99999999999999999999999",
        ] {
            assert!(parse_size(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn formats_sizes() {
        assert_eq!(format_size(0), "0 B");
        assert_eq!(format_size(1023), "1023 B");
        assert_eq!(format_size(4096), "4.00 KiB");
        assert_eq!(format_size(1 << 30), "1.00 GiB");
        assert_eq!(format_size(3 << 29), "1.50 GiB");
        assert_eq!(format_size(400 << 30), "400 GiB");
        assert_eq!(format_size(u64::MAX), "16.0 EiB");
    }
}
