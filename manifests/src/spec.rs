//! The author's input: a docker compose file (a supported subset) with an `x-bundle` block.
//!
//! Parsing is strict: every struct denies unknown fields, so an unsupported compose key (`build`,
//! `privileged`, ...) fails **at bundle time** with its name and line, never at the client site.
//! [`ComposeFile::normalize`] then turns the flexible compose syntax (string or list, map or list)
//! into the one typed form that goes into the signed manifest ([`crate::ServiceDef`]).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path};

use serde::Deserialize;

use crate::manifest::{
    Condition, HealthSettings, HealthcheckDef, LimitsDef, LoggingDef, Mount, MountKind, PortMapping, ServiceDef,
    VariableDef,
};

/// Why a compose file was refused. Each names the file, and where possible the service and key.
#[derive(Debug, thiserror::Error)]
#[allow(missing_docs, reason = "each field is named in the message")]
pub enum SpecError {
    /// YAML syntax error, type error, or an unsupported key (serde's message carries the line).
    #[error("{file}: {message}")]
    Parse { file: String, message: String },
    /// A value has the right type but a wrong shape.
    #[error("{file}: service `{service}`, key `{key}`: {message}")]
    Invalid { file: String, service: String, key: String, message: String },
    /// A cross-reference is wrong (unknown service, undeclared volume, ...).
    #[error("{file}: {message}")]
    Reference { file: String, message: String },
}

/// Keys a service may use; listed in errors and in docs/compose-subset.md.
pub const SUPPORTED_SERVICE_KEYS: &[&str] = &[
    "image",
    "command",
    "entrypoint",
    "environment",
    "env_file",
    "ports",
    "volumes",
    "networks",
    "depends_on",
    "healthcheck",
    "restart",
    "user",
    "labels",
    "working_dir",
    "deploy.resources.limits",
    "logging",
    "container_name (ignored)",
];

/// A compose file as written (the supported subset).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComposeFile {
    /// Project name; used for container names and compose labels.
    pub name: Option<String>,
    /// Obsolete in compose; accepted and ignored.
    pub version: Option<Scalar>,
    /// The services.
    pub services: BTreeMap<String, ComposeService>,
    /// Named volumes.
    #[serde(default)]
    pub volumes: BTreeMap<String, Option<TopVolume>>,
    /// Networks.
    #[serde(default)]
    pub networks: BTreeMap<String, Option<TopNetwork>>,
    /// What compose lacks: product, migrations, variables, health gate.
    #[serde(rename = "x-bundle")]
    pub bundle: Option<XBundle>,
}

/// A top-level named volume.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopVolume {
    /// Only `local` is supported.
    pub driver: Option<String>,
    /// Labels.
    pub labels: Option<MapOrList>,
}

/// A top-level network.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopNetwork {
    /// Only `bridge` is supported.
    pub driver: Option<String>,
    /// Labels.
    pub labels: Option<MapOrList>,
}

/// The `x-bundle` block.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct XBundle {
    /// Product name; a bundle for another product is refused by the installer.
    pub product: String,
    /// Release channel (default `stable`).
    pub channel: Option<String>,
    /// One-shot services that run once per release, journaled.
    #[serde(default)]
    pub migrations: Vec<String>,
    /// One-shot service run before the migrations (e.g. a pg_dump into a volume).
    pub backup: Option<String>,
    /// Values the operator supplies at apply time; never stored in the bundle.
    #[serde(default)]
    pub variables: BTreeMap<String, XVariable>,
    /// Health gate settings.
    pub health: Option<XHealth>,
}

/// One operator-supplied variable.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct XVariable {
    /// A secret is never printed and is stored 0600.
    #[serde(default)]
    pub secret: bool,
    /// Default when the operator gives none (not allowed for secrets).
    pub default: Option<Scalar>,
    /// Shown to the operator when the value is missing.
    pub description: Option<String>,
}

/// Health gate settings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct XHealth {
    /// How long one service may take to become healthy, e.g. `300s`.
    pub timeout: Option<String>,
}

/// A scalar written as string, number or boolean (YAML authors write `PORT: 8080`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Scalar {
    /// Text.
    Str(String),
    /// Integer.
    Int(i64),
    /// Float.
    Float(f64),
    /// Boolean.
    Bool(bool),
}

impl Scalar {
    fn text(&self) -> String {
        match self {
            Scalar::Str(s) => s.clone(),
            Scalar::Int(i) => i.to_string(),
            Scalar::Float(f) => f.to_string(),
            Scalar::Bool(b) => b.to_string(),
        }
    }
}

