//! Backup files: one plain tar (`tar -tf` lists it) the operator can carry away.
//!
//! ```text
//! parts/01-volume.tar ...   each data source as the engine's archive endpoint sent it
//! parts/NN-dir.tar          (entries `installer-data/...`, owners, modes, links kept)
//! state/installed.json      the release record
//! state/values.json         the site's values (the file is 0600: they are secrets)
//! state/migrations.json     completed migrations (they match the data)
//! state/bundle.json(.minisig)  the release's signed manifest
//! backup.json               last: product, release, and every part's size and sha256
//! ```
//!
//! Written to a temp file beside the output, fsynced, renamed; each part's header is written
//! once its size is known (the file is seekable, the data streams through once).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use bytes::Bytes;
use manifests::Digest;
use manifests::digest::Hasher;
use serde::{Deserialize, Serialize};

use super::archive::{Inspector, Summary};
use super::copy::{self, remove_helpers};
use super::snapshot::{Stopped, check_writers, refuse_foreign_writers, restart_stopped, stop_writers};
use super::{DataSource, with_margin};
use crate::engine::Engine;
use crate::error::InstallError;
use crate::plan::Plan;
use crate::report::{Event, Reporter};
use crate::state::{Installed, Migrations};

/// The format of `backup.json`.
pub const FORMAT: u32 = 1;
/// The manifest's name in the file.
pub const MANIFEST: &str = "backup.json";
const BLOCK: u64 = 512;

/// `backup.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BackupManifest {
    /// [`FORMAT`].
    pub format: u32,
    /// Product.
    pub product: String,
    /// Compose project.
    pub project: String,
    /// Release installed when it was made.
    pub release: u64,
    /// Version.
    pub version: String,
    /// Unix seconds.
    pub created_at: u64,
    /// The installer that wrote it.
    pub installer_version: String,
    /// Every part, in file order.
    pub parts: Vec<Part>,
}

/// One part of the file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Part {
    /// Path in the file.
    pub path: String,
    /// Data source key (`volume:dbdata`), for data parts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The volume or directory it was read from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Bytes.
    pub bytes: u64,
    /// sha256 of the bytes.
    pub sha256: Digest,
    /// Tree digest and entries (data parts; see [`super::archive`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tree: Option<Digest>,
    /// Entries in the archive (data parts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entries: Option<u64>,
}

/// A tar file written entry by entry, each header patched in once the entry's size is known.
struct Writer {
    file: File,
    path: PathBuf,
    parts: Vec<Part>,
}

impl Writer {
    fn io(&self) -> impl Fn(std::io::Error) -> InstallError + '_ {
        |e| InstallError::State { path: self.path.clone(), source: e }
    }

    /// Start an entry: a placeholder header; returns its offset.
    fn begin(&mut self) -> Result<u64, InstallError> {
        let at = self.file.stream_position().map_err(self.io())?;
        self.file.write_all(&[0u8; BLOCK as usize]).map_err(self.io())?;
        Ok(at)
    }

    /// Finish an entry of `size` bytes begun at `at`: padding, then the real header.
    fn end(&mut self, at: u64, name: &str, size: u64) -> Result<(), InstallError> {
        let pad = (BLOCK - size % BLOCK) % BLOCK;
        self.file.write_all(&vec![0u8; usize::try_from(pad).unwrap_or(0)]).map_err(self.io())?;
        let end = self.file.stream_position().map_err(self.io())?;
        let mut h = tar::Header::new_gnu();
        h.set_path(name).map_err(self.io())?;
        h.set_size(size);
        h.set_mode(0o600);
        h.set_mtime(manifests::time::now());
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        self.file.seek(SeekFrom::Start(at)).map_err(self.io())?;
        self.file.write_all(h.as_bytes()).map_err(self.io())?;
        self.file.seek(SeekFrom::Start(end)).map_err(self.io())?;
        Ok(())
    }

    fn small(&mut self, name: &str, bytes: &[u8]) -> Result<(), InstallError> {
        let at = self.begin()?;
        self.file.write_all(bytes).map_err(self.io())?;
        self.end(at, name, bytes.len() as u64)?;
        self.parts.push(Part {
            path: name.into(),
            source: None,
            from: None,
            bytes: bytes.len() as u64,
            sha256: Digest::of(bytes),
            tree: None,
            entries: None,
        });
        Ok(())
    }
}

