//! The data around upgrades (issue 12) on the real dockerd: the copy before migrations, the
//! rollback that gives the data back, `installer rollback --yes`, backup and restore files.
//!
//! The PostgreSQL test runs the example stack (examples/client-stack, images from
//! scripts/example-images); the fault tests run the busybox test stack with a volume made big
//! enough that the copy can be interrupted.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use e2e::{Run, Workspace, bin, e2e_enabled, remove_project, run};

use crate::apply::{Site, wait_until};

/// The example stack under another project name and port, with the site's password.
struct Client {
    ws: Workspace,
    project: String,
    state: PathBuf,
    values: PathBuf,
    dir: PathBuf,
}

impl Client {
    fn new(project: &str) -> Self {
        remove_project(project);
        remove_helpers(project);
        let ws = Workspace::new();
        let dir = ws.path("stack");
        std::fs::create_dir_all(dir.join("config")).unwrap();
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/client-stack");
        std::fs::copy(src.join("config/nginx.conf"), dir.join("config/nginx.conf")).unwrap();
        let values = ws.path("site.env");
        std::fs::write(&values, "DB_PASSWORD=a-long-test-password\n").unwrap();
        Self { state: ws.path("state"), ws, project: project.into(), values, dir }
    }

    /// `compose` (release 1's or release 2's file) with our project and port, and edits.
    fn bundle(&self, file: &str, release: u64, edits: &[(&str, &str)]) -> PathBuf {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/client-stack").join(file);
        let mut text = std::fs::read_to_string(src).unwrap();
        for (a, b) in [
            ("name: clientstack", format!("name: {}", self.project).as_str()),
            ("127.0.0.1:8080:80", "127.0.0.1:18290:80"),
        ]
        .iter()
        .chain(edits)
        {
            assert!(text.contains(a), "the example compose file has no `{a}`");
            text = text.replace(a, b);
        }
        let compose = self.dir.join(format!("compose-r{release}.yaml"));
        std::fs::write(&compose, text).unwrap();
        let out = self.ws.path(&format!("bundle-r{release}.tar"));
        let r = self.ws.build(&compose, release, &out, &[]);
        assert_eq!(r.code, 0, "build: {r:?}");
        out
    }

    fn installer(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin("installer"));
        c.args(args).env("INSTALLER_STATE_DIR", &self.state);
        c
    }

    fn apply(&self, bundle: &Path) -> Run {
        run(self.installer(&["apply"]).arg(bundle).arg("--key").arg(&self.ws.public).arg("--values").arg(&self.values))
    }

    fn container(&self, service: &str) -> String {
        format!("{}-{service}-1", self.project)
    }

    /// A query's output (psql -At) in the running db.
    fn sql(&self, query: &str) -> String {
        let r = run(Command::new("docker").args([
            "exec",
            "-e",
            "PGPASSWORD=a-long-test-password",
            &self.container("db"),
            "psql",
            "-h",
            "127.0.0.1",
            "-U",
            "app",
            "-d",
            "app",
            "-At",
            "-c",
            query,
        ]));
        assert_eq!(r.code, 0, "{query}: {r:?}");
        r.stdout.trim().to_string()
    }

    /// The rows, the columns of `site` and the migrations the schema recorded, as one checksum.
    fn fingerprint(&self) -> String {
        let rows = self.sql(
            "SELECT count(*) || ':' || md5(string_agg(name || '|' || first_seen::text, ',' ORDER BY name)) FROM site",
        );
        let columns = self.sql(
            "SELECT string_agg(column_name, ',' ORDER BY column_name) FROM information_schema.columns WHERE table_name = 'site'",
        );
        let versions = self.sql("SELECT string_agg(version::text, ',' ORDER BY version) FROM schema_migrations");
        format!("{rows} / {columns} / {versions}")
    }

    fn volumes(&self) -> Vec<String> {
        let r = run(Command::new("docker").args([
            "volume",
            "ls",
            "-q",
            "--filter",
            &format!("label=com.docker.compose.project={}", self.project),
        ]));
        r.stdout.split_whitespace().map(String::from).collect()
    }

    fn migrations_recorded(&self) -> String {
        std::fs::read_to_string(self.state.join("migrations.json")).unwrap_or_default()
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        remove_helpers(&self.project);
        remove_project(&self.project);
    }
}

