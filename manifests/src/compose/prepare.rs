//! Bundle time: read the vendor's compose file as `docker compose config` would, pin what the
//! bundle's content depends on, and check everything else with what is known in CI.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value as Json};

use super::ctx::{Ctx, parse_duration};
use super::interpolate::{self, Value};
use super::{Problem, Problems, Resolved, Sources, normalize, yaml};
use crate::manifest::{HealthSettings, VariableDef};

/// What the bundler was asked for.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Active profiles (`--profile`; also `COMPOSE_PROFILES` from the environment).
    pub profiles: Vec<String>,
    /// Extra env files for bundle-time values (`--env-file`), after `.env`.
    pub env_files: Vec<PathBuf>,
    /// The bundler's environment (only pinned names are read from it).
    pub environment: BTreeMap<String, String>,
}

/// The stack, ready to bundle.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// Compose project name.
    pub project: String,
    /// Product.
    pub product: String,
    /// Channel.
    pub channel: String,
    /// The stack tree for the manifest (templates for site values).
    pub stack: Json,
    /// Site variables, declared and implicit.
    pub variables: BTreeMap<String, VariableDef>,
    /// Variables fixed at bundle time, with their values (they are in the bundle).
    pub pinned: BTreeMap<String, String>,
    /// Migration services.
    pub migrations: Vec<String>,
    /// Backup service.
    pub backup: Option<String>,
    /// `x-bundle.snapshot`: the data copied before migrations (volume keys, site data
    /// directories); `None` = the default set.
    pub snapshot: Option<Vec<String>>,
    /// `x-bundle.templates`: bundled files rendered at install time with the site's values,
    /// each with the variables it references.
    pub templates: BTreeMap<String, Vec<String>>,
    /// `x-bundle.swarm`: per-service settings for `installer apply --target swarm`.
    pub swarm: BTreeMap<String, crate::SwarmSettings>,
    /// Health gate.
    pub health: HealthSettings,
    /// Relative paths to bundle (files and directories).
    pub files: BTreeSet<String>,
    /// Image references.
    pub images: BTreeSet<String>,
    /// The stack as checked with defaults (what `bundler check` and `inspect` show).
    pub probe: Resolved,
}

const TOP_KEYS: &[&str] = &["name", "version", "services", "volumes", "networks", "secrets", "configs", "x-bundle"];

/// Read, check and prepare a compose file.
///
/// # Errors
/// Every problem found, each with its line, key and a hint.
pub fn load(path: &Path, opts: &LoadOptions) -> Result<Prepared, Problems> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        Problems(vec![Problem {
            file: file.clone(),
            line: None,
            path: String::new(),
            message: format!("cannot read: {e}"),
            hint: Some("pass the compose file with -f".into()),
        }])
    })?;
    let base = path.parent().map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let base = if base.as_os_str().is_empty() { PathBuf::from(".") } else { base };
    prepare(&text, &file, &base, opts)
}

fn problem(file: &str, text: &str, path: &str, message: String, hint: Option<&str>) -> Problem {
    Problem {
        file: file.into(),
        line: yaml::locate(text, path),
        path: path.into(),
        message,
        hint: hint.map(String::from),
    }
}