/// `"a b"` or `["a", "b"]`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum StringOrList {
    /// One string (split like a shell would for command/entrypoint).
    One(String),
    /// A list.
    List(Vec<String>),
}

/// `{K: V}` or `["K=V"]`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum MapOrList {
    /// Map form; a null value means "empty".
    Map(BTreeMap<String, Option<Scalar>>),
    /// List form.
    List(Vec<String>),
}

impl MapOrList {
    fn into_map(self) -> BTreeMap<String, String> {
        match self {
            MapOrList::Map(m) => m.into_iter().map(|(k, v)| (k, v.map(|v| v.text()).unwrap_or_default())).collect(),
            MapOrList::List(l) => l
                .into_iter()
                .map(|item| match item.split_once('=') {
                    Some((k, v)) => (k.to_string(), v.to_string()),
                    None => (item, String::new()),
                })
                .collect(),
        }
    }
}

/// A compose service (the supported subset).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComposeService {
    /// Image reference; `build` is not supported (images come from a registry).
    pub image: String,
    /// Command.
    pub command: Option<StringOrList>,
    /// Entrypoint.
    pub entrypoint: Option<StringOrList>,
    /// Environment.
    pub environment: Option<MapOrList>,
    /// Env files, relative to the compose file; bundled.
    pub env_file: Option<StringOrList>,
    /// Published ports, short syntax.
    #[serde(default)]
    pub ports: Vec<Scalar>,
    /// Volumes, short syntax.
    #[serde(default)]
    pub volumes: Vec<String>,
    /// Networks.
    pub networks: Option<ServiceNetworks>,
    /// Dependencies.
    pub depends_on: Option<DependsOn>,
    /// Healthcheck.
    pub healthcheck: Option<ComposeHealthcheck>,
    /// Restart policy.
    pub restart: Option<String>,
    /// User.
    pub user: Option<Scalar>,
    /// Labels.
    pub labels: Option<MapOrList>,
    /// Working directory.
    pub working_dir: Option<String>,
    /// Only `resources.limits`.
    pub deploy: Option<Deploy>,
    /// Logging driver.
    pub logging: Option<ComposeLogging>,
    /// Ignored: the installer names containers `<project>-<service>-1` like compose.
    pub container_name: Option<String>,
}

/// Service networks: list or map.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum ServiceNetworks {
    /// List of names.
    List(Vec<String>),
    /// Map of names to options.
    Map(BTreeMap<String, Option<ServiceNetworkOptions>>),
}

/// Per-network options of a service.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceNetworkOptions {
    /// Extra DNS aliases.
    #[serde(default)]
    pub aliases: Vec<String>,
}

/// `depends_on`: list or map.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum DependsOn {
    /// List of names (condition `service_started`).
    List(Vec<String>),
    /// Map of names to conditions.
    Map(BTreeMap<String, DependsOnEntry>),
}

/// One `depends_on` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DependsOnEntry {
    /// `service_started` (default), `service_healthy`, `service_completed_successfully`.
    pub condition: Option<String>,
    /// Accepted for compatibility; the installer always restarts dependents it recreates.
    pub restart: Option<bool>,
    /// Accepted for compatibility; every dependency is required.
    pub required: Option<bool>,
}

/// Compose healthcheck.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComposeHealthcheck {
    /// Test command.
    pub test: Option<StringOrList>,
    /// Interval.
    pub interval: Option<String>,
    /// Timeout.
    pub timeout: Option<String>,
    /// Retries.
    pub retries: Option<u32>,
    /// Start period.
    pub start_period: Option<String>,
    /// Disable the image's healthcheck.
    pub disable: Option<bool>,
}

/// `deploy`: only `resources.limits`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deploy {
    /// Resources.
    pub resources: Option<Resources>,
}

/// `deploy.resources`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// Limits.
    pub limits: Option<Limits>,
}

/// `deploy.resources.limits`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// CPUs, e.g. `0.5`.
    pub cpus: Option<Scalar>,
    /// Memory, e.g. `512M`.
    pub memory: Option<Scalar>,
}

/// Compose logging.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComposeLogging {
    /// Driver, e.g. `json-file`.
    pub driver: Option<String>,
    /// Driver options.
    pub options: Option<BTreeMap<String, Scalar>>,
}

