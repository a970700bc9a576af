//! Removable media (issue 14): bundles split into parts by `bundler build --part-size`, read in
//! place (also from read-only mounts and from several media), ISO images written by
//! `bundler iso` and read back with xorriso, the clock and hypervisor lines of the preflight.
//! Real bundles from the local registry, a real dockerd, real mounts (bind mounts remounted
//! read-only: this kernel has no iso9660 driver, so the ISO images are extracted with xorriso).

use std::path::{Path, PathBuf};
use std::process::Command;

use e2e::{Run, bin, docker_snapshot, e2e_enabled, run};
use manifests::Manifest;

use crate::apply::Site;

const PART: u64 = 256 << 10;

fn part(base: &Path, n: usize) -> PathBuf {
    PathBuf::from(format!("{}.{n:03}", base.display()))
}

fn parts_of(base: &Path) -> Vec<PathBuf> {
    (0..).map(|n| part(base, n)).take_while(|p| p.exists()).collect()
}

fn manifest_of_part0(base: &Path) -> Manifest {
    let bytes = std::fs::read(part(base, 0)).unwrap();
    let entries = e2e::split_tar(&[bytes.as_slice(), &[0u8; 1024]].concat());
    Manifest::from_bytes(&entries[0].data).unwrap()
}

fn sha256(path: &Path) -> String {
    manifests::digest::digest_file(path).unwrap().0.to_string()
}

/// Remove the test stack's images, so that an apply must load them from the bundle and a
/// refused one can be seen to have loaded nothing.
fn remove_stack_images() {
    for i in ["stack/db:1", "stack/migrate:1", "stack/web:1"] {
        let _ = run(Command::new("docker").args(["rmi", &format!("127.0.0.1:5000/{i}")]));
    }
}

/// A read-only bind mount of `src` at `dst`, unmounted on drop.
struct ReadOnly(PathBuf);

impl ReadOnly {
    fn mount(src: &Path, dst: &Path) -> Self {
        std::fs::create_dir_all(dst).unwrap();
        let r = run(Command::new("mount").arg("--bind").arg(src).arg(dst));
        assert_eq!(r.code, 0, "bind mount (the media tests run as root): {r:?}");
        let r = run(Command::new("mount").args(["-o", "remount,ro,bind"]).arg(dst));
        assert_eq!(r.code, 0, "remount read-only: {r:?}");
        assert!(std::fs::write(dst.join("probe"), b"x").is_err(), "{} is writable", dst.display());
        Self(dst.to_path_buf())
    }
}

impl Drop for ReadOnly {
    fn drop(&mut self) {
        let _ = run(Command::new("umount").arg(&self.0));
    }
}

/// Names, sizes and digests of every file under `dir`: equal listings mean nothing was written.
fn listing(dir: &Path) -> Vec<(String, u64, String)> {
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.metadata().unwrap().len(), sha256(&e.path())))
        .collect();
    out.sort();
    out
}

