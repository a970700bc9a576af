//! Renders [`Event`]s: a byte bar for the image phase on a terminal, plain lines on stderr
//! otherwise, one JSON object per line on stdout with `--json`.

use std::io::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use installer::report::{Event, Reporter};

/// Set when the controlling terminal went away (SIGHUP: the SSH session closed). From then on
/// nothing is printed: the apply goes on to its end, and `installer status` / `installer history`
/// tell the operator how it ended.
static TERMINAL_GONE: AtomicBool = AtomicBool::new(false);

/// The terminal is gone: print nothing more.
pub fn terminal_gone() {
    TERMINAL_GONE.store(true, Ordering::SeqCst);
}

/// A line on stderr. Write errors are ignored: a closed terminal must not stop an apply.
pub fn say(text: &str) {
    if !TERMINAL_GONE.load(Ordering::SeqCst) {
        let _ = writeln!(std::io::stderr().lock(), "{text}");
    }
}

/// A line on stdout (JSON events, reports), errors ignored as in [`say`].
pub fn emit(text: &str) {
    if !TERMINAL_GONE.load(Ordering::SeqCst) {
        let _ = writeln!(std::io::stdout().lock(), "{text}");
    }
}

/// The terminal renderer.
pub struct Terminal {
    json: bool,
    bars: bool,
    bar: Mutex<Option<ProgressBar>>,
}

impl Terminal {
    /// `json` prints events on stdout.
    pub fn new(json: bool) -> Self {
        Self { json, bars: !json && !ProgressDrawTarget::stderr().is_hidden(), bar: Mutex::new(None) }
    }

    fn start_bar(&self, total: u64, what: &str) {
        let bar = ProgressBar::new(total);
        bar.set_style(
            ProgressStyle::with_template(&format!(
                "{what:>9} [{{bar:30}}] {{bytes}}/{{total_bytes}} {{bytes_per_sec}} eta {{eta}}"
            ))
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        *self.bar.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(bar);
    }

    fn line(&self, text: &str) {
        let guard = self.bar.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match guard.as_ref() {
            Some(bar) => bar.suspend(|| say(text)),
            None => say(text),
        }
    }
}

impl Reporter for Terminal {
    fn event(&self, event: &Event) {
        if TERMINAL_GONE.load(Ordering::SeqCst) {
            if let Some(bar) = self.bar.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take() {
                bar.set_draw_target(ProgressDrawTarget::hidden());
            }
            return;
        }
        if self.json {
            if !matches!(event, Event::LoadProgress { .. } | Event::DataProgress { .. }) {
                emit(&serde_json::to_string(event).unwrap_or_default());
            }
            return;
        }
        match event {
            Event::Verified { product, version, release, key_id } => {
                self.line(&format!("verified signature: {product} {version} (release {release}), key {key_id}"));
            }
            Event::KeyTrusted { fingerprint } => self.line(&format!("now trusting key {fingerprint} on this host")),
            Event::Preflight { checks } => {
                for c in checks {
                    self.line(&format!("preflight {:<4} {:<14} {}", c.mark(), c.check, c.detail));
                }
            }
            Event::Resuming { steps_done } => {
                self.line(&format!("resuming the interrupted apply of this bundle ({steps_done} steps already done)"));
            }
            Event::LoadStart { bytes_to_send, bytes_skipped, images_to_load, images_present } => {
                self.line(&format!(
                    "images: {images_to_load} to load ({} to send), {images_present} already present, {} already on this host",
                    human_bytes(*bytes_to_send),
                    human_bytes(*bytes_skipped)
                ));
                if self.bars && *bytes_to_send > 0 {
                    self.start_bar(*bytes_to_send, "load");
                }
            }
            Event::DataStart { action, bytes } => {
                self.line(&format!("{action}: copying {} of data", human_bytes(*bytes)));
                if self.bars && *bytes > 0 {
                    self.start_bar(*bytes, action);
                }
            }
            Event::PushStart { registry, bytes } => {
                self.line(&format!("push: sending {} to {registry}", human_bytes(*bytes)));
                if self.bars && *bytes > 0 {
                    self.start_bar(*bytes, "push");
                }
            }
            Event::PushDone { bytes_sent } => {
                if let Some(bar) = self.bar.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take() {
                    bar.finish_and_clear();
                }
                self.line(&format!("push: {} sent, every manifest checked", human_bytes(*bytes_sent)));
            }
            Event::DataDone { action, bytes, seconds } => {
                if let Some(bar) = self.bar.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take() {
                    bar.finish_and_clear();
                }
                self.line(&format!("{action}: {} copied and checked in {seconds:.1}s", human_bytes(*bytes)));
            }
            Event::LoadProgress { bytes } | Event::DataProgress { bytes } => {
                if let Some(bar) = self.bar.lock().unwrap_or_else(std::sync::PoisonError::into_inner).as_ref() {
                    bar.inc(*bytes);
                }
            }
            Event::LoadDone { bytes_sent, bytes_skipped, fallback } => {
                if let Some(bar) = self.bar.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take() {
                    bar.finish_and_clear();
                }
                self.line(&format!(
                    "images: verified; sent {} to Docker, skipped {}{}",
                    human_bytes(*bytes_sent),
                    human_bytes(*bytes_skipped),
                    if *fallback { " (fallback: all layers)" } else { "" }
                ));
            }
            Event::Service { service, status, detail } => match detail {
                Some(d) => self.line(&format!("{service}: {status} ({d})")),
                None => self.line(&format!("{service}: {status}")),
            },
            Event::Info { message } => self.line(message),
            Event::Applied { product, version, release, seconds } => {
                self.line(&format!("applied {product} {version} (release {release}) in {seconds:.1}s"));
            }
        }
    }
}

pub use manifests::display::human_bytes;
