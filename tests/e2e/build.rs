//! `bundler build`, `inspect`, `verify`, `keygen` against the local registry (issue 3).

use std::process::Command;

use e2e::{Workspace, bin, e2e_enabled, run, split_tar};
use manifests::Manifest;

fn manifest_of(bundle: &std::path::Path) -> Manifest {
    let bytes = std::fs::read(bundle).expect("read bundle");
    let entries = split_tar(&bytes);
    Manifest::from_bytes(&entries[0].data).expect("manifest")
}

/// No output file and no temp file left in the directory.
fn assert_nothing_left(dir: &std::path::Path, out: &std::path::Path) {
    assert!(!out.exists(), "{} was left behind", out.display());
    let leftovers: Vec<_> = std::fs::read_dir(dir)
        .expect("read dir")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("partial"))
        .collect();
    assert!(leftovers.is_empty(), "temp files left: {leftovers:?}");
}

#[test]
fn build_verify_round_trip_stores_shared_layer_once() {
    if !e2e_enabled("build_verify_round_trip_stores_shared_layer_once") {
        return;
    }
    let ws = Workspace::new();
    let compose = ws.stack("s", &[]);
    let out = ws.path("b.tar");
    let r = ws.build(&compose, 1, &out, &[]);
    assert_eq!(r.code, 0, "{r:?}");

    for tool in ["bundler", "installer"] {
        let r = run(Command::new(bin(tool))
            .arg("verify")
            .arg(&out)
            .arg("--key")
            .arg(&ws.public)
            .env("INSTALLER_STATE_DIR", ws.path("state")));
        assert_eq!(r.code, 0, "{tool} verify: {r:?}");
        assert!(r.stderr.contains("all 17 entries match"), "{r:?}");
    }

    let bytes = std::fs::read(&out).unwrap();
    let entries = split_tar(&bytes);
    let paths: Vec<String> = entries.iter().map(e2e::RawEntry::path).collect();
    assert_eq!(paths[0], "bundle.json");
    assert_eq!(paths[1], "bundle.json.minisig");
    assert_eq!(paths[2], "stack/compose.yaml");
    let manifest = Manifest::from_bytes(&entries[0].data).unwrap();
    // The busybox base layer is the first layer of all three images and is stored once.
    let base = manifest.images[0].layers[0].blob.digest;
    assert!(manifest.images.iter().all(|i| i.layers[0].blob.digest == base));
    let base_path = format!("images/blobs/sha256/{}", base.hex());
    assert_eq!(paths.iter().filter(|p| **p == base_path).count(), 1);
    let mut sorted = paths.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), paths.len(), "an entry is stored twice");
    // Configs and manifests come before every layer.
    let first_layer = paths.iter().position(|p| *p == base_path).unwrap();
    for image in &manifest.images {
        for small in [image.manifest.digest, image.config.digest] {
            let p = paths.iter().position(|x| x.ends_with(&small.hex())).unwrap();
            assert!(p < first_layer, "{small} after a layer");
        }
    }

    let r = run(Command::new(bin("bundler")).args(["inspect", "--json"]).arg(&out));
    assert_eq!(r.code, 0, "{r:?}");
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["product"], "teststack");
    assert_eq!(v["release"], 1);
    assert_eq!(v["start_order"], serde_json::json!([["db"], ["migrate"], ["web"]]));
    assert_eq!(v["migrations"], serde_json::json!(["migrate"]));
    assert_eq!(v["signature_checked"], false);
}

#[test]
fn rebuild_is_byte_identical_and_reuses_the_cache() {
    if !e2e_enabled("rebuild_is_byte_identical_and_reuses_the_cache") {
        return;
    }
    let ws = Workspace::new();
    let compose = ws.stack("s", &[]);
    let (a, b) = (ws.path("a.tar"), ws.path("b.tar"));
    assert_eq!(ws.build(&compose, 1, &a, &[]).code, 0);
    let r = ws.build(&compose, 1, &b, &["--json"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap(), "two builds differ");
    let v: serde_json::Value = serde_json::from_str(r.stdout.trim()).unwrap();
    assert_eq!(v["downloaded_bytes"], 0, "the second build downloaded again: {v}");
    assert!(v["cached_bytes"].as_u64().unwrap() > 1_000_000);
}

#[test]
fn a_cache_file_changed_since_an_earlier_build_is_refused_dropped_and_fetched_again() {
    if !e2e_enabled("a_cache_file_changed_since_an_earlier_build_is_refused_dropped_and_fetched_again") {
        return;
    }
    let ws = Workspace::new();
    let compose = ws.stack("s", &[]);
    let (a, b, c) = (ws.path("a.tar"), ws.path("b.tar"), ws.path("c.tar"));
    assert_eq!(ws.build(&compose, 1, &a, &[]).code, 0);
    // Bit rot (or a torn write) in the largest cached blob, same length.
    let blobs = ws.cache.join("blobs").join("sha256");
    let largest = std::fs::read_dir(&blobs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let mut bytes = std::fs::read(&largest).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&largest, &bytes).unwrap();

    let r = ws.build(&compose, 1, &b, &[]);
    assert_ne!(r.code, 0, "a changed cache file went into a signed bundle: {r:?}");
    assert!(r.stderr.contains("changed") && r.stderr.contains("hint:"), "{r:?}");
    assert!(!b.exists(), "a partial bundle was left behind");
    assert!(!largest.exists(), "the bad cache file was kept");
    let r = ws.build(&compose, 1, &c, &["--json"]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&c).unwrap(), "the rebuilt bundle differs");
}

