//! Volume names and sizes, shared by the BBS, the cell and `ltc`.

use crate::models::volume::State;

/// XFS's smallest filesystem: the `local` driver's smallest volume.
pub const MIN_SIZE: u64 = 300 << 20;

/// Volume and snapshot names: safe as a file name, a mount point and a blob name.
pub fn check_name(kind: &str, name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        && !name.starts_with(['-', '_']);
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{kind} name {name:?}: use up to 63 lowercase letters, digits, '-' and '_', starting with a letter or digit"
        ))
    }
}

/// What a standby copy's name ends with on its cell: `NAME.standby` (a name no volume
/// can have, `.` being refused in volume names).
pub const STANDBY_SUFFIX: &str = ".standby";

/// The name of volume `volume`'s standby copy on the cell that keeps it.
pub fn standby_name(volume: &str) -> String {
    format!("{volume}{STANDBY_SUFFIX}")
}

/// The volume whose standby copy `copy` is, if it names one.
pub fn standby_of(copy: &str) -> Option<&str> {
    copy.strip_suffix(STANDBY_SUFFIX)
        .filter(|v| check_name("volume", v).is_ok())
}

/// A name a cell keeps a copy under: a volume's, or its standby copy's.
pub fn check_copy_name(kind: &str, name: &str) -> Result<(), String> {
    match standby_of(name) {
        Some(_) => Ok(()),
        None => check_name(kind, name),
    }
}

/// Parses sizes like `10G`, `512M`, `1T`, `4096` (bytes).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m: u64 = match c.to_ascii_uppercase() {
                'K' => 1 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                'T' => 1 << 40,
                _ => return Err(format!("size {s:?}: unknown unit {c:?}; use K, M, G or T")),
            };
            (&s[..i], m)
        }
        _ => (s, 1),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("size {s:?} is not a number, e.g. 10G"))?;
    n.checked_mul(mult)
        .ok_or_else(|| format!("size {s:?} is too large"))
}

/// `10G`, `1.5G`, `300M`, `12K`, `100B`: sizes as people read them.
pub fn format_size(bytes: u64) -> String {
    const UNITS: [(u64, &str); 4] = [
        (1 << 40, "T"),
        (1 << 30, "G"),
        (1 << 20, "M"),
        (1 << 10, "K"),
    ];
    for (u, name) in UNITS {
        if bytes >= u {
            let v = bytes as f64 / u as f64;
            return if bytes.is_multiple_of(u) || v >= 100.0 {
                format!("{:.0}{name}", v)
            } else {
                format!("{:.1}{name}", v)
            };
        }
    }
    format!("{bytes}B")
}

/// The state's name in the JSON API.
pub fn state_name(s: State) -> &'static str {
    match s {
        State::Invalid => "INVALID",
        State::Pending => "PENDING",
        State::Ready => "READY",
        State::Removing => "REMOVING",
        State::Failed => "FAILED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_names() {
        assert_eq!(parse_size("10G").unwrap(), 10 << 30);
        assert_eq!(parse_size("512m").unwrap(), 512 << 20);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("10X").unwrap_err().contains("unit"));
        assert!(parse_size("G").is_err());
        assert!(parse_size("99999999999T")
            .unwrap_err()
            .contains("too large"));
        assert_eq!(format_size(10 << 30), "10G");
        assert_eq!(format_size(1536 << 20), "1.5G");
        assert_eq!(format_size(300 << 20), "300M");
        assert_eq!(format_size(12), "12B");
        check_name("volume", "pg-data_1").unwrap();
        assert_eq!(standby_name("pg"), "pg.standby");
        assert_eq!(standby_of("pg.standby"), Some("pg"));
        for not in ["pg", ".standby", "a.b.standby", "../x.standby"] {
            assert_eq!(standby_of(not), None, "{not}");
        }
        check_copy_name("volume", "pg.standby").unwrap();
        assert!(check_copy_name("volume", "pg.other").is_err());
        assert!(check_name("volume", "pg.standby").is_err());
        for bad in ["../x", "Big", "", "-a", "a.b", &"x".repeat(64)] {
            assert!(check_name("volume", bad).is_err(), "{bad}");
        }
    }
}