/// The normalized stack: what goes into the manifest.
#[derive(Debug, Clone)]
pub struct Stack {
    /// Compose project name.
    pub project: String,
    /// Product name.
    pub product: String,
    /// Channel.
    pub channel: String,
    /// Services, normalized.
    pub services: BTreeMap<String, ServiceDef>,
    /// Named volumes.
    pub volumes: Vec<String>,
    /// Networks (always includes `default`).
    pub networks: Vec<String>,
    /// Migration services.
    pub migrations: Vec<String>,
    /// Backup service.
    pub backup: Option<String>,
    /// Operator variables.
    pub variables: BTreeMap<String, VariableDef>,
    /// Health gate.
    pub health: HealthSettings,
    /// Files the compose file references (bind-mount sources and env files), relative to the
    /// compose file's directory, normalized with `/`.
    pub files: BTreeSet<String>,
}

impl ComposeFile {
    /// Parse compose YAML. `file` names the file in errors.
    ///
    /// # Errors
    /// YAML errors and unsupported keys, with the line.
    pub fn parse(text: &str, file: &str) -> Result<Self, SpecError> {
        serde_saphyr::from_str::<ComposeFile>(text)
            .map_err(|e| SpecError::Parse { file: file.to_string(), message: rephrase_serde(&e.to_string()) })
    }

    /// Check references and turn compose syntax into the manifest's typed form.
    ///
    /// # Errors
    /// Bad values, unknown references, dependency cycles.
    pub fn normalize(self, file: &str) -> Result<Stack, SpecError> {
        let reference = |message: String| SpecError::Reference { file: file.to_string(), message };
        let bundle = self.bundle.ok_or_else(|| {
            reference("no `x-bundle` block: add `x-bundle: {product: <name>}` at the top level".into())
        })?;
        let project = self.name.clone().unwrap_or_else(|| bundle.product.clone());
        if !valid_project_name(&project) {
            return Err(reference(format!(
                "project name `{project}` must be lowercase letters, digits, `-` or `_`, starting with a letter or digit"
            )));
        }
        if self.services.is_empty() {
            return Err(reference("no services".into()));
        }
        for (name, vol) in &self.volumes {
            if let Some(TopVolume { driver: Some(d), .. }) = vol
                && d != "local"
            {
                return Err(reference(format!("volume `{name}`: driver `{d}` is not supported (only `local`)")));
            }
        }
        for (name, net) in &self.networks {
            if let Some(TopNetwork { driver: Some(d), .. }) = net
                && d != "bridge"
            {
                return Err(reference(format!("network `{name}`: driver `{d}` is not supported (only `bridge`)")));
            }
        }
        let declared_default = self.networks.contains_key("default");
        let mut networks: Vec<String> = self.networks.keys().cloned().collect();
        if !networks.iter().any(|n| n == "default") {
            networks.insert(0, "default".into());
        }
        let volumes: Vec<String> = self.volumes.keys().cloned().collect();

        let mut variables = BTreeMap::new();
        for (name, v) in bundle.variables {
            if !valid_variable_name(&name) {
                return Err(reference(format!("variable `{name}`: names are letters, digits and `_`")));
            }
            if v.secret && v.default.is_some() {
                return Err(reference(format!(
                    "variable `{name}` is secret and has a default: a secret's value must never be in the bundle"
                )));
            }
            variables.insert(
                name,
                VariableDef { secret: v.secret, default: v.default.map(|d| d.text()), description: v.description },
            );
        }

        let mut files = BTreeSet::new();
        let mut services = BTreeMap::new();
        let names: BTreeSet<String> = self.services.keys().cloned().collect();
        for (name, svc) in self.services {
            if !valid_project_name(&name) {
                return Err(reference(format!("service name `{name}` must be lowercase letters, digits, `-` or `_`")));
            }
            let def = normalize_service(file, &name, svc, &names, &volumes, &networks, &variables, &mut files)?;
            services.insert(name, def);
        }
        for job in bundle.migrations.iter().chain(bundle.backup.iter()) {
            if !services.contains_key(job) {
                return Err(reference(format!(
                    "x-bundle names `{job}` as a migration or backup, but there is no such service"
                )));
            }
            if let Some(r) = &services[job].restart
                && r != "no"
            {
                return Err(reference(format!(
                    "`{job}` is a one-shot job (migration or backup) and cannot have `restart: {r}`"
                )));
            }
        }
        // Like compose: the implicit `default` network exists only if a service is on it.
        networks
            .retain(|n| n != "default" || declared_default || services.values().any(|d| d.networks.contains_key(n)));
        let timeout = match bundle.health.and_then(|h| h.timeout) {
            Some(t) => parse_duration(&t).map_err(|m| reference(format!("x-bundle.health.timeout: {m}")))?,
            None => 300_000,
        };
        let stack = Stack {
            project,
            product: bundle.product,
            channel: bundle.channel.unwrap_or_else(|| "stable".into()),
            services,
            volumes,
            networks,
            migrations: bundle.migrations,
            backup: bundle.backup,
            variables,
            health: HealthSettings { timeout_ms: timeout },
            files,
        };
        crate::order::start_order(&stack.services).map_err(|e| reference(e.to_string()))?;
        Ok(stack)
    }
}

