//! [`HttpRegistry`]: the registry HTTP API v2 (the distribution spec) over hyper, TLS by rustls
//! (ring; the host's CA store plus `--ca`), credentials from the Docker config file (basic auth,
//! or the bearer-token exchange basic credentials open). Every call is retried (3 tries, backoff)
//! on connection errors and 5xx; an upload that fails is sent again from the start.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, LOCATION, WWW_AUTHENTICATE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use manifests::Digest;
use manifests::digest::Hasher;

use super::{BlobSource, Registry, RegistryError};

type Body = BoxBody<Bytes, std::io::Error>;
type Connector = hyper_rustls::HttpsConnector<HttpConnector>;

const TRIES: u32 = 3;
/// How long one request may take, an upload excepted (it takes as long as its bytes do).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// How to reach the registry.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `http://` instead of `https://`.
    pub plain_http: bool,
    /// A PEM file of CA certificates to trust besides the host's.
    pub ca: Option<PathBuf>,
    /// The Docker config directory (`$DOCKER_CONFIG`, default `~/.docker`).
    pub docker_config: Option<PathBuf>,
}

/// A registry reached over HTTP(S).
pub struct HttpRegistry {
    host: String,
    base: String,
    client: Client<Connector, Body>,
    basic: Option<String>,
    /// Authorization header per repository once a challenge was answered.
    auth: Mutex<HashMap<String, HeaderValue>>,
}

fn empty() -> Body {
    Empty::<Bytes>::new().map_err(|never| match never {}).boxed()
}

fn full(bytes: Vec<u8>) -> Body {
    Full::new(Bytes::from(bytes)).map_err(|never| match never {}).boxed()
}

