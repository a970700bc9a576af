//! `installer apply --target swarm` on a Swarm manager ([ADR 0008](../../../docs/adr/0008-swarm-target.md)).
//!
//! The same signed bundle, values, plan and waves as on one host; what differs is where each
//! service goes: a Swarm service (the stack's namespace label, overlay networks, bundled files as
//! content-addressed configs, site values as secrets, images by digest from the site registry the
//! bundle was pushed to), and what a gate waits for (every task of the current spec running,
//! healthy when the service has a healthcheck; a job's task complete), each with the bundle's
//! deadline. Migrations are one job service per release, never updated, so each runs once.
//! The release record (the specs applied) is a Swarm config, so any manager can see it; a failed
//! release puts every service back to the previous record's spec (and removes services it added).
//! A re-run after an interruption finds what was done: services whose config hash matches are
//! kept, a completed migration job is not run again.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use manifests::{Digest, Manifest};
use serde_json::{Value, json};

use crate::apply::ApplyOptions;
use crate::engine::swarm::{PullAuth, Swarm};
use crate::error::InstallError;
use crate::plan::{Kind, ServicePlan};
use crate::registry::{Destination, Registry};
use crate::report::{Event, Reporter};
use crate::state::StateDir;
use crate::{push, values, verify};

/// Label on everything of the stack (what `docker stack ls/ps/services` look for).
pub const NAMESPACE: &str = "com.docker.stack.namespace";
/// Label: the release a service spec or record belongs to.
pub const RELEASE: &str = "io.installer.release";
/// Label: the plan's config hash of a service (unchanged hash: the service is kept).
pub const HASH: &str = "io.installer.config-hash";
/// Label on release records.
pub const RECORD: &str = "io.installer.release-record";

/// Swarm-specific settings.
#[derive(Debug, Clone)]
pub struct SwarmOptions {
    /// The site registry the images are pushed to and pulled from.
    pub registry: Destination,
    /// `vip` (default) or `dnsrr` (hosts without IPVS).
    pub endpoint_mode: String,
    /// Blobs pushed at once.
    pub jobs: usize,
}

/// A release as recorded in the swarm.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Record {
    /// Product.
    pub product: String,
    /// Version.
    pub version: String,
    /// Release counter.
    pub release: u64,
    /// sha256 of `bundle.json`.
    pub manifest_sha256: Digest,
    /// When it was applied.
    pub applied_at: u64,
    /// Service name -> the spec applied.
    pub services: BTreeMap<String, Value>,
    /// Migration job services that completed.
    pub migrations: Vec<String>,
}

/// What an apply did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SwarmOutcome {
    /// Product.
    pub product: String,
    /// Version.
    pub version: String,
    /// Release.
    pub release: u64,
    /// Services created or updated.
    pub changed: Vec<String>,
    /// Services kept as they were.
    pub kept: Vec<String>,
    /// Migration jobs run now.
    pub migrations_run: Vec<String>,
}

