//! `bundler keygen` and key loading.

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

/// Never half-written, and the secret is created 0600 (see [`manifests::fsutil::write_atomic`]).
fn write_key(path: &Path, bytes: &[u8], mode: u32) -> Result<(), BundlerError> {
    manifests::fsutil::write_atomic(path, bytes, mode)
        .map_err(|source| BundlerError::KeyWrite { path: path.to_path_buf(), source })
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