impl HttpRegistry {
    /// A client for `host` (`host[:port]`).
    ///
    /// # Errors
    /// An unreadable CA file or Docker config.
    pub fn new(host: &str, opts: &Options) -> Result<Self, RegistryError> {
        let mut roots = rustls::RootCertStore::empty();
        // The host's store may be empty on a minimal VM: a site registry usually comes with --ca.
        for cert in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(cert);
        }
        if let Some(ca) = &opts.ca {
            use rustls::pki_types::CertificateDer;
            use rustls::pki_types::pem::PemObject;
            let certs: Vec<CertificateDer<'static>> =
                CertificateDer::pem_file_iter(ca).and_then(|it| it.collect::<Result<Vec<_>, _>>()).map_err(|e| {
                    RegistryError::Config(format!("--ca {}: not a PEM certificate file ({e})", ca.display()))
                })?;
            if certs.is_empty() {
                return Err(RegistryError::Config(format!("--ca {}: no certificate in it", ca.display())));
            }
            for cert in certs {
                roots
                    .add(cert)
                    .map_err(|e| RegistryError::Config(format!("--ca {}: unusable certificate ({e})", ca.display())))?;
            }
        }
        // Explicit provider: the workspace also builds rustls with aws-lc (the bundler's reqwest).
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| RegistryError::Config(format!("TLS setup: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(Duration::from_secs(15)));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new()).build(connector);
        let scheme = if opts.plain_http { "http" } else { "https" };
        Ok(Self {
            host: host.to_string(),
            base: format!("{scheme}://{host}"),
            client,
            basic: basic_credentials(host, opts.docker_config.as_deref())?,
            auth: Mutex::new(HashMap::new()),
        })
    }

    /// The basic credentials for this registry from the Docker config (`user:password` in
    /// base64), to hand to Swarm nodes that pull from it.
    #[must_use]
    pub fn credentials(&self) -> Option<String> {
        self.basic.clone()
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Send what `make` builds, with the repository's credentials; answer a 401 challenge once;
    /// retry connection errors and 5xx.
    async fn send(
        &self,
        repository: &str,
        what: &str,
        timeout: Option<Duration>,
        make: &(dyn Fn() -> Result<Request<Body>, RegistryError> + Sync),
    ) -> Result<Response<Incoming>, RegistryError> {
        let mut challenged = false;
        let mut attempt = 0;
        loop {
            let mut req = make()?;
            let cached = self.auth.lock().expect("auth lock").get(repository).cloned();
            if let Some(h) = cached.or_else(|| self.basic_header()) {
                req.headers_mut().insert(AUTHORIZATION, h);
            }
            let fut = self.client.request(req);
            let result: Result<Response<Incoming>, String> = match timeout {
                Some(t) => match tokio::time::timeout(t, fut).await {
                    Ok(r) => r.map_err(|e| error_chain(&e)),
                    Err(_) => Err(format!("no answer in {} s", t.as_secs())),
                },
                None => fut.await.map_err(|e| error_chain(&e)),
            };
            match result {
                Err(message) => {
                    attempt += 1;
                    if attempt >= TRIES {
                        return Err(RegistryError::Unreachable { registry: self.host.clone(), message });
                    }
                    tracing::warn!("{what}: {message} (try {attempt} of {TRIES})");
                }
                Ok(resp) if resp.status() == StatusCode::UNAUTHORIZED && !challenged => {
                    challenged = true;
                    let challenge =
                        resp.headers().get(WWW_AUTHENTICATE).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
                    let header = self.answer(&challenge, repository, what).await?;
                    self.auth.lock().expect("auth lock").insert(repository.to_string(), header);
                    continue;
                }
                Ok(resp) if resp.status().is_server_error() && attempt + 1 < TRIES => {
                    attempt += 1;
                    tracing::warn!("{what}: the registry answered {} (try {attempt} of {TRIES})", resp.status());
                }
                Ok(resp) => return Ok(resp),
            }
            tokio::time::sleep(Duration::from_millis(500 << attempt)).await;
        }
    }

    fn basic_header(&self) -> Option<HeaderValue> {
        self.basic.as_ref().and_then(|b| HeaderValue::from_str(&format!("Basic {b}")).ok())
    }

    /// The Authorization header for a `WWW-Authenticate` challenge: basic credentials as they
    /// are, or a bearer token fetched from the realm with them.
    async fn answer(&self, challenge: &str, repository: &str, what: &str) -> Result<HeaderValue, RegistryError> {
        let refused = |message: String| RegistryError::Auth {
            registry: self.host.clone(),
            what: what.to_string(),
            status: 401,
            message,
        };
        if challenge.to_ascii_lowercase().starts_with("basic") {
            return self
                .basic_header()
                .ok_or_else(|| refused(format!("no credentials for {} in the Docker config", self.host)));
        }
        let Some(params) = challenge.strip_prefix("Bearer ").or_else(|| challenge.strip_prefix("bearer ")) else {
            return Err(refused(format!("unsupported challenge `{challenge}`")));
        };
        let params = parse_challenge(params);
        let realm = params.get("realm").ok_or_else(|| refused(format!("no realm in `{challenge}`")))?;
        let mut url = format!("{realm}?scope=repository:{repository}:pull,push");
        if let Some(service) = params.get("service") {
            url.push_str(&format!("&service={service}"));
        }
        let mut req = Request::get(&url).body(empty()).map_err(|e| refused(e.to_string()))?;
        if let Some(h) = self.basic_header() {
            req.headers_mut().insert(AUTHORIZATION, h);
        }
        let resp = tokio::time::timeout(REQUEST_TIMEOUT, self.client.request(req))
            .await
            .map_err(|_| RegistryError::Unreachable { registry: realm.clone(), message: "no answer".into() })?
            .map_err(|e| RegistryError::Unreachable { registry: realm.clone(), message: error_chain(&e) })?;
        let status = resp.status();
        let body = read_body(resp).await;
        if !status.is_success() {
            return Err(RegistryError::Auth {
                registry: self.host.clone(),
                what: format!("a token from {realm}"),
                status: status.as_u16(),
                message: registry_message(&body),
            });
        }
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let token =
            v["token"].as_str().or_else(|| v["access_token"].as_str()).ok_or_else(|| refused("no token".into()))?;
        HeaderValue::from_str(&format!("Bearer {token}")).map_err(|e| refused(e.to_string()))
    }

    async fn fail(&self, resp: Response<Incoming>, what: &str) -> RegistryError {
        let status = resp.status().as_u16();
        let message = registry_message(&read_body(resp).await);
        if status == 401 || status == 403 {
            RegistryError::Auth { registry: self.host.clone(), what: what.to_string(), status, message }
        } else {
            RegistryError::Refused { registry: self.host.clone(), what: what.to_string(), status, message }
        }
    }

    fn location(&self, resp: &Response<Incoming>) -> Option<String> {
        let l = resp.headers().get(LOCATION)?.to_str().ok()?;
        Some(if l.starts_with('/') { self.url(l) } else { l.to_string() })
    }
}

impl Registry for HttpRegistry {
    fn name(&self) -> &str {
        &self.host
    }

    async fn has_blob(&self, repository: &str, digest: &Digest) -> Result<bool, RegistryError> {
        let url = self.url(&format!("/v2/{repository}/blobs/{digest}"));
        let what = format!("blob {} in {repository}", digest.short());
        let make = || Request::head(&url).body(empty()).map_err(|e| RegistryError::Config(e.to_string()));
        let resp = self.send(repository, &what, Some(REQUEST_TIMEOUT), &make).await?;
        match resp.status() {
            StatusCode::OK => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(self.fail(resp, &what).await),
        }
    }

    async fn mount_blob(&self, repository: &str, from: &str, digest: &Digest) -> Result<bool, RegistryError> {
        let url = self.url(&format!("/v2/{repository}/blobs/uploads/?mount={digest}&from={from}"));
        let what = format!("mounting blob {} from {from} into {repository}", digest.short());
        let make = || {
            Request::post(&url)
                .header(CONTENT_LENGTH, 0)
                .body(empty())
                .map_err(|e| RegistryError::Config(e.to_string()))
        };
        let resp = self.send(repository, &what, Some(REQUEST_TIMEOUT), &make).await?;
        match resp.status() {
            StatusCode::CREATED => Ok(true),
            // The registry opened an upload instead (it cannot mount): close it, upload normally.
            StatusCode::ACCEPTED => {
                if let Some(l) = self.location(&resp) {
                    let make = || Request::delete(&l).body(empty()).map_err(|e| RegistryError::Config(e.to_string()));
                    let _ = self.send(repository, &what, Some(REQUEST_TIMEOUT), &make).await;
                }
                Ok(false)
            }
            _ => Ok(false),
        }
    }

    async fn put_blob(
        &self,
        repository: &str,
        digest: &Digest,
        size: u64,
        source: &BlobSource,
    ) -> Result<(), RegistryError> {
        let what = format!("blob {} ({size} bytes) to {repository}", digest.short());
        let start_url = self.url(&format!("/v2/{repository}/blobs/uploads/"));
        let mut last = None;
        for attempt in 0..TRIES {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(500 << attempt)).await;
            }
            // Each try opens its own upload: a registry drops a session that failed halfway.
            let make = || {
                Request::post(&start_url)
                    .header(CONTENT_LENGTH, 0)
                    .body(empty())
                    .map_err(|e| RegistryError::Config(e.to_string()))
            };
            let resp = self.send(repository, &what, Some(REQUEST_TIMEOUT), &make).await?;
            if resp.status() != StatusCode::ACCEPTED {
                return Err(self.fail(resp, &what).await);
            }
            let Some(location) = self.location(&resp) else {
                return Err(RegistryError::Refused {
                    registry: self.host.clone(),
                    what,
                    status: 202,
                    message: "no Location for the upload".into(),
                });
            };
            let sep = if location.contains('?') { '&' } else { '?' };
            let put_url = format!("{location}{sep}digest={digest}");
            // One try per upload session: `send` must not replay a PUT into a used session.
            let body = stream_blob(source, *digest, size, &what)?;
            let mut req = Request::put(&put_url)
                .header(CONTENT_LENGTH, size)
                .header(CONTENT_TYPE, "application/octet-stream")
                .body(body)
                .map_err(|e| RegistryError::Config(e.to_string()))?;
            if let Some(h) =
                self.auth.lock().expect("auth lock").get(repository).cloned().or_else(|| self.basic_header())
            {
                req.headers_mut().insert(AUTHORIZATION, h);
            }
            match self.client.request(req).await {
                Ok(resp) if resp.status() == StatusCode::CREATED => return Ok(()),
                Ok(resp) if resp.status().is_server_error() => last = Some(self.fail(resp, &what).await),
                Ok(resp) => return Err(self.fail(resp, &what).await),
                Err(e) => {
                    // A read error of the bundle is no reason to try again.
                    if let Some(io) = find_io(&e)
                        && io.kind() == std::io::ErrorKind::InvalidData
                    {
                        return Err(RegistryError::Bundle { what, source: std::io::Error::other(io.to_string()) });
                    }
                    last = Some(RegistryError::Unreachable { registry: self.host.clone(), message: error_chain(&e) });
                }
            }
            tracing::warn!("{what}: try {} of {TRIES} failed", attempt + 1);
        }
        Err(last.unwrap_or_else(|| RegistryError::Unreachable { registry: self.host.clone(), message: what }))
    }