/// Prepare from text; `base` is the compose file's directory.
///
/// # Errors
/// Every problem found.
pub fn prepare(text: &str, file: &str, base: &Path, opts: &LoadOptions) -> Result<Prepared, Problems> {
    let mut problems = Vec::new();
    let root = match yaml::parse(text) {
        Ok(Json::Object(m)) => m,
        Ok(_) => return Err(Problems(vec![problem(file, text, "", "the file is not a YAML map".into(), None)])),
        Err(m) => {
            return Err(Problems(vec![problem(
                file,
                text,
                "",
                m,
                Some("fix the YAML syntax; anchors, aliases and `<<` merge keys are supported"),
            )]));
        }
    };
    for k in root.keys() {
        if k == "include" {
            problems.push(problem(
                file,
                text,
                k,
                "`include` is not supported yet".into(),
                Some("use `extends` with `file:`, or merge the included file into this one"),
            ));
        } else if !TOP_KEYS.contains(&k.as_str()) && !k.starts_with("x-") {
            problems.push(problem(
                file,
                text,
                k,
                format!("unknown top-level key `{k}`"),
                Some(&format!("known: {}; extensions start with `x-`", TOP_KEYS.join(", "))),
            ));
        }
    }

    // Bundle-time values: .env next to the file, then --env-file, then the environment wins.
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    let dotenv = base.join(".env");
    let mut env_sources: Vec<PathBuf> = if dotenv.is_file() { vec![dotenv] } else { vec![] };
    env_sources.extend(opts.env_files.iter().cloned());
    for f in &env_sources {
        match std::fs::read_to_string(f) {
            Ok(t) => env.extend(parse_env_file(&t)),
            Err(e) => problems.push(problem(file, "", "", format!("env file {}: {e}", f.display()), None)),
        }
    }
    // What the vendor's env files say is part of the product: the defaults of site variables
    // (never of a secret). The process environment only fills pinned names.
    let file_defaults = env.clone();
    env.extend(opts.environment.clone());

    // x-bundle.
    let xb = root.get("x-bundle").and_then(Json::as_object);
    let Some(xb) = xb else {
        problems.push(problem(
            file,
            text,
            "",
            "no `x-bundle` block".into(),
            Some("add `x-bundle: {product: NAME}` at the top level"),
        ));
        return Err(Problems(problems));
    };
    let xs = |k: &str| {
        xb.get(k).and_then(|v| match v {
            Json::String(s) => Some(s.clone()),
            Json::Number(n) => Some(n.to_string()),
            _ => None,
        })
    };
    let product = xs("product").unwrap_or_default();
    if product.is_empty() {
        problems.push(problem(
            file,
            text,
            "x-bundle",
            "`x-bundle.product` is missing".into(),
            Some("name the product: `x-bundle: {product: NAME}`"),
        ));
    }
    for k in xb.keys() {
        if ![
            "product",
            "channel",
            "migrations",
            "backup",
            "snapshot",
            "templates",
            "variables",
            "health",
            "pin",
            "swarm",
        ]
        .contains(&k.as_str())
        {
            problems.push(problem(
                file,
                text,
                &format!("x-bundle.{k}"),
                format!("unknown x-bundle key `{k}`"),
                Some("known: product, channel, migrations, backup, snapshot, templates, variables, health, pin, swarm"),
            ));
        }
    }
    let names_list = |k: &str| -> Vec<String> {
        match xb.get(k) {
            Some(Json::Array(a)) => a.iter().filter_map(|v| v.as_str().map(String::from)).collect(),
            Some(Json::String(s)) => vec![s.clone()],
            _ => vec![],
        }
    };
    let migrations = names_list("migrations");
    let backup = xs("backup");
    let snapshot = xb.contains_key("snapshot").then(|| {
        names_list("snapshot")
            .into_iter()
            .map(|n| n.trim_start_matches("./").trim_end_matches('/').to_string())
            .collect::<Vec<_>>()
    });
    let pin_names = names_list("pin");
    // Templates: read now, so that the variables they use become site variables like the
    // compose file's.
    let mut templates: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut template_refs: Vec<(String, interpolate::Reference)> = Vec::new();
    for raw in names_list("templates") {
        let rel = raw.trim_start_matches("./").to_string();
        let at = "x-bundle.templates";
        let text_of = std::fs::read(base.join(&rel))
            .map_err(|e| e.to_string())
            .and_then(|b| String::from_utf8(b).map_err(|_| "it is not UTF-8 text".to_string()));
        match text_of.and_then(|t| interpolate::parse(&t).map_err(|m| format!("{m} (write `$$` for a literal `$`)"))) {
            Ok(t) => {
                let refs = t.references();
                let mut names: Vec<String> = refs.iter().map(|r| r.name.clone()).collect();
                names.sort();
                names.dedup();
                template_refs.extend(refs.into_iter().map(|r| (rel.clone(), r)));
                templates.insert(rel, names);
            }
            Err(m) => problems.push(problem(file, text, at, format!("template {rel}: {m}"), None)),
        }
    }
    let mut declared: BTreeMap<String, VariableDef> = BTreeMap::new();
    if let Some(Json::Object(vars)) = xb.get("variables") {
        for (name, v) in vars {
            let p = format!("x-bundle.variables.{name}");
            if !valid_variable_name(name) {
                problems.push(problem(
                    file,
                    text,
                    &p,
                    format!("variable `{name}`: names are letters, digits and `_`"),
                    None,
                ));
            }
            let o = v.as_object().cloned().unwrap_or_default();
            let secret = o.get("secret").and_then(Json::as_bool).unwrap_or(false);
            let default = o.get("default").and_then(|d| match d {
                Json::String(s) => Some(s.clone()),
                Json::Null => None,
                other => Some(other.to_string()),
            });
            if secret && default.is_some() {
                problems.push(problem(
                    file,
                    text,
                    &p,
                    format!("variable `{name}` is secret and has a default"),
                    Some("a secret's value must never be in the bundle; remove the default"),
                ));
            }
            for k in o.keys() {
                if !["secret", "default", "description"].contains(&k.as_str()) {
                    problems.push(problem(
                        file,
                        text,
                        &format!("{p}.{k}"),
                        format!("unknown variable key `{k}`"),
                        Some("known: secret, default, description"),
                    ));
                }
            }
            let description = o.get("description").and_then(Json::as_str).map(String::from);
            declared
                .insert(name.clone(), VariableDef { secret, default, description, optional: false, declared: true });
        }
    }
    let timeout_ms = match xb.get("health").and_then(|h| h.get("timeout")) {
        None => 300_000,
        Some(t) => match parse_duration(&t.as_str().map_or_else(|| t.to_string(), String::from)) {
            Ok(ms) => ms,
            Err(m) => {
                problems.push(problem(file, text, "x-bundle.health.timeout", m, None));
                300_000
            }
        },
    };

    // Services: profiles, then extends, then `x-*` keys dropped.
    let mut profiles: BTreeSet<String> = opts.profiles.iter().cloned().collect();
    if let Some(p) = env.get("COMPOSE_PROFILES") {
        profiles.extend(p.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from));
    }
    let raw_services = root.get("services").and_then(Json::as_object).cloned().unwrap_or_default();
    if raw_services.is_empty() {
        problems.push(problem(file, text, "services", "no services".into(), None));
    }
    let all_services: BTreeSet<String> = raw_services.keys().cloned().collect();
    let mut services = Map::new();
    for (name, svc) in &raw_services {
        let p = format!("services.{name}");
        let Some(obj) = svc.as_object() else {
            problems.push(problem(file, text, &p, "a service must be a map".into(), None));
            continue;
        };
        let mut obj = obj.clone();
        if obj.contains_key("extends") {
            match extend(&obj, &raw_services, base, 0) {
                Ok(o) => obj = o,
                Err(m) => problems.push(problem(file, text, &format!("{p}.extends"), m, None)),
            }
        }
        let active = match obj.get("profiles") {
            None => true,
            Some(Json::Array(ps)) => ps.iter().filter_map(Json::as_str).any(|p| profiles.contains(p) || p == "*"),
            Some(_) => true,
        };
        if !active {
            continue;
        }
        obj.retain(|k, _| !k.starts_with("x-"));
        if !obj.contains_key("image") {
            let hint = if obj.contains_key("build") {
                "a bundle ships images from a registry: build and push the image in CI, and name it under `image:`"
            } else {
                "name the image to ship under `image:`"
            };
            problems.push(problem(file, text, &p, format!("service `{name}` has no `image`"), Some(hint)));
        }
        services.insert(name.clone(), Json::Object(obj));
    }
    if services.is_empty() && !raw_services.is_empty() {
        let mut offered: BTreeSet<&str> = BTreeSet::new();
        for s in raw_services.values() {
            if let Some(Json::Array(ps)) = s.get("profiles") {
                offered.extend(ps.iter().filter_map(Json::as_str));
            }
        }
        problems.push(problem(
            file,
            text,
            "services",
            "every service belongs to a profile, and no profile is active".into(),
            Some(&format!(
                "choose what to bundle with --profile (profiles here: {})",
                offered.into_iter().collect::<Vec<_>>().join(", ")
            )),
        ));
    }
    let mut stack = Map::new();
    stack.insert("services".into(), Json::Object(services));
    for k in ["volumes", "networks", "secrets", "configs"] {
        if let Some(Json::Object(m)) = root.get(k) {
            let cleaned: Map<String, Json> = m
                .iter()
                .filter(|(k, _)| !k.starts_with("x-"))
                .map(|(k, v)| {
                    let v = match v {
                        Json::Object(o) => Json::Object(
                            o.iter()
                                .filter(|(k, _)| !k.starts_with("x-"))
                                .map(|(k, v)| (k.clone(), v.clone()))
                                .collect(),
                        ),
                        other => other.clone(),
                    };
                    (k.clone(), v)
                })
                .collect();
            stack.insert(k.into(), Json::Object(cleaned));
        }
    }
    let mut stack = Json::Object(stack);

    // Pinned: what the bundle's content depends on, plus what the author names.
    let mut pinned_names: BTreeSet<String> = pin_names.iter().cloned().collect();
    let mut pin_fields: Vec<(String, String)> = Vec::new();
    if let Some(Json::String(n)) = root.get("name") {
        pin_fields.push(("name".into(), n.clone()));
    }
    if let Some(svcs) = stack["services"].as_object() {
        for (name, svc) in svcs {
            for k in ["image", "platform"] {
                if let Some(Json::String(s)) = svc.get(k) {
                    pin_fields.push((format!("services.{name}.{k}"), s.clone()));
                }
            }
        }
    }
    for (path, raw) in &pin_fields {
        match interpolate::parse(raw) {
            Ok(t) => {
                for r in t.references() {
                    if !r.has_fallback && !env.contains_key(&r.name) {
                        let msg = match &r.required_message {
                            Some(m) if !m.is_empty() => format!("variable {} is not set at bundle time: {m}", r.name),
                            _ => format!("variable {} is not set at bundle time", r.name),
                        };
                        problems.push(problem(file, text, path, msg, Some("what the bundle ships is fixed when it is built: set the variable in the bundler's environment or in the .env file next to the compose file (or --env-file)")));
                    }
                    pinned_names.insert(r.name);
                }
            }
            Err(m) => problems.push(problem(file, text, path, m, None)),
        }
    }
    for n in &pinned_names {
        if declared.get(n).is_some_and(|d| d.secret) {
            problems.push(problem(
                file,
                text,
                "x-bundle.pin",
                format!("variable {n} is secret and cannot be pinned into the bundle"),
                Some("a secret is a site value; keep it out of `image`, `name` and `x-bundle.pin`"),
            ));
        }
    }
    let pinned: BTreeMap<String, String> =
        pinned_names.iter().filter_map(|n| env.get(n).map(|v| (n.clone(), v.clone()))).collect();
    let pin_lookup = |n: &str| {
        if pinned_names.contains(n) {
            Some(pinned.get(n).map_or(Value::Unset, |v| Value::Set(v.clone())))
        } else {
            None
        }
    };
    let mut syntax = Vec::new();
    map_strings(&mut stack, "", &mut |path, s| match interpolate::parse(s) {
        Ok(t) => *s = t.render_with(&pin_lookup),
        Err(m) => syntax.push((path.to_string(), m)),
    });
    for (path, m) in syntax {
        problems.push(problem(file, text, &path, m, Some("write `$$` for a literal `$`")));
    }
    let project_raw = root.get("name").and_then(Json::as_str).map(String::from);
    let project = match project_raw {
        Some(n) => interpolate::substitute(&n, &|v| pinned.get(v).cloned()).unwrap_or(n).replace("$$", "$"),
        None => product.clone(),
    };
    if !valid_project_name(&project) {
        problems.push(problem(file, text, "name", format!("project name `{project}` must be lowercase letters, digits, `-` or `_`, starting with a letter or digit"), None));
    }

    // Site variables: every reference left, and `- NAME` entries of `environment`.
    let mut refs: BTreeMap<String, (bool, Option<String>)> = BTreeMap::new(); // name -> (all have fallback, message)
    let mut note = |name: &str, fallback: bool, msg: Option<String>| {
        let e = refs.entry(name.to_string()).or_insert((true, None));
        e.0 &= fallback;
        if e.1.is_none() {
            e.1 = msg.filter(|m| !m.is_empty());
        }
    };
    map_strings(&mut stack, "", &mut |_, s| {
        if let Ok(t) = interpolate::parse(s) {
            for r in t.references() {
                note(&r.name, r.has_fallback, r.required_message);
            }
        }
    });
    for (path, r) in &template_refs {
        let msg =
            r.required_message.clone().filter(|m| !m.is_empty()).or_else(|| Some(format!("used by template {path}")));
        note(&r.name, r.has_fallback, msg);
    }
    if let Some(svcs) = stack["services"].as_object() {
        for svc in svcs.values() {
            match svc.get("environment") {
                Some(Json::Object(m)) => m.iter().filter(|(_, v)| v.is_null()).for_each(|(k, _)| note(k, true, None)),
                Some(Json::Array(a)) => {
                    a.iter()
                        .filter_map(Json::as_str)
                        .filter(|s| !s.contains('='))
                        .for_each(|k| note(k.trim(), true, None));
                }
                _ => {}
            }
        }
    }
    let mut variables = BTreeMap::new();
    for (name, d) in &declared {
        let mut d = d.clone();
        if d.default.is_none() && !d.secret {
            d.default = file_defaults.get(name).cloned();
        }
        if let Some((fallback, _)) = refs.get(name) {
            d.optional = *fallback && d.default.is_none();
        }
        variables.insert(name.clone(), d);
    }
    for (name, (fallback, msg)) in refs {
        if pinned_names.contains(&name) || variables.contains_key(&name) {
            continue;
        }
        let default = file_defaults.get(&name).cloned();
        let optional = fallback && default.is_none();
        variables.insert(name, VariableDef { secret: false, default, description: msg, optional, declared: false });
    }

    // Check the stack with what is known now: defaults of site variables, the rest undecided.
    let probe_lookup = |n: &str| match variables.get(n) {
        Some(VariableDef { default: Some(d), .. }) => Value::Set(d.clone()),
        _ => Value::Unknown,
    };
    let mut ctx = Ctx::new(&probe_lookup, file, text);
    let exists = |rel: &str| base.join(rel).exists();
    let mut sources = Sources { exists: &exists, files: BTreeSet::new(), anonymous: BTreeSet::new() };
    let probe = normalize(&mut ctx, &stack, &project, &all_services, &mut sources);
    problems.extend(ctx.problems);
    for job in migrations.iter().chain(backup.iter()) {
        match probe.services.get(job) {
            None => problems.push(problem(
                file,
                text,
                "x-bundle",
                format!("x-bundle names `{job}` as a migration or backup, but there is no such service"),
                None,
            )),
            Some(s) => {
                if let Some(r) = &s.restart
                    && r != "no"
                {
                    problems.push(problem(
                        file,
                        text,
                        &format!("services.{job}.restart"),
                        format!("`{job}` is a one-shot job (migration or backup) and cannot have `restart: {r}`"),
                        Some("remove `restart` from the job"),
                    ));
                }
            }
        }
    }
    // Each name in `x-bundle.snapshot` is data the installer can copy: a named volume it
    // creates, or a site data directory a service mounts.
    for name in snapshot.iter().flatten() {
        let volume = probe.volumes.iter().find(|v| &v.key == name);
        let site_dir = probe
            .services
            .values()
            .flat_map(|s| &s.volumes)
            .any(|m| m.kind == crate::MountKind::SiteData && &m.source == name);
        let why = match volume {
            Some(v) if v.external => Some("is an `external` volume: someone else's data, never copied"),
            Some(_) => None,
            None if site_dir => None,
            None => Some("is neither a named volume of this file nor a site data directory a service mounts"),
        };
        if let Some(why) = why {
            problems.push(problem(
                file,
                text,
                "x-bundle.snapshot",
                format!("x-bundle.snapshot names `{name}`, which {why}"),
                Some(
                    "list volume keys (`dbdata`) or bind-mounted data directories (`./data`); `[]` turns snapshots off",
                ),
            ));
        }
    }
    // A template is rendered into the file a service mounts: it must be such a file.
    for path in templates.keys() {
        let mounted = probe
            .services
            .values()
            .flat_map(|s| &s.volumes)
            .any(|m| m.kind == crate::MountKind::Bind && m.source.trim_start_matches("./") == path.as_str());
        if !mounted || !base.join(path).is_file() {
            problems.push(problem(
                file,
                text,
                "x-bundle.templates",
                format!("x-bundle.templates names `{path}`, which is not a file a service bind-mounts"),
                Some("list files the compose file mounts (`./config/app.conf:/etc/app.conf:ro`)"),
            ));
        }
        for n in &templates[path] {
            if pinned_names.contains(n) {
                problems.push(problem(
                    file,
                    text,
                    "x-bundle.templates",
                    format!("template {path} uses {n}, which is pinned at bundle time"),
                    Some("a template is rendered on the site; use a site variable"),
                ));
            }
        }
    }
    // x-bundle.swarm: {SERVICE: {replicas, placement, order}}; what cannot work on a swarm is
    // refused here, not at the site.
    let mut swarm: BTreeMap<String, crate::SwarmSettings> = BTreeMap::new();
    if let Some(v) = xb.get("swarm") {
        let at = "x-bundle.swarm";
        match v.as_object() {
            None => problems.push(problem(file, text, at, "`x-bundle.swarm` must be a map of services".into(), None)),
            Some(m) => {
                for (svc, settings) in m {
                    let p = format!("x-bundle.swarm.{svc}");
                    let Some(def) = probe.services.get(svc) else {
                        problems.push(problem(
                            file,
                            text,
                            &p,
                            format!("x-bundle.swarm names `{svc}`, which is not a service"),
                            None,
                        ));
                        continue;
                    };
                    let o = settings.as_object().cloned().unwrap_or_default();
                    for k in o.keys().filter(|k| !["replicas", "placement", "order"].contains(&k.as_str())) {
                        problems.push(problem(
                            file,
                            text,
                            &p,
                            format!("unknown key `{k}`"),
                            Some("known: replicas, placement, order"),
                        ));
                    }
                    let replicas = o.get("replicas").map(|r| r.as_u64());
                    if let Some(None) = replicas {
                        problems.push(problem(file, text, &p, "`replicas` must be a whole number".into(), None));
                    }
                    let placement: Vec<String> = match o.get("placement") {
                        Some(Json::Array(a)) => a.iter().filter_map(|c| c.as_str().map(String::from)).collect(),
                        Some(Json::String(s)) => vec![s.clone()],
                        _ => Vec::new(),
                    };
                    let order = o.get("order").and_then(Json::as_str).map(String::from);
                    if let Some(o) = order.as_deref().filter(|o| !["start-first", "stop-first"].contains(o)) {
                        problems.push(problem(
                            file,
                            text,
                            &p,
                            format!("order `{o}`: use start-first or stop-first"),
                            None,
                        ));
                    }
                    let volumes = def.volumes.iter().any(|m| m.kind == crate::MountKind::Volume);
                    let replicas = replicas.flatten();
                    if volumes && replicas.is_some_and(|r| r > 1) && placement.is_empty() {
                        problems.push(problem(
                            file,
                            text,
                            &p,
                            format!("`{svc}` has {} replicas and a named volume: Swarm volumes are local to a node, so each replica would get its own empty one", replicas.unwrap_or(0)),
                            Some("give it `replicas: 1`, or a `placement` that pins it to one node (`node.labels.db == true`)"),
                        ));
                    }
                    if volumes && order.as_deref() == Some("start-first") {
                        problems.push(problem(
                            file,
                            text,
                            &p,
                            format!("`{svc}` has a named volume: `start-first` would run two copies on the same data"),
                            Some("use `order: stop-first` (the default)"),
                        ));
                    }
                    if !def.ports.is_empty() && replicas.is_some_and(|r| r > 1) {
                        problems.push(problem(
                            file,
                            text,
                            &p,
                            format!("`{svc}` publishes ports and has {} replicas: ports are published on the node that runs a task (host mode), so two tasks on one node would collide", replicas.unwrap_or(0)),
                            Some("give it `replicas: 1`, or put a proxy service with the published port in front of it"),
                        ));
                    }
                    swarm.insert(svc.clone(), crate::SwarmSettings { replicas, placement, order });
                }
            }
        }
    }
    if let Err(e) = crate::order::start_order(&probe.services) {
        problems.push(problem(file, text, "services", e.to_string(), None));
    }
    let images: BTreeSet<String> = probe.services.values().map(|s| s.image.clone()).filter(|i| !i.is_empty()).collect();
    if !problems.is_empty() {
        // In the order of the file, as an author reads it.
        problems.sort_by_key(|p| p.line.unwrap_or(usize::MAX));
        return Err(Problems(problems));
    }
    Ok(Prepared {
        project,
        product,
        channel: xs("channel").unwrap_or_else(|| "stable".into()),
        stack,
        variables,
        pinned,
        migrations,
        backup,
        snapshot,
        templates,
        swarm,
        health: HealthSettings { timeout_ms },
        files: sources.files,
        images,
        probe,
    })
}

