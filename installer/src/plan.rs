//! Pure planning: (signed manifest, host state, operator values) -> what apply will do. No I/O,
//! so `installer plan` can print it and tests can check it without Docker.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use manifests::order::waves;
use manifests::{Condition, Digest, Manifest, MountKind, ServiceDef};
use serde::Serialize;

use crate::engine::{ContainerSpec, ContainerState};
use crate::load::{LoadPlan, plan_load};
use crate::state::Migrations;

/// Compose label keys (so `docker compose -p <project> ps` sees the containers).
pub mod labels {
    /// Project.
    pub const PROJECT: &str = "com.docker.compose.project";
    /// Service.
    pub const SERVICE: &str = "com.docker.compose.service";
    /// Replica number.
    pub const NUMBER: &str = "com.docker.compose.container-number";
    /// One-off run.
    pub const ONEOFF: &str = "com.docker.compose.oneoff";
    /// Config hash.
    pub const CONFIG_HASH: &str = "com.docker.compose.config-hash";
    /// Short hashes of the parts of the config hash (`image=..,definition=..`), so that a
    /// recreate can say which part changed.
    pub const CONFIG_PARTS: &str = "io.installer.config-parts";
    /// Network name.
    pub const NETWORK: &str = "com.docker.compose.network";
    /// Volume name.
    pub const VOLUME: &str = "com.docker.compose.volume";
    /// Our release counter.
    pub const RELEASE: &str = "io.installer.release";
    /// Our product.
    pub const PRODUCT: &str = "io.installer.product";
    /// Host ports the container publishes (comma-separated), for the port preflight.
    pub const PORTS: &str = "io.installer.ports";
}

/// Kind of service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Long-running.
    Service,
    /// Runs once per release.
    Migration,
    /// Runs once per release, before migrations.
    Backup,
    /// One-shot that others wait for (`service_completed_successfully`), run when changed.
    Job,
}

/// What apply does with a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "action")]
pub enum Action {
    /// No container yet.
    Create,
    /// The definition or image changed.
    Recreate {
        /// Why.
        reason: String,
    },
    /// Same config hash and running: left alone.
    Keep,
    /// A one-shot to run.
    Run,
    /// A one-shot that already completed.
    Skip {
        /// Why.
        reason: String,
    },
}

/// One service in the plan.
#[derive(Debug, Clone, Serialize)]
pub struct ServicePlan {
    /// Name.
    pub name: String,
    /// Kind.
    pub kind: Kind,
    /// Action.
    pub action: Action,
    /// Container name.
    pub container: String,
    /// Config hash.
    pub config_hash: String,
    /// Whether the apply waits for it to become healthy.
    pub gate: Gate,
    /// The container to create (when created).
    #[serde(skip)]
    pub spec: ContainerSpec,
}

/// What "up" means for a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Gate {
    /// Running (no healthcheck known).
    Running,
    /// Docker healthcheck healthy.
    Healthy,
    /// Exited 0.
    Completed,
}

/// The whole plan.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// Product.
    pub product: String,
    /// Project.
    pub project: String,
    /// Release.
    pub release: u64,
    /// Version.
    pub version: String,
    /// Images.
    pub load: LoadPlan,
    /// Networks (full names).
    pub networks: Vec<String>,
    /// Volumes (full names).
    pub volumes: Vec<String>,
    /// Services by wave.
    pub waves: Vec<Vec<ServicePlan>>,
}

/// What the host has, as far as the plan needs.
#[derive(Debug, Clone, Default)]
pub struct HostState {
    /// Image IDs present.
    pub image_ids: BTreeSet<Digest>,
    /// Layer chain IDs present.
    pub chain_ids: BTreeSet<Digest>,
    /// Containers of the project by name.
    pub containers: BTreeMap<String, ContainerState>,
    /// Completed migrations.
    pub migrations: Migrations,
}

/// Container name of a service (compose's scheme).
#[must_use]
pub fn container_name(project: &str, service: &str) -> String {
    format!("{project}-{service}-1")
}

/// Full name of a network or volume (compose's scheme).
#[must_use]
pub fn scoped(project: &str, name: &str) -> String {
    format!("{project}_{name}")
}

