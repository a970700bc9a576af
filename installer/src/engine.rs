//! The one seam to the container engine. [`crate::docker::DockerEngine`] is the real one (the
//! only module that imports bollard); tests pass a fake explicitly.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use manifests::{Digest, HealthcheckDef, LimitsDef, LoggingDef, NetworkDef, PortMapping, RuntimeDef, VolumeDef};
use tokio::sync::mpsc;

use crate::error::InstallError;

/// What the engine says about itself.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct EngineInfo {
    /// Server version, e.g. 20.10.24.
    pub server_version: String,
    /// Highest API version the server speaks.
    pub api_version: String,
    /// Docker data root.
    pub root_dir: String,
    /// Storage driver.
    pub storage_driver: String,
    /// CPU architecture (Docker's naming, e.g. x86_64).
    pub architecture: String,
    /// Total memory in bytes.
    pub mem_total: i64,
}

/// A container to create.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerSpec {
    /// Container name.
    pub name: String,
    /// Image (reference or ID).
    pub image: String,
    /// Command.
    pub command: Option<Vec<String>>,
    /// Entrypoint.
    pub entrypoint: Option<Vec<String>>,
    /// `NAME=value` environment.
    pub env: Vec<String>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Published ports.
    pub ports: Vec<PortMapping>,
    /// Bind and volume mounts in docker's `source:target[:ro]` form.
    pub binds: Vec<String>,
    /// Networks (full names) with DNS aliases.
    pub networks: Vec<(String, Vec<String>)>,
    /// Healthcheck override.
    pub healthcheck: Option<HealthcheckDef>,
    /// Restart policy.
    pub restart: Option<String>,
    /// User.
    pub user: Option<String>,
    /// Working directory.
    pub working_dir: Option<String>,
    /// Limits.
    pub limits: Option<LimitsDef>,
    /// Logging.
    pub logging: Option<LoggingDef>,
    /// tmpfs mounts: container path -> Docker's options (`size=...,mode=...`).
    pub tmpfs: BTreeMap<String, String>,
    /// Everything else compose sets (other services already named by their containers).
    pub runtime: RuntimeDef,
    /// Site data directories to create before the container (never removed).
    pub site_dirs: Vec<std::path::PathBuf>,
    /// Files holding site values (secrets/configs from `environment:`) to write first.
    pub value_files: Vec<(std::path::PathBuf, String)>,
}

/// Health as Docker reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    /// No healthcheck.
    None,
    /// In the start period or not yet decided.
    Starting,
    /// Healthy.
    Healthy,
    /// Unhealthy.
    Unhealthy,
}

/// A container as it is now.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ContainerState {
    /// ID.
    pub id: String,
    /// Name without the leading `/`.
    pub name: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Running.
    pub running: bool,
    /// Docker's status word (created, running, exited, ...).
    pub status: String,
    /// Exit code when exited.
    pub exit_code: Option<i64>,
    /// Health.
    pub health: Health,
    /// Output of the last health check.
    pub health_output: Option<String>,
    /// Image ID.
    pub image_id: String,
    /// Start time (RFC 3339) as Docker reports it.
    pub started_at: Option<String>,
}

/// What removing an image did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageRemoval {
    /// Untagged and deleted.
    Removed,
    /// The engine did not have it.
    Absent,
    /// The engine refused, with its reason (in use by a container, tagged more than once).
    Refused(String),
}

/// A container engine.
#[allow(async_fn_in_trait, reason = "awaited in one task; no Send bound needed")]
pub trait Engine {
    /// Ping and describe the engine.
    async fn info(&self) -> Result<EngineInfo, InstallError>;
    /// IDs of every image (tagged or not).
    async fn image_ids(&self) -> Result<BTreeSet<Digest>, InstallError>;
    /// Chain IDs of every layer the engine has.
    async fn chain_ids(&self) -> Result<BTreeSet<Digest>, InstallError>;
    /// Stream a docker-save archive into the engine; returns the "Loaded image" lines. An `Err`
    /// item from `body` aborts the upload, and the engine then keeps nothing.
    async fn load(&self, body: mpsc::Receiver<std::io::Result<Bytes>>) -> Result<Vec<String>, InstallError>;
    /// Tag an image.
    async fn tag(&self, image_id: &Digest, reference: &str) -> Result<(), InstallError>;
    /// The tags of an image; `None` when the engine does not have it.
    async fn image_tags(&self, image_id: &Digest) -> Result<Option<Vec<String>>, InstallError>;
    /// Remove an image by ID, never forced: the engine refuses while a container uses it or
    /// more than one reference tags it.
    async fn remove_image(&self, image_id: &Digest) -> Result<ImageRemoval, InstallError>;
    /// Create a network if missing, with the stack's options.
    async fn ensure_network(&self, def: &NetworkDef, labels: &BTreeMap<String, String>) -> Result<(), InstallError>;
    /// Create a volume if missing (volumes are never removed), with the stack's options.
    async fn ensure_volume(&self, def: &VolumeDef, labels: &BTreeMap<String, String>) -> Result<(), InstallError>;
    /// Whether a network of this name exists (for `external` networks).
    async fn network_exists(&self, name: &str) -> Result<bool, InstallError>;
    /// Whether a volume of this name exists (for `external` volumes).
    async fn volume_exists(&self, name: &str) -> Result<bool, InstallError>;
    /// A container by name.
    async fn container(&self, name: &str) -> Result<Option<ContainerState>, InstallError>;
    /// Every container with the compose project label.
    async fn project_containers(&self, project: &str) -> Result<Vec<ContainerState>, InstallError>;
    /// Create a container; returns its ID.
    async fn create(&self, spec: &ContainerSpec) -> Result<String, InstallError>;
    /// Start a container.
    async fn start(&self, id: &str) -> Result<(), InstallError>;
    /// Stop a container (SIGTERM, then SIGKILL after `timeout_secs`).
    async fn stop(&self, id: &str, timeout_secs: i64) -> Result<(), InstallError>;
    /// Remove a container (never its volumes).
    async fn remove(&self, id: &str) -> Result<(), InstallError>;
    /// Rename a container.
    async fn rename(&self, id: &str, new_name: &str) -> Result<(), InstallError>;
    /// Wait until a container exits; its exit code.
    async fn wait_exit(&self, id: &str) -> Result<i64, InstallError>;
    /// The last `lines` lines of a container's output.
    async fn logs(&self, id: &str, lines: usize) -> Result<String, InstallError>;
}