fn remove_helpers(project: &str) {
    let ids =
        run(Command::new("docker").args(["ps", "-aq", "--filter", &format!("label=io.installer.helper={project}")]));
    for id in ids.stdout.split_whitespace() {
        let _ = run(Command::new("docker").args(["rm", "-f", id]));
    }
}

fn helpers(project: &str) -> usize {
    run(Command::new("docker").args(["ps", "-aq", "--filter", &format!("label=io.installer.helper={project}")]))
        .stdout
        .split_whitespace()
        .count()
}

#[test]
fn postgres_data_comes_back_with_every_rollback_and_from_a_backup_file() {
    if !e2e_enabled("postgres_data_comes_back_with_every_rollback_and_from_a_backup_file") {
        return;
    }
    let c = Client::new("e2e-pgdata");
    let r1 = c.bundle("compose.yaml", 1, &[]);
    let r = c.apply(&r1);
    assert_eq!(r.code, 0, "{r:?}");
    c.sql("INSERT INTO site (name, first_seen) SELECT 'site-' || g, now() - g * interval '1 minute' FROM generate_series(1, 1000) g");
    let before = c.fingerprint();
    assert!(before.starts_with("1001:") || before.starts_with("1000:"), "{before}");
    assert!(before.contains("first_seen"), "{before}");

    // Release 3: a migration that drops a column, then an API that never gets healthy.
    std::fs::create_dir_all(c.dir.join("m3")).unwrap();
    let images = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/client-stack/images/api/migrations");
    std::fs::copy(images.join("001_create_schema.sql"), c.dir.join("m3/001_create_schema.sql")).unwrap();
    std::fs::write(c.dir.join("m3/003_drop_first_seen.sql"), "ALTER TABLE site DROP COLUMN first_seen;\n").unwrap();
    let bad = c.bundle(
        "compose.yaml",
        3,
        &[
            (
                "    command: [migrate]\n    environment:\n      DB_PASSWORD: ${DB_PASSWORD}\n",
                "    command: [migrate]\n    environment:\n      DB_PASSWORD: ${DB_PASSWORD}\n      MIGRATIONS_DIR: /m3\n    volumes: [\"./m3:/m3:ro\"]\n",
            ),
            (
                "test: [\"CMD\", \"api\", \"healthcheck\"]\n      interval: 5s\n      timeout: 5s\n      retries: 3\n      start_period: 30s",
                "test: [\"CMD\", \"false\"]\n      interval: 1s\n      timeout: 5s\n      retries: 1\n      start_period: 0s",
            ),
        ],
    );
    let r = c.apply(&bad);
    assert_eq!(r.code, 38, "{r:?}");
    assert!(r.stderr.contains("migrate: completed"), "the migration did not run: {r:?}");
    assert!(r.stderr.contains("the data is back as it was before the migrations"), "{r:?}");
    assert_eq!(c.fingerprint(), before, "the rows, the column or the migration records did not come back");
    assert!(!c.migrations_recorded().contains("r3/migrate"), "release 3's migration is still recorded");
    let copy = format!("{}_dbdata-r3", c.project);
    assert!(c.volumes().contains(&copy), "the failed release's copy is not kept: {:?}", c.volumes());
    assert_eq!(helpers(&c.project), 0, "a helper container was left");

    // The same bundle again: its migration runs again, on a fresh copy; the data is still back.
    let r = c.apply(&bad);
    assert_eq!(r.code, 38, "{r:?}");
    assert!(r.stderr.contains("migrate: completed"), "the migration did not run again: {r:?}");
    assert!(c.volumes().contains(&format!("{copy}.2")), "{:?}", c.volumes());
    assert_eq!(c.fingerprint(), before);

    // Release 4 (api 1.1, migration 002 adds a column) is healthy and runs on its copy.
    let r4 = c.bundle("compose.release2.yaml", 4, &[]);
    let r = c.apply(&r4);
    assert_eq!(r.code, 0, "{r:?}");
    let upgraded = c.fingerprint();
    assert!(upgraded.contains("last_seen") && upgraded.ends_with("001,002"), "{upgraded}");
    c.sql("INSERT INTO site (name) VALUES ('written-under-release-4')");

    // Going back needs --yes, and says what is set aside; without it nothing changes.
    let db = run(Command::new("docker").args(["inspect", "-f", "{{.Id}}", &c.container("db")])).stdout;
    let r = run(&mut c.installer(&["rollback"]));
    assert_eq!(r.code, 22, "{r:?}");
    assert!(r.stderr.contains("--yes") && r.stderr.contains(&format!("{}_dbdata-r4", c.project)), "{r:?}");
    assert_eq!(run(Command::new("docker").args(["inspect", "-f", "{{.Id}}", &c.container("db")])).stdout, db);
    let r = run(&mut c.installer(&["rollback", "--yes"]));
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(c.fingerprint(), before, "release 1 does not run on its own data");
    assert!(c.volumes().contains(&format!("{}_dbdata-r4", c.project)), "the newer data was not kept");

    // A backup file, damaged copies of it refused naming the part, then a restore.
    let file = c.ws.path("site.backup");
    let r = run(c.installer(&["backup", "-o"]).arg(&file));
    assert_eq!(r.code, 0, "{r:?}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    let bytes = std::fs::read(&file).unwrap();
    let mut flipped = bytes.clone();
    flipped[2048] ^= 0x01;
    let damaged = c.ws.path("flipped.backup");
    std::fs::write(&damaged, &flipped).unwrap();
    let cut = c.ws.path("cut.backup");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    for (f, says) in [(&damaged, "parts/01-volume.tar"), (&cut, "truncated")] {
        let r = run(c.installer(&["restore"]).arg(f));
        assert_eq!(r.code, 43, "{r:?}");
        assert!(r.stderr.contains(says), "{says}: {r:?}");
    }
    c.sql("INSERT INTO site (name) VALUES ('written-after-the-backup')");
    let r = run(c.installer(&["restore"]).arg(&file));
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(c.fingerprint(), before, "the restore did not give back the backed-up rows");
    let (code, status) = {
        let r = run(&mut c.installer(&["status", "--json"]));
        (r.code, r.stdout)
    };
    assert_eq!(code, 0, "{status}");
}

/// The test stack with 64 MiB in its migrations volume (a copy that takes a moment).
fn site_with_data(project: &str, port: u16) -> (Site, PathBuf, PathBuf) {
    let site = Site::new(project, port);
    remove_helpers(project);
    let r1 = site.bundle(1, &[]);
    let r = site.apply(&r1, &[]);
    assert_eq!(r.code, 0, "{r:?}");
    let fill = run(Command::new("docker").args([
        "run",
        "--rm",
        "-v",
        &format!("{project}_migrations:/data"),
        "127.0.0.1:5000/test/base:1",
        "sh",
        "-c",
        "dd if=/dev/urandom of=/data/blob bs=1M count=64 2>/dev/null && sha256sum /data/blob",
    ]));
    assert_eq!(fill.code, 0, "{fill:?}");
    let r2 = site.bundle(2, &[("SITE_NAME: {default: site-1}", "SITE_NAME: {default: site-2}")]);
    (site, r1, r2)
}

fn started_at(container: &str) -> String {
    run(Command::new("docker").args(["inspect", "-f", "{{.State.StartedAt}} {{.State.Running}}", container])).stdout
}

#[test]
fn kill_9_during_the_copy_then_rerun_copies_again_and_migrates_once() {
    if !e2e_enabled("kill_9_during_the_copy_then_rerun_copies_again_and_migrates_once") {
        return;
    }
    let project = "e2e-snapkill";
    let (site, _, r2) = site_with_data(project, 18291);
    let mut child = site.apply_cmd(&r2).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    wait_until("a helper container", Duration::from_secs(60), || helpers(project) > 0);
    child.kill().unwrap();
    let _ = child.wait();
    let r = site.apply(&r2, &[]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("snapshot:"), "{r:?}");
    assert_eq!(site.migration_runs(), 2, "release 2's migration ran other than once");
    assert_eq!(helpers(project), 0);
    // The copy is whole: the blob reads the same in the release 2 volume.
    let sum = |vol: &str| {
        run(Command::new("docker").args([
            "run",
            "--rm",
            "-v",
            &format!("{vol}:/data"),
            "127.0.0.1:5000/test/base:1",
            "sha256sum",
            "/data/blob",
        ]))
        .stdout
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
    };
    assert_eq!(sum(&format!("{project}_migrations")), sum(&format!("{project}_migrations-r2")));

    // A backup killed during its copy leaves db and web stopped; the next run (here an apply of
    // the installed bundle) starts them again first.
    let file = site.ws.path("killed.tar");
    let mut child =
        site.installer(&["backup", "-o"]).arg(&file).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    wait_until("a helper container", Duration::from_secs(60), || helpers(project) > 0);
    child.kill().unwrap();
    let _ = child.wait();
    assert!(!site.running("db") && !site.running("web"), "the backup had not stopped the services");
    let r = site.apply(&r2, &[]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("an interrupted backup stopped services"), "{r:?}");
    assert!(site.running("db") && site.running("web"));
    assert_eq!(helpers(project), 0);
    assert!(!file.exists());
}

#[test]
fn a_writer_started_during_the_copy_voids_it_and_exactly_the_running_services_come_back() {
    if !e2e_enabled("a_writer_started_during_the_copy_voids_it_and_exactly_the_running_services_come_back") {
        return;
    }
    let project = "e2e-snapwriter";
    let (site, _, r2) = site_with_data(project, 18292);
    let db = format!("{project}-db-1");
    let child = site.apply_cmd(&r2).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    wait_until("a helper container", Duration::from_secs(60), || helpers(project) > 0);
    let r = run(Command::new("docker").args(["start", &db]));
    assert_eq!(r.code, 0, "{r:?}");
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(42), "{stderr}");
    assert!(stderr.contains("was started while its data was being copied"), "{stderr}");
    assert!(site.running("db") && site.running("web"), "{stderr}");
    assert_eq!(site.migration_runs(), 1, "a migration ran on a void copy");
    let vols = run(Command::new("docker").args(["volume", "ls", "-q"])).stdout;
    assert!(!vols.contains(&format!("{project}_migrations-r2")), "the void copy was left: {vols}");
    assert_eq!(helpers(project), 0);

    // A backup that fails the same way starts exactly what was running: web was stopped
    // before it and stays stopped.
    assert_eq!(run(Command::new("docker").args(["stop", &format!("{project}-web-1")])).code, 0);
    let file = site.ws.path("b.tar");
    let child =
        site.installer(&["backup", "-o"]).arg(&file).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    wait_until("a helper container", Duration::from_secs(60), || helpers(project) > 0);
    assert_eq!(run(Command::new("docker").args(["start", &db])).code, 0);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(42), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(site.running("db"));
    assert!(!site.running("web"), "backup started a service that was stopped before it");
    assert!(!file.exists(), "a failed backup left its file");
    let partial = std::fs::read_dir(site.ws.path(""))
        .unwrap()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().contains("partial"));
    assert!(!partial, "a failed backup left its temp file");
}