#[test]
fn multi_arch_index_resolves_to_linux_amd64() {
    if !e2e_enabled("multi_arch_index_resolves_to_linux_amd64") {
        return;
    }
    let ws = Workspace::new();
    let compose = ws.stack("s", &[("127.0.0.1:5000/stack/db:1", "127.0.0.1:5000/test/multi:1")]);
    let out = ws.path("b.tar");
    let r = ws.build(&compose, 1, &out, &[]);
    assert_eq!(r.code, 0, "{r:?}");
    let m = manifest_of(&out);
    let multi = m.image("127.0.0.1:5000/test/multi:1").unwrap();
    assert!(multi.index_digest.is_some());
    let direct = ws.stack("d", &[("127.0.0.1:5000/stack/db:1", "127.0.0.1:5000/test/app:1")]);
    let out2 = ws.path("c.tar");
    assert_eq!(ws.build(&direct, 1, &out2, &[]).code, 0);
    let app = manifest_of(&out2).image("127.0.0.1:5000/test/app:1").unwrap().clone();
    assert_eq!(multi.manifest.digest, app.manifest.digest, "the index did not resolve to the amd64 manifest");
}

#[test]
fn registry_credentials_come_from_the_docker_config() {
    if !e2e_enabled("registry_credentials_come_from_the_docker_config") {
        return;
    }
    let ws = Workspace::new();
    let compose = ws.stack("s", &[("127.0.0.1:5000/stack/db:1", "127.0.0.1:5001/test/app:1")]);
    let out = ws.path("b.tar");
    let dev = std::env::var("BUNDLER_DEV_DIR").unwrap_or_else(|_| "/var/lib/bundler-dev".into());
    let mut cmd = Command::new(bin("bundler"));
    cmd.arg("build")
        .arg("-f")
        .arg(&compose)
        .arg("--key")
        .arg(&ws.secret)
        .args(["--version", "1", "--release", "1", "--insecure-registry", "127.0.0.1:5000,127.0.0.1:5001"])
        .arg("-o")
        .arg(&out)
        .arg("--cache-dir")
        .arg(&ws.cache)
        .env("DOCKER_CONFIG", format!("{dev}/docker-config"));
    let r = run(&mut cmd);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(out.exists());
}

