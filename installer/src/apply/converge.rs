//! Step 6 and 7 of an apply: networks and volumes, then services wave by wave, each created,
//! started and held to its gate (healthy, running, completed); one-shot jobs and migrations;
//! the release recorded at the end. On failure the previous release comes back ([`super::rollback`]).

#[allow(clippy::wildcard_imports, reason = "the steps share the apply module's imports and context")]
use super::*;
/// Networks, volumes, services wave by wave, then record the release. On failure with a previous
/// release on the host, put it back.
pub(super) async fn converge<E: Engine>(
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
        return Err(rollback::rollback(ctx, the_plan, cause).await);
    }

    // The new release is up: the containers it replaced can go.
    for wave in &the_plan.waves {
        for sp in wave {
            if let Some(prev) = engine.container(&previous_name(&sp.container)).await? {
                engine.remove(&prev.id).await?;
            }
        }
    }
    let snapshot = ctx.snapshot().filter(|s| s.done && s.release == manifest.release);
    let installed = Installed {
        generations: the_plan
            .data
            .iter()
            .filter(|d| d.current != d.base)
            .map(|d| (d.key.clone(), d.current.clone()))
            .collect(),
        migrations: Some(state.migrations()?),
        snapshot: snapshot.clone(),
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
    if let Some(s) = &snapshot {
        // Milliseconds: whole seconds made the downtime longer than the apply that caused it.
        let downtime = match s.taken_at_ms {
            Some(ms) => manifests::time::now_ms().saturating_sub(ms) as f64 / 1000.0,
            None => manifests::time::now().saturating_sub(s.taken_at) as f64,
        };
        outcome.downtime_secs = Some(downtime);
        reporter.event(&Event::Info {
            message: format!(
                "data: the release runs on the copies ({}); release {} keeps the originals for a rollback; \
                 downtime {downtime:.1}s",
                s.copies.iter().map(|c| c.to.as_str()).collect::<Vec<_>>().join(", "),
                host_release(state)
            ),
        });
        outcome.snapshot = Some(s.clone());
    }
    reporter.event(&Event::Applied {
        product: manifest.product.clone(),
        version: manifest.version.clone(),
        release: manifest.release,
        seconds: started.elapsed().as_secs_f64(),
    });
    Ok(outcome)
}

/// The release that keeps the original data: the one installed before this apply.
fn host_release(state: &StateDir) -> String {
    state.previous().ok().flatten().map_or_else(|| "before".into(), |p| p.release.to_string())
}

pub(super) async fn run_waves<E: Engine>(
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

pub(super) async fn run_service<E: Engine>(
    ctx: &Ctx<'_, E>,
    sp: &ServicePlan,
    host: &HostState,
) -> Result<(), InstallError> {
    match &sp.action {
        Action::Skip { reason } => {
            ctx.service(&sp.name, "skip", Some(reason.clone()));
            Ok(())
        }
        Action::Keep => {
            ctx.service(&sp.name, "keep", Some("unchanged".into()));
            let id = host.containers.get(&sp.container).map(|c| c.id.clone()).unwrap_or_default();
            // Stopped for the snapshot (it writes through a service whose data was copied).
            if ctx.engine.container(&id).await?.is_some_and(|c| !c.running) {
                ctx.engine.start(&id).await?;
                ctx.service(&sp.name, "started", Some("again, after the snapshot".into()));
            }
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

/// Site data directories (created, never removed), files holding site values that secrets
/// and configs mount (0444 inside a 0700 directory, written to a temp file and renamed), and
/// bundled templates rendered with the site's values (same rules as compose: `$$` is `$`).
pub(super) fn prepare_host_paths(spec: &crate::engine::ContainerSpec) -> Result<(), InstallError> {
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
    let mut files: Vec<(std::path::PathBuf, String)> = spec.value_files.clone();
    for t in &spec.templates {
        let text = std::fs::read_to_string(&t.src).map_err(io(&t.src))?;
        let rendered =
            manifests::compose::interpolate::substitute(&text, &|n| t.values.get(n).cloned()).map_err(|m| {
                InstallError::Docker { action: String::new(), message: format!("template {}: {m}", t.src.display()) }
            })?;
        files.push((t.dst.clone(), rendered));
    }
    for (file, value) in &files {
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
pub(super) async fn check_external<E: Engine>(engine: &E, the_plan: &Plan) -> Result<(), InstallError> {
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
pub(super) async fn set_aside<E: Engine>(
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

pub(super) async fn create_and_start<E: Engine>(ctx: &Ctx<'_, E>, sp: &ServicePlan) -> Result<String, InstallError> {
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

pub(super) async fn run_job<E: Engine>(ctx: &Ctx<'_, E>, sp: &ServicePlan) -> Result<(), InstallError> {
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

pub(super) fn indent(text: &str) -> String {
    if text.is_empty() {
        return "  (no output)".into();
    }
    text.lines().map(|l| format!("  | {l}")).collect::<Vec<_>>().join("\n")
}

/// Wait until a service passes its gate, or fail with the evidence.
pub(super) async fn wait_gate<E: Engine>(ctx: &Ctx<'_, E>, sp: &ServicePlan, id: &str) -> Result<(), InstallError> {
    let deadline = Instant::now() + ctx.health_timeout;
    let timeout_secs = ctx.health_timeout.as_secs();
    let mut announced = false;
    // Subscribed before the first look, so that no change between a look and the wait is
    // missed. Without events (an engine that has none, a stream that ended) the gate polls.
    let mut events = ctx.engine.container_events(id).await.ok();
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
        let left = deadline.saturating_duration_since(Instant::now());
        match events.as_mut() {
            Some(rx) => {
                // An event, or a look every 2 s anyway (events can be dropped under load).
                if let Ok(None) = tokio::time::timeout(left.min(Duration::from_secs(2)), rx.recv()).await {
                    events = None;
                }
            }
            None => tokio::time::sleep(left.min(Duration::from_millis(500))).await,
        }
    }
}
