//! Helpers for the cross-crate and end-to-end tests: locating the built binaries, running them,
//! building bundles against the local registry, taking tar files apart and putting them back
//! together (for tamper tests), and snapshotting the Docker host.
//!
//! The end-to-end tests need the machine prepared by `scripts/setup` and `scripts/test-images`
//! (dockerd, registries on 127.0.0.1:5000/5001, test images). `scripts/test` does that and sets
//! `E2E=1`; without it those tests return early and say so.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The open test registry.
pub const REGISTRY: &str = "127.0.0.1:5000";

/// Whether end-to-end tests should run.
#[must_use]
pub fn e2e_enabled(test: &str) -> bool {
    if std::env::var_os("E2E").is_some() {
        true
    } else {
        eprintln!("{test}: skipped (set E2E=1, as scripts/test does, to run the end-to-end tests)");
        false
    }
}

/// Path of a workspace binary (built by `cargo build --bins` before the tests).
///
/// # Panics
/// When the binary was not built.
#[must_use]
pub fn bin(name: &str) -> PathBuf {
    // scripts/test runs part of the suite again with the static installer that ships.
    if name == "installer"
        && let Some(p) = std::env::var_os("E2E_INSTALLER")
    {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let p = dir.join(name);
    assert!(p.exists(), "{} not found: run `cargo build --bins` first (scripts/test does)", p.display());
    p
}

/// Output of a command, decoded.
#[derive(Debug)]
pub struct Run {
    /// Exit code (-1 if killed).
    pub code: i32,
    /// Stdout.
    pub stdout: String,
    /// Stderr.
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Self {
        Self {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

/// Run a command and collect its output.
///
/// # Panics
/// If it cannot be spawned.
#[must_use]
pub fn run(cmd: &mut Command) -> Run {
    cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}")).into()
}

/// A scratch directory with a signing key pair.
pub struct Workspace {
    /// The directory (removed on drop).
    pub dir: tempfile::TempDir,
    /// Secret key.
    pub secret: PathBuf,
    /// Public key.
    pub public: PathBuf,
    /// Blob cache shared by this workspace's builds.
    pub cache: PathBuf,
}

impl Workspace {
    /// A fresh workspace with a key pair made by `bundler keygen`.
    ///
    /// # Panics
    /// If keygen fails.
    #[must_use]
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let secret = dir.path().join("vendor.key");
        let public = dir.path().join("vendor.pub");
        let r = run(Command::new(bin("bundler"))
            .args(["keygen", "--secret-key"])
            .arg(&secret)
            .arg("--public-key")
            .arg(&public));
        assert_eq!(r.code, 0, "keygen: {r:?}");
        let cache = dir.path().join("cache");
        Self { dir, secret, public, cache }
    }

    /// A path inside the workspace.
    #[must_use]
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Copy the test stack (compose + conf files) into `<name>/`, applying text replacements
    /// to compose.yaml; returns the compose path.
    ///
    /// # Panics
    /// On I/O errors.
    #[must_use]
    pub fn stack(&self, name: &str, replacements: &[(&str, &str)]) -> PathBuf {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/busybox-stack");
        let dst = self.path(name);
        std::fs::create_dir_all(dst.join("conf")).expect("mkdir");
        for f in ["conf/web.env", "conf/site.conf"] {
            std::fs::copy(src.join(f), dst.join(f)).expect("copy conf");
        }
        let mut text = std::fs::read_to_string(src.join("compose.yaml")).expect("read compose");
        for (a, b) in replacements {
            assert!(text.contains(a), "fixture compose has no `{a}`");
            text = text.replace(a, b);
        }
        let compose = dst.join("compose.yaml");
        std::fs::write(&compose, text).expect("write compose");
        compose
    }

    /// `bundler build` with the workspace key and cache; extra args appended.
    #[must_use]
    pub fn build(&self, compose: &Path, release: u64, out: &Path, extra: &[&str]) -> Run {
        run(Command::new(bin("bundler"))
            .arg("build")
            .arg("-f")
            .arg(compose)
            .arg("--key")
            .arg(&self.secret)
            .args(["--version", &format!("1.0.{release}"), "--release", &release.to_string()])
            .arg("-o")
            .arg(out)
            .args(["--insecure-registry", "127.0.0.1:5000,127.0.0.1:5001"])
            .arg("--cache-dir")
            .arg(&self.cache)
            .args(extra)
            .env("SOURCE_DATE_EPOCH", "1790000000"))
    }
}

impl Default for Workspace {
    fn default() -> Self {
        Self::new()
    }
}

/// One tar entry as found in a bundle: its 512-byte header and its data.
#[derive(Clone, Debug)]
pub struct RawEntry {
    /// Header block.
    pub header: [u8; 512],
    /// Data (without padding).
    pub data: Vec<u8>,
}

impl RawEntry {
    /// The entry's path.
    #[must_use]
    pub fn path(&self) -> String {
        let h = tar::Header::from_byte_slice(&self.header);
        String::from_utf8_lossy(&h.path_bytes()).into_owned()
    }
    /// A regular-file entry.
    #[must_use]
    pub fn file(path: &str, data: Vec<u8>) -> Self {
        let mut h = tar::Header::new_ustar();
        h.set_path(path).expect("path");
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        Self { header: *h.as_bytes(), data }
    }
    /// Change the header (checksum recomputed) so the change tests the rule, not the checksum.
    pub fn edit_header(&mut self, f: impl FnOnce(&mut tar::Header)) {
        let mut h = tar::Header::from_byte_slice(&self.header).clone();
        f(&mut h);
        h.set_cksum();
        self.header = *h.as_bytes();
    }
}

/// Split a tar written by `bundler` into its entries (regular ustar entries only).
///
/// # Panics
/// On anything else.
#[must_use]
pub fn split_tar(bytes: &[u8]) -> Vec<RawEntry> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos + 512 <= bytes.len() {
        let block = &bytes[pos..pos + 512];
        if block.iter().all(|b| *b == 0) {
            break;
        }
        let mut header = [0u8; 512];
        header.copy_from_slice(block);
        let size = usize::try_from(tar::Header::from_byte_slice(&header).entry_size().expect("size")).expect("usize");
        pos += 512;
        out.push(RawEntry { header, data: bytes[pos..pos + size].to_vec() });
        pos += size.div_ceil(512) * 512;
    }
    out
}

/// Put entries back together, with the end-of-archive marker.
#[must_use]
pub fn join_tar(entries: &[RawEntry]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        out.extend_from_slice(&e.header);
        out.extend_from_slice(&e.data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.extend_from_slice(&[0u8; 1024]);
    out
}

/// A sorted description of everything Docker holds: images (IDs and tags), containers (name,
/// ID, state), volumes, networks. Two equal snapshots mean the host did not change.
#[must_use]
pub fn docker_snapshot() -> String {
    let q = |args: &[&str]| {
        let r = run(Command::new("docker").args(args));
        assert_eq!(r.code, 0, "docker {args:?}: {}", r.stderr);
        let mut lines: Vec<&str> = r.stdout.lines().collect();
        lines.sort_unstable();
        lines.join("\n")
    };
    format!(
        "images:\n{}\ncontainers:\n{}\nvolumes:\n{}\nnetworks:\n{}\n",
        q(&["images", "-a", "--no-trunc", "--format", "{{.ID}} {{.Repository}}:{{.Tag}}"]),
        q(&["ps", "-a", "--no-trunc", "--format", "{{.ID}} {{.Names}} {{.State}}"]),
        q(&["volume", "ls", "--format", "{{.Name}}"]),
        q(&["network", "ls", "--no-trunc", "--format", "{{.ID}} {{.Name}}"]),
    )
}

/// Remove every container, volume and network of a compose project (test cleanup).
pub fn remove_project(project: &str) {
    let label = format!("label=com.docker.compose.project={project}");
    let ids = run(Command::new("docker").args(["ps", "-aq", "--filter", &label])).stdout;
    for id in ids.split_whitespace() {
        let _ = run(Command::new("docker").args(["rm", "-f", id]));
    }
    let vols = run(Command::new("docker").args(["volume", "ls", "-q", "--filter", &label])).stdout;
    for v in vols.split_whitespace() {
        let _ = run(Command::new("docker").args(["volume", "rm", "-f", v]));
    }
    let nets = run(Command::new("docker").args(["network", "ls", "-q", "--filter", &label])).stdout;
    for n in nets.split_whitespace() {
        let _ = run(Command::new("docker").args(["network", "rm", n]));
    }
}
