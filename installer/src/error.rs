//! Everything `installer` can fail with: one variant per failure, each with its evidence, its
//! exit code (docs/cli.md) and a hint that says what to do next.

use std::path::PathBuf;

use manifests::exit::io_exit;
use manifests::{BundleError, Diagnose, Exit};

/// An installer failure.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// The bundle failed verification.
    #[error("{path}: {source}")]
    Bundle {
        /// Bundle file.
        path: PathBuf,
        /// What is wrong.
        source: BundleError,
    },
    /// The site registry failed (`installer push`).
    #[error(transparent)]
    Registry {
        /// What happened.
        #[from]
        source: crate::registry::RegistryError,
    },
    /// No trusted key is configured.
    #[error("no trusted public key: none given with --key and none in {keys_dir}")]
    NoTrustedKey {
        /// The keys directory.
        keys_dir: PathBuf,
    },
    /// A key file could not be read or parsed.
    #[error("cannot use public key {path}: {message}")]
    Key {
        /// Key file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// Refused by policy.
    #[error("{0}")]
    Policy(String),
    /// A variable has no value.
    #[error("no value for {names}: {what}")]
    MissingValues {
        /// Variable names.
        names: String,
        /// Description.
        what: String,
    },
    /// The operator's values file is wrong.
    #[error("values file {path}: {message}")]
    Values {
        /// File.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// A preflight check failed.
    #[error("preflight failed: {0}")]
    Preflight(String),
    /// A host check failed (disk, Docker version, engine, platform, memory).
    #[error("preflight check `{check}` failed: {detail}")]
    PreflightCheck {
        /// The check.
        check: &'static str,
        /// What was found.
        detail: String,
        /// Its exit code.
        exit: Exit,
    },
    /// A host port is taken.
    #[error("service `{service}` publishes {ip}:{port}, but that port is already in use on this host")]
    PortInUse {
        /// Service.
        service: String,
        /// Address.
        ip: String,
        /// Port.
        port: u16,
    },
    /// Docker cannot be reached.
    #[error("cannot reach the Docker Engine{during}: {message}")]
    DockerUnreachable {
        /// What was being done.
        during: String,
        /// The transport error.
        message: String,
    },
    /// Docker answered with an error.
    #[error("Docker refused to {action}: {message}")]
    Docker {
        /// What was being done.
        action: String,
        /// Docker's message.
        message: String,
    },
    /// Loading images failed.
    #[error("loading images into Docker failed: {message}")]
    Load {
        /// Docker's message.
        message: String,
    },
    /// A one-shot job failed.
    #[error("{kind} `{service}` failed with exit code {code}; last output:\n{logs}")]
    JobFailed {
        /// Migration, backup, or job.
        kind: &'static str,
        /// Service.
        service: String,
        /// Exit code.
        code: i64,
        /// Last log lines.
        logs: String,
    },
    /// A service did not become healthy.
    #[error("service `{service}` {reason} (health gate {timeout_secs}s); last health output: {last_output}")]
    Unhealthy {
        /// Service.
        service: String,
        /// What happened.
        reason: String,
        /// The timeout.
        timeout_secs: u64,
        /// Last health check output or log lines.
        last_output: String,
    },
    /// Another apply holds the lock.
    #[error("another installer is running on {state_dir} (lock held)")]
    Locked {
        /// State dir.
        state_dir: PathBuf,
    },
    /// The state directory cannot be used.
    #[error("state directory {path}: {source}")]
    State {
        /// Path.
        path: PathBuf,
        /// Error.
        source: std::io::Error,
    },
    /// Interrupted by a signal.
    #[error("interrupted by {0}; the journal records how far the apply got")]
    Interrupted(&'static str),
    /// The new release failed and the previous release was put back.
    #[error("{cause}\nthe previous release was put back: {services} running again{data}")]
    RolledBack {
        /// Why the new release failed.
        cause: Box<InstallError>,
        /// Services restored.
        services: String,
        /// What happened to the data (empty: no snapshot was taken).
        data: String,
    },
    /// The new release failed and the previous one could not be put back.
    #[error("{cause}\nputting the previous release back failed too: {error}")]
    RollbackFailed {
        /// Why the new release failed.
        cause: Box<InstallError>,
        /// Why the rollback failed.
        error: Box<InstallError>,
    },
    /// Nothing installed.
    #[error(
        "project `{project}` already has containers on this host ({}), but {} has no record of installing it \
         (another state directory, or docker compose, did): its releases, values and migration records are elsewhere",
        containers.join(", "),
        state_dir.display()
    )]
    NotOurs {
        /// Compose project.
        project: String,
        /// Its containers.
        containers: Vec<String>,
        /// This state directory.
        state_dir: PathBuf,
    },
    /// A copy of data could not be made or checked.
    #[error("{what}: {message}")]
    Data {
        /// Which data (volume, directory, backup part).
        what: String,
        /// What went wrong.
        message: String,
    },
    /// A backup file that cannot be restored here.
    #[error("backup {path}: {message}")]
    BackupInvalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the part.
        message: String,
    },
    #[error("nothing is installed (no release recorded in {0})")]
    NotInstalled(PathBuf),
    /// Something is not healthy (status).
    #[error("{0}")]
    StatusUnhealthy(String),
}

