//! `installer prune`: give back the disk that older releases hold. Every upgrade leaves the
//! previous release's images in Docker (rollback needs them) and its files under
//! `<state>/releases/<n>`; releases older than that are kept by nothing but habit.
//!
//! What is kept, always: the installed release and the one `rollback` returns to, their images
//! and files. What may go: the images of older releases that neither of those uses, and those
//! releases' directories, except those a container created in that release still uses (a kept
//! service bind-mounts its files from there). An image is removed by ID and never forced, and only when every tag it
//! has is one our older releases gave it: Docker itself then refuses while any container (of any
//! project) uses it, and we refuse when another tag (another product on this host) points to it.
//! Volumes in use are never touched: of the copies of data made before migrations (and by
//! restores), those the installed and the previous release run on stay, and so do the newest
//! `--keep-snapshots` (3) others; older ones go.

use std::collections::{BTreeMap, BTreeSet};

use manifests::{Digest, Manifest};
use serde::Serialize;

use crate::engine::{Engine, ImageRemoval};
use crate::error::InstallError;
use crate::plan::labels;
use crate::state::StateDir;

/// What happened, or would happen, to one image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "outcome", content = "detail")]
pub enum ImageOutcome {
    /// Removed from Docker.
    Removed,
    /// `--dry-run`: would be removed (unless a container uses it by then).
    WouldRemove,
    /// Docker no longer has it.
    Absent,
    /// Kept, with the reason (a container uses it, another tag points to it).
    Kept(String),
}

impl ImageOutcome {
    /// For the text report.
    fn describe(&self) -> String {
        match self {
            ImageOutcome::Removed => "removed".to_string(),
            ImageOutcome::WouldRemove => "would remove".to_string(),
            ImageOutcome::Absent => "already gone".to_string(),
            ImageOutcome::Kept(why) => format!("kept ({why})"),
        }
    }
}

/// One image of an older release.
#[derive(Debug, Clone, Serialize)]
pub struct ImagePrune {
    /// The reference the older release tagged.
    pub reference: String,
    /// Image ID.
    pub image_id: Digest,
    /// Newest release that used it.
    pub release: u64,
    /// Outcome.
    #[serde(flatten)]
    pub outcome: ImageOutcome,
}

/// The report.
#[derive(Debug, Clone, Serialize)]
pub struct PruneReport {
    /// Whether anything was changed.
    pub dry_run: bool,
    /// Releases kept (installed and previous).
    pub kept_releases: Vec<u64>,
    /// Release directories removed (or that would be).
    pub removed_releases: Vec<u64>,
    /// Older releases whose directory stays: a container created in it still exists, or one of
    /// its images stays.
    pub held_releases: Vec<u64>,
    /// Images of older releases.
    pub images: Vec<ImagePrune>,
    /// Docker's data root and its free bytes before and after, when measurable from here.
    pub docker_root: Option<DiskFree>,
    /// Older copies of the data (volumes, directories) no kept release runs on.
    pub data: Vec<DataPrune>,
}

/// One older copy of data.
#[derive(Debug, Clone, Serialize)]
pub struct DataPrune {
    /// Volume name or directory.
    pub name: String,
    /// A volume (else a directory).
    pub volume: bool,
    /// When it was last copied to or from (unix seconds).
    pub copied_at: u64,
    /// Outcome.
    #[serde(flatten)]
    pub outcome: ImageOutcome,
}

/// Free space of Docker's data root around a prune.
#[derive(Debug, Clone, Serialize)]
pub struct DiskFree {
    /// Docker's data root.
    pub path: String,
    /// Free bytes before.
    pub free_before: u64,
    /// Free bytes after.
    pub free_after: u64,
}

