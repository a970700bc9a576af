//! Operator values for the bundle's `x-bundle.variables`: from `--values FILE` (NAME=value lines)
//! and the environment, merged over the values saved by the last apply and the defaults.
//! Secrets are never printed: [`Values::redacted`] is what logs and reports see.

use std::collections::BTreeMap;
use std::path::Path;

use manifests::Manifest;

use crate::error::InstallError;

/// Parse `NAME=value` lines (`#` comments, blank lines, optional surrounding quotes).
///
/// # Errors
/// A line without `=`.
pub fn parse_env(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let (k, v) = line.split_once('=').ok_or_else(|| format!("line {}: expected NAME=value", n + 1))?;
        let v = v.trim();
        let v = v
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
            .unwrap_or(v);
        out.insert(k.trim().to_string(), v.to_string());
    }
    Ok(out)
}

/// Resolve every declared variable: environment > --values file > saved > default.
///
/// # Errors
/// Unreadable values file, or variables without a value.
pub fn resolve(
    manifest: &Manifest,
    values_file: Option<&Path>,
    saved: &BTreeMap<String, String>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<BTreeMap<String, String>, InstallError> {
    let from_file = match values_file {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .map_err(|e| InstallError::Values { path: p.to_path_buf(), message: e.to_string() })?;
            parse_env(&text).map_err(|message| InstallError::Values { path: p.to_path_buf(), message })?
        }
        None => BTreeMap::new(),
    };
    let mut out = BTreeMap::new();
    let mut missing = Vec::new();
    for (name, def) in &manifest.variables {
        let value = env(name)
            .or_else(|| from_file.get(name).cloned())
            .or_else(|| saved.get(name).cloned())
            .or_else(|| def.default.clone());
        match value {
            Some(v) => {
                out.insert(name.clone(), v);
            }
            // Every reference has a compose default: the stack works without a value.
            None if def.optional => {}
            None => missing.push(match &def.description {
                Some(d) => format!("{name} ({d})"),
                None => name.clone(),
            }),
        }
    }
    if !missing.is_empty() {
        return Err(InstallError::MissingValues {
            names: missing.join(", "),
            what: "the stack needs these site values and has no default for them".into(),
        });
    }
    Ok(out)
}

/// Values with secrets replaced by `***`, for reports.
#[must_use]
pub fn redacted(manifest: &Manifest, values: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    values
        .iter()
        .map(|(k, v)| {
            let secret = manifest.variables.get(k).is_some_and(|d| d.secret);
            (k.clone(), if secret { "***".into() } else { v.clone() })
        })
        .collect()
}
