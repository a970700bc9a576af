//! `bundler build`: compose file + registry -> one signed bundle.
//!
//! 1. read the key (fail fast), parse and normalize the compose file, hash its config files;
//! 2. resolve every image to its linux/amd64 manifest, check media types and architecture;
//! 3. download every blob not in the cache, a few at a time, each verified, shared ones once;
//! 4. list every entry with size and sha256, write and sign `bundle.json`;
//! 5. write the tar to a temp file next to the output, fsync, rename: no partial output, ever.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use futures_util::{StreamExt, TryStreamExt};
use manifests::digest::HashingWriter;
use manifests::layout::{self, COMPOSE, OCI_INDEX, OCI_LAYOUT, OCI_LAYOUT_CONTENT};
use manifests::{Blob, Digest, Entry, Image, Layer, Manifest, Requirements, SCHEMA_VERSION, SecretKey};
use serde::Deserialize;

use crate::archive::{self, Source};
use crate::error::BundlerError;
use crate::registry::ImageSource;
use crate::report::{Phase, Reporter};

/// What to build.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// The compose file.
    pub compose: PathBuf,
    /// Profiles, env files and environment for reading it.
    pub load: manifests::compose::LoadOptions,
    /// The secret key.
    pub secret_key: PathBuf,
    /// Human version.
    pub version: String,
    /// Release counter.
    pub release: u64,
    /// Output bundle path.
    pub output: PathBuf,
    /// Blob cache directory.
    pub cache_dir: PathBuf,
    /// Build time (seconds since the epoch); from `SOURCE_DATE_EPOCH` for reproducible builds.
    pub created: u64,
    /// Days the bundle stays valid, if limited.
    pub valid_days: Option<u64>,
    /// Parallel downloads.
    pub jobs: usize,
    /// Public key to rotate to: recorded in the manifest, signed by the current key.
    pub rotate_to: Option<PathBuf>,
    /// Split the bundle into parts of at most this many bytes (removable media).
    pub part_size: Option<u64>,
}

/// A file the build wrote.
#[derive(Debug, Clone, serde::Serialize)]
pub struct WrittenFile {
    /// Where.
    pub path: PathBuf,
    /// Size.
    pub size: u64,
    /// sha256 of the file.
    pub sha256: Digest,
}

/// What was built.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BuildSummary {
    /// Output path.
    pub path: PathBuf,
    /// Bundle size.
    pub size: u64,
    /// sha256 of the bundle file (one-file bundles).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<Digest>,
    /// The part files (split bundles), part 000 first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<WrittenFile>,
    /// Images.
    pub images: usize,
    /// Unique blobs stored.
    pub blobs: usize,
    /// Bytes of unique blobs.
    pub blob_bytes: u64,
    /// Bytes downloaded in this run.
    pub downloaded_bytes: u64,
    /// Bytes found in the cache.
    pub cached_bytes: u64,
    /// Key id that signed.
    pub key_id: String,
}

