//! `bundler inspect` and `bundler verify`.

use std::path::Path;

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
pub fn inspect(path: &Path, keys: Option<&TrustedKeys>) -> Result<Inspection, BundlerError> {
    let bundle_err = |source| BundlerError::Bundle { path: path.to_path_buf(), source };
    let file =
        std::fs::File::open(path).map_err(|source| bundle_err(manifests::BundleError::Read { offset: 0, source }))?;
    let len = file.metadata().map(|m| m.len()).ok();
    let reader = std::io::BufReader::new(file);
    let (manifest, checked) = match keys {
        Some(keys) => {
            let r = manifests::BundleReader::open(reader, len, keys).map_err(bundle_err)?;
            (r.manifest().clone(), true)
        }
        None => (manifests::reader::read_unverified_manifest(reader, len).map_err(bundle_err)?.0, false),
    };
    Ok(summarize(&manifest, checked, len.unwrap_or(0)))
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
    }
}

/// Verify a whole bundle against trusted keys.
///
/// # Errors
/// The first problem found.
pub fn verify(path: &Path, keys: &TrustedKeys) -> Result<(Manifest, manifests::signature::Verified), BundlerError> {
    manifests::reader::verify_file(path, keys)
        .map_err(|source| BundlerError::Bundle { path: path.to_path_buf(), source })
}
