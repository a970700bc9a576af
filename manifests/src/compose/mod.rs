//! The vendor's compose file, as compose reads it (ADR 0004).
//!
//! Two phases share one reader of the compose tree ([`normalize`]):
//! - **bundle time** ([`prepare::load`]): YAML with anchors and merge keys, `extends`, profiles,
//!   `x-*` dropped; `image`, `platform`, `name` and `x-bundle.pin` variables are resolved from the
//!   bundler's environment and `.env` and pinned; everything else is checked with the defaults
//!   known then, and every problem is reported in one run;
//! - **install time** ([`resolve`]): the same tree, with the site's values, becomes the typed
//!   [`ServiceDef`]s the installer creates containers from; a bad value is refused before any
//!   change, naming the variable and the field.

pub(crate) mod ctx;
pub mod interpolate;
pub mod prepare;
mod service;
pub mod yaml;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Component, Path};

use serde_json::{Map, Value as Json};

use ctx::Ctx;
pub use ctx::{parse_bytes, parse_duration};
pub use prepare::{LoadOptions, Prepared, load};

use crate::manifest::{Manifest, NetworkDef, ServiceDef, VolumeDef};

/// One problem in a compose file: where, what, and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file (the compose file; `bundle.json` at install time).
    pub file: String,
    /// 1-based line, when found.
    pub line: Option<usize>,
    /// Dotted path of the key (`services.api.ports[0]`).
    pub path: String,
    /// What is wrong.
    pub message: String,
    /// What to do.
    pub hint: Option<String>,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(l) => write!(f, "{}:{l}: ", self.file)?,
            None => write!(f, "{}: ", self.file)?,
        }
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        write!(f, "{}", self.message)?;
        if let Some(h) = &self.hint {
            write!(f, "\n    hint: {h}")?;
        }
        Ok(())
    }
}

/// Every problem found in one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problems(pub Vec<Problem>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        writeln!(f, "{n} problem{} in the compose file:", if n == 1 { "" } else { "s" })?;
        for p in &self.0 {
            writeln!(f, "  {p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}

/// The stack, typed, with every value filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    /// Services.
    pub services: BTreeMap<String, ServiceDef>,
    /// Named volumes.
    pub volumes: Vec<VolumeDef>,
    /// Networks (the implicit `default` only when a service is on it).
    pub networks: Vec<NetworkDef>,
}

impl Resolved {
    /// The engine's name of a volume key.
    #[must_use]
    pub fn volume_name(&self, key: &str) -> Option<&str> {
        self.volumes.iter().find(|v| v.key == key).map(|v| v.name.as_str())
    }

    /// The engine's name of a network key.
    #[must_use]
    pub fn network_name(&self, key: &str) -> Option<&str> {
        self.networks.iter().find(|n| n.key == key).map(|n| n.name.as_str())
    }
}

/// Names the services may refer to.
pub(crate) struct StackNames {
    pub services: BTreeSet<String>,
    /// Including services a profile left out.
    pub all_services: BTreeSet<String>,
    pub volumes: BTreeSet<String>,
    pub networks: BTreeSet<String>,
    pub secrets: BTreeMap<String, FileOrValue>,
    pub configs: BTreeMap<String, FileOrValue>,
}

/// Where a secret's or config's content comes from.
pub(crate) enum FileOrValue {
    /// A file next to the compose file (bundled).
    File(String),
    /// A site variable.
    Value(String),
}

/// Which relative paths the bundle carries, and which ones the stack used.
pub(crate) struct Sources<'a> {
    pub exists: &'a dyn Fn(&str) -> bool,
    pub files: BTreeSet<String>,
    /// Volume keys made for anonymous volumes.
    pub anonymous: BTreeSet<String>,
}

