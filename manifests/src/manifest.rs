//! `bundle.json`: what was packed. Signed; the installer trusts nothing that is not pinned here.
//!
//! Compatibility rule (docs/bundle-format.md): `schema_version` changes when an older installer
//! would misread a bundle. Fields may be added without a version change only if they are optional
//! and an installer that ignores them stays safe. That is why these structs, unlike the compose
//! spec, accept unknown fields: an installer in the field ignores what a newer bundler adds
//! (the bytes are signed either way; only their meaning is unknown to it).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::Digest;

/// The format version this crate writes and reads.
///
/// Version 2 (ADR 0004): the stack is carried as compose templates (`stack`), resolved with the
/// site's values at install time; version 1 carried typed services with `${VAR}` only in
/// `environment`.
pub const SCHEMA_VERSION: u32 = 2;

/// The signed manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Format version; see the compatibility rule.
    pub schema_version: u32,
    /// Product name; an installer refuses a bundle for another product.
    pub product: String,
    /// Human version, e.g. `1.4.0`.
    pub version: String,
    /// Monotonic release counter, for anti-rollback.
    pub release: u64,
    /// Release channel.
    pub channel: String,
    /// Build time, seconds since the epoch (from `SOURCE_DATE_EPOCH` when set).
    pub created: u64,
    /// After this time (seconds since the epoch) the bundle is refused.
    pub expires: Option<u64>,
    /// Target platform, `linux/amd64`.
    pub platform: String,
    /// Key id of the signing key.
    pub key_id: String,
    /// Compose project name (container names, compose labels).
    pub project: String,
    /// Every entry after the signature, in archive order.
    pub entries: Vec<Entry>,
    /// The images, each pinned by digest.
    pub images: Vec<Image>,
    /// The stack as compose describes it (`services`, `volumes`, `networks`, `secrets`,
    /// `configs`) after bundle-time processing: anchors, `extends` and profiles applied, `x-*`
    /// fields dropped, images and pinned variables filled in. Every other `${…}` is a site value,
    /// filled in and type-checked by [`crate::compose::resolve`] at install time.
    pub stack: serde_json::Value,
    /// One-shot migration services, run once per release.
    pub migrations: Vec<String>,
    /// One-shot backup service, run before the migrations.
    pub backup: Option<String>,
    /// `x-bundle.snapshot`: what the installer copies before this release's migrations run
    /// (volume keys, site data directories). `None`: the volumes and site data directories that
    /// the migrations and the services they depend on mount; empty: no snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<Vec<String>>,
    /// `x-bundle.templates`: bundled files (paths as the compose file mounts them) rendered at
    /// install time with the site's values, each with the variables it references.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub templates: BTreeMap<String, Vec<String>>,
    /// `x-bundle.swarm`: per-service settings for `installer apply --target swarm`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub swarm: BTreeMap<String, SwarmSettings>,
    /// Operator-supplied variables (names and defaults only; values are never in a bundle).
    pub variables: BTreeMap<String, VariableDef>,
    /// Health gate settings.
    pub health: HealthSettings,
    /// What the host needs.
    pub requires: Requirements,
    /// A new signing key the vendor moves to. This manifest is signed by the current key, so a
    /// host that trusts the current key and verifies this bundle trusts the new one too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_rotation: Option<KeyRotation>,
    /// The parts of a bundle split for removable media (`bundler build --part-size`): part 000
    /// holds `bundle.json` and its signature, the listed parts hold the rest of the archive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parts: Option<Parts>,
}

/// How a service runs on a Swarm (`x-bundle.swarm.<service>`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwarmSettings {
    /// Tasks (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<u64>,
    /// Placement constraints (`node.labels.db == true`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub placement: Vec<String>,
    /// Update order: `stop-first` (default) or `start-first`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<String>,
}

/// The signed part table of a split bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Parts {
    /// The largest size of one part, in bytes.
    pub part_size: u64,
    /// Parts 001, 002, …: the archive after the signature, cut into byte ranges, in order.
    pub parts: Vec<Part>,
}

/// One part file of a split bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Part {
    /// File name as written (`OUT.001`).
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// sha256 of the file.
    pub sha256: Digest,
}

/// A key-rotation record: the new public key, in minisign's format.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRotation {
    /// Key id of the new key.
    pub new_key_id: String,
    /// The new public key file's text (minisign format).
    pub new_public_key: String,
}

/// One archive entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Path inside the archive.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// sha256 of the content.
    pub sha256: Digest,
}

/// A blob as the registry described it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Blob {
    /// Digest.
    pub digest: Digest,
    /// Size.
    pub size: u64,
    /// Media type.
    pub media_type: String,
}

/// A layer: its blob plus the digest of its uncompressed tar (the diff id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layer {
    /// The blob.
    #[serde(flatten)]
    pub blob: Blob,
    /// Digest of the uncompressed layer tar, from the image config.
    pub diff_id: Digest,
}