#[allow(clippy::too_many_arguments)]
fn normalize_service(
    file: &str,
    name: &str,
    svc: ComposeService,
    names: &BTreeSet<String>,
    volumes: &[String],
    networks: &[String],
    variables: &BTreeMap<String, VariableDef>,
    files: &mut BTreeSet<String>,
) -> Result<ServiceDef, SpecError> {
    let invalid = |key: &str, message: String| SpecError::Invalid {
        file: file.to_string(),
        service: name.to_string(),
        key: key.to_string(),
        message,
    };
    let command = svc.command.map(split_command).transpose().and_then(literals).map_err(|m| invalid("command", m))?;
    let entrypoint =
        svc.entrypoint.map(split_command).transpose().and_then(literals).map_err(|m| invalid("entrypoint", m))?;
    let environment = svc.environment.map(MapOrList::into_map).unwrap_or_default();
    for (k, v) in &environment {
        check_variables(v, variables).map_err(|m| invalid("environment", format!("{k}: {m}")))?;
    }
    let env_files = match svc.env_file {
        None => vec![],
        Some(StringOrList::One(s)) => vec![s],
        Some(StringOrList::List(l)) => l,
    };
    let mut env_file = Vec::new();
    for f in env_files {
        let rel = relative_file(&f).map_err(|m| invalid("env_file", m))?;
        files.insert(rel.clone());
        env_file.push(rel);
    }
    let mut ports = Vec::new();
    for p in &svc.ports {
        ports.push(parse_port(&p.text()).map_err(|m| invalid("ports", m))?);
    }
    let mut mounts = Vec::new();
    for v in &svc.volumes {
        let m = parse_volume(v, volumes).map_err(|m| invalid("volumes", m))?;
        if m.kind == MountKind::Bind && !m.source.starts_with('/') {
            files.insert(m.source.clone());
        }
        mounts.push(m);
    }
    let service_networks: BTreeMap<String, Vec<String>> = match svc.networks {
        None => BTreeMap::from([("default".to_string(), vec![])]),
        Some(ServiceNetworks::List(l)) => l.into_iter().map(|n| (n, vec![])).collect(),
        Some(ServiceNetworks::Map(m)) => {
            m.into_iter().map(|(n, o)| (n, o.map(|o| o.aliases).unwrap_or_default())).collect()
        }
    };
    for n in service_networks.keys() {
        if !networks.contains(n) {
            return Err(invalid("networks", format!("network `{n}` is not declared under top-level `networks`")));
        }
    }
    let depends_on: BTreeMap<String, Condition> = match svc.depends_on {
        None => BTreeMap::new(),
        Some(DependsOn::List(l)) => l.into_iter().map(|n| (n, Condition::Started)).collect(),
        Some(DependsOn::Map(m)) => {
            let mut out = BTreeMap::new();
            for (dep, e) in m {
                let c = match e.condition.as_deref().unwrap_or("service_started") {
                    "service_started" => Condition::Started,
                    "service_healthy" => Condition::Healthy,
                    "service_completed_successfully" => Condition::CompletedSuccessfully,
                    other => {
                        return Err(invalid(
                            "depends_on",
                            format!(
                                "`{dep}`: unknown condition `{other}` (use service_started, service_healthy or service_completed_successfully)"
                            ),
                        ));
                    }
                };
                out.insert(dep, c);
            }
            out
        }
    };
    for dep in depends_on.keys() {
        if !names.contains(dep) {
            return Err(invalid("depends_on", format!("there is no service `{dep}`")));
        }
        if dep == name {
            return Err(invalid("depends_on", "a service cannot depend on itself".into()));
        }
    }
    let mut healthcheck =
        svc.healthcheck.map(|h| normalize_healthcheck(h).map_err(|m| invalid("healthcheck", m))).transpose()?;
    if let Some(h) = healthcheck.as_mut() {
        h.test =
            literals(Some(std::mem::take(&mut h.test))).map_err(|m| invalid("healthcheck", m))?.unwrap_or_default();
    }
    if let Some(r) = &svc.restart {
        let ok = matches!(r.as_str(), "no" | "always" | "unless-stopped" | "on-failure")
            || r.strip_prefix("on-failure:").is_some_and(|n| n.parse::<u32>().is_ok());
        if !ok {
            return Err(invalid("restart", format!("`{r}` (use no, always, unless-stopped or on-failure[:N])")));
        }
    }
    let limits = match svc.deploy.and_then(|d| d.resources).and_then(|r| r.limits) {
        None => None,
        Some(l) => Some(LimitsDef {
            nano_cpus: l
                .cpus
                .map(|c| parse_cpus(&c.text()).map_err(|m| invalid("deploy.resources.limits.cpus", m)))
                .transpose()?,
            memory_bytes: l
                .memory
                .map(|m| parse_bytes(&m.text()).map_err(|m| invalid("deploy.resources.limits.memory", m)))
                .transpose()?,
        }),
    };
    let logging = svc.logging.map(|l| LoggingDef {
        driver: l.driver.unwrap_or_else(|| "json-file".into()),
        options: l.options.unwrap_or_default().into_iter().map(|(k, v)| (k, v.text())).collect(),
    });
    Ok(ServiceDef {
        image: svc.image,
        command,
        entrypoint,
        environment,
        env_file,
        ports,
        volumes: mounts,
        networks: service_networks,
        depends_on,
        healthcheck,
        restart: svc.restart,
        user: svc.user.map(|u| literal(&u.text())).transpose().map_err(|m| invalid("user", m))?,
        labels: svc
            .labels
            .map(MapOrList::into_map)
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| literal(&v).map(|v| (k, v)))
            .collect::<Result<_, _>>()
            .map_err(|m| invalid("labels", m))?,
        working_dir: svc.working_dir.map(|w| literal(&w)).transpose().map_err(|m| invalid("working_dir", m))?,
        limits,
        logging,
    })
}

