//! YAML as vendors write it: anchors, aliases and merge keys (`<<`) expanded by serde-saphyr,
//! within limits that real files pass (the largest seen: 142 aliases over 10 anchors) and
//! alias bombs do not.

use serde_json::Value;

/// Most alias events one file may use.
pub const MAX_ALIASES: usize = 10_000;
/// Most events aliases may replay in total (a billion-laughs file needs billions).
pub const MAX_REPLAYED_EVENTS: usize = 200_000;
/// Largest compose file read.
pub const MAX_FILE_BYTES: usize = 4 << 20;

/// Parse YAML into a JSON tree.
///
/// # Errors
/// Syntax errors (with line and column), alias limits, oversize input.
pub fn parse(text: &str) -> Result<Value, String> {
    if text.len() > MAX_FILE_BYTES {
        return Err(format!("the file is larger than {} MiB", MAX_FILE_BYTES >> 20));
    }
    let mut options = serde_saphyr::Options::default();
    if let Some(budget) = options.budget.as_mut() {
        budget.max_aliases = MAX_ALIASES;
        // Vendors reuse few anchors many times (Sentry: 142 aliases of 10 anchors); what stops
        // a bomb is the replay limit below, not the ratio.
        budget.enforce_alias_anchor_ratio = false;
    }
    options.alias_limits.max_total_replayed_events = MAX_REPLAYED_EVENTS;
    // Compose reads YAML 1.2: `restart: no` and `FOO: yes` are text, only true/false are booleans.
    options.strict_booleans = true;
    let v: Value = serde_saphyr::from_str_with_options(text, options).map_err(|e| e.to_string())?;
    Ok(if v.is_null() { Value::Object(serde_json::Map::new()) } else { v })
}

/// The line (1-based) where a dotted path (`services.api.ports[0]`) is written, found by
/// indentation; `None` when it cannot be found (e.g. a key that came in through a merge key).
#[must_use]
pub fn locate(text: &str, path: &str) -> Option<usize> {
    if text.is_empty() {
        return None;
    }
    let segments: Vec<&str> =
        path.split('.').map(|s| s.split('[').next().unwrap_or(s)).filter(|s| !s.is_empty()).collect();
    let lines: Vec<&str> = text.lines().collect();
    let mut start = 0usize;
    let mut parent_indent: Option<usize> = None;
    let mut found = None;
    for seg in segments {
        let mut hit = None;
        for (i, line) in lines.iter().enumerate().skip(start) {
            let trimmed = line.trim_start();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let indent = line.len() - trimmed.len();
            if let Some(p) = parent_indent
                && indent <= p
                && i > start
            {
                break;
            }
            let t = trimmed.trim_start_matches("- ");
            let key = t.trim_start_matches(['"', '\'']);
            if key.starts_with(seg) && key[seg.len()..].trim_start_matches(['"', '\'']).starts_with(':') {
                hit = Some((i, indent));
                break;
            }
        }
        match hit {
            Some((i, indent)) => {
                found = Some(i + 1);
                start = i + 1;
                parent_indent = Some(indent);
            }
            None => break,
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anchors_and_merge_keys() {
        let v =
            parse("x-base: &base\n  image: a\n  restart: always\nservices:\n  s:\n    <<: *base\n    restart: 'no'\n")
                .unwrap();
        assert_eq!(v["services"]["s"]["image"], "a");
        assert_eq!(v["services"]["s"]["restart"], "no");
    }

    #[test]
    fn yaml_1_1_booleans_stay_text() {
        let v = parse("restart: no\na: yes\nb: on\nc: true\n").unwrap();
        assert_eq!(v["restart"], "no");
        assert_eq!(v["a"], "yes");
        assert_eq!(v["b"], "on");
        assert_eq!(v["c"], true);
    }

    #[test]
    fn alias_bomb_is_refused() {
        let mut text = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        let names = ["b", "c", "d", "e", "f", "g", "h", "i"];
        let mut prev = "a";
        for n in names {
            text.push_str(&format!(
                "{n}: &{n} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"
            ));
            prev = n;
        }
        let started = std::time::Instant::now();
        assert!(parse(&text).is_err());
        // Not a timing assertion on the product: a guard that the test itself stays bounded.
        assert!(started.elapsed().as_secs() < 30);
    }

    #[test]
    fn locate_finds_nested_keys() {
        let text = "name: x\nservices:\n  db:\n    image: a\n  api:\n    image: b\n    ports:\n      - 80\n";
        assert_eq!(locate(text, "services.api.ports[0]"), Some(7));
        assert_eq!(locate(text, "services.api"), Some(5));
        assert_eq!(locate(text, "services.db.image"), Some(4));
    }
}
