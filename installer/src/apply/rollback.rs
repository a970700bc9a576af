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
