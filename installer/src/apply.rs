//! `installer apply`: a signed bundle to a running, healthy stack, journaled so that an
//! interrupted apply (Ctrl-C, kill -9, SSH drop, power loss) resumes and converges.
//!
//! 1. lock the state dir; check the signature (nothing else is read before);
//! 2. policy (same product, no older release, not expired), operator values;
//! 3. look at the host (Docker reachable, images, layers, containers, completed migrations);
//! 4. plan (pure), preflight (host ports) — nothing has changed on the host up to here;
//! 5. one pass over the bundle: verify every entry, stream what Docker lacks, write config files;
//! 6. networks and volumes; services wave by wave (a wave's services in parallel), each gated:
//!    healthy / running / completed; migrations run once per release, recorded when they exit 0;
//! 7. record the release; remove the containers the new release replaced.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use manifests::{Digest, Manifest};
use tokio::sync::mpsc;

use crate::engine::{ContainerState, Engine, Health};
use crate::error::InstallError;
use crate::load::{FilesTarget, ImageAction};
use crate::plan::{self, Action, Gate, HostState, Kind, Plan, ServicePlan, labels};
use crate::report::{Event, Reporter};
use crate::state::{
    HistoryEntry, Installed, InstalledService, Journal, JournalStep, MigrationRecord, StateDir, StepStatus,
};
use crate::verify::{self, SignedBundle, VerifiedBundle};
use crate::{preflight, trust, values};

/// What to apply.
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// The bundle file.
    pub bundle: PathBuf,
    /// Extra trusted keys (remembered once a bundle they signed is applied).
    pub keys: Vec<PathBuf>,
    /// State directory.
    pub state_dir: PathBuf,
    /// Operator values file.
    pub values_file: Option<PathBuf>,
    /// Allow a lower release counter than the installed one.
    pub allow_downgrade: bool,
    /// Take over a project whose containers this state directory did not create.
    pub adopt: bool,
}

/// The result of an apply.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Outcome {
    /// Release installed.
    pub release: u64,
    /// Blob bytes sent to Docker.
    pub bytes_sent: u64,
    /// Blob bytes the host already had.
    pub bytes_skipped: u64,
    /// Services created or recreated.
    pub changed: Vec<String>,
    /// Services left running.
    pub kept: Vec<String>,
    /// Migrations run.
    pub migrations_run: Vec<String>,
}

struct Ctx<'a, E> {
    engine: &'a E,
    reporter: &'a dyn Reporter,
    state: &'a StateDir,
    manifest: &'a Manifest,
    journal: Mutex<Journal>,
    health_timeout: Duration,
}

impl<'a, E: Engine> Ctx<'a, E> {
    fn new(
        engine: &'a E,
        reporter: &'a dyn Reporter,
        state: &'a StateDir,
        manifest: &'a Manifest,
        journal: Journal,
    ) -> Self {
        let health_timeout = Duration::from_millis(manifest.health.timeout_ms);
        Self { engine, reporter, state, manifest, journal: Mutex::new(journal), health_timeout }
    }

    fn record(&self, name: &str, status: StepStatus) -> Result<(), InstallError> {
        let mut j = self.journal.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        j.steps.push(JournalStep { name: name.to_string(), status, at: manifests::time::now() });
        self.state.save_journal(&j)
    }
    fn service(&self, service: &str, status: &str, detail: Option<String>) {
        self.reporter.event(&Event::Service { service: service.into(), status: status.into(), detail });
    }
}

/// Load the current host state the plan needs.
///
/// # Errors
/// Docker unreachable, unreadable state.
pub async fn host_state<E: Engine>(
    engine: &E,
    manifest: &Manifest,
    state: &StateDir,
) -> Result<HostState, InstallError> {
    let containers =
        engine.project_containers(&manifest.project).await?.into_iter().map(|c| (c.name.clone(), c)).collect();
    let kind = engine.info().await?.kind;
    let earlier = state.release_manifests();
    let known: Vec<&manifests::Image> =
        manifest.images.iter().chain(earlier.iter().flat_map(|m| m.images.iter())).collect();
    Ok(HostState {
        engine: kind,
        holdings: kind.strategy().holdings(&engine.images().await?, &known),
        containers,
        migrations: state.migrations()?,
    })
}

/// Digests of the bundled stack files, by path relative to the compose file.
#[must_use]
pub fn file_digests(manifest: &Manifest) -> BTreeMap<String, Digest> {
    manifest
        .entries
        .iter()
        .filter_map(|e| {
            e.path
                .strip_prefix(manifests::layout::STACK_FILES_DIR)
                .map(|r| (r.trim_start_matches('/').to_string(), e.sha256))
        })
        .collect()
}

/// Refuse to install over a project that another state directory (or `docker compose`) put on
/// this host: this state directory has no record of its releases, values or migrations (a
/// migration whose container was pruned would run again), and two state directories would then
/// each believe they own it. An apply this state directory started (even one that never
/// finished) leaves a journal before it changes anything, so a rerun is never refused.
///
/// # Errors
/// [`InstallError::NotOurs`] unless `adopt`.
pub fn check_ownership(
    manifest: &Manifest,
    state: &StateDir,
    host: &HostState,
    adopt: bool,
) -> Result<(), InstallError> {
    if adopt || host.containers.is_empty() || state.installed()?.is_some() || state.journal()?.manifest_sha256.is_some()
    {
        return Ok(());
    }
    Err(InstallError::NotOurs {
        project: manifest.project.clone(),
        containers: host.containers.keys().cloned().collect(),
        state_dir: state.root().to_path_buf(),
    })
}

