//! The state directory (default `/var/lib/installer`): what is installed, the journal of the
//! apply in progress, which migrations ran, the operator's values, the trusted keys.
//!
//! Every file is written whole to a temp file in the same directory, fsynced, renamed over the
//! old one, and the directory fsynced: a power cut leaves the old or the new file, never a torn
//! one.
//!
//! ```text
//! keys/*.pub              trusted public keys
//! lock                    held (flock) by the running apply
//! installed.json          the release that is installed and its containers
//! previous.json           the release before it (what `installer rollback` returns to)
//! journal.json            steps of the current or last apply, each started/done/failed: the
//!                         record of how far it got. Resuming does not replay it: the plan is
//!                         computed again from the host (container labels carry the config hash
//!                         and release) and migrations.json, which is what makes a re-run converge
//! history.jsonl           every apply: release, time, outcome, operator, overrides
//! migrations.json         every migration that completed, per release (never forgotten)
//! values.json             the operator's variables, mode 0600
//! copies.json             every copy of data made before migrations or by a restore (for prune)
//! stopped.json            containers a running backup stopped (a killed backup's are started
//!                         again by the next backup, restore or apply)
//! releases/<n>/bundle.json, bundle.json.minisig, files/...   release n's signed manifest and config files
//! ```

use std::collections::BTreeMap;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use manifests::Digest;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::InstallError;

/// The state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

/// The installed release.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Installed {
    /// Product.
    pub product: String,
    /// Compose project.
    pub project: String,
    /// Release counter.
    pub release: u64,
    /// Version.
    pub version: String,
    /// sha256 of the release's bundle.json.
    pub manifest_sha256: Digest,
    /// When the apply finished (unix seconds).
    pub applied_at: u64,
    /// Service name -> container name and config hash.
    pub services: BTreeMap<String, InstalledService>,
    /// The generation each data source is at (empty: the compose names).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub generations: crate::data::Generations,
    /// Completed migrations when this release was installed: they match its data, and come
    /// back with it on a rollback to this release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migrations: Option<Migrations>,
    /// The copy made before this release's migrations (what a rollback from it returns to).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<crate::data::snapshot::SnapshotRecord>,
}

/// One installed service.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct InstalledService {
    /// Container name.
    pub container: String,
    /// Config hash label.
    pub config_hash: String,
    /// Image reference.
    pub image: String,
    /// One-shot job (migration, backup).
    pub one_shot: bool,
}

/// Status of a journal step.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    /// Recorded before the step runs.
    Started,
    /// Recorded after it succeeded.
    Done,
    /// Recorded after it failed.
    Failed,
}

/// One step.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JournalStep {
    /// Step name: `load-images`, `resources`, `service:<name>`, `job:<name>:r<release>`.
    pub name: String,
    /// Status.
    pub status: StepStatus,
    /// Unix seconds.
    pub at: u64,
}

/// The journal of one apply.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Journal {
    /// Which bundle (sha256 of its bundle.json).
    pub manifest_sha256: Option<Digest>,
    /// Release.
    pub release: u64,
    /// Started (unix seconds).
    pub started_at: u64,
    /// Whether the apply finished successfully.
    pub finished: bool,
    /// Steps in the order they were recorded.
    pub steps: Vec<JournalStep>,
    /// The copy of the data made (or being made) before this release's migrations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<crate::data::snapshot::SnapshotRecord>,
}

impl Journal {
    /// A fresh journal for a bundle.
    #[must_use]
    pub fn new(manifest_sha256: Digest, release: u64) -> Self {
        Self {
            manifest_sha256: Some(manifest_sha256),
            release,
            started_at: manifests::time::now(),
            finished: false,
            steps: Vec::new(),
            snapshot: None,
        }
    }
}

/// One apply, as `installer history` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// When it ended (unix seconds).
    pub at: u64,
    /// Product.
    pub product: String,
    /// Version.
    pub version: String,
    /// Release applied (or refused).
    pub release: u64,
    /// Release installed before.
    pub previous_release: Option<u64>,
    /// Key that signed the bundle.
    pub key_id: String,
    /// `applied`, or the exit code's name (`rolled-back`, `policy-rejected`, ...).
    pub outcome: String,
    /// Exit code.
    pub exit_code: u8,
    /// First line of the error.
    pub error: Option<String>,
    /// Who ran it (SUDO_USER, USER).
    pub operator: String,
    /// Policy overrides used, e.g. `--allow-downgrade from release 3`.
    pub overrides: Vec<String>,
}

/// A completed migration.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MigrationRecord {
    /// Release it ran for.
    pub release: u64,
    /// Service.
    pub service: String,
    /// Container that ran it.
    pub container: String,
    /// Unix seconds.
    pub finished_at: u64,
}

/// Every completed migration, keyed `r<release>/<service>`.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq, Eq)]
pub struct Migrations {
    /// Records.
    pub done: BTreeMap<String, MigrationRecord>,
}