/// Compute the plan.
///
/// # Errors
/// A variable with no value (should not happen after values::resolve), or a cycle (the bundler
/// refuses those; a hand-made manifest might not).
pub fn plan(
    manifest: &Manifest,
    host: &HostState,
    values: &BTreeMap<String, String>,
    files_dir: &Path,
    file_digests: &BTreeMap<String, Digest>,
    skip_present_layers: bool,
) -> Result<Plan, String> {
    let load = plan_load(manifest, &host.image_ids, &host.chain_ids, skip_present_layers);
    let project = &manifest.project;
    // Jobs: migrations, backup, and anything another service waits to complete.
    let mut graph: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (name, def) in &manifest.services {
        let mut deps: Vec<&str> = def.depends_on.keys().map(String::as_str).collect();
        // The backup runs before every migration.
        if let Some(backup) = &manifest.backup
            && manifest.migrations.contains(name)
            && !deps.contains(&backup.as_str())
        {
            deps.push(backup.as_str());
        }
        graph.insert(name.as_str(), deps);
    }
    let order = waves(&graph).map_err(|e| e.to_string())?;
    let awaited_completion: BTreeSet<&str> = manifest
        .services
        .values()
        .flat_map(|d| {
            d.depends_on.iter().filter(|(_, c)| **c == Condition::CompletedSuccessfully).map(|(n, _)| n.as_str())
        })
        .collect();
    let mut out_waves = Vec::new();
    for wave in order {
        let mut plans = Vec::new();
        for name in wave {
            let def = &manifest.services[&name];
            let kind = if manifest.migrations.contains(&name) {
                Kind::Migration
            } else if manifest.backup.as_deref() == Some(name.as_str()) {
                Kind::Backup
            } else if awaited_completion.contains(name.as_str()) {
                Kind::Job
            } else {
                Kind::Service
            };
            let image_id = manifest.image(&def.image).map(|i| i.config.digest);
            let mut spec = container_spec(manifest, &name, def, values, files_dir)?;
            let (config_hash, parts) = config_hash(manifest, def, values, image_id, file_digests);
            spec.labels.insert(labels::CONFIG_HASH.into(), config_hash.clone());
            spec.labels.insert(labels::CONFIG_PARTS.into(), parts.clone());
            let container = container_name(project, &name);
            let existing = host.containers.get(&container);
            let same = existing.is_some_and(|c| c.labels.get(labels::CONFIG_HASH) == Some(&config_hash));
            let action = match kind {
                Kind::Migration | Kind::Backup if host.migrations.is_done(manifest.release, &name) => {
                    Action::Skip { reason: format!("already completed for release {}", manifest.release) }
                }
                Kind::Migration | Kind::Backup => Action::Run,
                Kind::Job if same && existing.is_some_and(|c| !c.running && c.exit_code == Some(0)) => {
                    Action::Skip { reason: "unchanged and already completed".into() }
                }
                Kind::Job => Action::Run,
                Kind::Service => match existing {
                    None => Action::Create,
                    Some(c) if same && c.running => Action::Keep,
                    Some(c) if same => Action::Recreate { reason: format!("container is {}", c.status) },
                    Some(c) => Action::Recreate { reason: what_changed(c, &parts, &def.image) },
                },
            };
            // Without a compose healthcheck the image's own may apply: gate on health, and the
            // wait counts "running" as up when Docker reports no healthcheck at all.
            let has_healthcheck = def.healthcheck.as_ref().is_none_or(|h| h.test.first().is_none_or(|t| t != "NONE"));
            let gate = match kind {
                Kind::Service if has_healthcheck => Gate::Healthy,
                Kind::Service => Gate::Running,
                _ => Gate::Completed,
            };
            plans.push(ServicePlan { name: name.clone(), kind, action, container, config_hash, gate, spec });
        }
        out_waves.push(plans);
    }
    Ok(Plan {
        product: manifest.product.clone(),
        project: project.clone(),
        release: manifest.release,
        version: manifest.version.clone(),
        load,
        networks: manifest.networks.iter().map(|n| scoped(project, n)).collect(),
        volumes: manifest.volumes.iter().map(|v| scoped(project, v)).collect(),
        waves: out_waves,
    })
}

/// The environment of a service: env files, then `environment` with `${VAR}` substituted.
///
/// # Errors
/// A missing variable value.
pub fn environment(
    def: &ServiceDef,
    values: &BTreeMap<String, String>,
    files_dir: &Path,
) -> Result<BTreeMap<String, String>, String> {
    let mut env = BTreeMap::new();
    for f in &def.env_file {
        let text = std::fs::read_to_string(files_dir.join(f)).unwrap_or_default();
        env.extend(crate::values::parse_env(&text).map_err(|e| format!("env file {f}: {e}"))?);
    }
    for (k, v) in &def.environment {
        env.insert(k.clone(), manifests::spec::substitute(v, values)?);
    }
    Ok(env)
}

