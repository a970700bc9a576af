//! `installer apply` on a real dockerd with the test stack (issue 4): a "database" with a
//! healthcheck, a migration that counts its runs in a named volume, a web service on a
//! 127.0.0.1 port. Each test has its own project name, port and state dir, and removes its
//! containers, volumes and networks when it ends.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use e2e::{Run, Workspace, bin, docker_snapshot, e2e_enabled, remove_project, run};

pub(crate) struct Site {
    pub(crate) ws: Workspace,
    pub(crate) project: String,
    pub(crate) port: u16,
    pub(crate) state: PathBuf,
    pub(crate) values: PathBuf,
}

impl Site {
    pub(crate) fn new(project: &str, port: u16) -> Self {
        remove_project(project);
        let ws = Workspace::new();
        let state = ws.path("state");
        let values = ws.path("site.env");
        std::fs::write(&values, "DB_PASSWORD=correct-horse-battery\n").unwrap();
        Self { ws, project: project.to_string(), port, state, values }
    }

    /// Build the test stack as release `release`, with extra compose replacements.
    pub(crate) fn bundle(&self, release: u64, replacements: &[(&str, &str)]) -> PathBuf {
        self.bundle_with(release, replacements, &[])
    }

    /// As [`Site::bundle`], with extra `bundler build` arguments (e.g. `--part-size`).
    pub(crate) fn bundle_with(&self, release: u64, replacements: &[(&str, &str)], extra: &[&str]) -> PathBuf {
        let name = format!("name: {}", self.project);
        let port = format!("127.0.0.1:{}:8080", self.port);
        let mut all = vec![("name: teststack", name.as_str()), ("127.0.0.1:18080:8080", port.as_str())];
        all.extend_from_slice(replacements);
        let compose = self.ws.stack(&format!("r{release}-{}", replacements.len()), &all);
        let out = self.ws.path(&format!("bundle-r{release}-{}.tar", replacements.len()));
        let r = self.ws.build(&compose, release, &out, extra);
        assert_eq!(r.code, 0, "build: {r:?}");
        out
    }

    pub(crate) fn installer(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin("installer"));
        c.args(args).env("INSTALLER_STATE_DIR", &self.state).env_remove("MIGRATE_FAIL").env_remove("MIGRATE_SLEEP");
        c
    }

    pub(crate) fn apply_cmd(&self, bundle: &std::path::Path) -> Command {
        let mut c = self.installer(&["apply"]);
        c.arg(bundle).arg("--key").arg(&self.ws.public).arg("--values").arg(&self.values);
        c
    }

    pub(crate) fn apply(&self, bundle: &std::path::Path, env: &[(&str, &str)]) -> Run {
        let mut c = self.apply_cmd(bundle);
        for (k, v) in env {
            c.env(k, v);
        }
        run(&mut c)
    }

    /// Start an apply whose migration takes 3 s, with piped output; return once the migration
    /// container runs (the point the interruption tests cut in).
    fn apply_until_migrating(&self, bundle: &std::path::Path, env: &[(&str, &str)]) -> std::process::Child {
        let mut c = self.apply_cmd(bundle);
        c.env("MIGRATE_SLEEP", "3").stdout(Stdio::piped()).stderr(Stdio::piped());
        for (k, v) in env {
            c.env(k, v);
        }
        let child = c.spawn().unwrap();
        wait_until("the migration to start", Duration::from_secs(60), || self.running("migrate"));
        child
    }

    pub(crate) fn container_id(&self, service: &str) -> Option<String> {
        let r =
            run(Command::new("docker").args(["inspect", "-f", "{{.Id}}", &format!("{}-{service}-1", self.project)]));
        (r.code == 0).then(|| r.stdout.trim().to_string())
    }

    pub(crate) fn running(&self, service: &str) -> bool {
        let r = run(Command::new("docker").args([
            "inspect",
            "-f",
            "{{.State.Running}}",
            &format!("{}-{service}-1", self.project),
        ]));
        r.stdout.trim() == "true"
    }

    /// Lines in the migration volume's log: how many times the migration ran on the data in
    /// use (read through web, which mounts it; else in the volume's first generation).
    pub(crate) fn migration_runs(&self) -> usize {
        let web = format!("{}-web-1", self.project);
        let r = run(Command::new("docker").args(["exec", &web, "cat", "/data/migrations.log"]));
        if r.code == 0 {
            return r.stdout.lines().filter(|l| l.starts_with("migrated")).count();
        }
        let r = run(Command::new("docker").args([
            "run",
            "--rm",
            "-v",
            &format!("{}_migrations:/data", self.project),
            "127.0.0.1:5000/test/base:1",
            "sh",
            "-c",
            "cat /data/migrations.log 2>/dev/null || true",
        ]));
        assert_eq!(r.code, 0, "{r:?}");
        r.stdout.lines().filter(|l| l.starts_with("migrated")).count()
    }

    fn http_get(&self) -> String {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).expect("connect to web");
        s.write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
        let mut body = String::new();
        s.read_to_string(&mut body).unwrap();
        body
    }

    pub(crate) fn status(&self) -> (i32, serde_json::Value) {
        let r = run(&mut self.installer(&["status", "--json"]));
        (r.code, serde_json::from_str(&r.stdout).unwrap_or(serde_json::Value::Null))
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        remove_project(&self.project);
    }
}

/// A one-service bundle (`test/tool:1`, sleeping) for `project`, with the image removed from
/// Docker so that applying it must really load it.
fn tool_bundle(ws: &Workspace, project: &str) -> PathBuf {
    let dir = ws.path(project);
    std::fs::create_dir_all(&dir).unwrap();
    let compose = dir.join("compose.yaml");
    let text = format!(
        "name: {project}\nx-bundle: {{product: {project}}}\nservices:\n  tool:\n    image: 127.0.0.1:5000/test/tool:1\n    command: [sleep, \"3600\"]\n"
    );
    std::fs::write(&compose, text).unwrap();
    let bundle = ws.path(&format!("{project}.tar"));
    assert_eq!(ws.build(&compose, 1, &bundle, &[]).code, 0);
    remove_project(project);
    let _ = run(Command::new("docker").args(["rmi", "127.0.0.1:5000/test/tool:1"]));
    bundle
}