/// Apply `extends` (same file, or `file:` beside it), as compose merges: maps merged key by key,
/// these lists appended, everything else replaced by the extending service.
fn extend(
    svc: &Map<String, Json>,
    same_file: &Map<String, Json>,
    base: &Path,
    depth: usize,
) -> Result<Map<String, Json>, String> {
    if depth > 10 {
        return Err("`extends` nests more than 10 levels (a cycle?)".into());
    }
    let Some(ext) = svc.get("extends") else { return Ok(svc.clone()) };
    let (target, file) = match ext {
        Json::String(s) => (s.clone(), None),
        Json::Object(o) => (
            o.get("service").and_then(Json::as_str).ok_or("`extends` needs `service`")?.to_string(),
            o.get("file").and_then(Json::as_str).map(String::from),
        ),
        _ => return Err("`extends` must be a service name or {service, file}".into()),
    };
    let (parent, parent_services, parent_base) = match file {
        None => (same_file.get(&target).cloned(), same_file.clone(), base.to_path_buf()),
        Some(f) => {
            let rel = super::relative_path(&f)?;
            let path = base.join(&rel);
            let text = std::fs::read_to_string(&path).map_err(|e| format!("extends file `{f}`: {e}"))?;
            let root = yaml::parse(&text).map_err(|e| format!("extends file `{f}`: {e}"))?;
            let svcs = root.get("services").and_then(Json::as_object).cloned().unwrap_or_default();
            (svcs.get(&target).cloned(), svcs, path.parent().map_or_else(|| base.to_path_buf(), Path::to_path_buf))
        }
    };
    let parent = parent
        .and_then(|p| p.as_object().cloned())
        .ok_or_else(|| format!("`extends`: there is no service `{target}`"))?;
    let parent = extend(&parent, &parent_services, &parent_base, depth + 1)?;
    let mut out = parent;
    out.remove("extends");
    for (k, v) in svc {
        if k == "extends" {
            continue;
        }
        let merged = match (out.get(k), v) {
            (Some(Json::Object(a)), Json::Object(b)) => {
                let mut m = a.clone();
                for (bk, bv) in b {
                    m.insert(bk.clone(), bv.clone());
                }
                Json::Object(m)
            }
            (Some(Json::Array(a)), Json::Array(b))
                if matches!(
                    k.as_str(),
                    "ports"
                        | "expose"
                        | "dns"
                        | "dns_search"
                        | "tmpfs"
                        | "volumes"
                        | "devices"
                        | "cap_add"
                        | "cap_drop"
                        | "security_opt"
                        | "extra_hosts"
                        | "env_file"
                        | "labels"
                        | "environment"
                        | "secrets"
                        | "configs"
                ) =>
            {
                let mut l = a.clone();
                l.extend(b.iter().cloned());
                Json::Array(l)
            }
            _ => v.clone(),
        };
        out.insert(k.clone(), merged);
    }
    Ok(out)
}

/// Visit every string value (not map keys) with its dotted path.
fn map_strings(v: &mut Json, path: &str, f: &mut dyn FnMut(&str, &mut String)) {
    match v {
        Json::String(s) => f(path, s),
        Json::Array(a) => {
            for (i, x) in a.iter_mut().enumerate() {
                map_strings(x, &format!("{path}[{i}]"), f);
            }
        }
        Json::Object(m) => {
            for (k, x) in m.iter_mut() {
                let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                map_strings(x, &p, f);
            }
        }
        _ => {}
    }
}

/// `NAME=value` lines as compose's `.env` (comments, `export`, quotes).
#[must_use]
pub fn parse_env_file(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((k, v)) = line.split_once('=') else { continue };
        let v = v.trim();
        let v = if let Some(q) = v.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
            q.to_string()
        } else if let Some(q) = v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')) {
            q.to_string()
        } else {
            // An unquoted value ends at ` #`.
            v.split(" #").next().unwrap_or(v).trim().to_string()
        };
        out.insert(k.trim().to_string(), v);
    }
    out
}

fn valid_project_name(s: &str) -> bool {
    s.chars().next().is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

fn valid_variable_name(s: &str) -> bool {
    s.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}