    async fn manifest_digest(
        &self,
        repository: &str,
        reference: &str,
        media_type: &str,
    ) -> Result<Option<String>, RegistryError> {
        let url = self.url(&format!("/v2/{repository}/manifests/{reference}"));
        let what = format!("manifest {repository}:{reference}");
        let make = || {
            Request::builder()
                .method(Method::HEAD)
                .uri(&url)
                .header(ACCEPT, media_type)
                .body(empty())
                .map_err(|e| RegistryError::Config(e.to_string()))
        };
        let resp = self.send(repository, &what, Some(REQUEST_TIMEOUT), &make).await?;
        match resp.status() {
            StatusCode::OK => {
                Ok(resp.headers().get("docker-content-digest").and_then(|v| v.to_str().ok()).map(str::to_string))
            }
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(self.fail(resp, &what).await),
        }
    }

    async fn put_manifest(
        &self,
        repository: &str,
        reference: &str,
        media_type: &str,
        body: &[u8],
    ) -> Result<String, RegistryError> {
        let url = self.url(&format!("/v2/{repository}/manifests/{reference}"));
        let what = format!("manifest {repository}:{reference}");
        let make = || {
            Request::put(&url)
                .header(CONTENT_TYPE, media_type)
                .body(full(body.to_vec()))
                .map_err(|e| RegistryError::Config(e.to_string()))
        };
        let resp = self.send(repository, &what, Some(REQUEST_TIMEOUT), &make).await?;
        if resp.status() != StatusCode::CREATED {
            return Err(self.fail(resp, &what).await);
        }
        Ok(resp.headers().get("docker-content-digest").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string())
    }
}

