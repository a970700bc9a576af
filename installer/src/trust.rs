//! Which keys this host trusts: files in `<state-dir>/keys/`, plus `--key` on the command line.
//! A key given with `--key` is remembered (copied into the keys dir) once a bundle it signed
//! verified, so the operator passes it only at the first install.

use std::path::{Path, PathBuf};

use manifests::{PublicKey, TrustedKeys};

use crate::error::InstallError;

/// Read one public key file.
///
/// # Errors
/// Unreadable or malformed.
pub fn read_key(path: &Path) -> Result<PublicKey, InstallError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| InstallError::Key { path: path.to_path_buf(), message: e.to_string() })?;
    PublicKey::from_file_string(&text, path)
        .map_err(|e| InstallError::Key { path: path.to_path_buf(), message: e.to_string() })
}

/// Trusted keys: every `*.pub` in `keys_dir` plus `extra`.
///
/// # Errors
/// A malformed key, or no key at all.
pub fn trusted_keys(keys_dir: &Path, extra: &[PathBuf]) -> Result<TrustedKeys, InstallError> {
    let mut keys = TrustedKeys::default();
    if let Ok(dir) = std::fs::read_dir(keys_dir) {
        let mut paths: Vec<PathBuf> = dir.filter_map(Result::ok).map(|e| e.path()).collect();
        paths.sort();
        for p in paths.iter().filter(|p| p.extension().is_some_and(|e| e == "pub")) {
            keys.push(read_key(p)?);
        }
    }
    for p in extra {
        keys.push(read_key(p)?);
    }
    if keys.is_empty() {
        return Err(InstallError::NoTrustedKey { keys_dir: keys_dir.to_path_buf() });
    }
    Ok(keys)
}

/// Remember a key in the keys dir (as `<key id>.pub`).
///
/// # Errors
/// Write failures.
pub fn remember(keys_dir: &Path, key: &PublicKey) -> Result<bool, InstallError> {
    let path = keys_dir.join(format!("{}.pub", key.key_id));
    if path.exists() {
        return Ok(false);
    }
    std::fs::create_dir_all(keys_dir).map_err(InstallError::state(keys_dir))?;
    crate::state::write_atomic(&path, key.to_file_string().as_bytes(), 0o644)?;
    Ok(true)
}