/// Refuse bundles that policy forbids.
///
/// # Errors
/// [`InstallError::Policy`].
pub fn check_policy(
    manifest: &Manifest,
    installed: Option<&Installed>,
    allow_downgrade: bool,
) -> Result<(), InstallError> {
    if let Some(inst) = installed {
        if inst.product != manifest.product {
            return Err(InstallError::Policy(format!(
                "this host runs product `{}`, but the bundle is for `{}`",
                inst.product, manifest.product
            )));
        }
        if manifest.release < inst.release && !allow_downgrade {
            return Err(InstallError::Policy(format!(
                "the bundle is release {} ({}), older than the installed release {} ({}); pass --allow-downgrade to install it anyway",
                manifest.release, manifest.version, inst.release, inst.version
            )));
        }
    }
    if let Some(expires) = manifest.expires {
        let now = manifests::time::now();
        if now > expires {
            return Err(InstallError::Policy(format!(
                "the bundle expired at {}; this host's clock says {} (if the clock is wrong, fix it first)",
                manifests::time::rfc3339(expires),
                manifests::time::rfc3339(now)
            )));
        }
    }
    Ok(())
}

/// Apply a bundle.
///
/// # Errors
/// See [`InstallError`]; each leaves the journal saying how far the apply got.
pub async fn apply<E: Engine>(
    opts: &ApplyOptions,
    engine: &E,
    reporter: &dyn Reporter,
) -> Result<Outcome, InstallError> {
    let started = Instant::now();
    let state = StateDir::new(opts.state_dir.clone());
    let _lock = state.lock()?;
    let keys = trust::trusted_keys(&state.keys_dir(), &opts.keys)?;
    let signed = verify::open(&opts.bundle, &keys)?;
    // From here the manifest is trusted, so every outcome goes into the history.
    let manifest = signed.manifest().clone();
    let key_id = signed.signer.key_id.to_string();
    let previous = state.installed()?.map(|i| i.release);
    let result = apply_signed(opts, engine, reporter, &state, &keys, signed, started).await;
    let mut overrides = Vec::new();
    if let Some(p) = previous.filter(|p| opts.allow_downgrade && manifest.release < *p) {
        overrides.push(format!("--allow-downgrade from release {p}"));
    }
    if opts.adopt && previous.is_none() {
        overrides.push("--adopt".to_string());
    }
    record_history(&state, &manifest, key_id, previous, &result, overrides);
    result
}

/// Append the outcome to the history. The history must never hide the apply's own result, so a
/// failure to write it is only logged.
fn record_history(
    state: &StateDir,
    manifest: &Manifest,
    key_id: String,
    previous: Option<u64>,
    result: &Result<Outcome, InstallError>,
    overrides: Vec<String>,
) {
    let entry = HistoryEntry {
        at: manifests::time::now(),
        product: manifest.product.clone(),
        version: manifest.version.clone(),
        release: manifest.release,
        previous_release: previous,
        key_id,
        outcome: match result {
            Ok(_) => "applied".to_string(),
            Err(e) => manifests::Diagnose::exit(e).name().to_string(),
        },
        exit_code: result.as_ref().map_or_else(|e| manifests::Diagnose::exit(e).code(), |_| 0),
        // The first line only: job logs that follow it are the job's business, not the history's.
        error: result.as_ref().err().map(|e| e.to_string().lines().next().unwrap_or_default().to_string()),
        operator: operator_name(),
        overrides,
    };
    if let Err(e) = state.append_history(&entry) {
        tracing::warn!("could not record the apply in the history: {e}");
    }
}

/// Who ran the installer: the sudo user if any, else the login name.
fn operator_name() -> String {
    ["SUDO_USER", "USER", "LOGNAME"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|s| !s.is_empty()))
        .or_else(account_of_this_process)
        .unwrap_or_else(|| "unknown".into())
}

/// The account name of the process's real uid, from /proc and /etc/passwd (no libc call), for
/// shells that set no USER (cron, some SSH setups).
fn account_of_this_process() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let uid = status.lines().find_map(|l| l.strip_prefix("Uid:"))?.split_whitespace().next()?.to_string();
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let name = passwd.lines().map(|l| l.split(':').collect::<Vec<_>>()).find(|f| f.get(2) == Some(&uid.as_str()));
    Some(name.map_or_else(|| format!("uid {uid}"), |f| f[0].to_string()))
}

