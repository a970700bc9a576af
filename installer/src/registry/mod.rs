//! The site's container registry: the one seam to it ([`Registry`]), where the images of a
//! bundle are pushed byte for byte (`installer push`) for Swarm or Kubernetes to pull.
//!
//! Why not through dockerd: `docker push` of an image that arrived by `docker load` compresses
//! its layers again, so layer and manifest digests change and the bundle's pins no longer hold
//! (multinode.md §3). The bundle's own blobs and manifests are sent as they are instead.

pub mod http;

use std::io;

use manifests::Digest;

/// Where images go: `HOST[:PORT][/PREFIX]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    /// `host[:port]`.
    pub host: String,
    /// Path prefix inside the registry (may be empty).
    pub prefix: String,
}

impl Destination {
    /// Parse `HOST[:PORT][/PREFIX]`.
    ///
    /// # Errors
    /// An empty host, a scheme, or characters a repository path cannot hold.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.contains("://") {
            return Err(format!(
                "`{text}`: write the registry without a scheme (HOST[:PORT][/PREFIX]); use --plain-http for http"
            ));
        }
        let (host, prefix) = text.split_once('/').unwrap_or((text, ""));
        let prefix = prefix.trim_matches('/').to_string();
        if host.is_empty() {
            return Err(format!("`{text}`: no registry host"));
        }
        if !prefix.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-/".contains(c)) {
            return Err(format!(
                "`{text}`: a repository prefix holds only lower-case letters, digits, `.`, `_`, `-` and `/`"
            ));
        }
        Ok(Self { host: host.to_string(), prefix })
    }

    /// The repository an image goes to: the prefix, then its path without the source registry.
    #[must_use]
    pub fn repository(&self, image: &ImageRef) -> String {
        if self.prefix.is_empty() { image.path.clone() } else { format!("{}/{}", self.prefix, image.path) }
    }
}

/// A compose image reference, split the way Docker reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// Source registry (`docker.io` when none is written).
    pub registry: String,
    /// Repository path (`library/postgres` for `postgres`, as Docker normalizes it).
    pub path: String,
    /// Tag, when one is written (or implied: `latest` without tag and digest).
    pub tag: Option<String>,
}

impl ImageRef {
    /// Parse `[registry/]path[:tag][@digest]`.
    #[must_use]
    pub fn parse(reference: &str) -> Self {
        let (name, digest) = match reference.split_once('@') {
            Some((n, d)) => (n, Some(d)),
            None => (reference, None),
        };
        let (name, tag) = match name.rsplit_once(':') {
            Some((n, t)) if !t.contains('/') => (n, Some(t.to_string())),
            _ => (name, None),
        };
        let (registry, path) = match name.split_once('/') {
            Some((first, rest)) if first.contains('.') || first.contains(':') || first == "localhost" => {
                (first.to_string(), rest.to_string())
            }
            _ => ("docker.io".to_string(), name.to_string()),
        };
        let path = if registry == "docker.io" && !path.contains('/') { format!("library/{path}") } else { path };
        let tag = tag.or_else(|| digest.is_none().then(|| "latest".to_string()));
        Self { registry, path, tag }
    }
}

/// Why a registry call failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// No connection (refused, DNS, TLS handshake, timeout).
    #[error("cannot reach the registry {registry}: {message}")]
    Unreachable {
        /// `host[:port]`.
        registry: String,
        /// What happened.
        message: String,
    },
    /// 401/403 after the credentials were offered.
    #[error("the registry {registry} refused access to {what} ({status}): {message}")]
    Auth {
        /// `host[:port]`.
        registry: String,
        /// The object.
        what: String,
        /// HTTP status.
        status: u16,
        /// The registry's error text.
        message: String,
    },
    /// Any other unexpected answer.
    #[error("the registry {registry} answered {status} to {what}: {message}")]
    Refused {
        /// `host[:port]`.
        registry: String,
        /// The request.
        what: String,
        /// HTTP status.
        status: u16,
        /// The registry's error text.
        message: String,
    },
    /// The registry holds other bytes under a digest than the bundle.
    #[error("the registry {registry} returned {actual} for {what}, the bundle has {expected}")]
    DigestMismatch {
        /// `host[:port]`.
        registry: String,
        /// The object.
        what: String,
        /// The bundle's digest.
        expected: Digest,
        /// What came back.
        actual: String,
    },
    /// Reading the bundle failed while sending a blob.
    #[error("reading the bundle for {what}: {source}")]
    Bundle {
        /// The blob.
        what: String,
        /// The error.
        source: io::Error,
    },
    /// Settings that cannot work (a CA file that is no PEM, a bad Docker config).
    #[error("{0}")]
    Config(String),
}

