//! `bundler iso`: a bundle (one file or its parts) as ISO 9660 images for VMware and Hyper-V
//! sites, which attach ISO files to a VM's virtual DVD drive (Hyper-V has no USB passthrough).
//!
//! Each image holds whole files and is at most `--volume-size` bytes (default 4 GiB - 1, so the
//! image itself also fits a FAT32 stick). No file on an image is 4 GiB or larger: ISO 9660 stores
//! such a file as several extents, which many readers get wrong (media-and-deltas.md, A2). The
//! first volume carries a README for the operator, `VOLUMES.json` (which part is on which volume,
//! for the installer's hints), and on request the installer binary and the vendor's public key.
//!
//! xorriso (Debian's `xorriso`) writes the images: Rock Ridge (POSIX names and modes, owner root),
//! Joliet (Windows names), no padding, timestamps from the bundle's `created`, so the same bundle
//! gives the same images. Files are grafted from where they are: nothing is copied first.

use std::path::{Path, PathBuf};
use std::process::Command;

use manifests::Manifest;
use manifests::media::{FAT32_MAX_FILE, PartFile, VOLUMES_FILE, Volume, VolumeSet};

use crate::error::BundlerError;

/// What to write.
#[derive(Debug, Clone)]
pub struct IsoOptions {
    /// The bundle, or part 000 of a split bundle.
    pub bundle: PathBuf,
    /// Directories holding parts not beside part 000.
    pub media: Vec<PathBuf>,
    /// Where the images go.
    pub output_dir: PathBuf,
    /// Largest image size in bytes.
    pub volume_size: u64,
    /// The static installer binary, put on the first volume as `installer`.
    pub installer: Option<PathBuf>,
    /// The vendor's public key, put on the first volume; the bundle is verified with it first.
    pub public_key: Option<PathBuf>,
}

/// One image written.
#[derive(Debug, Clone, serde::Serialize)]
pub struct IsoVolume {
    /// The image file.
    pub path: PathBuf,
    /// Its volume label.
    pub label: String,
    /// Its size.
    pub size: u64,
    /// The files on it.
    pub files: Vec<String>,
}

/// A file to put on an image: its name there and where it is now.
#[derive(Debug, Clone)]
struct Graft {
    name: String,
    path: PathBuf,
    size: u64,
}

