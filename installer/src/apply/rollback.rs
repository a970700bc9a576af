//! Putting the previous release back: automatically after a failed release, and on demand
//! (`installer rollback`).

#[allow(clippy::wildcard_imports, reason = "the steps share the apply module's imports and context")]
use super::*;
/// Put the previous release back after the new one failed: every container set aside is
/// renamed back and started (replacing the new one), services new in this release are removed,
/// and the restored services must pass their gates again. Volumes are never touched.
pub(super) async fn rollback<E: Engine>(ctx: &Ctx<'_, E>, the_plan: &Plan, cause: InstallError) -> InstallError {
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
    // The data: the set-aside containers mount the generations the copy was made from, never
    // written since. The migration records go back with it, so that applying this release
    // again runs its migrations again (on a fresh copy). Services stopped for the copy and
    // never replaced start again.
    let mut data = String::new();
    if let Some(snap) = ctx.snapshot().filter(|s| s.release == ctx.manifest.release) {
        if let Err(e) = ctx.state.save_migrations(&snap.migrations_before) {
            return InstallError::RollbackFailed { cause: Box::new(cause), error: Box::new(e) };
        }
        snapshot::restart(ctx, &snap.stopped).await;
        if let Err(e) = ctx.set_snapshot(None) {
            return InstallError::RollbackFailed { cause: Box::new(cause), error: Box::new(e) };
        }
        if snap.done {
            data = format!(
                "\nthe data is back as it was before the migrations ({}); the failed release's copies are kept until \
                 `installer prune` ({}), and applying this release again runs its migrations again",
                snap.copies.iter().map(|c| c.from.as_str()).collect::<Vec<_>>().join(", "),
                snap.copies.iter().map(|c| c.to.as_str()).collect::<Vec<_>>().join(", ")
            );
        }
    }
    if restored.is_empty() && data.is_empty() {
        return cause;
    }
    restored.reverse();
    for (sp, id) in &restored {
        if let Err(e) = wait_gate(ctx, sp, id).await {
            return InstallError::RollbackFailed { cause: Box::new(cause), error: Box::new(e) };
        }
    }
    let services = restored.iter().map(|(sp, _)| sp.name.as_str()).collect::<Vec<_>>().join(", ");
    InstallError::RolledBack { cause: Box::new(cause), services, data }
}

/// What `installer rollback` needs.
#[derive(Debug, Clone)]
pub struct RollbackOptions {
    /// State directory.
    pub state_dir: PathBuf,
    /// Extra trusted keys.
    pub keys: Vec<PathBuf>,
    /// Go back even though the data goes back too (writes since the upgrade are set aside).
    pub yes: bool,
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
    let (manifest, bytes, signer) = open_release(&state, &keys, target.release)?;
    reporter.event(&Event::Verified {
        product: manifest.product.clone(),
        version: manifest.version.clone(),
        release: manifest.release,
        key_id: signer.key_id.to_string(),
    });
    // Whether the data goes back too: the current release runs on copies made before its
    // migrations; the target release on the originals, as they were then.
    let data_back: Vec<String> = target
        .generations
        .iter()
        .chain(current.generations.iter())
        .filter(|(k, _)| target.generations.get(*k) != current.generations.get(*k))
        .map(|(k, _)| k.clone())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    if !data_back.is_empty() {
        let kept = data_back.iter().filter_map(|k| current.generations.get(k).cloned()).collect::<Vec<_>>().join(", ");
        let back = data_back
            .iter()
            .map(|k| {
                // Not recorded: generation 0, the name the copy was made from.
                target.generations.get(k).cloned().unwrap_or_else(|| {
                    current
                        .snapshot
                        .iter()
                        .flat_map(|s| &s.copies)
                        .find(|c| &c.key == k)
                        .map_or_else(|| k.clone(), |c| c.base.clone())
                })
            })
            .collect::<Vec<_>>()
            .join(", ");
        let what = format!(
            "release {} runs on its own data ({back}), as it was before release {}'s migrations; what was written since \
             {} stays in {kept}, set aside, not deleted",
            target.release,
            current.release,
            manifests::time::rfc3339(current.applied_at)
        );
        if !opts.yes {
            return Err(InstallError::Policy(format!("{what}. Run `installer rollback --yes` to go back anyway")));
        }
        reporter.event(&Event::Info { message: format!("data: {what}") });
    }
    let migrations_now = state.migrations()?;
    let result = async {
        let values = state.values()?;
        let info = engine.info().await?;
        let mut host = host_state(engine, &manifest, &state).await?;
        host.generations.clone_from(&target.generations);
        // The migration records that match the target's data.
        if let Some(m) = &target.migrations {
            state.save_migrations(m)?;
            host.migrations = m.clone();
        }
        let the_plan =
            plan::plan(&manifest, &host, &values, &state.paths(manifest.release), &file_digests(&manifest), true)
                .map_err(InstallError::Preflight)?;
        if let Some(missing) = the_plan.load.images.iter().find(|i| i.action == ImageAction::Load) {
            return Err(InstallError::Policy(format!(
                "image {} of release {} is no longer on this host; apply that release's bundle instead",
                missing.reference, manifest.release
            )));
        }
        run_preflight(reporter, &manifest, &the_plan, &info, &state, &host, None)?;
        let manifest_sha256 = Digest::of(&bytes);
        let journal = Journal::new(manifest_sha256, manifest.release);
        state.save_journal(&journal)?;
        let ctx = Ctx::new(engine, reporter, &state, &manifest, journal);
        tag_present(&ctx, &the_plan.load).await?;
        let outcome = Outcome::new(manifest.release, 0, the_plan.load.bytes_skipped);
        converge(&ctx, &the_plan, &host, true, manifest_sha256, started, outcome).await
    }
    .await;
    if result.is_err() {
        // Still on the current release: its records stay.
        let _ = state.save_migrations(&migrations_now);
    }
    let overrides = vec![format!("installer rollback from release {}", current.release)];
    record_history(&state, &manifest, signer.key_id.to_string(), Some(current.release), &result, overrides);
    result
}

/// A release this host keeps (`releases/<n>`): its manifest, checked again against the trusted
/// keys (the state dir is not trusted more than a bundle).
///
/// # Errors
/// Missing or unreadable files, a bad signature.
pub(crate) fn open_release(
    state: &StateDir,
    keys: &manifests::TrustedKeys,
    release: u64,
) -> Result<(Manifest, Vec<u8>, manifests::signature::Verified), InstallError> {
    let dir = state.release_dir(release);
    let bytes = std::fs::read(dir.join("bundle.json")).map_err(InstallError::state(dir.join("bundle.json")))?;
    let signature = std::fs::read_to_string(dir.join("bundle.json.minisig"))
        .map_err(InstallError::state(dir.join("bundle.json.minisig")))?;
    let bundle_err = |source| InstallError::Bundle { path: dir.join("bundle.json"), source };
    let signer = keys.verify(&bytes, &signature).map_err(|e| bundle_err(e.into()))?;
    let manifest = Manifest::from_bytes(&bytes).map_err(|e| bundle_err(e.into()))?;
    Ok((manifest, bytes, signer))
}