/// A body that reads the blob from the bundle in a blocking thread, 1 MiB at a time, and checks
/// its digest at the end: bytes that changed since the bundle was verified end the upload with
/// an error before the registry could accept them.
fn stream_blob(source: &BlobSource, digest: Digest, size: u64, what: &str) -> Result<Body, RegistryError> {
    let mut reader = source().map_err(|e| RegistryError::Bundle { what: what.to_string(), source: e })?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(4);
    tokio::task::spawn_blocking(move || {
        let mut hasher = Some(Hasher::new());
        let mut left = size;
        while left > 0 {
            let mut buf = vec![0u8; usize::try_from(left.min(1 << 20)).unwrap_or(1 << 20)];
            match reader.read(&mut buf) {
                Ok(0) => {
                    let _ = tx.blocking_send(Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        "the bundle ended early",
                    )));
                    return;
                }
                Ok(n) => {
                    buf.truncate(n);
                    if let Some(h) = hasher.as_mut() {
                        h.update(&buf);
                    }
                    left -= n as u64;
                    // The last chunk goes out only once the whole blob matched.
                    if left == 0 && hasher.take().map(Hasher::finish) != Some(digest) {
                        let _ = tx.blocking_send(Err(std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            "the blob changed since the bundle was verified",
                        )));
                        return;
                    }
                    if tx.blocking_send(Ok(Frame::data(Bytes::from(buf)))).is_err() {
                        return;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let _ = tx.blocking_send(Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string())));
                    return;
                }
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
    Ok(StreamBody::new(stream).boxed())
}