/// Write the images.
///
/// # Errors
/// xorriso missing or failing, an unreadable or incomplete bundle, a file too large for a volume.
pub fn write_isos(opts: &IsoOptions) -> Result<Vec<IsoVolume>, BundlerError> {
    let xorriso = find_xorriso()?;
    let bundle_err = |source| BundlerError::Bundle { path: opts.bundle.clone(), source };
    let (manifest, files, fingerprint) = match &opts.public_key {
        Some(key) => {
            let keys = crate::keys::load_public_keys(std::slice::from_ref(key))?;
            let reader = manifests::media::open(&opts.bundle, &opts.media, &keys).map_err(bundle_err)?;
            let files = reader.inner().files().to_vec();
            let manifest = reader.finish().map_err(bundle_err)?;
            (manifest, files, Some(keys.keys()[0].fingerprint()))
        }
        None => {
            let (m, files) = manifests::media::open_unverified(&opts.bundle, &opts.media).map_err(bundle_err)?;
            (m, files, None)
        }
    };
    check_sizes(&files)?;
    std::fs::create_dir_all(&opts.output_dir).map_err(|source| out_err(&opts.output_dir, source))?;
    let work = tempfile::Builder::new()
        .prefix(".bundler-iso-")
        .tempdir_in(&opts.output_dir)
        .map_err(|source| out_err(&opts.output_dir, source))?;

    // Volume 1's own files; README.txt and VOLUMES.json are planned at a generous fixed size and
    // written once the split is known (the real ones are smaller, so the plan holds).
    let mut first: Vec<Graft> = Vec::new();
    let placeholder = work.path().join("placeholder");
    std::fs::write(&placeholder, vec![b' '; 64 << 10]).map_err(|source| out_err(work.path(), source))?;
    for name in ["README.txt", VOLUMES_FILE] {
        first.push(Graft { name: name.into(), path: placeholder.clone(), size: 64 << 10 });
    }
    if let Some(installer) = &opts.installer {
        let size = std::fs::metadata(installer).map_err(|source| out_err(installer, source))?.len();
        first.push(Graft { name: "installer".into(), path: installer.clone(), size });
    }
    if let Some(key) = &opts.public_key {
        first.push(Graft { name: "vendor.pub".into(), path: key.clone(), size: 0 });
    }
    let bundle: Vec<Graft> =
        files.iter().map(|f| Graft { name: f.name.clone(), path: f.path.clone(), size: f.size }).collect();
    let volumes = plan_volumes(&xorriso, &first, &bundle, opts.volume_size)?;
    let count = volumes.len();
    let labels: Vec<String> = (1..=count).map(|n| label(&manifest, n, count)).collect();
    let set = VolumeSet {
        volumes: volumes
            .iter()
            .enumerate()
            .map(|(i, v)| Volume {
                number: i + 1,
                label: labels[i].clone(),
                parts: v.iter().filter(|g| bundle.iter().any(|b| b.name == g.name)).map(|g| g.name.clone()).collect(),
            })
            .collect(),
    };
    remove_stale_images(&opts.output_dir, &manifest, count);
    let mut written = Vec::new();
    for (i, mut grafts) in volumes.into_iter().enumerate() {
        let readme = work.path().join(format!("README-{}.txt", i + 1));
        std::fs::write(&readme, readme_text(&manifest, &set, i + 1, &files, fingerprint.as_deref(), opts))
            .map_err(|source| out_err(work.path(), source))?;
        let volumes_json = work.path().join(VOLUMES_FILE);
        std::fs::write(&volumes_json, serde_json::to_vec_pretty(&set).unwrap_or_default())
            .map_err(|source| out_err(work.path(), source))?;
        for g in &mut grafts {
            match g.name.as_str() {
                "README.txt" => g.path.clone_from(&readme),
                VOLUMES_FILE => g.path.clone_from(&volumes_json),
                _ => {}
            }
        }
        let name = if count == 1 {
            format!("{}-{}.iso", manifest.product, manifest.version)
        } else {
            format!("{}-{}-{}of{count}.iso", manifest.product, manifest.version, i + 1)
        };
        let out = opts.output_dir.join(name);
        let size = write_one(&xorriso, &grafts, &labels[i], &manifest, &out, work.path())?;
        if size > opts.volume_size {
            let _ = std::fs::remove_file(&out);
            return Err(BundlerError::Usage(format!(
                "{} came out at {size} bytes, more than --volume-size {}; this is a bug in the volume plan: \
                 choose a smaller --part-size",
                out.display(),
                opts.volume_size
            )));
        }
        written.push(IsoVolume {
            path: out,
            label: labels[i].clone(),
            size,
            files: grafts.into_iter().map(|g| g.name).collect(),
        });
    }
    Ok(written)
}