/// Read the stack tree. `all_services` includes services left out by a profile.
pub(crate) fn normalize(
    ctx: &mut Ctx<'_>,
    stack: &Json,
    project: &str,
    all_services: &BTreeSet<String>,
    sources: &mut Sources<'_>,
) -> Resolved {
    let empty = Map::new();
    let section = |k: &str| stack.get(k).and_then(Json::as_object).unwrap_or(&empty);
    let mut volumes = Vec::new();
    for (key, v) in section("volumes") {
        let p = format!("volumes.{key}");
        let o = v.as_object().unwrap_or(&empty);
        let (name, external, driver) = declared(ctx, o, &p, key, project);
        if let Some(d) = &driver
            && d != "local"
        {
            ctx.problem(&format!("{p}.driver"), format!("volume driver `{d}` (only `local`)"), Some("a volume plugin must be installed on the client's host; declare it `external: true` and create it there"));
        }
        check_keys(ctx, o, &p, &["name", "external", "driver", "driver_opts", "labels"]);
        volumes.push(VolumeDef {
            key: key.clone(),
            name,
            external,
            driver,
            driver_opts: opts(ctx, o.get("driver_opts"), &format!("{p}.driver_opts")),
            labels: opts(ctx, o.get("labels"), &format!("{p}.labels")),
        });
    }
    let mut networks = Vec::new();
    for (key, v) in section("networks") {
        let p = format!("networks.{key}");
        let o = v.as_object().unwrap_or(&empty);
        let (name, external, driver) = declared(ctx, o, &p, key, project);
        if let Some(d) = &driver
            && d != "bridge"
        {
            ctx.problem(
                &format!("{p}.driver"),
                format!("network driver `{d}` (only `bridge` on one host)"),
                Some("for the host's network use `network_mode: host` on the service"),
            );
        }
        let mut subnets = Vec::new();
        if let Some(Json::Object(ipam)) = o.get("ipam")
            && let Some(Json::Array(cfgs)) = ipam.get("config")
        {
            for (i, c) in cfgs.iter().enumerate() {
                let cp = format!("{p}.ipam.config[{i}]");
                if let Some(sub) = c.get("subnet").and_then(|s| ctx.str(s, &cp)) {
                    let gw = c.get("gateway").and_then(|g| ctx.str(g, &cp));
                    subnets.push((sub, gw));
                }
            }
        }
        let internal = o.get("internal").and_then(|b| ctx.bool(b, &format!("{p}.internal"))).unwrap_or(false);
        check_keys(
            ctx,
            o,
            &p,
            &[
                "name",
                "external",
                "driver",
                "driver_opts",
                "labels",
                "internal",
                "ipam",
                "attachable",
                "enable_ipv6",
                "enable_ipv4",
            ],
        );
        networks.push(NetworkDef {
            key: key.clone(),
            name,
            external,
            driver,
            driver_opts: opts(ctx, o.get("driver_opts"), &format!("{p}.driver_opts")),
            internal,
            subnets,
            labels: opts(ctx, o.get("labels"), &format!("{p}.labels")),
        });
    }
    let mut file_or_value = |ctx: &mut Ctx<'_>, kind: &str| -> BTreeMap<String, FileOrValue> {
        let mut out = BTreeMap::new();
        for (key, v) in section(kind) {
            let p = format!("{kind}.{key}");
            let o = v.as_object().unwrap_or(&empty);
            if let Some(f) = o.get("file").and_then(|f| ctx.str(f, &format!("{p}.file"))) {
                match relative_path(&f) {
                    Ok(rel) if (sources.exists)(&rel) => {
                        sources.files.insert(rel.clone());
                        out.insert(key.clone(), FileOrValue::File(rel));
                    }
                    Ok(_) => ctx.problem(
                        &format!("{p}.file"),
                        format!("`{f}` does not exist"),
                        Some("the file is bundled from next to the compose file"),
                    ),
                    Err(m) => ctx.problem(&format!("{p}.file"), m, None),
                }
            } else if let Some(Json::String(var)) = o.get("environment") {
                out.insert(key.clone(), FileOrValue::Value(var.clone()));
            } else {
                ctx.structural(&p, format!("{kind} `{key}` needs `file:` or `environment:`"), Some("`external` and `content` are not supported: a bundled file or a site variable carries the value"));
            }
        }
        out
    };
    let secrets = file_or_value(ctx, "secrets");
    let configs = file_or_value(ctx, "configs");
    let names = StackNames {
        services: section("services").keys().cloned().collect(),
        all_services: all_services.clone(),
        volumes: volumes.iter().map(|v| v.key.clone()).collect(),
        networks: networks.iter().map(|n| n.key.clone()).collect(),
        secrets,
        configs,
    };
    let mut services = BTreeMap::new();
    for (name, svc) in section("services") {
        let p = format!("services.{name}");
        if !valid_name(name) {
            ctx.structural(&p, format!("service name `{name}` must be letters, digits, `-`, `_` or `.`"), None);
        }
        match svc.as_object() {
            Some(o) => {
                let def = service::service(ctx, name, o, &names, sources);
                for dep in def.depends_on.keys() {
                    if dep == name {
                        ctx.structural(&format!("{p}.depends_on"), "a service cannot depend on itself", None);
                    }
                }
                services.insert(name.clone(), def);
            }
            None => ctx.structural(&p, "a service must be a map", None),
        }
    }
    for key in std::mem::take(&mut sources.anonymous) {
        if !volumes.iter().any(|v| v.key == key) {
            volumes.push(VolumeDef {
                name: format!("{project}_{key}"),
                key,
                external: false,
                driver: None,
                driver_opts: BTreeMap::new(),
                labels: BTreeMap::new(),
            });
        }
    }
    if !networks.iter().any(|n| n.key == "default") && services.values().any(|s| s.networks.contains_key("default")) {
        networks.insert(
            0,
            NetworkDef {
                key: "default".into(),
                name: format!("{project}_default"),
                external: false,
                driver: None,
                driver_opts: BTreeMap::new(),
                internal: false,
                subnets: vec![],
                labels: BTreeMap::new(),
            },
        );
    }
    Resolved { services, volumes, networks }
}

