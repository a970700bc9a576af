//! Reading the compose tree: every scalar goes through interpolation, every problem is collected
//! (never the first one only) with its path, line and a hint.

use std::collections::BTreeMap;

use serde_json::Value as Json;

use super::Problem;
use super::interpolate::{self, Value};

/// What one read of the tree knows about variables, and where problems go.
pub(crate) struct Ctx<'a> {
    lookup: &'a dyn Fn(&str) -> Value,
    file: &'a str,
    text: &'a str,
    pub problems: Vec<Problem>,
    /// Site variables a field's template referenced, for the message when its value is bad.
    last_refs: Vec<String>,
}

impl<'a> Ctx<'a> {
    pub fn new(lookup: &'a dyn Fn(&str) -> Value, file: &'a str, text: &'a str) -> Self {
        Ctx { lookup, file, text, problems: Vec::new(), last_refs: Vec::new() }
    }

    /// Record a problem at `path`.
    pub fn problem(&mut self, path: &str, message: impl Into<String>, hint: Option<&str>) {
        let mut message = message.into();
        if !self.last_refs.is_empty() {
            message.push_str(&format!(" (the value comes from site variable {})", self.last_refs.join(", ")));
        }
        self.problems.push(Problem {
            file: self.file.to_string(),
            line: super::yaml::locate(self.text, path),
            path: path.to_string(),
            message,
            hint: hint.map(str::to_string),
        });
    }

    /// A problem that is about the structure, not a value (no site-variable note).
    pub fn structural(&mut self, path: &str, message: impl Into<String>, hint: Option<&str>) {
        self.last_refs.clear();
        self.problem(path, message, hint);
    }

    /// Interpolate a string. `None`: not decidable yet (a site value), or refused (recorded).
    pub fn interp(&mut self, raw: &str, path: &str) -> Option<String> {
        self.last_refs.clear();
        let t = match interpolate::parse(raw) {
            Ok(t) => t,
            Err(m) => {
                self.problem(path, m, Some("write `$$` for a literal `$`"));
                return None;
            }
        };
        let refs: Vec<String> = t.references().into_iter().map(|r| r.name).collect();
        match t.eval(self.lookup) {
            Ok(v) => {
                self.last_refs = refs;
                v
            }
            Err(m) => {
                self.problem(path, interpolate::missing_message(&m), Some("give the variable a value"));
                None
            }
        }
    }

    /// A scalar as text (numbers and booleans as YAML wrote them), interpolated.
    pub fn str(&mut self, v: &Json, path: &str) -> Option<String> {
        match v {
            Json::String(s) => self.interp(s, path),
            Json::Number(n) => {
                self.last_refs.clear();
                Some(n.to_string())
            }
            Json::Bool(b) => {
                self.last_refs.clear();
                Some(b.to_string())
            }
            Json::Null => None,
            _ => {
                self.structural(path, "expected a single value, found a list or map", None);
                None
            }
        }
    }

    /// `"a"` or `["a", "b"]` (each item interpolated; undecidable items are left out).
    pub fn list(&mut self, v: &Json, path: &str) -> Vec<String> {
        match v {
            Json::Array(items) => {
                items.iter().enumerate().filter_map(|(i, item)| self.str(item, &format!("{path}[{i}]"))).collect()
            }
            Json::Null => vec![],
            other => self.str(other, path).into_iter().collect(),
        }
    }