async fn read_body(resp: Response<Incoming>) -> Vec<u8> {
    match http_body_util::Limited::new(resp.into_body(), 64 << 10).collect().await {
        Ok(c) => c.to_bytes().to_vec(),
        Err(_) => Vec::new(),
    }
}

/// The registry's own error text (`{"errors":[{"code","message"}]}`), else the body.
fn registry_message(body: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let errors: Vec<String> = v["errors"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| format!("{} {}", e["code"].as_str().unwrap_or(""), e["message"].as_str().unwrap_or("")))
                .collect()
        })
        .unwrap_or_default();
    if errors.is_empty() { String::from_utf8_lossy(body).trim().chars().take(300).collect() } else { errors.join("; ") }
}

fn parse_challenge(params: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut rest = params;
    while let Some((key, after)) = rest.split_once('=') {
        let key = key.trim().trim_start_matches(',').trim().to_string();
        let (value, tail) = if let Some(quoted) = after.strip_prefix('"') {
            quoted.split_once('"').unwrap_or((quoted, ""))
        } else {
            after.split_once(',').unwrap_or((after, ""))
        };
        out.insert(key, value.to_string());
        rest = tail.trim_start_matches(',');
    }
    out
}

/// `user:password` (base64) for `host` from the Docker config file's `auths`.
fn basic_credentials(host: &str, dir: Option<&Path>) -> Result<Option<String>, RegistryError> {
    let dir = dir
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os("DOCKER_CONFIG").map(PathBuf::from))
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker")));
    let Some(path) = dir.map(|d| d.join("config.json")) else { return Ok(None) };
    let Ok(text) = std::fs::read_to_string(&path) else { return Ok(None) };
    let v: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| RegistryError::Config(format!("{}: not valid JSON ({e})", path.display())))?;
    let auths = v["auths"].as_object();
    let entry = auths.and_then(|a| {
        [host.to_string(), format!("https://{host}"), format!("http://{host}"), format!("https://{host}/v2/")]
            .iter()
            .find_map(|k| a.get(k))
    });
    let Some(entry) = entry else { return Ok(None) };
    if let Some(auth) = entry["auth"].as_str().filter(|s| !s.is_empty()) {
        return Ok(Some(auth.to_string()));
    }
    match (entry["username"].as_str(), entry["password"].as_str()) {
        (Some(u), Some(p)) => Ok(Some(base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}")))),
        _ => Ok(None),
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(&format!(": {c}"));
        cur = c.source();
    }
    s
}

fn find_io<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a std::io::Error> {
    let mut cur: Option<&'a (dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cur {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            return Some(io);
        }
        cur = c.source();
    }
    None
}

#[cfg(test)]
mod tests {
    #[test]
    fn bearer_challenges_are_parsed() {
        let p = super::parse_challenge(
            r#"realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull""#,
        );
        assert_eq!(p["realm"], "https://auth.example/token");
        assert_eq!(p["service"], "registry.example");
        assert_eq!(p["scope"], "repository:a/b:pull");
    }

    #[test]
    fn credentials_come_from_the_docker_config() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("config.json"),
            r#"{"auths":{"reg.site:5000":{"auth":"Y2k6cHc="},"https://other":{"username":"u","password":"p"}}}"#,
        )
        .unwrap();
        assert_eq!(super::basic_credentials("reg.site:5000", Some(dir.path())).unwrap().as_deref(), Some("Y2k6cHc="));
        assert_eq!(super::basic_credentials("other", Some(dir.path())).unwrap().as_deref(), Some("dTpw"));
        assert_eq!(super::basic_credentials("none", Some(dir.path())).unwrap(), None);
    }
}