impl InstallError {
    /// Wrap an I/O error on a state path.
    pub fn state(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| InstallError::State { path, source }
    }
}

impl Diagnose for InstallError {
    fn exit(&self) -> Exit {
        match self {
            InstallError::Bundle { source, .. } => source.exit(),
            InstallError::Registry { source } => match source {
                crate::registry::RegistryError::Unreachable { .. } => Exit::RegistryUnreachable,
                crate::registry::RegistryError::Auth { .. } => Exit::RegistryAuth,
                crate::registry::RegistryError::DigestMismatch { .. } => Exit::RegistryDigestMismatch,
                crate::registry::RegistryError::Bundle { source, .. } => manifests::exit::io_exit(source),
                crate::registry::RegistryError::Refused { .. } | crate::registry::RegistryError::Config(_) => {
                    Exit::Failure
                }
            },
            InstallError::NoTrustedKey { .. } | InstallError::Key { .. } => Exit::SignatureRejected,
            InstallError::Policy(_) | InstallError::NotOurs { .. } => Exit::PolicyRejected,
            InstallError::MissingValues { .. }
            | InstallError::Values { .. }
            | InstallError::Preflight(_)
            | InstallError::PortInUse { .. } => Exit::PreflightFailed,
            InstallError::PreflightCheck { exit, .. } => *exit,
            InstallError::DockerUnreachable { .. } => Exit::DockerUnreachable,
            InstallError::Docker { .. } => Exit::StartFailed,
            InstallError::Load { .. } => Exit::LoadFailed,
            InstallError::JobFailed { .. } => Exit::MigrationFailed,
            InstallError::Unhealthy { .. } => Exit::HealthGateFailed,
            InstallError::Locked { .. } => Exit::ApplyLocked,
            InstallError::Interrupted(_) => Exit::Interrupted,
            InstallError::State { source, .. } => match io_exit(source) {
                Exit::DiskFull => Exit::DiskFull,
                _ => Exit::Failure,
            },
            InstallError::RolledBack { .. } => Exit::RolledBack,
            InstallError::RollbackFailed { .. } => Exit::RollbackFailed,
            InstallError::NotInstalled(_) => Exit::NotInstalled,
            InstallError::Data { .. } => Exit::DataCopyFailed,
            InstallError::BackupInvalid { .. } => Exit::BackupInvalid,
            InstallError::StatusUnhealthy(_) => Exit::Unhealthy,
        }
    }

