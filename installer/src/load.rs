//! Loading images without an extracted copy of the bundle: one pass over the bundle file that
//! verifies every entry and, on the fly, turns the blobs the engine lacks into the archive
//! `docker save` writes since Docker 25 (`oci-layout`, `index.json`, `blobs/sha256/…` and a
//! `manifest.json` naming the same blobs), streamed to the engine's image-load endpoint. Every
//! engine reads it: graph drivers take `manifest.json`, the containerd store and Podman take the
//! OCI layout (shared/notes/engines.md).
//!
//! Safety of the stream (see docs/adr/0002-streaming-load.md):
//! - the reader hands out the last bytes of an entry only after its sha256 matched, so a changed
//!   blob is never sent whole;
//! - `manifest.json` and `index.json`, which are what make an engine register and tag anything,
//!   are sent last, after every entry of the bundle (and the end of the archive) was verified;
//! - on any mismatch the body stream ends with an error, the upload is aborted, and Docker keeps
//!   nothing (checked on Docker 20.10: an interrupted load leaves no image, layer or tag).
//!
//! Which layers may be left out is the engine strategy's decision ([`crate::engine::Strategy`]).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Write};
use std::path::PathBuf;

use bytes::Bytes;
use manifests::layout::{COMPOSE, STACK_FILES_DIR};
use manifests::{BundleError, BundleReader, Digest, Image, Manifest};

use crate::engine::{Holdings, Strategy};
use serde::Serialize;
use sha2::{Digest as _, Sha256};
use tokio::sync::mpsc;

/// Chain IDs of a layer stack: chain(0) = diff(0), chain(n) = sha256(chain(n-1) + " " + diff(n)).
#[must_use]
pub fn chain_ids(diff_ids: &[Digest]) -> Vec<Digest> {
    let mut out: Vec<Digest> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => *d,
            Some(prev) => Digest::from_bytes(Sha256::digest(format!("{prev} {d}").as_bytes()).into()),
        };
        out.push(next);
    }
    out
}

/// What happens to one image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ImageAction {
    /// Its ID is on the host: only tagged.
    Present,
    /// Sent to Docker (some layers may be skipped).
    Load,
}

/// The plan for one image.
#[derive(Debug, Clone, Serialize)]
pub struct ImagePlan {
    /// Reference.
    pub reference: String,
    /// The engine's ID of the image (config digest, or manifest digest on the containerd store).
    pub image_id: Digest,
    /// Present or load.
    pub action: ImageAction,
    /// Layers sent.
    pub layers_sent: usize,
    /// Layers the host already has.
    pub layers_skipped: usize,
}

/// Which blobs go to the engine and the index files that go last.
#[derive(Debug, Clone, Serialize)]
pub struct LoadPlan {
    /// Per image.
    pub images: Vec<ImagePlan>,
    /// Blob digest -> file name inside the archive.
    #[serde(skip)]
    pub send: BTreeMap<Digest, String>,
    /// `oci-layout`, `index.json`, `manifest.json`, written after everything was verified
    /// (empty when nothing is loaded).
    #[serde(skip)]
    pub trailer: Vec<(String, Vec<u8>)>,
    /// Bytes of blobs sent.
    pub bytes_to_send: u64,
    /// Bytes of blobs the host already has.
    pub bytes_skipped: u64,
}

impl LoadPlan {
    /// A pass that sends nothing to an engine: it only verifies (and notes where blobs lie).
    #[must_use]
    pub fn nothing() -> Self {
        Self { images: Vec::new(), send: BTreeMap::new(), trailer: Vec::new(), bytes_to_send: 0, bytes_skipped: 0 }
    }
}

#[derive(Serialize)]
struct SaveEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags")]
    repo_tags: Vec<String>,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

/// The name an OCI layout gives an image: fully qualified, as `docker save` writes it in
/// `io.containerd.image.name` (`nginx:1.27` -> `docker.io/library/nginx:1.27`).
#[must_use]
pub fn fully_qualified(reference: &str) -> String {
    let first = reference.split('/').next().unwrap_or("");
    let has_registry = reference.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    if has_registry {
        reference.to_string()
    } else if reference.contains('/') {
        format!("docker.io/{reference}")
    } else {
        format!("docker.io/library/{reference}")
    }
}

fn blob_name(d: &Digest) -> String {
    format!("blobs/sha256/{}", d.hex())
}

