//! `installer push` (issue 15) against real registries: Debian's docker-registry (Docker
//! Distribution 2.8), one open and one with htpasswd auth, each started by the test on its own
//! port and data directory. The pushed images are pulled back by the real dockerd.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use e2e::{Run, Workspace, bin, e2e_enabled, run};
use manifests::Manifest;

/// A docker-registry process on `127.0.0.1:port`, killed on drop (also the swarm tests' site
/// registry).
pub(crate) struct Registry {
    child: Child,
    port: u16,
    root: PathBuf,
}

impl Registry {
    pub(crate) fn start(dir: &Path, port: u16, htpasswd: Option<&Path>) -> Self {
        Self::start_with(dir, port, htpasswd, None)
    }

    /// With `tls`: (certificate, key) PEM files the registry serves HTTPS with.
    fn start_with(dir: &Path, port: u16, htpasswd: Option<&Path>, tls: Option<(&Path, &Path)>) -> Self {
        let root = dir.join(format!("registry-{port}"));
        std::fs::create_dir_all(&root).unwrap();
        let auth = htpasswd
            .map(|p| format!("auth: {{htpasswd: {{realm: test, path: {}}}}}\n", p.display()))
            .unwrap_or_default();
        let tls = tls
            .map(|(c, k)| format!(", tls: {{certificate: {}, key: {}}}", c.display(), k.display()))
            .unwrap_or_default();
        let config = root.join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog: {{level: error}}\nstorage: {{filesystem: {{rootdirectory: {}}}, delete: {{enabled: true}}}}\nhttp: {{addr: 127.0.0.1:{port}{tls}}}\n{auth}",
                root.join("data").display()
            ),
        )
        .unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry (scripts/setup installs it)");
        let reg = Self { child, port, root };
        crate::apply::wait_until("the registry to listen", std::time::Duration::from_secs(20), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        reg
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Every file the registry stores (a failed push must add no manifest).
    fn manifests(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut todo = vec![self.root.join("data")];
        while let Some(d) = todo.pop() {
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                let p = e.path();
                if p.is_dir() {
                    todo.push(p);
                } else if p.to_string_lossy().contains("_manifests") {
                    out.push(p.display().to_string());
                }
            }
        }
        out.sort();
        out
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn push(ws: &Workspace, bundle: &Path, registry: &str, extra: &[&str], env: &[(&str, &Path)]) -> Run {
    let mut c = Command::new(bin("installer"));
    c.arg("push").arg(bundle).arg("--key").arg(&ws.public).args(["--registry", registry, "--plain-http", "--json"]);
    c.args(extra).env("INSTALLER_STATE_DIR", ws.path("state")).env("DOCKER_CONFIG", ws.path("no-docker-config"));
    for (k, v) in env {
        c.env(k, v);
    }
    run(&mut c)
}

fn pushed(r: &Run) -> serde_json::Value {
    let line = r.stdout.lines().rev().find(|l| l.contains("\"pushed\"")).unwrap_or_else(|| panic!("no report: {r:?}"));
    serde_json::from_str(line).unwrap()
}

fn manifest_of_part0(base: &Path) -> Manifest {
    let bytes = std::fs::read(format!("{}.000", base.display())).unwrap();
    let entries = e2e::split_tar(&[bytes.as_slice(), &[0u8; 1024]].concat());
    Manifest::from_bytes(&entries[0].data).unwrap()
}

#[test]
fn push_keeps_every_digest_and_a_rerun_sends_nothing() {
    if !e2e_enabled("push_keeps_every_digest_and_a_rerun_sends_nothing") {
        return;
    }
    let ws = Workspace::new();
    let registry = Registry::start(ws.dir.path(), 5012, None);
    let base = ws.path("b.tar");
    let r = ws.build(&ws.stack("s", &[]), 1, &base, &["--part-size", "256K"]);
    assert_eq!(r.code, 0, "{r:?}");
    let m = manifest_of_part0(&base);
    let first = PathBuf::from(format!("{}.000", base.display()));
    let dest = format!("{}/acme/prod", registry.host());

    let r = push(&ws, &first, &dest, &["--jobs", "3"], &[]);
    assert_eq!(r.code, 0, "{r:?}");
    let report = pushed(&r);
    assert!(report["bytes_sent"].as_u64().unwrap() > 0, "{report}");
    assert!(
        report["blobs_mounted"].as_u64().unwrap() >= 1,
        "the shared base layer is linked, not sent again: {report}"
    );

    for image in &m.images {
        let path = image.reference.split_once('/').unwrap().1.split(':').next().unwrap();
        let repo = format!("{dest}/{path}");
        // The registry serves the bundle's manifest bytes: same digest, by tag and by digest.
        let raw = run(Command::new("skopeo")
            .args(["inspect", "--raw", "--tls-verify=false"])
            .arg(format!("docker://{repo}:1")));
        assert_eq!(raw.code, 0, "{raw:?}");
        assert_eq!(manifests::Digest::of(raw.stdout.as_bytes()), image.manifest.digest, "{repo}");
        let entry =
            report["images"].as_array().unwrap().iter().find(|i| i["reference"] == image.reference.as_str()).unwrap();
        assert_eq!(entry["pinned"], format!("{repo}@{}", image.manifest.digest).as_str());
        // Docker pulls it by digest (127.0.0.1 is an insecure registry by default) and gets the
        // bundle's image ID.
        let pinned = format!("{repo}@{}", image.manifest.digest);
        let pull = run(Command::new("docker").args(["pull", "-q", &pinned]));
        assert_eq!(pull.code, 0, "{pull:?}");
        let id = run(Command::new("docker").args(["image", "inspect", "-f", "{{.Id}}", &pinned]));
        assert_eq!(id.stdout.trim(), image.config.digest.to_string());
        let _ = run(Command::new("docker").args(["rmi", &pinned]));
    }

    // Again: nothing sent, nothing written.
    let r = push(&ws, &first, &dest, &[], &[]);
    assert_eq!(r.code, 0, "{r:?}");
    let again = pushed(&r);
    assert_eq!((again["bytes_sent"].as_u64(), again["manifests_written"].as_u64()), (Some(0), Some(0)), "{again}");
}

#[test]
fn push_refuses_a_damaged_bundle_wrong_credentials_and_no_registry_without_writing() {
    if !e2e_enabled("push_refuses_a_damaged_bundle_wrong_credentials_and_no_registry_without_writing") {
        return;
    }
    let ws = Workspace::new();
    let htpasswd = ws.path("htpasswd");
    let h = run(Command::new("htpasswd").args(["-Bbn", "site", "s3cret"]));
    assert_eq!(h.code, 0, "{h:?}");
    std::fs::write(&htpasswd, h.stdout).unwrap();
    let registry = Registry::start(ws.dir.path(), 5013, Some(&htpasswd));
    let bundle = ws.path("b.tar");
    assert_eq!(ws.build(&ws.stack("s", &[]), 1, &bundle, &[]).code, 0);
    let docker_config = |user: &str, password: &str| -> PathBuf {
        let dir = ws.path(&format!("docker-config-{user}-{password}"));
        std::fs::create_dir_all(&dir).unwrap();
        let auth = base64_encode(&format!("{user}:{password}"));
        std::fs::write(
            dir.join("config.json"),
            format!(r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#, registry.host()),
        )
        .unwrap();
        dir
    };

    // No credentials, then wrong ones: exit 13 (registry-auth), no manifest stored.
    let r = push(&ws, &bundle, &registry.host(), &[], &[]);
    assert_eq!(r.code, 13, "{r:?}");
    assert!(r.stderr.contains("hint: log in first"), "{r:?}");
    let r = push(&ws, &bundle, &registry.host(), &[], &[("DOCKER_CONFIG", &docker_config("site", "wrong"))]);
    assert_eq!(r.code, 13, "{r:?}");
    assert!(registry.manifests().is_empty(), "{:?}", registry.manifests());

    // A damaged bundle: refused before anything is sent.
    let mut bytes = std::fs::read(&bundle).unwrap();
    let at = bytes.len() - 40_000;
    bytes[at] ^= 1;
    let damaged = ws.path("damaged.tar");
    std::fs::write(&damaged, bytes).unwrap();
    let good = docker_config("site", "s3cret");
    let r = push(&ws, &damaged, &registry.host(), &[], &[("DOCKER_CONFIG", &good)]);
    assert_eq!(r.code, 20, "{r:?}");
    assert!(registry.manifests().is_empty());

    // Nothing listening: exit 12 with a hint.
    let r = push(&ws, &bundle, "127.0.0.1:5019", &[], &[("DOCKER_CONFIG", &good)]);
    assert_eq!(r.code, 12, "{r:?}");
    assert!(r.stderr.contains("hint: check that 127.0.0.1:5019 is up"), "{r:?}");

    // The right credentials from the Docker config: pushed.
    let r = push(&ws, &bundle, &registry.host(), &[], &[("DOCKER_CONFIG", &good)]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(pushed(&r)["images"].as_array().unwrap().len(), 3);
}

fn base64_encode(text: &str) -> String {
    let r = run(Command::new("sh").arg("-c").arg(format!("printf %s '{text}' | base64 -w0")));
    r.stdout.trim().to_string()
}

#[test]
fn push_over_tls_trusts_the_site_ca_given_with_ca() {
    if !e2e_enabled("push_over_tls_trusts_the_site_ca_given_with_ca") {
        return;
    }
    let ws = Workspace::new();
    // A site CA and a registry certificate it signed, for 127.0.0.1.
    let d = ws.path("pki");
    std::fs::create_dir_all(&d).unwrap();
    let sh = |script: &str| {
        let r = run(Command::new("sh").arg("-c").arg(script).current_dir(&d));
        assert_eq!(r.code, 0, "{script}: {r:?}");
    };
    sh("openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj '/CN=site CA'");
    sh("openssl req -newkey rsa:2048 -nodes -keyout reg.key -out reg.csr -subj '/CN=127.0.0.1'");
    sh("printf 'subjectAltName=IP:127.0.0.1\\nbasicConstraints=CA:FALSE\\nextendedKeyUsage=serverAuth\\n' > ext.cnf \
        && openssl x509 -req -in reg.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out reg.pem -days 2 -extfile ext.cnf");
    let _registry = Registry::start_with(ws.dir.path(), 5017, None, Some((&d.join("reg.pem"), &d.join("reg.key"))));
    let bundle = ws.path("b.tar");
    assert_eq!(ws.build(&ws.stack("s", &[]), 1, &bundle, &[]).code, 0);
    let tls = |extra: &[&str]| {
        let mut c = Command::new(bin("installer"));
        c.arg("push").arg(&bundle).arg("--key").arg(&ws.public).args(["--registry", "127.0.0.1:5017/site"]);
        c.args(extra).env("INSTALLER_STATE_DIR", ws.path("state")).env("DOCKER_CONFIG", ws.path("none"));
        run(&mut c)
    };
    let r = tls(&[]);
    assert_eq!(r.code, 12, "an unknown CA is refused: {r:?}");
    assert!(r.stderr.contains("--ca FILE"), "{r:?}");
    let ca = d.join("ca.pem");
    let r = tls(&["--ca", ca.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("pushed 3 images"), "{r:?}");
}