/// Prune.
///
/// # Errors
/// Nothing installed, an unreadable manifest of a kept release (then nothing is removed),
/// Docker unreachable, a state directory that cannot be changed.
pub async fn prune<E: Engine>(
    state: &StateDir,
    engine: &E,
    dry_run: bool,
    keep_snapshots: usize,
) -> Result<PruneReport, InstallError> {
    let _lock = state.lock()?;
    let installed = state.installed()?.ok_or_else(|| InstallError::NotInstalled(state.root().to_path_buf()))?;
    let previous = state.previous()?;
    let data = prune_data(state, engine, &installed, previous.as_ref(), dry_run, keep_snapshots).await?;
    let kept_releases: BTreeSet<u64> = std::iter::once(installed.release).chain(previous.map(|p| p.release)).collect();

    let releases = state.release_numbers()?;
    // What the kept releases use: nothing of theirs may go, so an unreadable one stops here.
    // By image ID, not by reference: a reference an older release shared with a kept one now
    // names the kept image, and the older image it named is left untagged, which is what prune
    // is for.
    let mut kept_ids = BTreeSet::new();
    for release in &kept_releases {
        let manifest = read_release(state, *release)?;
        kept_ids.extend(manifest.images.iter().map(|i| i.config.digest));
    }
    // Decided by config digest (what the image is); the engine is asked by its own ID for it
    // (the manifest digest on the containerd store).
    let strategy = engine.info().await?.kind.strategy();
    // Config digest -> the references older releases gave it, those releases, the engine's ID.
    let mut candidates: BTreeMap<Digest, (BTreeSet<String>, BTreeSet<u64>, Digest)> = BTreeMap::new();
    let older: Vec<u64> = releases.iter().copied().filter(|r| !kept_releases.contains(r)).collect();
    for release in &older {
        let manifest = read_release(state, *release)?;
        for image in &manifest.images {
            let id = image.config.digest;
            if kept_ids.contains(&id) {
                continue;
            }
            let entry =
                candidates.entry(id).or_insert_with(|| (BTreeSet::new(), BTreeSet::new(), strategy.image_id(image)));
            entry.0.insert(image.reference.clone());
            entry.1.insert(*release);
        }
    }

    // What the operator wants to know at the end: how much came back. Not measurable when
    // Docker's root is not visible from here (a remote DOCKER_HOST); then it is left out.
    let root = std::path::PathBuf::from(engine.info().await?.root_dir);
    let free_before = crate::preflight::free_bytes(&root, false).ok();
    let mut images = Vec::new();
    // A release directory stays while a container created in that release exists: a service
    // kept unchanged across releases still bind-mounts its files from there (and needs them at
    // its next restart).
    let mut held: BTreeSet<u64> = engine
        .project_containers(&installed.project)
        .await?
        .iter()
        .filter_map(|c| c.labels.get(labels::RELEASE).and_then(|r| r.parse().ok()))
        .filter(|r| older.contains(r))
        .collect();
    for (id, (ours, used_by, engine_id)) in &candidates {
        let outcome = match engine.image_tags(engine_id).await? {
            None => ImageOutcome::Absent,
            Some(tags) if tags.iter().any(|t| !ours.contains(t)) => {
                let foreign: Vec<&str> = tags.iter().filter(|t| !ours.contains(*t)).map(String::as_str).collect();
                ImageOutcome::Kept(format!("also tagged {}, not by this product", foreign.join(", ")))
            }
            Some(_) if dry_run => ImageOutcome::WouldRemove,
            Some(_) => match engine.remove_image(engine_id).await? {
                ImageRemoval::Removed => ImageOutcome::Removed,
                ImageRemoval::Absent => ImageOutcome::Absent,
                ImageRemoval::Refused(why) => ImageOutcome::Kept(why),
            },
        };
        // It also stays when one of its images stays: it is the record that the image came from
        // this product, so that a later prune can still remove it.
        if matches!(outcome, ImageOutcome::Kept(_)) {
            held.extend(used_by.iter().copied());
        }
        let reference = ours.iter().next().cloned().unwrap_or_default();
        let release = used_by.iter().next_back().copied().unwrap_or_default();
        images.push(ImagePrune { reference, image_id: *id, release, outcome });
    }
    let mut removed_releases = Vec::new();
    for release in older.iter().filter(|r| !held.contains(r)) {
        if !dry_run {
            state.remove_release(*release)?;
        }
        removed_releases.push(*release);
    }
    let docker_root = free_before
        .zip(crate::preflight::free_bytes(&root, false).ok())
        .map(|(before, after)| DiskFree { path: root.display().to_string(), free_before: before, free_after: after });
    Ok(PruneReport {
        docker_root,
        dry_run,
        kept_releases: kept_releases.into_iter().collect(),
        removed_releases,
        held_releases: held.into_iter().collect(),
        images,
        data,
    })
}