pub(crate) fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn apply_starts_the_stack_and_a_rerun_changes_nothing() {
    if !e2e_enabled("apply_starts_the_stack_and_a_rerun_changes_nothing") {
        return;
    }
    let site = Site::new("e2e-basic", 18181);
    let bundle = site.bundle(1, &[]);
    let r = site.apply(&bundle, &[]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        !r.stderr.contains("correct-horse-battery") && !r.stdout.contains("correct-horse-battery"),
        "secret printed"
    );
    assert!(site.http_get().contains("web release 1"));
    assert_eq!(site.migration_runs(), 1);
    let (code, status) = site.status();
    assert_eq!(code, 0, "{status}");
    assert_eq!(status["healthy"], true);
    assert_eq!(status["release"], 1);
    let ids: Vec<_> = ["db", "web"].iter().map(|s| site.container_id(s).unwrap()).collect();
    // Compose labels, so `docker compose -p <project> ps` shows the containers.
    let r = run(Command::new("docker").args(["ps", "-q", "--filter", "label=com.docker.compose.project=e2e-basic"]));
    assert_eq!(r.stdout.lines().count(), 2, "{r:?}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(site.state.join("values.json")).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    let r = site.apply(&bundle, &[]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("migrate: skip"), "{r:?}");
    let again: Vec<_> = ["db", "web"].iter().map(|s| site.container_id(s).unwrap()).collect();
    assert_eq!(ids, again, "unchanged services were recreated");
    assert_eq!(site.migration_runs(), 1, "the migration ran twice");
    // The key given at first install is now trusted: no --key needed.
    let r = run(site.installer(&["apply"]).arg(&bundle));
    assert_eq!(r.code, 0, "{r:?}");

    // A completed migration whose container was pruned is still ok, and is not run again.
    let r = run(Command::new("docker").args(["rm", "e2e-basic-migrate-1"]));
    assert_eq!(r.code, 0, "{r:?}");
    let (code, status) = site.status();
    assert_eq!(code, 0, "{status}");
    let migrate = status["services"].as_array().unwrap().iter().find(|s| s["service"] == "migrate").unwrap();
    assert_eq!((migrate["state"].as_str(), migrate["ok"].as_bool()), (Some("pruned"), Some(true)), "{migrate}");
    let r = site.apply(&bundle, &[]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(site.migration_runs(), 1, "the migration ran again after its container was pruned");

    // Status says so when a service is down.
    let r = run(Command::new("docker").args(["stop", "e2e-basic-web-1"]));
    assert_eq!(r.code, 0);
    let r = run(&mut site.installer(&["status"]));
    assert_eq!(r.code, 40, "{r:?}");
    assert!(r.stdout.contains("web") && r.stdout.contains("not ok"), "{r:?}");
}

#[test]
fn status_before_any_install_says_so() {
    let ws = Workspace::new();
    let r = run(Command::new(bin("installer")).arg("status").env("INSTALLER_STATE_DIR", ws.path("state")));
    assert_eq!(r.code, 41, "{r:?}");
    assert!(r.stderr.contains("hint:"), "{r:?}");
}

#[test]
fn a_tampered_bundle_changes_nothing_on_the_host() {
    if !e2e_enabled("a_tampered_bundle_changes_nothing_on_the_host") {
        return;
    }
    let ws = Workspace::new();
    let good = tool_bundle(&ws, "e2e-tamper");
    let mut bytes = std::fs::read(&good).unwrap();
    let at = bytes.len() - 1024 - 300;
    bytes[at] ^= 0x20;
    let bad = ws.path("bad.tar");
    std::fs::write(&bad, &bytes).unwrap();

    let before = docker_snapshot();
    let state = ws.path("state");
    let apply = |bundle: &std::path::Path| {
        run(Command::new(bin("installer"))
            .arg("apply")
            .arg(bundle)
            .arg("--key")
            .arg(&ws.public)
            .env("INSTALLER_STATE_DIR", &state))
    };
    let r = apply(&bad);
    assert_eq!(r.code, 20, "{r:?}");
    assert!(r.stderr.contains("images/blobs/sha256/") && r.stderr.contains("hint:"), "{r:?}");
    assert_eq!(docker_snapshot(), before, "the host changed");
    assert!(!state.join("installed.json").exists());

    let r = apply(&good);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("Loaded image: 127.0.0.1:5000/test/tool:1"), "the image was not loaded: {r:?}");
    remove_project("e2e-tamper");
}

#[test]
fn docker_unreachable_gets_its_exit_code_and_a_rerun_converges() {
    if !e2e_enabled("docker_unreachable_gets_its_exit_code_and_a_rerun_converges") {
        return;
    }
    let site = Site::new("e2e-docker", 18182);
    let bundle = site.bundle(1, &[]);
    let r = run(site.apply_cmd(&bundle).env("DOCKER_HOST", "unix:///nonexistent/docker.sock"));
    assert_eq!(r.code, 31, "{r:?}");
    assert!(r.stderr.contains("hint:") && r.stderr.contains("Docker"), "{r:?}");

    // Docker goes away in the middle: a proxy socket that is cut once the db container exists.
    let proxy = Proxy::start(site.ws.path("docker-proxy.sock"));
    let docker_host = format!("unix://{}", proxy.path.display());
    let child = site.apply_until_migrating(&bundle, &[("DOCKER_HOST", &docker_host)]);
    proxy.cut();
    let out: Run = child.wait_with_output().unwrap().into();
    assert_eq!(out.code, 31, "{out:?}");
    let r = site.apply(&bundle, &[("MIGRATE_SLEEP", "3")]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(site.http_get().contains("web release 1"));
    assert_eq!(site.migration_runs(), 1, "the migration ran twice");
}

#[test]
fn a_failing_migration_stops_before_its_dependents() {
    if !e2e_enabled("a_failing_migration_stops_before_its_dependents") {
        return;
    }
    let site = Site::new("e2e-migfail", 18183);
    let r1 = site.bundle(1, &[]);
    assert_eq!(site.apply(&r1, &[]).code, 0);
    let web = site.container_id("web").unwrap();
    let r2 = site.bundle(2, &[]);
    let r = site.apply(&r2, &[("MIGRATE_FAIL", "1")]);
    // db was moved onto the copy made before the migration: it is put back (exit 38).
    assert_eq!(r.code, 38, "{r:?}");
    assert!(r.stderr.contains("migration `migrate`") && r.stderr.contains("boom: migration failed"), "{r:?}");
    assert!(r.stderr.contains("hint:"), "{r:?}");
    assert_eq!(site.container_id("web").unwrap(), web, "web was replaced");
    assert!(site.running("web"));
    assert!(site.http_get().contains("web release 1"));
    assert_eq!(site.migration_runs(), 1);
    // Fixed: the same bundle goes through and release 2's migration runs once.
    let r = site.apply(&r2, &[("MIGRATE_FAIL", "0")]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(site.migration_runs(), 2);
}

#[test]
fn a_service_that_never_gets_healthy_fails_the_gate() {
    if !e2e_enabled("a_service_that_never_gets_healthy_fails_the_gate") {
        return;
    }
    let site = Site::new("e2e-unhealthy", 18184);
    let bundle = site.bundle(1, &[("stack/web:1", "stack/web:broken")]);
    let r = site.apply(&bundle, &[]);
    assert_eq!(r.code, 34, "{r:?}");
    assert!(r.stderr.contains("service `web`") && r.stderr.contains("health gate 30s"), "{r:?}");
    assert!(r.stderr.contains("hint:"), "{r:?}");
}

#[test]
fn a_port_in_use_is_named_before_anything_changes() {
    if !e2e_enabled("a_port_in_use_is_named_before_anything_changes") {
        return;
    }
    let site = Site::new("e2e-port", 18185);
    let bundle = site.bundle(1, &[]);
    let _holder = std::net::TcpListener::bind(("127.0.0.1", 18185)).unwrap();
    let before = docker_snapshot();
    let r = site.apply(&bundle, &[]);
    assert_eq!(r.code, 30, "{r:?}");
    assert!(r.stderr.contains("service `web`") && r.stderr.contains("127.0.0.1:18185"), "{r:?}");
    assert_eq!(docker_snapshot(), before, "the host changed");
}

#[test]
fn a_second_apply_waits_for_the_lock() {
    if !e2e_enabled("a_second_apply_waits_for_the_lock") {
        return;
    }
    let site = Site::new("e2e-lock", 18186);
    let bundle = site.bundle(1, &[]);
    std::fs::create_dir_all(&site.state).unwrap();
    let lock =
        std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(site.state.join("lock")).unwrap();
    lock.lock().unwrap();
    let r = site.apply(&bundle, &[]);
    assert_eq!(r.code, 36, "{r:?}");
    assert!(r.stderr.contains("lock"), "{r:?}");
    drop(lock);
}

#[test]
fn kill_9_during_the_migration_then_rerun_runs_it_exactly_once() {
    if !e2e_enabled("kill_9_during_the_migration_then_rerun_runs_it_exactly_once") {
        return;
    }
    let site = Site::new("e2e-kill-mig", 18187);
    let bundle = site.bundle(1, &[]);
    let mut child = site.apply_until_migrating(&bundle, &[]);
    child.kill().unwrap();
    let _ = child.wait();
    let r = site.apply(&bundle, &[("MIGRATE_SLEEP", "3")]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("resum"), "{r:?}");
    assert!(site.http_get().contains("web release 1"));
    assert_eq!(site.migration_runs(), 1, "the migration ran twice");
}

#[test]
fn kill_9_at_several_points_then_rerun_converges() {
    if !e2e_enabled("kill_9_at_several_points_then_rerun_converges") {
        return;
    }
    let site = Site::new("e2e-kill", 18188);
    let bundle = site.bundle(1, &[]);
    // Early (verify/load), between services, during the health wait.
    for delay_ms in [50, 400, 1500, 3000, 4500] {
        let mut child = site.apply_cmd(&bundle).stderr(Stdio::null()).spawn().unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        child.kill().unwrap();
        let _ = child.wait();
    }
    let r = site.apply(&bundle, &[]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(site.http_get().contains("web release 1"));
    let (code, status) = site.status();
    assert_eq!(code, 0, "{status}");
    assert_eq!(site.migration_runs(), 1, "the migration ran more than once");
}

/// A unix-socket proxy in front of the Docker socket that can be cut, as if dockerd died.
struct Proxy {
    path: PathBuf,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Proxy {
    fn start(path: PathBuf) -> Self {
        use std::os::unix::net::{UnixListener, UnixStream};
        let listener = UnixListener::bind(&path).unwrap();
        let cut = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = cut.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(client) = conn else { break };
                if flag.load(std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
                let Ok(server) = UnixStream::connect("/var/run/docker.sock") else { break };
                let pairs = [(client.try_clone().unwrap(), server.try_clone().unwrap()), (server, client)];
                for (mut from, mut to) in pairs {
                    let flag = flag.clone();
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 65536];
                        loop {
                            if flag.load(std::sync::atomic::Ordering::SeqCst) {
                                break;
                            }
                            match from.read(&mut buf) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => {
                                    if to.write_all(&buf[..n]).is_err() {
                                        break;
                                    }
                                }
                            }
                        }
                        let _ = to.shutdown(std::net::Shutdown::Both);
                        let _ = from.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Self { path, cut }
    }

    fn cut(&self) {
        self.cut.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = std::fs::remove_file(&self.path);
    }
}

#[test]
fn a_release_that_never_gets_healthy_is_rolled_back() {
    if !e2e_enabled("a_release_that_never_gets_healthy_is_rolled_back") {
        return;
    }
    let site = Site::new("e2e-rollback", 18189);
    let r1 = site.bundle(1, &[]);
    assert_eq!(site.apply(&r1, &[]).code, 0);
    let web = site.container_id("web").unwrap();
    let r2 = site.bundle(2, &[("stack/web:1", "stack/web:broken")]);
    let r = site.apply(&r2, &[]);
    assert_eq!(r.code, 38, "{r:?}");
    assert!(r.stderr.contains("service `web`") && r.stderr.contains("put back"), "{r:?}");
    assert_eq!(site.container_id("web").unwrap(), web, "the release 1 container is not the one running");
    assert!(site.running("web"));
    assert!(site.http_get().contains("web release 1"));
    // Release 2's migration ran on a copy: release 1 runs on its own data again, which has one
    // run recorded (issue 12), and the copy is kept.
    assert!(r.stderr.contains("migrate: completed"), "{r:?}");
    assert_eq!(site.migration_runs(), 1);
    let copies =
        run(Command::new("docker").args(["volume", "ls", "-q", "--filter", "name=e2e-rollback_migrations-r2"]));
    assert!(copies.stdout.contains("e2e-rollback_migrations-r2"), "{copies:?}");
    let (code, status) = site.status();
    assert_eq!(code, 0, "{status}");
    assert_eq!(status["release"], 1);
    let left = run(Command::new("docker").args(["ps", "-aq", "--filter", "name=e2e-rollback-web-1-previous"]));
    assert!(left.stdout.trim().is_empty(), "a set-aside container was left: {left:?}");
}

#[test]
fn older_expired_foreign_and_unknown_key_bundles_are_refused_with_the_host_unchanged() {
    if !e2e_enabled("older_expired_foreign_and_unknown_key_bundles_are_refused_with_the_host_unchanged") {
        return;
    }
    let site = Site::new("e2e-policy", 18190);
    let r2 = site.bundle(2, &[]);
    assert_eq!(site.apply(&r2, &[]).code, 0);
    let before = docker_snapshot();

    // Older release.
    let r1 = site.bundle(1, &[]);
    let r = site.apply(&r1, &[]);
    assert_eq!(r.code, 22, "{r:?}");
    assert!(r.stderr.contains("older than the installed release 2") && r.stderr.contains("--allow-downgrade"), "{r:?}");
    // Expired: built at SOURCE_DATE_EPOCH (2026-09-21) and valid for one day.
    let name = format!("name: {}", site.project);
    let compose = site
        .ws
        .stack("expired", &[("name: teststack", name.as_str()), ("127.0.0.1:18080:8080", "127.0.0.1:18190:8080")]);
    let expired = site.ws.path("expired.tar");
    assert_eq!(site.ws.build(&compose, 3, &expired, &["--valid-days", "1"]).code, 0);
    let r = site.apply(&expired, &[]);
    assert_eq!(r.code, 22, "{r:?}");
    assert!(r.stderr.contains("expired at 2026-09-22") && r.stderr.contains("clock says"), "{r:?}");
    // Another product.
    let other = site.bundle(4, &[("product: teststack", "product: otherproduct")]);
    let r = site.apply(&other, &[]);
    assert_eq!(r.code, 22, "{r:?}");
    assert!(r.stderr.contains("otherproduct"), "{r:?}");
    // Signed by a key this host does not trust.
    let stranger = Workspace::new();
    let foreign = stranger.path("foreign.tar");
    let compose =
        stranger.stack("s", &[("name: teststack", name.as_str()), ("127.0.0.1:18080:8080", "127.0.0.1:18190:8080")]);
    assert_eq!(stranger.build(&compose, 5, &foreign, &[]).code, 0);
    let r = run(site.installer(&["apply"]).arg(&foreign));
    assert_eq!(r.code, 21, "{r:?}");
    assert!(r.stderr.contains("not trusted") && r.stderr.contains("hint:"), "{r:?}");

    assert_eq!(docker_snapshot(), before, "a refused bundle changed the host");
    let (code, status) = site.status();
    assert_eq!(code, 0, "{status}");
    assert_eq!(status["release"], 2);

    // The operator may override, and the history says who did what.
    let r = run(site.apply_cmd(&r1).arg("--allow-downgrade"));
    assert_eq!(r.code, 0, "{r:?}");
    let r = run(&mut site.installer(&["history", "--json"]));
    assert_eq!(r.code, 0, "{r:?}");
    let history: Vec<serde_json::Value> = r.stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let outcomes: Vec<(u64, &str)> =
        history.iter().map(|h| (h["release"].as_u64().unwrap(), h["outcome"].as_str().unwrap())).collect();
    assert_eq!(
        outcomes,
        vec![(2, "applied"), (1, "policy-rejected"), (3, "policy-rejected"), (4, "policy-rejected"), (1, "applied")],
        "{history:?}"
    );
    assert_eq!(history[4]["overrides"], serde_json::json!(["--allow-downgrade from release 2"]));
    assert_eq!(history[4]["previous_release"], 2);
    let r = run(&mut site.installer(&["history"]));
    assert!(r.stdout.contains("overrides: --allow-downgrade from release 2"), "{r:?}");
}

#[test]
fn an_upgrade_sends_only_the_changed_layer_and_keeps_unchanged_services() {
    if !e2e_enabled("an_upgrade_sends_only_the_changed_layer_and_keeps_unchanged_services") {
        return;
    }
    let site = Site::new("e2e-upgrade", 18191);
    let r1 = site.bundle(1, &[]);
    assert_eq!(site.apply(&r1, &[]).code, 0);
    let db = site.container_id("db").unwrap();
    let web1 = site.container_id("web").unwrap();
    // No copy of the data before the migration here (`x-bundle.snapshot: []`): with one, db
    // would move onto the copy (tests/e2e/data.rs); this test is about what stays.
    let r2 = site.bundle(
        2,
        &[("stack/web:1", "stack/web:2"), ("  migrations: [migrate]", "  migrations: [migrate]\n  snapshot: []")],
    );
    let m2 = manifests::Manifest::from_bytes(&e2e::split_tar(&std::fs::read(&r2).unwrap())[0].data).unwrap();
    let m1 = manifests::Manifest::from_bytes(&e2e::split_tar(&std::fs::read(&r1).unwrap())[0].data).unwrap();
    let old: std::collections::BTreeSet<_> =
        m1.images.iter().flat_map(|i| i.layers.iter().map(|l| l.blob.digest)).collect();
    let web2 = m2.image("127.0.0.1:5000/stack/web:2").unwrap();
    assert!(web2.layers.iter().any(|l| old.contains(&l.blob.digest)), "web:2 shares no layer with release 1");

    // Make web:2 absent so the upgrade really loads it, with any untagged image (a build
    // intermediate, an image an earlier test left dangling) that still holds its own layers.
    let _ = run(Command::new("docker").args(["rmi", "127.0.0.1:5000/stack/web:2"]));
    let r1_chains: std::collections::BTreeSet<manifests::Digest> = m1
        .images
        .iter()
        .flat_map(|i| installer::load::chain_ids(&i.layers.iter().map(|l| l.diff_id).collect::<Vec<_>>()))
        .collect();
    let web2_only: Vec<manifests::Digest> =
        installer::load::chain_ids(&web2.layers.iter().map(|l| l.diff_id).collect::<Vec<_>>())
            .into_iter()
            .filter(|c| !r1_chains.contains(c))
            .collect();
    for (id, tags, chains) in images_on_the_engine() {
        if tags == 0 && chains.iter().any(|c| web2_only.contains(c)) {
            let _ = run(Command::new("docker").args(["rmi", "-f", &id]));
        }
    }
    // What the upgrade cannot avoid sending: web:2's layers whose chain Docker lacks now (other
    // images on this engine may share some, e.g. web:broken), plus web:2's config.
    let present = chain_ids_on_the_engine();
    let diff_ids: Vec<manifests::Digest> = web2.layers.iter().map(|l| l.diff_id).collect();
    let missing: Vec<u64> = web2
        .layers
        .iter()
        .zip(installer::load::chain_ids(&diff_ids))
        .filter(|(_, chain)| !present.contains(chain))
        .map(|(l, _)| l.blob.size)
        .collect();
    assert!(!missing.is_empty(), "web:2 has no layer to send: the test proves nothing");
    let changed = missing.iter().sum::<u64>() + web2.config.size;

    let r = run(site.apply_cmd(&r2).arg("--json"));
    assert_eq!(r.code, 0, "{r:?}");
    let outcome: serde_json::Value = r
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["event"] == "outcome")
        .unwrap();
    // The operator is told why web is recreated.
    let web_event = r
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["event"] == "service" && v["service"] == "web" && v["status"] == "recreate")
        .unwrap_or_else(|| panic!("no recreate event for web: {}", r.stdout));
    assert_eq!(web_event["detail"], "image changed (now 127.0.0.1:5000/stack/web:2)", "{web_event}");
    let sent = outcome["bytes_sent"].as_u64().unwrap();
    // Archive bytes: the blobs plus tar headers, padding and manifest.json.
    assert!(sent >= changed && sent < changed + 8192, "sent {sent} bytes for a {changed}-byte change: {outcome}");
    assert_eq!(site.container_id("db").unwrap(), db, "db was recreated");
    assert_ne!(site.container_id("web").unwrap(), web1);
    assert!(site.http_get().contains("web release 2"));
    assert_eq!(site.migration_runs(), 2, "release 2's migration runs once");
    let left = run(Command::new("docker").args(["ps", "-aq", "--filter", "name=e2e-upgrade-web-1-previous"]));
    assert!(left.stdout.trim().is_empty(), "{left:?}");
}

#[test]
fn not_enough_disk_for_docker_is_refused_by_preflight_with_the_host_unchanged() {
    if !e2e_enabled("not_enough_disk_for_docker_is_refused_by_preflight_with_the_host_unchanged") {
        return;
    }
    let ws = Workspace::new();
    let bundle = tool_bundle(&ws, "e2e-disk");
    let installer = |args: &[&str], free: Option<&str>| {
        let mut c = Command::new(bin("installer"));
        c.args(args).arg(&bundle).arg("--key").arg(&ws.public).env("INSTALLER_STATE_DIR", ws.path("state"));
        if let Some(f) = free {
            c.env("INSTALLER_TEST_DOCKER_FREE_BYTES", f);
        }
        run(&mut c)
    };
    let before = docker_snapshot();
    let r = installer(&["apply"], Some("1000"));
    assert_eq!(r.code, 50, "{r:?}");
    assert!(
        r.stderr.contains("Docker data root") && r.stderr.contains("1.0 kB free") && r.stderr.contains("hint:"),
        "{r:?}"
    );
    assert_eq!(docker_snapshot(), before, "the host changed");

    let r = installer(&["plan", "--json"], Some("1000"));
    assert_eq!(r.code, 50, "{r:?}");
    let v: serde_json::Value = serde_json::from_str(r.stdout.lines().next().unwrap()).unwrap();
    let checks = v["preflight"]["checks"].as_array().unwrap();
    let disk = checks.iter().find(|c| c["check"] == "disk").unwrap();
    assert_eq!(disk["ok"], false, "{disk}");
    for name in ["state-disk", "docker", "platform", "memory", "hypervisor", "ports"] {
        assert!(checks.iter().any(|c| c["check"] == name), "no `{name}` line: {checks:?}");
    }

    let r = installer(&["apply"], None);
    assert_eq!(r.code, 0, "{r:?}");
    remove_project("e2e-disk");
}

#[test]
fn rollback_on_demand_returns_to_the_previous_release_without_its_bundle() {
    if !e2e_enabled("rollback_on_demand_returns_to_the_previous_release_without_its_bundle") {
        return;
    }
    let site = Site::new("e2e-rollback-cmd", 18192);
    let r = run(&mut site.installer(&["rollback"]));
    assert_eq!(r.code, 41, "{r:?}");
    let r1 = site.bundle(1, &[]);
    assert_eq!(site.apply(&r1, &[]).code, 0);
    let r = run(&mut site.installer(&["rollback"]));
    assert_eq!(r.code, 22, "{r:?}");
    assert!(r.stderr.contains("no earlier release"), "{r:?}");
    let r2 = site.bundle(2, &[("stack/web:1", "stack/web:2")]);
    assert_eq!(site.apply(&r2, &[]).code, 0);
    assert!(site.http_get().contains("web release 2"));
    std::fs::remove_file(&r1).unwrap();

    // Release 2 runs on a copy made before its migration: going back gives release 1 its own
    // data, so it needs --yes and names where the newer data stays.
    let r = run(&mut site.installer(&["rollback"]));
    assert_eq!(r.code, 22, "{r:?}");
    assert!(r.stderr.contains("--yes") && r.stderr.contains("e2e-rollback-cmd_migrations-r2"), "{r:?}");
    assert!(site.http_get().contains("web release 2"), "a refused rollback changed something");
    let r = run(&mut site.installer(&["rollback", "--yes"]));
    assert_eq!(r.code, 0, "{r:?}");
    assert!(site.http_get().contains("web release 1"), "release 1 is not serving");
    let (code, status) = site.status();
    assert_eq!(code, 0, "{status}");
    assert_eq!(status["release"], 1);
    assert_eq!(site.migration_runs(), 1, "release 1 does not run on its own data, or a migration ran again");
    let r = run(&mut site.installer(&["history", "--json"]));
    let last: serde_json::Value = serde_json::from_str(r.stdout.lines().last().unwrap()).unwrap();
    assert_eq!(last["release"], 1);
    assert_eq!(last["outcome"], "applied");
    assert_eq!(last["overrides"], serde_json::json!(["installer rollback from release 2"]));
}

#[test]
fn a_key_rotation_record_makes_the_new_key_trusted() {
    if !e2e_enabled("a_key_rotation_record_makes_the_new_key_trusted") {
        return;
    }
    let site = Site::new("e2e-rotate", 18193);
    let (new_secret, new_public) = (site.ws.path("next.key"), site.ws.path("next.pub"));
    let r = run(Command::new(bin("bundler"))
        .args(["keygen", "--secret-key"])
        .arg(&new_secret)
        .arg("--public-key")
        .arg(&new_public));
    assert_eq!(r.code, 0, "{r:?}");
    let next =
        manifests::PublicKey::from_file_string(&std::fs::read_to_string(&new_public).unwrap(), &new_public).unwrap();

    // Release 1, signed by the current key, announces the next one.
    let name = format!("name: {}", site.project);
    let replacements = [("name: teststack", name.as_str()), ("127.0.0.1:18080:8080", "127.0.0.1:18193:8080")];
    let compose = site.ws.stack("rotate", &replacements);
    let r1 = site.ws.path("r1.tar");
    let r = site.ws.build(&compose, 1, &r1, &["--rotate-to", new_public.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{r:?}");
    let r = run(Command::new(bin("bundler")).args(["inspect", "--json"]).arg(&r1));
    assert!(r.stdout.contains(&next.key_id.to_string()), "{r:?}");
    let r = site.apply(&r1, &[]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains(&format!("now trusting key {}", next.key_id)), "{r:?}");

    // Release 2, signed by the new key only, installs without --key.
    let r2 = site.ws.path("r2.tar");
    let r = run(Command::new(bin("bundler"))
        .args(["build", "-f"])
        .arg(&compose)
        .arg("--key")
        .arg(&new_secret)
        .args(["--version", "2", "--release", "2", "--insecure-registry", "127.0.0.1:5000", "-o"])
        .arg(&r2)
        .arg("--cache-dir")
        .arg(&site.ws.cache));
    assert_eq!(r.code, 0, "{r:?}");
    let r = run(site.installer(&["apply"]).arg(&r2).arg("--values").arg(&site.values));
    assert_eq!(r.code, 0, "{r:?}");

    // A host that never saw the rotation does not trust the new key.
    let other = Site::new("e2e-rotate-other", 18194);
    let r = run(other.installer(&["verify"]).arg(&r2).arg("--key").arg(&site.ws.public));
    assert_eq!(r.code, 21, "{r:?}");
}

#[test]
fn prune_removes_only_what_no_kept_release_no_container_and_no_other_tag_needs() {
    if !e2e_enabled("prune_removes_only_what_no_kept_release_no_container_and_no_other_tag_needs") {
        return;
    }
    let site = Site::new("e2e-prune", 18195);
    let web1 = "127.0.0.1:5000/stack/web:1";
    let r1 = site.bundle(1, &[]);
    assert_eq!(site.apply(&r1, &[]).code, 0);
    // Releases 2 and 3 use web:2; release 1's web:1 is then needed by neither the installed
    // release (3) nor the one rollback returns to (2).
    // Without copies of the data (`snapshot: []`), db stays the container release 1 made.
    for release in [2, 3] {
        let b = site.bundle(
            release,
            &[("stack/web:1", "stack/web:2"), ("  migrations: [migrate]", "  migrations: [migrate]\n  snapshot: []")],
        );
        let r = site.apply(&b, &[]);
        assert_eq!(r.code, 0, "{r:?}");
    }
    let has_image = |r: &str| run(Command::new("docker").args(["image", "inspect", r])).code == 0;
    let release_dir = |n: u64| site.state.join("releases").join(n.to_string());
    assert!(has_image(web1) && release_dir(1).exists());
    let prune = |args: &[&str]| {
        let mut c = site.installer(&["prune", "--json"]);
        c.args(args);
        let r = run(&mut c);
        assert_eq!(r.code, 0, "{r:?}");
        serde_json::from_str::<serde_json::Value>(&r.stdout).unwrap()
    };
    let outcome_of = |report: &serde_json::Value, reference: &str| {
        let images = report["images"].as_array().unwrap();
        let i = images.iter().find(|i| i["reference"] == reference).unwrap_or_else(|| panic!("{report}"));
        (i["outcome"].as_str().unwrap_or_default().to_string(), i["detail"].as_str().unwrap_or_default().to_string())
    };

    // --dry-run says what would go and changes nothing.
    let before = docker_snapshot();
    let report = prune(&["--dry-run"]);
    assert_eq!(outcome_of(&report, web1).0, "would_remove", "{report}");
    // db was created in release 1 and kept since: its release directory stays.
    assert_eq!(report["removed_releases"], serde_json::json!([]), "{report}");
    assert_eq!(report["held_releases"], serde_json::json!([1]), "{report}");
    assert_eq!(report["kept_releases"], serde_json::json!([2, 3]), "{report}");
    assert_eq!(report["images"].as_array().unwrap().len(), 1, "only web:1 is release 1's alone: {report}");
    assert_eq!(docker_snapshot(), before, "a dry run changed Docker");
    assert!(release_dir(1).exists());

    // A container (of any project) that uses the image keeps it, and its release's directory.
    let r = run(Command::new("docker").args(["create", "--name", "e2e-prune-user", web1]));
    assert_eq!(r.code, 0, "{r:?}");
    let report = prune(&[]);
    let (outcome, detail) = outcome_of(&report, web1);
    assert_eq!(outcome, "kept", "{report}");
    assert!(detail.contains("container"), "Docker's reason is passed on: {detail}");
    assert!(has_image(web1) && release_dir(1).exists(), "{report}");
    let _ = run(Command::new("docker").args(["rm", "e2e-prune-user"]));

    // Another tag on the same image (another product) keeps it too.
    let other = "e2e-other-product/web:1";
    assert_eq!(run(Command::new("docker").args(["tag", web1, other])).code, 0);
    let report = prune(&[]);
    let (outcome, detail) = outcome_of(&report, web1);
    assert_eq!(outcome, "kept", "{report}");
    assert!(detail.contains(other), "{detail}");
    assert!(has_image(web1) && has_image(other) && release_dir(1).exists());
    let _ = run(Command::new("docker").args(["rmi", other]));

    // Now nothing needs the image: removed. Release 1's directory stays for db's container.
    let report = prune(&[]);
    assert_eq!(outcome_of(&report, web1).0, "removed", "{report}");
    assert!(!has_image(web1), "{report}");
    assert!(report["docker_root"]["free_after"].as_u64().is_some(), "the operator is told the free space: {report}");
    assert!(release_dir(1).exists() && report["held_releases"] == serde_json::json!([1]), "{report}");
    assert!(release_dir(2).exists() && release_dir(3).exists());
    assert!(has_image("127.0.0.1:5000/stack/web:2") && has_image("127.0.0.1:5000/stack/db:1"));
    let (code, status) = site.status();
    assert_eq!(code, 0, "{status}");

    // Once no container of release 1 is left, its directory goes too.
    assert_eq!(run(Command::new("docker").args(["rm", "-f", "e2e-prune-db-1"])).code, 0);
    let report = prune(&[]);
    assert_eq!(report["removed_releases"], serde_json::json!([1]), "{report}");
    assert!(!release_dir(1).exists() && release_dir(2).exists() && release_dir(3).exists());
    let r3 = site.bundle(3, &[("stack/web:1", "stack/web:2")]);
    let r = site.apply(&r3, &[]);
    assert_eq!(r.code, 0, "{r:?}");
    // Rollback still has what it needs.
    let r = run(&mut site.installer(&["rollback"]));
    assert_eq!(r.code, 0, "{r:?}");
    // Pruning again finds nothing to do.
    let report = prune(&[]);
    assert!(report["images"].as_array().unwrap().is_empty(), "{report}");
}

#[test]
fn a_closed_ssh_session_does_not_stop_the_apply_but_ctrl_c_does() {
    if !e2e_enabled("a_closed_ssh_session_does_not_stop_the_apply_but_ctrl_c_does") {
        return;
    }
    let site = Site::new("e2e-hup", 18196);
    let bundle = site.bundle(1, &[]);
    let signal = |child: &std::process::Child, sig: &str| {
        let r = run(Command::new("kill").args([sig, &child.id().to_string()]));
        assert_eq!(r.code, 0, "{r:?}");
    };

    // SSH drops in the middle of the migration: SIGHUP, and the terminal's end of the pipes is
    // gone (writes fail). The apply still finishes, once, and the history says so.
    let mut child = site.apply_until_migrating(&bundle, &[]);
    signal(&child, "-HUP");
    drop(child.stderr.take());
    drop(child.stdout.take());
    let code = child.wait().unwrap().code();
    assert_eq!(code, Some(0), "the apply did not finish after SIGHUP");
    let (code, status) = site.status();
    assert_eq!(code, 0, "{status}");
    assert!(site.http_get().contains("web release 1"));
    assert_eq!(site.migration_runs(), 1);
    let history = run(&mut site.installer(&["history", "--json"]));
    let last: serde_json::Value = serde_json::from_str(history.stdout.lines().last().unwrap()).unwrap();
    assert_eq!(last["outcome"], "applied", "{history:?}");

    // Ctrl-C (SIGINT) does stop it, with exit 37, and the same command resumes.
    let r2 = site.bundle(2, &[]);
    let child = site.apply_until_migrating(&r2, &[]);
    signal(&child, "-INT");
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(37), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("hint:"));
    let r = site.apply(&r2, &[("MIGRATE_SLEEP", "3")]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(site.migration_runs(), 2, "release 2's migration ran once");
}

#[test]
fn a_project_installed_from_another_state_dir_is_not_taken_over_silently() {
    if !e2e_enabled("a_project_installed_from_another_state_dir_is_not_taken_over_silently") {
        return;
    }
    let site = Site::new("e2e-adopt", 18197);
    let bundle = site.bundle(1, &[]);
    assert_eq!(site.apply(&bundle, &[]).code, 0);
    // The same host, another state directory: a typo in INSTALLER_STATE_DIR, or the first one lost.
    let other = site.ws.path("other-state");
    let before = docker_snapshot();
    let r = run(site.apply_cmd(&bundle).env("INSTALLER_STATE_DIR", &other));
    assert_eq!(r.code, 22, "{r:?}");
    assert!(r.stderr.contains("e2e-adopt-db-1") && r.stderr.contains("no record of installing it"), "{r:?}");
    assert!(r.stderr.contains("hint:") && r.stderr.contains("--adopt"), "{r:?}");
    let r = run(site
        .installer(&["plan"])
        .arg(&bundle)
        .arg("--key")
        .arg(&site.ws.public)
        .env("INSTALLER_STATE_DIR", &other));
    assert_eq!(r.code, 22, "plan must say so too: {r:?}");
    assert_eq!(docker_snapshot(), before, "the refused apply changed Docker");
    assert_eq!(site.migration_runs(), 1);

    // --adopt takes it over, as documented: unchanged containers stay, and the migration's
    // finished container of this release shows it ran, so it does not run again.
    let db = site.container_id("db");
    let r = run(site.apply_cmd(&bundle).arg("--adopt").env("INSTALLER_STATE_DIR", &other));
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(site.container_id("db"), db);
    assert_eq!(site.migration_runs(), 1, "the migration ran again although its container shows it finished");
    let history = run(site.installer(&["history", "--json"]).env("INSTALLER_STATE_DIR", &other));
    assert!(history.stdout.contains("--adopt"), "{history:?}");
}

#[test]
fn prune_removes_the_old_image_a_reused_tag_left_untagged() {
    if !e2e_enabled("prune_removes_the_old_image_a_reused_tag_left_untagged") {
        return;
    }
    // A vendor who ships every release under one moving tag. Two images of their own (a label
    // makes each ID unique to this test), pushed in turn under that tag.
    let moving = "127.0.0.1:5000/e2e-moving/web:stable";
    let push_as_moving = |from: &str, label: &str| -> String {
        let mut c = Command::new("docker");
        c.args(["build", "-q", "--label", label, "-t", moving, "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        child.stdin.take().unwrap().write_all(format!("FROM {from}\n").as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "docker build failed: {}", String::from_utf8_lossy(&out.stderr));
        let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert_eq!(run(Command::new("docker").args(["push", moving])).code, 0);
        // Only the installer's load should hold it on this engine.
        assert_eq!(run(Command::new("docker").args(["rmi", moving])).code, 0);
        id
    };
    // Images left by an earlier run share web:2's layers and would make other tests' loads warm.
    let _ = run(Command::new("docker").args(["rmi", moving]));
    let site = Site::new("e2e-moving", 18198);
    let old_id = push_as_moving("127.0.0.1:5000/stack/web:1", "e2e=moving-old");
    let r1 = site.bundle(1, &[("127.0.0.1:5000/stack/web:1", moving)]);
    assert_eq!(site.apply(&r1, &[]).code, 0);
    let _new_id = push_as_moving("127.0.0.1:5000/stack/web:2", "e2e=moving-new");
    for release in [2, 3] {
        let b = site.bundle(release, &[("127.0.0.1:5000/stack/web:1", moving)]);
        let r = site.apply(&b, &[]);
        assert_eq!(r.code, 0, "{r:?}");
    }
    let tags = run(Command::new("docker").args(["image", "inspect", "-f", "{{len .RepoTags}}", &old_id]));
    assert_eq!(tags.stdout.trim(), "0", "release 1's image should be left untagged: {tags:?}");

    let r = run(&mut site.installer(&["prune", "--json"]));
    assert_eq!(r.code, 0, "{r:?}");
    let report: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    let old = report["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["image_id"].as_str() == Some(old_id.as_str()))
        .unwrap_or_else(|| panic!("release 1's image {old_id} is not in the report: {report}"));
    assert_eq!(old["outcome"], "removed", "{report}");
    assert_ne!(run(Command::new("docker").args(["image", "inspect", &old_id])).code, 0, "still there");
    assert!(site.http_get().contains("web release 2"));
    // Leave no image that shares web:2's layers: the upgrade test needs them absent.
    drop(site);
    assert_eq!(run(Command::new("docker").args(["rmi", moving])).code, 0);
}

/// Chain IDs of every layer of every image on the engine (what Docker would not need again).
fn chain_ids_on_the_engine() -> std::collections::BTreeSet<manifests::Digest> {
    images_on_the_engine().into_iter().flat_map(|(_, _, chains)| chains).collect()
}

/// Every image on the engine (intermediates included): ID, number of tags, chain IDs.
fn images_on_the_engine() -> Vec<(String, usize, Vec<manifests::Digest>)> {
    let ids = run(Command::new("docker").args(["images", "-aq", "--no-trunc"])).stdout;
    let mut out = Vec::new();
    for id in ids.split_whitespace().collect::<std::collections::BTreeSet<_>>() {
        let r = run(Command::new("docker").args([
            "image",
            "inspect",
            "-f",
            "{{len .RepoTags}} {{json .RootFS.Layers}}",
            id,
        ]));
        let Some((tags, layers)) = r.stdout.trim().split_once(' ') else { continue };
        let diff_ids: Vec<manifests::Digest> = serde_json::from_str(layers).unwrap_or_default();
        out.push((id.to_string(), tags.parse().unwrap_or(0), installer::load::chain_ids(&diff_ids)));
    }
    out
}

#[test]
fn a_relative_state_dir_works_because_it_is_made_absolute_first() {
    if !e2e_enabled("a_relative_state_dir_works_because_it_is_made_absolute_first") {
        return;
    }
    let site = Site::new("e2e-relstate", 18197);
    let bundle = site.bundle(1, &[]);
    let mut c = Command::new(bin("installer"));
    c.current_dir(site.ws.dir.path())
        .args(["apply"])
        .arg(&bundle)
        .arg("--key")
        .arg(&site.ws.public)
        .arg("--values")
        .arg(&site.values)
        .env("INSTALLER_STATE_DIR", "st");
    let r = run(&mut c);
    assert_eq!(r.code, 0, "{r:?}");
    let r = run(Command::new("docker").args(["inspect", "-f", "{{json .Mounts}}", "e2e-relstate-web-1"]));
    let expected = site.ws.dir.path().join("st/releases/1/files/conf/site.conf");
    assert!(r.stdout.contains(&expected.display().to_string()), "absolute bind source: {r:?}");
}