/// serde's "unknown field" message, reworded to say what the user did and what is allowed.
fn rephrase_serde(message: &str) -> String {
    if let Some(rest) = message.split("unknown field `").nth(1)
        && let Some(key) = rest.split('`').next()
    {
        let location = message.split(": unknown field").next().unwrap_or("").trim();
        return format!("{location}: unsupported key `{key}` ({message})");
    }
    message.to_string()
}

fn valid_project_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && s.as_bytes()[0].is_ascii_alphanumeric()
}

fn valid_variable_name(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') && !s.as_bytes()[0].is_ascii_digit()
}

/// Names of `${VAR}` / `$VAR` references in a value (`$$` is a literal `$`).
///
/// # Errors
/// An unterminated `${`.
pub fn variable_references(value: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let bytes = value.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'$' {
            i += 1;
            continue;
        }
        match bytes.get(i + 1) {
            Some(b'$') => i += 2,
            Some(b'{') => {
                let end = value[i + 2..].find('}').ok_or_else(|| format!("unterminated `${{` in `{value}`"))?;
                out.push(value[i + 2..i + 2 + end].to_string());
                i += end + 3;
            }
            Some(c) if c.is_ascii_alphabetic() || *c == b'_' => {
                let start = i + 1;
                let mut j = start;
                while j < bytes.len() && (bytes[j].is_ascii_alphanumeric() || bytes[j] == b'_') {
                    j += 1;
                }
                out.push(value[start..j].to_string());
                i = j;
            }
            _ => i += 1,
        }
    }
    Ok(out)
}