/// What `installer backup` reports.
#[derive(Debug, Clone, Serialize)]
pub struct BackupReport {
    /// The file written.
    pub path: PathBuf,
    /// Its size.
    pub bytes: u64,
    /// The manifest.
    pub manifest: BackupManifest,
    /// Seconds the services were stopped.
    pub downtime_secs: f64,
}

/// Everything `backup` needs about the installed release.
pub struct Installation<'a> {
    /// The installed release.
    pub installed: &'a Installed,
    /// Its plan (at the installed generations).
    pub plan: &'a Plan,
    /// Its signed manifest's bytes and signature file.
    pub manifest_files: (&'a [u8], &'a str),
    /// Site values.
    pub values: &'a std::collections::BTreeMap<String, String>,
    /// Completed migrations.
    pub migrations: &'a Migrations,
}

/// Write a backup of the installed release to `output`.
///
/// # Errors
/// Not enough space (refused before anything stops), Docker's errors, write errors; the
/// services stopped for it run again in every case, and no partial file is left.
pub async fn backup<E: Engine>(
    engine: &E,
    reporter: &dyn Reporter,
    state: &crate::state::StateDir,
    inst: &Installation<'_>,
    output: &Path,
) -> Result<BackupReport, InstallError> {
    let plan = inst.plan;
    let sources: Vec<&DataSource> = plan.data.iter().collect();
    // Size first: refuse before any service stops.
    let mut need = 1 << 20;
    let mut total = 0;
    for d in &sources {
        let (bytes, entries) = d.size(engine).await?;
        total += bytes;
        need += with_margin(bytes, entries);
    }
    let dir = output.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf();
    std::fs::create_dir_all(&dir).map_err(InstallError::state(&dir))?;
    let free = crate::preflight::free_bytes(&dir, false).map_err(InstallError::state(&dir))?;
    crate::preflight::require_space(&dir, free, need, "the backup", "no service was stopped")?;
    refuse_foreign_writers(engine, &plan.project, &sources).await?;
    let tmp = dir.join(format!(
        ".{}.partial",
        output.file_name().map_or_else(|| "backup".into(), |n| n.to_string_lossy().to_string())
    ));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(InstallError::state(&tmp))?;
    let mut w = Writer { file, path: tmp.clone(), parts: Vec::new() };
    let stopping = Instant::now();
    let mut stopped: Vec<Stopped> = Vec::new();
    let result = async {
        // Recorded before each stop: a backup killed halfway has them started by the next run.
        let marks =
            stop_writers(engine, reporter, plan, &sources, &mut stopped, &mut |s| state.save_stopped(s)).await?;
        remove_helpers(engine, &plan.project).await?;
        reporter.event(&Event::DataStart { action: "backup".into(), bytes: total });
        for (i, d) in sources.iter().enumerate() {
            let name = format!("parts/{:02}-{}.tar", i + 1, if d.volume { "volume" } else { "dir" });
            let helper = copy::helper(engine, &plan.project, &format!("backup-{i}"), &d.image, &d.current).await?;
            let at = w.begin()?;
            let what = d.describe(&d.current);
            let file = &mut w.file;
            let path = &tmp;
            let summary = copy::export(
                engine,
                &helper,
                &what,
                |chunk: Bytes| {
                    std::future::ready(
                        file.write_all(&chunk).map_err(|e| InstallError::State { path: path.clone(), source: e }),
                    )
                },
                &|n| reporter.event(&Event::DataProgress { bytes: n }),
            )
            .await;
            engine.remove(&helper).await?;
            let summary = summary?;
            w.end(at, &name, summary.bytes)?;
            w.parts.push(Part {
                path: name,
                source: Some(d.key.clone()),
                from: Some(d.current.clone()),
                bytes: summary.bytes,
                sha256: summary.sha256,
                tree: Some(summary.tree),
                entries: Some(summary.entries),
            });
        }
        check_writers(engine, &stopped, &marks).await
    }
    .await;
    let _ = remove_helpers(engine, &plan.project).await;
    restart_stopped(engine, reporter, &stopped).await;
    let _ = state.save_stopped(&[]);
    let downtime = stopping.elapsed().as_secs_f64();
    let finish = || -> Result<BackupManifest, InstallError> {
        result?;
        w.small("state/installed.json", &serde_json::to_vec_pretty(inst.installed).unwrap_or_default())?;
        w.small("state/values.json", &serde_json::to_vec_pretty(inst.values).unwrap_or_default())?;
        w.small("state/migrations.json", &serde_json::to_vec_pretty(inst.migrations).unwrap_or_default())?;
        w.small("state/bundle.json", inst.manifest_files.0)?;
        w.small("state/bundle.json.minisig", inst.manifest_files.1.as_bytes())?;
        let manifest = BackupManifest {
            format: FORMAT,
            product: inst.installed.product.clone(),
            project: inst.installed.project.clone(),
            release: inst.installed.release,
            version: inst.installed.version.clone(),
            created_at: manifests::time::now(),
            installer_version: env!("CARGO_PKG_VERSION").into(),
            parts: w.parts.clone(),
        };
        let bytes = serde_json::to_vec_pretty(&manifest).unwrap_or_default();
        let at = w.begin()?;
        w.file.write_all(&bytes).map_err(w.io())?;
        w.end(at, MANIFEST, bytes.len() as u64)?;
        w.file.write_all(&[0u8; 2 * BLOCK as usize]).map_err(w.io())?;
        w.file.sync_all().map_err(w.io())?;
        std::fs::rename(&tmp, output).map_err(InstallError::state(output))?;
        File::open(&dir).and_then(|d| d.sync_all()).map_err(InstallError::state(&dir))?;
        Ok(manifest)
    };
    match finish() {
        Ok(manifest) => {
            reporter.event(&Event::DataDone { action: "backup".into(), bytes: total, seconds: downtime });
            let bytes = std::fs::metadata(output).map(|m| m.len()).unwrap_or(0);
            Ok(BackupReport { path: output.to_path_buf(), bytes, manifest, downtime_secs: downtime })
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// One part of a backup file, as found when reading it.
#[derive(Debug, Clone)]
pub struct FoundPart {
    /// Offset of its data in the file.
    pub offset: u64,
    /// Bytes.
    pub bytes: u64,
    /// sha256.
    pub sha256: Digest,
    /// The archive inside, for data parts.
    pub summary: Option<Summary>,
}

/// A backup file, read through and checked whole: every part present with its size and
/// sha256, every data part a whole archive.
#[derive(Debug, Clone)]
pub struct Checked {
    /// The file.
    pub path: PathBuf,
    /// Its manifest.
    pub manifest: BackupManifest,
    /// Parts by path.
    pub parts: std::collections::BTreeMap<String, FoundPart>,
}

impl Checked {
    /// A small part's bytes (state files).
    ///
    /// # Errors
    /// Read errors; a missing part.
    pub fn read_small(&self, name: &str) -> Result<Vec<u8>, InstallError> {
        let bad = |m: String| InstallError::BackupInvalid { path: self.path.clone(), message: m };
        let p = self.parts.get(name).ok_or_else(|| bad(format!("part {name} is missing")))?;
        let mut f = File::open(&self.path).map_err(InstallError::state(&self.path))?;
        f.seek(SeekFrom::Start(p.offset)).map_err(InstallError::state(&self.path))?;
        let mut buf = vec![0u8; usize::try_from(p.bytes).unwrap_or(0)];
        f.read_exact(&mut buf).map_err(InstallError::state(&self.path))?;
        Ok(buf)
    }
}

/// Read a backup file through and check it (nothing else is done).
///
/// # Errors
/// [`InstallError::BackupInvalid`] naming the part: damaged, cut short, missing, or a sha256
/// that does not match.
pub fn check(path: &Path) -> Result<Checked, InstallError> {
    let bad = |m: String| InstallError::BackupInvalid { path: path.to_path_buf(), message: m };
    let mut f = std::io::BufReader::with_capacity(1 << 20, File::open(path).map_err(InstallError::state(path))?);
    let mut found = std::collections::BTreeMap::new();
    let mut manifest_bytes = None;
    let mut offset = 0u64;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let mut header = [0u8; BLOCK as usize];
        match read_full(&mut f, &mut header) {
            Ok(0) => break,
            Ok(n) if n < header.len() => {
                return Err(bad(format!("the file ends inside a header at byte {offset}: it is truncated")));
            }
            Ok(_) => {}
            Err(e) => return Err(InstallError::State { path: path.to_path_buf(), source: e }),
        }
        offset += BLOCK;
        if header.iter().all(|b| *b == 0) {
            break;
        }
        let h = tar::Header::from_byte_slice(&header);
        let name = h.path().map(|p| p.display().to_string()).unwrap_or_default();
        let stored: u32 =
            header.iter().enumerate().map(|(i, b)| if (148..156).contains(&i) { 32 } else { u32::from(*b) }).sum();
        if h.cksum().ok() != Some(stored) {
            return Err(bad(format!(
                "a damaged header at byte {} (after part {})",
                offset - BLOCK,
                found.keys().last().map_or("none", |k: &String| k.as_str())
            )));
        }
        let size = h.entry_size().map_err(|e| bad(format!("part {name}: {e}")))?;
        let data_part = name.starts_with("parts/");
        let mut hasher = Hasher::new();
        let mut inspector = data_part.then(Inspector::new);
        let mut keep = (name == MANIFEST).then(Vec::new);
        let mut left = size;
        while left > 0 {
            let want = usize::try_from(left.min(buf.len() as u64)).unwrap_or(buf.len());
            let n = read_full(&mut f, &mut buf[..want]).map_err(InstallError::state(path))?;
            if n == 0 {
                return Err(bad(format!(
                    "part {name} is cut short ({} of {size} bytes): the file is truncated",
                    size - left
                )));
            }
            hasher.update(&buf[..n]);
            if let Some(i) = inspector.as_mut() {
                i.feed(&buf[..n]);
            }
            if let Some(k) = keep.as_mut() {
                k.extend_from_slice(&buf[..n]);
            }
            left -= n as u64;
        }
        let pad = (BLOCK - size % BLOCK) % BLOCK;
        let n = read_full(&mut f, &mut buf[..usize::try_from(pad).unwrap_or(0)]).map_err(InstallError::state(path))?;
        if (n as u64) < pad {
            return Err(bad(format!("the file ends after part {name}: it is truncated")));
        }
        let summary = match inspector {
            Some(i) => Some(i.finish().map_err(|e| bad(format!("part {name} is damaged: {e}")))?),
            None => None,
        };
        if let Some(k) = keep {
            manifest_bytes = Some(k);
        }
        found.insert(name, FoundPart { offset, bytes: size, sha256: hasher.finish(), summary });
        offset += size + pad;
    }
    let manifest_bytes = manifest_bytes
        .ok_or_else(|| bad(format!("no {MANIFEST} at its end: the file is truncated, or not a backup")))?;
    let manifest: BackupManifest =
        serde_json::from_slice(&manifest_bytes).map_err(|e| bad(format!("{MANIFEST} is damaged: {e}")))?;
    if manifest.format != FORMAT {
        return Err(bad(format!("format {} (this installer reads format {FORMAT})", manifest.format)));
    }
    for p in &manifest.parts {
        let Some(f) = found.get(&p.path) else {
            return Err(bad(format!("part {} is missing", p.path)));
        };
        if f.bytes != p.bytes || f.sha256 != p.sha256 {
            return Err(bad(format!(
                "part {} ({}) does not match its sha256 in {MANIFEST}: it was changed or damaged",
                p.path,
                p.from.as_deref().unwrap_or("state")
            )));
        }
    }
    Ok(Checked { path: path.to_path_buf(), manifest, parts: found })
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Write one data part into a helper's mount, then read it back and compare.
///
/// # Errors
/// Read errors, Docker's errors, a copy that differs.
pub async fn restore_part<E: Engine>(
    engine: &E,
    checked: &Checked,
    part: &Part,
    helper: &str,
    reporter: &dyn Reporter,
) -> Result<(), InstallError> {
    let found = checked.parts.get(&part.path).ok_or_else(|| InstallError::BackupInvalid {
        path: checked.path.clone(),
        message: format!("part {} is missing", part.path),
    })?;
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(8);
    let path = checked.path.clone();
    let (offset, bytes) = (found.offset, found.bytes);
    let reading = tokio::task::spawn_blocking(move || {
        let send = |item| tx.blocking_send(item).is_ok();
        let mut f = match File::open(&path).and_then(|mut f| f.seek(SeekFrom::Start(offset)).map(|_| f)) {
            Ok(f) => f.take(bytes),
            Err(e) => {
                send(Err(e));
                return;
            }
        };
        let mut buf = vec![0u8; 1 << 20];
        loop {
            match f.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    if !send(Ok(Bytes::copy_from_slice(&buf[..n]))) {
                        return;
                    }
                }
                Err(e) => {
                    send(Err(e));
                    return;
                }
            }
        }
    });
    let what = format!("part {}", part.path);
    engine.import(helper, "/", rx).await?;
    let _ = reading.await;
    reporter.event(&Event::DataProgress { bytes });
    let Some(summary) = found.summary else {
        return Err(InstallError::BackupInvalid {
            path: checked.path.clone(),
            message: format!("{what} is not an archive"),
        });
    };
    copy::verify(engine, helper, &what, &summary).await
}