async fn apply_signed<E: Engine>(
    opts: &ApplyOptions,
    engine: &E,
    reporter: &dyn Reporter,
    state: &StateDir,
    keys: &manifests::TrustedKeys,
    signed: SignedBundle,
    started: Instant,
) -> Result<Outcome, InstallError> {
    let manifest = signed.manifest().clone();
    reporter.event(&Event::Verified {
        product: manifest.product.clone(),
        version: manifest.version.clone(),
        release: manifest.release,
        key_id: signed.signer.key_id.to_string(),
    });
    let installed = state.installed()?;
    check_policy(&manifest, installed.as_ref(), opts.allow_downgrade)?;
    let installed_before = installed.clone();
    let info = engine.info().await?;
    let host = host_state(engine, &manifest, state).await?;
    // Before the values: another state directory also lacks the site's saved values, and the
    // operator should hear about the directory, not about a missing password.
    check_ownership(&manifest, state, &host, opts.adopt)?;
    let saved = state.values()?;
    let values = values::resolve(&manifest, opts.values_file.as_deref(), &saved, &|k| std::env::var(k).ok())?;
    let digests = file_digests(&manifest);
    let the_plan = plan::plan(&manifest, &host, &values, &state.paths(manifest.release), &digests, true)
        .map_err(InstallError::Preflight)?;
    run_preflight(reporter, &manifest, &the_plan, &info, state, &host)?;
    check_external(engine, &the_plan).await?;

    // Nothing on the host has changed so far. From here on, every step is journaled.
    let mut journal = state.journal()?;
    if journal.manifest_sha256 == Some(signed.manifest_sha256) && !journal.finished {
        reporter.event(&Event::Resuming {
            steps_done: journal.steps.iter().filter(|s| s.status == StepStatus::Done).count(),
        });
    } else {
        journal = Journal::new(signed.manifest_sha256, manifest.release);
    }
    state.save_journal(&journal)?;
    let ctx = Ctx::new(engine, reporter, state, &manifest, journal);

    ctx.record("load-images", StepStatus::Started)?;
    let signer = signed.signer.clone();
    let (verified, bytes_sent, fallback) = load_images(&ctx, signed, &the_plan, &opts.bundle, keys).await?;
    ctx.record("load-images", StepStatus::Done)?;
    reporter.event(&Event::LoadDone { bytes_sent, bytes_skipped: the_plan.load.bytes_skipped, fallback });
    for k in &opts.keys {
        if let Ok(key) = trust::read_key(k)
            && key.key_id == signer.key_id
            && trust::remember(&state.keys_dir(), &key)?
        {
            reporter.event(&Event::KeyTrusted { fingerprint: key.fingerprint() });
        }
    }
    // Every entry matched a manifest signed by a trusted key: its rotation record is trusted too.
    if let Some(rotation) = &manifest.key_rotation {
        let key = manifests::PublicKey::from_file_string(&rotation.new_public_key, Path::new("bundle.json")).map_err(
            |e| InstallError::Key { path: opts.bundle.clone(), message: format!("key-rotation record: {e}") },
        )?;
        if trust::remember(&state.keys_dir(), &key)? {
            reporter.event(&Event::KeyTrusted { fingerprint: key.fingerprint() });
        }
    }
    state.save_values(&values)?;

    let outcome = Outcome {
        release: manifest.release,
        bytes_sent,
        bytes_skipped: the_plan.load.bytes_skipped,
        changed: vec![],
        kept: vec![],
        migrations_run: vec![],
    };
    converge(&ctx, &the_plan, &host, installed_before.is_some(), verified.manifest_sha256, started, outcome).await
}

/// Networks, volumes, services wave by wave, then record the release. On failure with a previous
/// release on the host, put it back.
async fn converge<E: Engine>(
    ctx: &Ctx<'_, E>,
    the_plan: &Plan,
    host: &HostState,
    has_previous: bool,
    manifest_sha256: Digest,
    started: Instant,
    mut outcome: Outcome,
) -> Result<Outcome, InstallError> {
    let (engine, reporter, state, manifest) = (ctx.engine, ctx.reporter, ctx.state, ctx.manifest);
    ctx.record("resources", StepStatus::Started)?;
    // External networks and volumes belong to someone else: checked before any change, never
    // created or removed here.
    for n in the_plan.stack.networks.iter().filter(|n| !n.external) {
        let labels = BTreeMap::from([
            (labels::PROJECT.to_string(), manifest.project.clone()),
            (labels::NETWORK.to_string(), n.key.clone()),
        ]);
        engine.ensure_network(n, &labels).await?;
    }
    for v in the_plan.stack.volumes.iter().filter(|v| !v.external) {
        let labels = BTreeMap::from([
            (labels::PROJECT.to_string(), manifest.project.clone()),
            (labels::VOLUME.to_string(), v.key.clone()),
        ]);
        engine.ensure_volume(v, &labels).await?;
    }
    ctx.record("resources", StepStatus::Done)?;

    if let Err(cause) = run_waves(ctx, the_plan, host, &mut outcome).await {
        // Without Docker nothing can be put back; a re-run resumes instead. On a first install
        // there is no previous release to go back to.
        if matches!(cause, InstallError::DockerUnreachable { .. }) || !has_previous {
            return Err(cause);
        }
        return Err(rollback(ctx, the_plan, cause).await);
    }

    // The new release is up: the containers it replaced can go.
    for wave in &the_plan.waves {
        for sp in wave {
            if let Some(prev) = engine.container(&previous_name(&sp.container)).await? {
                engine.remove(&prev.id).await?;
            }
        }
    }
    let installed = Installed {
        product: manifest.product.clone(),
        project: manifest.project.clone(),
        release: manifest.release,
        version: manifest.version.clone(),
        manifest_sha256,
        applied_at: manifests::time::now(),
        services: the_plan
            .waves
            .iter()
            .flatten()
            .map(|sp| {
                (
                    sp.name.clone(),
                    InstalledService {
                        container: sp.container.clone(),
                        config_hash: sp.config_hash.clone(),
                        image: sp.spec.image.clone(),
                        one_shot: sp.gate == Gate::Completed,
                    },
                )
            })
            .collect(),
    };
    state.set_installed(&installed)?;
    {
        let mut j = ctx.journal.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        j.finished = true;
        state.save_journal(&j)?;
    }
    reporter.event(&Event::Applied {
        product: manifest.product.clone(),
        version: manifest.version.clone(),
        release: manifest.release,
        seconds: started.elapsed().as_secs_f64(),
    });
    Ok(outcome)
}