/// One image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    /// The reference as the compose file writes it; the installer tags the image with it.
    pub reference: String,
    /// Digest of the multi-arch index the tag pointed to, if any.
    pub index_digest: Option<Digest>,
    /// The platform manifest, stored byte for byte.
    pub manifest: Blob,
    /// The config; its digest is the Docker image ID.
    pub config: Blob,
    /// Layers, base first.
    pub layers: Vec<Layer>,
}

impl Image {
    /// Sum of the compressed layer sizes plus config.
    #[must_use]
    pub fn size(&self) -> u64 {
        self.config.size + self.layers.iter().map(|l| l.blob.size).sum::<u64>()
    }
}

/// A `depends_on` condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    /// `service_started`.
    Started,
    /// `service_healthy`.
    Healthy,
    /// `service_completed_successfully`.
    CompletedSuccessfully,
}

/// A published port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    /// Host address.
    pub host_ip: String,
    /// Host port; 0 lets Docker choose one.
    pub host_port: u16,
    /// Container port.
    pub container_port: u16,
    /// `tcp` or `udp`.
    pub protocol: String,
}

/// Kind of mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MountKind {
    /// A named volume.
    Volume,
    /// A bind mount: an absolute host path, or a bundled file or directory relative to the
    /// compose file.
    Bind,
    /// A directory relative to the compose file that the bundle does not carry (a runtime dir
    /// such as `./data`): created under the site data directory, never removed.
    SiteData,
    /// A tmpfs (`source` is empty).
    Tmpfs,
    /// A file holding a site variable's value (`secrets`/`configs` with `environment:`);
    /// `source` is the variable's name.
    Value,
}

/// A mount.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    /// Volume or bind.
    pub kind: MountKind,
    /// Volume name, absolute host path, or bundled file path relative to the compose file.
    pub source: String,
    /// Container path.
    pub target: String,
    /// Read-only.
    pub read_only: bool,
    /// Docker's mount options: `z`, `Z`, `nocopy`, propagation (`rshared`, ...), and for a tmpfs
    /// `size=<bytes>`, `mode=<octal>`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

/// Healthcheck; durations in milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthcheckDef {
    /// Test (`CMD`, `CMD-SHELL`, `NONE` first); empty = keep the image's test.
    pub test: Vec<String>,
    /// Interval.
    pub interval_ms: Option<u64>,
    /// Timeout.
    pub timeout_ms: Option<u64>,
    /// Retries.
    pub retries: Option<u32>,
    /// Start period.
    pub start_period_ms: Option<u64>,
    /// Interval during the start period (Docker 25+; older engines ignore it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_interval_ms: Option<u64>,
}

/// Resource limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitsDef {
    /// CPUs in units of 1e-9.
    pub nano_cpus: Option<i64>,
    /// Memory in bytes.
    pub memory_bytes: Option<i64>,
}

/// Logging.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoggingDef {
    /// Driver.
    pub driver: String,
    /// Options.
    pub options: BTreeMap<String, String>,
}

/// A normalized service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceDef {
    /// Image reference (one of [`Manifest::images`]).
    pub image: String,
    /// Command.
    pub command: Option<Vec<String>>,
    /// Entrypoint.
    pub entrypoint: Option<Vec<String>>,
    /// Environment, with the site's values filled in.
    pub environment: BTreeMap<String, String>,
    /// Env files (bundled stack files), applied before `environment`.
    pub env_file: Vec<String>,
    /// Published ports.
    pub ports: Vec<PortMapping>,
    /// Mounts.
    pub volumes: Vec<Mount>,
    /// Networks with extra aliases.
    pub networks: BTreeMap<String, Vec<String>>,
    /// Dependencies.
    pub depends_on: BTreeMap<String, Condition>,
    /// Healthcheck override.
    pub healthcheck: Option<HealthcheckDef>,
    /// Restart policy.
    pub restart: Option<String>,
    /// User.
    pub user: Option<String>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Working directory.
    pub working_dir: Option<String>,
    /// Limits.
    pub limits: Option<LimitsDef>,
    /// Logging.
    pub logging: Option<LoggingDef>,
    /// Everything else compose sets on a container (hardening, kernel and runtime options);
    /// empty fields are left out so that a service that uses none keeps its config hash.
    #[serde(flatten)]
    pub runtime: RuntimeDef,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// A `ulimits` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ulimit {
    /// Soft limit.
    pub soft: i64,
    /// Hard limit.
    pub hard: i64,
}

/// Container options beyond the basics, each as compose names it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[allow(missing_docs, reason = "each field is the compose key of the same name")]
pub struct RuntimeDef {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expose: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<bool>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub read_only: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub privileged: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub tty: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub stdin_open: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub security_opt: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cap_add: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cap_drop: Vec<String>,
    /// `host[:container[:permissions]]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub group_add: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_opt: Vec<String>,
    /// `host:ip`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_hosts: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ulimits: BTreeMap<String, Ulimit>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shm_size: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids_limit: Option<i64>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sysctls: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_grace_period_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domainname: Option<String>,
    /// `host`, `none`, or `service:NAME` (the installer turns it into `container:<name>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipc: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uts: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub userns_mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup_parent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem_reservation: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memswap_limit: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem_swappiness: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oom_kill_disable: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oom_score_adj: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_shares: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpuset: Option<String>,
    /// Services whose volumes this one mounts (`service[:ro]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes_from: Vec<String>,
    /// `service[:alias]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub links: Vec<String>,
    /// Fixed addresses per network (`ipv4_address`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub network_ipv4: BTreeMap<String, String>,
}

