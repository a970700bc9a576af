//! The copy of the data before a release's migrations run (inside `installer apply`).
//!
//! 1. [`prepare`] (before any change): which sources, their sizes (for the disk preflight), the
//!    names of the new generations;
//! 2. [`take`] (after the images are loaded): stop every container that writes to them, stop
//!    order reversed, each with its stop grace period; copy each source into its new
//!    generation through helper containers; read each copy back and compare; check that no
//!    writer was started meanwhile. Any failure removes the copies made and starts exactly
//!    what was stopped; no migration has run;
//! 3. the release then runs on the copies; the sources stay as they were, for the rollback.
//!
//! The journal holds the record before anything is stopped, so a kill -9 at any point is
//! resumed: a copy not marked done is removed and made again.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::copy::{self, remove_helpers};
use super::{DataSource, Generations, tree_size, with_margin};
use crate::apply::Ctx;
use crate::engine::Engine;
use crate::error::InstallError;
use crate::plan::{Plan, labels};
use crate::report::Event;
use crate::state::{Migrations, StepStatus};

/// The copy an apply will make, as `installer plan` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SnapshotPlan {
    /// Each source: from which generation to which.
    pub copies: Vec<PlannedCopy>,
    /// Bytes the volume copies need on Docker's data root (with margin).
    pub volume_bytes: u64,
    /// Bytes the directory copies need under the state dir (with margin).
    pub dir_bytes: u64,
}

/// One source to copy.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PlannedCopy {
    /// `volume:<key>` / `dir:<path>`.
    pub key: String,
    /// A volume (else a directory).
    pub volume: bool,
    /// Generation 0 of the source (its compose name or path).
    #[serde(default)]
    pub base: String,
    /// The generation the previous release runs on (never written again by this release).
    pub from: String,
    /// The new generation this release runs on.
    pub to: String,
    /// Bytes of data now.
    pub bytes: u64,
}

/// A container stopped for the copy.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Stopped {
    /// Container name.
    pub container: String,
    /// Its start time before the stop: a different one afterwards means someone started it.
    pub started_at: Option<String>,
}

/// The snapshot of one apply, in the journal (and a summary in `installed.json`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SnapshotRecord {
    /// Release whose migrations it precedes.
    pub release: u64,
    /// When the writers were stopped (unix seconds).
    pub taken_at: u64,
    /// The same in milliseconds (records of older installers lack it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub taken_at_ms: Option<u64>,
    /// Every copy made and checked (else the record is of a copy in progress).
    pub done: bool,
    /// The copies.
    pub copies: Vec<PlannedCopy>,
    /// The generations this release runs on.
    pub generations: Generations,
    /// Containers stopped for it, in the order they were stopped.
    pub stopped: Vec<Stopped>,
    /// Completed migrations before this release's: what a rollback puts back with the data.
    pub migrations_before: Migrations,
}

/// Decide the copy, if this plan runs a migration: sizes, new names. Nothing changes.
///
/// `partial` is the record of an interrupted copy of the same bundle: its names are reused
/// (those copies are removed and made again).
///
/// # Errors
/// Docker unreachable.
pub async fn prepare<E: Engine>(
    engine: &E,
    plan: &Plan,
    partial: Option<&SnapshotRecord>,
) -> Result<Option<SnapshotPlan>, InstallError> {
    if plan.snapshot_keys.is_empty() {
        return Ok(None);
    }
    let reuse: BTreeSet<&str> = partial.iter().flat_map(|r| r.copies.iter().map(|c| c.to.as_str())).collect();
    let tag = format!("r{}", plan.release);
    let mut out = SnapshotPlan { copies: Vec::new(), volume_bytes: 0, dir_bytes: 0 };
    for d in plan.data.iter().filter(|d| plan.snapshot_keys.contains(&d.key)) {
        // Data that does not exist yet (a first install, a volume new in this release) has
        // nothing to protect.
        let Some(at) = d.location(engine).await? else { continue };
        let (bytes, entries) = tree_size(&at);
        let to = d.free_name(engine, &tag, &reuse).await?;
        let need = with_margin(bytes, entries);
        if d.volume {
            out.volume_bytes += need;
        } else {
            out.dir_bytes += need;
        }
        out.copies.push(PlannedCopy {
            key: d.key.clone(),
            volume: d.volume,
            base: d.base.clone(),
            from: d.current.clone(),
            to,
            bytes,
        });
    }
    Ok((!out.copies.is_empty()).then_some(out))
}

/// The generations a plan runs on once the copy is made.
#[must_use]
pub fn generations_after(host: &Generations, snapshot: &SnapshotPlan) -> Generations {
    let mut g = host.clone();
    for c in &snapshot.copies {
        g.insert(c.key.clone(), c.to.clone());
    }
    g
}