/// Every host check, reported line by line, then the ports; stops at the first failure.
fn run_preflight(
    reporter: &dyn Reporter,
    manifest: &Manifest,
    the_plan: &Plan,
    info: &crate::engine::EngineInfo,
    state: &StateDir,
    host: &HostState,
) -> Result<(), InstallError> {
    let report = preflight::check_host(manifest, the_plan, info, state.root());
    reporter.event(&Event::Preflight { checks: report.checks.clone() });
    report.result()?;
    preflight::check_ports(the_plan, host)
}

async fn run_waves<E: Engine>(
    ctx: &Ctx<'_, E>,
    the_plan: &Plan,
    host: &HostState,
    outcome: &mut Outcome,
) -> Result<(), InstallError> {
    for wave in &the_plan.waves {
        let results = futures_util::future::join_all(wave.iter().map(|sp| run_service(ctx, sp, host))).await;
        for (sp, r) in wave.iter().zip(results) {
            r?;
            match (&sp.action, sp.kind) {
                (Action::Run, Kind::Migration | Kind::Backup) => outcome.migrations_run.push(sp.name.clone()),
                (Action::Create | Action::Recreate { .. } | Action::Run, _) => outcome.changed.push(sp.name.clone()),
                (Action::Keep, _) => outcome.kept.push(sp.name.clone()),
                (Action::Skip { .. }, _) => {}
            }
        }
    }
    Ok(())
}

/// Put the previous release back after the new one failed: every container set aside is
/// renamed back and started (replacing the new one), services new in this release are removed,
/// and the restored services must pass their gates again. Volumes are never touched.
async fn rollback<E: Engine>(ctx: &Ctx<'_, E>, the_plan: &Plan, cause: InstallError) -> InstallError {
    let mut restored = Vec::new();
    for sp in the_plan.waves.iter().flatten().rev() {
        let step = async {
            let previous = ctx.engine.container(&previous_name(&sp.container)).await?;
            let current = ctx.engine.container(&sp.container).await?;
            match (previous, current) {
                (Some(prev), current) => {
                    if let Some(cur) = current {
                        ctx.engine.remove(&cur.id).await?;
                    }
                    ctx.engine.rename(&prev.id, &sp.container).await?;
                    ctx.engine.start(&prev.id).await?;
                    ctx.service(&sp.name, "rolled back", Some("previous container started again".into()));
                    Ok(Some(prev.id))
                }
                (None, Some(cur)) if sp.action == Action::Create => {
                    ctx.engine.remove(&cur.id).await?;
                    ctx.service(&sp.name, "removed", Some("new in the failed release".into()));
                    Ok(None)
                }
                _ => Ok(None),
            }
        };
        match step.await {
            Ok(Some(id)) => restored.push((sp, id)),
            Ok(None) => {}
            Err(e) => return InstallError::RollbackFailed { cause: Box::new(cause), error: Box::new(e) },
        }
    }
    if restored.is_empty() {
        return cause;
    }
    restored.reverse();
    for (sp, id) in &restored {
        if let Err(e) = wait_gate(ctx, sp, id).await {
            return InstallError::RollbackFailed { cause: Box::new(cause), error: Box::new(e) };
        }
    }
    let services = restored.iter().map(|(sp, _)| sp.name.as_str()).collect::<Vec<_>>().join(", ");
    InstallError::RolledBack { cause: Box::new(cause), services }
}

/// Name under which a replaced container waits until the new release is healthy.
#[must_use]
pub fn previous_name(container: &str) -> String {
    format!("{container}-previous")
}