/// Replace `${VAR}` / `$VAR` with values, `$$` with `$`.
///
/// # Errors
/// A reference with no value.
pub fn substitute(value: &str, values: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(inner) = after.strip_prefix('{') {
            let end = inner.find('}').ok_or_else(|| format!("unterminated `${{` in `{value}`"))?;
            let name = &inner[..end];
            out.push_str(values.get(name).ok_or_else(|| format!("no value for variable `{name}`"))?);
            rest = &inner[end + 1..];
        } else {
            let starts_name = after.bytes().next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_');
            let len = after.bytes().take_while(|b| b.is_ascii_alphanumeric() || *b == b'_').count();
            if !starts_name || len == 0 {
                out.push('$');
                rest = after;
            } else {
                let name = &after[..len];
                out.push_str(values.get(name).ok_or_else(|| format!("no value for variable `{name}`"))?);
                rest = &after[len..];
            }
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// A value outside `environment`, as compose reads it: `$$` is a literal `$`. A variable reference
/// is refused: compose would fill it from the environment of whoever runs compose, and bundle
/// variables are site values that exist only at install time, on the client's host.
///
/// # Errors
/// A `${NAME}` or `$NAME` reference, naming it and the escape.
pub fn literal(value: &str) -> Result<String, String> {
    if let Some(name) = variable_references(value)?.into_iter().next() {
        return Err(format!(
            "`${{{name}}}`: variables are substituted only in `environment` (their values are set at install \
             time); write `$${{{name}}}` for a literal `$`, e.g. to let the container's shell expand it"
        ));
    }
    Ok(value.replace("$$", "$"))
}

fn literals(values: Option<Vec<String>>) -> Result<Option<Vec<String>>, String> {
    values.map(|v| v.iter().map(|s| literal(s)).collect()).transpose()
}

fn check_variables(value: &str, variables: &BTreeMap<String, VariableDef>) -> Result<(), String> {
    for name in variable_references(value)? {
        if name.contains(':') || name.contains('-') || name.contains('?') {
            return Err(format!(
                "`${{{name}}}`: compose defaults and checks are not supported; declare a default under x-bundle.variables"
            ));
        }
        if !variables.contains_key(&name) {
            return Err(format!(
                "`${{{name}}}` is not declared under x-bundle.variables (write `$${{{name}}}` for a literal `$`)"
            ));
        }
    }
    Ok(())
}

fn split_command(c: StringOrList) -> Result<Vec<String>, String> {
    match c {
        StringOrList::List(l) => Ok(l),
        StringOrList::One(s) => shell_split(&s),
    }
}

/// Split a command string like compose does (POSIX shell words: quotes and backslashes).
fn shell_split(s: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => cur.push(c),
                        None => return Err(format!("unterminated single quote in `{s}`")),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => cur.push(c),
                            Some(c) => {
                                cur.push('\\');
                                cur.push(c);
                            }
                            None => return Err(format!("unterminated double quote in `{s}`")),
                        },
                        Some(c) => cur.push(c),
                        None => return Err(format!("unterminated double quote in `{s}`")),
                    }
                }
            }
            '\\' => {
                in_word = true;
                if let Some(c) = chars.next() {
                    cur.push(c);
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    Ok(words)
}

fn normalize_healthcheck(h: ComposeHealthcheck) -> Result<HealthcheckDef, String> {
    if h.disable == Some(true) {
        return Ok(HealthcheckDef {
            test: vec!["NONE".into()],
            interval_ms: None,
            timeout_ms: None,
            retries: None,
            start_period_ms: None,
        });
    }
    let test = match h.test {
        None => vec![],
        Some(StringOrList::One(s)) => vec!["CMD-SHELL".into(), s],
        Some(StringOrList::List(l)) => {
            match l.first().map(String::as_str) {
                Some("CMD" | "CMD-SHELL" | "NONE") => {}
                _ => return Err("a list `test` must start with CMD, CMD-SHELL or NONE".into()),
            }
            l
        }
    };
    let d = |v: Option<String>| v.map(|s| parse_duration(&s)).transpose();
    Ok(HealthcheckDef {
        test,
        interval_ms: d(h.interval)?,
        timeout_ms: d(h.timeout)?,
        retries: h.retries,
        start_period_ms: d(h.start_period)?,
    })
}

/// Parse a compose duration (`1m30s`, `500ms`, `2h`, `10`) into milliseconds.
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
        return Ok(secs * 1000);
    }
    let mut total: u64 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let factor = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            _ => return Err(bad()),
        };
        total = total.checked_add(n.checked_mul(factor).ok_or_else(bad)?).ok_or_else(bad)?;
        rest = &rest[unit_len..];
    }
    Ok(total)
}

/// Parse a byte size (`512M`, `1g`, `1024`, `64kb`).
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
        _ => return Err(bad()),
    };
    #[allow(clippy::cast_possible_truncation)]
    Ok((n * factor) as i64)
}

fn parse_cpus(s: &str) -> Result<i64, String> {
    let n: f64 = s.trim().parse().map_err(|_| format!("`{s}` is not a number of CPUs"))?;
    if n <= 0.0 {
        return Err(format!("`{s}` must be positive"));
    }
    #[allow(clippy::cast_possible_truncation)]
    Ok((n * 1e9) as i64)
}

fn parse_port(s: &str) -> Result<PortMapping, String> {
    let (spec, protocol) = match s.rsplit_once('/') {
        Some((a, p @ ("tcp" | "udp"))) => (a, p.to_string()),
        Some((_, p)) => return Err(format!("`{s}`: protocol `{p}` (use tcp or udp)")),
        None => (s, "tcp".to_string()),
    };
    let parts: Vec<&str> = spec.split(':').collect();
    let port = |p: &str| -> Result<u16, String> {
        p.parse::<u16>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("`{s}`: `{p}` is not a port number (ranges are not supported)"))
    };
    let (host_ip, host, container) = match parts.as_slice() {
        [host, container] => ("0.0.0.0".to_string(), port(host)?, port(container)?),
        [ip, host, container] => (ip.to_string(), port(host)?, port(container)?),
        [_] => {
            return Err(format!(
                "`{s}`: give a fixed host port, e.g. `8080:{s}` (random host ports are not supported)"
            ));
        }
        _ => return Err(format!("`{s}` is not [ip:]host:container[/proto]")),
    };
    Ok(PortMapping { host_ip, host_port: host, container_port: container, protocol })
}