/// A named volume as the stack declares it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeDef {
    /// The key in the compose file (services mount it by this name).
    pub key: String,
    /// The engine's name: `name:` if given, else `<project>_<key>`.
    pub name: String,
    /// Created by someone else; checked to exist, never created or removed.
    pub external: bool,
    /// Driver (only `local`).
    pub driver: Option<String>,
    /// Driver options.
    pub driver_opts: BTreeMap<String, String>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
}

/// A network as the stack declares it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkDef {
    /// The key in the compose file.
    pub key: String,
    /// The engine's name: `name:` if given, else `<project>_<key>`.
    pub name: String,
    /// Created by someone else; checked to exist, never created or removed.
    pub external: bool,
    /// Driver (`bridge`).
    pub driver: Option<String>,
    /// Driver options.
    pub driver_opts: BTreeMap<String, String>,
    /// No route outside.
    pub internal: bool,
    /// Subnets (`ipam.config[].subnet`) with their gateways.
    pub subnets: Vec<(String, Option<String>)>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
}

/// An operator-supplied variable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VariableDef {
    /// Never printed; stored 0600.
    pub secret: bool,
    /// Default value (never for secrets).
    pub default: Option<String>,
    /// What to tell the operator.
    pub description: Option<String>,
    /// Every reference has a fallback (`${NAME:-x}`, `${NAME+x}`, `- NAME` in `environment`):
    /// the stack works without a value.
    #[serde(default, skip_serializing_if = "is_false")]
    pub optional: bool,
    /// Declared under `x-bundle.variables` (else found in the compose file).
    #[serde(default, skip_serializing_if = "is_false")]
    pub declared: bool,
}

/// Health gate settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthSettings {
    /// Per-service timeout in milliseconds.
    pub timeout_ms: u64,
}

/// What the host needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Requirements {
    /// Bytes of image blobs (compressed) the bundle carries.
    pub image_bytes: u64,
    /// Lowest Docker API version the installer's calls need.
    pub docker_api_version: String,
}

/// Why `bundle.json` could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// Newer format than this program understands.
    #[error("bundle.json has schema_version {found}; this program reads version {SCHEMA_VERSION}")]
    UnsupportedVersion {
        /// The version found.
        found: u32,
    },
    /// Not valid JSON of the expected shape.
    #[error("bundle.json is not a valid manifest: {0}")]
    Malformed(String),
}

impl Manifest {
    /// Canonical bytes: compact JSON (struct fields in declaration order, maps sorted) plus a
    /// newline. Two builds of the same input give the same bytes.
    ///
    /// # Panics
    /// Never: every field serializes.
    #[must_use]
    pub fn to_canonical_bytes(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec(self).expect("manifest serializes");
        v.push(b'\n');
        v
    }

    /// Parse manifest bytes, checking the schema version first so that a newer format gets a
    /// clear message rather than a field error.
    ///
    /// # Errors
    /// Unsupported version or malformed JSON.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ManifestError> {
        #[derive(Deserialize)]
        struct Version {
            schema_version: u32,
        }
        let v: Version = serde_json::from_slice(bytes).map_err(|e| ManifestError::Malformed(e.to_string()))?;
        if v.schema_version != SCHEMA_VERSION {
            return Err(ManifestError::UnsupportedVersion { found: v.schema_version });
        }
        serde_json::from_slice(bytes).map_err(|e| ManifestError::Malformed(e.to_string()))
    }

    /// The image a reference names.
    #[must_use]
    pub fn image(&self, reference: &str) -> Option<&Image> {
        self.images.iter().find(|i| i.reference == reference)
    }

    /// Total size of all entries.
    #[must_use]
    pub fn payload_bytes(&self) -> u64 {
        self.entries.iter().map(|e| e.size).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_added_optional_field_is_ignored_by_this_reader() {
        let text = String::from_utf8(crate::reader::empty_manifest().to_canonical_bytes()).unwrap();
        let newer = text.replacen("{\"schema_version\":2,", "{\"schema_version\":2,\"added_later\":{\"x\":1},", 1);
        assert_ne!(newer, text);
        let parsed = Manifest::from_bytes(newer.as_bytes()).unwrap();
        assert_eq!(parsed, Manifest::from_bytes(text.as_bytes()).unwrap());
    }

    #[test]
    fn a_newer_schema_version_is_refused_by_name() {
        let text = String::from_utf8(crate::reader::empty_manifest().to_canonical_bytes()).unwrap();
        let newer = text.replacen("\"schema_version\":2", "\"schema_version\":3", 1);
        let err = Manifest::from_bytes(newer.as_bytes()).unwrap_err();
        assert!(matches!(err, ManifestError::UnsupportedVersion { found: 3 }), "{err}");
    }
}