const GZIP_LAYER_TYPES: &[&str] = &[
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.docker.image.rootfs.diff.tar",
];
const MANIFEST_TYPES: &[&str] =
    &["application/vnd.docker.distribution.manifest.v2+json", "application/vnd.oci.image.manifest.v1+json"];

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ManifestDoc {
    schema_version: u32,
    media_type: Option<String>,
    config: DescriptorDoc,
    layers: Vec<DescriptorDoc>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DescriptorDoc {
    media_type: String,
    digest: String,
    size: u64,
}

#[derive(Deserialize)]
struct ConfigDoc {
    architecture: Option<String>,
    os: Option<String>,
    rootfs: RootFsDoc,
}

#[derive(Deserialize)]
struct RootFsDoc {
    diff_ids: Vec<String>,
}

/// Most files one bundled directory may hold.
pub const MAX_TREE_FILES: usize = 10_000;
/// Most bytes one bundled directory may hold.
pub const MAX_TREE_BYTES: u64 = 256 << 20;

/// Every regular file the stack bundles (relative path, path on disk), sorted; a mounted
/// directory is walked. Refused: a symlink that leaves its tree, anything but regular files,
/// directories and symlinks, a tree over [`MAX_TREE_FILES`] or [`MAX_TREE_BYTES`].
///
/// # Errors
/// The first such problem, naming the file.
pub fn check_sources(
    compose: &Path,
    stack: &manifests::compose::Prepared,
) -> Result<Vec<(String, PathBuf)>, BundlerError> {
    let base = match compose.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut out = std::collections::BTreeMap::new();
    for rel in &stack.files {
        let err = |file: &str, m: String| BundlerError::StackFile {
            compose: compose.to_path_buf(),
            file: file.to_string(),
            source: std::io::Error::other(m),
        };
        let root = base.join(rel);
        let meta = std::fs::metadata(&root).map_err(|source| BundlerError::StackFile {
            compose: compose.to_path_buf(),
            file: rel.clone(),
            source,
        })?;
        if meta.is_file() {
            out.insert(rel.clone(), root);
            continue;
        }
        if !meta.is_dir() {
            return Err(err(rel, "not a regular file or directory (device files and sockets are not bundled)".into()));
        }
        let canonical_root = root.canonicalize().map_err(|e| err(rel, e.to_string()))?;
        let (mut files, mut bytes) = (0usize, 0u64);
        let mut stack_dirs = vec![root.clone()];
        while let Some(dir) = stack_dirs.pop() {
            let mut entries: Vec<_> = std::fs::read_dir(&dir)
                .map_err(|e| err(rel, e.to_string()))?
                .collect::<Result<_, _>>()
                .map_err(|e| err(rel, e.to_string()))?;
            entries.sort_by_key(std::fs::DirEntry::file_name);
            for e in entries {
                let path = e.path();
                let inner = path.strip_prefix(&base).unwrap_or(&path).to_string_lossy().replace('\\', "/");
                let lmeta = std::fs::symlink_metadata(&path).map_err(|x| err(&inner, x.to_string()))?;
                let meta = if lmeta.file_type().is_symlink() {
                    let target = path.canonicalize().map_err(|x| err(&inner, format!("broken symlink: {x}")))?;
                    if !target.starts_with(&canonical_root) {
                        return Err(err(
                            &inner,
                            format!("a symlink to {} leaves the bundled directory `{rel}`", target.display()),
                        ));
                    }
                    std::fs::metadata(&path).map_err(|x| err(&inner, x.to_string()))?
                } else {
                    lmeta
                };
                if meta.is_dir() {
                    stack_dirs.push(path);
                } else if meta.is_file() {
                    files += 1;
                    bytes += meta.len();
                    if files > MAX_TREE_FILES || bytes > MAX_TREE_BYTES {
                        return Err(err(
                            rel,
                            format!(
                                "the directory holds more than {MAX_TREE_FILES} files or {} MiB",
                                MAX_TREE_BYTES >> 20
                            ),
                        ));
                    }
                    out.insert(inner, path);
                } else {
                    return Err(err(
                        &inner,
                        "not a regular file (device files, sockets and pipes are not bundled)".into(),
                    ));
                }
            }
        }
    }
    Ok(out.into_iter().collect())
}

/// Read the secret key: a file, `-` (standard input) or `env:NAME` (the variable holds the key
/// file's text). The last two let a CI job pass the key from its secret store without ever
/// writing it to disk.
///
/// # Errors
/// Missing or malformed key.
pub fn read_secret_key(path: &Path) -> Result<SecretKey, BundlerError> {
    let unreadable = |source| BundlerError::KeyUnreadable { path: path.to_path_buf(), source };
    let text = match path.to_str() {
        Some("-") => std::io::read_to_string(std::io::stdin()).map_err(unreadable)?,
        Some(spec) if spec.starts_with("env:") => {
            let name = &spec[4..];
            std::env::var(name).map_err(|_| {
                unreadable(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("the environment variable {name} is not set (or not UTF-8)"),
                ))
            })?
        }
        _ => std::fs::read_to_string(path).map_err(unreadable)?,
    };
    Ok(SecretKey::from_file_string(&text, path)?)
}