/// Copies of data (generations) that neither the installed nor the previous release runs on,
/// beyond the newest `keep`: removed (a volume only if no container uses it: Docker refuses).
async fn prune_data<E: Engine>(
    state: &StateDir,
    engine: &E,
    installed: &crate::state::Installed,
    previous: Option<&crate::state::Installed>,
    dry_run: bool,
    keep: usize,
) -> Result<Vec<DataPrune>, InstallError> {
    let in_use = |key: &str, base: &str, name: &str| {
        std::iter::once(installed).chain(previous).any(|i| i.generations.get(key).map_or(base == name, |g| g == name))
    };
    // Each generation once, with the last time a copy touched it (made, or copied from).
    let mut candidates: BTreeMap<String, (bool, u64)> = BTreeMap::new();
    for e in state.copies()? {
        for name in [&e.copy.from, &e.copy.to] {
            if in_use(&e.copy.key, &e.copy.base, name) {
                continue;
            }
            let entry = candidates.entry(name.clone()).or_insert((e.copy.volume, e.at));
            entry.1 = entry.1.max(e.at);
        }
    }
    let mut by_age: Vec<(String, bool, u64)> = Vec::new();
    for (name, (volume, at)) in candidates {
        let exists = if volume { engine.volume_exists(&name).await? } else { std::path::Path::new(&name).exists() };
        if exists {
            by_age.push((name, volume, at));
        }
    }
    by_age.sort_by_key(|d| std::cmp::Reverse(d.2));
    let mut out = Vec::new();
    for (i, (name, volume, at)) in by_age.into_iter().enumerate() {
        let outcome = if i < keep {
            ImageOutcome::Kept(format!("one of the {keep} newest copies kept (--keep-snapshots)"))
        } else if dry_run {
            ImageOutcome::WouldRemove
        } else if volume {
            match engine.remove_volume(&name).await {
                Ok(()) => ImageOutcome::Removed,
                Err(e) => ImageOutcome::Kept(e.to_string()),
            }
        } else {
            match std::fs::remove_dir_all(&name) {
                Ok(()) => ImageOutcome::Removed,
                Err(e) => ImageOutcome::Kept(e.to_string()),
            }
        };
        out.push(DataPrune { name, volume, copied_at: at, outcome });
    }
    Ok(out)
}

fn read_release(state: &StateDir, release: u64) -> Result<Manifest, InstallError> {
    let path = state.release_dir(release).join("bundle.json");
    let bytes = std::fs::read(&path).map_err(InstallError::state(&path))?;
    Manifest::from_bytes(&bytes).map_err(|e| InstallError::State {
        path,
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()),
    })
}

/// Human text for the report.
#[must_use]
pub fn render(report: &PruneReport) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let list = |v: &[u64]| {
        if v.is_empty() { "none".to_string() } else { v.iter().map(u64::to_string).collect::<Vec<_>>().join(", ") }
    };
    let _ = writeln!(s, "kept releases: {} (installed, and the one rollback returns to)", list(&report.kept_releases));
    for i in &report.images {
        let what = i.outcome.describe();
        let _ = writeln!(s, "  {what:<14} {} ({}, release {})", i.reference, i.image_id.short(), i.release);
    }
    if report.images.is_empty() {
        let _ = writeln!(s, "  no image of an older release to remove");
    }
    let verb = if report.dry_run { "to remove" } else { "removed" };
    let _ = writeln!(s, "release directories {verb}: {}", list(&report.removed_releases));
    if !report.held_releases.is_empty() {
        let _ = writeln!(
            s,
            "release directories kept for a container or image that stays: {}",
            list(&report.held_releases)
        );
    }
    for d in &report.data {
        let what = d.outcome.describe();
        let _ = writeln!(
            s,
            "  {what:<14} {} {} (copy of {})",
            if d.volume { "volume" } else { "directory" },
            d.name,
            manifests::time::rfc3339(d.copied_at)
        );
    }
    if let Some(d) = &report.docker_root {
        let _ = writeln!(
            s,
            "Docker data root {}: {} free (was {})",
            d.path,
            manifests::display::human_bytes(d.free_after),
            manifests::display::human_bytes(d.free_before)
        );
    }
    s
}
