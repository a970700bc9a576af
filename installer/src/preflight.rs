//! Checks that run before anything on the host changes.

use std::net::TcpListener;
use std::path::{Path, PathBuf};

use manifests::display::human_bytes;
use manifests::{Exit, Manifest};

use crate::engine::EngineInfo;
use crate::error::InstallError;
use crate::load::LoadPlan;
use crate::plan::{Action, HostState, Plan, labels};

/// The port check as a report line (for `installer plan`, which reports rather than stops).
#[must_use]
pub fn ports_line(plan: &Plan, host: &HostState) -> Check {
    match check_ports(plan, host) {
        Ok(()) => {
            Check::new("ports", true, "every published host port is free or already the stack's".into(), Exit::Ok)
        }
        Err(e) => Check::new("ports", false, e.to_string(), Exit::PreflightFailed),
    }
}

/// Every host port the stack publishes must be free, unless a running container of this project
/// holds it (it is stopped before its replacement starts).
///
/// # Errors
/// [`InstallError::PortInUse`] naming the service and port.
pub fn check_ports(plan: &Plan, host: &HostState) -> Result<(), InstallError> {
    for sp in plan.waves.iter().flatten() {
        if matches!(sp.action, Action::Keep | Action::Skip { .. }) {
            continue;
        }
        for p in sp.spec.ports.iter().filter(|p| p.protocol == "tcp") {
            let ip = if p.host_ip.is_empty() { "0.0.0.0" } else { p.host_ip.as_str() };
            if let Err(e) = TcpListener::bind((ip, p.host_port))
                && e.kind() == std::io::ErrorKind::AddrInUse
                && !held_by_project(host, &plan.project, p.host_port)
            {
                return Err(InstallError::PortInUse {
                    service: sp.name.clone(),
                    ip: ip.to_string(),
                    port: p.host_port,
                });
            }
        }
    }
    Ok(())
}

fn held_by_project(host: &HostState, project: &str, port: u16) -> bool {
    host.containers.values().any(|c| {
        c.running
            && c.labels.get(labels::PROJECT).map(String::as_str) == Some(project)
            && c.labels.get(labels::PORTS).is_some_and(|ports| ports.split(',').any(|x| x == port.to_string()))
    })
}

/// One line of the preflight report.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Check {
    /// `disk`, `state-disk`, `docker`, `engine`, `storage-driver`, `platform`, `memory`, `ports`, `hypervisor`.
    pub check: &'static str,
    /// Passed (informational lines always pass).
    pub ok: bool,
    /// What was found.
    pub detail: String,
    #[serde(skip)]
    exit: Exit,
}

/// Every host check, in order; the first failing one decides the exit code.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    /// The lines.
    pub checks: Vec<Check>,
}

impl Check {
    /// A line of the report.
    #[must_use]
    pub fn new(check: &'static str, ok: bool, detail: String, exit: Exit) -> Self {
        Self { check, ok, detail, exit }
    }
}

impl Report {
    /// The first failure as an error.
    ///
    /// # Errors
    /// [`InstallError::PreflightCheck`].
    pub fn result(&self) -> Result<(), InstallError> {
        match self.checks.iter().find(|c| !c.ok) {
            Some(c) => Err(InstallError::PreflightCheck { check: c.check, detail: c.detail.clone(), exit: c.exit }),
            None => Ok(()),
        }
    }

    /// `ok   disk  Docker data root ...` lines.
    #[must_use]
    pub fn render(&self) -> String {
        self.checks
            .iter()
            .map(|c| format!("  {:<4} {:<14} {}\n", if c.ok { "ok" } else { "FAIL" }, c.check, c.detail))
            .collect()
    }
}

/// Refuse a copy of data that does not fit: `free` bytes at `path`, `need` needed.
///
/// # Errors
/// [`InstallError::PreflightCheck`] (exit 50) saying what `what` needs and what was left alone.
pub(crate) fn require_space(
    path: &Path,
    free: u64,
    need: u64,
    what: &str,
    untouched: &str,
) -> Result<(), InstallError> {
    if free >= need {
        return Ok(());
    }
    Err(InstallError::PreflightCheck {
        check: "disk",
        detail: format!(
            "{}: {} free, {what} needs {}; {untouched}",
            path.display(),
            human_bytes(free),
            human_bytes(need)
        ),
        exit: Exit::PreflightDisk,
    })
}

