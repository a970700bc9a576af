//! Progress events. The library emits them; the binary renders them as bars (terminal), plain
//! lines (not a terminal) or one JSON object per line on stdout (`--json`). Core code never prints.

use serde::Serialize;

/// Something happened.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The signature checked out.
    Verified {
        /// Product.
        product: String,
        /// Version.
        version: String,
        /// Release.
        release: u64,
        /// Signing key.
        key_id: String,
    },
    /// A key given with --key is now trusted on this host.
    KeyTrusted {
        /// Key fingerprint.
        fingerprint: String,
    },
    /// Resuming an interrupted apply of the same bundle.
    Resuming {
        /// Steps already done.
        steps_done: usize,
    },
    /// The host checks, before anything changes.
    Preflight {
        /// One line per check.
        checks: Vec<crate::preflight::Check>,
    },
    /// The image phase starts.
    LoadStart {
        /// Bytes of blobs to send to Docker.
        bytes_to_send: u64,
        /// Bytes of blobs the host already has.
        bytes_skipped: u64,
        /// Images sent.
        images_to_load: usize,
        /// Images already present (tagged only).
        images_present: usize,
    },
    /// Bytes sent to Docker (or hashed, when nothing is sent).
    LoadProgress {
        /// Bytes in this increment.
        bytes: u64,
    },
    /// The image phase ended.
    LoadDone {
        /// Blob bytes sent to Docker.
        bytes_sent: u64,
        /// Blob bytes skipped.
        bytes_skipped: u64,
        /// Whether the fallback (send every layer) was needed.
        fallback: bool,
    },
    /// A service step.
    Service {
        /// Service.
        service: String,
        /// What happens: create, recreate, keep, run, skip, started, healthy, completed, waiting.
        status: String,
        /// Detail.
        detail: Option<String>,
    },
    /// A copy of the stack's data starts (snapshot, backup, restore).
    DataStart {
        /// `snapshot`, `backup` or `restore`.
        action: String,
        /// Bytes of data to copy.
        bytes: u64,
    },
    /// Bytes of data copied.
    DataProgress {
        /// Bytes in this increment.
        bytes: u64,
    },
    /// The copy is made and checked.
    DataDone {
        /// `snapshot`, `backup` or `restore`.
        action: String,
        /// Bytes copied.
        bytes: u64,
        /// Seconds since the writers were stopped.
        seconds: f64,
    },
    /// `installer push` starts sending.
    PushStart {
        /// `host[:port]`.
        registry: String,
        /// Bytes the registry lacks.
        bytes: u64,
    },
    /// `installer push` sent every blob and manifest.
    PushDone {
        /// Bytes sent.
        bytes_sent: u64,
    },
    /// A line of information.
    Info {
        /// Text.
        message: String,
    },
    /// The apply finished.
    Applied {
        /// Product.
        product: String,
        /// Version.
        version: String,
        /// Release.
        release: u64,
        /// Seconds taken.
        seconds: f64,
    },
}

/// Receives events.
pub trait Reporter: Send + Sync {
    /// Handle one event.
    fn event(&self, event: &Event);
}

/// Drops every event.
pub struct Silent;
impl Reporter for Silent {
    fn event(&self, _: &Event) {}
}
