//! The stack's data around upgrades (ADR 0006): a copy of the data before a release's
//! migrations run, rollbacks that bring that data back, and backup files.
//!
//! Each data source (a named volume the installer creates, a site data directory) has
//! *generations*: the compose name (or `<state>/data/<dir>`) first, then copies named after the
//! release whose migrations they were made for (`<project>_dbdata-r3`). A migrating release
//! runs on a fresh copy; the generation the previous release used is never written again, so
//! putting the previous containers back puts the previous data back, at once and exactly.
//! `installed.json` records which generation each source is at; older ones stay until
//! `installer prune` (the last [`KEEP_SNAPSHOTS`] by default).
//!
//! - [`archive`]: checks on the tar streams the engine sends (trailer, digests);
//! - [`copy`]: helper containers and streams through the Engine API (no tools on the host);
//! - [`snapshot`]: the copy before migrations, inside `installer apply`;
//! - [`backup`]: `installer backup` and `installer restore`.

pub mod archive;
pub mod backup;
pub mod copy;
pub mod snapshot;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Pre-migration copies `installer prune` keeps besides those the installed and previous
/// releases use.
pub const KEEP_SNAPSHOTS: usize = 3;

/// Label on volumes the installer made as a generation of a data source.
pub const GENERATION_LABEL: &str = "io.installer.generation";
/// Label naming the data source (`volume:dbdata`) of a generation.
pub const SOURCE_LABEL: &str = "io.installer.data-source";

/// Data source key -> the name (volume) or path (directory) of its current generation.
pub type Generations = BTreeMap<String, String>;

/// Key of a named volume (its compose key).
#[must_use]
pub fn volume_key(key: &str) -> String {
    format!("volume:{key}")
}

/// Key of a site data directory (its path as the compose file names it, `data/uploads`).
#[must_use]
pub fn dir_key(source: &str) -> String {
    format!("dir:{source}")
}

/// One data source of the stack, as the plan sees it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DataSource {
    /// `volume:<key>` or `dir:<path>`.
    pub key: String,
    /// A named volume (else a host directory).
    pub volume: bool,
    /// Generation 0: the compose name, or the directory under `<state>/data`.
    pub base: String,
    /// The generation this plan mounts.
    pub current: String,
    /// Services that mount it.
    pub services: Vec<String>,
    /// An image of a service that mounts it (helper containers are made from it: no image
    /// beyond the bundle's is needed, and nothing in it ever runs).
    pub image: String,
}

impl DataSource {
    /// For people: `volume clientstack_dbdata` / `directory /var/lib/installer/data/uploads`.
    #[must_use]
    pub fn describe(&self, name: &str) -> String {
        if self.volume { format!("volume {name}") } else { format!("directory {name}") }
    }
}

impl DataSource {
    /// Where its current generation lives on this host, `None` when it does not exist yet (a
    /// first install, a volume new in this release).
    ///
    /// # Errors
    /// Docker unreachable.
    pub async fn location<E: crate::engine::Engine>(&self, engine: &E) -> Result<Option<PathBuf>, crate::InstallError> {
        if self.volume {
            engine.volume_mountpoint(&self.current).await
        } else {
            Ok(Some(PathBuf::from(&self.current)).filter(|p| p.exists()))
        }
    }

    /// Its bytes and entries now ([`tree_size`]); zero when it does not exist.
    ///
    /// # Errors
    /// Docker unreachable.
    pub async fn size<E: crate::engine::Engine>(&self, engine: &E) -> Result<(u64, u64), crate::InstallError> {
        Ok(self.location(engine).await?.map_or((0, 0), |p| tree_size(&p)))
    }

    /// The name of a new generation made for `tag` (`r3`, `restored-…`): the first of
    /// `<base>-<tag>`, `<base>-<tag>.2`, … that is not in use, or is in `reuse` (the copies of
    /// an interrupted run, removed and made again).
    ///
    /// # Errors
    /// Docker unreachable.
    pub async fn free_name<E: crate::engine::Engine>(
        &self,
        engine: &E,
        tag: &str,
        reuse: &std::collections::BTreeSet<&str>,
    ) -> Result<String, crate::InstallError> {
        let first = format!("{}-{tag}", self.base);
        let mut name = first.clone();
        for n in 2.. {
            let taken = !reuse.contains(name.as_str())
                && (name == self.current
                    || if self.volume { engine.volume_exists(&name).await? } else { Path::new(&name).exists() });
            if !taken {
                break;
            }
            name = format!("{first}.{n}");
        }
        Ok(name)
    }

    /// Create the generation `name` made for `tag`: a volume with the stack's driver, options
    /// and labels plus the generation labels, or a directory.
    ///
    /// # Errors
    /// Docker's refusal, a directory that cannot be made.
    pub async fn create_generation<E: crate::engine::Engine>(
        &self,
        engine: &E,
        plan: &crate::plan::Plan,
        name: &str,
        tag: &str,
    ) -> Result<(), crate::InstallError> {
        let Some(key) = self.key.strip_prefix("volume:") else {
            return std::fs::create_dir_all(name)
                .map_err(|e| crate::InstallError::Data { what: self.describe(name), message: e.to_string() });
        };
        use crate::plan::labels;
        let labels = BTreeMap::from([
            (labels::PROJECT.to_string(), plan.project.clone()),
            (labels::VOLUME.to_string(), key.to_string()),
            (GENERATION_LABEL.to_string(), tag.to_string()),
            (SOURCE_LABEL.to_string(), self.key.clone()),
        ]);
        let mut def =
            plan.stack.volumes.iter().find(|v| v.key == key).cloned().unwrap_or_else(|| manifests::VolumeDef {
                key: key.to_string(),
                name: String::new(),
                external: false,
                driver: None,
                driver_opts: BTreeMap::new(),
                labels: BTreeMap::new(),
            });
        def.name = name.to_string();
        engine.ensure_volume(&def, &labels).await
    }
}

/// Remove a generation this run made (never one in use: the callers pass only their own).
///
/// # Errors
/// Docker's refusal, a directory that cannot be removed.
pub async fn remove_generation<E: crate::engine::Engine>(
    engine: &E,
    volume: bool,
    name: &str,
) -> Result<(), crate::InstallError> {
    if volume {
        return engine.remove_volume(name).await;
    }
    match std::fs::remove_dir_all(name) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(crate::InstallError::Data { what: format!("directory {name}"), message: e.to_string() }),
    }
}

/// Bytes under a directory (apparent sizes, each hardlinked file once, the directory tree
/// itself not counted), and the number of entries. Unreadable parts are skipped: the figure
/// sizes a disk check, it is not the copy.
#[must_use]
pub fn tree_size(root: &Path) -> (u64, u64) {
    let mut seen = std::collections::BTreeSet::new();
    let (mut bytes, mut entries) = (0u64, 0u64);
    let mut stack: Vec<PathBuf> = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(read) = std::fs::read_dir(&dir) else { continue };
        for entry in read.flatten() {
            let Ok(meta) = entry.path().symlink_metadata() else { continue };
            entries += 1;
            if meta.is_dir() {
                stack.push(entry.path());
            } else if meta.is_file() && (meta.nlink() < 2 || seen.insert((meta.dev(), meta.ino()))) {
                bytes += meta.len();
            }
        }
    }
    (bytes, entries)
}

/// What a copy of these sources needs on disk: data plus a tar header per entry and 10 %.
#[must_use]
pub fn with_margin(bytes: u64, entries: u64) -> u64 {
    let raw = bytes + entries * 512;
    raw + raw / 10
}