/// Free bytes of the filesystem holding `path`. `INSTALLER_TEST_DOCKER_FREE_BYTES` replaces the
/// figure for Docker's data root: the tests' way to simulate a full disk without a second dockerd.
pub(crate) fn free_bytes(path: &Path, docker_root: bool) -> std::io::Result<u64> {
    if docker_root && let Some(v) = std::env::var_os("INSTALLER_TEST_DOCKER_FREE_BYTES") {
        return v.to_string_lossy().parse().map_err(std::io::Error::other);
    }
    let mut p = path.to_path_buf();
    // The state dir may not exist yet: measure its nearest existing parent.
    while !p.exists() {
        if !p.pop() {
            break;
        }
    }
    fs4::available_space(&p)
}

/// Space Docker needs to load what the plan sends: the upload is spooled whole into
/// `<root>/tmp` first, then each layer is unpacked. Uncompressed sizes are not in the manifest,
/// so gzip layers count three times their size (Docker's own guidance for `docker load` is 2-3x).
#[must_use]
pub fn docker_bytes_needed(manifest: &Manifest, load: &LoadPlan) -> u64 {
    let mut unpacked = 0;
    let mut seen = std::collections::BTreeSet::new();
    for image in &manifest.images {
        for layer in &image.layers {
            if load.send.contains_key(&layer.blob.digest) && seen.insert(layer.blob.digest) {
                let factor = if layer.blob.media_type.ends_with("gzip") { 3 } else { 1 };
                unpacked += layer.blob.size * factor;
            }
        }
    }
    if load.bytes_to_send == 0 { 0 } else { load.bytes_to_send + unpacked + MARGIN }
}

const MARGIN: u64 = 64 << 20;

