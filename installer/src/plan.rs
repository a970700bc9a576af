//! Pure planning: (signed manifest, host state, operator values) -> what apply will do. No I/O,
//! so `installer plan` can print it and tests can check it without Docker.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use manifests::compose::Resolved;
use manifests::order::waves;
use manifests::{Condition, Digest, Manifest, MountKind, ServiceDef};
use serde::Serialize;

use crate::data::{DataSource, Generations, dir_key, volume_key};
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
    /// The engine, as far as loading is concerned.
    pub engine: crate::engine::EngineKind,
    /// Images.
    pub load: LoadPlan,
    /// Networks (full names).
    pub networks: Vec<String>,
    /// Volumes (full names).
    pub volumes: Vec<String>,
    /// Services by wave.
    pub waves: Vec<Vec<ServicePlan>>,
    /// The stack's data sources (named volumes it creates, site data directories) and the
    /// generation of each this plan mounts.
    pub data: Vec<DataSource>,
    /// Data sources to copy before this release's migrations run (keys of `data`; empty when no
    /// migration runs or `x-bundle.snapshot: []`).
    pub snapshot_keys: Vec<String>,
    /// The copy the apply makes first, once sized and named (`None` in the pure plan).
    pub snapshot: Option<crate::data::snapshot::SnapshotPlan>,
    /// The stack with the site's values filled in.
    #[serde(skip)]
    pub stack: Resolved,
}

/// Where a release's host-side files live.
#[derive(Debug, Clone)]
pub struct HostPaths {
    /// The bundled config files and directories of the release.
    pub files: PathBuf,
    /// The site data directory: runtime directories the stack mounts (`./data`), kept across
    /// releases and never removed by the installer.
    pub data: PathBuf,
    /// Files holding site values that secrets and configs mount (0444 in a 0700 directory).
    pub values: PathBuf,
    /// Bundled templates rendered with the site's values (`x-bundle.templates`).
    pub rendered: PathBuf,
}