fn parse_volume(s: &str, volumes: &[String]) -> Result<Mount, String> {
    let parts: Vec<&str> = s.split(':').collect();
    let (source, target, mode) = match parts.as_slice() {
        [source, target] => (*source, *target, None),
        [source, target, mode] => (*source, *target, Some(*mode)),
        [_] => return Err(format!("`{s}`: anonymous volumes are not supported; name the volume (`name:{s}`)")),
        _ => return Err(format!("`{s}` is not source:target[:ro|rw]")),
    };
    let read_only = match mode {
        None | Some("rw") => false,
        Some("ro") => true,
        Some(m) => return Err(format!("`{s}`: mode `{m}` (use ro or rw)")),
    };
    if !target.starts_with('/') {
        return Err(format!("`{s}`: the container path must be absolute"));
    }
    if source.starts_with('.') {
        let rel = relative_file(source)?;
        Ok(Mount { kind: MountKind::Bind, source: rel, target: target.to_string(), read_only })
    } else if source.starts_with('/') {
        Ok(Mount { kind: MountKind::Bind, source: source.to_string(), target: target.to_string(), read_only })
    } else {
        if !volumes.iter().any(|v| v == source) {
            return Err(format!("`{s}`: volume `{source}` is not declared under top-level `volumes`"));
        }
        Ok(Mount { kind: MountKind::Volume, source: source.to_string(), target: target.to_string(), read_only })
    }
}

