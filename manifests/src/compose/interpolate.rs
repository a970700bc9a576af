//! Compose's variable interpolation (`$VAR`, `${VAR}`, `${VAR:-d}`, `${VAR-d}`, `${VAR:?msg}`,
//! `${VAR?msg}`, `${VAR:+alt}`, `${VAR+alt}`, nested, `$$`), as compose-go's template package
//! reads it: a name is `[_A-Za-z][_A-Za-z0-9]*`; `$` followed by anything else is a literal `$`;
//! `${` without a valid name and a closing brace is an error.
//!
//! Parsing is separate from evaluation because a template is evaluated twice: at bundle time with
//! what is known there (pinned values, defaults) and at install time with the site's values.

/// What a `${NAME<op>...}` does when the variable is unset (or empty, with `:`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// `:-` / `-`: use the default.
    Default(Template),
    /// `:?` / `?`: refuse, with the author's message.
    Required(String),
    /// `:+` / `+`: the alternative when the variable is set.
    Alt(Template),
}

/// One piece of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// Literal text (`$$` already turned into `$`).
    Text(String),
    /// A variable reference.
    Var {
        /// The name.
        name: String,
        /// With `:` the operator also applies to an empty value.
        colon: bool,
        /// The operator, if any.
        op: Option<Op>,
    },
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Template(pub Vec<Piece>);

/// A variable's value as the evaluator sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// Set (possibly empty).
    Set(String),
    /// Not set.
    Unset,
    /// Not known yet (a site value, at bundle time).
    Unknown,
}

/// A `${NAME:?message}` whose variable has no value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingRequired {
    /// The variable.
    pub name: String,
    /// The author's message (may be empty).
    pub message: String,
}

/// How a template refers to a variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// The name.
    pub name: String,
    /// `${NAME:-x}`, `${NAME-x}`, `${NAME:+x}`, `${NAME+x}`: works without a value.
    pub has_fallback: bool,
    /// `${NAME:?msg}`: the author's message.
    pub required_message: Option<String>,
}

fn name_start(c: char) -> bool {
    c == '_' || c.is_ascii_alphabetic()
}

fn name_char(c: char) -> bool {
    c == '_' || c.is_ascii_alphanumeric()
}

/// Parse a template.
///
/// # Errors
/// An unterminated `${` or a braced reference without a valid name (`${}`, `${1}`, `${A B}`).
pub fn parse(s: &str) -> Result<Template, String> {
    let chars: Vec<char> = s.chars().collect();
    let (t, _) = parse_until(&chars, 0, false, s)?;
    Ok(t)
}

/// Parse from `i`; inside a braced operand (`nested`), stop at the unmatched `}`.
fn parse_until(c: &[char], mut i: usize, nested: bool, whole: &str) -> Result<(Template, usize), String> {
    let mut pieces = Vec::new();
    let mut text = String::new();
    // Plain braces inside an operand nest (`${X:-a {b} c}`), as compose-go counts them.
    let mut depth = 0usize;
    while i < c.len() {
        match c[i] {
            '}' if nested && depth == 0 => break,
            '{' if nested => {
                depth += 1;
                text.push('{');
                i += 1;
            }
            '}' if nested => {
                depth -= 1;
                text.push('}');
                i += 1;
            }
            '$' if c.get(i + 1) == Some(&'$') => {
                text.push('$');
                i += 2;
            }
            '$' if c.get(i + 1).is_some_and(|&n| name_start(n)) => {
                let start = i + 1;
                let mut j = start;
                while j < c.len() && name_char(c[j]) {
                    j += 1;
                }
                flush(&mut pieces, &mut text);
                pieces.push(Piece::Var { name: c[start..j].iter().collect(), colon: false, op: None });
                i = j;
            }
            '$' if c.get(i + 1) == Some(&'{') => {
                let start = i + 2;
                let mut j = start;
                while j < c.len() && name_char(c[j]) {
                    j += 1;
                }
                let name: String = c[start..j].iter().collect();
                if name.is_empty() || !name.starts_with(name_start) {
                    return Err(invalid(whole));
                }
                flush(&mut pieces, &mut text);
                match c.get(j) {
                    Some('}') => {
                        pieces.push(Piece::Var { name, colon: false, op: None });
                        i = j + 1;
                    }
                    Some(':' | '-' | '?' | '+') => {
                        let colon = c[j] == ':';
                        let k = if colon { j + 1 } else { j };
                        let kind = *c.get(k).ok_or_else(|| invalid(whole))?;
                        if !matches!(kind, '-' | '?' | '+') {
                            return Err(invalid(whole));
                        }
                        let (operand, end) = parse_until(c, k + 1, true, whole)?;
                        if c.get(end) != Some(&'}') {
                            return Err(invalid(whole));
                        }
                        let op = match kind {
                            '-' => Op::Default(operand),
                            '+' => Op::Alt(operand),
                            _ => Op::Required(c[k + 1..end].iter().collect()),
                        };
                        pieces.push(Piece::Var { name, colon, op: Some(op) });
                        i = end + 1;
                    }
                    _ => return Err(invalid(whole)),
                }
            }
            ch => {
                text.push(ch);
                i += 1;
            }
        }
    }
    flush(&mut pieces, &mut text);
    Ok((Template(pieces), i))
}