fn container_spec(
    manifest: &Manifest,
    name: &str,
    def: &ServiceDef,
    values: &BTreeMap<String, String>,
    files_dir: &Path,
) -> Result<ContainerSpec, String> {
    let project = &manifest.project;
    let env = environment(def, values, files_dir)?;
    let binds = def
        .volumes
        .iter()
        .map(|m| {
            let source = match m.kind {
                MountKind::Volume => scoped(project, &m.source),
                MountKind::Bind if m.source.starts_with('/') => m.source.clone(),
                MountKind::Bind => files_dir.join(&m.source).display().to_string(),
            };
            if m.read_only { format!("{source}:{}:ro", m.target) } else { format!("{source}:{}", m.target) }
        })
        .collect();
    let mut labels_map = def.labels.clone();
    labels_map.insert(labels::PROJECT.into(), project.clone());
    labels_map.insert(labels::SERVICE.into(), name.to_string());
    labels_map.insert(labels::NUMBER.into(), "1".into());
    labels_map.insert(labels::ONEOFF.into(), "False".into());
    labels_map.insert(labels::RELEASE.into(), manifest.release.to_string());
    labels_map.insert(labels::PRODUCT.into(), manifest.product.clone());
    if !def.ports.is_empty() {
        let ports: Vec<String> = def.ports.iter().map(|p| p.host_port.to_string()).collect();
        labels_map.insert(labels::PORTS.into(), ports.join(","));
    }
    let networks = def
        .networks
        .iter()
        .map(|(n, aliases)| {
            let mut a = vec![name.to_string()];
            a.extend(aliases.iter().cloned());
            (scoped(project, n), a)
        })
        .collect();
    Ok(ContainerSpec {
        name: container_name(project, name),
        image: def.image.clone(),
        command: def.command.clone(),
        entrypoint: def.entrypoint.clone(),
        env: env.into_iter().map(|(k, v)| format!("{k}={v}")).collect(),
        labels: labels_map,
        ports: def.ports.clone(),
        binds,
        networks,
        healthcheck: def.healthcheck.clone(),
        restart: def.restart.clone(),
        user: def.user.clone(),
        working_dir: def.working_dir.clone(),
        limits: def.limits.clone(),
        logging: def.logging.clone(),
    })
}

/// Why an existing container no longer matches: the parts whose hashes differ from its label.
fn what_changed(existing: &ContainerState, parts: &str, reference: &str) -> String {
    let Some(old) = existing.labels.get(labels::CONFIG_PARTS) else {
        return "definition or image changed (container made by an older installer)".into();
    };
    let old: BTreeMap<&str, &str> = old.split(',').filter_map(|kv| kv.split_once('=')).collect();
    let changed: Vec<String> = parts
        .split(',')
        .filter_map(|kv| kv.split_once('='))
        .filter(|(k, v)| old.get(k) != Some(v))
        .map(|(k, _)| match k {
            "image" => format!("image changed (now {reference})"),
            "environment" => "environment changed (bundle or operator values)".into(),
            "files" => "a bundled config file changed".into(),
            _ => "service definition changed".into(),
        })
        .collect();
    if changed.is_empty() {
        // Same parts, different hash: the project name, which is not a part of its own.
        "project settings changed".into()
    } else {
        changed.join("; ")
    }
}

fn substituted_environment<'a>(def: &'a ServiceDef, values: &BTreeMap<String, String>) -> BTreeMap<&'a String, String> {
    def.environment.iter().map(|(k, v)| (k, manifests::spec::substitute(v, values).unwrap_or_default())).collect()
}

fn mounted_file_digests<'a>(
    def: &'a ServiceDef,
    file_digests: &'a BTreeMap<String, Digest>,
) -> BTreeMap<&'a String, Option<&'a Digest>> {
    def.volumes
        .iter()
        .filter(|m| m.kind == MountKind::Bind && !m.source.starts_with('/'))
        .map(|m| &m.source)
        .chain(def.env_file.iter())
        .map(|f| (f, file_digests.get(f)))
        .collect()
}

/// The config hash: the definition, the substituted environment, the image ID and the content of
/// bundled files it mounts. The release number is left out on purpose, so an unchanged service
/// keeps its container across releases.
///
/// Also returned: the same parts, each hashed on its own (12 hex digits: a label for humans,
/// not a security check; the full hash alone decides whether to recreate).
#[must_use]
pub fn config_hash(
    manifest: &Manifest,
    def: &ServiceDef,
    values: &BTreeMap<String, String>,
    image_id: Option<Digest>,
    file_digests: &BTreeMap<String, Digest>,
) -> (String, String) {
    let env = substituted_environment(def, values);
    let files = mounted_file_digests(def, file_digests);
    let image_id = image_id.map(|d| d.to_string());
    let hash = |v: &serde_json::Value| Digest::of(&serde_json::to_vec(v).unwrap_or_default());
    let mut definition = serde_json::to_value(def).unwrap_or_default();
    let full = hash(&serde_json::json!({
        "project": manifest.project,
        "definition": definition,
        "environment": env,
        "image_id": image_id,
        "files": files,
    }));
    if let Some(map) = definition.as_object_mut() {
        // Reported as parts of their own.
        map.remove("image");
        map.remove("environment");
    }
    let parts = [
        ("image", serde_json::json!([def.image, image_id])),
        ("environment", serde_json::json!(env)),
        ("files", serde_json::json!(files)),
        ("definition", definition),
    ]
    .iter()
    .map(|(name, v)| format!("{name}={}", &hash(v).hex()[..12]))
    .collect::<Vec<_>>()
    .join(",");
    (full.hex(), parts)
}