impl Migrations {
    /// Key of a migration.
    #[must_use]
    pub fn key(release: u64, service: &str) -> String {
        format!("r{release}/{service}")
    }
    /// Whether it completed.
    #[must_use]
    pub fn is_done(&self, release: u64, service: &str) -> bool {
        self.done.contains_key(&Self::key(release, service))
    }
}

/// One copy of data in `copies.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CopyLogEntry {
    /// What was copied from where to where.
    #[serde(flatten)]
    pub copy: crate::data::snapshot::PlannedCopy,
    /// When (unix seconds).
    pub at: u64,
}

/// The held lock; released when dropped (or when the process dies).
pub struct Lock {
    _file: std::fs::File,
}

impl StateDir {
    /// A state dir at `root` (created on first write).
    #[must_use]
    pub fn new(root: PathBuf) -> Self {
        // Absolute from the start: bind-mount sources under it go to Docker, which refuses
        // relative paths (`--state-dir ./st` failed halfway through an apply).
        let root = std::path::absolute(&root).unwrap_or(root);
        Self { root }
    }
    /// Root path.
    #[must_use]
    pub fn root(&self) -> &Path {
        &self.root
    }
    /// Trusted keys directory.
    #[must_use]
    pub fn keys_dir(&self) -> PathBuf {
        self.root.join("keys")
    }
    /// Files of a release.
    #[must_use]
    pub fn release_dir(&self, release: u64) -> PathBuf {
        self.root.join("releases").join(release.to_string())
    }
    /// The manifests of the releases this state directory keeps (`releases/<n>/bundle.json`;
    /// unreadable ones are left out): what the engine may already hold from earlier applies.
    #[must_use]
    pub fn release_manifests(&self) -> Vec<manifests::Manifest> {
        let Ok(dir) = std::fs::read_dir(self.root.join("releases")) else { return vec![] };
        dir.filter_map(Result::ok)
            .filter_map(|e| std::fs::read(e.path().join("bundle.json")).ok())
            .filter_map(|b| manifests::Manifest::from_bytes(&b).ok())
            .collect()
    }

    /// Config files of a release.
    #[must_use]
    pub fn files_dir(&self, release: u64) -> PathBuf {
        self.release_dir(release).join("files")
    }

