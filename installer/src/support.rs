//! `installer report`: one `.tar.gz` the operator carries back to the vendor.
//!
//! It holds what support asks for first: the installer and engine versions, the preflight, the
//! status, the history and journal, the installed release's manifest, the last lines of every
//! container's log, disk and memory. Every value of a secret site variable is replaced by
//! `[redacted:NAME]` wherever it appears, logs included; `values.json` itself is never in it.
//! What could not be collected (nothing installed, Docker down) is written down in
//! `collection-errors.txt`, and the report is written all the same.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::engine::Engine;
use crate::error::InstallError;
use crate::state::StateDir;

/// Log lines kept per container.
pub const LOG_LINES: usize = 200;

/// What `installer report` wrote.
#[derive(Debug, Clone, Serialize)]
pub struct SupportReport {
    /// The file.
    pub path: PathBuf,
    /// Its size.
    pub bytes: u64,
    /// The files inside.
    pub files: Vec<String>,
    /// What could not be collected.
    pub missing: Vec<String>,
    /// How many secret values were redacted (occurrences).
    pub redactions: usize,
}

/// The collected files, then the secrets taken out of them.
struct Collected {
    files: Vec<(String, Vec<u8>)>,
    missing: Vec<String>,
}

impl Collected {
    fn add(&mut self, name: &str, bytes: impl Into<Vec<u8>>) {
        self.files.push((name.to_string(), bytes.into()));
    }
    fn json(&mut self, name: &str, value: &impl Serialize) {
        self.add(name, serde_json::to_vec_pretty(value).unwrap_or_default());
    }
    fn missed(&mut self, what: &str, why: impl std::fmt::Display) {
        self.missing.push(format!("{what}: {why}"));
    }
    fn state_file(&mut self, state: &StateDir, name: &str) {
        match std::fs::read(state.root().join(name)) {
            Ok(b) => self.add(&format!("state/{name}"), b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => self.missed(&format!("state/{name}"), e),
        }
    }
}

/// Replace every occurrence of each secret in `text`; returns how many were replaced.
#[must_use]
pub fn redact(text: &[u8], secrets: &[(String, String)]) -> (Vec<u8>, usize) {
    let mut out = text.to_vec();
    let mut count = 0;
    // Longest first: a secret that contains another is replaced whole.
    let mut secrets: Vec<&(String, String)> = secrets.iter().filter(|(_, v)| !v.is_empty()).collect();
    secrets.sort_by_key(|(_, v)| std::cmp::Reverse(v.len()));
    for (name, value) in secrets {
        let needle = value.as_bytes();
        let mark = format!("[redacted:{name}]").into_bytes();
        let mut next = Vec::with_capacity(out.len());
        let mut i = 0;
        while i < out.len() {
            if out[i..].starts_with(needle) {
                next.extend_from_slice(&mark);
                i += needle.len();
                count += 1;
            } else {
                next.push(out[i]);
                i += 1;
            }
        }
        out = next;
    }
    (out, count)
}

/// Collect and write the report. Never fails for what it cannot collect; fails only when the
/// file cannot be written.
///
/// # Errors
/// The output cannot be written.
pub async fn report<E: Engine>(
    state: &StateDir,
    engine: Result<&E, String>,
    output: &Path,
) -> Result<SupportReport, InstallError> {
    let mut c = Collected { files: Vec::new(), missing: Vec::new() };
    c.add(
        "installer.txt",
        format!(
            "installer {}\ncreated {}\nstate dir {}\nhost {}\nkernel {}\n",
            env!("CARGO_PKG_VERSION"),
            manifests::time::rfc3339(manifests::time::now()),
            state.root().display(),
            std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default().trim(),
            std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
        ),
    );
    host_files(&mut c, state);
    for name in [
        "installed.json",
        "previous.json",
        "journal.json",
        "history.jsonl",
        "migrations.json",
        "copies.json",
        "stopped.json",
    ] {
        c.state_file(state, name);
    }
    let installed = match state.installed() {
        Ok(Some(i)) => Some(i),
        Ok(None) => {
            c.missed(
                "installed release",
                format!("nothing is installed (no installed.json in {})", state.root().display()),
            );
            None
        }
        Err(e) => {
            c.missed("installed release", e);
            None
        }
    };
    // The installed release's manifest: which variables are secret.
    let manifest = installed.as_ref().and_then(|i| {
        let path = state.release_dir(i.release).join("bundle.json");
        match std::fs::read(&path) {
            Ok(bytes) => {
                c.add(&format!("release/{}/bundle.json", i.release), bytes.clone());
                manifests::Manifest::from_bytes(&bytes).ok()
            }
            Err(e) => {
                c.missed(&path.display().to_string(), e);
                None
            }
        }
    });
    match engine {
        Ok(engine) => engine_files(&mut c, state, engine, installed.as_ref(), manifest.as_ref()).await,
        Err(e) => c.missed("engine", e),
    }
    if !c.missing.is_empty() {
        let text = c.missing.join("\n") + "\n";
        c.add("collection-errors.txt", text);
    }
    // Secrets: every site value of a variable the bundle marks secret. Without the manifest
    // every saved value is treated as one.
    let values = state.values().unwrap_or_default();
    let secrets: Vec<(String, String)> = values
        .into_iter()
        .filter(|(k, _)| manifest.as_ref().is_none_or(|m| m.variables.get(k).is_none_or(|v| v.secret)))
        .collect();
    let mut redactions = 0;
    for (_, bytes) in &mut c.files {
        let (clean, n) = redact(bytes, &secrets);
        *bytes = clean;
        redactions += n;
    }
    write(output, &c.files).map(|bytes| SupportReport {
        path: output.to_path_buf(),
        bytes,
        files: c.files.iter().map(|(n, _)| n.clone()).collect(),
        missing: c.missing,
        redactions,
    })
}

fn host_files(c: &mut Collected, state: &StateDir) {
    let mut host = String::new();
    for f in ["/etc/os-release", "/proc/meminfo", "/proc/loadavg", "/proc/uptime"] {
        match std::fs::read_to_string(f) {
            Ok(t) => {
                let lines: Vec<&str> = t.lines().take(if f == "/proc/meminfo" { 5 } else { 20 }).collect();
                host.push_str(&format!("== {f}\n{}\n", lines.join("\n")));
            }
            Err(e) => host.push_str(&format!("== {f}\n(unreadable: {e})\n")),
        }
    }
    match crate::preflight::free_bytes(state.root(), false) {
        Ok(free) => host.push_str(&format!(
            "== disk\nstate dir {}: {} free\n",
            state.root().display(),
            manifests::display::human_bytes(free)
        )),
        Err(e) => host.push_str(&format!("== disk\nstate dir {}: {e}\n", state.root().display())),
    }
    c.add("host.txt", host);
}

async fn engine_files<E: Engine>(
    c: &mut Collected,
    state: &StateDir,
    engine: &E,
    installed: Option<&crate::state::Installed>,
    manifest: Option<&manifests::Manifest>,
) {
    let info = match engine.info().await {
        Ok(info) => info,
        Err(e) => {
            c.missed("engine", e);
            return;
        }
    };
    c.json("engine.json", &info);
    if let Ok(free) = crate::preflight::free_bytes(Path::new(&info.root_dir), false) {
        c.add("docker-root.txt", format!("{}: {} free\n", info.root_dir, manifests::display::human_bytes(free)));
    }
    let Some(installed) = installed else { return };
    match crate::status::status(state, engine).await {
        Ok(s) => c.json("status.json", &s),
        Err(e) => c.missed("status", e),
    }
    if let Some(m) = manifest {
        match crate::apply::host_state(engine, m, state).await {
            Ok(host) => {
                let values = state.values().unwrap_or_default();
                match crate::plan::plan(
                    m,
                    &host,
                    &values,
                    &state.paths(m.release),
                    &crate::apply::file_digests(m),
                    true,
                ) {
                    Ok(plan) => {
                        let mut report = crate::preflight::check_host(m, &plan, &info, state.root(), None);
                        report.checks.push(crate::preflight::ports_line(&plan, &host));
                        c.add("preflight.txt", report.render());
                    }
                    Err(e) => c.missed("preflight", e),
                }
            }
            Err(e) => c.missed("preflight", e),
        }
    }
    match engine.project_containers(&installed.project).await {
        Ok(list) => {
            for container in list {
                match engine.logs(&container.id, LOG_LINES).await {
                    Ok(text) => c.add(&format!("logs/{}.log", container.name), text + "\n"),
                    Err(e) => c.missed(&format!("logs of {}", container.name), e),
                }
                c.json(&format!("containers/{}.json", container.name), &container);
            }
        }
        Err(e) => c.missed("containers", e),
    }
}

/// A tar.gz written to a temp file beside `output`, fsynced, renamed; mode 0600.
fn write(output: &Path, files: &[(String, Vec<u8>)]) -> Result<u64, InstallError> {
    let dir = output.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(InstallError::state(dir))?;
    let tmp = dir.join(format!(
        ".{}.partial",
        output.file_name().map_or_else(|| "report".into(), |n| n.to_string_lossy().to_string())
    ));
    let io = |e: std::io::Error| InstallError::State { path: output.to_path_buf(), source: e };
    let file =
        std::fs::OpenOptions::new().create(true).truncate(true).write(true).mode(0o600).open(&tmp).map_err(io)?;
    let result = (|| {
        let gz = flate2::write::GzEncoder::new(file, flate2::Compression::default());
        let mut tar = tar::Builder::new(gz);
        let now = manifests::time::now();
        for (name, bytes) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(bytes.len() as u64);
            h.set_mode(0o600);
            h.set_mtime(now);
            h.set_entry_type(tar::EntryType::Regular);
            tar.append_data(&mut h, format!("installer-report/{name}"), bytes.as_slice())?;
        }
        let gz = tar.into_inner()?;
        let mut file = gz.finish()?;
        file.flush()?;
        file.sync_all()?;
        std::fs::rename(&tmp, output)?;
        std::fs::File::open(dir).and_then(|d| d.sync_all())?;
        std::fs::metadata(output).map(|m| m.len())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(io)
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_occurrence_of_every_secret_is_replaced_longest_first() {
        let secrets = vec![("A".to_string(), "hunter2".to_string()), ("B".to_string(), "hunter2-long".to_string())];
        let (out, n) = super::redact(b"pw=hunter2-long x hunter2 hunter2", &secrets);
        assert_eq!(String::from_utf8(out).unwrap(), "pw=[redacted:B] x [redacted:A] [redacted:A]");
        assert_eq!(n, 3);
    }
}