/// Build a bundle.
///
/// # Errors
/// See [`BundlerError`]; on any error no output file is left behind.
pub async fn build<S: ImageSource>(
    opts: &BuildOptions,
    source: &S,
    reporter: &dyn Reporter,
) -> Result<BuildSummary, BundlerError> {
    let key = read_secret_key(&opts.secret_key)?;
    let key_rotation = match &opts.rotate_to {
        None => None,
        Some(path) => {
            let new = crate::keys::load_public_keys(std::slice::from_ref(path))?.keys()[0].clone();
            Some(manifests::KeyRotation { new_key_id: new.key_id.to_string(), new_public_key: new.to_file_string() })
        }
    };
    let compose_text = std::fs::read_to_string(&opts.compose)
        .map_err(|source| BundlerError::ComposeUnreadable { path: opts.compose.clone(), source })?;
    let stack = manifests::compose::load(&opts.compose, &opts.load)?;
    let stack_files = check_sources(&opts.compose, &stack)?;
    let output_dir = match opts.output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };

    let mut entries: Vec<(Entry, Source)> = Vec::new();
    let compose_bytes = compose_text.into_bytes();
    entries.push(bytes_entry(COMPOSE, compose_bytes));
    for (rel, file) in stack_files {
        let stack_err = |source| BundlerError::StackFile { compose: opts.compose.clone(), file: rel.clone(), source };
        let (sha256, size) = manifests::digest::digest_file(&file).map_err(stack_err)?;
        entries.push((Entry { path: layout::stack_file_path(&rel), size, sha256 }, Source::File(file)));
    }

    let blob_dir = opts.cache_dir.join("blobs").join("sha256");
    std::fs::create_dir_all(&blob_dir).map_err(|source| BundlerError::Cache { path: blob_dir.clone(), source })?;

    // Resolve every image (sorted, each once) and fetch its config.
    reporter.start(Phase::Resolve, 0);
    let references: BTreeSet<&str> = stack.images.iter().map(String::as_str).collect();
    let mut images = Vec::new();
    let mut fetched_while_resolving = 0;
    for reference in &references {
        reporter.message(&format!("resolving {reference}"));
        let (image, fetched) = resolve_image(source, reference, &blob_dir).await?;
        fetched_while_resolving += fetched;
        images.push(image);
    }
    reporter.finish(Phase::Resolve);

    // Every blob once: manifests and configs first, then layers in first-seen order.
    let mut blob_order: Vec<(String, Blob)> = Vec::new();
    let mut seen = BTreeSet::new();
    for image in &images {
        for b in [&image.manifest, &image.config] {
            if seen.insert(b.digest) {
                blob_order.push((image.reference.clone(), b.clone()));
            }
        }
    }
    for image in &images {
        for l in &image.layers {
            if seen.insert(l.blob.digest) {
                blob_order.push((image.reference.clone(), l.blob.clone()));
            }
        }
    }

    // Download what the cache lacks.
    let missing: Vec<&(String, Blob)> = blob_order.iter().filter(|(_, b)| !cached(&blob_dir, b)).collect();
    let to_download: u64 = missing.iter().map(|(_, b)| b.size).sum();
    let downloaded_bytes = to_download + fetched_while_resolving;
    let blob_bytes: u64 = blob_order.iter().map(|(_, b)| b.size).sum();
    reporter.start(Phase::Download, to_download);
    let progress = |n| reporter.advance(Phase::Download, n);
    futures_util::stream::iter(missing.iter().map(|(reference, blob)| {
        let dest = blob_dir.join(blob.digest.hex());
        let progress = &progress;
        async move { source.fetch_blob(reference, &blob.digest, &dest, progress).await }
    }))
    .buffer_unordered(opts.jobs.max(1))
    .try_collect::<Vec<()>>()
    .await?;
    reporter.finish(Phase::Download);
    entries.push(bytes_entry(OCI_LAYOUT, OCI_LAYOUT_CONTENT.as_bytes().to_vec()));
    entries.push(bytes_entry(OCI_INDEX, oci_index(&images)));
    let fetched: BTreeSet<Digest> = missing.iter().map(|(_, b)| b.digest).collect();
    for (_, blob) in &blob_order {
        let file = blob_dir.join(blob.digest.hex());
        // A blob from an earlier run is hashed again on its way into the bundle; one this run
        // downloaded was checked as it arrived.
        let source = if fetched.contains(&blob.digest) { Source::Fetched(file) } else { Source::File(file) };
        entries.push((Entry { path: layout::blob_path(&blob.digest), size: blob.size, sha256: blob.digest }, source));
    }

    let mut manifest = Manifest {
        schema_version: SCHEMA_VERSION,
        product: stack.product.clone(),
        version: opts.version.clone(),
        release: opts.release,
        channel: stack.channel.clone(),
        created: opts.created,
        expires: opts.valid_days.map(|d| opts.created + d * 86_400),
        platform: "linux/amd64".into(),
        key_id: key.key_id().to_string(),
        project: stack.project.clone(),
        entries: entries.iter().map(|(e, _)| e.clone()).collect(),
        images,
        stack: stack.stack.clone(),
        migrations: stack.migrations.clone(),
        backup: stack.backup.clone(),
        snapshot: stack.snapshot.clone(),
        templates: stack.templates.clone(),
        swarm: stack.swarm.clone(),
        variables: stack.variables.clone(),
        health: stack.health.clone(),
        requires: Requirements { image_bytes: blob_bytes, docker_api_version: "1.41".into() },
        key_rotation,
        parts: None,
    };
    let total: u64 = entries.iter().map(|(e, _)| e.size).sum();
    reporter.start(Phase::Write, total);
    let written = match opts.part_size {
        None => write_one_file(opts, &output_dir, &key, &manifest, entries, reporter)?,
        Some(part_size) => write_parts(opts, &output_dir, &key, &mut manifest, &entries, part_size, reporter)?,
    };
    reporter.finish(Phase::Write);
    Ok(BuildSummary {
        path: written.first().map_or_else(|| opts.output.clone(), |f| f.path.clone()),
        size: written.iter().map(|f| f.size).sum(),
        sha256: (written.len() == 1).then(|| written[0].sha256),
        parts: if written.len() > 1 { written } else { Vec::new() },
        images: manifest.images.len(),
        blobs: blob_order.len(),
        blob_bytes,
        downloaded_bytes,
        cached_bytes: blob_bytes - downloaded_bytes,
        key_id: manifest.key_id,
    })
}

