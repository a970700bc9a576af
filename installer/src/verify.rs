//! Signature first, then payload. [`open`] checks the signature of `bundle.json` against the
//! trusted keys before one payload byte is read and gives back a [`SignedBundle`]; only a full
//! pass over every entry ([`verify`], or the load pass of `apply`) makes a [`VerifiedBundle`].

use std::path::{Path, PathBuf};

use manifests::media::MediaReader;
use manifests::signature::Verified;
use manifests::{BundleReader, Digest, Manifest, TrustedKeys};

use crate::error::InstallError;

/// A bundle whose manifest signature checked out; its payload is not yet read.
pub struct SignedBundle {
    /// The bundle file (part 000 of a split bundle).
    pub path: PathBuf,
    /// The reader, positioned after the signature; for a split bundle every part was found.
    pub reader: BundleReader<MediaReader>,
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

/// Open a bundle (its file, or part 000 of a split bundle with the others beside it or in one of
/// `media`) and check its signature; every part is found with its size before this returns.
///
/// # Errors
/// Unreadable file, structural problems in the first entries, bad or untrusted signature,
/// missing parts.
pub fn open(path: &Path, media: &[PathBuf], keys: &TrustedKeys) -> Result<SignedBundle, InstallError> {
    let bundle_err = |source| InstallError::Bundle { path: path.to_path_buf(), source };
    let reader = manifests::media::open(path, media, keys).map_err(bundle_err)?;
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