fn check_keys(ctx: &mut Ctx<'_>, o: &Map<String, Json>, path: &str, known: &[&str]) {
    for k in o.keys() {
        if !known.contains(&k.as_str()) && !k.starts_with("x-") {
            ctx.structural(
                &format!("{path}.{k}"),
                format!("unknown key `{k}`"),
                Some(&format!("known keys here: {}", known.join(", "))),
            );
        }
    }
}

/// A top-level volume's or network's engine name, whether it is `external`, and its driver.
/// The name: `external.name`, else `name`, else the key for an external one, else
/// `<project>_<key>` as compose names it.
fn declared(
    ctx: &mut Ctx<'_>,
    o: &Map<String, Json>,
    path: &str,
    key: &str,
    project: &str,
) -> (String, bool, Option<String>) {
    let (external, external_name) = match o.get("external") {
        None => (false, None),
        Some(Json::Object(e)) => (true, e.get("name").and_then(|n| ctx.str(n, &format!("{path}.external.name")))),
        Some(v) => (ctx.bool(v, &format!("{path}.external")).unwrap_or(false), None),
    };
    let name = external_name
        .or_else(|| o.get("name").and_then(|n| ctx.str(n, &format!("{path}.name"))))
        .unwrap_or_else(|| if external { key.to_string() } else { format!("{project}_{key}") });
    let driver = o.get("driver").and_then(|d| ctx.str(d, &format!("{path}.driver")));
    (name, external, driver)
}

fn opts(ctx: &mut Ctx<'_>, v: Option<&Json>, path: &str) -> BTreeMap<String, String> {
    v.map(|v| ctx.map_or_list(v, path, '=').into_iter().map(|(k, v)| (k, v.unwrap_or_default())).collect())
        .unwrap_or_default()
}

fn valid_name(n: &str) -> bool {
    !n.is_empty() && n.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// A path relative to the compose file, checked to stay inside its directory, with `/`.
///
/// # Errors
/// `..`, an absolute path, or the directory itself.
pub fn relative_path(p: &str) -> Result<String, String> {
    let mut parts = Vec::new();
    for c in Path::new(p).components() {
        match c {
            Component::CurDir => {}
            Component::Normal(n) => parts.push(n.to_str().ok_or_else(|| format!("`{p}` is not UTF-8"))?.to_string()),
            _ => {
                return Err(format!("`{p}` must stay inside the compose file's directory (no `..`)"));
            }
        }
    }
    if parts.is_empty() {
        return Err(format!("`{p}` names the compose file's directory itself; name a file or a subdirectory"));
    }
    Ok(parts.join("/"))
}

/// Every relative path the bundle carries under `stack/files/`, with each ancestor directory.
#[must_use]
pub fn bundled_paths(manifest: &Manifest) -> BTreeSet<String> {
    let prefix = format!("{}/", crate::layout::STACK_FILES_DIR);
    let mut out = BTreeSet::new();
    for e in &manifest.entries {
        if let Some(rel) = e.path.strip_prefix(&prefix) {
            let mut acc = String::new();
            for part in rel.split('/') {
                if !acc.is_empty() {
                    acc.push('/');
                }
                acc.push_str(part);
                out.insert(acc.clone());
            }
        }
    }
    out
}

/// Install time: the signed stack with the site's values. `values` holds every variable that
/// has a value (given, saved or defaulted); an optional variable without one is unset, so its
/// references' compose defaults apply.
///
/// # Errors
/// Every value that makes a field invalid, naming the field and the variable.
pub fn resolve(manifest: &Manifest, values: &BTreeMap<String, String>) -> Result<Resolved, Problems> {
    let lookup = |n: &str| values.get(n).map_or(interpolate::Value::Unset, |v| interpolate::Value::Set(v.clone()));
    let (resolved, problems) = read_manifest_stack(manifest, &lookup);
    if problems.is_empty() { Ok(resolved) } else { Err(Problems(problems)) }
}

/// The stack with the defaults the bundle knows, anything else left undecided (for `inspect`
/// and start order display; problems are ignored, the installer resolves for real).
#[must_use]
pub fn probe(manifest: &Manifest) -> Resolved {
    let lookup = |n: &str| match manifest.variables.get(n).and_then(|v| v.default.clone()) {
        Some(d) => interpolate::Value::Set(d),
        None => interpolate::Value::Unknown,
    };
    read_manifest_stack(manifest, &lookup).0
}

/// The signed stack read with `lookup`: relative paths are what the bundle carries.
fn read_manifest_stack(manifest: &Manifest, lookup: &dyn Fn(&str) -> interpolate::Value) -> (Resolved, Vec<Problem>) {
    let mut ctx = Ctx::new(lookup, "bundle.json", "");
    let bundled = bundled_paths(manifest);
    let exists = |p: &str| bundled.contains(p);
    let mut sources = Sources { exists: &exists, files: BTreeSet::new(), anonymous: BTreeSet::new() };
    let all: BTreeSet<String> = manifest
        .stack
        .get("services")
        .and_then(Json::as_object)
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    let resolved = normalize(&mut ctx, &manifest.stack, &manifest.project, &all, &mut sources);
    (resolved, ctx.problems)
}

#[cfg(test)]
mod tests;
