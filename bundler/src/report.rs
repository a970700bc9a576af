//! Progress callbacks: the library reports, the binary draws (bars on a terminal, plain lines
//! otherwise, nothing with --json). Core code never prints.

/// A phase of a build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Resolving tags to manifests.
    Resolve,
    /// Downloading blobs (bytes).
    Download,
    /// Writing the bundle (bytes).
    Write,
    /// Verifying a bundle (bytes).
    Verify,
}

impl Phase {
    /// Display name.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Phase::Resolve => "resolve",
            Phase::Download => "download",
            Phase::Write => "write",
            Phase::Verify => "verify",
        }
    }
}

/// Receives progress. Every method has a no-op default.
pub trait Reporter: Sync {
    /// A phase starts; `total` bytes (0 when not counted in bytes).
    fn start(&self, _phase: Phase, _total: u64) {}
    /// Bytes done in a phase.
    fn advance(&self, _phase: Phase, _bytes: u64) {}
    /// A phase ends.
    fn finish(&self, _phase: Phase) {}
    /// A line for humans.
    fn message(&self, _text: &str) {}
}

/// Reports nothing.
pub struct Silent;
impl Reporter for Silent {}