#[test]
fn a_split_build_is_the_one_file_bundle_cut_reproducible_and_verified_in_place() {
    if !e2e_enabled("a_split_build_is_the_one_file_bundle_cut_reproducible_and_verified_in_place") {
        return;
    }
    let site = Site::new("mediasplit", 18301);
    let one = site.ws.path("one.tar");
    std::fs::rename(site.bundle(1, &[]), &one).unwrap();
    let size = format!("{}K", PART >> 10);
    let base = site.bundle_with(1, &[], &["--part-size", &size]);
    let parts = parts_of(&base);
    assert!(parts.len() >= 4, "a 1 MB bundle in 256 KiB parts: {parts:?}");
    assert!(!base.exists(), "no one-file bundle is written beside the parts");

    // Every part at most the part size; the signed table lists each with size and digest.
    let m = manifest_of_part0(&base);
    let table = m.parts.clone().expect("a part table");
    assert_eq!(table.part_size, PART);
    assert_eq!(table.parts.len(), parts.len() - 1);
    for (p, listed) in parts[1..].iter().zip(&table.parts) {
        let len = std::fs::metadata(p).unwrap().len();
        assert!(len <= PART, "{} is {len} bytes", p.display());
        assert_eq!(listed.name, p.file_name().unwrap().to_string_lossy());
        assert_eq!((listed.size, listed.sha256.to_string()), (len, sha256(p)));
    }
    assert!(std::fs::metadata(&parts[0]).unwrap().len() < 64 << 10, "part 000 is just the signed header");

    // `cat OUT.0*` is a one-file bundle; after the header it is byte for byte the unsplit build.
    let joined = site.ws.path("joined.tar");
    let mut bytes = Vec::new();
    for p in &parts {
        bytes.extend(std::fs::read(p).unwrap());
    }
    std::fs::write(&joined, &bytes).unwrap();
    let single = std::fs::read(&one).unwrap();
    let header = std::fs::metadata(&parts[0]).unwrap().len() as usize;
    let single_header = header_len(&single);
    assert_eq!(bytes[header..], single[single_header..], "the payload differs from the one-file bundle's");

    // Verified in place by both tools, the parts and the joined file alike.
    for tool in ["bundler", "installer"] {
        for target in [&parts[0], &joined] {
            let r = run(Command::new(bin(tool))
                .arg("verify")
                .arg(target)
                .arg("--key")
                .arg(&site.ws.public)
                .env("INSTALLER_STATE_DIR", site.ws.path("verify-state")));
            assert_eq!(r.code, 0, "{tool} verify {}: {r:?}", target.display());
            assert!(r.stderr.contains("all 17 entries match"), "{r:?}");
        }
    }
    let r = run(Command::new(bin("bundler")).arg("inspect").arg(&parts[0]));
    assert!(r.stdout.contains(&format!("parts      {} files", parts.len())), "{r:?}");

    // A later part given instead of part 000 is named as such.
    let r = run(Command::new(bin("bundler")).arg("verify").arg(&parts[1]).arg("--key").arg(&site.ws.public));
    assert_eq!(r.code, 23, "{r:?}");
    assert!(r.stderr.contains(&format!("give its first part, {}", parts[0].file_name().unwrap().to_string_lossy())));

    // Rebuilt from the same inputs: every part byte-identical. Rebuilt with larger parts:
    // fewer parts, and the earlier build's extra parts are gone (`cat OUT.0*` stays right).
    let digests: Vec<String> = parts.iter().map(|p| sha256(p)).collect();
    let again = site.bundle_with(1, &[], &["--part-size", &size]);
    assert_eq!(again, base);
    assert_eq!(parts_of(&base).iter().map(|p| sha256(p)).collect::<Vec<_>>(), digests);
    let _ = site.bundle_with(1, &[], &["--part-size", "600K"]);
    let fewer = parts_of(&base);
    assert!(fewer.len() < parts.len(), "{fewer:?}");
    let r = run(Command::new(bin("bundler")).arg("verify").arg(&fewer[0]).arg("--key").arg(&site.ws.public));
    assert_eq!(r.code, 0, "{r:?}");

    // A part size smaller than the signed header is refused with a reason.
    let r = site.ws.build(&site.ws.stack("tiny", &[]), 1, &site.ws.path("tiny.tar"), &["--part-size", "8K"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("smaller than the bundle's signed header"), "{r:?}");
    assert!(!site.ws.path("tiny.tar.000").exists() && !site.ws.path("tiny.tar.001").exists());
    let r = site.ws.build(&site.ws.stack("tiny", &[]), 1, &site.ws.path("tiny.tar"), &["--part-size", "1K"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("more than 999"), "{r:?}");
}

/// Length of the first two entries (manifest + signature) of a one-file bundle.
fn header_len(bytes: &[u8]) -> usize {
    let entries = e2e::split_tar(bytes);
    entries[..2].iter().map(|e| 512 + e.data.len().div_ceil(512) * 512).sum()
}

#[test]
fn a_flipped_byte_in_a_middle_part_is_named_and_nothing_changes() {
    if !e2e_enabled("a_flipped_byte_in_a_middle_part_is_named_and_nothing_changes") {
        return;
    }
    let site = Site::new("mediaflip", 18302);
    let base = site.bundle_with(1, &[], &["--part-size", "256K"]);
    let parts = parts_of(&base);
    let middle = &parts[parts.len() / 2];
    assert!(middle != &parts[0] && middle != parts.last().unwrap());
    let mut bytes = std::fs::read(middle).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x01;
    std::fs::write(middle, &bytes).unwrap();
    let name = middle.file_name().unwrap().to_string_lossy().into_owned();

    remove_stack_images();
    let before = docker_snapshot();
    let r = site.apply(&parts[0], &[]);
    assert_eq!(r.code, 20, "{r:?}");
    assert!(r.stderr.contains(&format!("part {name} is damaged")), "the part is named: {r:?}");
    assert!(r.stderr.contains(&format!("hint: copy {name} again")), "{r:?}");
    assert_eq!(docker_snapshot(), before, "a damaged part changed the host");
    assert!(!site.state.join("installed.json").exists());

    let r = run(Command::new(bin("bundler")).arg("verify").arg(&parts[0]).arg("--key").arg(&site.ws.public));
    assert_eq!(r.code, 20, "{r:?}");
    assert!(r.stderr.contains(&format!("part {name} is damaged")), "{r:?}");
}

#[test]
fn a_missing_last_part_is_refused_before_any_change() {
    if !e2e_enabled("a_missing_last_part_is_refused_before_any_change") {
        return;
    }
    let site = Site::new("mediamissing", 18303);
    let base = site.bundle_with(1, &[], &["--part-size", "256K"]);
    let parts = parts_of(&base);
    let last = parts.last().unwrap();
    let name = last.file_name().unwrap().to_string_lossy().into_owned();
    let aside = site.ws.path("aside");
    std::fs::create_dir_all(&aside).unwrap();
    std::fs::rename(last, aside.join(&name)).unwrap();

    remove_stack_images();
    let before = docker_snapshot();
    for cmd in ["plan", "apply"] {
        let mut c = site.installer(&[cmd]);
        c.arg(&parts[0]).arg("--key").arg(&site.ws.public).arg("--values").arg(&site.values);
        let r = run(&mut c);
        assert_eq!(r.code, 23, "{cmd}: {r:?}");
        assert!(r.stderr.contains(&format!("{name} (")) && r.stderr.contains("not found"), "{r:?}");
        assert!(r.stderr.contains("--media DIR"), "the hint says how to point at other media: {r:?}");
    }
    assert_eq!(docker_snapshot(), before, "a missing part changed the host");
    assert!(!site.state.join("installed.json").exists());
    assert!(!site.state.join("journal.json").exists(), "nothing was journaled");

    // A copy cut short is named with both sizes.
    std::fs::write(last, b"short").unwrap();
    let r = site.apply(&parts[0], &[]);
    assert_eq!(r.code, 23, "{r:?}");
    assert!(r.stderr.contains(&format!("{name} is 5 bytes")), "{r:?}");
    assert_eq!(docker_snapshot(), before);
    std::fs::remove_file(last).unwrap();

    // The part on another medium, pointed at with --media (or INSTALLER_MEDIA): it installs.
    let mut c = site.apply_cmd(&parts[0]);
    c.arg("--media").arg(&aside);
    let r = run(&mut c);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(site.running("web"));
}

#[test]
fn apply_reads_the_parts_in_place_from_two_read_only_media() {
    if !e2e_enabled("apply_reads_the_parts_in_place_from_two_read_only_media") {
        return;
    }
    let site = Site::new("mediaro", 18304);
    let base = site.bundle_with(1, &[], &["--part-size", "256K"]);
    let parts = parts_of(&base);
    // Two "sticks": the first holds part 000 and the first half, the second the rest.
    let (stick1, stick2) = (site.ws.path("stick1"), site.ws.path("stick2"));
    for d in [&stick1, &stick2] {
        std::fs::create_dir_all(d).unwrap();
    }
    for (i, p) in parts.iter().enumerate() {
        let to = if i <= parts.len() / 2 { &stick1 } else { &stick2 };
        std::fs::rename(p, to.join(p.file_name().unwrap())).unwrap();
    }
    let (m1, m2) = (site.ws.path("media/usb1"), site.ws.path("media/usb2"));
    let _ro1 = ReadOnly::mount(&stick1, &m1);
    let _ro2 = ReadOnly::mount(&stick2, &m2);
    let (before1, before2) = (listing(&m1), listing(&m2));
    let first = m1.join(parts[0].file_name().unwrap());

    remove_stack_images();
    let mut c = site.apply_cmd(&first);
    c.env("INSTALLER_MEDIA", &m2).arg("--json");
    let r = run(&mut c);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(site.running("web") && site.running("db"));
    // The preflight says where the bundle came from, and that read-only is fine.
    let medium = preflight_line(&r, "medium");
    assert!(medium["ok"].as_bool().unwrap(), "{medium}");
    let detail = medium["detail"].as_str().unwrap();
    assert!(detail.contains(&format!("{} parts", parts.len())) && detail.contains("read-only"), "{detail}");
    assert!(detail.contains(&m2.display().to_string()), "{detail}");
    // Nothing was written to the media, and nothing of the bundle was copied to the state dir.
    assert_eq!((listing(&m1), listing(&m2)), (before1, before2));
    let copied: Vec<_> = walk(&site.state).into_iter().filter(|(_, len)| *len >= PART).collect();
    assert!(copied.is_empty(), "large files in the state dir: {copied:?}");

    // A re-run from the same media changes nothing.
    let snap = docker_snapshot();
    let mut c = site.apply_cmd(&first);
    c.arg("--media").arg(&m2);
    assert_eq!(run(&mut c).code, 0);
    assert_eq!(docker_snapshot(), snap);
}

fn preflight_line(r: &Run, check: &str) -> serde_json::Value {
    r.stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == "preflight")
        .flat_map(|v| v["checks"].as_array().cloned().unwrap_or_default())
        .find(|c| c["check"] == check)
        .unwrap_or_else(|| panic!("no preflight line `{check}` in {r:?}"))
}

fn walk(dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().filter_map(Result::ok) {
        let meta = e.metadata().unwrap();
        if meta.is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push((e.path(), meta.len()));
        }
    }
    out
}