fn sign(key: &SecretKey, manifest: &Manifest) -> [(Entry, Source); 2] {
    let manifest_bytes = manifest.to_canonical_bytes();
    let signature = key.sign(
        &manifest_bytes,
        &format!(
            "product:{} version:{} release:{} created:{} file:bundle.json",
            manifest.product, manifest.version, manifest.release, manifest.created
        ),
    );
    [bytes_entry(layout::MANIFEST, manifest_bytes), bytes_entry(layout::SIGNATURE, signature.into_bytes())]
}

/// The one-file bundle: written to a temp file next to the output, fsynced, renamed.
fn write_one_file(
    opts: &BuildOptions,
    output_dir: &Path,
    key: &SecretKey,
    manifest: &Manifest,
    entries: Vec<(Entry, Source)>,
    reporter: &dyn Reporter,
) -> Result<Vec<WrittenFile>, BundlerError> {
    let mut all = Vec::from(sign(key, manifest));
    all.extend(entries);
    let out_err = |source| BundlerError::Output { path: opts.output.clone(), source };
    let tmp =
        tempfile::Builder::new().prefix(".bundle-").suffix(".partial").tempfile_in(output_dir).map_err(out_err)?;
    // The bundle's own digest is taken as it is written: no second read of the output.
    let writer = HashingWriter::new(std::io::BufWriter::with_capacity(1 << 20, tmp));
    let writer = archive::write_archive(writer, manifest.created, &all, &|n| reporter.advance(Phase::Write, n))
        .map_err(drop_changed)?;
    let (writer, sha256, size) = writer.finish();
    let tmp = writer.into_inner().map_err(|e| out_err(e.into_error()))?;
    tmp.as_file().sync_all().map_err(out_err)?;
    tmp.persist(&opts.output).map_err(|e| out_err(e.error))?;
    if let Ok(dir) = std::fs::File::open(output_dir) {
        let _ = dir.sync_all();
    }
    Ok(vec![WrittenFile { path: opts.output.clone(), size, sha256 }])
}