#[test]
fn not_enough_disk_for_the_snapshot_is_refused_before_any_service_stops() {
    if !e2e_enabled("not_enough_disk_for_the_snapshot_is_refused_before_any_service_stops") {
        return;
    }
    let project = "e2e-snapdisk";
    let (site, _, r2) = site_with_data(project, 18293);
    let before: Vec<String> = ["db", "web"].iter().map(|s| started_at(&format!("{project}-{s}-1"))).collect();
    let r = site.apply(&r2, &[("INSTALLER_TEST_DOCKER_FREE_BYTES", "10000000")]);
    assert_eq!(r.code, 50, "{r:?}");
    assert!(r.stderr.contains("for the snapshot"), "{r:?}");
    let after: Vec<String> = ["db", "web"].iter().map(|s| started_at(&format!("{project}-{s}-1"))).collect();
    assert_eq!(before, after, "a service was stopped or restarted");
    assert_eq!(site.migration_runs(), 1);
    // --no-snapshot goes through and is recorded.
    let r = run(site.apply_cmd(&r2).arg("--no-snapshot").env("INSTALLER_TEST_DOCKER_FREE_BYTES", "10000000"));
    assert_eq!(r.code, 0, "{r:?}");
    let history = run(&mut site.installer(&["history"])).stdout;
    assert!(history.contains("--no-snapshot"), "{history}");
}

