//! `installer backup` and `installer restore` for the installed release (the file format and
//! the copies are in [`crate::data::backup`]).
//!
//! A restore never writes into the data in use: every part goes into a fresh generation, the
//! services that mount it are recreated on it and health-gated, and if a gate fails the
//! containers on the generation that was current come back (the rollback of an apply).

#[allow(clippy::wildcard_imports, reason = "the steps share the apply module's imports and context")]
use super::*;
use crate::data::DataSource;
use crate::data::backup::{self, BackupReport, Installation};
use crate::data::copy;
use crate::data::snapshot::{Stopped, restart_stopped, stop_writers};

/// What `backup` and `restore` need.
#[derive(Debug, Clone)]
pub struct DataOptions {
    /// State directory.
    pub state_dir: PathBuf,
    /// Extra trusted keys.
    pub keys: Vec<PathBuf>,
    /// The backup file (output of `backup`, input of `restore`).
    pub file: Option<PathBuf>,
}

/// The installed release, its plan at the installed generations.
async fn installation<E: Engine>(
    engine: &E,
    state: &StateDir,
    keys: &[PathBuf],
) -> Result<(Installed, Manifest, Vec<u8>, String, Plan, HostState), InstallError> {
    let installed = state.installed()?.ok_or_else(|| InstallError::NotInstalled(state.root().to_path_buf()))?;
    let keys = trust::trusted_keys(&state.keys_dir(), keys)?;
    let (manifest, bytes, _) = rollback::open_release(state, &keys, installed.release)?;
    let sig_path = state.release_dir(installed.release).join("bundle.json.minisig");
    let signature = std::fs::read_to_string(&sig_path).map_err(InstallError::state(&sig_path))?;
    let host = host_state(engine, &manifest, state).await?;
    let values = state.values()?;
    let the_plan =
        plan::plan(&manifest, &host, &values, &state.paths(manifest.release), &file_digests(&manifest), true)
            .map_err(InstallError::Preflight)?;
    Ok((installed, manifest, bytes, signature, the_plan, host))
}

/// `installer backup [-o FILE]`.
///
/// # Errors
/// Nothing installed, not enough space, Docker's errors.
pub async fn backup_installed<E: Engine>(
    opts: &DataOptions,
    engine: &E,
    reporter: &dyn Reporter,
) -> Result<BackupReport, InstallError> {
    let state = StateDir::new(opts.state_dir.clone());
    let _lock = state.lock()?;
    restart_after_killed_backup(engine, reporter, &state).await?;
    let (installed, _, bytes, signature, the_plan, _) = installation(engine, &state, &opts.keys).await?;
    let output = opts.file.clone().unwrap_or_else(|| {
        let stamp = manifests::time::rfc3339(manifests::time::now()).replace([':', '-'], "");
        state.root().join("backups").join(format!("{}-r{}-{stamp}.tar", installed.project, installed.release))
    });
    let inst = Installation {
        installed: &installed,
        plan: &the_plan,
        manifest_files: (&bytes, &signature),
        values: &state.values()?,
        migrations: &state.migrations()?,
    };
    backup::backup(engine, reporter, &state, &inst, &output).await
}

