//! Every path inside a bundle, in one place.
//!
//! The order of entries is part of the format (see `docs/bundle-format.md`): the manifest and its
//! signature come first so that a reader can check the signature before it reads any payload.

/// The manifest: canonical JSON, always the first entry.
pub const MANIFEST: &str = "bundle.json";
/// The minisign signature of [`MANIFEST`], always the second entry.
pub const SIGNATURE: &str = "bundle.json.minisig";
/// The author's compose file, as written.
pub const COMPOSE: &str = "stack/compose.yaml";
/// Config files referenced by the compose file live below this prefix, at their path relative to
/// the compose file's directory.
pub const STACK_FILES_DIR: &str = "stack/files";
/// OCI layout marker.
pub const OCI_LAYOUT: &str = "images/oci-layout";
/// OCI index naming every image's manifest.
pub const OCI_INDEX: &str = "images/index.json";
/// Every blob, once, named by its sha256.
pub const BLOBS_DIR: &str = "images/blobs/sha256";

/// Largest `bundle.json` a reader accepts. It is read into memory before it is trusted, so its
/// size is checked against this bound first.
pub const MAX_MANIFEST_SIZE: u64 = 32 << 20;
/// Largest signature file a reader accepts.
pub const MAX_SIGNATURE_SIZE: u64 = 4096;

/// Path of a blob inside the bundle.
#[must_use]
pub fn blob_path(digest: &crate::Digest) -> String {
    format!("{BLOBS_DIR}/{}", digest.hex())
}

/// Path inside the bundle of a stack file given relative to the compose file's directory.
#[must_use]
pub fn stack_file_path(relative: &str) -> String {
    format!("{STACK_FILES_DIR}/{relative}")
}

/// Contents of `images/oci-layout`.
pub const OCI_LAYOUT_CONTENT: &str = "{\"imageLayoutVersion\":\"1.0.0\"}\n";
