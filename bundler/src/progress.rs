//! The terminal reporter: progress bars when stderr is a terminal, plain lines otherwise,
//! nothing when `--json` owns stdout (stderr stays quiet so machines get clean output).

use std::sync::Mutex;

use bundler::report::{Phase, Reporter};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Draws bars or lines.
pub struct Terminal {
    bars: bool,
    quiet: bool,
    current: Mutex<Option<ProgressBar>>,
}

impl Terminal {
    /// `quiet` for --json.
    pub fn new(quiet: bool) -> Self {
        let bars = !quiet && !ProgressDrawTarget::stderr().is_hidden();
        Self { bars, quiet, current: Mutex::new(None) }
    }
}

impl Reporter for Terminal {
    fn start(&self, phase: Phase, total: u64) {
        if self.quiet {
            return;
        }
        if self.bars && total > 0 {
            let bar = ProgressBar::new(total);
            bar.set_style(
                ProgressStyle::with_template("{prefix:>9} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            bar.set_prefix(phase.name());
            *self.current.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(bar);
        } else if total > 0 {
            eprintln!("{}: {}", phase.name(), human_bytes(total));
        }
    }
    fn advance(&self, _phase: Phase, bytes: u64) {
        if let Some(bar) = self.current.lock().unwrap_or_else(std::sync::PoisonError::into_inner).as_ref() {
            bar.inc(bytes);
        }
    }
    fn finish(&self, phase: Phase) {
        if self.quiet {
            return;
        }
        if let Some(bar) = self.current.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take() {
            bar.finish_and_clear();
        }
        eprintln!("{}: done", phase.name());
    }
    fn message(&self, text: &str) {
        if !self.quiet {
            let guard = self.current.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            match guard.as_ref() {
                Some(bar) => bar.suspend(|| eprintln!("{text}")),
                None => eprintln!("{text}"),
            }
        }
    }
}

pub use manifests::display::human_bytes;