/// Services whose containers write to these sources: those that mount them, and every
/// service that depends on one of those (it would write through it), in start order.
fn writers(plan: &Plan, sources: &[&DataSource]) -> Vec<(String, String, Option<u64>)> {
    let mut set: BTreeSet<&str> = sources.iter().flat_map(|d| d.services.iter().map(String::as_str)).collect();
    loop {
        let more: Vec<&str> = plan
            .stack
            .services
            .iter()
            .filter(|(n, def)| !set.contains(n.as_str()) && def.depends_on.keys().any(|k| set.contains(k.as_str())))
            .map(|(n, _)| n.as_str())
            .collect();
        if more.is_empty() {
            break;
        }
        set.extend(more);
    }
    plan.waves
        .iter()
        .flatten()
        .filter(|sp| set.contains(sp.name.as_str()))
        .map(|sp| (sp.name.clone(), sp.container.clone(), sp.spec.runtime.stop_grace_period_ms))
        .collect()
}

/// Stop the writers, copy, check. On success the journal's record is marked done; on failure
/// the copies are removed and the stopped containers started again.
///
/// # Errors
/// [`InstallError::Data`] (exit 42) and Docker's errors, each after the clean-up.
pub(crate) async fn take<E: Engine>(
    ctx: &Ctx<'_, E>,
    plan: &Plan,
    snapshot: &SnapshotPlan,
    partial: Option<SnapshotRecord>,
) -> Result<SnapshotRecord, InstallError> {
    let engine = ctx.engine;
    let mut record = SnapshotRecord {
        release: plan.release,
        taken_at: manifests::time::now(),
        taken_at_ms: Some(manifests::time::now_ms()),
        done: false,
        copies: snapshot.copies.clone(),
        generations: generations_after(
            &plan.data.iter().map(|d| (d.key.clone(), d.current.clone())).collect(),
            snapshot,
        ),
        // Containers an interrupted copy stopped are to be started again too.
        stopped: partial.as_ref().map(|p| p.stopped.clone()).unwrap_or_default(),
        migrations_before: match &partial {
            Some(p) => p.migrations_before.clone(),
            None => ctx.state.migrations()?,
        },
    };
    ctx.set_snapshot(Some(record.clone()))?;
    ctx.record("snapshot", StepStatus::Started)?;
    // What a killed copy left: its helpers and half-made copies.
    remove_helpers(engine, &plan.project).await?;
    if let Some(p) = &partial {
        for c in &p.copies {
            remove_copy(engine, c).await?;
        }
    }
    let result = copy_all(ctx, plan, snapshot, &mut record).await;
    let _ = remove_helpers(engine, &plan.project).await;
    match result {
        Ok(()) => {
            record.done = true;
            ctx.state.log_copies(&record.copies, record.taken_at)?;
            ctx.set_snapshot(Some(record.clone()))?;
            ctx.record("snapshot", StepStatus::Done)?;
            Ok(record)
        }
        Err(e) => {
            for c in &snapshot.copies {
                let _ = remove_copy(engine, c).await;
            }
            restart(ctx, &record.stopped).await;
            ctx.set_snapshot(None)?;
            ctx.record("snapshot", StepStatus::Failed)?;
            Err(e)
        }
    }
}

async fn copy_all<E: Engine>(
    ctx: &Ctx<'_, E>,
    plan: &Plan,
    snapshot: &SnapshotPlan,
    record: &mut SnapshotRecord,
) -> Result<(), InstallError> {
    let engine = ctx.engine;
    let sources: Vec<&DataSource> =
        plan.data.iter().filter(|d| snapshot.copies.iter().any(|c| c.key == d.key)).collect();
    refuse_foreign_writers(engine, &plan.project, &sources).await?;
    let stopping = Instant::now();
    let mut stopped = std::mem::take(&mut record.stopped);
    let marks = stop_writers(engine, ctx.reporter, plan, &sources, &mut stopped, &mut |s| {
        record.stopped = s.to_vec();
        ctx.set_snapshot(Some(record.clone()))
    })
    .await;
    record.stopped = stopped;
    let marks = marks?;
    let total: u64 = snapshot.copies.iter().map(|c| c.bytes).sum();
    ctx.reporter.event(&Event::DataStart { action: "snapshot".into(), bytes: total });
    let progress = |n: u64| ctx.reporter.event(&Event::DataProgress { bytes: n });
    for (i, c) in snapshot.copies.iter().enumerate() {
        let Some(d) = sources.iter().find(|d| d.key == c.key) else { continue };
        let what = d.describe(&c.from);
        if !c.volume {
            // A site data directory the service has never created yet.
            std::fs::create_dir_all(&c.from)
                .map_err(|e| InstallError::Data { what: what.clone(), message: e.to_string() })?;
        }
        d.create_generation(engine, plan, &c.to, &format!("r{}", plan.release)).await?;
        let from = copy::helper(engine, &plan.project, &format!("copy-from-{i}"), &d.image, &c.from).await?;
        let to = copy::helper(engine, &plan.project, &format!("copy-to-{i}"), &d.image, &c.to).await?;
        copy::clone(engine, &from, &to, &what, &progress).await?;
        engine.remove(&from).await?;
        engine.remove(&to).await?;
    }
    check_writers(engine, &record.stopped, &marks).await?;
    ctx.reporter.event(&Event::DataDone {
        action: "snapshot".into(),
        bytes: total,
        seconds: stopping.elapsed().as_secs_f64(),
    });
    Ok(())
}