/// What a blob upload reads from: a fresh reader per attempt (an upload that fails halfway is
/// sent again from the start).
pub type BlobSource = Box<dyn Fn() -> io::Result<Box<dyn io::Read + Send>> + Send + Sync>;

/// The registry operations a push needs; [`http::HttpRegistry`] is the real one.
#[allow(async_fn_in_trait, reason = "used with concrete types; no dyn dispatch needed")]
pub trait Registry {
    /// `host[:port]` (for messages).
    fn name(&self) -> &str;
    /// Whether `repository` has the blob.
    async fn has_blob(&self, repository: &str, digest: &Digest) -> Result<bool, RegistryError>;
    /// Link a blob another repository of the same registry has; `false` if the registry cannot.
    async fn mount_blob(&self, repository: &str, from: &str, digest: &Digest) -> Result<bool, RegistryError>;
    /// Upload a blob of `size` bytes; the registry checks its digest.
    async fn put_blob(
        &self,
        repository: &str,
        digest: &Digest,
        size: u64,
        source: &BlobSource,
    ) -> Result<(), RegistryError>;
    /// The digest `reference` (tag or digest) resolves to, if it exists.
    async fn manifest_digest(
        &self,
        repository: &str,
        reference: &str,
        media_type: &str,
    ) -> Result<Option<String>, RegistryError>;
    /// Store a manifest byte for byte under `reference` (a digest or a tag).
    async fn put_manifest(
        &self,
        repository: &str,
        reference: &str,
        media_type: &str,
        body: &[u8],
    ) -> Result<String, RegistryError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_split_as_docker_reads_them() {
        let r = ImageRef::parse("127.0.0.1:5000/stack/db:1");
        assert_eq!((r.registry.as_str(), r.path.as_str(), r.tag.as_deref()), ("127.0.0.1:5000", "stack/db", Some("1")));
        let r = ImageRef::parse("postgres:16");
        assert_eq!(
            (r.registry.as_str(), r.path.as_str(), r.tag.as_deref()),
            ("docker.io", "library/postgres", Some("16"))
        );
        let r = ImageRef::parse("ghcr.io/org/app");
        assert_eq!((r.path.as_str(), r.tag.as_deref()), ("org/app", Some("latest")));
        let d = format!("redis@sha256:{}", "a".repeat(64));
        let r = ImageRef::parse(&d);
        assert_eq!((r.path.as_str(), r.tag), ("library/redis", None));
        let r = ImageRef::parse("localhost/app:2.1");
        assert_eq!((r.registry.as_str(), r.path.as_str()), ("localhost", "app"));
    }

    #[test]
    fn destinations_keep_the_path_under_a_prefix() {
        let d = Destination::parse("registry.site:5000/acme/prod").unwrap();
        assert_eq!(d.host, "registry.site:5000");
        assert_eq!(d.repository(&ImageRef::parse("127.0.0.1:5000/stack/db:1")), "acme/prod/stack/db");
        assert_eq!(Destination::parse("r:5000").unwrap().repository(&ImageRef::parse("nginx:1")), "library/nginx");
        assert!(Destination::parse("https://r").is_err());
        assert!(Destination::parse("r/Upper").is_err());
    }
}
