//! The installer on Podman's Docker-compatible API (issue 11), as far as this machine lets
//! Podman run containers: `scripts/test` runs this module with DOCKER_HOST on
//! `scripts/engine start podman` (Podman 4.3.1, cgroupfs, no systemd). Against any other engine
//! the tests return at once.
//!
//! What runs: a stack without health gates is loaded, started, re-applied without sending a
//! byte, and reported healthy. What cannot: Podman runs healthchecks only through systemd timers,
//! so a stack with health gates is refused in preflight, naming the reason, with nothing changed.

use std::process::Command;

use e2e::{Workspace, bin, e2e_enabled, run};

fn on_podman() -> bool {
    let r = run(Command::new("docker").args(["version", "--format", "{{range .Server.Components}}{{.Name}} {{end}}"]));
    r.stdout.contains("Podman")
}

fn podman_snapshot() -> String {
    let q = |args: &[&str]| {
        let mut lines: Vec<String> = run(Command::new("docker").args(args)).stdout.lines().map(String::from).collect();
        lines.sort();
        lines.join("\n")
    };
    format!(
        "{}\n{}",
        q(&["ps", "-a", "--format", "{{.ID}} {{.Names}} {{.State}}"]),
        q(&["images", "--no-trunc", "--format", "{{.ID}} {{.Repository}}:{{.Tag}}"])
    )
}

#[test]
fn podman_runs_a_stack_without_health_gates_and_refuses_one_with_them() {
    if !e2e_enabled("podman_runs_a_stack_without_health_gates_and_refuses_one_with_them") || !on_podman() {
        return;
    }
    let ws = Workspace::new();
    let state = ws.path("state");
    let installer = |args: &[&str]| {
        let mut c = Command::new(bin("installer"));
        c.args(args).env("INSTALLER_STATE_DIR", &state);
        c
    };
    let dir = ws.path("tool");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("compose.yaml"),
        "name: e2epodman\nx-bundle: {product: e2epodman}\nservices:\n  tool:\n    image: 127.0.0.1:5000/test/tool:1\n    command: [sleep, \"3600\"]\n    healthcheck: {disable: true}\n    read_only: true\n    tmpfs: [/tmp]\n",
    )
    .unwrap();
    let bundle = ws.path("tool.tar");
    assert_eq!(ws.build(&dir.join("compose.yaml"), 1, &bundle, &[]).code, 0);

    let r = run(installer(&["apply", "--json"]).arg(&bundle).arg("--key").arg(&ws.public));
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("Podman 4") || r.stdout.contains("Podman"), "preflight names Podman: {r:?}");
    let r = run(installer(&["apply", "--json"]).arg(&bundle));
    assert_eq!(r.code, 0, "{r:?}");
    let outcome: serde_json::Value = r
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .find(|v: &serde_json::Value| v["event"] == "outcome")
        .unwrap();
    assert_eq!(outcome["bytes_sent"], 0, "a rerun sends nothing: {outcome}");
    let r = run(&mut installer(&["status", "--json"]));
    assert_eq!(r.code, 0, "{r:?}");
    let status: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(status["engine"], "podman", "{status}");
    let r = run(Command::new("docker").args(["inspect", "-f", "{{.HostConfig.ReadonlyRootfs}}", "e2epodman-tool-1"]));
    assert_eq!(r.stdout.trim(), "true", "{r:?}");

    // The test stack gates on healthchecks: refused before anything changes.
    let stack = ws.stack("gated", &[("name: teststack", "name: e2epodmangated")]);
    let gated = ws.path("gated.tar");
    assert_eq!(ws.build(&stack, 1, &gated, &[]).code, 0);
    let values = ws.path("site.env");
    std::fs::write(&values, "DB_PASSWORD=x\n").unwrap();
    let before = podman_snapshot();
    let mut c = Command::new(bin("installer"));
    c.args(["apply"]).arg(&gated).arg("--key").arg(&ws.public).arg("--values").arg(&values);
    c.env("INSTALLER_STATE_DIR", ws.path("state-gated"));
    let r = run(&mut c);
    assert_eq!(r.code, 51, "{r:?}");
    assert!(r.stderr.contains("systemd") && r.stderr.contains("hint:"), "{r:?}");
    assert_eq!(podman_snapshot(), before, "nothing changed");
    let _ = run(Command::new("docker").args(["rm", "-f", "e2epodman-tool-1"]));
}
