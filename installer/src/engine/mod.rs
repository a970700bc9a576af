//! The one seam to the container engine. [`docker::DockerEngine`] is the real one (the only
//! module that imports bollard); tests pass a fake explicitly.
//!
//! Engines differ in how they hold images (shared/notes/engines.md): Docker with a graph driver
//! names an image by its config digest and skips a layer file whose chain ID it has; Docker with
//! the containerd image store names it by its manifest digest and can leave out only blobs its
//! content store holds; Podman names it by its config digest and reuses only blobs it got
//! through an OCI load. One file per strategy ([`graph`], [`containerd`], [`podman`]) holds
//! those decisions; the engine itself only reports facts ([`HostImage`]).

pub mod containerd;
pub mod docker;
pub mod graph;
pub mod podman;
pub mod swarm;

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use manifests::{
    Digest, HealthcheckDef, Image, Layer, LimitsDef, LoggingDef, NetworkDef, PortMapping, RuntimeDef, VolumeDef,
};
use tokio::sync::mpsc;

use crate::error::InstallError;

/// Which engine, as far as loading images is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum EngineKind {
    /// Not recognised: every layer is sent.
    #[default]
    Unknown,
    /// Docker with a graph driver (overlay2, ...).
    GraphDriver,
    /// Docker with the containerd image store (the default of fresh Docker 29 installs).
    ContainerdStore,
    /// Podman's Docker-compatible API.
    Podman,
}

impl EngineKind {
    /// Its strategy.
    #[must_use]
    pub fn strategy(self) -> &'static dyn Strategy {
        match self {
            EngineKind::GraphDriver => &graph::GraphDriver,
            EngineKind::ContainerdStore => &containerd::ContainerdStore,
            EngineKind::Podman => &podman::Podman,
            EngineKind::Unknown => &graph::Unrecognised,
        }
    }

    /// For people.
    #[must_use]
    pub fn describe(self) -> &'static str {
        match self {
            EngineKind::GraphDriver => "Docker, graph driver",
            EngineKind::ContainerdStore => "Docker, containerd image store",
            EngineKind::Podman => "Podman (Docker-compatible API)",
            EngineKind::Unknown => "unrecognised engine (every layer is sent)",
        }
    }
}

/// One image as the engine reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostImage {
    /// The engine's ID (config digest, or manifest/index digest on the containerd store).
    pub id: Digest,
    /// `repo@sha256:…` digests the engine records (registry manifest digests).
    pub repo_digests: Vec<Digest>,
    /// Diff IDs of its layers, base first.
    pub diff_ids: Vec<Digest>,
    /// Platform manifests whose every blob is in the content store (containerd store,
    /// `GET /images/json?manifests=1`, API 1.47+).
    pub available_manifests: Vec<Digest>,
    /// Whether the engine reported manifests at all (it can say what its content store holds).
    pub manifests_reported: bool,
}

/// What the engine holds, reduced to what load decisions need.
#[derive(Debug, Clone, Default)]
pub struct Holdings {
    /// Engine IDs of the images it has.
    pub ids: BTreeSet<Digest>,
    /// Chain IDs of every layer it has unpacked.
    pub chain_ids: BTreeSet<Digest>,
    /// Layer blobs it is known to hold compressed, byte for byte as in our bundles.
    pub stored_blobs: BTreeSet<Digest>,
    /// Whether the engine can say which blobs it holds (else only unpacked layers are known).
    pub content_reported: bool,
}

/// How to load into one kind of engine.
pub trait Strategy: Sync {
    /// The kind.
    fn kind(&self) -> EngineKind;
    /// The engine's ID for one of our images: what tag, inspect and remove take.
    fn image_id(&self, image: &Image) -> Digest;
    /// Reduce the engine's report, knowing our images (this bundle's and installed releases').
    fn holdings(&self, images: &[HostImage], known: &[&Image]) -> Holdings;
    /// Whether a layer may be left out of the archive.
    fn may_skip(&self, layer: &Layer, chain_id: &Digest, holdings: &Holdings) -> bool;
}

