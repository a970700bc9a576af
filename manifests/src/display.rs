//! Small formatting helpers both binaries use for humans.

/// `12.3 MB` (decimal units, as disks and Docker report them).
#[must_use]
pub fn human_bytes(n: u64) -> String {
    #[allow(clippy::cast_precision_loss, reason = "display only")]
    let f = n as f64;
    if n >= 1_000_000_000 {
        format!("{:.2} GB", f / 1e9)
    } else if n >= 1_000_000 {
        format!("{:.1} MB", f / 1e6)
    } else if n >= 1_000 {
        format!("{:.1} kB", f / 1e3)
    } else {
        format!("{n} B")
    }
}

/// An error with all its sources, `a: b: c`, so that transport errors say what really failed.
#[must_use]
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