fn extract_iso(iso: &Path, to: &Path) {
    let r = run(Command::new("xorriso").args(["-osirrox", "on", "-indev"]).arg(iso).args(["-extract", "/"]).arg(to));
    assert_eq!(r.code, 0, "xorriso extract {}: {r:?}", iso.display());
}

fn iso_label(iso: &Path) -> String {
    let r = run(Command::new("xorriso").arg("-indev").arg(iso).arg("-pvd_info"));
    let text = format!("{}{}", r.stdout, r.stderr);
    text.lines()
        .find_map(|l| l.strip_prefix("Volume Id    : "))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| panic!("no volume id in {text}"))
}

#[test]
fn iso_images_round_trip_and_install_with_the_installer_on_volume_one() {
    if !e2e_enabled("iso_images_round_trip_and_install_with_the_installer_on_volume_one") {
        return;
    }
    let site = Site::new("mediaiso", 18305);
    let base = site.bundle_with(1, &[], &["--part-size", "256K"]);
    let parts = parts_of(&base);
    let installer = bin("installer");
    // Room on volume 1 for the installer and about two parts: the set needs several volumes.
    let volume = std::fs::metadata(&installer).unwrap().len() + (700 << 10);
    let iso = |out: &Path| -> Run {
        run(Command::new(bin("bundler"))
            .arg("iso")
            .arg(&parts[0])
            .arg("--output-dir")
            .arg(out)
            .args(["--volume-size", &volume.to_string(), "--installer"])
            .arg(&installer)
            .arg("--public-key")
            .arg(&site.ws.public)
            .arg("--json"))
    };
    let out = site.ws.path("isos");
    // Without xorriso: a clear error, no image.
    let mut c = Command::new(bin("bundler"));
    c.arg("iso").arg(&parts[0]).arg("--output-dir").arg(&out).env("PATH", "/nonexistent");
    let r = run(&mut c);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("`xorriso` was not found") && r.stderr.contains("apt-get install xorriso"), "{r:?}");
    assert!(!out.exists() || std::fs::read_dir(&out).unwrap().next().is_none());
    let r = iso(&out);
    assert_eq!(r.code, 0, "{r:?}");
    let event: serde_json::Value = serde_json::from_str(r.stdout.trim()).unwrap();
    let volumes: Vec<PathBuf> =
        event["volumes"].as_array().unwrap().iter().map(|v| PathBuf::from(v["path"].as_str().unwrap())).collect();
    assert!(volumes.len() >= 2, "{volumes:?}");
    let count = volumes.len();
    for (i, v) in volumes.iter().enumerate() {
        let len = std::fs::metadata(v).unwrap().len();
        assert!(len <= volume, "{} is {len} bytes, over {volume}", v.display());
        assert_eq!(iso_label(v), format!("TESTSTACK_1_0_1_{}OF{count}", i + 1));
    }

    // Extracted with xorriso (this kernel cannot mount ISO 9660), each volume read-only.
    let mut dirs = Vec::new();
    let mut mounts = Vec::new();
    for (i, v) in volumes.iter().enumerate() {
        let x = site.ws.path(&format!("x{}", i + 1));
        extract_iso(v, &x);
        let m = site.ws.path(&format!("cdrom{}", i + 1));
        mounts.push(ReadOnly::mount(&x, &m));
        dirs.push(m);
    }
    let readme = std::fs::read_to_string(dirs[0].join("README.txt")).unwrap();
    let key =
        manifests::PublicKey::from_file_string(&std::fs::read_to_string(&site.ws.public).unwrap(), &site.ws.public)
            .unwrap();
    assert!(readme.contains(&key.fingerprint()), "the README shows the key's fingerprint:\n{readme}");
    assert!(readme.contains(&format!("volume {count} (TESTSTACK_1_0_1_{count}OF{count})")), "{readme}");
    // Every part is on exactly one volume, byte for byte.
    for p in &parts {
        let name = p.file_name().unwrap();
        let on: Vec<_> = dirs.iter().filter(|d| d.join(name).exists()).collect();
        assert_eq!(on.len(), 1, "{name:?} on {on:?}");
        assert_eq!(sha256(&on[0].join(name)), sha256(p));
    }
    let installer_on_disc = dirs[0].join("installer");
    let r = run(Command::new(&installer_on_disc).arg("--version"));
    assert_eq!(r.code, 0, "the installer on volume 1 runs: {r:?}");

    // Without the other volumes: refused before any change, naming the volume that holds the part.
    remove_stack_images();
    let before = docker_snapshot();
    let first = dirs[0].join(parts[0].file_name().unwrap());
    let mut c = Command::new(&installer_on_disc);
    c.arg("apply").arg(&first).arg("--key").arg(dirs[0].join("vendor.pub")).arg("--values").arg(&site.values);
    c.env("INSTALLER_STATE_DIR", &site.state);
    let r = run(&mut c);
    assert_eq!(r.code, 23, "{r:?}");
    assert!(
        r.stderr.contains(&format!("is on volume {count} of {count} (label TESTSTACK_1_0_1_{count}OF{count})")),
        "{r:?}"
    );
    assert_eq!(docker_snapshot(), before);

    // With them, as the README says: installed.
    for d in &dirs[1..] {
        c.arg("--media").arg(d);
    }
    let r = run(&mut c);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(site.running("web"));

    // The same bundle gives the same images.
    let r = iso(&site.ws.path("isos-again"));
    assert_eq!(r.code, 0, "{r:?}");
    for v in &volumes {
        assert_eq!(sha256(v), sha256(&site.ws.path("isos-again").join(v.file_name().unwrap())));
    }
    drop(mounts);
}