/// The pass over the bundle, with Docker on the other end of the stream when images are needed.
/// If Docker refuses an archive without the layers it has, the pass runs again with every layer.
async fn load_images<E: Engine>(
    ctx: &Ctx<'_, E>,
    signed: SignedBundle,
    the_plan: &Plan,
    path: &std::path::Path,
    keys: &manifests::TrustedKeys,
) -> Result<(VerifiedBundle, u64, bool), InstallError> {
    let load = &the_plan.load;
    ctx.reporter.event(&Event::LoadStart {
        bytes_to_send: load.bytes_to_send,
        bytes_skipped: load.bytes_skipped,
        images_to_load: load.images.iter().filter(|i| i.action == ImageAction::Load).count(),
        images_present: load.images.iter().filter(|i| i.action == ImageAction::Present).count(),
    });
    match run_pass(ctx, signed, load).await {
        // An engine that wants a layer file we left out (graph driver: "no such file"; containerd
        // store: "not found" or an unpack error; Podman: "missing"): once more, with every layer.
        Err(InstallError::Load { message })
            if load.images.iter().any(|i| i.layers_skipped > 0 && i.action == ImageAction::Load)
                && ["no such file", "not found", "Error unpacking", "missing"].iter().any(|m| message.contains(m)) =>
        {
            ctx.reporter.event(&Event::Info {
                message: format!("the engine needs every layer ({message}); sending all layers of the new images"),
            });
            let kind = ctx.engine.info().await?.kind;
            let holdings = kind.strategy().holdings(&ctx.engine.images().await?, &[]);
            let full = crate::load::plan_load(ctx.manifest, kind.strategy(), &holdings, false);
            let signed = verify::open(path, keys)?;
            let (v, _) = run_pass(ctx, signed, &full).await?;
            tag_present(ctx, &the_plan.load).await?;
            Ok((v, full.bytes_to_send, true))
        }
        Err(e) => Err(e),
        Ok((v, _)) => {
            tag_present(ctx, load).await?;
            Ok((v, load.bytes_to_send, false))
        }
    }
}

async fn tag_present<E: Engine>(ctx: &Ctx<'_, E>, load: &crate::load::LoadPlan) -> Result<(), InstallError> {
    for img in &load.images {
        if !img.reference.contains('@') {
            ctx.engine.tag(&img.image_id, &img.reference).await?;
        }
    }
    Ok(())
}

async fn run_pass<E: Engine>(
    ctx: &Ctx<'_, E>,
    signed: SignedBundle,
    load: &crate::load::LoadPlan,
) -> Result<(VerifiedBundle, u64), InstallError> {
    let SignedBundle { path, reader, signer, manifest_sha256 } = signed;
    let manifest = reader.manifest().clone();
    let needs_docker = !load.trailer.is_empty();
    let (tx, rx) = mpsc::channel(8);
    let files = FilesTarget { release_dir: ctx.state.release_dir(manifest.release) };
    if let Some(parent) = files.release_dir.parent() {
        std::fs::create_dir_all(parent).map_err(InstallError::state(parent))?;
    }
    let load_owned = load.clone();
    let reporter_bytes = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = reporter_bytes.clone();
    let blocking = tokio::task::spawn_blocking(move || {
        let progress = move |n: u64| {
            counter.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        };
        crate::load::pass(reader, &load_owned, needs_docker.then_some(tx), Some(&files), &progress)
    });
    let docker_side = async { if needs_docker { ctx.engine.load(rx).await.map(Some) } else { Ok(None) } };
    let ticker = async {
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let n = reporter_bytes.swap(0, std::sync::atomic::Ordering::Relaxed);
            if n > 0 {
                ctx.reporter.event(&Event::LoadProgress { bytes: n });
            }
        }
    };
    let (pass_result, docker_result) = tokio::select! {
        r = async { tokio::join!(blocking, docker_side) } => r,
        () = ticker => unreachable!("the ticker never ends"),
    };
    let n = reporter_bytes.swap(0, std::sync::atomic::Ordering::Relaxed);
    if n > 0 {
        ctx.reporter.event(&Event::LoadProgress { bytes: n });
    }
    let pass_result =
        pass_result.map_err(|e| InstallError::Load { message: format!("the bundle reader stopped: {e}") })?;
    // A bundle problem is the real cause even if Docker also complained about the aborted upload.
    let report = match pass_result {
        Err(manifests::BundleError::Sink { .. }) if docker_result.is_err() => {
            return Err(docker_result.err().unwrap_or(InstallError::Load { message: "upload aborted".into() }));
        }
        Err(source) => return Err(InstallError::Bundle { path, source }),
        Ok(r) => r,
    };
    if let Some(lines) = docker_result? {
        for l in lines {
            ctx.reporter.event(&Event::Info { message: l });
        }
    }
    Ok((VerifiedBundle::after_pass(manifest, manifest_sha256, signer), report.bytes_streamed))
}

async fn run_service<E: Engine>(ctx: &Ctx<'_, E>, sp: &ServicePlan, host: &HostState) -> Result<(), InstallError> {
    match &sp.action {
        Action::Skip { reason } => {
            ctx.service(&sp.name, "skip", Some(reason.clone()));
            Ok(())
        }
        Action::Keep => {
            ctx.service(&sp.name, "keep", Some("unchanged".into()));
            let id = host.containers.get(&sp.container).map(|c| c.id.clone()).unwrap_or_default();
            wait_gate(ctx, sp, &id).await
        }
        Action::Create | Action::Recreate { .. } => {
            let step = format!("service:{}", sp.name);
            ctx.record(&step, StepStatus::Started)?;
            ctx.service(
                &sp.name,
                if sp.action == Action::Create { "create" } else { "recreate" },
                match &sp.action {
                    Action::Recreate { reason } => Some(reason.clone()),
                    _ => None,
                },
            );
            if let Some(old) = ctx.engine.container(&sp.container).await? {
                set_aside(ctx, &old, &sp.container, sp.spec.runtime.stop_grace_period_ms).await?;
            }
            let id = create_and_start(ctx, sp).await?;
            wait_gate(ctx, sp, &id).await.inspect_err(|_| {
                let _ = ctx.record(&step, StepStatus::Failed);
            })?;
            ctx.record(&step, StepStatus::Done)
        }
        Action::Run => run_job(ctx, sp).await,
    }
}

