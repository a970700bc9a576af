//! Signature first, then payload. [`open`] checks the signature of `bundle.json` against the
//! trusted keys before one payload byte is read and gives back a [`SignedBundle`]; only a full
//! pass over every entry ([`verify`], or the load pass of `apply`) makes a [`VerifiedBundle`].

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use manifests::signature::Verified;
use manifests::{BundleReader, Digest, Manifest, TrustedKeys};

use crate::error::InstallError;

/// A bundle whose manifest signature checked out; its payload is not yet read.
pub struct SignedBundle {
    /// The bundle file.
    pub path: PathBuf,
    /// The reader, positioned after the signature.
    pub reader: BundleReader<BufReader<File>>,
    /// Who signed.
    pub signer: Verified,
    /// sha256 of `bundle.json`: identifies this exact release build.
    pub manifest_sha256: Digest,
}

/// A bundle whose every entry matched its signed manifest.
#[derive(Debug, Clone)]
pub struct VerifiedBundle {
    /// The manifest.
    pub manifest: Manifest,
    /// sha256 of `bundle.json`.
    pub manifest_sha256: Digest,
    /// Who signed.
    pub signer: Verified,
}

impl SignedBundle {
    /// The signed manifest.
    #[must_use]
    pub fn manifest(&self) -> &Manifest {
        self.reader.manifest()
    }
}

/// Open a bundle and check its signature.
///
/// # Errors
/// Unreadable file, structural problems in the first entries, bad or untrusted signature.
pub fn open(path: &Path, keys: &TrustedKeys) -> Result<SignedBundle, InstallError> {
    let bundle_err = |source| InstallError::Bundle { path: path.to_path_buf(), source };
    let file = File::open(path).map_err(|source| bundle_err(manifests::BundleError::Read { offset: 0, source }))?;
    let len = file.metadata().map_err(|source| bundle_err(manifests::BundleError::Read { offset: 0, source }))?.len();
    let reader = BundleReader::open(BufReader::with_capacity(1 << 20, file), Some(len), keys).map_err(bundle_err)?;
    let signer = reader.signer().cloned().ok_or_else(|| {
        bundle_err(manifests::BundleError::NotATar { reason: "no signer recorded (this is a bug)".into() })
    })?;
    let manifest_sha256 = Digest::of(reader.manifest_bytes());
    Ok(SignedBundle { path: path.to_path_buf(), reader, signer, manifest_sha256 })
}

/// Verify every entry of a signed bundle.
///
/// # Errors
/// The first mismatch.
pub fn verify(signed: SignedBundle) -> Result<VerifiedBundle, InstallError> {
    let SignedBundle { path, reader, signer, manifest_sha256 } = signed;
    let manifest = reader.finish().map_err(|source| InstallError::Bundle { path, source })?;
    Ok(VerifiedBundle { manifest, manifest_sha256, signer })
}

impl VerifiedBundle {
    /// Made by the load pass of `apply` once every entry matched.
    pub(crate) fn after_pass(manifest: Manifest, manifest_sha256: Digest, signer: Verified) -> Self {
        Self { manifest, manifest_sha256, signer }
    }
}
