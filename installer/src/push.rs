//! `installer push`: the bundle's images into a site registry, byte for byte, for a Swarm or
//! Kubernetes site whose nodes pull from it.
//!
//! 1. verify the whole bundle (signature, every entry) and note where each blob lies in it;
//! 2. per image, per blob: skip it when the repository has it (HEAD), link it from another
//!    repository of the run when the registry can (cross-repository mount), else stream it from
//!    the bundle in place (its parts too), `--jobs` at a time;
//! 3. the image manifest byte for byte under its digest, then under its tag: digests and image
//!    IDs stay the bundle's, so pins by digest hold;
//! 4. read back what the tag resolves to.
//!
//! A re-run sends nothing the registry has.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::{StreamExt, TryStreamExt};
use manifests::media::PartFile;
use manifests::{Blob, Digest};

use crate::error::InstallError;
use crate::registry::{BlobSource, Destination, ImageRef, Registry, RegistryError};
use crate::report::{Event, Reporter};
use crate::{trust, verify};

/// What to push where.
#[derive(Debug, Clone)]
pub struct PushOptions {
    /// The bundle (or part 000).
    pub bundle: PathBuf,
    /// Directories with parts not beside part 000.
    pub media: Vec<PathBuf>,
    /// Keys to trust besides the state directory's.
    pub keys: Vec<PathBuf>,
    /// The state directory (for its trusted keys).
    pub state_dir: PathBuf,
    /// `HOST[:PORT][/PREFIX]`.
    pub destination: Destination,
    /// Blobs sent at once.
    pub jobs: usize,
}

/// One image as pushed.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PushedImage {
    /// The compose reference.
    pub reference: String,
    /// `registry/repository:tag` (when the compose reference has a tag).
    pub tagged: Option<String>,
    /// `registry/repository@sha256:…`: what a Kubernetes manifest or a Swarm service pins.
    pub pinned: String,
    /// The manifest digest (the bundle's).
    pub digest: Digest,
}

/// What `push` did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PushReport {
    /// `host[:port]`.
    pub registry: String,
    /// The images.
    pub images: Vec<PushedImage>,
    /// Blobs uploaded.
    pub blobs_sent: usize,
    /// Bytes uploaded.
    pub bytes_sent: u64,
    /// Blobs the registry had already (in that repository).
    pub blobs_present: usize,
    /// Blobs linked from another repository of the registry without sending them.
    pub blobs_mounted: usize,
    /// Manifests and tags written (0 on a re-run).
    pub manifests_written: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Present,
    Mount,
    Upload,
}

/// Push every image of the bundle.
///
/// # Errors
/// Bundle (signature, damage, missing parts), registry (unreachable, credentials, refusals,
/// a digest that comes back different).
pub async fn push<R: Registry + Sync>(
    opts: &PushOptions,
    registry: &R,
    reporter: &dyn Reporter,
) -> Result<PushReport, InstallError> {
    let state = crate::state::StateDir::new(opts.state_dir.clone());
    let keys = trust::trusted_keys(&state.keys_dir(), &opts.keys)?;
    let signed = verify::open(&opts.bundle, &opts.media, &keys)?;
    let manifest = signed.manifest().clone();
    let files: Vec<PartFile> = signed.reader.inner().files().to_vec();
    reporter.event(&Event::Info { message: format!("verifying {} before pushing", opts.bundle.display()) });
    let offsets = locate_blobs(signed)?;
    push_verified(&manifest, &files, &offsets, opts, registry, reporter).await
}