    /// The site data directory: runtime directories the stack bind-mounts (`./data`), kept
    /// across releases and never removed by the installer.
    #[must_use]
    pub fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }

    /// Where a release's host-side files live.
    #[must_use]
    pub fn paths(&self, release: u64) -> crate::plan::HostPaths {
        crate::plan::HostPaths {
            files: self.files_dir(release),
            data: self.data_dir(),
            values: self.release_dir(release).join("values"),
            rendered: self.release_dir(release).join("rendered"),
        }
    }

    /// Create the directory (0700: it holds secrets).
    ///
    /// # Errors
    /// I/O errors.
    pub fn create(&self) -> Result<(), InstallError> {
        std::fs::create_dir_all(&self.root).map_err(InstallError::state(&self.root))?;
        std::fs::set_permissions(&self.root, std::fs::Permissions::from_mode(0o700))
            .map_err(InstallError::state(&self.root))
    }

    /// Take the apply lock without waiting.
    ///
    /// # Errors
    /// [`InstallError::Locked`] when another process holds it.
    pub fn lock(&self) -> Result<Lock, InstallError> {
        self.create()?;
        let path = self.root.join("lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(InstallError::state(&path))?;
        match file.try_lock() {
            Ok(()) => Ok(Lock { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => Err(InstallError::Locked { state_dir: self.root.clone() }),
            Err(std::fs::TryLockError::Error(e)) => Err(InstallError::State { path, source: e }),
        }
    }

    fn read_json<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>, InstallError> {
        let path = self.root.join(name);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| InstallError::State {
                path,
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(InstallError::State { path, source: e }),
        }
    }

    fn write_json<T: Serialize>(&self, name: &str, value: &T) -> Result<(), InstallError> {
        self.create()?;
        let mut bytes = serde_json::to_vec_pretty(value).unwrap_or_default();
        bytes.push(b'\n');
        write_atomic(&self.root.join(name), &bytes, 0o600)
    }

    /// The installed release, if any.
    ///
    /// # Errors
    /// Unreadable state.
    pub fn installed(&self) -> Result<Option<Installed>, InstallError> {
        self.read_json("installed.json")
    }
    /// Record the installed release; the one it replaces (if another release) becomes the
    /// previous release that `installer rollback` returns to.
    ///
    /// # Errors
    /// Write failures.
    pub fn set_installed(&self, installed: &Installed) -> Result<(), InstallError> {
        if let Some(old) = self.installed()?
            && old.release != installed.release
        {
            self.write_json("previous.json", &old)?;
        }
        self.write_json("installed.json", installed)
    }
    /// The release installed before the current one, if any.
    ///
    /// # Errors
    /// Unreadable state.
    pub fn previous(&self) -> Result<Option<Installed>, InstallError> {
        self.read_json("previous.json")
    }
    /// The journal of the last apply.
    ///
    /// # Errors
    /// Unreadable state.
    pub fn journal(&self) -> Result<Journal, InstallError> {
        Ok(self.read_json("journal.json")?.unwrap_or_default())
    }
    /// Save the journal.
    ///
    /// # Errors
    /// Write failures.
    pub fn save_journal(&self, journal: &Journal) -> Result<(), InstallError> {
        self.write_json("journal.json", journal)
    }
    /// Completed migrations.
    ///
    /// # Errors
    /// Unreadable state.
    pub fn migrations(&self) -> Result<Migrations, InstallError> {
        Ok(self.read_json("migrations.json")?.unwrap_or_default())
    }
    /// Releases that have a directory under `releases/`, ascending.
    ///
    /// # Errors
    /// The directory cannot be read.
    pub fn release_numbers(&self) -> Result<Vec<u64>, InstallError> {
        let dir = self.root.join("releases");
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(InstallError::State { path: dir, source: e }),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(InstallError::state(&dir))?;
            // `<n>.partial` is a pass that did not finish; it is not a release.
            if let Some(n) = entry.file_name().to_str().and_then(|n| n.parse::<u64>().ok()) {
                out.push(n);
            }
        }
        out.sort_unstable();
        Ok(out)
    }

    /// Remove a release's directory (its manifest, signature and files).
    ///
    /// # Errors
    /// The directory cannot be removed.
    pub fn remove_release(&self, release: u64) -> Result<(), InstallError> {
        let dir = self.release_dir(release);
        std::fs::remove_dir_all(&dir).map_err(InstallError::state(&dir))
    }

    /// Save completed migrations.
    ///
    /// # Errors
    /// Write failures.
    pub fn save_migrations(&self, m: &Migrations) -> Result<(), InstallError> {
        self.write_json("migrations.json", m)
    }
    /// Append one entry to `history.jsonl` (one JSON object per line, fsynced). A line is written
    /// with one `write` call; a torn last line after a power cut is skipped when reading.
    ///
    /// # Errors
    /// Write failures.
    pub fn append_history(&self, entry: &HistoryEntry) -> Result<(), InstallError> {
        use std::io::Write as _;
        self.create()?;
        let path = self.root.join("history.jsonl");
        let mut line = serde_json::to_vec(entry).unwrap_or_default();
        line.push(b'\n');
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)
            .map_err(InstallError::state(&path))?;
        f.write_all(&line).and_then(|()| f.sync_all()).map_err(InstallError::state(&path))
    }

    /// Every recorded apply, oldest first.
    ///
    /// # Errors
    /// Unreadable file.
    pub fn history(&self) -> Result<Vec<HistoryEntry>, InstallError> {
        let path = self.root.join("history.jsonl");
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(InstallError::State { path, source: e }),
        }
    }

    /// Every copy of data made (snapshots, restores), for `installer prune`.
    ///
    /// # Errors
    /// Unreadable state.
    pub fn copies(&self) -> Result<Vec<CopyLogEntry>, InstallError> {
        Ok(self.read_json("copies.json")?.unwrap_or_default())
    }
    /// Record copies just made.
    ///
    /// # Errors
    /// Write failures.
    pub fn log_copies(&self, copies: &[crate::data::snapshot::PlannedCopy], at: u64) -> Result<(), InstallError> {
        let mut log = self.copies()?;
        log.extend(copies.iter().map(|c| CopyLogEntry { copy: c.clone(), at }));
        self.write_json("copies.json", &log)
    }

    /// Containers a backup stopped and has not started again yet (it was killed).
    ///
    /// # Errors
    /// Unreadable state.
    pub fn stopped(&self) -> Result<Vec<crate::data::snapshot::Stopped>, InstallError> {
        Ok(self.read_json("stopped.json")?.unwrap_or_default())
    }
    /// Record the containers a backup stopped (empty: remove the record).
    ///
    /// # Errors
    /// Write failures.
    pub fn save_stopped(&self, stopped: &[crate::data::snapshot::Stopped]) -> Result<(), InstallError> {
        if stopped.is_empty() {
            let path = self.root.join("stopped.json");
            return match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(InstallError::State { path, source: e }),
                _ => Ok(()),
            };
        }
        self.write_json("stopped.json", &stopped)
    }

    /// Saved operator values (JSON, so every value round-trips exactly).
    ///
    /// # Errors
    /// Unreadable state.
    pub fn values(&self) -> Result<BTreeMap<String, String>, InstallError> {
        Ok(self.read_json("values.json")?.unwrap_or_default())
    }
    /// Save operator values (0600).
    ///
    /// # Errors
    /// Write failures.
    pub fn save_values(&self, values: &BTreeMap<String, String>) -> Result<(), InstallError> {
        self.write_json("values.json", values)
    }
}

/// [`manifests::fsutil::write_atomic`], with the path in the error.
///
/// # Errors
/// I/O errors, naming the path.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), InstallError> {
    manifests::fsutil::write_atomic(path, bytes, mode).map_err(InstallError::state(path))
}