#[test]
fn backup_and_restore_keep_owners_modes_links_and_the_volume_root() {
    if !e2e_enabled("backup_and_restore_keep_owners_modes_links_and_the_volume_root") {
        return;
    }
    let project = "e2e-fidelity";
    let site = Site::new(project, 18294);
    remove_helpers(project);
    let r1 = site.bundle(1, &[]);
    assert_eq!(site.apply(&r1, &[]).code, 0);
    let vol = format!("{project}_dbdata");
    let in_volume = |vol: &str, script: &str| {
        run(Command::new("docker").args([
            "run",
            "--rm",
            "-v",
            &format!("{vol}:/v"),
            "127.0.0.1:5000/test/base:1",
            "sh",
            "-c",
            script,
        ]))
    };
    let setup = in_volume(
        &vol,
        "cd /v && mkdir -p d && echo data > d/f && chown 999:70 d/f && chmod 4755 d/f && ln -s d/f link && \
         ln d/f hard && mkfifo pipe && chown -h 1234:1234 link && chmod 1755 d && chown 70:70 /v && chmod 0700 /v",
    );
    assert_eq!(setup.code, 0, "{setup:?}");
    let listing = "cd /v && stat -c '%n %u %g %a %h %F' . d d/f link hard pipe && readlink link";
    let before = in_volume(&vol, listing).stdout;
    let file = site.ws.path("fidelity.tar");
    let r = run(site.installer(&["backup", "-o"]).arg(&file));
    assert_eq!(r.code, 0, "{r:?}");
    // Change the data, then restore: it comes back into a fresh volume, as it was.
    assert_eq!(in_volume(&vol, "rm -rf /v/d /v/hard && echo new > /v/new").code, 0);
    let r = run(site.installer(&["restore"]).arg(&file));
    assert_eq!(r.code, 0, "{r:?}");
    let status = run(&mut site.installer(&["status", "--json"]));
    assert_eq!(status.code, 0, "{status:?}");
    let restored = run(Command::new("docker").args([
        "volume",
        "ls",
        "-q",
        "--filter",
        "label=io.installer.data-source=volume:dbdata",
    ]))
    .stdout
    .split_whitespace()
    .find(|v| v.starts_with(&format!("{vol}-restored-")))
    .map(String::from)
    .expect("no restored volume");
    assert_eq!(in_volume(&restored, listing).stdout, before);
    assert!(in_volume(&restored, "ls /v/new 2>&1 || true").stdout.contains("No such file"));
    // The volume in use before is kept, with the change.
    assert_eq!(in_volume(&vol, "cat /v/new").stdout.trim(), "new");
}