/// Holdings known by image ID only (engines whose layers are never left out).
#[must_use]
pub fn ids_only(images: &[HostImage]) -> Holdings {
    Holdings { ids: images.iter().map(|i| i.id).collect(), ..Holdings::default() }
}

/// Layers of known images whose manifest digest is in `manifests`: the engine holds their blobs.
#[must_use]
pub fn layers_of(known: &[&Image], manifests: &BTreeSet<Digest>) -> BTreeSet<Digest> {
    known
        .iter()
        .filter(|i| manifests.contains(&i.manifest.digest))
        .flat_map(|i| i.layers.iter().map(|l| l.blob.digest))
        .collect()
}

/// What the engine says about itself.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct EngineInfo {
    /// Which engine (decides how images are loaded and named).
    pub kind: EngineKind,
    /// Product and version for people, e.g. `Docker 28.5.2` or `Podman 4.3.1`.
    pub product: String,
    /// Lowest API version the server accepts.
    pub min_api_version: String,
    /// `systemd` or `cgroupfs`: Podman runs healthchecks only through systemd timers.
    pub cgroup_driver: String,
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
#[derive(Debug, Clone, PartialEq, Default)]
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
    /// Bundled templates to render with the site's values first.
    pub templates: Vec<Rendered>,
}

/// A bundled template and where its rendering goes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Rendered {
    /// The bundled file (in the release's files).
    pub src: std::path::PathBuf,
    /// The rendered file the service mounts.
    pub dst: std::path::PathBuf,
    /// The site values it uses.
    pub values: BTreeMap<String, String>,
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
    /// Every image (tagged or not), as the engine reports it.
    async fn images(&self) -> Result<Vec<HostImage>, InstallError>;
    /// Stream a docker-save archive into the engine; returns the "Loaded image" lines. An `Err`
    /// item from `body` aborts the upload, and the engine then keeps nothing.
    async fn load(&self, body: mpsc::Receiver<std::io::Result<Bytes>>) -> Result<Vec<String>, InstallError>;
    /// Tag an image (by the engine's ID, see [`Strategy::image_id`]).
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
    /// A signal each time the engine reports an event of this container (health status, start,
    /// die, ...), so that a health gate reacts at once instead of at its next poll. The channel
    /// closes when the engine's event stream ends; gates then poll.
    async fn container_events(&self, id: &str) -> Result<mpsc::Receiver<()>, InstallError>;
    /// Where a volume's data lives on this host (its `Mountpoint`), `None` when it does not
    /// exist. Sizes are measured there: `/system/df` changed shape in API 1.52 and walks every
    /// volume of the host.
    async fn volume_mountpoint(&self, name: &str) -> Result<Option<std::path::PathBuf>, InstallError>;
    /// Remove a volume. Only the installer's own snapshot copies are ever removed (a copy left
    /// half made, or one `installer prune` no longer keeps); the engine refuses while a
    /// container uses it.
    async fn remove_volume(&self, name: &str) -> Result<(), InstallError>;
    /// Every container (any project, any state) that mounts a volume.
    async fn volume_users(&self, name: &str) -> Result<Vec<ContainerState>, InstallError>;
    /// Containers carrying a label (`key=value`), any state.
    async fn labelled(&self, label: &str) -> Result<Vec<ContainerState>, InstallError>;
    /// Stream the tar archive of `path` in a container (created, never started, is enough)
    /// into `sink`, chunk by chunk. A closed sink stops the download.
    async fn export(&self, id: &str, path: &str, sink: mpsc::Sender<Bytes>) -> Result<(), InstallError>;
    /// Unpack a tar archive into a container at `path` (uid/gid and modes as in the archive).
    /// An `Err` item from `body` aborts the upload.
    async fn import(
        &self,
        id: &str,
        path: &str,
        body: mpsc::Receiver<std::io::Result<Bytes>>,
    ) -> Result<(), InstallError>;
}