/// What the host has, as far as the plan needs.
#[derive(Debug, Clone, Default)]
pub struct HostState {
    /// Which engine (decides how images are named and what may be left out).
    pub engine: crate::engine::EngineKind,
    /// The images and layers it holds.
    pub holdings: crate::engine::Holdings,
    /// Containers of the project by name.
    pub containers: BTreeMap<String, ContainerState>,
    /// Completed migrations.
    pub migrations: Migrations,
    /// The generation each data source is at (empty: all at generation 0, the compose names).
    pub generations: Generations,
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
/// A site value that makes a field invalid (every one, naming the field and the variable), or
/// a cycle (the bundler refuses those; a hand-made manifest might not).
pub fn plan(
    manifest: &Manifest,
    host: &HostState,
    values: &BTreeMap<String, String>,
    paths: &HostPaths,
    file_digests: &BTreeMap<String, Digest>,
    skip_present_layers: bool,
) -> Result<Plan, String> {
    let mut stack = manifests::compose::resolve(manifest, values)
        .map_err(|p| format!("{p}the site's values do not fit the stack; nothing was changed"))?;
    let data = data_sources(&stack, &host.generations, paths);
    // Services mount the generation of each volume the host is at.
    for v in &mut stack.volumes {
        if let Some(g) = data.iter().find(|d| d.key == volume_key(&v.key)) {
            v.name.clone_from(&g.current);
        }
    }
    let load = plan_load(manifest, host.engine.strategy(), &host.holdings, skip_present_layers);
    let project = &manifest.project;
    // Jobs: migrations, backup, and anything another service waits to complete.
    let mut graph: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (name, def) in &stack.services {
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
    let awaited_completion: BTreeSet<&str> = stack
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
            let def = &stack.services[&name];
            let kind = if manifest.migrations.contains(&name) {
                Kind::Migration
            } else if manifest.backup.as_deref() == Some(name.as_str()) {
                Kind::Backup
            } else if awaited_completion.contains(name.as_str()) {
                Kind::Job
            } else {
                Kind::Service
            };
            // The config digest, whatever the engine calls the image: identity is content.
            let image_id = manifest.image(&def.image).map(|i| i.config.digest);
            let mut spec = container_spec(manifest, &stack, &name, def, values, paths, &data)?;
            // A secret or config from a site value changes the container when the value does;
            // so does another generation of its data.
            let mut digests = file_digests.clone();
            for key in def.volumes.iter().filter_map(mount_key) {
                if let Some(g) = host.generations.get(&key) {
                    digests.insert(format!("data:{key}"), Digest::of(g.as_bytes()));
                }
            }
            // A template's content is the bundled file and the values it uses.
            for m in def.volumes.iter().filter(|m| m.kind == MountKind::Bind) {
                let rel = m.source.trim_start_matches("./");
                if manifest.templates.contains_key(rel)
                    && let Some(file) = file_digests.get(rel)
                {
                    let used = template_values(manifest, rel, values);
                    let rendered = serde_json::to_vec(&serde_json::json!([file, used])).unwrap_or_default();
                    digests.insert(m.source.clone(), Digest::of(&rendered));
                }
            }
            for m in def.volumes.iter().filter(|m| m.kind == MountKind::Value) {
                let value = values.get(&m.source).map_or(&[][..], String::as_bytes);
                digests.insert(format!("value:{}", m.source), Digest::of(value));
            }
            let (config_hash, parts) = config_hash(manifest, def, image_id, &digests);
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
    let runs_migration =
        out_waves.iter().flatten().any(|sp: &ServicePlan| sp.kind == Kind::Migration && sp.action == Action::Run);
    let snapshot_keys = if runs_migration { snapshot_keys(manifest, &stack, &data) } else { Vec::new() };
    let data = data
        .into_iter()
        .map(|mut d| {
            d.image = out_waves
                .iter()
                .flatten()
                .find(|sp| d.services.contains(&sp.name))
                .map(|sp| sp.spec.image.clone())
                .unwrap_or_default();
            d
        })
        .collect();
    Ok(Plan {
        product: manifest.product.clone(),
        project: project.clone(),
        release: manifest.release,
        version: manifest.version.clone(),
        engine: host.engine,
        load,
        networks: stack.networks.iter().map(|n| n.name.clone()).collect(),
        volumes: stack.volumes.iter().map(|v| v.name.clone()).collect(),
        waves: out_waves,
        data,
        snapshot_keys,
        snapshot: None,
        stack,
    })
}

/// The data source a mount uses, if it is one (a volume the stack creates, a site data dir).
fn mount_key(m: &manifests::Mount) -> Option<String> {
    match m.kind {
        MountKind::Volume => Some(volume_key(&m.source)),
        MountKind::SiteData => Some(dir_key(&m.source)),
        _ => None,
    }
}

/// The stack's data sources at the generations the host has.
fn data_sources(stack: &Resolved, generations: &Generations, paths: &HostPaths) -> Vec<DataSource> {
    let mut out: Vec<DataSource> = Vec::new();
    for v in stack.volumes.iter().filter(|v| !v.external) {
        let key = volume_key(&v.key);
        out.push(DataSource {
            current: generations.get(&key).cloned().unwrap_or_else(|| v.name.clone()),
            key,
            volume: true,
            base: v.name.clone(),
            services: Vec::new(),
            image: String::new(),
        });
    }
    for (name, def) in &stack.services {
        for m in &def.volumes {
            let Some(key) = mount_key(m) else { continue };
            if m.kind == MountKind::SiteData && !out.iter().any(|d| d.key == key) {
                let base = paths.data.join(&m.source).display().to_string();
                out.push(DataSource {
                    current: generations.get(&key).cloned().unwrap_or_else(|| base.clone()),
                    key: key.clone(),
                    volume: false,
                    base,
                    services: Vec::new(),
                    image: String::new(),
                });
            }
            if let Some(d) = out.iter_mut().find(|d| d.key == key)
                && !d.services.contains(name)
            {
                d.services.push(name.clone());
            }
        }
    }
    out
}

/// What to copy before the migrations: `x-bundle.snapshot` if the author named it, else what the
/// migrations and every service they depend on (transitively) mount.
fn snapshot_keys(manifest: &Manifest, stack: &Resolved, data: &[DataSource]) -> Vec<String> {
    if let Some(named) = &manifest.snapshot {
        return data
            .iter()
            .filter(|d| named.iter().any(|n| d.key == volume_key(n) || d.key == dir_key(n)))
            .map(|d| d.key.clone())
            .collect();
    }
    let mut services: BTreeSet<&str> = BTreeSet::new();
    let mut todo: Vec<&str> = manifest.migrations.iter().map(String::as_str).collect();
    while let Some(s) = todo.pop() {
        if services.insert(s)
            && let Some(def) = stack.services.get(s)
        {
            todo.extend(def.depends_on.keys().map(String::as_str));
        }
    }
    data.iter().filter(|d| d.services.iter().any(|s| services.contains(s.as_str()))).map(|d| d.key.clone()).collect()
}

/// The environment of a service: env files, then `environment` (already filled in).
///
/// # Errors
/// An env file that is not `NAME=value` lines.
pub fn environment(def: &ServiceDef, files_dir: &Path) -> Result<BTreeMap<String, String>, String> {
    let mut env = BTreeMap::new();
    for f in &def.env_file {
        // An absolute path is a file on this host (`?` first: optional); others are bundled.
        let (path, required) = match f.strip_prefix('?') {
            Some(p) => (PathBuf::from(p), false),
            None if f.starts_with('/') => (PathBuf::from(f), true),
            None => (files_dir.join(f), false),
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if required => {
                return Err(format!(
                    "env file {} (named by the stack's `env_file`): {e}; create it on this host",
                    path.display()
                ));
            }
            Err(_) => String::new(),
        };
        env.extend(crate::values::parse_env(&text).map_err(|e| format!("env file {f}: {e}"))?);
    }
    env.extend(def.environment.clone());
    Ok(env)
}

fn container_spec(
    manifest: &Manifest,
    stack: &Resolved,
    name: &str,
    def: &ServiceDef,
    values: &BTreeMap<String, String>,
    paths: &HostPaths,
    data: &[DataSource],
) -> Result<ContainerSpec, String> {
    let project = &manifest.project;
    let env = environment(def, &paths.files)?;
    let mut binds = Vec::new();
    let mut tmpfs = BTreeMap::new();
    let mut site_dirs = Vec::new();
    let mut value_files = Vec::new();
    let mut templates = Vec::new();
    for m in &def.volumes {
        let source = match m.kind {
            MountKind::Volume => {
                stack.volume_name(&m.source).map_or_else(|| scoped(project, &m.source), str::to_string)
            }
            MountKind::Bind if m.source.starts_with('/') => m.source.clone(),
            MountKind::Bind if m.source == "~" || m.source.starts_with("~/") => {
                let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
                format!("{home}{}", &m.source[1..])
            }
            MountKind::Bind if manifest.templates.contains_key(m.source.trim_start_matches("./")) => {
                let rel = m.source.trim_start_matches("./");
                let dst = paths.rendered.join(rel);
                templates.push(crate::engine::Rendered {
                    src: paths.files.join(rel),
                    dst: dst.clone(),
                    values: template_values(manifest, rel, values),
                });
                dst.display().to_string()
            }
            MountKind::Bind => paths.files.join(&m.source).display().to_string(),
            MountKind::SiteData => {
                let key = dir_key(&m.source);
                let dir = data
                    .iter()
                    .find(|d| d.key == key)
                    .map_or_else(|| paths.data.join(&m.source), |d| PathBuf::from(&d.current));
                site_dirs.push(dir.clone());
                dir.display().to_string()
            }
            MountKind::Value => {
                let file = paths.values.join(&m.source);
                value_files.push((file.clone(), values.get(&m.source).cloned().unwrap_or_default()));
                file.display().to_string()
            }
            MountKind::Tmpfs => {
                tmpfs.insert(m.target.clone(), m.options.join(","));
                continue;
            }
        };
        let mut opts: Vec<&str> = Vec::new();
        if m.read_only {
            opts.push("ro");
        }
        opts.extend(m.options.iter().map(String::as_str));
        if opts.is_empty() {
            binds.push(format!("{source}:{}", m.target));
        } else {
            binds.push(format!("{source}:{}:{}", m.target, opts.join(",")));
        }
    }
    let mut labels_map = def.labels.clone();
    labels_map.insert(labels::PROJECT.into(), project.clone());
    labels_map.insert(labels::SERVICE.into(), name.to_string());
    labels_map.insert(labels::NUMBER.into(), "1".into());
    labels_map.insert(labels::ONEOFF.into(), "False".into());
    labels_map.insert(labels::RELEASE.into(), manifest.release.to_string());
    labels_map.insert(labels::PRODUCT.into(), manifest.product.clone());
    let fixed_ports: Vec<String> =
        def.ports.iter().filter(|p| p.host_port != 0).map(|p| p.host_port.to_string()).collect();
    if !fixed_ports.is_empty() {
        labels_map.insert(labels::PORTS.into(), fixed_ports.join(","));
    }
    let networks = def
        .networks
        .iter()
        .map(|(n, aliases)| {
            let mut a = vec![name.to_string()];
            a.extend(aliases.iter().cloned());
            (stack.network_name(n).map_or_else(|| scoped(project, n), str::to_string), a)
        })
        .collect();
    // Other services are named by their containers.
    let mut runtime = def.runtime.clone();
    if let Some(mode) = &runtime.network_mode
        && let Some(svc) = mode.strip_prefix("service:")
    {
        runtime.network_mode = Some(format!("container:{}", container_name(project, svc)));
    }
    runtime.links = runtime
        .links
        .iter()
        .map(|l| {
            let (svc, alias) = l.split_once(':').unwrap_or((l, l));
            format!("{}:{alias}", container_name(project, svc))
        })
        .collect();
    runtime.volumes_from = runtime
        .volumes_from
        .iter()
        .map(|l| match l.split_once(':') {
            Some((svc, mode)) => format!("{}:{mode}", container_name(project, svc)),
            None => container_name(project, l),
        })
        .collect();
    runtime.network_ipv4 = runtime
        .network_ipv4
        .iter()
        .map(|(n, ip)| (stack.network_name(n).map_or_else(|| scoped(project, n), str::to_string), ip.clone()))
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
        tmpfs,
        runtime,
        site_dirs,
        value_files,
        templates,
    })
}

