//! `bundler keygen` and key loading.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use manifests::{PublicKey, SecretKey, TrustedKeys};

use crate::error::BundlerError;

/// Where keygen writes.
#[derive(Debug, Clone)]
pub struct KeygenOptions {
    /// Secret key file (written 0600).
    pub secret_key: PathBuf,
    /// Public key file (minisign format).
    pub public_key: PathBuf,
    /// Replace existing files.
    pub force: bool,
}

/// Generate a key pair. The secret key is created 0600 and never overwritten without `force`.
///
/// # Errors
/// Existing files without `force`, or write failures.
pub fn keygen(opts: &KeygenOptions) -> Result<PublicKey, BundlerError> {
    if !opts.force {
        for p in [&opts.secret_key, &opts.public_key] {
            if p.exists() {
                return Err(BundlerError::KeyExists { path: p.clone() });
            }
        }
    }
    let key = SecretKey::generate();
    let public = key.public_key();
    write_key(&opts.secret_key, key.to_file_string().as_bytes(), 0o600)?;
    write_key(&opts.public_key, public.to_file_string().as_bytes(), 0o644)?;
    Ok(public)
}

/// Write through a temp file created with `mode` in the same directory, then rename, so the
/// secret is never readable by others, not even for a moment, and never half-written.
fn write_key(path: &Path, bytes: &[u8], mode: u32) -> Result<(), BundlerError> {
    let err = |source| BundlerError::KeyWrite { path: path.to_path_buf(), source };
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let tmp =
        dir.join(format!(".{}.tmp-{}", path.file_name().and_then(|n| n.to_str()).unwrap_or("key"), std::process::id()));
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp).map_err(err)?;
    let result = f.write_all(bytes).and_then(|()| f.sync_all()).and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(err(e));
    }
    Ok(())
}

/// Load public keys from files (each a minisign public key).
///
/// # Errors
/// Unreadable or malformed files.
pub fn load_public_keys(paths: &[PathBuf]) -> Result<TrustedKeys, BundlerError> {
    let mut keys = TrustedKeys::default();
    for p in paths {
        let text =
            std::fs::read_to_string(p).map_err(|source| BundlerError::KeyUnreadable { path: p.clone(), source })?;
        keys.push(PublicKey::from_file_string(&text, p)?);
    }
    Ok(keys)
}
