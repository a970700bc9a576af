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
    /// `disk`, `state-disk`, `docker`, `engine`, `storage-driver`, `platform`, `memory`, `ports`,
    /// `hypervisor`, `clock`, `medium`.
    pub check: &'static str,
    /// Passed (informational lines and warnings always pass).
    pub ok: bool,
    /// Passed, but the operator should act (e.g. a clock far behind).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub warning: bool,
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
        Self { check, ok, warning: false, detail, exit }
    }

    /// `ok`, `WARN` or `FAIL`.
    #[must_use]
    pub fn mark(&self) -> &'static str {
        match (self.ok, self.warning) {
            (false, _) => "FAIL",
            (true, true) => "WARN",
            (true, false) => "ok",
        }
    }

    /// A line that passes but asks the operator to act.
    #[must_use]
    pub fn warning(check: &'static str, detail: String) -> Self {
        Self { check, ok: true, warning: true, detail, exit: Exit::Ok }
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
        self.checks.iter().map(|c| format!("  {:<4} {:<14} {}\n", c.mark(), c.check, c.detail)).collect()
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

/// Host checks that need no change: free space, Docker version, platform, memory, hypervisor,
/// clock, and where the bundle is read from.
#[must_use]
pub fn check_host(
    manifest: &Manifest,
    plan: &Plan,
    info: &EngineInfo,
    state_dir: &Path,
    bundle_files: Option<&[manifests::media::PartFile]>,
) -> Report {
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
    push("hypervisor", true, hypervisor(), Exit::Ok);
    // Only when a bundle is being read: a rollback to a stored release is never refused for
    // the clock, and has no medium.
    if let Some(files) = bundle_files {
        checks.push(clock_line(manifest, manifests::time::now()));
        checks.push(medium_line(files));
    }
    Report { checks }
}

/// The hypervisor this host runs on, from DMI (`/sys/class/dmi/id`) and the CPU's hypervisor
/// flag: shown in preflight, `status` and support reports, because VM sites differ in what they
/// attach (ISO images, no USB on Hyper-V) and in time sync.
#[must_use]
pub fn hypervisor() -> String {
    let dmi = std::env::var_os("INSTALLER_DMI_DIR").map_or_else(|| PathBuf::from("/sys/class/dmi/id"), PathBuf::from);
    let read = |f: &str| std::fs::read_to_string(dmi.join(f)).map(|s| s.trim().to_string()).unwrap_or_default();
    let cpu_flag = std::fs::read_to_string("/proc/cpuinfo")
        .is_ok_and(|c| c.lines().any(|l| l.starts_with("flags") && l.split_whitespace().any(|f| f == "hypervisor")));
    classify_hypervisor(&read("sys_vendor"), &read("product_name"), cpu_flag)
}

/// Name the hypervisor from DMI's system vendor and product name (as VMware, Hyper-V, KVM,
/// VirtualBox, Xen and the clouds fill them in) and the CPU's hypervisor flag.
#[must_use]
pub fn classify_hypervisor(vendor: &str, product: &str, cpu_flag: bool) -> String {
    let known = [
        ("VMware", "", "VMware"),
        ("Microsoft Corporation", "Virtual Machine", "Hyper-V"),
        ("QEMU", "", "KVM/QEMU"),
        ("", "KVM", "KVM/QEMU"),
        ("Red Hat", "", "KVM/QEMU"),
        ("Nutanix", "", "Nutanix AHV"),
        ("Proxmox", "", "KVM/QEMU (Proxmox)"),
        ("innotek GmbH", "", "VirtualBox"),
        ("Oracle Corporation", "VirtualBox", "VirtualBox"),
        ("Xen", "", "Xen"),
        ("Parallels", "", "Parallels"),
        ("Amazon EC2", "", "Amazon EC2"),
        ("Google", "Google Compute Engine", "Google Compute Engine"),
    ];
    let dmi = format!("{vendor} {product}").trim().to_string();
    if let Some((_, _, name)) =
        known.iter().find(|(v, p, _)| (!v.is_empty() || !p.is_empty()) && vendor.contains(v) && product.contains(p))
    {
        return format!("{name} ({dmi})");
    }
    match (dmi.is_empty(), cpu_flag) {
        (true, true) => "a virtual machine (the CPU reports a hypervisor; no DMI data to name it)".into(),
        (true, false) => "unknown (no DMI data)".into(),
        (false, true) => format!("a virtual machine ({dmi})"),
        (false, false) => format!("bare metal ({dmi})"),
    }
}

/// How far the host's clock may be behind the build machine's before it is reported.
const CLOCK_SLACK_SECS: u64 = 3600;

/// The host clock against the bundle's build time. A VM restored from a snapshot or without
/// time sync can be days behind: then the bundle's expiry cannot be enforced (refused when the
/// bundle has one) and every time the installer records is off (a warning otherwise).
#[must_use]
pub fn clock_line(manifest: &Manifest, now: u64) -> Check {
    let behind = manifest.created.saturating_sub(now);
    let clock = manifests::time::rfc3339(now);
    let built = manifests::time::rfc3339(manifest.created);
    if behind <= CLOCK_SLACK_SECS {
        return Check::new("clock", true, format!("{clock} (bundle built {built})"), Exit::Ok);
    }
    let how = format!(
        "this host's clock says {clock}, {} before the bundle was built ({built}): the clock is behind (a VM \
         restored from a snapshot, or no time sync); set it (VMware Tools or Hyper-V time sync, chrony, `date -s`)",
        human_duration(behind)
    );
    match manifest.expires {
        Some(expires) => Check::new(
            "clock",
            false,
            format!(
                "{how}, then run again: the bundle expires at {} and that cannot be checked against a wrong clock",
                manifests::time::rfc3339(expires)
            ),
            Exit::PreflightFailed,
        ),
        None => Check::warning("clock", format!("{how}; the times in the history will be off")),
    }
}

fn human_duration(secs: u64) -> String {
    match secs {
        s if s >= 2 * 86_400 => format!("{} days", s / 86_400),
        s if s >= 2 * 3600 => format!("{} hours", s / 3600),
        s => format!("{} minutes", s / 60),
    }
}

/// Where the bundle is read from: its files, and whether the medium is read-only (fine: the
/// installer never writes next to a bundle).
#[must_use]
pub fn medium_line(files: &[manifests::media::PartFile]) -> Check {
    let Some(first) = files.first() else { return Check::new("medium", true, "not read from a file".into(), Exit::Ok) };
    let total: u64 = files.iter().map(|f| f.size).sum();
    let mut dirs: Vec<PathBuf> = Vec::new();
    for f in files {
        let d = f.path.parent().map(Path::to_path_buf).unwrap_or_default();
        let d = std::fs::canonicalize(&d).unwrap_or(d);
        if !dirs.contains(&d) {
            dirs.push(d);
        }
    }
    let places: Vec<String> = dirs.iter().map(|d| format!("{}{}", d.display(), mount_note(d))).collect();
    let what = if files.len() > 1 {
        format!("{} parts ({}) from {}", files.len(), human_bytes(total), places.join(", "))
    } else {
        format!("{} ({}) on {}", first.name, human_bytes(total), places.join(", "))
    };
    Check::new("medium", true, what, Exit::Ok)
}

/// ` (iso9660, read-only)` for the filesystem holding `dir`, from /proc/self/mountinfo.
fn mount_note(dir: &Path) -> String {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else { return String::new() };
    // The longest mount point that contains `dir` is its filesystem.
    let best = info
        .lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let f: Vec<&str> = pre.split(' ').collect();
            let mount = f.get(4)?.replace("\\040", " ");
            let opts = f.get(5)?;
            let fstype = post.split(' ').next()?;
            dir.starts_with(&mount).then(|| (mount.len(), fstype.to_string(), opts.split(',').any(|o| o == "ro")))
        })
        .max_by_key(|(len, _, _)| *len);
    match best {
        Some((_, fs, true)) => format!(" ({fs}, read-only)"),
        Some((_, fs, false)) => format!(" ({fs})"),
        None => String::new(),
    }
}

