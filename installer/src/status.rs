//! `installer status`: the report an operator pastes into a ticket.

use serde::Serialize;

use crate::engine::{Engine, Health};
use crate::error::InstallError;
use crate::state::StateDir;

/// One service.
#[derive(Debug, Serialize)]
pub struct ServiceStatus {
    /// Service.
    pub service: String,
    /// Container name.
    pub container: String,
    /// Docker state (running, exited, missing).
    pub state: String,
    /// Health.
    pub health: Option<Health>,
    /// Image reference.
    pub image: String,
    /// Start time.
    pub started_at: Option<String>,
    /// Seconds since start.
    pub uptime_secs: Option<u64>,
    /// One-shot job.
    pub one_shot: bool,
    /// Exit code (one-shots).
    pub exit_code: Option<i64>,
    /// Whether this service is as it should be.
    pub ok: bool,
}

/// The report.
#[derive(Debug, Serialize)]
pub struct StatusReport {
    /// Product.
    pub product: String,
    /// Version.
    pub version: String,
    /// Release.
    pub release: u64,
    /// When it was applied (RFC 3339).
    pub applied_at: String,
    /// Whether the last apply finished.
    pub last_apply_finished: bool,
    /// Docker version.
    pub docker_version: String,
    /// Which engine (`graph-driver`, `containerd-store`, `podman`, `unknown`).
    pub engine: crate::engine::EngineKind,
    /// The hypervisor this host runs on (VMware, Hyper-V, KVM, …, or bare metal), from DMI.
    pub hypervisor: String,
    /// Services.
    pub services: Vec<ServiceStatus>,
    /// Data sources not at their first generation: key -> the volume or directory in use
    /// (copies made before migrations, restores).
    pub data: crate::data::Generations,
    /// Everything as it should be.
    pub healthy: bool,
}

/// Build the report.
///
/// # Errors
/// Nothing installed, Docker unreachable.
pub async fn status<E: Engine>(state: &StateDir, engine: &E) -> Result<StatusReport, InstallError> {
    let installed = state.installed()?.ok_or_else(|| InstallError::NotInstalled(state.root().to_path_buf()))?;
    let info = engine.info().await?;
    let journal = state.journal()?;
    let migrations = state.migrations()?;
    let now = manifests::time::now();
    let mut services = Vec::new();
    for (name, s) in &installed.services {
        let c = engine.container(&s.container).await?;
        let status = match c {
            None => {
                // A finished one-shot whose container was removed (`docker container prune` is
                // common hygiene) is not a fault: the state dir records that it completed for
                // this release.
                let pruned = s.one_shot && migrations.is_done(installed.release, name);
                ServiceStatus {
                    service: name.clone(),
                    container: s.container.clone(),
                    state: if pruned { "pruned" } else { "missing" }.into(),
                    health: None,
                    image: s.image.clone(),
                    started_at: None,
                    uptime_secs: None,
                    one_shot: s.one_shot,
                    exit_code: pruned.then_some(0),
                    ok: pruned,
                }
            }
            Some(c) => {
                let ok = if s.one_shot {
                    c.running || c.exit_code == Some(0)
                } else {
                    c.running && c.health != Health::Unhealthy && c.health != Health::Starting
                };
                let uptime = c
                    .started_at
                    .as_deref()
                    .and_then(manifests::time::parse_rfc3339)
                    .filter(|_| c.running)
                    .map(|t| now.saturating_sub(t));
                ServiceStatus {
                    service: name.clone(),
                    container: s.container.clone(),
                    state: c.status.clone(),
                    // A finished one-shot's last healthcheck result (its image may have one) says
                    // nothing: it did its job and exited.
                    health: if s.one_shot && !c.running { None } else { Some(c.health) },
                    image: s.image.clone(),
                    started_at: c.started_at.clone(),
                    uptime_secs: uptime,
                    one_shot: s.one_shot,
                    exit_code: if c.running { None } else { c.exit_code },
                    ok,
                }
            }
        };
        services.push(status);
    }
    let healthy = services.iter().all(|s| s.ok);
    Ok(StatusReport {
        data: installed.generations.clone(),
        product: installed.product,
        version: installed.version,
        release: installed.release,
        applied_at: manifests::time::rfc3339(installed.applied_at),
        last_apply_finished: journal.finished || journal.manifest_sha256.is_none(),
        docker_version: info.server_version,
        engine: info.kind,
        hypervisor: crate::preflight::hypervisor(),
        services,
        healthy,
    })
}