#[test]
fn the_preflight_names_the_hypervisor_and_a_clock_behind_the_build() {
    if !e2e_enabled("the_preflight_names_the_hypervisor_and_a_clock_behind_the_build") {
        return;
    }
    let site = Site::new("mediaclock", 18306);
    // Built "ten days from now": this host's clock is behind the build machine's.
    let future = (manifests::time::now() + 10 * 86_400).to_string();
    let compose = site.ws.stack("future", &[("name: teststack", "name: mediaclock"), ("18080", "18306")]);
    let plain = site.ws.path("future.tar");
    let expiring = site.ws.path("future-expiring.tar");
    for (out, extra) in [(&plain, &[][..]), (&expiring, &["--valid-days", "30"][..])] {
        let mut c = Command::new(bin("bundler"));
        c.arg("build").arg("-f").arg(&compose).arg("--key").arg(&site.ws.secret);
        c.args(["--version", "1.0.1", "--release", "1", "--insecure-registry", "127.0.0.1:5000"]);
        c.arg("-o").arg(out).arg("--cache-dir").arg(&site.ws.cache).args(extra).env("SOURCE_DATE_EPOCH", &future);
        assert_eq!(run(&mut c).code, 0);
    }
    let dmi = site.ws.path("dmi");
    std::fs::create_dir_all(&dmi).unwrap();
    std::fs::write(dmi.join("sys_vendor"), "VMware, Inc.\n").unwrap();
    std::fs::write(dmi.join("product_name"), "VMware Virtual Platform\n").unwrap();

    let plan = |bundle: &Path| -> Run {
        let mut c = site.installer(&["plan"]);
        c.arg(bundle).arg("--key").arg(&site.ws.public).arg("--values").arg(&site.values).arg("--json");
        c.env("INSTALLER_DMI_DIR", &dmi);
        run(&mut c)
    };
    let r = plan(&plain);
    assert_eq!(r.code, 0, "a clock behind is a warning when the bundle does not expire: {r:?}");
    let v: serde_json::Value = serde_json::from_str(r.stdout.lines().last().unwrap()).unwrap();
    let checks = v["preflight"]["checks"].as_array().unwrap();
    let line = |name: &str| checks.iter().find(|c| c["check"] == name).unwrap().clone();
    assert!(line("hypervisor")["detail"].as_str().unwrap().starts_with("VMware"), "{}", line("hypervisor"));
    let clock = line("clock");
    assert_eq!(clock["warning"], true, "{clock}");
    assert!(clock["detail"].as_str().unwrap().contains("days before the bundle was built"), "{clock}");

    let before = docker_snapshot();
    let mut c = site.apply_cmd(&expiring);
    c.env("INSTALLER_DMI_DIR", &dmi);
    let r = run(&mut c);
    assert_eq!(r.code, 30, "an expiring bundle cannot be checked against a clock behind: {r:?}");
    assert!(r.stderr.contains("clock") && r.stderr.contains("expires"), "{r:?}");
    assert_eq!(docker_snapshot(), before);
    let r = site.apply(&plain, &[("INSTALLER_DMI_DIR", dmi.to_str().unwrap())]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("WARN clock"), "the warning shows in the apply's output: {r:?}");
    let mut c = site.installer(&["status", "--json"]);
    c.env("INSTALLER_DMI_DIR", &dmi);
    let r = run(&mut c);
    let v: serde_json::Value = serde_json::from_str(r.stdout.trim()).unwrap();
    assert!(v["hypervisor"].as_str().unwrap().starts_with("VMware"), "{v}");
}