/// Remove a copy this apply made.
async fn remove_copy<E: Engine>(engine: &E, c: &PlannedCopy) -> Result<(), InstallError> {
    super::remove_generation(engine, c.volume, &c.to).await
}

/// A running container of another project on one of these volumes would keep writing.
///
/// # Errors
/// [`InstallError::Data`] naming it.
pub(crate) async fn refuse_foreign_writers<E: Engine>(
    engine: &E,
    project: &str,
    sources: &[&DataSource],
) -> Result<(), InstallError> {
    for d in sources.iter().filter(|d| d.volume) {
        for c in engine.volume_users(&d.current).await? {
            if c.running && c.labels.get(labels::PROJECT).map(String::as_str) != Some(project) {
                return Err(InstallError::Data {
                    what: d.describe(&d.current),
                    message: format!(
                        "container `{}` of another project uses it and is running; a copy would not be consistent. \
                         Stop it first",
                        c.name
                    ),
                });
            }
        }
    }
    Ok(())
}

/// Stop every running container that writes to `sources`, dependants first, each with its stop
/// grace period; `save` is called with the list before each stop (so an interruption knows
/// what to start again). Returns each stopped container's start time after the stop.
///
/// # Errors
/// Docker's errors, `save`'s.
pub(crate) async fn stop_writers<E: Engine>(
    engine: &E,
    reporter: &dyn crate::report::Reporter,
    plan: &Plan,
    sources: &[&DataSource],
    stopped: &mut Vec<Stopped>,
    save: &mut dyn FnMut(&[Stopped]) -> Result<(), InstallError>,
) -> Result<BTreeMap<String, Option<String>>, InstallError> {
    for (service, container, grace_ms) in writers(plan, sources).into_iter().rev() {
        let Some(c) = engine.container(&container).await? else { continue };
        if !c.running {
            continue;
        }
        if !stopped.iter().any(|s| s.container == container) {
            stopped.push(Stopped { container: container.clone(), started_at: c.started_at.clone() });
            save(stopped)?;
        }
        reporter.event(&Event::Service {
            service: service.clone(),
            status: "stop".into(),
            detail: Some("while its data is copied".into()),
        });
        let grace = grace_ms.map_or(10, |ms| i64::try_from(ms.div_ceil(1000)).unwrap_or(i64::MAX));
        engine.stop(&c.id, grace).await?;
    }
    // Start times after the stop: a container started from now on wrote during the copy.
    let mut marks = BTreeMap::new();
    for s in stopped.iter() {
        if let Some(c) = engine.container(&s.container).await? {
            marks.insert(s.container.clone(), c.started_at.clone());
        }
    }
    Ok(marks)
}

/// No stopped writer may have been started during the copy.
///
/// # Errors
/// [`InstallError::Data`] naming the container.
pub(crate) async fn check_writers<E: Engine>(
    engine: &E,
    stopped: &[Stopped],
    marks: &BTreeMap<String, Option<String>>,
) -> Result<(), InstallError> {
    for s in stopped {
        if let Some(c) = engine.container(&s.container).await?
            && (c.running || marks.get(&s.container) != Some(&c.started_at))
        {
            return Err(InstallError::Data {
                what: format!("container {}", s.container),
                message: "was started while its data was being copied (by hand or by another tool): the copy may \
                          hold half-written data and was thrown away"
                    .into(),
            });
        }
    }
    Ok(())
}

/// Start again what was stopped, in start order (the reverse of the stop order), skipping
/// what is gone or already runs. Errors are reported, not returned: the caller's error is
/// what the operator needs first.
pub(crate) async fn restart_stopped<E: Engine>(
    engine: &E,
    reporter: &dyn crate::report::Reporter,
    stopped: &[Stopped],
) {
    for s in stopped.iter().rev() {
        if let Ok(Some(c)) = engine.container(&s.container).await
            && !c.running
        {
            let message = match engine.start(&c.id).await {
                Ok(()) => format!("{}: started again", s.container),
                Err(e) => format!("{}: could not be started again: {e}", s.container),
            };
            reporter.event(&Event::Info { message });
        }
    }
}

/// [`restart_stopped`] within an apply.
pub(crate) async fn restart<E: Engine>(ctx: &Ctx<'_, E>, stopped: &[Stopped]) {
    restart_stopped(ctx.engine, ctx.reporter, stopped).await;
}
