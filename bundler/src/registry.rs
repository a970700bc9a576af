//! Where images come from. [`ImageSource`] is the seam; [`OciRegistry`] is the real one and the
//! only code that imports `oci-client`.

use std::path::Path;
use std::time::Duration;

use manifests::Digest;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::manifest::{
    IMAGE_MANIFEST_LIST_MEDIA_TYPE, IMAGE_MANIFEST_MEDIA_TYPE, OCI_IMAGE_INDEX_MEDIA_TYPE, OCI_IMAGE_MEDIA_TYPE,
};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use serde::Deserialize;
use tokio::io::AsyncWriteExt;

/// A registry problem, naming the image or registry.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// Connection refused, DNS, TLS, timeout.
    #[error("cannot reach registry {registry} for {reference}: {message}")]
    Unreachable {
        /// Registry host.
        registry: String,
        /// Image.
        reference: String,
        /// The transport error.
        message: String,
    },
    /// Credentials missing or refused.
    #[error("registry {registry} refused access to {reference}: {message}")]
    AuthRefused {
        /// Registry host.
        registry: String,
        /// Image.
        reference: String,
        /// What the registry said.
        message: String,
    },
    /// The tag or repository does not exist.
    #[error("image {reference} does not exist in registry {registry}")]
    NotFound {
        /// Registry host.
        registry: String,
        /// Image.
        reference: String,
    },
    /// The content does not match its digest.
    #[error("registry {registry} sent {what} for {reference} that does not match its digest: {message}")]
    DigestMismatch {
        /// Registry host.
        registry: String,
        /// Image.
        reference: String,
        /// Manifest or blob digest.
        what: String,
        /// Detail.
        message: String,
    },
    /// The index has no linux/amd64 manifest.
    #[error("image {reference} has no linux/amd64 variant (it has: {available})")]
    NoPlatform {
        /// Image.
        reference: String,
        /// Platforms found.
        available: String,
    },
    /// The reference does not parse.
    #[error("`{reference}` is not a valid image reference: {message}")]
    BadReference {
        /// Image.
        reference: String,
        /// Why.
        message: String,
    },
    /// Writing the blob to the cache failed.
    #[error("writing {path} failed: {source}")]
    Write {
        /// File.
        path: std::path::PathBuf,
        /// Error.
        source: std::io::Error,
    },
    /// Anything else the registry answered.
    #[error("registry {registry} failed for {reference}: {message}")]
    Other {
        /// Registry host.
        registry: String,
        /// Image.
        reference: String,
        /// Detail.
        message: String,
    },
}

/// A platform manifest, byte for byte as the registry served it.
#[derive(Debug, Clone)]
pub struct ResolvedManifest {
    /// Digest of the multi-arch index, when the tag named one.
    pub index_digest: Option<Digest>,
    /// Digest of `raw`.
    pub digest: Digest,
    /// The raw manifest bytes.
    pub raw: Vec<u8>,
}

/// A source of images.
#[allow(async_fn_in_trait, reason = "used with concrete types in one task; no Send bound needed")]
pub trait ImageSource {
    /// Resolve a reference (tag or digest) to its linux/amd64 image manifest.
    async fn resolve(&self, reference: &str) -> Result<ResolvedManifest, RegistryError>;
    /// Stream a blob of `reference`'s repository to `dest`, verifying its digest; `progress` gets
    /// byte counts as they arrive. `dest` exists only if the whole blob arrived and matched.
    async fn fetch_blob(
        &self,
        reference: &str,
        digest: &Digest,
        dest: &Path,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<(), RegistryError>;
}

/// An OCI distribution registry, with credentials from `~/.docker/config.json`.
pub struct OciRegistry {
    client: Client,
}

const ACCEPT: &[&str] =
    &[OCI_IMAGE_INDEX_MEDIA_TYPE, IMAGE_MANIFEST_LIST_MEDIA_TYPE, OCI_IMAGE_MEDIA_TYPE, IMAGE_MANIFEST_MEDIA_TYPE];

impl OciRegistry {
    /// A client; `insecure` lists `host:port` registries reached over plain HTTP.
    ///
    /// # Errors
    /// If the HTTP client cannot be built.
    pub fn new(insecure: Vec<String>) -> Result<Self, RegistryError> {
        let config = ClientConfig {
            protocol: if insecure.is_empty() { ClientProtocol::Https } else { ClientProtocol::HttpsExcept(insecure) },
            connect_timeout: Some(Duration::from_secs(15)),
            read_timeout: Some(Duration::from_secs(120)),
            ..Default::default()
        };
        let client = Client::try_from(config).map_err(|e| RegistryError::Other {
            registry: String::new(),
            reference: String::new(),
            message: e.to_string(),
        })?;
        Ok(Self { client })
    }