/// The site values a template uses (only those: the config hash of a service changes when one
/// of them does, not when any value does).
fn template_values(manifest: &Manifest, rel: &str, values: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    manifest
        .templates
        .get(rel)
        .into_iter()
        .flatten()
        .filter_map(|n| values.get(n).map(|v| (n.clone(), v.clone())))
        .collect()
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
            "data" => "its data is now the copy made before this release's migrations".into(),
            _ => "service definition changed".into(),
        })
        .collect();
    let mut changed = changed;
    if old.contains_key("data") && !parts.split(',').any(|kv| kv.starts_with("data=")) {
        changed.push("its data goes back to the original generation".into());
    }
    if changed.is_empty() {
        // Same parts, different hash: the project name, which is not a part of its own.
        "project settings changed".into()
    } else {
        changed.join("; ")
    }
}

fn mounted_file_digests<'a>(
    def: &'a ServiceDef,
    file_digests: &'a BTreeMap<String, Digest>,
) -> BTreeMap<&'a String, Option<&'a Digest>> {
    def.volumes
        .iter()
        .filter(|m| m.kind == MountKind::Bind && !m.source.starts_with('/'))
        // A bundled directory: every file under it.
        .flat_map(|m| {
            let prefix = format!("{}/", m.source);
            std::iter::once(&m.source).chain(file_digests.keys().filter(move |k| k.starts_with(&prefix)))
        })
        .chain(def.env_file.iter())
        .map(|f| (f, file_digests.get(f)))
        .chain(
            def.volumes
                .iter()
                .filter(|m| m.kind == MountKind::Value)
                .filter_map(|m| file_digests.get_key_value(&format!("value:{}", m.source)).map(|(k, d)| (k, Some(d)))),
        )
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
    image_id: Option<Digest>,
    file_digests: &BTreeMap<String, Digest>,
) -> (String, String) {
    let env = &def.environment;
    let files = mounted_file_digests(def, file_digests);
    // Another generation of its data (none recorded: generation 0, and the hash is as it was
    // before generations existed).
    let data: BTreeMap<String, &Digest> = def
        .volumes
        .iter()
        .filter_map(mount_key)
        .filter_map(|k| file_digests.get(&format!("data:{k}")).map(|d| (k, d)))
        .collect();
    let image_id = image_id.map(|d| d.to_string());
    let hash = |v: &serde_json::Value| Digest::of(&serde_json::to_vec(v).unwrap_or_default());
    let mut definition = serde_json::to_value(def).unwrap_or_default();
    let mut whole = serde_json::json!({
        "project": manifest.project,
        "definition": definition,
        "environment": env,
        "image_id": image_id,
        "files": files,
    });
    if !data.is_empty() {
        whole["data"] = serde_json::json!(data);
    }
    let full = hash(&whole);
    if let Some(map) = definition.as_object_mut() {
        // Reported as parts of their own.
        map.remove("image");
        map.remove("environment");
    }
    let mut parts = vec![
        ("image", serde_json::json!([def.image, image_id])),
        ("environment", serde_json::json!(env)),
        ("files", serde_json::json!(files)),
        ("definition", definition),
    ];
    if !data.is_empty() {
        parts.push(("data", serde_json::json!(data)));
    }
    let parts = parts.iter().map(|(name, v)| format!("{name}={}", &hash(v).hex()[..12])).collect::<Vec<_>>().join(",");
    (full.hex(), parts)
}