/// Push the images of a bundle that was verified whole already (`offsets`: where each blob lies
/// in `files`, from that pass). Each blob is hashed again on its way out.
///
/// # Errors
/// As [`push`], minus the bundle's verification.
pub async fn push_verified<R: Registry + Sync>(
    manifest: &manifests::Manifest,
    files: &[PartFile],
    offsets: &HashMap<Digest, (u64, u64)>,
    opts: &PushOptions,
    registry: &R,
    reporter: &dyn Reporter,
) -> Result<PushReport, InstallError> {
    let reg = |source: RegistryError| InstallError::Registry { source };

    let mut report = PushReport {
        registry: registry.name().to_string(),
        images: Vec::new(),
        blobs_sent: 0,
        bytes_sent: 0,
        blobs_present: 0,
        blobs_mounted: 0,
        manifests_written: 0,
    };
    // Which repository of the registry has each blob: the source of a mount.
    let mut holder: HashMap<Digest, String> = HashMap::new();
    let mut plans = Vec::new();
    let mut to_send = 0;
    for image in &manifest.images {
        let repository = opts.destination.repository(&ImageRef::parse(&image.reference));
        let mut blobs: Vec<Blob> = vec![image.config.clone()];
        blobs.extend(image.layers.iter().map(|l| l.blob.clone()));
        blobs.dedup_by_key(|b| b.digest);
        let checks: Vec<(Blob, bool)> = futures_util::stream::iter(blobs.into_iter().map(|b| {
            let repository = &repository;
            async move { registry.has_blob(repository, &b.digest).await.map(|has| (b, has)) }
        }))
        .buffered(opts.jobs.max(1))
        .try_collect()
        .await
        .map_err(reg)?;
        let mut actions = Vec::new();
        for (blob, has) in checks {
            let action = if has {
                Action::Present
            } else if holder.contains_key(&blob.digest) {
                Action::Mount
            } else {
                to_send += blob.size;
                Action::Upload
            };
            holder.entry(blob.digest).or_insert_with(|| repository.clone());
            actions.push((blob, action));
        }
        plans.push((image, repository, actions));
    }
    reporter.event(&Event::PushStart { registry: registry.name().to_string(), bytes: to_send });

    let sent = Arc::new(AtomicU64::new(0));
    let done = std::sync::atomic::AtomicBool::new(false);
    // The bar follows the bytes read from the bundle, every 200 ms.
    let ticker = async {
        let mut shown = 0;
        while !done.load(Ordering::Relaxed) {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            let now = sent.load(Ordering::Relaxed).min(to_send);
            if now > shown {
                reporter.event(&Event::DataProgress { bytes: now - shown });
                shown = now;
            }
        }
    };
    let work = async {
        let result = send_all(opts, registry, &plans, &holder, files, offsets, &sent, &mut report).await;
        done.store(true, Ordering::Relaxed);
        result
    };
    let (result, ()) = tokio::join!(work, ticker);
    result?;
    reporter.event(&Event::PushDone { bytes_sent: report.bytes_sent });
    Ok(report)
}

type Plans<'a> = [(&'a manifests::Image, String, Vec<(Blob, Action)>)];

/// Per image: mounts, uploads (`jobs` at a time), then the manifest under its digest and tag.
#[allow(clippy::too_many_arguments, reason = "the push's shared context, passed once")]
async fn send_all<R: Registry + Sync>(
    opts: &PushOptions,
    registry: &R,
    plans: &Plans<'_>,
    holder: &HashMap<Digest, String>,
    files: &[PartFile],
    offsets: &HashMap<Digest, (u64, u64)>,
    sent: &Arc<AtomicU64>,
    report: &mut PushReport,
) -> Result<(), InstallError> {
    let reg = |source: RegistryError| InstallError::Registry { source };
    for (image, repository, actions) in plans {
        // Mounts first (they need no bytes), then uploads, `jobs` at a time.
        let mut uploads = Vec::new();
        for (blob, action) in actions {
            match action {
                Action::Present => report.blobs_present += 1,
                Action::Mount => {
                    let from = &holder[&blob.digest];
                    if registry.mount_blob(repository, from, &blob.digest).await.map_err(reg)? {
                        report.blobs_mounted += 1;
                    } else {
                        uploads.push(blob.clone());
                    }
                }
                Action::Upload => uploads.push(blob.clone()),
            }
        }
        futures_util::stream::iter(uploads.iter().map(|blob| {
            let source = blob_source(files, offsets, blob, sent.clone());
            async move {
                let source = source?;
                registry.put_blob(repository, &blob.digest, blob.size, &source).await.map_err(reg)?;
                Ok::<_, InstallError>(())
            }
        }))
        .buffer_unordered(opts.jobs.max(1))
        .try_collect::<Vec<()>>()
        .await?;
        report.blobs_sent += uploads.len();
        report.bytes_sent += uploads.iter().map(|b| b.size).sum::<u64>();

        // The manifest byte for byte, under its digest, then its tag.
        let raw = read_entry(files, offsets, &image.manifest)?;
        let media_type = &image.manifest.media_type;
        let digest = image.manifest.digest.to_string();
        if registry.manifest_digest(repository, &digest, media_type).await.map_err(reg)?.is_none() {
            let stored = registry.put_manifest(repository, &digest, media_type, &raw).await.map_err(reg)?;
            check_digest(registry.name(), &format!("{repository}@{digest}"), &image.manifest.digest, &stored)?;
            report.manifests_written += 1;
        }
        let tag = ImageRef::parse(&image.reference).tag;
        if let Some(tag) = &tag {
            let current = registry.manifest_digest(repository, tag, media_type).await.map_err(reg)?;
            if current.as_deref() != Some(digest.as_str()) {
                registry.put_manifest(repository, tag, media_type, &raw).await.map_err(reg)?;
                report.manifests_written += 1;
            }
            let now = registry.manifest_digest(repository, tag, media_type).await.map_err(reg)?.unwrap_or_default();
            check_digest(registry.name(), &format!("{repository}:{tag}"), &image.manifest.digest, &now)?;
        }
        let host = registry.name();
        report.images.push(PushedImage {
            reference: image.reference.clone(),
            tagged: tag.map(|t| format!("{host}/{repository}:{t}")),
            pinned: format!("{host}/{repository}@{digest}"),
            digest: image.manifest.digest,
        });
    }
    Ok(())
}