    fn parse(reference: &str) -> Result<Reference, RegistryError> {
        reference
            .parse::<Reference>()
            .map_err(|e| RegistryError::BadReference { reference: reference.to_string(), message: e.to_string() })
    }

    /// Credentials for a registry from the docker config (anonymous when there are none).
    fn auth(reference: &Reference) -> RegistryAuth {
        match docker_credential::get_credential(reference.resolve_registry()) {
            Ok(docker_credential::DockerCredential::UsernamePassword(u, p)) => RegistryAuth::Basic(u, p),
            Ok(docker_credential::DockerCredential::IdentityToken(_)) => {
                tracing::warn!(
                    "identity tokens in the docker config are not supported for {}; trying anonymous access",
                    reference.resolve_registry()
                );
                RegistryAuth::Anonymous
            }
            Err(_) => RegistryAuth::Anonymous,
        }
    }

    fn classify(reference: &Reference, err: OciDistributionError) -> RegistryError {
        let registry = reference.registry().to_string();
        let whole = reference.whole();
        match err {
            OciDistributionError::AuthenticationFailure(m) => {
                RegistryError::AuthRefused { registry, reference: whole, message: m }
            }
            OciDistributionError::UnauthorizedError { url } => {
                RegistryError::AuthRefused { registry, reference: whole, message: format!("401 from {url}") }
            }
            OciDistributionError::ImageManifestNotFoundError(_) => {
                RegistryError::NotFound { registry, reference: whole }
            }
            OciDistributionError::RegistryError { envelope, url } => {
                if envelope.errors.iter().any(|e| {
                    matches!(
                        e.code,
                        OciErrorCode::ManifestUnknown | OciErrorCode::NameUnknown | OciErrorCode::BlobUnknown
                    )
                }) {
                    RegistryError::NotFound { registry, reference: whole }
                } else if envelope
                    .errors
                    .iter()
                    .any(|e| matches!(e.code, OciErrorCode::Unauthorized | OciErrorCode::Denied))
                {
                    RegistryError::AuthRefused { registry, reference: whole, message: format!("{envelope} ({url})") }
                } else {
                    RegistryError::Other { registry, reference: whole, message: format!("{envelope} ({url})") }
                }
            }
            OciDistributionError::ServerError { code: 404, .. } => {
                RegistryError::NotFound { registry, reference: whole }
            }
            OciDistributionError::ServerError { code: 401 | 403, url, message } => {
                RegistryError::AuthRefused { registry, reference: whole, message: format!("{message} ({url})") }
            }
            OciDistributionError::RequestError(e) => {
                RegistryError::Unreachable { registry, reference: whole, message: manifests::display::error_chain(&e) }
            }
            OciDistributionError::DigestError(e) => RegistryError::DigestMismatch {
                registry,
                reference: whole,
                what: "content".into(),
                message: e.to_string(),
            },
            other => RegistryError::Other { registry, reference: whole, message: other.to_string() },
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct IndexDoc {
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<Vec<IndexEntry>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct IndexEntry {
    digest: String,
    platform: Option<Platform>,
}

#[derive(Deserialize)]
struct Platform {
    architecture: String,
    os: String,
}

impl ImageSource for OciRegistry {
    async fn resolve(&self, reference: &str) -> Result<ResolvedManifest, RegistryError> {
        let parsed = Self::parse(reference)?;
        let auth = Self::auth(&parsed);
        let (raw, digest) =
            self.client.pull_manifest_raw(&parsed, &auth, ACCEPT).await.map_err(|e| Self::classify(&parsed, e))?;
        let bad_digest = |d: &str| RegistryError::DigestMismatch {
            registry: parsed.registry().to_string(),
            reference: reference.to_string(),
            what: "a manifest".into(),
            message: format!("unparsable digest {d}"),
        };
        let doc: IndexDoc = serde_json::from_slice(&raw).map_err(|e| RegistryError::Other {
            registry: parsed.registry().to_string(),
            reference: reference.to_string(),
            message: format!("the manifest is not JSON: {e}"),
        })?;
        let is_index = doc.manifests.is_some()
            || matches!(doc.media_type.as_deref(), Some(OCI_IMAGE_INDEX_MEDIA_TYPE | IMAGE_MANIFEST_LIST_MEDIA_TYPE));
        if !is_index {
            let digest = digest.parse().map_err(|_| bad_digest(&digest))?;
            return Ok(ResolvedManifest { index_digest: None, digest, raw: raw.to_vec() });
        }
        let index_digest: Digest = digest.parse().map_err(|_| bad_digest(&digest))?;
        let entries = doc.manifests.unwrap_or_default();
        let chosen = entries
            .iter()
            .find(|e| e.platform.as_ref().is_some_and(|p| p.os == "linux" && p.architecture == "amd64"))
            .ok_or_else(|| RegistryError::NoPlatform {
                reference: reference.to_string(),
                available: entries
                    .iter()
                    .filter_map(|e| e.platform.as_ref().map(|p| format!("{}/{}", p.os, p.architecture)))
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
        let pinned = parsed.clone_with_digest(chosen.digest.clone());
        let (raw, digest) =
            self.client.pull_manifest_raw(&pinned, &auth, ACCEPT).await.map_err(|e| Self::classify(&parsed, e))?;
        let digest: Digest = digest.parse().map_err(|_| bad_digest(&digest))?;
        if Digest::of(&raw) != digest || digest.to_string() != chosen.digest {
            return Err(RegistryError::DigestMismatch {
                registry: parsed.registry().to_string(),
                reference: reference.to_string(),
                what: "the platform manifest".into(),
                message: format!("index says {}, content hashes to {}", chosen.digest, Digest::of(&raw)),
            });
        }
        Ok(ResolvedManifest { index_digest: Some(index_digest), digest, raw: raw.to_vec() })
    }

    async fn fetch_blob(
        &self,
        reference: &str,
        digest: &Digest,
        dest: &Path,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<(), RegistryError> {
        let parsed = Self::parse(reference)?;
        let auth = Self::auth(&parsed);
        // pull_blob does not authenticate by itself.
        self.client.store_auth_if_needed(parsed.resolve_registry(), &auth).await;
        let partial = dest.with_extension("partial");
        let write_err = |source| RegistryError::Write { path: partial.clone(), source };
        let file = tokio::fs::File::create(&partial).await.map_err(write_err)?;
        let mut writer = ProgressWriter { inner: tokio::io::BufWriter::with_capacity(1 << 20, file), progress };
        let digest_text = digest.to_string();
        let result = self.client.pull_blob(&parsed, digest_text.as_str(), &mut writer).await;
        if let Err(e) = result {
            let _ = tokio::fs::remove_file(&partial).await;
            return Err(match e {
                OciDistributionError::IoError(source) => RegistryError::Write { path: partial.clone(), source },
                other => Self::classify(&parsed, other),
            });
        }
        writer.inner.flush().await.map_err(write_err)?;
        drop(writer);
        // pull_blob checked the digest of what it received. The cache file is neither fsynced nor
        // hashed again here: a later build hashes every cache file from an earlier run as it
        // copies it, and drops one that no longer matches (a torn write after a crash), so the
        // build after that fetches it again.
        tokio::fs::rename(&partial, dest)
            .await
            .map_err(|source| RegistryError::Write { path: dest.to_path_buf(), source })
    }
}

struct ProgressWriter<'a, W> {
    inner: W,
    progress: &'a (dyn Fn(u64) + Sync),
}

impl<W: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for ProgressWriter<'_, W> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let poll = std::pin::Pin::new(&mut self.inner).poll_write(cx, buf);
        if let std::task::Poll::Ready(Ok(n)) = poll {
            (self.progress)(n as u64);
        }
        poll
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