/// Decide what to send. `skip_present_layers = false` is the fallback that sends every layer of
/// the images to load.
#[must_use]
pub fn plan_load(
    manifest: &Manifest,
    strategy: &dyn Strategy,
    holdings: &Holdings,
    skip_present_layers: bool,
) -> LoadPlan {
    let mut images = Vec::new();
    let mut send = BTreeMap::new();
    let mut entries: BTreeMap<Digest, SaveEntry> = BTreeMap::new();
    let mut index: Vec<serde_json::Value> = Vec::new();
    let mut bytes_to_send = 0;
    let mut bytes_skipped = 0;
    let mut counted = BTreeSet::new();
    for image in &manifest.images {
        let id = strategy.image_id(image);
        if holdings.ids.contains(&id) {
            for b in std::iter::once(&image.config).chain(image.layers.iter().map(|l| &l.blob)) {
                if counted.insert(b.digest) {
                    bytes_skipped += b.size;
                }
            }
            images.push(ImagePlan {
                reference: image.reference.clone(),
                image_id: id,
                action: ImageAction::Present,
                layers_sent: 0,
                layers_skipped: image.layers.len(),
            });
            continue;
        }
        let diff_ids: Vec<Digest> = image.layers.iter().map(|l| l.diff_id).collect();
        let chain = chain_ids(&diff_ids);
        let config_name = blob_name(&image.config.digest);
        for b in [&image.manifest, &image.config] {
            if send.insert(b.digest, blob_name(&b.digest)).is_none() {
                bytes_to_send += b.size;
            }
        }
        let mut layer_names = Vec::new();
        let (mut sent, mut skipped) = (0, 0);
        for (layer, chain_id) in image.layers.iter().zip(&chain) {
            let name = blob_name(&layer.blob.digest);
            layer_names.push(name.clone());
            if skip_present_layers && strategy.may_skip(layer, chain_id, holdings) {
                skipped += 1;
                if counted.insert(layer.blob.digest) {
                    bytes_skipped += layer.blob.size;
                }
            } else {
                sent += 1;
                if send.insert(layer.blob.digest, name).is_none() {
                    bytes_to_send += layer.blob.size;
                }
            }
        }
        let entry = entries.entry(image.config.digest).or_insert_with(|| SaveEntry {
            config: config_name,
            repo_tags: vec![],
            layers: layer_names,
        });
        if !image.reference.contains('@') {
            entry.repo_tags.push(fully_qualified(&image.reference));
        }
        index.push(index_entry(image));
        images.push(ImagePlan {
            reference: image.reference.clone(),
            image_id: id,
            action: ImageAction::Load,
            layers_sent: sent,
            layers_skipped: skipped,
        });
    }
    let trailer = if entries.is_empty() {
        Vec::new()
    } else {
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": index,
        });
        vec![
            ("oci-layout".to_string(), manifests::layout::OCI_LAYOUT_CONTENT.as_bytes().to_vec()),
            ("index.json".to_string(), serde_json::to_vec(&index).unwrap_or_default()),
            (
                "manifest.json".to_string(),
                serde_json::to_vec(&entries.into_values().collect::<Vec<_>>()).unwrap_or_default(),
            ),
        ]
    };
    LoadPlan { images, send, trailer, bytes_to_send, bytes_skipped }
}

/// One image in `index.json`, named as `docker save` names it.
fn index_entry(image: &Image) -> serde_json::Value {
    let name = fully_qualified(&image.reference);
    let mut annotations = serde_json::Map::new();
    annotations.insert("io.containerd.image.name".into(), name.clone().into());
    if let Some(tag) = name.rsplit_once(':').map(|(_, t)| t).filter(|t| !t.contains('/') && !name.contains('@')) {
        annotations.insert("org.opencontainers.image.ref.name".into(), tag.into());
    }
    serde_json::json!({
        "mediaType": image.manifest.media_type,
        "digest": image.manifest.digest.to_string(),
        "size": image.manifest.size,
        "annotations": annotations,
    })
}

/// Where the pass writes the release's config files.
pub struct FilesTarget {
    /// Final directory (`releases/<n>`); written as `<dir>.partial` and renamed at the end.
    pub release_dir: PathBuf,
}

/// The result of a pass.
#[derive(Debug, Default)]
pub struct PassReport {
    /// Bytes streamed to Docker (archive bytes, headers included).
    pub bytes_streamed: u64,
    /// Where each blob lies in the bundle (offset, size): to read a verified blob again in
    /// place (`installer push` after the pass).
    pub blobs: std::collections::HashMap<Digest, (u64, u64)>,
}

