//! Command-line flags the way Go's `flag` package reads them (Diego's binaries are Go
//! programs, and the original `ltc` writes their arguments for that package), pure:
//! `-name value`, `-name=value`, `--name` likewise; a boolean flag takes no separate
//! value (`-name` or `-name=false`); parsing stops at the first argument that is not
//! a flag, or after `--`.

/// Whether a flag takes a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Bool,
    Value,
}

/// Why the arguments were refused (Go's wording; the programs exit 2 on these).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlagError {
    #[error("flag provided but not defined: -{0}")]
    Undefined(String),
    #[error("flag needs an argument: -{0}")]
    MissingValue(String),
    #[error("invalid boolean value {value:?} for -{flag}")]
    BadBool { flag: String, value: String },
    #[error("invalid value {value:?} for flag -{flag}: {reason}")]
    BadValue {
        flag: String,
        value: String,
        reason: String,
    },
    #[error("bad flag syntax: {0}")]
    Syntax(String),
    /// `-h`, `-help` (when the program defines no such flag): usage, exit 0.
    #[error("help requested")]
    Help,
}

/// The flags given, in order (booleans as "true"/"false"), and the arguments left.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Parsed {
    pub flags: Vec<(String, String)>,
    pub rest: Vec<String>,
}

impl Parsed {
    /// The last value given for `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.flags
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Go's `strconv.ParseBool`.
pub fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// Reads `args` (without the program name) against the flags `defined`.
pub fn parse(defined: &[(&str, Kind)], args: &[String]) -> Result<Parsed, FlagError> {
    let mut out = Parsed::default();
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        if arg.len() < 2 || !arg.starts_with('-') {
            break;
        }
        if arg == "--" {
            i += 1;
            break;
        }
        let body = arg
            .strip_prefix("--")
            .unwrap_or_else(|| &arg[1..])
            .to_string();
        if body.is_empty() || body.starts_with('-') || body.starts_with('=') {
            return Err(FlagError::Syntax(arg.clone()));
        }
        let (name, inline) = match body.split_once('=') {
            Some((n, v)) => (n.to_string(), Some(v.to_string())),
            None => (body, None),
        };
        i += 1;
        let Some((_, kind)) = defined.iter().find(|(n, _)| *n == name) else {
            if name == "h" || name == "help" {
                return Err(FlagError::Help);
            }
            return Err(FlagError::Undefined(name));
        };
        let value = match (kind, inline) {
            (Kind::Bool, None) => "true".to_string(),
            (Kind::Bool, Some(v)) => match parse_bool(&v) {
                Some(b) => b.to_string(),
                None => {
                    return Err(FlagError::BadBool {
                        flag: name,
                        value: v,
                    })
                }
            },
            (Kind::Value, Some(v)) => v,
            (Kind::Value, None) => match args.get(i) {
                Some(v) => {
                    i += 1;
                    v.clone()
                }
                None => return Err(FlagError::MissingValue(name)),
            },
        };
        out.flags.push((name, value));
    }
    out.rest = args[i..].to_vec();
    Ok(out)
}

/// Go's `time.ParseDuration`: a sequence of decimal numbers with units (`ns`, `us`,
/// `µs`, `ms`, `s`, `m`, `h`), e.g. `1s`, `500ms`, `1m0s`, `1.5h`; `0` alone. A
/// negative duration is refused here (no timeout is ever negative).
pub fn parse_duration(s: &str) -> Option<std::time::Duration> {
    if s == "0" || s == "+0" {
        return Some(std::time::Duration::ZERO);
    }
    let mut rest = s.strip_prefix('+').unwrap_or(s);
    if rest.is_empty() {
        return None;
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, after) = rest.split_at(num_len);
        if num.is_empty() || num == "." || num.matches('.').count() > 1 {
            return None;
        }
        let value: f64 = num.parse().ok()?;
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_len);
        let nanos = match unit {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        total += value * nanos;
        rest = next;
    }
    if !total.is_finite() || total > u64::MAX as f64 {
        return None;
    }
    Some(std::time::Duration::from_nanos(total as u64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const DEFS: &[(&str, Kind)] = &[
        ("port", Kind::Value),
        ("uri", Kind::Value),
        ("v", Kind::Bool),
    ];

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn go_flag_syntax() {
        let p = parse(
            DEFS,
            &args(&["-port", "8080", "--uri=/h", "-v", "x", "-port=1"]),
        )
        .unwrap();
        assert_eq!(p.get("port"), Some("8080"));
        assert_eq!(p.get("uri"), Some("/h"));
        assert_eq!(p.get("v"), Some("true"));
        assert_eq!(
            p.rest,
            ["x", "-port=1"],
            "parsing stops at the first non-flag"
        );
        let p = parse(
            DEFS,
            &args(&["--port", "1", "-port=2", "-v=false", "--", "-uri"]),
        )
        .unwrap();
        assert_eq!(p.get("port"), Some("2"), "the last one wins");
        assert_eq!(p.get("v"), Some("false"));
        assert_eq!(p.rest, ["-uri"]);
        assert_eq!(parse(DEFS, &args(&["-uri="])).unwrap().get("uri"), Some(""));
        assert_eq!(parse(DEFS, &args(&["-"])).unwrap().rest, ["-"]);
    }

    #[test]
    fn refusals() {
        assert_eq!(
            parse(DEFS, &args(&["-nope"])),
            Err(FlagError::Undefined("nope".into()))
        );
        assert_eq!(
            parse(DEFS, &args(&["-port"])),
            Err(FlagError::MissingValue("port".into()))
        );
        assert!(matches!(
            parse(DEFS, &args(&["-v=maybe"])),
            Err(FlagError::BadBool { .. })
        ));
        assert!(matches!(
            parse(DEFS, &args(&["---port=1"])),
            Err(FlagError::Syntax(_))
        ));
        assert!(matches!(
            parse(DEFS, &args(&["-=1"])),
            Err(FlagError::Syntax(_))
        ));
        assert_eq!(parse(DEFS, &args(&["-h"])), Err(FlagError::Help));
        assert_eq!(parse(DEFS, &args(&["--help"])), Err(FlagError::Help));
        assert_eq!(
            FlagError::Undefined("x".into()).to_string(),
            "flag provided but not defined: -x"
        );
    }

    #[test]
    fn go_durations() {
        let ms = Duration::from_millis;
        assert_eq!(parse_duration("1s"), Some(ms(1000)));
        assert_eq!(parse_duration("500ms"), Some(ms(500)));
        assert_eq!(parse_duration("1m0s"), Some(ms(60_000)));
        assert_eq!(parse_duration("1.5s"), Some(ms(1500)));
        assert_eq!(
            parse_duration("2h45m"),
            Some(ms((2 * 3600 + 45 * 60) * 1000))
        );
        assert_eq!(parse_duration("10us"), Some(Duration::from_micros(10)));
        assert_eq!(parse_duration("0"), Some(Duration::ZERO));
        for bad in ["", "1", "s", "1x", "-1s", "1..2s", "."] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }
}