fn check_digest(registry: &str, what: &str, expected: &Digest, actual: &str) -> Result<(), InstallError> {
    if actual.is_empty() || actual == expected.to_string() {
        return Ok(());
    }
    Err(InstallError::Registry {
        source: RegistryError::DigestMismatch {
            registry: registry.to_string(),
            what: what.to_string(),
            expected: *expected,
            actual: actual.to_string(),
        },
    })
}

/// The verifying pass (the same as `apply`'s, sending nothing): every entry checked, and where
/// each blob's bytes lie in the bundle.
fn locate_blobs(signed: verify::SignedBundle) -> Result<HashMap<Digest, (u64, u64)>, InstallError> {
    let verify::SignedBundle { path, reader, .. } = signed;
    crate::load::pass(reader, &crate::load::LoadPlan::nothing(), None, None, &|_| {})
        .map(|report| report.blobs)
        .map_err(|source| InstallError::Bundle { path, source })
}

fn blob_source(
    files: &[PartFile],
    offsets: &HashMap<Digest, (u64, u64)>,
    blob: &Blob,
    sent: Arc<AtomicU64>,
) -> Result<BlobSource, InstallError> {
    let (offset, size) = *offsets.get(&blob.digest).ok_or_else(|| InstallError::Bundle {
        path: files[0].path.clone(),
        source: manifests::BundleError::MissingEntry { path: manifests::layout::blob_path(&blob.digest) },
    })?;
    let files = files.to_vec();
    Ok(Box::new(move || {
        let range = manifests::media::read_range(&files, offset, size)?;
        Ok(Box::new(Counting { inner: range, sent: sent.clone() }) as Box<dyn std::io::Read + Send>)
    }))
}

fn read_entry(files: &[PartFile], offsets: &HashMap<Digest, (u64, u64)>, blob: &Blob) -> Result<Vec<u8>, InstallError> {
    use std::io::Read;
    let path = files[0].path.clone();
    let (offset, size) = *offsets.get(&blob.digest).ok_or_else(|| InstallError::Bundle {
        path: path.clone(),
        source: manifests::BundleError::MissingEntry { path: manifests::layout::blob_path(&blob.digest) },
    })?;
    let mut raw = Vec::new();
    manifests::media::read_range(files, offset, size).and_then(|mut r| r.read_to_end(&mut raw)).map_err(|source| {
        InstallError::Bundle { path: path.clone(), source: manifests::BundleError::Read { offset, source } }
    })?;
    // Read again after the verifying pass: it must still be the verified bytes.
    if Digest::of(&raw) != blob.digest {
        return Err(InstallError::Bundle {
            path,
            source: manifests::BundleError::DigestMismatch {
                path: manifests::layout::blob_path(&blob.digest),
                expected: blob.digest,
                actual: Digest::of(&raw),
            },
        });
    }
    Ok(raw)
}

/// Counts the bytes read from the bundle (the progress bar).
struct Counting<R> {
    inner: R,
    sent: Arc<AtomicU64>,
}

impl<R: std::io::Read> std::io::Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.sent.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}