/// Apply a bundle to the swarm this engine manages.
///
/// # Errors
/// Not a manager, bundle, policy, values, push, a service or job failing (then every service is
/// put back: [`InstallError::RolledBack`]).
pub async fn apply<S: Swarm, R: Registry + Sync>(
    opts: &ApplyOptions,
    swarm_opts: &SwarmOptions,
    swarm: &S,
    registry: &R,
    pull: &PullAuth,
    reporter: &dyn Reporter,
) -> Result<SwarmOutcome, InstallError> {
    let state = StateDir::new(opts.state_dir.clone());
    let _lock = state.lock()?;
    if !swarm.manager().await? {
        return Err(InstallError::Policy(
            "this Docker Engine is not a Swarm manager: run `installer apply --target swarm` on a manager node \
             (`docker node ls` works there)"
                .into(),
        ));
    }
    let keys = crate::trust::trusted_keys(&state.keys_dir(), &opts.keys)?;
    let signed = verify::open(&opts.bundle, &opts.media, &keys)?;
    let manifest = signed.manifest().clone();
    let manifest_sha256 = signed.manifest_sha256;
    let project = manifest.project.clone();
    let records = records(swarm, &project).await?;
    let previous = records.last().cloned();
    if let Some(prev) = &previous {
        if prev.product != manifest.product {
            return Err(InstallError::Policy(format!(
                "this swarm runs product `{}` as `{project}`, the bundle is for `{}`",
                prev.product, manifest.product
            )));
        }
        if manifest.release < prev.release && !opts.allow_downgrade {
            return Err(InstallError::Policy(format!(
                "the bundle is release {} ({}), older than release {} ({}) in the swarm; pass --allow-downgrade",
                manifest.release, manifest.version, prev.release, prev.version
            )));
        }
    }
    reporter.event(&Event::Verified {
        product: manifest.product.clone(),
        version: manifest.version.clone(),
        release: manifest.release,
        key_id: signed.signer.key_id.to_string(),
    });
    let values = values::resolve(&manifest, opts.values_file.as_deref(), &state.values()?, &|k| std::env::var(k).ok())?;

    // The whole bundle once: verified, its config files written to the release directory, and
    // where each blob lies noted, so the push reads only the blobs again.
    let parts = signed.reader.inner().files().to_vec();
    let files = crate::load::FilesTarget { release_dir: state.release_dir(manifest.release) };
    if let Some(parent) = files.release_dir.parent() {
        std::fs::create_dir_all(parent).map_err(InstallError::state(parent))?;
    }
    let verify::SignedBundle { path, reader, .. } = signed;
    let pass = crate::load::pass(reader, &crate::load::LoadPlan::nothing(), None, Some(&files), &|_| {})
        .map_err(|source| InstallError::Bundle { path, source })?;
    let host = crate::plan::HostState::default();
    let paths = state.paths(manifest.release);
    let the_plan = crate::plan::plan(&manifest, &host, &values, &paths, &crate::apply::file_digests(&manifest), false)
        .map_err(InstallError::Preflight)?;
    // What cannot work on a swarm is refused before the registry, the swarm or the saved values
    // change (only the release directory of config files was written, as `apply` does).
    for sp in the_plan.waves.iter().flatten() {
        check_fits(sp, &paths)?;
    }
    state.save_values(&values)?;
    remember_project(&state, &project)?;

    // The images into the site registry, byte for byte: services pin them by digest.
    let push_opts = push::PushOptions {
        bundle: opts.bundle.clone(),
        media: opts.media.clone(),
        keys: opts.keys.clone(),
        state_dir: opts.state_dir.clone(),
        destination: swarm_opts.registry.clone(),
        jobs: swarm_opts.jobs,
    };
    let pushed = push::push_verified(&manifest, &parts, &pass.blobs, &push_opts, registry, reporter).await?;
    let pinned: BTreeMap<String, String> =
        pushed.images.iter().map(|i| (i.reference.clone(), i.pinned.clone())).collect();

    let mut specs = Vec::new();
    for wave in &the_plan.waves {
        let mut w = Vec::new();
        for sp in wave {
            let spec = service_spec(&manifest, sp, &pinned, &paths, swarm_opts, swarm, reporter).await?;
            w.push((sp, spec));
        }
        specs.push(w);
    }
    let labels = BTreeMap::from([(NAMESPACE.to_string(), project.clone())]);
    for net in &the_plan.stack.networks {
        if !net.external {
            swarm.ensure_network(&net.name, &labels).await?;
        }
    }

    let mut outcome = SwarmOutcome {
        product: manifest.product.clone(),
        version: manifest.version.clone(),
        release: manifest.release,
        changed: Vec::new(),
        kept: Vec::new(),
        migrations_run: Vec::new(),
    };
    let timeout = Duration::from_millis(manifest.health.timeout_ms);
    let result = converge(swarm, pull, &specs, timeout, reporter, &mut outcome).await;
    if let Err(cause) = result {
        return Err(roll_back(swarm, pull, previous.as_ref(), &specs, timeout, reporter, cause).await);
    }

    // A re-run that changed nothing keeps the record it found.
    let unchanged = outcome.changed.is_empty()
        && outcome.migrations_run.is_empty()
        && previous.as_ref().is_some_and(|p| p.release == manifest.release && p.manifest_sha256 == manifest_sha256);
    if unchanged {
        reporter.event(&Event::Info {
            message: format!(
                "swarm: {} {} (release {}): nothing to change",
                manifest.product, manifest.version, manifest.release
            ),
        });
        return Ok(outcome);
    }
    // The record: every spec applied and the migrations done, in the swarm.
    let mut record = Record {
        product: manifest.product.clone(),
        version: manifest.version.clone(),
        release: manifest.release,
        manifest_sha256,
        applied_at: manifests::time::now(),
        services: BTreeMap::new(),
        migrations: previous.as_ref().map(|p| p.migrations.clone()).unwrap_or_default(),
    };
    for (sp, spec) in specs.iter().flatten() {
        if sp.kind == Kind::Service {
            record.services.insert(spec["Name"].as_str().unwrap_or_default().to_string(), spec.clone());
        } else {
            let name = spec["Name"].as_str().unwrap_or_default().to_string();
            if !record.migrations.contains(&name) {
                record.migrations.push(name);
            }
        }
    }
    let bytes = serde_json::to_vec(&record).unwrap_or_default();
    let mut record_labels = labels.clone();
    record_labels.insert(RECORD.into(), manifest.release.to_string());
    // Named by content: a config cannot change, and the same release applied again (values
    // changed) gets a record of its own.
    let name = format!("{project}_release_{}_{}", manifest.release, &Digest::of(&bytes).hex()[..12]);
    swarm.ensure_config(&name, &bytes, &record_labels).await?;
    reporter.event(&Event::Info {
        message: format!(
            "swarm: {} {} (release {}) applied: {} changed, {} unchanged, migrations run: {}",
            manifest.product,
            manifest.version,
            manifest.release,
            outcome.changed.len(),
            outcome.kept.len(),
            if outcome.migrations_run.is_empty() { "none".into() } else { outcome.migrations_run.join(", ") }
        ),
    });
    Ok(outcome)
}