/// Read the whole bundle once: verify every entry, send `plan.send` blobs as a docker-save
/// archive on `tx`, write stack files. Runs on a blocking thread.
///
/// # Errors
/// The first verification problem; the docker stream then ends with an error.
pub fn pass<R: io::Read>(
    mut reader: BundleReader<R>,
    plan: &LoadPlan,
    tx: Option<mpsc::Sender<io::Result<Bytes>>>,
    files: Option<&FilesTarget>,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<PassReport, BundleError> {
    let mut out = tx.map(|tx| ChannelWriter { tx, buf: Vec::with_capacity(CHUNK), sent: 0 });
    let staging = files.map(|f| f.release_dir.with_extension("partial"));
    if let Some(dir) = &staging {
        let staging_err = |source| BundleError::Sink { path: dir.display().to_string(), source };
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir.join("files")).map_err(staging_err)?;
        std::fs::write(dir.join("bundle.json"), reader.manifest_bytes()).map_err(staging_err)?;
        std::fs::write(dir.join("bundle.json.minisig"), reader.signature_text()).map_err(staging_err)?;
    }
    let mut blobs = std::collections::HashMap::new();
    let result = (|| {
        while let Some(entry) = reader.next_entry()? {
            let path = entry.path.clone();
            if path.starts_with(manifests::layout::BLOBS_DIR) {
                blobs.insert(entry.sha256, (reader.entry_offset(), entry.size));
            }
            let sink_err = |source| BundleError::Sink { path: path.clone(), source };
            let blob = path
                .strip_prefix(manifests::layout::BLOBS_DIR)
                .and_then(|h| format!("sha256:{}", h.trim_start_matches('/')).parse::<Digest>().ok());
            if let (Some(digest), Some(w)) = (blob, out.as_mut())
                && let Some(name) = plan.send.get(&digest)
            {
                w.write_all(&tar_header(name, entry.size)).map_err(sink_err)?;
                let mut counting = Counting { inner: &mut *w, progress };
                reader.copy_entry_to(&mut counting)?;
                w.write_all(&vec![0u8; padding(entry.size)]).map_err(sink_err)?;
            } else if let Some(dir) = staging.as_ref().filter(|_| path == COMPOSE || path.starts_with(STACK_FILES_DIR))
            {
                let rel = if path == COMPOSE {
                    "compose.yaml".to_string()
                } else {
                    path.replacen(STACK_FILES_DIR, "files", 1)
                };
                let dest = dir.join(rel);
                if let Some(parent) = dest.parent() {
                    std::fs::create_dir_all(parent).map_err(sink_err)?;
                }
                let mut f = std::fs::File::create(&dest).map_err(sink_err)?;
                reader.copy_entry_to(&mut f)?;
                f.sync_all().map_err(sink_err)?;
            } else {
                reader.copy_entry_to(&mut io::sink())?;
            }
        }
        Ok::<(), BundleError>(())
    })();
    if let Err(e) = result {
        if let Some(w) = out {
            let _ = w.tx.blocking_send(Err(io::Error::other(format!("bundle rejected: {e}"))));
        }
        if let Some(dir) = &staging {
            let _ = std::fs::remove_dir_all(dir);
        }
        return Err(e);
    }
    let mut report = PassReport { blobs, ..PassReport::default() };
    if let Some(mut w) = out {
        // Everything verified: now, and only now, the index files that make an engine register
        // and tag images.
        for (name, data) in &plan.trailer {
            let sink_err = |source| BundleError::Sink { path: name.clone(), source };
            w.write_all(&tar_header(name, data.len() as u64)).map_err(sink_err)?;
            w.write_all(data).map_err(sink_err)?;
            w.write_all(&vec![0u8; padding(data.len() as u64)]).map_err(sink_err)?;
        }
        let sink_err = |source| BundleError::Sink { path: "end of archive".into(), source };
        w.write_all(&[0u8; 1024]).map_err(sink_err)?;
        w.flush().map_err(sink_err)?;
        report.bytes_streamed = w.sent;
    }
    if let (Some(dir), Some(files)) = (&staging, files) {
        let sink_err = |source| BundleError::Sink { path: files.release_dir.display().to_string(), source };
        let _ = std::fs::remove_dir_all(&files.release_dir);
        std::fs::rename(dir, &files.release_dir).map_err(sink_err)?;
    }
    Ok(report)
}

const CHUNK: usize = 1 << 20;

struct ChannelWriter {
    tx: mpsc::Sender<io::Result<Bytes>>,
    buf: Vec<u8>,
    sent: u64,
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.flush()?;
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.sent += chunk.len() as u64;
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "Docker stopped reading the image upload"))
    }
}

struct Counting<'a, W> {
    inner: W,
    progress: &'a (dyn Fn(u64) + Sync),
}

impl<W: Write> Write for Counting<'_, W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(data)?;
        (self.progress)(n as u64);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn padding(size: u64) -> usize {
    usize::try_from((512 - size % 512) % 512).unwrap_or(0)
}

fn tar_header(name: &str, size: u64) -> [u8; 512] {
    let mut h = tar::Header::new_ustar();
    // Names here are at most 77 bytes (`blobs/sha256/<64 hex>`), always valid.
    let _ = h.set_path(name);
    h.set_size(size);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    *h.as_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_fully_qualified_as_docker_save_writes_them() {
        assert_eq!(fully_qualified("nginx:1.27"), "docker.io/library/nginx:1.27");
        assert_eq!(fully_qualified("bitnami/redis:7"), "docker.io/bitnami/redis:7");
        assert_eq!(fully_qualified("127.0.0.1:5000/stack/web:1"), "127.0.0.1:5000/stack/web:1");
        assert_eq!(fully_qualified("ghcr.io/a/b:2"), "ghcr.io/a/b:2");
        assert_eq!(fully_qualified("localhost/x:1"), "localhost/x:1");
    }

    #[test]
    fn chain_ids_follow_the_spec() {
        let a: Digest = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".parse().unwrap();
        let b: Digest = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb".parse().unwrap();
        let c = chain_ids(&[a, b]);
        assert_eq!(c[0], a);
        assert_eq!(c[1], Digest::of(format!("{a} {b}").as_bytes()));
    }
}