/// Images of this version from an earlier run with another volume count would be mistaken for
/// part of the new set.
fn remove_stale_images(dir: &Path, manifest: &Manifest, count: usize) {
    let stem = format!("{}-{}", manifest.product, manifest.version);
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.filter_map(Result::ok) {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(&stem).and_then(|r| r.strip_suffix(".iso")) else { continue };
        let stale = if rest.is_empty() {
            count > 1
        } else {
            rest.strip_prefix('-')
                .and_then(|r| r.split_once("of"))
                .is_some_and(|(n, of)| n.parse::<usize>().is_ok() && of.parse::<usize>().is_ok_and(|of| of != count))
        };
        if stale {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

fn out_err(path: &Path, source: std::io::Error) -> BundlerError {
    BundlerError::Output { path: path.to_path_buf(), source }
}

fn find_xorriso() -> Result<PathBuf, BundlerError> {
    if let Some(p) = std::env::var_os("BUNDLER_XORRISO") {
        let p = PathBuf::from(p);
        if p.is_file() {
            return Ok(p);
        }
        return Err(BundlerError::MissingTool {
            tool: "xorriso",
            hint: "BUNDLER_XORRISO names no file: point it at xorriso, or unset it to use the one on PATH",
        });
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("xorriso"))
        .find(|p| p.is_file())
        .ok_or(BundlerError::MissingTool {
            tool: "xorriso",
            hint: "install it (Debian/Ubuntu: `apt-get install xorriso`; it writes the ISO images), or set BUNDLER_XORRISO to its path",
        })
}

fn check_sizes(files: &[PartFile]) -> Result<(), BundlerError> {
    for f in files {
        if f.size > FAT32_MAX_FILE {
            return Err(BundlerError::Usage(format!(
                "{} is {} bytes: an ISO 9660 file of 4 GiB or more needs multi-extent records that many readers \
                 get wrong; build the bundle with `--part-size 4095M` and make the images from its part 000",
                f.path.display(),
                f.size
            )));
        }
    }
    Ok(())
}

/// Whole files into volumes in order: each volume as full as xorriso's own size estimate allows.
fn plan_volumes(
    xorriso: &Path,
    first: &[Graft],
    bundle: &[Graft],
    volume_size: u64,
) -> Result<Vec<Vec<Graft>>, BundlerError> {
    let readme = Graft { name: "README.txt".into(), path: first[0].path.clone(), size: first[0].size };
    let fixed = planned_size(xorriso, first)?;
    if fixed > volume_size {
        return Err(BundlerError::Usage(format!(
            "the first volume's own files ({}) take {fixed} bytes, more than --volume-size {volume_size}",
            first.iter().map(|g| g.name.as_str()).collect::<Vec<_>>().join(", ")
        )));
    }
    let mut volumes: Vec<Vec<Graft>> = vec![first.to_vec()];
    for file in bundle {
        let current = volumes.last_mut().expect("one volume at least");
        current.push(file.clone());
        if planned_size(xorriso, current)? <= volume_size {
            continue;
        }
        current.pop();
        let next = vec![readme.clone(), file.clone()];
        if planned_size(xorriso, &next)? > volume_size {
            return Err(BundlerError::Usage(format!(
                "{} ({} bytes) does not fit one volume of {volume_size} bytes; build with a smaller --part-size",
                file.path.display(),
                file.size
            )));
        }
        volumes.push(next);
    }
    Ok(volumes)
}

fn mkisofs_args(grafts: &[Graft]) -> Vec<std::ffi::OsString> {
    let mut args: Vec<std::ffi::OsString> =
        ["-as", "mkisofs", "-iso-level", "3", "-r", "-J", "-joliet-long", "-no-pad", "-graft-points"]
            .iter()
            .map(Into::into)
            .collect();
    for g in grafts {
        let mut a = std::ffi::OsString::from(format!("/{}=", g.name));
        a.push(&g.path);
        args.push(a);
    }
    args
}

fn planned_size(xorriso: &Path, grafts: &[Graft]) -> Result<u64, BundlerError> {
    let mut args = mkisofs_args(grafts);
    args.insert(2, "-print-size".into());
    let out = Command::new(xorriso).args(&args).output().map_err(|source| tool_err(xorriso, &source.to_string()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let blocks: u64 = text
        .lines()
        .rev()
        .find_map(|l| l.trim().parse().ok())
        .ok_or_else(|| tool_err(xorriso, &String::from_utf8_lossy(&out.stderr)))?;
    Ok(blocks * 2048)
}

fn write_one(
    xorriso: &Path,
    grafts: &[Graft],
    label: &str,
    manifest: &Manifest,
    out: &Path,
    work: &Path,
) -> Result<u64, BundlerError> {
    let tmp = work.join("image.iso");
    let mut args = mkisofs_args(grafts);
    // Every file and directory dated `created`, so the image does not depend on when the parts
    // were copied.
    args.splice(
        2..2,
        [
            "-o".into(),
            tmp.clone().into_os_string(),
            "-V".into(),
            label.into(),
            "--set_all_file_dates".into(),
            format!("={}", manifest.created).into(),
        ],
    );
    let result = Command::new(xorriso)
        .args(&args)
        // xorriso takes every timestamp from it: the same bundle gives the same image.
        .env("SOURCE_DATE_EPOCH", manifest.created.to_string())
        .output()
        .map_err(|source| tool_err(xorriso, &source.to_string()))?;
    if !result.status.success() {
        return Err(tool_err(xorriso, &String::from_utf8_lossy(&result.stderr)));
    }
    let file = std::fs::File::open(&tmp).map_err(|source| out_err(&tmp, source))?;
    file.sync_all().map_err(|source| out_err(&tmp, source))?;
    let size = file.metadata().map_err(|source| out_err(&tmp, source))?.len();
    std::fs::rename(&tmp, out).map_err(|source| out_err(out, source))?;
    Ok(size)
}

fn tool_err(xorriso: &Path, message: &str) -> BundlerError {
    let last: Vec<&str> = message.lines().filter(|l| !l.trim().is_empty()).rev().take(3).collect();
    BundlerError::ToolFailed {
        tool: xorriso.to_path_buf(),
        message: last.into_iter().rev().collect::<Vec<_>>().join("; "),
    }
}

/// `PRODUCT_1_4_0_1OF2`: ISO 9660 volume ids are at most 32 upper-case letters, digits and `_`;
/// the product name is shortened first so that version and volume number always show.
#[must_use]
pub fn label(manifest: &Manifest, n: usize, count: usize) -> String {
    let clean = |s: &str| -> String {
        s.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }).collect()
    };
    let tail = format!("_{}_{n}OF{count}", clean(&manifest.version));
    let room = 32usize.saturating_sub(tail.len()).max(1);
    let product: String = clean(&manifest.product).chars().take(room).collect();
    let mut l = format!("{product}{tail}");
    l.truncate(32);
    l
}

fn readme_text(
    m: &Manifest,
    set: &VolumeSet,
    this: usize,
    files: &[PartFile],
    fingerprint: Option<&str>,
    opts: &IsoOptions,
) -> String {
    use std::fmt::Write;
    let count = set.volumes.len();
    let first = &files[0].name;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{} {} (release {}), built {}",
        m.product,
        m.version,
        m.release,
        manifests::time::rfc3339(m.created)
    );
    let _ = writeln!(s, "This is volume {this} of {count} (label {}).", set.volumes[this - 1].label);
    if this > 1 {
        let _ = writeln!(s, "\nStart with volume 1: its README.txt says how to install.");
        let _ = writeln!(s, "This volume holds: {}", set.volumes[this - 1].parts.join(", "));
        return s;
    }
    let _ = writeln!(s, "\nVolumes and the bundle files on them:");
    for v in &set.volumes {
        let _ = writeln!(s, "  volume {} ({}): {}", v.number, v.label, v.parts.join(", "));
    }
    if let Some(fp) = fingerprint {
        let _ = writeln!(
            s,
            "\nvendor.pub is the vendor's public key, fingerprint {fp}.\n\
             Compare it with the fingerprint your vendor gave you (by phone or mail, not from this disc)."
        );
    }
    let key = if fingerprint.is_some() { " --key /mnt/vol1/vendor.pub" } else { "" };
    let installer = if opts.installer.is_some() { "/mnt/vol1/installer" } else { "installer" };
    let media: String = (2..=count).map(|n| format!(" --media /mnt/vol{n}")).collect();
    let _ = writeln!(s, "\nTo install, on the Linux VM, as root:");
    let _ = writeln!(
        s,
        "  1. Attach every volume: one virtual CD/DVD drive per image (VMware: CD/DVD drive ->\n     \
         Datastore ISO File; Hyper-V: Set-VMDvdDrive or Add-VMDvdDrive). Several drives show up as\n     \
         /dev/sr0, /dev/sr1, ... (`lsblk` lists them with their labels)."
    );
    let mounts: String = (1..=count)
        .map(|n| {
            format!(
                "     mkdir -p /mnt/vol{n} && mount -o ro /dev/disk/by-label/{} /mnt/vol{n}\n",
                set.volumes[n - 1].label
            )
        })
        .collect();
    let _ = write!(s, "  2. Mount them read-only:\n{mounts}");
    let _ = writeln!(s, "  3. Check, then install (nothing is copied off the discs first):");
    let _ = writeln!(s, "     {installer} verify /mnt/vol1/{first}{media}{key}");
    let _ = writeln!(s, "     {installer} apply /mnt/vol1/{first}{media}{key}");
    let _ = writeln!(
        s,
        "\nEvery part is checked against the signed bundle before anything changes; a missing or damaged\n\
         part is named, with the volume that holds it. See the operator guide (docs/operator.md) for more."
    );
    s
}
