//! Duration strings: `30s`, `15m`, `2h 30m`, `15 minutes`, `5 m`, `1.5h`; a bare number is seconds.

use std::time::Duration;

/// The longest duration accepted anywhere (about 31,700 years): longer ones are typos, and
/// adding them to a clock's reading could overflow it.
const MAX_SECS: f64 = 1e12;

/// Parses a human duration. A bare number (integer or decimal) means seconds.
pub fn parse(text: &str) -> Result<Duration, String> {
    let d = parse_any(text)?;
    if d.as_secs_f64() > MAX_SECS {
        return Err(format!("invalid duration '{text}': out of range"));
    }
    Ok(d)
}

/// A duration from a config file's value: a duration string, or a number of seconds.
pub fn from_toml(value: &toml::Value) -> Result<Duration, String> {
    match value {
        toml::Value::String(s) => parse(s),
        toml::Value::Integer(n) if *n < 0 => Err(format!("invalid duration {n}: negative")),
        toml::Value::Integer(n) => parse(&n.to_string()),
        toml::Value::Float(x) => parse(&x.to_string()),
        other => Err(format!(
            "must be a duration such as \"30s\" or \"2h 30m\", or a number of seconds, not {}",
            crate::backend::a_kind(other)
        )),
    }
}

fn parse_any(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err("empty duration".into());
    }
    if let Ok(secs) = t.parse::<f64>() {
        return from_secs(secs, text);
    }
    // humantime takes a lone "M" for months: "5M" meant as five minutes would make a lease
    // that outlives its holder by months.
    if t.split(|c: char| !c.is_alphabetic())
        .any(|unit| unit == "M")
    {
        return Err(format!(
            "invalid duration '{text}': 'M' is ambiguous; write 'm' or 'min' for minutes, \
             'months' for months"
        ));
    }
    // humantime wants "5m", not "5 m": glue a number to the unit that follows it.
    let glued = glue(t);
    if let Some(d) = fractional(&glued) {
        return Ok(d);
    }
    humantime::parse_duration(&glued).map_err(|e| format!("invalid duration '{text}': {e}"))
}

fn from_secs(secs: f64, text: &str) -> Result<Duration, String> {
    if !secs.is_finite() || !(0.0..=MAX_SECS).contains(&secs) {
        return Err(format!("invalid duration '{text}': out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Removes whitespace between a number and its unit, keeps it between parts: "2 h 30 m" -> "2h 30m".
fn glue(t: &str) -> String {
    let mut out = String::with_capacity(t.len());
    let mut chars = t.chars().peekable();
    while let Some(c) = chars.next() {
        out.push(c);
        if c.is_ascii_digit() {
            let mut spaces = 0;
            while chars.peek().is_some_and(|n| n.is_whitespace()) {
                chars.next();
                spaces += 1;
            }
            if spaces > 0 && !chars.peek().is_some_and(|n| n.is_alphabetic()) {
                out.push(' ');
            }
        }
    }
    out
}

/// "1.5h", "0.5 minutes": humantime has no fractions, so handle one fractional part here.
fn fractional(t: &str) -> Option<Duration> {
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (num, unit) = t.split_at(split);
    if !num.contains('.') {
        return None;
    }
    let n: f64 = num.parse().ok()?;
    let unit_len = humantime::parse_duration(&format!("1{}", unit.trim())).ok()?;
    let secs = n * unit_len.as_secs_f64();
    (secs.is_finite() && secs <= MAX_SECS).then(|| Duration::from_secs_f64(secs))
}

/// Formats a duration for people: `30s`, `1h 5m`, `250ms`.
pub fn format(d: Duration) -> String {
    // Whole milliseconds; drop sub-millisecond noise, and milliseconds past a minute. Below a
    // millisecond it is kept as it is: `0.5ms` is not `0s`.
    let d = if d >= Duration::from_secs(60) {
        Duration::from_secs(d.as_secs())
    } else if d >= Duration::from_millis(1) {
        Duration::from_millis(d.as_millis() as u64)
    } else {
        d
    };
    humantime::format_duration(d).to_string()
}

/// A clap value parser for duration flags.
pub fn clap_parser(text: &str) -> Result<Duration, String> {
    parse(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    #[test]
    fn accepted_forms() {
        assert_eq!(parse("30s").unwrap(), s(30));
        assert_eq!(parse("15m").unwrap(), s(900));
        assert_eq!(parse("2h 30m").unwrap(), s(9000));
        assert_eq!(parse("15 minutes").unwrap(), s(900));
        assert_eq!(parse("5 m").unwrap(), s(300));
        assert_eq!(parse("2 h 30 m").unwrap(), s(9000));
        assert_eq!(parse("45").unwrap(), s(45));
        assert_eq!(parse(" 45 ").unwrap(), s(45));
        assert_eq!(parse("0.5").unwrap(), Duration::from_millis(500));
        assert_eq!(parse("1.5h").unwrap(), s(5400));
        assert_eq!(parse("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse("1 day").unwrap(), s(86400));
    }

    #[test]
    fn rejected_forms() {
        for bad in [
            "", " ", "5x", "abc", "-5", "h", "1e400", "NaN", "inf", "5 m x",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn a_lone_capital_m_is_refused_not_taken_for_months() {
        for bad in ["5M", "5 M", "1h30M", "1h 30 M"] {
            let e = parse(bad).unwrap_err();
            assert!(
                e.contains("ambiguous") && e.contains("minutes"),
                "{bad:?}: {e}"
            );
        }
        assert_eq!(parse("2 months").unwrap(), parse("60.88 days").unwrap());
        assert_eq!(parse("5m").unwrap(), s(300));
        assert_eq!(parse("5 min").unwrap(), s(300));
    }

    #[test]
    fn formats() {
        assert_eq!(format(s(30)), "30s");
        assert_eq!(format(s(3900)), "1h 5m");
        assert_eq!(format(Duration::from_millis(250)), "250ms");
        assert_eq!(format(Duration::from_millis(1500)), "1s 500ms");
        assert_eq!(format(Duration::from_millis(61_500)), "1m 1s");
        assert_eq!(format(Duration::from_micros(500)), "500us");
        assert_eq!(format(Duration::from_nanos(1)), "1ns");
        assert_eq!(format(Duration::ZERO), "0s");
        assert_eq!(format(Duration::from_micros(1500)), "1ms");
    }
}