fn flush(pieces: &mut Vec<Piece>, text: &mut String) {
    if !text.is_empty() {
        pieces.push(Piece::Text(std::mem::take(text)));
    }
}

fn invalid(s: &str) -> String {
    format!("invalid interpolation in `{s}`: `${{` needs a name and a closing `}}` (write `$$` for a literal `$`)")
}

impl Template {
    /// Whether the template has no variable reference.
    #[must_use]
    pub fn is_literal(&self) -> bool {
        self.0.iter().all(|p| matches!(p, Piece::Text(_)))
    }

    /// Every reference, nested ones included, in order.
    #[must_use]
    pub fn references(&self) -> Vec<Reference> {
        let mut out = Vec::new();
        self.collect(&mut out, false);
        out
    }

    fn collect(&self, out: &mut Vec<Reference>, inside_fallback: bool) {
        for p in &self.0 {
            if let Piece::Var { name, op, .. } = p {
                let (has_fallback, required_message) = match op {
                    None => (false, None),
                    Some(Op::Default(_) | Op::Alt(_)) => (true, None),
                    Some(Op::Required(m)) => (false, Some(m.clone())),
                };
                out.push(Reference {
                    name: name.clone(),
                    has_fallback: has_fallback || inside_fallback,
                    required_message,
                });
                if let Some(Op::Default(t) | Op::Alt(t)) = op {
                    t.collect(out, true);
                }
            }
        }
    }

    /// Evaluate. `Ok(None)` when the result depends on a value that is [`Value::Unknown`].
    ///
    /// # Errors
    /// A `${NAME:?msg}` (or `?`) whose variable has no value.
    pub fn eval(&self, lookup: &dyn Fn(&str) -> Value) -> Result<Option<String>, MissingRequired> {
        let mut out = String::new();
        for p in &self.0 {
            match p {
                Piece::Text(t) => out.push_str(t),
                Piece::Var { name, colon, op } => {
                    let value = lookup(name);
                    // Whether the operator sees "no value": unset, or empty with `:`.
                    let absent = match &value {
                        Value::Set(v) => *colon && v.is_empty(),
                        Value::Unset => true,
                        Value::Unknown => false,
                    };
                    let piece = match (op, &value) {
                        // A site value may come, or not: the default is a fair probe, anything
                        // else cannot be decided before install.
                        (Some(Op::Default(d)), Value::Unknown) => d.eval(lookup)?,
                        (_, Value::Unknown) => None,
                        (None, Value::Set(v)) => Some(v.clone()),
                        (None, _) => Some(String::new()),
                        (Some(Op::Default(d)), _) if absent => d.eval(lookup)?,
                        (Some(Op::Required(m)), _) if absent => {
                            return Err(MissingRequired { name: name.clone(), message: m.clone() });
                        }
                        (Some(Op::Alt(a)), _) if !absent => a.eval(lookup)?,
                        (Some(Op::Alt(_)), _) => Some(String::new()),
                        (Some(_), Value::Set(v)) => Some(v.clone()),
                        (Some(_), Value::Unset) => Some(String::new()),
                    };
                    match piece {
                        Some(s) => out.push_str(&s),
                        None => return Ok(None),
                    }
                }
            }
        }
        Ok(Some(out))
    }

    /// Write the template back with some variables replaced by fixed text (bundle-time pinning);
    /// the other references stay as `${…}` for install time. `$` in text is escaped as `$$`.
    #[must_use]
    pub fn render_with(&self, pinned: &dyn Fn(&str) -> Option<Value>) -> String {
        let mut out = String::new();
        for p in &self.0 {
            match p {
                Piece::Text(t) => out.push_str(&t.replace('$', "$$")),
                Piece::Var { name, colon, op } => {
                    if let Some(v) = pinned(name) {
                        // Apply the operator to the pinned value now.
                        let t = Template(vec![p.clone()]);
                        let lookup = |n: &str| if n == name { v.clone() } else { Value::Unknown };
                        match t.eval(&lookup) {
                            Ok(Some(s)) => out.push_str(&s.replace('$', "$$")),
                            _ => out.push_str(&render_var(name, *colon, op.as_ref(), pinned)),
                        }
                    } else {
                        out.push_str(&render_var(name, *colon, op.as_ref(), pinned));
                    }
                }
            }
        }
        out
    }
}