    fn hint(&self) -> Option<String> {
        Some(match self {
            InstallError::Bundle { source, .. } => return source.hint(),
            InstallError::Registry { source } => match source {
                crate::registry::RegistryError::Unreachable { message, .. } if message.contains("CaUsedAsEndEntity") => {
                    "the registry presents a self-signed CA certificate as its own: TLS libraries refuse that even with --ca; \
                     issue the registry a server certificate signed by that CA (basicConstraints CA:FALSE) and pass the CA with --ca"
                        .into()
                }
                crate::registry::RegistryError::Unreachable { registry, message } if message.contains("certificate") => format!(
                    "the registry's TLS certificate is not trusted here: pass its CA with --ca FILE (PEM), or --plain-http if {registry} serves plain HTTP"
                ),
                crate::registry::RegistryError::Unreachable { registry, .. } => format!(
                    "check that {registry} is up and reachable from this host (firewall, port); for a registry without TLS add --plain-http"
                ),
                crate::registry::RegistryError::Auth { registry, .. } => format!(
                    "log in first (`docker login {registry}` writes the credentials the installer reads from $DOCKER_CONFIG/config.json or ~/.docker/config.json; credential helpers are not read), and check that the account may push"
                ),
                crate::registry::RegistryError::DigestMismatch { .. } => {
                    "the registry stores the image differently than it was sent (a proxy or a registry that converts manifests); push to a registry that keeps manifests as sent (Docker Distribution, Harbor)".into()
                }
                crate::registry::RegistryError::Refused { .. } => {
                    "the registry's message says why; a re-run sends only what is still missing".into()
                }
                crate::registry::RegistryError::Bundle { .. } => {
                    "the bundle could not be read again after it was verified: is the medium still mounted? Nothing was tagged".into()
                }
                crate::registry::RegistryError::Config(_) => return None,
            },
            InstallError::NoTrustedKey { keys_dir } => format!(
                "pass the vendor's public key with --key FILE (it is then kept in {}); compare its fingerprint with the vendor's",
                keys_dir.display()
            ),
            InstallError::Key { .. } => "check the path; the file must be the vendor's minisign public key".into(),
            InstallError::Policy(_) => "check that this is the bundle you meant to install".into(),
            InstallError::NotOurs { .. } => "run with the state directory that installed it (--state-dir or \
                INSTALLER_STATE_DIR; the default is /var/lib/installer). If that is lost, or the stack was started \
                with docker compose, pass --adopt to take it over: unchanged containers are kept, and a migration \
                of this release runs again unless its finished container is still there, so make sure the \
                migrations are safe to repeat"
                .into(),
            InstallError::MissingValues { .. } => {
                "pass them in a file with --values FILE (lines NAME=value) or as environment variables".into()
            }
            InstallError::Values { .. } => "write one NAME=value per line; lines starting with # are ignored".into(),
            InstallError::Preflight(_) => "fix the host and run the same command again; nothing was changed".into(),
            InstallError::PreflightCheck { check, .. } => match *check {
                "disk" => "free space there (`installer prune` removes the images of releases older than the one \
                           rollback needs; `docker image prune` removes unused images), or move Docker's data root \
                           to a larger disk; nothing was changed"
                    .into(),
                "docker" => "upgrade the Docker Engine on this host; nothing was changed".into(),
                "engine" => "run Podman's service under systemd so that its healthchecks run, or install Docker; \
                             nothing was changed"
                    .into(),
                "platform" => "this bundle is for another CPU architecture; ask the vendor for the right one".into(),
                _ => "give the VM more memory, or ask the vendor about lower limits; nothing was changed".into(),
            },
            InstallError::PortInUse { port, .. } => format!(
                "find the process with `ss -ltnp 'sport = :{port}'` and stop it, then run the same command again; nothing was changed"
            ),
            InstallError::DockerUnreachable { .. } => {
                "start Docker (`systemctl start docker` or `dockerd &`) and check DOCKER_HOST, then run the same command again: \
                 the apply resumes where it stopped"
                    .into()
            }
            InstallError::Docker { .. } => "see Docker's message above; fix it and run the same command again".into(),
            InstallError::Load { .. } => {
                "check free space on Docker's data root (`docker info`), then run the same command again".into()
            }
            InstallError::JobFailed { service, .. } => format!(
                "services that depend on `{service}` were not started; see `docker logs` of the job, fix the cause, \
                 and run the same command again"
            ),
            InstallError::Unhealthy { service, .. } => format!(
                "check `docker logs` and `docker inspect` of `{service}`; fix the cause and run the same command again"
            ),
            InstallError::Locked { .. } => {
                "wait for the other installer to finish (check with `ps aux | grep installer`); the lock frees itself when it exits"
                    .into()
            }
            InstallError::State { .. } => "check free space and permissions of the state directory".into(),
            InstallError::Interrupted(_) => "run the same command again: it resumes and never repeats a finished migration".into(),
            InstallError::RolledBack { data, .. } if data.is_empty() => {
                "the previous release is running again; no migration of this release had run (or snapshots are off: \
                 then their data changes stay); fix the cause shown above and apply the bundle again"
                    .into()
            }
            InstallError::RolledBack { .. } => {
                "the previous release is running again on its own data; fix the cause shown above and apply the bundle \
                 again"
                    .into()
            }
            InstallError::RollbackFailed { .. } => {
                "the previous release's containers are named `<project>-<service>-1-previous`; start them with \
                 `docker start`, or fix the cause and apply again"
                    .into()
            }
            InstallError::NotInstalled(_) => "install a bundle first with `installer apply BUNDLE`".into(),
            InstallError::Data { .. } => "the services stopped for the copy were started again and no migration ran; \
                check free space on Docker's data root, then run the same command again"
                .into(),
            InstallError::BackupInvalid { .. } => "nothing was changed; use an intact copy of the backup file (compare \
                its size and sha256 with the original), or one made from this product and release"
                .into(),
            InstallError::StatusUnhealthy(_) => "see `docker logs` of the services listed above".into(),
        })
    }
}