/// `1.41` >= `1.41`, compared numerically part by part.
fn version_at_least(have: &str, want: &str) -> bool {
    let parts = |v: &str| v.split('.').map(|p| p.parse::<u32>().unwrap_or(0)).collect::<Vec<_>>();
    parts(have) >= parts(want)
}

#[cfg(test)]
mod tests {
    #[test]
    fn hypervisors_are_named_from_dmi() {
        use super::classify_hypervisor as c;
        assert!(c("VMware, Inc.", "VMware Virtual Platform", true).starts_with("VMware ("));
        assert!(c("VMware, Inc.", "VMware20,1", true).starts_with("VMware ("));
        assert!(c("Microsoft Corporation", "Virtual Machine", true).starts_with("Hyper-V ("));
        assert!(c("QEMU", "Standard PC (Q35 + ICH9, 2009)", true).starts_with("KVM/QEMU ("));
        assert!(c("Red Hat", "KVM", true).starts_with("KVM/QEMU ("));
        assert!(c("innotek GmbH", "VirtualBox", true).starts_with("VirtualBox ("));
        assert!(c("Dell Inc.", "PowerEdge R640", false).starts_with("bare metal ("));
        // A Surface laptop is Microsoft hardware, not Hyper-V.
        assert!(c("Microsoft Corporation", "Surface Laptop 5", false).starts_with("bare metal ("));
        assert!(c("", "", true).contains("virtual machine"));
        assert_eq!(c("", "", false), "unknown (no DMI data)");
    }

    #[test]
    fn a_clock_behind_the_build_is_reported_and_refused_with_an_expiry() {
        let mut m = manifests::reader::empty_manifest();
        m.created = 2_000_000_000;
        let ok = super::clock_line(&m, m.created + 10);
        assert!(ok.ok && !ok.warning, "{ok:?}");
        let skew = super::clock_line(&m, m.created - 600);
        assert!(skew.ok && !skew.warning, "ten minutes of skew is not worth a warning: {skew:?}");
        let behind = super::clock_line(&m, m.created - 30 * 86_400);
        assert!(behind.ok && behind.warning && behind.detail.contains("30 days"), "{behind:?}");
        m.expires = Some(m.created + 86_400);
        let refused = super::clock_line(&m, m.created - 30 * 86_400);
        assert!(!refused.ok && refused.detail.contains("expires"), "{refused:?}");
        assert_eq!(refused.exit, manifests::Exit::PreflightFailed);
    }

    #[test]
    fn versions_compare_numerically() {
        assert!(super::version_at_least("1.41", "1.41"));
        assert!(super::version_at_least("1.100", "1.41"));
        assert!(!super::version_at_least("1.40", "1.41"));
    }
}