/// Host checks that need no change: free space, Docker version, platform, memory, hypervisor.
#[must_use]
pub fn check_host(manifest: &Manifest, plan: &Plan, info: &EngineInfo, state_dir: &Path) -> Report {
    let mut checks = Vec::new();
    let mut push = |check, ok, detail: String, exit| checks.push(Check::new(check, ok, detail, exit));

    // The snapshot before migrations: volumes are copied on Docker's data root, site data
    // directories beside themselves under the state dir. Counted before any service stops.
    let (snap_docker, snap_state) = plan.snapshot.as_ref().map_or((0, 0), |s| (s.volume_bytes, s.dir_bytes));
    let snap_note = |bytes: u64| {
        if bytes == 0 { String::new() } else { format!(" (of which {} for the snapshot)", human_bytes(bytes)) }
    };
    let need = docker_bytes_needed(manifest, &plan.load) + snap_docker;
    let root = PathBuf::from(&info.root_dir);
    match free_bytes(&root, true) {
        Ok(free) => push(
            "disk",
            free >= need,
            format!(
                "Docker data root {}: {} free, {} needed{}",
                root.display(),
                human_bytes(free),
                human_bytes(need),
                snap_note(snap_docker)
            ),
            Exit::PreflightDisk,
        ),
        // The installer may not see Docker's root (e.g. a remote DOCKER_HOST): say so, do not fail.
        Err(e) => {
            push("disk", true, format!("Docker data root {}: not measurable here ({e})", root.display()), Exit::Ok)
        }
    }
    let state_need = manifest.entries.iter().filter(|e| !e.path.starts_with("images/")).map(|e| e.size).sum::<u64>()
        + (1 << 20)
        + snap_state;
    match free_bytes(state_dir, false) {
        Ok(free) => push(
            "state-disk",
            free >= state_need,
            format!(
                "state dir {}: {} free, {} needed{}",
                state_dir.display(),
                human_bytes(free),
                human_bytes(state_need),
                snap_note(snap_state)
            ),
            Exit::PreflightDisk,
        ),
        Err(e) => push("state-disk", false, format!("state dir {}: {e}", state_dir.display()), Exit::PreflightDisk),
    }
    let wanted = &manifest.requires.docker_api_version;
    push(
        "docker",
        version_at_least(&info.api_version, wanted),
        format!(
            "{} (API {}), bundle needs API {wanted}",
            if info.product.is_empty() { format!("Docker {}", info.server_version) } else { info.product.clone() },
            info.api_version
        ),
        Exit::PreflightDocker,
    );
    // Podman runs healthchecks only through systemd timers: without systemd they never run and
    // a health gate would wait for its timeout.
    let healthchecks = crate::engine::EngineKind::Podman == info.kind
        && info.cgroup_driver != "systemd"
        && manifests::compose::probe(manifest)
            .services
            .values()
            .any(|s| s.healthcheck.as_ref().is_none_or(|h| h.test.first().is_none_or(|t| t != "NONE")));
    push(
        "engine",
        !healthchecks,
        if healthchecks {
            format!(
                "{}: its healthchecks need systemd (cgroup driver is {}), and this stack's health gates need them; run Podman under systemd (cgroup_manager = \"systemd\" in containers.conf), or use Docker",
                info.kind.describe(),
                if info.cgroup_driver.is_empty() { "unknown" } else { &info.cgroup_driver }
            )
        } else {
            info.kind.describe().to_string()
        },
        Exit::PreflightDocker,
    );
    push(
        "storage-driver",
        true,
        if info.storage_driver == "overlay2" {
            "overlay2".to_string()
        } else if info.kind == crate::engine::EngineKind::ContainerdStore {
            format!("{} snapshotter (containerd image store)", info.storage_driver)
        } else {
            format!("{} (overlay2 is recommended; others work but are slower)", info.storage_driver)
        },
        Exit::Ok,
    );
    let arch = match info.architecture.as_str() {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    push(
        "platform",
        manifest.platform == format!("linux/{arch}"),
        format!("host linux/{arch} ({}), bundle {}", info.architecture, manifest.platform),
        Exit::PreflightPlatform,
    );
    // The limits as far as the bundle knows them (defaults; site values are checked in apply).
    let limits: i64 = manifests::compose::probe(manifest)
        .services
        .values()
        .filter_map(|s| s.limits.as_ref().and_then(|l| l.memory_bytes))
        .sum();
    let total = u64::try_from(info.mem_total).unwrap_or(0);
    let limits = u64::try_from(limits).unwrap_or(0);
    push(
        "memory",
        limits <= total || total == 0,
        format!("{} of memory limits, host has {}", human_bytes(limits), human_bytes(total)),
        Exit::PreflightMemory,
    );
    push("hypervisor", true, hypervisor(Path::new("/sys/class/dmi/id")), Exit::Ok);
    Report { checks }
}

/// VMware, Hyper-V, KVM/QEMU or bare metal, from DMI; shown in the report for support tickets.
#[must_use]
pub fn hypervisor(dmi: &Path) -> String {
    let read = |f: &str| std::fs::read_to_string(dmi.join(f)).map(|s| s.trim().to_string()).unwrap_or_default();
    let (vendor, product) = (read("sys_vendor"), read("product_name"));
    let kind = if vendor.contains("VMware") {
        "VMware"
    } else if vendor.contains("Microsoft") && product.contains("Virtual") {
        "Hyper-V"
    } else if vendor.contains("QEMU") || product.contains("KVM") || vendor.contains("Red Hat") {
        "KVM"
    } else if vendor.is_empty() {
        "unknown (no DMI)"
    } else {
        "bare metal or another hypervisor"
    };
    if vendor.is_empty() { kind.to_string() } else { format!("{kind} ({vendor} {product})") }
}

/// `1.41` >= `1.41`, compared numerically part by part.
fn version_at_least(have: &str, want: &str) -> bool {
    let parts = |v: &str| v.split('.').map(|p| p.parse::<u32>().unwrap_or(0)).collect::<Vec<_>>();
    parts(have) >= parts(want)
}

#[cfg(test)]
mod tests {
    #[test]
    fn versions_compare_numerically() {
        assert!(super::version_at_least("1.41", "1.41"));
        assert!(super::version_at_least("1.100", "1.41"));
        assert!(!super::version_at_least("1.40", "1.41"));
    }
}