/// The release records in the swarm, oldest first.
///
/// # Errors
/// Docker errors.
pub async fn records<S: Swarm>(swarm: &S, project: &str) -> Result<Vec<Record>, InstallError> {
    let mut out: Vec<Record> = Vec::new();
    for c in swarm.configs(project).await? {
        if c["Spec"]["Labels"][RECORD].is_null() {
            continue;
        }
        use base64::Engine as _;
        let data = c["Spec"]["Data"].as_str().unwrap_or_default();
        let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(data) else { continue };
        if let Ok(r) = serde_json::from_slice::<Record>(&bytes) {
            out.push(r);
        }
    }
    out.sort_by_key(|r| (r.release, r.applied_at));
    Ok(out)
}

async fn converge<S: Swarm>(
    swarm: &S,
    pull: &PullAuth,
    specs: &[Vec<(&ServicePlan, Value)>],
    timeout: Duration,
    reporter: &dyn Reporter,
    outcome: &mut SwarmOutcome,
) -> Result<(), InstallError> {
    for wave in specs {
        for (sp, spec) in wave {
            let name = spec["Name"].as_str().unwrap_or_default().to_string();
            let existing = swarm.service(&name).await?;
            if sp.kind == Kind::Service {
                let same = existing.as_ref().is_some_and(|s| s["Spec"]["Labels"][HASH] == spec["Labels"][HASH]);
                if same {
                    outcome.kept.push(sp.name.clone());
                    reporter.event(&service_event(&sp.name, "keep", Some("unchanged")));
                    continue;
                }
                match &existing {
                    Some(s) => {
                        let version = s["Version"]["Index"].as_u64().unwrap_or_default();
                        reporter.event(&service_event(&sp.name, "update", Some(&name)));
                        swarm.update_service(&name, version, spec, pull).await?;
                    }
                    None => {
                        reporter.event(&service_event(&sp.name, "create", Some(&name)));
                        swarm.create_service(spec, pull).await?;
                    }
                }
                outcome.changed.push(sp.name.clone());
                wait_running(swarm, &name, &sp.name, timeout, reporter).await?;
            } else {
                // One job service per release: completed means done, whatever happened since.
                if existing.is_some() {
                    match job_state(swarm, &name).await? {
                        JobState::Complete => {
                            reporter.event(&service_event(&sp.name, "skip", Some("already ran for this release")));
                            continue;
                        }
                        JobState::Running => {}
                        JobState::Failed(_) => {
                            // A failed run of this release: run it again, as the host target does.
                            swarm.remove_service(&name).await?;
                            wait_gone(swarm, &name).await?;
                            swarm.create_service(spec, pull).await?;
                        }
                    }
                } else {
                    reporter.event(&service_event(&sp.name, "run", Some(&name)));
                    swarm.create_service(spec, pull).await?;
                }
                wait_job(swarm, &name, &sp.name, sp.kind, timeout.max(Duration::from_secs(600)), reporter).await?;
                outcome.migrations_run.push(sp.name.clone());
            }
        }
    }
    Ok(())
}

