//! `installer apply --target swarm` (issue 15) on a real one-node Swarm: Debian sid's Docker 28
//! started beside the host's engine by `scripts/engine start swarm`, with Debian's
//! docker-registry (started by the test) as the site registry. This kernel has no IPVS, so the
//! services use `--endpoint-mode dnsrr`; the test stack's port is published in host mode.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use e2e::{Run, Workspace, bin, e2e_enabled, run};

const PROJECT: &str = "swarmstack";
const PORT: &str = "18315";
const REGISTRY_PORT: u16 = 5015;

struct SwarmSite {
    ws: Workspace,
    docker_host: String,
    // Dropped with the site: the registry process ends.
    _registry: crate::push::Registry,
    values: PathBuf,
}

impl SwarmSite {
    fn new() -> Self {
        let out =
            run(Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/engine")).args(["start", "swarm"]));
        assert_eq!(out.code, 0, "scripts/engine start swarm: {out:?}");
        let docker_host = out.stdout.lines().find_map(|l| l.strip_prefix("DOCKER_HOST=")).unwrap().to_string();
        let ws = Workspace::new();
        let registry = crate::push::Registry::start(ws.dir.path(), REGISTRY_PORT, None);
        let values = ws.path("site.env");
        std::fs::write(&values, "DB_PASSWORD=correct-horse-battery\n").unwrap();
        let site = Self { ws, docker_host, _registry: registry, values };
        site.remove_stack();
        site
    }

    fn docker(&self, args: &[&str]) -> Run {
        run(Command::new("docker").args(args).env("DOCKER_HOST", &self.docker_host))
    }

    fn remove_stack(&self) {
        let ids =
            self.docker(&["service", "ls", "-q", "--filter", &format!("label=com.docker.stack.namespace={PROJECT}")]);
        for id in ids.stdout.split_whitespace() {
            let _ = self.docker(&["service", "rm", id]);
        }
        crate::apply::wait_until("the services to go", Duration::from_secs(60), || {
            self.docker(&["ps", "-aq", "--filter", &format!("name={PROJECT}_")]).stdout.trim().is_empty()
        });
        for kind in ["config", "secret"] {
            let ids =
                self.docker(&[kind, "ls", "-q", "--filter", &format!("label=com.docker.stack.namespace={PROJECT}")]);
            for id in ids.stdout.split_whitespace() {
                let _ = self.docker(&[kind, "rm", id]);
            }
        }
        let _ = self.docker(&["volume", "rm", "-f", &format!("{PROJECT}_migrations"), &format!("{PROJECT}_dbdata")]);
        let _ = self.docker(&["network", "rm", &format!("{PROJECT}_default")]);
    }

    fn bundle(&self, release: u64, replacements: &[(&str, &str)]) -> PathBuf {
        let port = format!("127.0.0.1:{PORT}:8080");
        let name = format!("name: {PROJECT}");
        let mut all = vec![("name: teststack", name.as_str()), ("127.0.0.1:18080:8080", port.as_str())];
        all.extend_from_slice(replacements);
        let compose = self.ws.stack(&format!("r{release}"), &all);
        let out = self.ws.path(&format!("r{release}.tar"));
        let r = self.ws.build(&compose, release, &out, &[]);
        assert_eq!(r.code, 0, "{r:?}");
        out
    }

    fn apply_cmd(&self, bundle: &Path) -> Command {
        let mut c = Command::new(bin("installer"));
        c.arg("apply").arg(bundle).arg("--key").arg(&self.ws.public).arg("--values").arg(&self.values);
        c.args(["--target", "swarm", "--registry", &format!("127.0.0.1:{REGISTRY_PORT}/site"), "--plain-http"]);
        c.args(["--endpoint-mode", "dnsrr"]);
        c.env("DOCKER_HOST", &self.docker_host).env("INSTALLER_STATE_DIR", self.ws.path("state"));
        c.env("DOCKER_CONFIG", self.ws.path("no-docker-config")).env_remove("MIGRATE_SLEEP").env_remove("MIGRATE_FAIL");
        c
    }

    fn inspect(&self, service: &str, format: &str) -> String {
        self.docker(&["service", "inspect", "-f", format, &format!("{PROJECT}_{service}")]).stdout.trim().to_string()
    }

    /// Lines the migration wrote into its volume: how many times it ran.
    fn migration_runs(&self) -> usize {
        let r = self.docker(&[
            "run",
            "--rm",
            "-v",
            &format!("{PROJECT}_migrations:/data"),
            "127.0.0.1:5000/test/base:1",
            "sh",
            "-c",
            "cat /data/migrations.log 2>/dev/null || true",
        ]);
        assert_eq!(r.code, 0, "{r:?}");
        r.stdout.lines().filter(|l| l.starts_with("migrated")).count()
    }
}

impl Drop for SwarmSite {
    fn drop(&mut self) {
        self.remove_stack();
        let _ = run(Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/engine"))
            .args(["stop", "swarm", "--purge"]));
    }
}

#[test]
fn a_swarm_apply_is_ordered_gated_runs_each_migration_once_rolls_back_and_resumes() {
    if !e2e_enabled("a_swarm_apply_is_ordered_gated_runs_each_migration_once_rolls_back_and_resumes") {
        return;
    }
    let site = SwarmSite::new();
    let r1 = site.bundle(1, &[]);

    // Release 1: pushed, then db, the migration job, web, each gated, in that order.
    let r = run(&mut site.apply_cmd(&r1));
    assert_eq!(r.code, 0, "{r:?}");
    let created = |s: &str| site.inspect(s, "{{.CreatedAt}}");
    let (db, job, web) = (created("db"), created("migrate_r1"), created("web"));
    assert!(db < job && job < web, "order db {db} < migrate {job} < web {web}");
    for s in ["db", "web"] {
        let image = site.inspect(s, "{{.Spec.TaskTemplate.ContainerSpec.Image}}");
        assert!(image.starts_with(&format!("127.0.0.1:{REGISTRY_PORT}/site/stack/{s}@sha256:")), "{image}");
        let tasks =
            site.docker(&["service", "ps", "-q", "--filter", "desired-state=running", &format!("{PROJECT}_{s}")]);
        assert_eq!(tasks.stdout.lines().count(), 1, "{s}: {tasks:?}");
    }
    assert_eq!(site.inspect("db", "{{index .Spec.Labels \"com.docker.stack.namespace\"}}"), PROJECT);
    assert_eq!(site.migration_runs(), 1);
    // The bundled config file is a Swarm config; the release record is one too.
    let configs = site.docker(&["config", "ls", "--format", "{{.Name}}"]).stdout;
    assert!(configs.lines().any(|c| c.starts_with(&format!("{PROJECT}_conf_site.conf_"))), "{configs}");
    assert!(configs.lines().any(|c| c.starts_with(&format!("{PROJECT}_release_1_"))), "{configs}");

    // Again: nothing changes (same service versions), the migration does not run again.
    let versions = |s: &SwarmSite| (s.inspect("db", "{{.Version.Index}}"), s.inspect("web", "{{.Version.Index}}"));
    let before = versions(&site);
    let r = run(&mut site.apply_cmd(&r1));
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(versions(&site), before);
    assert_eq!(site.migration_runs(), 1);

    // Release 2's web never gets healthy: every service goes back to release 1's spec.
    let r2 = site.bundle(
        2,
        &[(
            "    restart: unless-stopped\n    deploy:",
            "    restart: unless-stopped\n    healthcheck: {test: [\"CMD\", \"false\"], interval: 1s, timeout: 1s, retries: 1}\n    deploy:",
        )],
    );
    let r = run(&mut site.apply_cmd(&r2));
    assert_eq!(r.code, 38, "{r:?}");
    assert!(r.stderr.contains("service `web`"), "{r:?}");
    assert_eq!(site.inspect("web", "{{index .Spec.Labels \"io.installer.release\"}}"), "1");
    assert_eq!(site.inspect("db", "{{index .Spec.Labels \"io.installer.release\"}}"), "1");
    let mut status = Command::new(bin("installer"));
    status.args(["status", "--target", "swarm", "--json"]);
    status.env("DOCKER_HOST", &site.docker_host).env("INSTALLER_STATE_DIR", site.ws.path("state"));
    crate::apply::wait_until("web to run release 1 again", Duration::from_secs(60), || run(&mut status).code == 0);
    let v: serde_json::Value = serde_json::from_str(run(&mut status).stdout.trim()).unwrap();
    assert_eq!(v["release"]["release"], 1, "the swarm's record is still release 1: {v}");
    assert_eq!(site.migration_runs(), 2, "release 2's migration ran once before its web failed");

    // Release 3, killed with -9 while its migration runs: the re-run finishes it, running the
    // migration only once.
    let r3 = site.bundle(3, &[("options: {max-size: 1m}", "options: {max-size: 2m}")]);
    let mut c = site.apply_cmd(&r3);
    c.env("MIGRATE_SLEEP", "6").stdout(Stdio::null()).stderr(Stdio::null());
    let mut child = c.spawn().unwrap();
    crate::apply::wait_until("release 3's migration job", Duration::from_secs(120), || {
        site.docker(&["service", "inspect", &format!("{PROJECT}_migrate_r3")]).code == 0
    });
    child.kill().unwrap();
    child.wait().unwrap();
    let mut again = site.apply_cmd(&r3);
    again.env("MIGRATE_SLEEP", "6");
    let r = run(&mut again);
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(site.migration_runs(), 3, "release 3's migration ran exactly once across the kill");
    assert_eq!(site.inspect("web", "{{index .Spec.Labels \"io.installer.release\"}}"), "3");
    let v: serde_json::Value = serde_json::from_str(run(&mut status).stdout.trim()).unwrap();
    assert_eq!((v["release"]["release"].as_u64(), v["healthy"].as_bool()), (Some(3), Some(true)), "{v}");
    // The history is in the swarm: releases 1 and 3 (release 2 was rolled back, never recorded).
    let mut history = Command::new(bin("installer"));
    history.args(["history", "--target", "swarm", "--json"]);
    history.env("DOCKER_HOST", &site.docker_host).env("INSTALLER_STATE_DIR", site.ws.path("state"));
    let h = run(&mut history);
    let releases: Vec<u64> = h
        .stdout
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["release"].as_u64().unwrap())
        .collect();
    assert_eq!(releases, [1, 3], "{h:?}");
}
