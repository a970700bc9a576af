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

use crate::data::snapshot::{self, SnapshotRecord};
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

mod converge;
mod images;
mod restore;
mod rollback;

use converge::{check_external, converge, wait_gate};
use images::{load_images, tag_present};
pub use restore::{DataOptions, backup_installed, restore};
pub use rollback::{RollbackOptions, rollback_on_demand};

/// What to apply.
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// The bundle file.
    pub bundle: PathBuf,
    /// Directories holding parts of a split bundle besides part 000's own (other media).
    pub media: Vec<PathBuf>,
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
    /// Run the migrations without copying the data first (recorded in the history).
    pub no_snapshot: bool,
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
    /// The copy made before the migrations (sources, from which generation to which).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<SnapshotRecord>,
    /// Seconds from stopping the first service for the snapshot to the last service healthy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub downtime_secs: Option<f64>,
}

impl Outcome {
    /// Nothing done yet: what converge fills in.
    fn new(release: u64, bytes_sent: u64, bytes_skipped: u64) -> Self {
        Self {
            release,
            bytes_sent,
            bytes_skipped,
            changed: vec![],
            kept: vec![],
            migrations_run: vec![],
            snapshot: None,
            downtime_secs: None,
        }
    }
}

/// What every step of an apply shares.
pub(crate) struct Ctx<'a, E> {
    pub(crate) engine: &'a E,
    pub(crate) reporter: &'a dyn Reporter,
    pub(crate) state: &'a StateDir,
    pub(crate) manifest: &'a Manifest,
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

    pub(crate) fn record(&self, name: &str, status: StepStatus) -> Result<(), InstallError> {
        let mut j = self.journal.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        j.steps.push(JournalStep { name: name.to_string(), status, at: manifests::time::now() });
        self.state.save_journal(&j)
    }
    /// Record the snapshot of this apply in the journal (before anything it does).
    pub(crate) fn set_snapshot(&self, record: Option<SnapshotRecord>) -> Result<(), InstallError> {
        let mut j = self.journal.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        j.snapshot = record;
        self.state.save_journal(&j)
    }
    pub(crate) fn snapshot(&self) -> Option<SnapshotRecord> {
        self.journal.lock().unwrap_or_else(std::sync::PoisonError::into_inner).snapshot.clone()
    }
    pub(crate) fn service(&self, service: &str, status: &str, detail: Option<String>) {
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
        generations: state.installed()?.map(|i| i.generations).unwrap_or_default(),
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
    restore::restart_after_killed_backup(engine, reporter, &state).await?;
    let keys = trust::trusted_keys(&state.keys_dir(), &opts.keys)?;
    let signed = verify::open(&opts.bundle, &opts.media, &keys)?;
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
    if opts.no_snapshot {
        overrides.push("--no-snapshot".to_string());
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
    let mut host = host_state(engine, &manifest, state).await?;
    // Before the values: another state directory also lacks the site's saved values, and the
    // operator should hear about the directory, not about a missing password.
    check_ownership(&manifest, state, &host, opts.adopt)?;
    let saved = state.values()?;
    let values = values::resolve(&manifest, opts.values_file.as_deref(), &saved, &|k| std::env::var(k).ok())?;
    let mut journal = state.journal()?;
    let resuming = journal.manifest_sha256 == Some(signed.manifest_sha256) && !journal.finished;
    let earlier_snapshot = if resuming { journal.snapshot.clone() } else { None };
    // An interrupted apply that finished its copy goes on with the copies.
    if let Some(done) = earlier_snapshot.as_ref().filter(|s| s.done) {
        host.generations.clone_from(&done.generations);
    }
    let (the_plan, new_snapshot) =
        plan_with_snapshot(engine, &manifest, &host, &values, state, earlier_snapshot.as_ref(), opts.no_snapshot)
            .await?;
    run_preflight(reporter, &manifest, &the_plan, &info, state, &host, Some(signed.reader.inner().files()))?;
    check_external(engine, &the_plan).await?;

    // Nothing on the host has changed so far. From here on, every step is journaled.
    if resuming {
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
    let (verified, bytes_sent, fallback) = load_images(&ctx, signed, &the_plan, opts, keys).await?;
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

    if let Some(planned) = &new_snapshot {
        let partial = earlier_snapshot.filter(|s| !s.done);
        snapshot::take(&ctx, &the_plan, planned, partial).await?;
    }
    let outcome = Outcome::new(manifest.release, bytes_sent, the_plan.load.bytes_skipped);
    converge(&ctx, &the_plan, &host, installed_before.is_some(), verified.manifest_sha256, started, outcome).await
}

/// The plan, and the copy to make before its migrations (then the plan runs on the copies).
/// `earlier` is the snapshot record of an interrupted apply of the same bundle.
///
/// # Errors
/// Values that do not fit, Docker unreachable.
pub(crate) async fn plan_with_snapshot<E: Engine>(
    engine: &E,
    manifest: &Manifest,
    host: &HostState,
    values: &BTreeMap<String, String>,
    state: &StateDir,
    earlier: Option<&SnapshotRecord>,
    no_snapshot: bool,
) -> Result<(Plan, Option<snapshot::SnapshotPlan>), InstallError> {
    let digests = file_digests(manifest);
    let paths = state.paths(manifest.release);
    let mut the_plan = plan::plan(manifest, host, values, &paths, &digests, true).map_err(InstallError::Preflight)?;
    // A first install has no release to go back to, so nothing to keep a copy for.
    if no_snapshot || earlier.is_some_and(|s| s.done) || state.installed()?.is_none() {
        return Ok((the_plan, None));
    }
    let Some(planned) = snapshot::prepare(engine, &the_plan, earlier).await? else { return Ok((the_plan, None)) };
    let mut after = host.clone();
    after.generations = snapshot::generations_after(&host.generations, &planned);
    the_plan = plan::plan(manifest, &after, values, &paths, &digests, true).map_err(InstallError::Preflight)?;
    the_plan.snapshot = Some(planned.clone());
    Ok((the_plan, Some(planned)))
}

/// Every host check, reported line by line, then the ports; stops at the first failure.
fn run_preflight(
    reporter: &dyn Reporter,
    manifest: &Manifest,
    the_plan: &Plan,
    info: &crate::engine::EngineInfo,
    state: &StateDir,
    host: &HostState,
    bundle_files: Option<&[manifests::media::PartFile]>,
) -> Result<(), InstallError> {
    let report = preflight::check_host(manifest, the_plan, info, state.root(), bundle_files);
    reporter.event(&Event::Preflight { checks: report.checks.clone() });
    report.result()?;
    preflight::check_ports(the_plan, host)
}

/// Name under which a replaced container waits until the new release is healthy.
#[must_use]
pub fn previous_name(container: &str) -> String {
    format!("{container}-previous")
}

/// `installer plan`: everything `apply` decides, without changing anything (no lock, no journal,
/// no Docker writes).
///
/// # Errors
/// Signature, policy, values, Docker unreachable.
pub async fn plan_only<E: Engine>(opts: &ApplyOptions, engine: &E) -> Result<PlanReport, InstallError> {
    let state = StateDir::new(opts.state_dir.clone());
    let keys = trust::trusted_keys(&state.keys_dir(), &opts.keys)?;
    let signed = verify::open(&opts.bundle, &opts.media, &keys)?;
    let manifest = signed.manifest().clone();
    check_policy(&manifest, state.installed()?.as_ref(), opts.allow_downgrade)?;
    let info = engine.info().await?;
    let host = host_state(engine, &manifest, &state).await?;
    check_ownership(&manifest, &state, &host, opts.adopt)?;
    let values = values::resolve(&manifest, opts.values_file.as_deref(), &state.values()?, &|k| std::env::var(k).ok())?;
    let (plan, _) = plan_with_snapshot(engine, &manifest, &host, &values, &state, None, opts.no_snapshot).await?;
    let mut preflight =
        preflight::check_host(&manifest, &plan, &info, state.root(), Some(signed.reader.inner().files()));
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
    let _ = writeln!(s, "engine: {}", p.engine.describe());
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
    if let Some(snap) = &p.snapshot {
        let _ = writeln!(s, "snapshot before the migrations (the previous release keeps the originals):");
        for c in &snap.copies {
            let _ = writeln!(
                s,
                "  {:<8} {} -> {} ({})",
                if c.volume { "volume" } else { "dir" },
                c.from,
                c.to,
                manifests::display::human_bytes(c.bytes)
            );
        }
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