/// The split bundle: payload parts first (hashed as written), then the manifest with the part
/// table is signed and written as part 000 (see [`crate::parts`]).
fn write_parts(
    opts: &BuildOptions,
    output_dir: &Path,
    key: &SecretKey,
    manifest: &mut Manifest,
    entries: &[(Entry, Source)],
    part_size: u64,
    reporter: &dyn Reporter,
) -> Result<Vec<WrittenFile>, BundlerError> {
    let out_err = |source| BundlerError::Output { path: opts.output.clone(), source };
    let base = opts.output.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "bundle".into());
    // The payload's length is known before a byte is written: refuse a part size that would
    // need more parts than three digits number.
    let payload: u64 = entries.iter().map(|(e, _)| 512 + e.size.div_ceil(512) * 512).sum::<u64>() + 1024;
    if payload.div_ceil(part_size) > manifests::media::MAX_PARTS as u64 {
        return Err(BundlerError::Usage(format!(
            "--part-size {part_size} would cut this {payload}-byte bundle into {} parts, more than {}; \
             use a larger part size (4095M fits FAT32)",
            payload.div_ceil(part_size),
            manifests::media::MAX_PARTS
        )));
    }
    let writer = crate::parts::PartWriter::new(output_dir, &base, part_size);
    let writer = archive::write_archive(writer, manifest.created, entries, &|n| reporter.advance(Phase::Write, n))
        .map_err(drop_changed)?;
    let written = writer.finish().map_err(out_err)?;
    manifest.parts = Some(crate::parts::table(part_size, &written));
    let header = crate::parts::header_bytes(manifest.created, &sign(key, manifest)).map_err(out_err)?;
    if header.len() as u64 > part_size {
        return Err(BundlerError::Usage(format!(
            "--part-size {part_size} is smaller than the bundle's signed header ({} bytes: bundle.json and its signature); \
             use a larger part size (4095M fits FAT32)",
            header.len()
        )));
    }
    let mut tmp =
        tempfile::Builder::new().prefix(".bundle-part-").suffix(".partial").tempfile_in(output_dir).map_err(out_err)?;
    std::io::Write::write_all(&mut tmp, &header).map_err(out_err)?;
    tmp.as_file().sync_all().map_err(out_err)?;
    let mut files = vec![WrittenFile { path: PathBuf::new(), size: header.len() as u64, sha256: Digest::of(&header) }];
    files.extend(written.iter().map(|w| WrittenFile {
        path: PathBuf::new(),
        size: w.part.size,
        sha256: w.part.sha256,
    }));
    let paths = crate::parts::persist(output_dir, &base, tmp, written).map_err(out_err)?;
    for (f, p) in files.iter_mut().zip(paths) {
        // Named as the operator wrote `-o` (relative stays relative).
        f.path = p.file_name().map_or(p.clone(), |n| opts.output.with_file_name(n));
    }
    Ok(files)
}

/// A cache file that no longer matches its digest is dropped so the next run fetches it.
fn drop_changed(e: archive::ArchiveError) -> BundlerError {
    if let archive::ArchiveError::Changed { file, .. } = &e {
        let _ = std::fs::remove_file(file);
    }
    e.into()
}

fn bytes_entry(path: &str, bytes: Vec<u8>) -> (Entry, Source) {
    (Entry { path: path.to_string(), size: bytes.len() as u64, sha256: Digest::of(&bytes) }, Source::Bytes(bytes))
}

fn cached(blob_dir: &Path, blob: &Blob) -> bool {
    std::fs::metadata(blob_dir.join(blob.digest.hex())).is_ok_and(|m| m.len() == blob.size)
}

