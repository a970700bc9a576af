//! `installer report` (issue 13): the support archive, with and without an installation and
//! a reachable engine, secrets redacted everywhere.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use e2e::{e2e_enabled, run};

use crate::apply::Site;

/// Unpack a report; every file's text, by path inside `installer-report/`.
fn unpack(file: &std::path::Path, into: &std::path::Path) -> Vec<(String, String)> {
    std::fs::create_dir_all(into).unwrap();
    let r = run(Command::new("tar").arg("-xzf").arg(file).arg("-C").arg(into));
    assert_eq!(r.code, 0, "{r:?}");
    let root = into.join("installer-report");
    let mut out = Vec::new();
    let mut todo = vec![root.clone()];
    while let Some(dir) = todo.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            if e.path().is_dir() {
                todo.push(e.path());
            } else {
                let name = e.path().strip_prefix(&root).unwrap().display().to_string();
                out.push((name, String::from_utf8_lossy(&std::fs::read(e.path()).unwrap()).to_string()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn a_report_holds_logs_status_and_history_with_every_secret_redacted() {
    if !e2e_enabled("a_report_holds_logs_status_and_history_with_every_secret_redacted") {
        return;
    }
    let site = Site::new("e2e-report", 18295);
    // The fake database logs "db ready": a secret of that value must not leave the host.
    std::fs::write(&site.values, "DB_PASSWORD=ready\n").unwrap();
    let bundle = site.bundle(1, &[]);
    let r = site.apply(&bundle, &[]);
    assert_eq!(r.code, 0, "{r:?}");
    let file = site.ws.path("report.tar.gz");
    let r = run(site.installer(&["report", "-o"]).arg(&file));
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("report written") && r.stderr.contains("redacted"), "{r:?}");
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    let files = unpack(&file, &site.ws.path("unpacked"));
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    for want in [
        "installer.txt",
        "engine.json",
        "status.json",
        "preflight.txt",
        "host.txt",
        "state/history.jsonl",
        "state/journal.json",
        "state/installed.json",
        "release/1/bundle.json",
        "logs/e2e-report-db-1.log",
    ] {
        assert!(names.contains(&want), "no {want} in {names:?}");
    }
    assert!(!names.iter().any(|n| n.contains("values")), "the values file is in the report: {names:?}");
    let db_log = &files.iter().find(|(n, _)| n == "logs/e2e-report-db-1.log").unwrap().1;
    assert!(db_log.contains("db [redacted:DB_PASSWORD]"), "{db_log}");
    for (name, text) in &files {
        assert!(!text.contains("ready"), "{name} holds the secret: {text}");
    }
}

#[test]
fn a_report_is_written_when_nothing_is_installed_and_docker_is_down() {
    if !e2e_enabled("a_report_is_written_when_nothing_is_installed_and_docker_is_down") {
        return;
    }
    let ws = e2e::Workspace::new();
    let file = ws.path("r.tar.gz");
    let r = run(Command::new(e2e::bin("installer"))
        .args(["report", "-o"])
        .arg(&file)
        .env("INSTALLER_STATE_DIR", ws.path("state"))
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock"));
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("not collected: installed release: nothing is installed"), "{r:?}");
    assert!(r.stderr.contains("not collected: engine"), "{r:?}");
    let files = unpack(&file, &ws.path("u"));
    let errors = &files.iter().find(|(n, _)| n == "collection-errors.txt").expect("no collection-errors.txt").1;
    assert!(errors.contains("nothing is installed") && errors.contains("engine"), "{errors}");
    assert!(files.iter().any(|(n, _)| n == "host.txt"));
}