struct BadBuild {
    name: &'static str,
    replacements: Vec<(&'static str, &'static str)>,
    args: Vec<&'static str>,
    env: Vec<(&'static str, String)>,
    code: i32,
    needles: Vec<&'static str>,
}

#[test]
fn bad_build_inputs_fail_clearly_and_leave_nothing() {
    if !e2e_enabled("bad_build_inputs_fail_clearly_and_leave_nothing") {
        return;
    }
    let ws = Workspace::new();
    let empty_config = ws.path("empty-docker-config");
    std::fs::create_dir_all(&empty_config).unwrap();
    let case = |name, replacements: Vec<(&'static str, &'static str)>, code, needles| BadBuild {
        name,
        replacements,
        args: vec![],
        env: vec![],
        code,
        needles,
    };
    let unsupported_key = ("    restart: unless-stopped\n  migrate:", "    frobnicate: true\n  migrate:");
    let cases = vec![
        case(
            "unsupported key",
            vec![unsupported_key],
            10,
            vec!["unknown service key `frobnicate`", "compose.yaml:", "hint:"],
        ),
        case("malformed yaml", vec![("services:\n", "services: [\n")], 10, vec!["compose.yaml", "hint:"]),
        case("tag does not exist", vec![("stack/db:1", "stack/db:nope")], 14, vec!["stack/db:nope", "hint:"]),
        BadBuild {
            args: vec!["--insecure-registry", "127.0.0.1:5999"],
            ..case(
                "registry unreachable",
                vec![("127.0.0.1:5000/stack/db:1", "127.0.0.1:5999/stack/db:1")],
                12,
                vec!["127.0.0.1:5999", "hint:"],
            )
        },
        BadBuild {
            env: vec![("DOCKER_CONFIG", empty_config.display().to_string())],
            ..case(
                "auth refused",
                vec![("127.0.0.1:5000/stack/db:1", "127.0.0.1:5001/test/app:1")],
                13,
                vec!["127.0.0.1:5001", "docker login", "hint:"],
            )
        },
        case("zstd-only image", vec![("stack/db:1", "test/zstd:1")], 15, vec!["test/zstd:1", "zstd", "hint:"]),
        case("foreign architecture", vec![("stack/db:1", "test/arm:1")], 15, vec!["test/arm:1", "arm64", "hint:"]),
    ];
    for case in cases {
        let compose = ws.stack(case.name.replace(' ', "-").as_str(), &case.replacements);
        let dir = ws.path(&format!("out-{}", case.name.replace(' ', "-")));
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("b.tar");
        let mut cmd = Command::new(bin("bundler"));
        cmd.arg("build")
            .arg("-f")
            .arg(&compose)
            .arg("--key")
            .arg(&ws.secret)
            .args(["--version", "1", "--release", "1", "--insecure-registry", "127.0.0.1:5000,127.0.0.1:5001"])
            .args(&case.args)
            .arg("-o")
            .arg(&out)
            .arg("--cache-dir")
            .arg(ws.path("bad-cache"));
        for (k, v) in &case.env {
            cmd.env(k, v);
        }
        let r = run(&mut cmd);
        assert_eq!(r.code, case.code, "{}: {r:?}", case.name);
        for n in &case.needles {
            assert!(r.stderr.contains(n), "{}: stderr lacks `{n}`: {}", case.name, r.stderr);
        }
        assert_nothing_left(&dir, &out);
    }

    // Missing compose file, missing key file.
    let compose = ws.stack("ok", &[]);
    let out = ws.path("b.tar");
    let r = run(Command::new(bin("bundler"))
        .args(["build", "-f"])
        .arg(ws.path("nope.yaml"))
        .arg("--key")
        .arg(&ws.secret)
        .args(["--version", "1", "--release", "1", "-o"])
        .arg(&out));
    assert_eq!(r.code, 10, "{r:?}");
    assert!(r.stderr.contains("nope.yaml") && r.stderr.contains("hint:"), "{r:?}");
    let r = run(Command::new(bin("bundler"))
        .args(["build", "-f"])
        .arg(&compose)
        .arg("--key")
        .arg(ws.path("missing.key"))
        .args(["--version", "1", "--release", "1", "-o"])
        .arg(&out));
    assert_eq!(r.code, 11, "{r:?}");
    assert!(r.stderr.contains("missing.key") && r.stderr.contains("bundler keygen"), "{r:?}");
    assert!(!out.exists());
}

#[test]
fn digest_mismatch_from_the_registry_is_refused() {
    if !e2e_enabled("digest_mismatch_from_the_registry_is_refused") {
        return;
    }
    // Push a small image with a unique layer, then damage that layer in the registry's storage.
    let ws = Workspace::new();
    let layer = {
        let mut t = tar::Builder::new(Vec::new());
        let data = format!("unique {:?}\n", std::time::SystemTime::now());
        let mut h = tar::Header::new_ustar();
        h.set_path("unique.txt").unwrap();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        t.append(&h, data.as_bytes()).unwrap();
        t.into_inner().unwrap()
    };
    let layer_digest = manifests::Digest::of(&layer);
    let config = serde_json::json!({"architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [layer_digest.to_string()]}, "config": {}});
    let config = serde_json::to_vec(&config).unwrap();
    let config_digest = manifests::Digest::of(&config);
    let push_blob = |bytes: &[u8], digest: &manifests::Digest| {
        let f = ws.path("blob");
        std::fs::write(&f, bytes).unwrap();
        let r = run(Command::new("curl").args([
            "-sf",
            "-X",
            "POST",
            "-D",
            "-",
            "-o",
            "/dev/null",
            "http://127.0.0.1:5000/v2/test/corrupt/blobs/uploads/",
        ]));
        let location = r
            .stdout
            .lines()
            .find_map(|l| l.strip_prefix("Location: ").or_else(|| l.strip_prefix("location: ")))
            .expect("upload location")
            .trim()
            .to_string();
        let sep = if location.contains('?') { '&' } else { '?' };
        let r = run(Command::new("curl")
            .args(["-sf", "-X", "PUT", "-H", "Content-Type: application/octet-stream", "--data-binary"])
            .arg(format!("@{}", f.display()))
            .arg(format!("{location}{sep}digest={digest}")));
        assert_eq!(r.code, 0, "{r:?}");
    };
    push_blob(&layer, &layer_digest);
    push_blob(&config, &config_digest);
    let manifest = serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest.to_string(), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest.to_string(), "size": layer.len()}]});
    let r = run(Command::new("curl").args([
        "-sf",
        "-X",
        "PUT",
        "-H",
        "Content-Type: application/vnd.oci.image.manifest.v1+json",
        "--data-binary",
        &manifest.to_string(),
        "http://127.0.0.1:5000/v2/test/corrupt/manifests/1",
    ]));
    assert_eq!(r.code, 0, "{r:?}");
    let dev = std::env::var("BUNDLER_DEV_DIR").unwrap_or_else(|_| "/var/lib/bundler-dev".into());
    let hex = layer_digest.hex();
    let data = format!("{dev}/registry-open/docker/registry/v2/blobs/sha256/{}/{hex}/data", &hex[..2]);
    let mut stored = std::fs::read(&data).expect("registry storage path");
    stored[600] ^= 0x55;
    std::fs::write(&data, &stored).unwrap();

    let compose = ws.stack("s", &[("stack/db:1", "test/corrupt:1")]);
    let out = ws.path("b.tar");
    let r = ws.build(&compose, 1, &out, &[]);
    assert_eq!(r.code, 16, "{r:?}");
    assert!(r.stderr.contains("test/corrupt:1") && r.stderr.contains("hint:"), "{r:?}");
    assert_nothing_left(ws.dir.path(), &out);
    assert!(!ws.cache.join("blobs/sha256").join(&hex).exists(), "a bad blob was cached");
}

