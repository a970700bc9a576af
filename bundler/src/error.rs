//! Everything `bundler` can fail with, each variant carrying its evidence, with its exit code
//! and hint.

use std::path::PathBuf;

use manifests::compose::Problems;
use manifests::exit::io_exit;
use manifests::signature::SignatureError;
use manifests::{BundleError, Diagnose, Exit};

use crate::archive::ArchiveError;
use crate::registry::RegistryError;

/// A build, keygen, inspect or verify failure.
#[derive(Debug, thiserror::Error)]
pub enum BundlerError {
    /// The compose file cannot be read.
    #[error("cannot read compose file {path}: {source}")]
    ComposeUnreadable {
        /// File.
        path: PathBuf,
        /// Error.
        source: std::io::Error,
    },
    /// The compose file is wrong.
    #[error(transparent)]
    Spec(#[from] Problems),
    /// A file the compose file references is missing.
    #[error("{compose}: `{file}` is referenced but cannot be read: {source}")]
    StackFile {
        /// The compose file.
        compose: PathBuf,
        /// The referenced file (relative).
        file: String,
        /// Error.
        source: std::io::Error,
    },
    /// A key file cannot be read.
    #[error("cannot read key file {path}: {source}")]
    KeyUnreadable {
        /// File.
        path: PathBuf,
        /// Error.
        source: std::io::Error,
    },
    /// A key file is malformed.
    #[error(transparent)]
    Key(#[from] SignatureError),
    /// keygen would overwrite a key.
    #[error("{path} already exists; refusing to overwrite a key")]
    KeyExists {
        /// File.
        path: PathBuf,
    },
    /// Writing a key failed.
    #[error("cannot write key file {path}: {source}")]
    KeyWrite {
        /// File.
        path: PathBuf,
        /// Error.
        source: std::io::Error,
    },
    /// A registry problem.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// An image uses something Docker 20.10 cannot load.
    #[error("image {reference} cannot be shipped: {reason}")]
    ImageUnsupported {
        /// Image.
        reference: String,
        /// Why.
        reason: String,
    },
    /// The output cannot be written.
    #[error("cannot write the bundle to {path}: {source}")]
    Output {
        /// File.
        path: PathBuf,
        /// Error.
        source: std::io::Error,
    },
    /// Writing an entry failed.
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    /// The cache directory cannot be used.
    #[error("cannot use cache directory {path}: {source}")]
    Cache {
        /// Directory.
        path: PathBuf,
        /// Error.
        source: std::io::Error,
    },
    /// A bundle failed verification.
    #[error("{path}: {source}")]
    Bundle {
        /// The bundle file.
        path: PathBuf,
        /// What is wrong.
        source: BundleError,
    },
    /// A command-line value is wrong.
    #[error("{0}")]
    Usage(String),
    /// An outside program this command needs is not installed.
    #[error("`{tool}` was not found on PATH")]
    MissingTool {
        /// Program.
        tool: &'static str,
        /// How to get it.
        hint: &'static str,
    },
    /// An outside program failed.
    #[error("{} failed: {message}", tool.display())]
    ToolFailed {
        /// Program.
        tool: PathBuf,
        /// Its last lines of error output.
        message: String,
    },
}

impl Diagnose for BundlerError {
    fn exit(&self) -> Exit {
        match self {
            BundlerError::ComposeUnreadable { .. } | BundlerError::Spec(_) | BundlerError::StackFile { .. } => {
                Exit::SpecInvalid
            }
            BundlerError::KeyUnreadable { .. }
            | BundlerError::Key(_)
            | BundlerError::KeyExists { .. }
            | BundlerError::KeyWrite { .. } => Exit::KeyError,
            BundlerError::Registry(r) => match r {
                RegistryError::Unreachable { .. } => Exit::RegistryUnreachable,
                RegistryError::AuthRefused { .. } => Exit::RegistryAuth,
                RegistryError::NotFound { .. } | RegistryError::BadReference { .. } => Exit::ImageNotFound,
                RegistryError::DigestMismatch { .. } => Exit::RegistryDigestMismatch,
                RegistryError::NoPlatform { .. } => Exit::ImageUnsupported,
                RegistryError::Write { source, .. } => io_exit(source),
                RegistryError::Other { .. } => Exit::Failure,
            },
            BundlerError::ImageUnsupported { .. } => Exit::ImageUnsupported,
            BundlerError::Output { source, .. } | BundlerError::Cache { source, .. } => io_exit(source),
            BundlerError::Archive(a) => match a {
                ArchiveError::Write { source, .. } => io_exit(source),
                ArchiveError::Read { .. } | ArchiveError::Changed { .. } => Exit::Failure,
            },
            BundlerError::Bundle { source, .. } => source.exit(),
            BundlerError::Usage(_) => Exit::Usage,
            BundlerError::MissingTool { .. } | BundlerError::ToolFailed { .. } => Exit::Failure,
        }
    }

    fn hint(&self) -> Option<String> {
        Some(match self {
            BundlerError::ComposeUnreadable { .. } => "pass the compose file with -f (default: ./compose.yaml)".into(),
            BundlerError::Spec(_) => "fix each problem above (each has its own hint); docs/compose-subset.md lists what a bundle carries".into(),
            BundlerError::StackFile { .. } => {
                "files and directories next to the compose file are bundled as regular files; replace the symlink or special file, or mount it from an absolute host path".into()
            }
            BundlerError::KeyUnreadable { .. } => {
                "create a key pair with `bundler keygen --secret-key FILE --public-key FILE`, or check the path".into()
            }
            BundlerError::Key(_) => "the key file is damaged or not a minisign key; restore it from your secret store".into(),
            BundlerError::KeyExists { .. } => {
                "pass --force to replace it (bundles signed with the old key will no longer verify with the new one)".into()
            }
            BundlerError::KeyWrite { .. } => "check that the directory exists and is writable".into(),
            BundlerError::Registry(r) => match r {
                RegistryError::Unreachable { registry, .. } => format!(
                    "check that {registry} is up and reachable; for a plain-HTTP registry pass --insecure-registry {registry}"
                ),
                RegistryError::AuthRefused { registry, .. } => {
                    format!("log in with `docker login {registry}` (credentials are read from ~/.docker/config.json or $DOCKER_CONFIG)")
                }
                RegistryError::NotFound { .. } => "check the image name and tag in the compose file, and that it was pushed".into(),
                RegistryError::DigestMismatch { .. } => {
                    "the registry served corrupted content; retry, and if it persists ask the registry's operator to check its storage"
                        .into()
                }
                RegistryError::NoPlatform { .. } => "build and push a linux/amd64 variant of the image".into(),
                RegistryError::BadReference { .. } => "write the image as [registry/]name[:tag][@sha256:digest]".into(),
                RegistryError::Write { .. } => "check free space and permissions of the cache directory (--cache-dir)".into(),
                RegistryError::Other { .. } => return None,
            },
            BundlerError::ImageUnsupported { reason, .. } if reason.contains("zstd") => {
                "Docker 20.10 cannot load zstd layers; push a gzip variant (e.g. `docker buildx build --output type=image,compression=gzip`)"
                    .into()
            }
            BundlerError::ImageUnsupported { .. } => "rebuild the image for linux/amd64 with gzip layers".into(),
            BundlerError::Output { source, .. } | BundlerError::Cache { source, .. }
                if io_exit(source) == Exit::DiskFull =>
            {
                "free some space or choose another output directory; no partial bundle was left behind".into()
            }
            BundlerError::Archive(ArchiveError::Write { source, .. }) if io_exit(source) == Exit::DiskFull => {
                "free some space or choose another output directory; no partial bundle was left behind".into()
            }
            BundlerError::Archive(ArchiveError::Changed { .. } | ArchiveError::Read { .. }) => {
                "a cached blob is damaged: delete the cache directory and build again".into()
            }
            BundlerError::Output { .. } | BundlerError::Cache { .. } | BundlerError::Archive(_) => {
                "check that the directory exists and is writable".into()
            }
            BundlerError::Bundle { source, .. } => return source.hint(),
            BundlerError::Usage(_) => return None,
            BundlerError::MissingTool { hint, .. } => (*hint).into(),
            BundlerError::ToolFailed { .. } => {
                "check free space in --output-dir and that every bundle file is readable; no image was left half written".into()
            }
        })
    }
}