/// A path relative to the compose file, checked to stay inside its directory, with `/`.
fn relative_file(p: &str) -> Result<String, String> {
    let mut parts = Vec::new();
    for c in Path::new(p).components() {
        match c {
            Component::CurDir => {}
            Component::Normal(n) => parts.push(n.to_str().ok_or_else(|| format!("`{p}` is not UTF-8"))?.to_string()),
            _ => {
                return Err(format!("`{p}` must stay inside the compose file's directory (no `..`, no absolute path)"));
            }
        }
    }
    if parts.is_empty() {
        return Err(format!("`{p}` names the compose directory itself; name a file"));
    }
    Ok(parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name: clientstack
x-bundle:
  product: clientstack
  migrations: [migrate]
  variables:
    DB_PASSWORD: {secret: true}
    SITE_NAME: {default: site-1}
  health: {timeout: 120s}
services:
  db:
    image: 127.0.0.1:5000/stack/db:1
    healthcheck: {test: "test -f /tmp/ready", interval: 1s, retries: 30}
    volumes: [dbdata:/var/lib/db]
    environment: {PASSWORD: "${DB_PASSWORD}", PORT: 5432}
  migrate:
    image: 127.0.0.1:5000/stack/migrate:1
    command: sh -c 'echo "hi there"'
    depends_on: {db: {condition: service_healthy}}
  web:
    image: 127.0.0.1:5000/stack/web:1
    ports: ["127.0.0.1:18080:8080"]
    volumes: ["./conf/web.conf:/etc/web.conf:ro"]
    depends_on:
      migrate: {condition: service_completed_successfully}
      db: {condition: service_healthy}
    deploy: {resources: {limits: {cpus: "0.5", memory: 64M}}}
    restart: unless-stopped
volumes:
  dbdata:
"#;

    #[test]
    fn parses_and_normalizes() {
        let stack = ComposeFile::parse(GOOD, "compose.yaml").unwrap().normalize("compose.yaml").unwrap();
        assert_eq!(stack.project, "clientstack");
        assert_eq!(stack.services["migrate"].command.as_ref().unwrap(), &vec!["sh", "-c", "echo \"hi there\""]);
        assert_eq!(stack.services["db"].environment["PORT"], "5432");
        assert_eq!(stack.services["web"].ports[0].host_port, 18080);
        assert_eq!(stack.services["web"].limits.as_ref().unwrap().memory_bytes, Some(64 << 20));
        assert!(stack.files.contains("conf/web.conf"));
        assert_eq!(stack.health.timeout_ms, 120_000);
        assert_eq!(stack.services["db"].healthcheck.as_ref().unwrap().test, vec!["CMD-SHELL", "test -f /tmp/ready"]);
    }

    #[test]
    fn dollars_outside_environment_follow_compose_escaping_and_refuse_variables() {
        let svc = |fields: &str| {
            let text = format!("name: p\nx-bundle: {{product: p}}\nservices:\n  a:\n    image: r/a:1\n{fields}");
            ComposeFile::parse(&text, "c").unwrap().normalize("c").map(|s| s.services["a"].clone())
        };
        let a = svc("    command: [\"sh\", \"-c\", \"echo $$HOME $$1 5$\"]\n    healthcheck:\n      test: [\"CMD-SHELL\", \"pg_isready -U $${POSTGRES_USER}\"]\n").unwrap();
        assert_eq!(a.command.unwrap(), vec!["sh", "-c", "echo $HOME $1 5$"]);
        assert_eq!(a.healthcheck.unwrap().test, vec!["CMD-SHELL", "pg_isready -U ${POSTGRES_USER}"]);
        for field in
            ["    command: [\"echo\", \"${TAG}\"]\n", "    working_dir: /srv/$TAG\n", "    labels: {a: \"${TAG}\"}\n"]
        {
            let err = svc(field).unwrap_err().to_string();
            assert!(
                err.contains("`${TAG}`") && err.contains("only in `environment`") && err.contains("$${TAG}"),
                "{err}"
            );
        }
    }

    #[test]
    fn the_default_network_exists_only_when_a_service_is_on_it() {
        let min = |services: &str, networks: &str| {
            let text = format!("name: p\nx-bundle: {{product: p}}\nservices:\n{services}{networks}");
            ComposeFile::parse(&text, "c").unwrap().normalize("c").unwrap().networks
        };
        assert_eq!(min("  a: {image: r/a:1}\n", ""), vec!["default"]);
        assert_eq!(min("  a: {image: r/a:1, networks: [back]}\n", "networks: {back: {}}\n"), vec!["back"]);
        assert_eq!(
            min("  a: {image: r/a:1, networks: [back]}\n  b: {image: r/b:1}\n", "networks: {back: {}}\n"),
            vec!["default", "back"]
        );
    }

    #[test]
    fn unsupported_key_is_named_with_its_line() {
        let text = GOOD.replace("    restart: unless-stopped", "    privileged: true");
        let err = ComposeFile::parse(&text, "compose.yaml").unwrap_err().to_string();
        assert!(err.contains("unsupported key `privileged`"), "{err}");
        assert!(err.contains("line"), "{err}");
    }

    #[test]
    fn undeclared_variable_and_volume_and_cycle() {
        let text = GOOD.replace("${DB_PASSWORD}", "${NOPE}");
        let err = ComposeFile::parse(&text, "c").unwrap().normalize("c").unwrap_err().to_string();
        assert!(err.contains("NOPE"), "{err}");
        let text = GOOD.replace("dbdata:/var/lib/db", "other:/var/lib/db");
        let err = ComposeFile::parse(&text, "c").unwrap().normalize("c").unwrap_err().to_string();
        assert!(err.contains("volume `other`"), "{err}");
        let text = GOOD
            .replace("    volumes: [dbdata:/var/lib/db]", "    volumes: [dbdata:/var/lib/db]\n    depends_on: [web]");
        let err = ComposeFile::parse(&text, "c").unwrap().normalize("c").unwrap_err().to_string();
        assert!(err.contains("cycle"), "{err}");
        let text = GOOD.replace("./conf/web.conf", "../etc/passwd");
        let err = ComposeFile::parse(&text, "c").unwrap().normalize("c").unwrap_err().to_string();
        assert!(err.contains("must stay inside"), "{err}");
    }

    #[test]
    fn durations_sizes_and_substitution() {
        assert_eq!(parse_duration("1m30s").unwrap(), 90_000);
        assert_eq!(parse_duration("500ms").unwrap(), 500);
        assert!(parse_duration("5 parsecs").is_err());
        assert_eq!(parse_bytes("1G").unwrap(), 1 << 30);
        let values = BTreeMap::from([("A".to_string(), "x".to_string())]);
        assert_eq!(substitute("$A-${A}-$$A", &values).unwrap(), "x-x-$A");
        assert_eq!(substitute("$1 5$ $-", &values).unwrap(), "$1 5$ $-");
        assert_eq!(substitute("awk '{print $1}'", &values).unwrap(), "awk '{print $1}'");
        assert!(check_variables("awk '{print $1}'", &BTreeMap::new()).is_ok());
        assert!(substitute("${B}", &values).is_err());
    }
}