/// `installer restore FILE`.
///
/// # Errors
/// A backup that is damaged or of another product or release (nothing changed), not enough
/// space, Docker's errors; a failed health gate puts the data in use before back.
pub async fn restore<E: Engine>(
    opts: &DataOptions,
    engine: &E,
    reporter: &dyn Reporter,
) -> Result<Outcome, InstallError> {
    let started = Instant::now();
    let state = StateDir::new(opts.state_dir.clone());
    let _lock = state.lock()?;
    restart_after_killed_backup(engine, reporter, &state).await?;
    let file = opts.file.clone().unwrap_or_default();
    let checked = backup::check(&file)?;
    let m = &checked.manifest;
    let (installed, manifest, bytes, _, the_plan, host) = installation(engine, &state, &opts.keys).await?;
    let bad = |message: String| InstallError::BackupInvalid { path: file.clone(), message };
    if m.product != installed.product || m.project != installed.project {
        return Err(bad(format!(
            "it is of {} (project {}), this host runs {} (project {})",
            m.product, m.project, installed.product, installed.project
        )));
    }
    if m.release != installed.release {
        return Err(bad(format!(
            "it was made on release {} ({}), this host runs release {}; apply release {}'s bundle first, then restore",
            m.release, m.version, installed.release, m.release
        )));
    }
    reporter.event(&Event::Info {
        message: format!(
            "backup {}: {} {} (release {}) of {}, every part checked",
            file.display(),
            m.product,
            m.version,
            m.release,
            manifests::time::rfc3339(m.created_at)
        ),
    });
    // Fresh generations for every data part this release still has.
    let stamp = manifests::time::rfc3339(manifests::time::now()).replace([':', '-'], "");
    let mut targets: Vec<(&backup::Part, &DataSource, String)> = Vec::new();
    for part in m.parts.iter().filter(|p| p.source.is_some()) {
        let key = part.source.as_deref().unwrap_or_default();
        let Some(d) = the_plan.data.iter().find(|d| d.key == key) else {
            reporter.event(&Event::Info { message: format!("{}: not in this release, left out", part.path) });
            continue;
        };
        let name = d.free_name(engine, &format!("restored-{stamp}"), &Default::default()).await?;
        targets.push((part, d, name));
    }
    // Disk: volumes on Docker's data root, directories under the state dir.
    let info = engine.info().await?;
    for (volume, path) in [(true, PathBuf::from(&info.root_dir)), (false, state.root().to_path_buf())] {
        let need: u64 = targets.iter().filter(|t| t.1.volume == volume).map(|t| t.0.bytes + t.0.bytes / 10).sum();
        if need == 0 {
            continue;
        }
        if let Ok(free) = crate::preflight::free_bytes(&path, volume) {
            crate::preflight::require_space(&path, free, need, "the restore", "nothing was changed")?;
        }
    }
    let values_now = state.values()?;
    let migrations_now = state.migrations()?;
    let restored_values: BTreeMap<String, String> = serde_json::from_slice(&checked.read_small("state/values.json")?)
        .map_err(|e| bad(format!("state/values.json: {e}")))?;
    let restored_migrations: crate::state::Migrations =
        serde_json::from_slice(&checked.read_small("state/migrations.json")?)
            .map_err(|e| bad(format!("state/migrations.json: {e}")))?;

    // Write every part into its fresh generation (nothing in use is touched).
    let total: u64 = targets.iter().map(|t| t.0.bytes).sum();
    reporter.event(&Event::DataStart { action: "restore".into(), bytes: total });
    let copying = Instant::now();
    let written = async {
        copy::remove_helpers(engine, &manifest.project).await?;
        for (i, (part, d, name)) in targets.iter().enumerate() {
            d.create_generation(engine, &the_plan, name, &format!("restored-{stamp}")).await?;
            let helper = copy::helper(engine, &manifest.project, &format!("restore-{i}"), &d.image, name).await?;
            let r = backup::restore_part(engine, &checked, part, &helper, reporter).await;
            engine.remove(&helper).await?;
            r?;
        }
        Ok::<_, InstallError>(())
    }
    .await;
    if let Err(e) = written {
        let _ = copy::remove_helpers(engine, &manifest.project).await;
        for (_, d, name) in &targets {
            let _ = crate::data::remove_generation(engine, d.volume, name).await;
        }
        return Err(e);
    }
    reporter.event(&Event::DataDone {
        action: "restore".into(),
        bytes: total,
        seconds: copying.elapsed().as_secs_f64(),
    });
    let made: Vec<crate::data::snapshot::PlannedCopy> = targets
        .iter()
        .map(|(part, d, name)| crate::data::snapshot::PlannedCopy {
            key: d.key.clone(),
            volume: d.volume,
            base: d.base.clone(),
            from: d.current.clone(),
            to: name.clone(),
            bytes: part.bytes,
        })
        .collect();
    state.log_copies(&made, manifests::time::now())?;

    // Switch: the services on the restored generations, gated; the values and migration records
    // that match the data.
    let mut switched = host.clone();
    switched.generations = installed.generations.clone();
    for (_, d, name) in &targets {
        switched.generations.insert(d.key.clone(), name.clone());
    }
    switched.migrations = restored_migrations.clone();
    let new_plan = plan::plan(
        &manifest,
        &switched,
        &restored_values,
        &state.paths(manifest.release),
        &file_digests(&manifest),
        true,
    )
    .map_err(InstallError::Preflight)?;
    let sources: Vec<&DataSource> = the_plan.data.iter().collect();
    let mut stopped: Vec<Stopped> = Vec::new();
    stop_writers(engine, reporter, &the_plan, &sources, &mut stopped, &mut |_| Ok(())).await?;
    state.save_values(&restored_values)?;
    state.save_migrations(&restored_migrations)?;
    let manifest_sha256 = Digest::of(&bytes);
    let journal = Journal::new(manifest_sha256, manifest.release);
    state.save_journal(&journal)?;
    let ctx = Ctx::new(engine, reporter, &state, &manifest, journal);
    let outcome = Outcome::new(manifest.release, 0, 0);
    let result = converge(&ctx, &new_plan, &switched, true, manifest_sha256, started, outcome).await;
    if result.is_err() {
        let _ = state.save_values(&values_now);
        let _ = state.save_migrations(&migrations_now);
        restart_stopped(engine, reporter, &stopped).await;
    }
    let overrides = vec![format!("installer restore {}", file.display())];
    record_history(&state, &manifest, installed_key(&state), Some(installed.release), &result, overrides);
    result
}

/// The key recorded for a restore: the one the installed release was signed with.
fn installed_key(state: &StateDir) -> String {
    state.history().ok().and_then(|h| h.last().map(|e| e.key_id.clone())).unwrap_or_default()
}

/// A backup killed halfway (kill -9, power loss) left the services it stopped stopped: start
/// them again before anything else (called under the state dir's lock).
///
/// # Errors
/// Unreadable or unwritable state.
pub(crate) async fn restart_after_killed_backup<E: Engine>(
    engine: &E,
    reporter: &dyn Reporter,
    state: &StateDir,
) -> Result<(), InstallError> {
    let stopped = state.stopped()?;
    if !stopped.is_empty() {
        reporter.event(&Event::Info { message: "an interrupted backup stopped services; starting them again".into() });
        copy::remove_helpers_any(engine).await;
        restart_stopped(engine, reporter, &stopped).await;
        state.save_stopped(&[])?;
    }
    Ok(())
}