fn service_event(service: &str, status: &str, detail: Option<&str>) -> Event {
    Event::Service { service: service.to_string(), status: status.to_string(), detail: detail.map(str::to_string) }
}

/// Every task of the current spec running (Swarm reports a task with a healthcheck running only
/// once it is healthy), within the deadline; a task of the current spec that failed ends the wait.
async fn wait_running<S: Swarm>(
    swarm: &S,
    name: &str,
    service: &str,
    timeout: Duration,
    reporter: &dyn Reporter,
) -> Result<(), InstallError> {
    let start = Instant::now();
    loop {
        let svc = swarm.service(name).await?.unwrap_or(Value::Null);
        let wanted = svc["Spec"]["Mode"]["Replicated"]["Replicas"].as_u64().unwrap_or(1);
        let tasks = swarm.tasks(name).await?;
        let hash = &svc["Spec"]["TaskTemplate"]["ContainerSpec"]["Labels"][HASH];
        let current: Vec<&Value> =
            tasks.iter().filter(|t| &t["Spec"]["ContainerSpec"]["Labels"][HASH] == hash).collect();
        let running =
            current.iter().filter(|t| t["Status"]["State"] == "running" && t["DesiredState"] == "running").count()
                as u64;
        let failed: Vec<String> = current
            .iter()
            .filter(|t| matches!(t["Status"]["State"].as_str(), Some("failed" | "rejected")))
            .map(|t| {
                format!(
                    "{} {}",
                    t["Status"]["Err"].as_str().unwrap_or(t["Status"]["Message"].as_str().unwrap_or("")),
                    t["Status"]["ContainerStatus"]["ExitCode"]
                        .as_i64()
                        .map(|c| format!("(exit {c})"))
                        .unwrap_or_default()
                )
                .trim()
                .to_string()
            })
            .collect();
        if running >= wanted && svc["UpdateStatus"]["State"].as_str().is_none_or(|s| s == "completed") {
            reporter.event(&service_event(service, "healthy", Some(&format!("{running}/{wanted} tasks running"))));
            return Ok(());
        }
        if let Some(err) = failed.first() {
            return Err(InstallError::Unhealthy {
                service: service.to_string(),
                reason: "has a task that failed".into(),
                timeout_secs: timeout.as_secs(),
                last_output: err.clone(),
            });
        }
        if start.elapsed() > timeout {
            let states: Vec<String> = current
                .iter()
                .map(|t| {
                    format!(
                        "{} ({})",
                        t["Status"]["State"].as_str().unwrap_or("?"),
                        t["Status"]["Message"].as_str().unwrap_or("")
                    )
                })
                .collect();
            return Err(InstallError::Unhealthy {
                service: service.to_string(),
                reason: format!("did not get {wanted} running task(s) in time"),
                timeout_secs: timeout.as_secs(),
                last_output: if states.is_empty() {
                    "no task was scheduled (no node fits?)".into()
                } else {
                    states.join(", ")
                },
            });
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

enum JobState {
    Running,
    Complete,
    Failed(String),
}

async fn job_state<S: Swarm>(swarm: &S, name: &str) -> Result<JobState, InstallError> {
    let tasks = swarm.tasks(name).await?;
    if tasks.iter().any(|t| t["Status"]["State"] == "complete") {
        return Ok(JobState::Complete);
    }
    if let Some(t) = tasks.iter().find(|t| matches!(t["Status"]["State"].as_str(), Some("failed" | "rejected"))) {
        let code = t["Status"]["ContainerStatus"]["ExitCode"].as_i64().unwrap_or(-1);
        let err = t["Status"]["Err"].as_str().unwrap_or_default();
        return Ok(JobState::Failed(format!("{code}|{err}")));
    }
    Ok(JobState::Running)
}

async fn wait_job<S: Swarm>(
    swarm: &S,
    name: &str,
    service: &str,
    kind: Kind,
    timeout: Duration,
    reporter: &dyn Reporter,
) -> Result<(), InstallError> {
    let start = Instant::now();
    loop {
        match job_state(swarm, name).await? {
            JobState::Complete => {
                reporter.event(&service_event(service, "completed", Some(name)));
                return Ok(());
            }
            JobState::Failed(detail) => {
                let (code, err) = detail.split_once('|').unwrap_or(("-1", ""));
                return Err(InstallError::JobFailed {
                    kind: match kind {
                        Kind::Migration => "migration",
                        Kind::Backup => "backup",
                        _ => "job",
                    },
                    service: service.to_string(),
                    code: code.parse().unwrap_or(-1),
                    logs: format!("{err} (task logs: docker service logs {name})"),
                });
            }
            JobState::Running if start.elapsed() > timeout => {
                return Err(InstallError::Unhealthy {
                    service: service.to_string(),
                    reason: "did not complete in time".into(),
                    timeout_secs: timeout.as_secs(),
                    last_output: format!("docker service ps {name}"),
                });
            }
            JobState::Running => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

async fn wait_gone<S: Swarm>(swarm: &S, name: &str) -> Result<(), InstallError> {
    for _ in 0..120 {
        if swarm.service(name).await?.is_none() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Ok(())
}

/// Every long-running service back to the previous record's spec (services the failed release
/// added are removed); the failed release's jobs stay as they are (their records are not kept).
#[allow(clippy::too_many_arguments, reason = "the rollback's context")]
async fn roll_back<S: Swarm>(
    swarm: &S,
    pull: &PullAuth,
    previous: Option<&Record>,
    specs: &[Vec<(&ServicePlan, Value)>],
    timeout: Duration,
    reporter: &dyn Reporter,
    cause: InstallError,
) -> InstallError {
    let mut restored = Vec::new();
    let result: Result<(), InstallError> = async {
        for (sp, spec) in specs.iter().flatten().rev() {
            if sp.kind != Kind::Service {
                continue;
            }
            let name = spec["Name"].as_str().unwrap_or_default();
            let Some(current) = swarm.service(name).await? else { continue };
            match previous.and_then(|p| p.services.get(name)) {
                Some(old) => {
                    if current["Spec"]["Labels"][HASH] != old["Labels"][HASH] {
                        reporter.event(&service_event(&sp.name, "rollback", Some("previous release's spec")));
                        let version = current["Version"]["Index"].as_u64().unwrap_or_default();
                        swarm.update_service(name, version, old, pull).await?;
                        wait_running(swarm, name, &sp.name, timeout, reporter).await?;
                    }
                    restored.push(sp.name.clone());
                }
                None => {
                    reporter.event(&service_event(&sp.name, "remove", Some("not in the previous release")));
                    swarm.remove_service(name).await?;
                }
            }
        }
        Ok(())
    }
    .await;
    match result {
        Ok(()) => {
            InstallError::RolledBack { cause: Box::new(cause), services: restored.join(", "), data: String::new() }
        }
        Err(error) => InstallError::RollbackFailed { cause: Box::new(cause), error: Box::new(error) },
    }
}

fn refusal(sp: &ServicePlan, what: &str) -> InstallError {
    InstallError::Preflight(format!("service `{}`: {what}; nothing was changed", sp.name))
}

/// What a swarm cannot run: templates, host paths and site data directories (every node would
/// need them), bundled directories and files over Swarm's 1000 KB config limit.
fn check_fits(sp: &ServicePlan, paths: &crate::plan::HostPaths) -> Result<(), InstallError> {
    if !sp.spec.templates.is_empty() {
        return Err(refusal(sp, "templates (x-bundle.templates) are not supported on a swarm yet"));
    }
    for bind in &sp.spec.binds {
        let src = bind.split(':').next().unwrap_or_default();
        let src_path = Path::new(src);
        if !src.starts_with('/') || src_path.starts_with(&paths.values) {
            continue;
        }
        let Ok(rel) = src_path.strip_prefix(&paths.files) else {
            return Err(refusal(
                sp,
                &format!(
                    "it mounts the host path {src}: every node would need it; use a named volume or a bundled file"
                ),
            ));
        };
        if src_path.is_dir() {
            return Err(refusal(
                sp,
                &format!("the bundled directory {} cannot be a Swarm config (files only)", rel.display()),
            ));
        }
        if std::fs::metadata(src_path).map_err(InstallError::state(src_path))?.len() > 1000 << 10 {
            return Err(refusal(sp, &format!("{} is over Swarm's config limit of 1000 KB", rel.display())));
        }
    }
    Ok(())
}

/// The Swarm `ServiceSpec` of one planned service, from the same container spec the host target
/// creates (environment, command, healthcheck, limits, logging, labels), with the image pinned
/// in the site registry, bundled files as configs and site values as secrets.
async fn service_spec<S: Swarm>(
    manifest: &Manifest,
    sp: &ServicePlan,
    pinned: &BTreeMap<String, String>,
    paths: &crate::plan::HostPaths,
    opts: &SwarmOptions,
    swarm: &S,
    reporter: &dyn Reporter,
) -> Result<Value, InstallError> {
    let project = &manifest.project;
    let c = &sp.spec;
    let image = pinned.get(&c.image).ok_or_else(|| refusal(sp, &format!("image {} was not pushed", c.image)))?;
    let labels = BTreeMap::from([(NAMESPACE.to_string(), project.clone())]);
    let mut mounts = Vec::new();
    let mut configs = Vec::new();
    let mut secrets = Vec::new();
    for bind in &c.binds {
        let mut parts = bind.splitn(3, ':');
        let (src, dst) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
        let read_only = parts.next().is_some_and(|o| o.split(',').any(|x| x == "ro"));
        let src_path = Path::new(src);
        if !src.starts_with('/') {
            mounts.push(json!({"Type": "volume", "Source": src, "Target": dst, "ReadOnly": read_only,
                "VolumeOptions": {"Labels": {NAMESPACE: project}}}));
        } else if let Ok(rel) = src_path.strip_prefix(&paths.files) {
            // `check_fits` refused directories and files over the config limit.
            let data = std::fs::read(src_path).map_err(InstallError::state(src_path))?;
            let name = format!("{project}_{}_{}", config_key(rel), &Digest::of(&data).hex()[..12]);
            let id = swarm.ensure_config(&name, &data, &labels).await?;
            configs.push(json!({"ConfigID": id, "ConfigName": name,
                "File": {"Name": dst, "UID": "0", "GID": "0", "Mode": 0o444}}));
        } else if let Ok(rel) = src_path.strip_prefix(&paths.values) {
            let value = c.value_files.iter().find(|(p, _)| p == src_path).map(|(_, v)| v.clone()).unwrap_or_default();
            let name = format!("{project}_{}_{}", config_key(rel), &Digest::of(value.as_bytes()).hex()[..12]);
            let id = swarm.ensure_secret(&name, value.as_bytes(), &labels).await?;
            secrets.push(json!({"SecretID": id, "SecretName": name,
                "File": {"Name": dst, "UID": "0", "GID": "0", "Mode": 0o444}}));
        } else {
            return Err(refusal(sp, &format!("it mounts the host path {src}")));
        }
    }
    // tmpfs size and mode options are not carried over yet (the host target carries them).
    for target in c.tmpfs.keys() {
        mounts.push(json!({"Type": "tmpfs", "Target": target}));
    }
    // The config hash on the tasks too: a gate counts only tasks of the spec it waits for.
    let hash = format!("{}-{}", sp.config_hash, &Digest::of(image.as_bytes()).hex()[..8]);
    let mut container_labels = c.labels.clone();
    container_labels.insert(HASH.into(), hash.clone());
    let mut container = json!({
        "Image": image,
        "Env": c.env,
        "Labels": container_labels,
        "Mounts": mounts,
        "Configs": configs,
        "Secrets": secrets,
    });
    if let Some(e) = &c.entrypoint {
        container["Command"] = json!(e);
    }
    if let Some(cmd) = &c.command {
        container["Args"] = json!(cmd);
    }
    if let Some(u) = &c.user {
        container["User"] = json!(u);
    }
    if let Some(w) = &c.working_dir {
        container["Dir"] = json!(w);
    }
    if let Some(h) = &c.healthcheck {
        // Nanoseconds; an absent field keeps the image's (as on one host).
        let mut hc = json!({"Test": h.test});
        for (key, ms) in [("Interval", h.interval_ms), ("Timeout", h.timeout_ms), ("StartPeriod", h.start_period_ms)] {
            if let Some(ms) = ms {
                hc[key] = json!(ms * 1_000_000);
            }
        }
        if let Some(r) = h.retries {
            hc["Retries"] = json!(r);
        }
        container["HealthCheck"] = hc;
    }
    let mut task = json!({"ContainerSpec": container});
    let (condition, attempts) = match (sp.kind, c.restart.as_deref()) {
        (Kind::Service, Some("no")) => ("none", None),
        (Kind::Service, Some(r)) if r.starts_with("on-failure") => {
            ("on-failure", r.split_once(':').and_then(|(_, n)| n.parse::<u64>().ok()))
        }
        (Kind::Service, _) => ("any", None),
        _ => ("none", None),
    };
    task["RestartPolicy"] = match attempts {
        Some(n) => json!({"Condition": condition, "MaxAttempts": n}),
        None => json!({"Condition": condition}),
    };
    if let Some(l) = &c.limits {
        let mut limits = json!({});
        if let Some(n) = l.nano_cpus {
            limits["NanoCPUs"] = json!(n);
        }
        if let Some(m) = l.memory_bytes {
            limits["MemoryBytes"] = json!(m);
        }
        task["Resources"] = json!({"Limits": limits});
    }
    if let Some(l) = &c.logging {
        task["LogDriver"] = json!({"Name": l.driver, "Options": l.options});
    }
    task["Networks"] = json!(
        c.networks
            .iter()
            .map(|(net, aliases)| {
                let mut all = vec![sp.name.clone()];
                all.extend(aliases.iter().cloned());
                json!({"Target": net, "Aliases": all})
            })
            .collect::<Vec<_>>()
    );
    let mut spec_labels = labels.clone();
    spec_labels.insert(RELEASE.into(), manifest.release.to_string());
    spec_labels.insert(HASH.into(), hash);
    spec_labels.insert("com.docker.stack.image".into(), c.image.clone());
    let mut spec = json!({"Labels": spec_labels, "TaskTemplate": task});
    let settings = manifest.swarm.get(&sp.name).cloned().unwrap_or_default();
    if !settings.placement.is_empty() {
        spec["TaskTemplate"]["Placement"] = json!({"Constraints": settings.placement});
    }
    if sp.kind == Kind::Service {
        spec["Name"] = json!(format!("{project}_{}", sp.name));
        spec["Mode"] = json!({"Replicated": {"Replicas": settings.replicas.unwrap_or(1)}});
        // Swarm's own rollback stays as a backstop if this process dies mid-update.
        spec["UpdateConfig"] = json!({"Order": settings.order.as_deref().unwrap_or("stop-first"),
            "FailureAction": "rollback", "Parallelism": 1});
        let mut ports = Vec::new();
        for p in &c.ports {
            if !p.host_ip.is_empty() && p.host_ip != "0.0.0.0" && p.host_ip != "::" {
                reporter.event(&Event::Info {
                    message: format!(
                        "warning: {}: port {}:{} is published on every interface of the node that runs the task \
                         (Swarm publishes in host mode without an address)",
                        sp.name, p.host_ip, p.host_port
                    ),
                });
            }
            ports.push(json!({"Protocol": p.protocol, "TargetPort": p.container_port,
                "PublishedPort": p.host_port, "PublishMode": "host"}));
        }
        spec["EndpointSpec"] = json!({"Mode": opts.endpoint_mode, "Ports": ports});
    } else {
        spec["Name"] = json!(format!("{project}_{}_r{}", sp.name, manifest.release));
        spec["Mode"] = json!({"ReplicatedJob": {"MaxConcurrent": 1, "TotalCompletions": 1}});
    }
    Ok(spec)
}

/// `conf/site.conf` -> `conf_site.conf` (Swarm object names: letters, digits, `-`, `_`, `.`).
fn config_key(rel: &Path) -> String {
    rel.display()
        .to_string()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '_' })
        .collect()
}

/// What `installer status --target swarm` shows.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SwarmStatus {
    /// The newest record.
    pub release: Option<Record>,
    /// Per service: name, running and desired tasks, image.
    pub services: Vec<(String, u64, u64, String)>,
    /// Every service has its tasks running.
    pub healthy: bool,
}

/// The stack's services in the swarm and the newest release record.
///
/// # Errors
/// Docker errors.
pub async fn status<S: Swarm>(swarm: &S, project: &str) -> Result<SwarmStatus, InstallError> {
    let release = records(swarm, project).await?.pop();
    let mut services = Vec::new();
    for s in swarm.services(project).await? {
        if s["Spec"]["Mode"]["Replicated"].is_null() {
            continue;
        }
        services.push((
            s["Spec"]["Name"].as_str().unwrap_or_default().to_string(),
            s["ServiceStatus"]["RunningTasks"].as_u64().unwrap_or(0),
            s["ServiceStatus"]["DesiredTasks"].as_u64().unwrap_or(0),
            s["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"].as_str().unwrap_or_default().to_string(),
        ));
    }
    let healthy = !services.is_empty() && services.iter().all(|(_, r, d, _)| r >= d);
    Ok(SwarmStatus { release, services, healthy })
}

/// The file in the state directory naming the project the last swarm apply installed (so
/// `status --target swarm` needs no bundle).
const PROJECT_FILE: &str = "swarm-project";

/// The project of the last swarm apply from this state directory.
#[must_use]
pub fn project_from(state: &StateDir) -> Option<String> {
    std::fs::read_to_string(state.root().join(PROJECT_FILE))
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

fn remember_project(state: &StateDir, project: &str) -> Result<(), InstallError> {
    let path = state.root().join(PROJECT_FILE);
    manifests::fsutil::write_atomic(&path, project.as_bytes(), 0o600).map_err(InstallError::state(&path))
}
