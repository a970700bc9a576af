//! Exit codes shared by `bundler` and `installer`, one enum so that scripts can branch on them.
//! The table in `docs/cli.md` is generated from the same list ([`Exit::ALL`]) and checked by a test.

/// Every exit code either binary returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    /// Success.
    Ok = 0,
    /// An unexpected error (a bug, or an I/O error not covered below).
    Failure = 1,
    /// The command line was wrong (clap's own code).
    Usage = 2,
    /// The compose file is missing, malformed, or uses something the bundle cannot carry.
    SpecInvalid = 10,
    /// A key file is missing, unreadable, malformed, or would be overwritten.
    KeyError = 11,
    /// The registry could not be reached.
    RegistryUnreachable = 12,
    /// The registry refused the credentials.
    RegistryAuth = 13,
    /// An image or tag does not exist in the registry.
    ImageNotFound = 14,
    /// An image cannot be shipped: zstd-only layers, no linux/amd64 variant, unknown media type.
    ImageUnsupported = 15,
    /// The registry sent content that does not match its digest.
    RegistryDigestMismatch = 16,
    /// The output or state directory ran out of space.
    DiskFull = 17,
    /// The bundle is damaged or was changed after signing.
    BundleInvalid = 20,
    /// The signature is missing, bad, or from a key that is not trusted.
    SignatureRejected = 21,
    /// The bundle is valid but refused by policy (other product, older release, expired).
    PolicyRejected = 22,
    /// A split bundle is incomplete: a part is missing or of the wrong size (or a later part was
    /// given instead of part 000); nothing was read past the signature.
    BundleIncomplete = 23,
    /// A preflight check failed; nothing was changed.
    PreflightFailed = 30,
    /// The Docker Engine could not be reached (or went away during the apply).
    DockerUnreachable = 31,
    /// Loading images into Docker failed.
    LoadFailed = 32,
    /// A migration (or backup) job exited non-zero.
    MigrationFailed = 33,
    /// A service did not become healthy in time.
    HealthGateFailed = 34,
    /// Docker refused to create or start a container (its message says why).
    StartFailed = 35,
    /// Another apply holds the state directory's lock.
    ApplyLocked = 36,
    /// The apply was stopped by Ctrl-C or SIGTERM; running it again resumes.
    Interrupted = 37,
    /// The new release failed (migration, start or health gate) and the previous one was put back.
    RolledBack = 38,
    /// The new release failed and putting the previous one back failed too.
    RollbackFailed = 39,
    /// `installer status`: something is not running or not healthy.
    Unhealthy = 40,
    /// `installer status`: nothing is installed yet.
    NotInstalled = 41,
    /// A copy of the stack's data (snapshot, backup, restore) could not be made or checked;
    /// the services stopped for it run again.
    DataCopyFailed = 42,
    /// `installer restore`: the backup file is damaged, incomplete, or of another product or
    /// release; nothing was changed.
    BackupInvalid = 43,
    /// Preflight: not enough free space on Docker's data root or the state directory.
    PreflightDisk = 50,
    /// Preflight: the Docker Engine is too old for the bundle.
    PreflightDocker = 51,
    /// Preflight: the host's CPU architecture is not the bundle's platform.
    PreflightPlatform = 52,
    /// Preflight: the services' memory limits add up to more than the host has.
    PreflightMemory = 53,
}

impl Exit {
    /// Every code, in order, for documentation and tests.
    pub const ALL: &'static [Exit] = &[
        Exit::Ok,
        Exit::Failure,
        Exit::Usage,
        Exit::SpecInvalid,
        Exit::KeyError,
        Exit::RegistryUnreachable,
        Exit::RegistryAuth,
        Exit::ImageNotFound,
        Exit::ImageUnsupported,
        Exit::RegistryDigestMismatch,
        Exit::DiskFull,
        Exit::BundleInvalid,
        Exit::SignatureRejected,
        Exit::PolicyRejected,
        Exit::BundleIncomplete,
        Exit::PreflightFailed,
        Exit::DockerUnreachable,
        Exit::LoadFailed,
        Exit::MigrationFailed,
        Exit::HealthGateFailed,
        Exit::StartFailed,
        Exit::ApplyLocked,
        Exit::Interrupted,
        Exit::RolledBack,
        Exit::RollbackFailed,
        Exit::Unhealthy,
        Exit::NotInstalled,
        Exit::DataCopyFailed,
        Exit::BackupInvalid,
        Exit::PreflightDisk,
        Exit::PreflightDocker,
        Exit::PreflightPlatform,
        Exit::PreflightMemory,
    ];

    /// The numeric code.
    #[must_use]
    pub fn code(self) -> u8 {
        self as u8
    }

    /// A short machine name (`--json` output, docs).
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Exit::Ok => "ok",
            Exit::Failure => "failure",
            Exit::Usage => "usage",
            Exit::SpecInvalid => "spec-invalid",
            Exit::KeyError => "key-error",
            Exit::RegistryUnreachable => "registry-unreachable",
            Exit::RegistryAuth => "registry-auth",
            Exit::ImageNotFound => "image-not-found",
            Exit::ImageUnsupported => "image-unsupported",
            Exit::RegistryDigestMismatch => "registry-digest-mismatch",
            Exit::DiskFull => "disk-full",
            Exit::BundleInvalid => "bundle-invalid",
            Exit::SignatureRejected => "signature-rejected",
            Exit::PolicyRejected => "policy-rejected",
            Exit::BundleIncomplete => "bundle-incomplete",
            Exit::PreflightFailed => "preflight-failed",
            Exit::DockerUnreachable => "docker-unreachable",
            Exit::LoadFailed => "load-failed",
            Exit::MigrationFailed => "migration-failed",
            Exit::HealthGateFailed => "health-gate-failed",
            Exit::StartFailed => "start-failed",
            Exit::ApplyLocked => "apply-locked",
            Exit::Interrupted => "interrupted",
            Exit::RolledBack => "rolled-back",
            Exit::RollbackFailed => "rollback-failed",
            Exit::Unhealthy => "unhealthy",
            Exit::NotInstalled => "not-installed",
            Exit::DataCopyFailed => "data-copy-failed",
            Exit::BackupInvalid => "backup-invalid",
            Exit::PreflightDisk => "preflight-disk",
            Exit::PreflightDocker => "preflight-docker",
            Exit::PreflightPlatform => "preflight-platform",
            Exit::PreflightMemory => "preflight-memory",
        }
    }
}

/// An error that knows its exit code and, where the user can act, a hint.
pub trait Diagnose {
    /// The exit code this error maps to.
    fn exit(&self) -> Exit;
    /// What the user can do about it, without the `hint: ` prefix.
    fn hint(&self) -> Option<String> {
        None
    }
}

/// Exit code for an I/O error: out of space gets its own code.
#[must_use]
pub fn io_exit(err: &std::io::Error) -> Exit {
    match err.kind() {
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => Exit::DiskFull,
        _ => Exit::Failure,
    }
}

#[cfg(test)]
mod tests {
    use super::Exit;

    /// docs/cli.md documents every exit code, with its number and name.
    #[test]
    fn every_exit_code_is_documented() {
        let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/cli.md")).unwrap();
        for e in Exit::ALL {
            let row = format!("| {} | `{}` |", e.code(), e.name());
            assert!(doc.contains(&row), "docs/cli.md lacks the row `{row}`");
        }
        let mut codes: Vec<u8> = Exit::ALL.iter().map(|e| e.code()).collect();
        codes.dedup();
        assert_eq!(codes.len(), Exit::ALL.len(), "two exit codes share a number");
    }
}
