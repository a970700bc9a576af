//! `bundler inspect` and `bundler verify`.

use std::path::{Path, PathBuf};

use manifests::order::start_order;
use manifests::{Manifest, TrustedKeys};
use serde::Serialize;

use crate::error::BundlerError;

/// What `inspect` shows.
#[derive(Debug, Serialize)]
pub struct Inspection {
    /// Product.
    pub product: String,
    /// Version.
    pub version: String,
    /// Release counter.
    pub release: u64,
    /// Channel.
    pub channel: String,
    /// Created (RFC 3339).
    pub created: String,
    /// Expires (RFC 3339), if limited.
    pub expires: Option<String>,
    /// Key id that signed.
    pub key_id: String,
    /// Whether the signature was checked (with --key).
    pub signature_checked: bool,
    /// Key id this bundle rotates to, if it carries a key-rotation record.
    pub rotates_to: Option<String>,
    /// Images.
    pub images: Vec<ImageInfo>,
    /// Start order, as waves.
    pub start_order: Vec<Vec<String>>,
    /// Migrations.
    pub migrations: Vec<String>,
    /// Backup job.
    pub backup: Option<String>,
    /// Site variables the operator supplies: `NAME (required|optional|default `x`[, secret])[: description]`.
    pub variables: Vec<String>,
    /// Bundle file size.
    pub total_size: u64,
    /// Number of entries.
    pub entries: usize,
    /// A split bundle's part files, part 000 first, with where each was found.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<PartInfo>,
}

/// One part of a split bundle in `inspect`.
#[derive(Debug, Serialize)]
pub struct PartInfo {
    /// Part name.
    pub name: String,
    /// Where it was found.
    pub path: std::path::PathBuf,
    /// Size.
    pub size: u64,
}

/// One image in `inspect`.
#[derive(Debug, Serialize)]
pub struct ImageInfo {
    /// Reference.
    pub reference: String,
    /// Manifest digest.
    pub digest: String,
    /// Image ID.
    pub image_id: String,
    /// Layers.
    pub layers: usize,
    /// Compressed size.
    pub size: u64,
}

/// Read the manifest; check the signature if keys are given.
///
/// # Errors
/// Unreadable or invalid bundle.
pub fn inspect(path: &Path, media: &[PathBuf], keys: Option<&TrustedKeys>) -> Result<Inspection, BundlerError> {
    let bundle_err = |source| BundlerError::Bundle { path: path.to_path_buf(), source };
    let (manifest, files, checked) = match keys {
        Some(keys) => {
            let r = manifests::media::open(path, media, keys).map_err(bundle_err)?;
            (r.manifest().clone(), r.inner().files().to_vec(), true)
        }
        None => {
            let (m, files) = manifests::media::open_unverified(path, media).map_err(bundle_err)?;
            (m, files, false)
        }
    };
    let mut info = summarize(&manifest, checked, files.iter().map(|f| f.size).sum());
    if files.len() > 1 {
        info.parts = files.into_iter().map(|f| PartInfo { name: f.name, path: f.path, size: f.size }).collect();
    }
    Ok(info)
}

/// Summarize a manifest.
#[must_use]
pub fn summarize(m: &Manifest, signature_checked: bool, total_size: u64) -> Inspection {
    Inspection {
        product: m.product.clone(),
        version: m.version.clone(),
        release: m.release,
        channel: m.channel.clone(),
        created: manifests::time::rfc3339(m.created),
        expires: m.expires.map(manifests::time::rfc3339),
        key_id: m.key_id.clone(),
        signature_checked,
        rotates_to: m.key_rotation.as_ref().map(|r| r.new_key_id.clone()),
        images: m
            .images
            .iter()
            .map(|i| ImageInfo {
                reference: i.reference.clone(),
                digest: i.manifest.digest.to_string(),
                image_id: i.config.digest.to_string(),
                layers: i.layers.len(),
                size: i.size(),
            })
            .collect(),
        start_order: start_order(&manifests::compose::probe(m).services).unwrap_or_default(),
        migrations: m.migrations.clone(),
        backup: m.backup.clone(),
        variables: m
            .variables
            .iter()
            .map(|(k, v)| {
                let what = match (&v.default, v.optional) {
                    (Some(d), _) if !v.secret => format!("default `{d}`"),
                    (_, true) => "optional".to_string(),
                    _ => "required".to_string(),
                };
                let secret = if v.secret { ", secret" } else { "" };
                let desc = v.description.as_ref().map(|d| format!(": {d}")).unwrap_or_default();
                format!("{k} ({what}{secret}){desc}")
            })
            .collect(),
        total_size,
        entries: m.entries.len() + 2,
        parts: Vec::new(),
    }
}

/// Verify a whole bundle against trusted keys.
///
/// # Errors
/// The first problem found.
pub fn verify(
    path: &Path,
    media: &[PathBuf],
    keys: &TrustedKeys,
) -> Result<(Manifest, manifests::signature::Verified), BundlerError> {
    manifests::media::verify(path, media, keys)
        .map_err(|source| BundlerError::Bundle { path: path.to_path_buf(), source })
}
