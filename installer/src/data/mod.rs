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

/// The name of a new generation of `base`, made for `tag` (`r3`, `restored-…`): the first of
/// `<base>-<tag>`, `<base>-<tag>.2`, … that `taken` says is free.
#[must_use]
pub fn generation_name(base: &str, tag: &str, taken: &dyn Fn(&str) -> bool) -> String {
    let first = format!("{base}-{tag}");
    if !taken(&first) {
        return first;
    }
    (2..).map(|n| format!("{first}.{n}")).find(|n| !taken(n)).unwrap_or(first)
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