fn render_var(name: &str, colon: bool, op: Option<&Op>, pinned: &dyn Fn(&str) -> Option<Value>) -> String {
    let c = if colon { ":" } else { "" };
    match op {
        None => format!("${{{name}}}"),
        Some(Op::Default(t)) => format!("${{{name}{c}-{}}}", t.render_with(pinned)),
        Some(Op::Alt(t)) => format!("${{{name}{c}+{}}}", t.render_with(pinned)),
        Some(Op::Required(m)) => format!("${{{name}{c}?{m}}}"),
    }
}

/// Evaluate a string with every variable known (install time).
///
/// # Errors
/// Invalid syntax or a missing required value, as text naming the variable.
pub fn substitute(s: &str, values: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let t = parse(s)?;
    let lookup = |n: &str| values(n).map_or(Value::Unset, Value::Set);
    match t.eval(&lookup) {
        Ok(Some(v)) => Ok(v),
        Ok(None) => Err(format!("`{s}` could not be evaluated")),
        Err(m) => Err(missing_message(&m)),
    }
}

/// The message for a `${NAME:?msg}` without a value.
#[must_use]
pub fn missing_message(m: &MissingRequired) -> String {
    if m.message.is_empty() {
        format!("variable {} is required", m.name)
    } else {
        format!("variable {} is required: {}", m.name, m.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn env() -> BTreeMap<&'static str, &'static str> {
        BTreeMap::from([("FOO", "first"), ("BAR", ""), ("TAG", "1.2")])
    }

    fn sub(s: &str) -> Result<String, String> {
        let e = env();
        substitute(s, &|n| e.get(n).map(|v| (*v).to_string()))
    }

    /// The examples of the compose specification's interpolation document, and compose-go's.
    #[test]
    fn compose_spec_examples() {
        assert_eq!(sub("$FOO").unwrap(), "first");
        assert_eq!(sub("${FOO}").unwrap(), "first");
        assert_eq!(sub("${FOO}bar").unwrap(), "firstbar");
        assert_eq!(sub("$FOO-bar").unwrap(), "first-bar");
        assert_eq!(sub("${UNSET:-default}").unwrap(), "default");
        assert_eq!(sub("${BAR:-default}").unwrap(), "default");
        assert_eq!(sub("${BAR-default}").unwrap(), "");
        assert_eq!(sub("${UNSET-default}").unwrap(), "default");
        assert_eq!(sub("${FOO:-default}").unwrap(), "first");
        assert_eq!(sub("${FOO:+alt}").unwrap(), "alt");
        assert_eq!(sub("${BAR:+alt}").unwrap(), "");
        assert_eq!(sub("${BAR+alt}").unwrap(), "alt");
        assert_eq!(sub("${UNSET+alt}").unwrap(), "");
        assert_eq!(sub("${UNSET:-${FOO}}").unwrap(), "first");
        assert_eq!(sub("${UNSET:-${ALSO:-deep}}").unwrap(), "deep");
        assert_eq!(sub("${UNSET:-a {b} c}").unwrap(), "a {b} c");
        assert_eq!(sub("$$FOO $${FOO}").unwrap(), "$FOO ${FOO}");
        assert_eq!(sub("5$ $1 $- ${FOO}$").unwrap(), "5$ $1 $- first$");
        assert_eq!(sub("${UNSET}").unwrap(), "");
        assert_eq!(sub("registry/app:${TAG:-latest}").unwrap(), "registry/app:1.2");
        let err = sub("${UNSET:?please set it}").unwrap_err();
        assert!(err.contains("UNSET") && err.contains("please set it"), "{err}");
        assert!(sub("${BAR:?x}").is_err());
        assert_eq!(sub("${BAR?x}").unwrap(), "");
        for bad in ["${", "${}", "${FOO", "${1A}", "${FOO BAR}", "${FOO:x}", "${FOO:-x"] {
            assert!(sub(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn references_and_unknowns() {
        let t = parse("${A}:${B:-x}:${C:?need C}:${D:-${E}}").unwrap();
        let r = t.references();
        let names: Vec<_> = r.iter().map(|r| (r.name.as_str(), r.has_fallback)).collect();
        assert_eq!(names, vec![("A", false), ("B", true), ("C", false), ("D", true), ("E", true)]);
        assert_eq!(r[2].required_message.as_deref(), Some("need C"));
        let unknown = |_: &str| Value::Unknown;
        assert_eq!(parse("${P:-8080}").unwrap().eval(&unknown).unwrap().as_deref(), Some("8080"));
        assert_eq!(parse("x${P}").unwrap().eval(&unknown).unwrap(), None);
    }

    #[test]
    fn pinning_keeps_site_references() {
        let t = parse("${REG}/app:${TAG:-1} ${SITE:-x} $$5").unwrap();
        let pinned = |n: &str| match n {
            "REG" => Some(Value::Set("r.example".to_string())),
            "TAG" => Some(Value::Unset),
            _ => None,
        };
        let out = t.render_with(&pinned);
        assert_eq!(out, "r.example/app:1 ${SITE:-x} $$5");
        assert_eq!(sub(&out.replace("${SITE:-x}", "")).unwrap(), "r.example/app:1  $5");
    }
}