#[test]
fn disk_full_on_the_output_directory_leaves_nothing() {
    if !e2e_enabled("disk_full_on_the_output_directory_leaves_nothing") {
        return;
    }
    let ws = Workspace::new();
    let compose = ws.stack("s", &[]);
    let small = ws.path("small");
    std::fs::create_dir_all(&small).unwrap();
    let r = run(Command::new("mount").args(["-t", "tmpfs", "-o", "size=256k", "tmpfs"]).arg(&small));
    assert_eq!(r.code, 0, "mount tmpfs (the e2e tests run as root): {r:?}");
    let out = small.join("b.tar");
    let r = ws.build(&compose, 1, &out, &[]);
    let listing: Vec<_> = std::fs::read_dir(&small).unwrap().filter_map(Result::ok).map(|e| e.file_name()).collect();
    let _ = run(Command::new("umount").arg(&small));
    assert_eq!(r.code, 17, "{r:?}");
    assert!(r.stderr.contains("hint:") && r.stderr.contains("space"), "{r:?}");
    assert!(listing.is_empty(), "left in the full directory: {listing:?}");
}

#[test]
fn keygen_writes_0600_and_never_overwrites_without_force() {
    use std::os::unix::fs::PermissionsExt;
    let ws = Workspace::new();
    let mode = std::fs::metadata(&ws.secret).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let before = std::fs::read(&ws.secret).unwrap();
    let keygen = |force: bool| {
        let mut c = Command::new(bin("bundler"));
        c.args(["keygen", "--secret-key"]).arg(&ws.secret).arg("--public-key").arg(&ws.public);
        if force {
            c.arg("--force");
        }
        run(&mut c)
    };
    let r = keygen(false);
    assert_eq!(r.code, 11, "{r:?}");
    assert!(r.stderr.contains("--force"), "{r:?}");
    assert_eq!(std::fs::read(&ws.secret).unwrap(), before);
    assert_eq!(keygen(true).code, 0);
    assert_ne!(std::fs::read(&ws.secret).unwrap(), before);
    let public = std::fs::read_to_string(&ws.public).unwrap();
    assert!(public.starts_with("untrusted comment: minisign public key "), "{public}");
}