/// The pinned image, and the bytes fetched from the registry for it (manifest and config).
async fn resolve_image<S: ImageSource>(
    source: &S,
    reference: &str,
    blob_dir: &Path,
) -> Result<(Image, u64), BundlerError> {
    let unsupported = |reason: String| BundlerError::ImageUnsupported { reference: reference.to_string(), reason };
    let resolved = source.resolve(reference).await?;
    let doc: ManifestDoc = serde_json::from_slice(&resolved.raw)
        .map_err(|e| unsupported(format!("its manifest is not a v2 image manifest ({e})")))?;
    let manifest_type = doc.media_type.clone().unwrap_or_else(|| MANIFEST_TYPES[1].to_string());
    if doc.schema_version != 2 || !MANIFEST_TYPES.contains(&manifest_type.as_str()) {
        return Err(unsupported(format!("manifest media type `{manifest_type}` (schema {})", doc.schema_version)));
    }
    let parse_digest = |d: &str| d.parse::<Digest>().map_err(|e| unsupported(e.to_string()));
    for l in &doc.layers {
        if l.media_type.contains("zstd") {
            return Err(unsupported(format!("layer {} is zstd-compressed ({})", l.digest, l.media_type)));
        }
        if !GZIP_LAYER_TYPES.contains(&l.media_type.as_str()) {
            return Err(unsupported(format!("layer {} has media type `{}`", l.digest, l.media_type)));
        }
    }
    // Keep the manifest byte for byte in the cache, like any other blob.
    let mut fetched = 0;
    let manifest_path = blob_dir.join(resolved.digest.hex());
    if !manifest_path.exists() {
        fetched += resolved.raw.len() as u64;
        manifests::fsutil::write_atomic(&manifest_path, &resolved.raw, 0o644)
            .map_err(|source| BundlerError::Cache { path: manifest_path.clone(), source })?;
    }
    let config_digest = parse_digest(&doc.config.digest)?;
    let config_path = blob_dir.join(config_digest.hex());
    if !std::fs::metadata(&config_path).is_ok_and(|m| m.len() == doc.config.size) {
        source.fetch_blob(reference, &config_digest, &config_path, &|_| {}).await?;
        fetched += doc.config.size;
    }
    let config_bytes =
        std::fs::read(&config_path).map_err(|source| BundlerError::Cache { path: config_path.clone(), source })?;
    if Digest::of(&config_bytes) != config_digest {
        let _ = std::fs::remove_file(&config_path);
        return Err(unsupported("its cached config does not match its digest; run again".into()));
    }
    let config: ConfigDoc = serde_json::from_slice(&config_bytes)
        .map_err(|e| unsupported(format!("its config is not an image config ({e})")))?;
    let os = config.os.unwrap_or_default();
    let arch = config.architecture.unwrap_or_default();
    if os != "linux" || arch != "amd64" {
        return Err(unsupported(format!("it is built for {os}/{arch}, not linux/amd64")));
    }
    if config.rootfs.diff_ids.len() != doc.layers.len() {
        return Err(unsupported(format!(
            "its config lists {} diff ids for {} layers",
            config.rootfs.diff_ids.len(),
            doc.layers.len()
        )));
    }
    let mut layers = Vec::new();
    for (l, diff_id) in doc.layers.iter().zip(&config.rootfs.diff_ids) {
        layers.push(Layer {
            blob: Blob { digest: parse_digest(&l.digest)?, size: l.size, media_type: l.media_type.clone() },
            diff_id: parse_digest(diff_id)?,
        });
    }
    let image = Image {
        reference: reference.to_string(),
        index_digest: resolved.index_digest,
        manifest: Blob { digest: resolved.digest, size: resolved.raw.len() as u64, media_type: manifest_type },
        config: Blob { digest: config_digest, size: doc.config.size, media_type: doc.config.media_type },
        layers,
    };
    Ok((image, fetched))
}

fn oci_index(images: &[Image]) -> Vec<u8> {
    let manifests: Vec<serde_json::Value> = images
        .iter()
        .map(|i| {
            serde_json::json!({
                "mediaType": i.manifest.media_type,
                "digest": i.manifest.digest.to_string(),
                "size": i.manifest.size,
                "annotations": {"org.opencontainers.image.ref.name": i.reference},
            })
        })
        .collect();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": manifests,
    });
    let mut v = serde_json::to_vec(&index).unwrap_or_default();
    v.push(b'\n');
    v
}