    /// `{K: V}` or `["K=V"]`. A value of `None` is `K:` / `- K` (no value given).
    pub fn map_or_list(&mut self, v: &Json, path: &str, sep: char) -> BTreeMap<String, Option<String>> {
        let mut out = BTreeMap::new();
        match v {
            Json::Object(m) => {
                for (k, v) in m {
                    let value =
                        if v.is_null() { None } else { Some(self.str(v, &format!("{path}.{k}")).unwrap_or_default()) };
                    out.insert(k.clone(), value);
                }
            }
            Json::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    let p = format!("{path}[{i}]");
                    let Some(text) = self.str(item, &p) else { continue };
                    match text.split_once(sep) {
                        Some((k, v)) => out.insert(k.trim().to_string(), Some(v.to_string())),
                        None => out.insert(text.trim().to_string(), None),
                    };
                }
            }
            Json::Null => {}
            _ => self.structural(path, "expected a map or a list of `KEY=value`", None),
        }
        out
    }

    /// A boolean (`true`/`false`, also as interpolated text).
    pub fn bool(&mut self, v: &Json, path: &str) -> Option<bool> {
        if let Json::Bool(b) = v {
            return Some(*b);
        }
        let s = self.str(v, path)?;
        match s.to_ascii_lowercase().as_str() {
            "true" | "yes" | "1" => Some(true),
            "false" | "no" | "0" | "" => Some(false),
            _ => {
                self.problem(path, format!("`{s}` is not a boolean (true or false)"), None);
                None
            }
        }
    }

    /// An integer.
    pub fn int(&mut self, v: &Json, path: &str) -> Option<i64> {
        let s = self.str(v, path)?;
        match s.trim().parse::<i64>() {
            Ok(n) => Some(n),
            Err(_) => {
                self.problem(path, format!("`{s}` is not a whole number"), None);
                None
            }
        }
    }

    /// A value parsed by `parse`; its error message is recorded.
    pub fn parsed<T>(&mut self, v: &Json, path: &str, parse: impl Fn(&str) -> Result<T, String>) -> Option<T> {
        let s = self.str(v, path)?;
        match parse(&s) {
            Ok(t) => Some(t),
            Err(m) => {
                self.problem(path, m, None);
                None
            }
        }
    }
}

/// Parse a compose duration (`1m30s`, `500ms`, `2h`, `1.5s`, `10` = seconds) into milliseconds.
///
/// # Errors
/// Anything else.
pub fn parse_duration(s: &str) -> Result<u64, String> {
    let bad = || format!("`{s}` is not a duration (examples: 30s, 1m30s, 500ms)");
    let s = s.trim();
    if s.is_empty() {
        return Err(bad());
    }
    if let Ok(secs) = s.parse::<u64>() {
        return secs.checked_mul(1000).ok_or_else(bad);
    }
    let mut total: f64 = 0.0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(|b| b.is_ascii_digit() || *b == b'.').count();
        if digits == 0 {
            return Err(bad());
        }
        let n: f64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let factor = match &rest[..unit_len] {
            "us" => 0.001,
            "ms" => 1.0,
            "s" => 1000.0,
            "m" => 60_000.0,
            "h" => 3_600_000.0,
            _ => return Err(bad()),
        };
        total += n * factor;
        rest = &rest[unit_len..];
    }
    if !total.is_finite() || total > 1e15 {
        return Err(bad());
    }
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "checked finite and bounded")]
    Ok(total as u64)
}

/// Parse a byte size (`512M`, `1g`, `1024`, `64kb`, `1.5g`).
///
/// # Errors
/// Anything else.
pub fn parse_bytes(s: &str) -> Result<i64, String> {
    let bad = || format!("`{s}` is not a size (examples: 512M, 1G)");
    let lower = s.trim().to_ascii_lowercase();
    let lower = lower.strip_suffix('b').unwrap_or(&lower);
    let digits = lower.bytes().take_while(|b| b.is_ascii_digit() || *b == b'.').count();
    let n: f64 = lower[..digits].parse().map_err(|_| bad())?;
    let factor: f64 = match &lower[digits..] {
        "" => 1.0,
        "k" => 1024.0,
        "m" => 1024.0 * 1024.0,
        "g" => 1024.0 * 1024.0 * 1024.0,
        "t" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return Err(bad()),
    };
    let v = n * factor;
    if !v.is_finite() || v > 9e18 {
        return Err(bad());
    }
    #[allow(clippy::cast_possible_truncation, reason = "checked bounded")]
    Ok(v as i64)
}

/// CPUs (`0.5`, `2`) in units of 1e-9.
///
/// # Errors
/// Not a positive number.
pub fn parse_cpus(s: &str) -> Result<i64, String> {
    let n: f64 = s.trim().parse().map_err(|_| format!("`{s}` is not a number of CPUs"))?;
    if !(n > 0.0 && n < 1e6) {
        return Err(format!("`{s}` must be a positive number of CPUs"));
    }
    #[allow(clippy::cast_possible_truncation, reason = "bounded above")]
    Ok((n * 1e9) as i64)
}