/// The CI example (examples/ci/build-bundle.sh, which the GitHub Actions and GitLab CI files
/// call) run here with the same inputs a CI job gives it: the secret key only in an
/// environment variable, never on disk; the key from standard input works too.
#[test]
fn the_ci_example_builds_a_signed_bundle_with_the_key_from_the_environment() {
    if !e2e::e2e_enabled("the_ci_example_builds_a_signed_bundle_with_the_key_from_the_environment") {
        return;
    }
    let ws = Workspace::new();
    let compose = ws.stack("ci", &[]);
    let job = ws.path("job");
    std::fs::create_dir_all(&job).unwrap();
    let key_text = std::fs::read_to_string(&ws.secret).unwrap();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/ci/build-bundle.sh");
    let ci = |key: Option<&str>, extra: &[(&str, &std::ffi::OsStr)]| {
        let mut c = Command::new("bash");
        c.arg(&script)
            .current_dir(&job)
            .env("BUNDLER", e2e::bin("bundler"))
            .env("COMPOSE", &compose)
            .env("VERSION", "2.0.0")
            .env("RELEASE", "7")
            .env("OUT", job.join("dist/product-2.0.0.bundle"))
            .env("PUBLIC_KEY", &ws.public)
            .env("SOURCE_DATE_EPOCH", "1790000000")
            .env(
                "BUNDLER_ARGS",
                format!("--insecure-registry 127.0.0.1:5000,127.0.0.1:5001 --cache-dir {}", ws.cache.display()),
            )
            .env_remove("BUNDLER_SECRET_KEY");
        if let Some(k) = key {
            c.env("BUNDLER_SECRET_KEY", k);
        }
        c.envs(extra.iter().copied());
        run(&mut c)
    };
    let r = ci(None, &[]);
    assert_ne!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("BUNDLER_SECRET_KEY"), "{r:?}");
    let r = ci(Some(&key_text), &[]);
    assert_eq!(r.code, 0, "{r:?}");
    let bundle = job.join("dist/product-2.0.0.bundle");
    let m = manifest_of(&bundle);
    assert_eq!((m.version.as_str(), m.release), ("2.0.0", 7));
    assert!(job.join("dist/product-2.0.0.bundle.sha256").exists());
    // For media: parts and ISO images, with the sums a person can check by hand.
    std::fs::remove_file(&bundle).unwrap();
    let installer = e2e::bin("installer");
    let media: [(&str, &std::ffi::OsStr); 4] = [
        ("PART_SIZE", "256K".as_ref()),
        ("ISO_DIR", job.join("dist/iso").into_os_string().leak()),
        ("INSTALLER_BIN", installer.as_os_str()),
        ("OUT", job.join("dist/product-2.0.0.bundle").into_os_string().leak()),
    ];
    let r = ci(Some(&key_text), &media);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(!bundle.exists() && job.join("dist/product-2.0.0.bundle.003").exists(), "{r:?}");
    let sums =
        run(Command::new("sha256sum").arg("-c").arg("product-2.0.0.bundle.sha256").current_dir(job.join("dist")));
    assert_eq!(sums.code, 0, "{sums:?}");
    assert!(sums.stdout.contains("product-2.0.0.bundle.000: OK") && sums.stdout.contains(".003: OK"), "{sums:?}");
    let isos: Vec<_> = std::fs::read_dir(job.join("dist/iso")).unwrap().flatten().map(|e| e.file_name()).collect();
    assert_eq!(isos, ["teststack-2.0.0.iso"], "one volume holds it all");
    // Nothing under the job's directory holds the key.
    let secret_line = key_text.lines().nth(1).unwrap().to_string();
    let mut todo = vec![job.clone()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            if e.path().is_dir() {
                todo.push(e.path());
            } else {
                let bytes = std::fs::read(e.path()).unwrap();
                assert!(
                    !String::from_utf8_lossy(&bytes).contains(&secret_line),
                    "{} holds the secret key",
                    e.path().display()
                );
            }
        }
    }
    // `--key -`: from standard input.
    let mut c = Command::new(e2e::bin("bundler"));
    c.args(["build", "-f"])
        .arg(&compose)
        .args(["--key", "-", "--version", "2.0.1", "--release", "8", "-o"])
        .arg(job.join("stdin.bundle"))
        .args(["--insecure-registry", "127.0.0.1:5000,127.0.0.1:5001", "--cache-dir"])
        .arg(&ws.cache)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = c.spawn().unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), key_text.as_bytes()).unwrap();
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(manifest_of(&job.join("stdin.bundle")).release, 8);
    // An unset variable names it, with the key error's exit code.
    let r = run(Command::new(e2e::bin("bundler"))
        .args(["build", "-f"])
        .arg(&compose)
        .args(["--key", "env:NO_SUCH_KEY_VAR", "--version", "1", "--release", "1", "-o"])
        .arg(job.join("x.bundle"))
        .env_remove("NO_SUCH_KEY_VAR"));
    assert_eq!(r.code, 11, "{r:?}");
    assert!(r.stderr.contains("NO_SUCH_KEY_VAR"), "{r:?}");
}