/// Site data directories (created, never removed) and files holding site values that secrets
/// and configs mount (0444 inside a 0700 directory, written to a temp file and renamed).
fn prepare_host_paths(spec: &crate::engine::ContainerSpec) -> Result<(), InstallError> {
    use std::os::unix::fs::PermissionsExt;
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |e: std::io::Error| InstallError::Docker {
            action: String::new(),
            message: format!("{}: {e}", path.display()),
        }
    };
    for dir in &spec.site_dirs {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
    }
    for (file, value) in &spec.value_files {
        let dir = file.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io(dir))?;
        let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io(dir))?;
        std::io::Write::write_all(&mut tmp, value.as_bytes()).map_err(io(file))?;
        tmp.as_file().sync_all().map_err(io(file))?;
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o444)).map_err(io(file))?;
        tmp.persist(file).map_err(|e| io(file)(e.error))?;
    }
    Ok(())
}

/// Every `external` network and volume must exist before anything changes.
async fn check_external<E: Engine>(engine: &E, the_plan: &Plan) -> Result<(), InstallError> {
    let mut missing = Vec::new();
    for n in the_plan.stack.networks.iter().filter(|n| n.external) {
        if !engine.network_exists(&n.name).await? {
            missing.push(format!("network `{}`", n.name));
        }
    }
    for v in the_plan.stack.volumes.iter().filter(|v| v.external) {
        if !engine.volume_exists(&v.name).await? {
            missing.push(format!("volume `{}`", v.name));
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(InstallError::Preflight(format!(
            "the stack uses {} that must exist already (declared `external`), and Docker does not have {}; nothing was changed",
            missing.join(", "),
            if missing.len() == 1 { "it" } else { "them" }
        )))
    }
}

/// Stop the current container and keep it under another name until the new release is healthy.
/// If a container is already set aside, an earlier apply failed or was interrupted after
/// replacing this service: the set-aside one is the last good release, so it is kept and the
/// current one (from the failed attempt) is removed.
async fn set_aside<E: Engine>(
    ctx: &Ctx<'_, E>,
    current: &ContainerState,
    name: &str,
    grace_ms: Option<u64>,
) -> Result<(), InstallError> {
    let previous = previous_name(name);
    // The service's `stop_grace_period` (compose's default: 10 s).
    let grace = grace_ms.map_or(10, |ms| i64::try_from(ms.div_ceil(1000)).unwrap_or(i64::MAX));
    if ctx.engine.container(&previous).await?.is_some() {
        ctx.engine.stop(&current.id, grace).await?;
        return ctx.engine.remove(&current.id).await;
    }
    ctx.engine.stop(&current.id, grace).await?;
    ctx.engine.rename(&current.id, &previous).await
}

async fn create_and_start<E: Engine>(ctx: &Ctx<'_, E>, sp: &ServicePlan) -> Result<String, InstallError> {
    // Name the service, not the container ID, in what the operator reads.
    let named = |e: InstallError, verb: &str| match e {
        InstallError::Docker { message, .. } => {
            InstallError::Docker { action: format!("{verb} service `{}` ({})", sp.name, sp.container), message }
        }
        other => other,
    };
    prepare_host_paths(&sp.spec).map_err(|e| named(e, "prepare the host paths of"))?;
    let id = ctx.engine.create(&sp.spec).await.map_err(|e| named(e, "create"))?;
    if let Err(e) = ctx.engine.start(&id).await {
        let _ = ctx.engine.remove(&id).await;
        if let InstallError::Docker { message, .. } = &e
            && (message.contains("address already in use") || message.contains("port is already allocated"))
        {
            let port = sp
                .spec
                .ports
                .iter()
                .find(|p| message.contains(&format!(":{}", p.host_port)))
                .or_else(|| sp.spec.ports.first());
            if let Some(p) = port {
                return Err(InstallError::PortInUse {
                    service: sp.name.clone(),
                    ip: p.host_ip.clone(),
                    port: p.host_port,
                });
            }
        }
        return Err(named(e, "start"));
    }
    ctx.service(&sp.name, "started", None);
    Ok(id)
}

async fn run_job<E: Engine>(ctx: &Ctx<'_, E>, sp: &ServicePlan) -> Result<(), InstallError> {
    let release = ctx.manifest.release;
    let step = format!("job:{}:r{release}", sp.name);
    let kind = match sp.kind {
        Kind::Migration => "migration",
        Kind::Backup => "backup",
        _ => "job",
    };
    // A container of this job for this release with the same config is the one an interrupted
    // apply started: adopt its result instead of running the job a second time.
    let mut adopted = None;
    if let Some(existing) = ctx.engine.container(&sp.container).await? {
        let ours = existing.labels.get(labels::RELEASE) == Some(&release.to_string())
            && existing.labels.get(labels::CONFIG_HASH) == Some(&sp.config_hash);
        if ours && (existing.running || existing.exit_code == Some(0)) {
            ctx.service(&sp.name, "resume", Some(format!("adopting the {kind} started by the interrupted apply")));
            adopted = Some(existing.id.clone());
        } else {
            ctx.engine.remove(&existing.id).await?;
        }
    }
    ctx.record(&step, StepStatus::Started)?;
    let id = match adopted {
        Some(id) => id,
        None => {
            ctx.service(&sp.name, "run", Some(kind.to_string()));
            create_and_start(ctx, sp).await?
        }
    };
    let code = ctx.engine.wait_exit(&id).await?;
    if code != 0 {
        ctx.record(&step, StepStatus::Failed)?;
        let logs = ctx.engine.logs(&id, 20).await.unwrap_or_default();
        return Err(InstallError::JobFailed { kind, service: sp.name.clone(), code, logs: indent(&logs) });
    }
    if matches!(sp.kind, Kind::Migration | Kind::Backup) {
        let mut m = ctx.state.migrations()?;
        m.done.insert(
            crate::state::Migrations::key(release, &sp.name),
            MigrationRecord {
                release,
                service: sp.name.clone(),
                container: sp.container.clone(),
                finished_at: manifests::time::now(),
            },
        );
        ctx.state.save_migrations(&m)?;
    }
    ctx.record(&step, StepStatus::Done)?;
    ctx.service(&sp.name, "completed", None);
    Ok(())
}

fn indent(text: &str) -> String {
    if text.is_empty() {
        return "  (no output)".into();
    }
    text.lines().map(|l| format!("  | {l}")).collect::<Vec<_>>().join("\n")
}

/// Wait until a service passes its gate, or fail with the evidence.
async fn wait_gate<E: Engine>(ctx: &Ctx<'_, E>, sp: &ServicePlan, id: &str) -> Result<(), InstallError> {
    let deadline = Instant::now() + ctx.health_timeout;
    let timeout_secs = ctx.health_timeout.as_secs();
    let mut announced = false;
    loop {
        let Some(c) = ctx.engine.container(id).await? else {
            return Err(InstallError::Unhealthy {
                service: sp.name.clone(),
                reason: "container disappeared".into(),
                timeout_secs,
                last_output: String::new(),
            });
        };
        if !c.running {
            let logs = ctx.engine.logs(id, 20).await.unwrap_or_default();
            return Err(InstallError::Unhealthy {
                service: sp.name.clone(),
                reason: format!("exited with code {}", c.exit_code.unwrap_or(-1)),
                timeout_secs,
                last_output: format!("\n{}", indent(&logs)),
            });
        }
        match (sp.gate, c.health) {
            (_, Health::Healthy) | (Gate::Running | Gate::Completed, Health::None) => {
                ctx.service(&sp.name, if c.health == Health::Healthy { "healthy" } else { "running" }, None);
                return Ok(());
            }
            (Gate::Healthy, Health::None) => {
                ctx.service(&sp.name, "running", Some("no healthcheck: running counts as up".into()));
                return Ok(());
            }
            (_, Health::Unhealthy) => {
                return Err(InstallError::Unhealthy {
                    service: sp.name.clone(),
                    reason: "became unhealthy".into(),
                    timeout_secs,
                    last_output: c.health_output.unwrap_or_default(),
                });
            }
            (_, Health::Starting) => {}
        }
        if Instant::now() >= deadline {
            return Err(InstallError::Unhealthy {
                service: sp.name.clone(),
                reason: format!("did not become healthy within {timeout_secs}s"),
                timeout_secs,
                last_output: c.health_output.unwrap_or_else(|| "(no health check has finished yet)".into()),
            });
        }
        if !announced {
            ctx.service(&sp.name, "waiting", Some("for its healthcheck".into()));
            announced = true;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// `installer plan`: everything `apply` decides, without changing anything (no lock, no journal,
/// no Docker writes).
///
/// # Errors
/// Signature, policy, values, Docker unreachable.
pub async fn plan_only<E: Engine>(opts: &ApplyOptions, engine: &E) -> Result<PlanReport, InstallError> {
    let state = StateDir::new(opts.state_dir.clone());
    let keys = trust::trusted_keys(&state.keys_dir(), &opts.keys)?;
    let signed = verify::open(&opts.bundle, &keys)?;
    let manifest = signed.manifest().clone();
    check_policy(&manifest, state.installed()?.as_ref(), opts.allow_downgrade)?;
    let info = engine.info().await?;
    let host = host_state(engine, &manifest, &state).await?;
    check_ownership(&manifest, &state, &host, opts.adopt)?;
    let values = values::resolve(&manifest, opts.values_file.as_deref(), &state.values()?, &|k| std::env::var(k).ok())?;
    let plan = plan::plan(&manifest, &host, &values, &state.paths(manifest.release), &file_digests(&manifest), true)
        .map_err(InstallError::Preflight)?;
    let mut preflight = preflight::check_host(&manifest, &plan, &info, state.root());
    preflight.checks.push(preflight::ports_line(&plan, &host));
    Ok(PlanReport { plan, preflight })
}

/// What `installer plan` shows: the plan and every preflight line.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PlanReport {
    /// The plan.
    #[serde(flatten)]
    pub plan: Plan,
    /// The host checks.
    pub preflight: preflight::Report,
}

/// Human rendering of a plan.
#[must_use]
pub fn render_plan(report: &PlanReport) -> String {
    use std::fmt::Write;
    let p = &report.plan;
    let mut s = String::new();
    let _ = writeln!(s, "plan for {} {} (release {})", p.product, p.version, p.release);
    let _ = writeln!(
        s,
        "images: send {}, skip {} already on this host",
        manifests::display::human_bytes(p.load.bytes_to_send),
        manifests::display::human_bytes(p.load.bytes_skipped)
    );
    for i in &p.load.images {
        let _ = writeln!(
            s,
            "  {:<8} {} ({} layers to send, {} present)",
            match i.action {
                ImageAction::Present => "present",
                ImageAction::Load => "load",
            },
            i.reference,
            i.layers_sent,
            i.layers_skipped
        );
    }
    for (n, wave) in p.waves.iter().enumerate() {
        let _ = writeln!(s, "wave {}:", n + 1);
        for sp in wave {
            let action = match &sp.action {
                Action::Create => "create".to_string(),
                Action::Recreate { reason } => format!("recreate ({reason})"),
                Action::Keep => "keep (unchanged)".to_string(),
                Action::Run => "run".to_string(),
                Action::Skip { reason } => format!("skip ({reason})"),
            };
            let _ = writeln!(s, "  {:<12} {:<10} {action}", sp.name, format!("{:?}", sp.kind).to_lowercase());
        }
    }
    let _ = writeln!(s, "preflight:");
    s.push_str(&report.preflight.render());
    s
}

/// What `installer rollback` needs.
#[derive(Debug, Clone)]
pub struct RollbackOptions {
    /// State directory.
    pub state_dir: PathBuf,
    /// Extra trusted keys.
    pub keys: Vec<PathBuf>,
}

/// `installer rollback`: go back to the release installed before the current one, from what the
/// host still has: its signed manifest and config files in the state dir (signature checked
/// again against the trusted keys) and its images in Docker. Nothing is loaded; its migrations
/// already ran. Recorded in the history as an override.
///
/// # Errors
/// Nothing to go back to, its images gone, a bad signature, or any apply error.
pub async fn rollback_on_demand<E: Engine>(
    opts: &RollbackOptions,
    engine: &E,
    reporter: &dyn Reporter,
) -> Result<Outcome, InstallError> {
    let started = Instant::now();
    let state = StateDir::new(opts.state_dir.clone());
    let _lock = state.lock()?;
    let current = state.installed()?.ok_or_else(|| InstallError::NotInstalled(state.root().to_path_buf()))?;
    let keys = trust::trusted_keys(&state.keys_dir(), &opts.keys)?;
    let target = state.previous()?.filter(|p| p.release != current.release).ok_or_else(|| {
        InstallError::Policy(format!(
            "there is no earlier release on this host to go back to (release {} is installed)",
            current.release
        ))
    })?;
    let dir = state.release_dir(target.release);
    let bytes = std::fs::read(dir.join("bundle.json")).map_err(InstallError::state(dir.join("bundle.json")))?;
    let signature = std::fs::read_to_string(dir.join("bundle.json.minisig"))
        .map_err(InstallError::state(dir.join("bundle.json.minisig")))?;
    let bundle_err = |source| InstallError::Bundle { path: dir.join("bundle.json"), source };
    let signer = keys.verify(&bytes, &signature).map_err(|e| bundle_err(e.into()))?;
    let manifest = Manifest::from_bytes(&bytes).map_err(|e| bundle_err(e.into()))?;
    reporter.event(&Event::Verified {
        product: manifest.product.clone(),
        version: manifest.version.clone(),
        release: manifest.release,
        key_id: signer.key_id.to_string(),
    });
    let result = async {
        let values = state.values()?;
        let info = engine.info().await?;
        let host = host_state(engine, &manifest, &state).await?;
        let the_plan =
            plan::plan(&manifest, &host, &values, &state.paths(manifest.release), &file_digests(&manifest), true)
                .map_err(InstallError::Preflight)?;
        if let Some(missing) = the_plan.load.images.iter().find(|i| i.action == ImageAction::Load) {
            return Err(InstallError::Policy(format!(
                "image {} of release {} is no longer on this host; apply that release's bundle instead",
                missing.reference, manifest.release
            )));
        }
        run_preflight(reporter, &manifest, &the_plan, &info, &state, &host)?;
        let manifest_sha256 = Digest::of(&bytes);
        let journal = Journal::new(manifest_sha256, manifest.release);
        state.save_journal(&journal)?;
        let ctx = Ctx::new(engine, reporter, &state, &manifest, journal);
        tag_present(&ctx, &the_plan.load).await?;
        let outcome = Outcome {
            release: manifest.release,
            bytes_sent: 0,
            bytes_skipped: the_plan.load.bytes_skipped,
            changed: vec![],
            kept: vec![],
            migrations_run: vec![],
        };
        converge(&ctx, &the_plan, &host, true, manifest_sha256, started, outcome).await
    }
    .await;
    let overrides = vec![format!("installer rollback from release {}", current.release)];
    record_history(&state, &manifest, signer.key_id.to_string(), Some(current.release), &result, overrides);
    result
}
