//! The apply logic without Docker and without a registry (plain `cargo test`): a bundle built by
//! the bundler library from an in-memory image source, applied by the installer library to a
//! fake Engine passed in explicitly, which records every call.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::Path;
use std::sync::Mutex;

use bundler::registry::{ImageSource, RegistryError, ResolvedManifest};
use bytes::Bytes;
use installer::engine::{ContainerSpec, ContainerState, Engine, EngineInfo, Health};
use installer::error::InstallError;
use manifests::{Diagnose, Digest, Exit};
use tokio::sync::mpsc;

/// Images made in memory: one shared base layer, one layer of its own each.
struct FakeSource {
    manifests: BTreeMap<String, Vec<u8>>,
    blobs: BTreeMap<Digest, Vec<u8>>,
}

fn layer(name: &str, content: &str) -> Vec<u8> {
    let mut t = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_path(name).unwrap();
    h.set_size(content.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    t.append(&h, content.as_bytes()).unwrap();
    t.into_inner().unwrap()
}

impl FakeSource {
    fn new(images: &[&str]) -> Self {
        let mut blobs = BTreeMap::new();
        let mut manifests = BTreeMap::new();
        let base = layer("base.txt", "shared base");
        let base_digest = Digest::of(&base);
        blobs.insert(base_digest, base.clone());
        for reference in images {
            let own = layer("own.txt", reference);
            let own_digest = Digest::of(&own);
            blobs.insert(own_digest, own.clone());
            let config = serde_json::to_vec(&serde_json::json!({
                "architecture": "amd64", "os": "linux", "config": {},
                "rootfs": {"type": "layers", "diff_ids": [base_digest.to_string(), own_digest.to_string()]}
            }))
            .unwrap();
            let config_digest = Digest::of(&config);
            blobs.insert(config_digest, config.clone());
            let manifest = serde_json::to_vec(&serde_json::json!({
                "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest.to_string(), "size": config.len()},
                "layers": [
                    {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": base_digest.to_string(), "size": base.len()},
                    {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": own_digest.to_string(), "size": own.len()}
                ]
            }))
            .unwrap();
            manifests.insert((*reference).to_string(), manifest);
        }
        Self { manifests, blobs }
    }
}

impl ImageSource for FakeSource {
    async fn resolve(&self, reference: &str) -> Result<ResolvedManifest, RegistryError> {
        let raw = self
            .manifests
            .get(reference)
            .cloned()
            .ok_or_else(|| RegistryError::NotFound { registry: "fake.local".into(), reference: reference.into() })?;
        Ok(ResolvedManifest { index_digest: None, digest: Digest::of(&raw), raw })
    }
    async fn fetch_blob(
        &self,
        _reference: &str,
        digest: &Digest,
        dest: &Path,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<(), RegistryError> {
        let bytes =
            self.blobs.get(digest).or_else(|| self.manifests.values().find(|m| Digest::of(m) == *digest)).unwrap();
        std::fs::write(dest, bytes).unwrap();
        progress(bytes.len() as u64);
        Ok(())
    }
}

/// Records calls; containers come up healthy; jobs exit with a scripted code.
#[derive(Default)]
struct FakeEngine {
    calls: Mutex<Vec<String>>,
    images: Mutex<BTreeSet<Digest>>,
    containers: Mutex<BTreeMap<String, ContainerState>>,
    exit_codes: BTreeMap<String, i64>,
    next_id: Mutex<u32>,
    /// Which engine it pretends to be (default: graph driver).
    kind: Option<installer::engine::EngineKind>,
    /// Diff IDs of an image it holds (whose ID is not one of ours): its layers count as present.
    held_layers: Vec<Digest>,
    /// Refuse an archive that leaves out a layer, as an engine whose unpack needs the blob.
    refuse_partial: bool,
    /// The API version it speaks (default 1.41).
    api: Option<&'static str>,
}

impl FakeEngine {
    fn call(&self, c: String) {
        self.calls.lock().unwrap().push(c);
    }
    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
    fn take_calls(&self) -> Vec<String> {
        std::mem::take(&mut *self.calls.lock().unwrap())
    }
    fn by_id(&self, id: &str) -> Option<String> {
        self.containers.lock().unwrap().iter().find(|(_, c)| c.id == id || c.name == id).map(|(n, _)| n.clone())
    }
}

impl Engine for FakeEngine {
    async fn info(&self) -> Result<EngineInfo, InstallError> {
        Ok(EngineInfo {
            kind: self.kind.unwrap_or(installer::engine::EngineKind::GraphDriver),
            product: "Docker fake".into(),
            min_api_version: "1.12".into(),
            cgroup_driver: "cgroupfs".into(),
            server_version: "fake".into(),
            api_version: self.api.unwrap_or("1.41").into(),
            root_dir: std::env::temp_dir().display().to_string(),
            storage_driver: "overlay2".into(),
            architecture: "x86_64".into(),
            mem_total: 8 << 30,
        })
    }
    async fn images(&self) -> Result<Vec<installer::engine::HostImage>, InstallError> {
        let mut out: Vec<installer::engine::HostImage> = self
            .images
            .lock()
            .unwrap()
            .iter()
            .map(|id| installer::engine::HostImage {
                id: *id,
                repo_digests: vec![],
                diff_ids: vec![],
                available_manifests: vec![],
                manifests_reported: false,
            })
            .collect();
        if !self.held_layers.is_empty() {
            out.push(installer::engine::HostImage {
                id: Digest::of(b"an image of another product"),
                repo_digests: vec![],
                diff_ids: self.held_layers.clone(),
                available_manifests: vec![],
                manifests_reported: false,
            });
        }
        Ok(out)
    }
    async fn load(&self, mut body: mpsc::Receiver<std::io::Result<Bytes>>) -> Result<Vec<String>, InstallError> {
        let mut all = Vec::new();
        while let Some(chunk) = body.recv().await {
            all.extend_from_slice(&chunk.map_err(|e| InstallError::Load { message: e.to_string() })?);
        }
        let mut archive = tar::Archive::new(all.as_slice());
        let mut names = Vec::new();
        let mut manifest = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let name = entry.path().unwrap().display().to_string();
            if name == "manifest.json" {
                entry.read_to_end(&mut manifest).unwrap();
            }
            names.push(name);
        }
        // The index files that make an engine register images come last, after every blob.
        assert_eq!(
            names[names.len().saturating_sub(3)..].to_vec(),
            vec!["oci-layout", "index.json", "manifest.json"],
            "the index files must come last: {names:?}"
        );
        let parsed: Vec<serde_json::Value> = serde_json::from_slice(&manifest).unwrap();
        self.call(format!("load {} entries", names.len()));
        if self.refuse_partial {
            for image in &parsed {
                for l in image["Layers"].as_array().unwrap() {
                    let l = l.as_str().unwrap();
                    if !names.iter().any(|n| n == l) {
                        // What Docker 27+ with the containerd store says inside a 200 response.
                        return Err(InstallError::Load {
                            message: format!(
                                "Error unpacking image fake: failed to extract layer: {l}: blob not found"
                            ),
                        });
                    }
                }
            }
        }
        let mut loaded = Vec::new();
        for image in parsed {
            let config = image["Config"].as_str().unwrap();
            let id: Digest = format!("sha256:{}", config.trim_start_matches("blobs/sha256/")).parse().unwrap();
            self.images.lock().unwrap().insert(id);
            for tag in image["RepoTags"].as_array().unwrap() {
                loaded.push(format!("Loaded image: {}", tag.as_str().unwrap()));
            }
        }
        Ok(loaded)
    }
    async fn tag(&self, _image_id: &Digest, reference: &str) -> Result<(), InstallError> {
        self.call(format!("tag {reference}"));
        Ok(())
    }
    async fn image_tags(&self, _image_id: &Digest) -> Result<Option<Vec<String>>, InstallError> {
        Ok(None)
    }
    async fn remove_image(&self, image_id: &Digest) -> Result<installer::engine::ImageRemoval, InstallError> {
        self.call(format!("rmi {}", image_id.short()));
        Ok(installer::engine::ImageRemoval::Absent)
    }
    async fn ensure_network(
        &self,
        def: &manifests::NetworkDef,
        _labels: &BTreeMap<String, String>,
    ) -> Result<(), InstallError> {
        self.call(format!("network {}", def.name));
        Ok(())
    }
    async fn ensure_volume(
        &self,
        def: &manifests::VolumeDef,
        _labels: &BTreeMap<String, String>,
    ) -> Result<(), InstallError> {
        self.call(format!("volume {}", def.name));
        Ok(())
    }
    async fn network_exists(&self, _name: &str) -> Result<bool, InstallError> {
        Ok(false)
    }
    async fn volume_exists(&self, _name: &str) -> Result<bool, InstallError> {
        Ok(false)
    }
    async fn container(&self, name: &str) -> Result<Option<ContainerState>, InstallError> {
        let key = self.by_id(name);
        Ok(key.and_then(|k| self.containers.lock().unwrap().get(&k).cloned()))
    }
    async fn project_containers(&self, project: &str) -> Result<Vec<ContainerState>, InstallError> {
        Ok(self.containers.lock().unwrap().values().filter(|c| c.name.starts_with(project)).cloned().collect())
    }
    async fn create(&self, spec: &ContainerSpec) -> Result<String, InstallError> {
        let mut n = self.next_id.lock().unwrap();
        *n += 1;
        let id = format!("id{n}");
        self.call(format!("create {}", spec.name));
        self.containers.lock().unwrap().insert(
            spec.name.clone(),
            ContainerState {
                id: id.clone(),
                name: spec.name.clone(),
                labels: spec.labels.clone(),
                running: false,
                status: "created".into(),
                exit_code: None,
                health: Health::None,
                health_output: None,
                image_id: spec.image.clone(),
                started_at: None,
            },
        );
        Ok(id)
    }
    async fn start(&self, id: &str) -> Result<(), InstallError> {
        let name = self.by_id(id).unwrap();
        self.call(format!("start {name}"));
        let service = name.rsplit('-').nth(1).unwrap_or_default().to_string();
        let mut all = self.containers.lock().unwrap();
        let c = all.get_mut(&name).unwrap();
        if let Some(code) = self.exit_codes.get(&service) {
            c.running = false;
            c.status = "exited".into();
            c.exit_code = Some(*code);
        } else if service == "migrate" || service == "backup" {
            c.status = "exited".into();
            c.exit_code = Some(0);
            // Its image has a HEALTHCHECK that never passed while it ran (as client/api's).
            c.health = Health::Unhealthy;
        } else {
            c.running = true;
            c.status = "running".into();
            c.health = Health::Healthy;
        }
        Ok(())
    }
    async fn stop(&self, id: &str, _timeout_secs: i64) -> Result<(), InstallError> {
        self.call(format!("stop {id}"));
        Ok(())
    }
    async fn remove(&self, id: &str) -> Result<(), InstallError> {
        if let Some(name) = self.by_id(id) {
            self.call(format!("remove {name}"));
            self.containers.lock().unwrap().remove(&name);
        }
        Ok(())
    }
    async fn rename(&self, id: &str, new_name: &str) -> Result<(), InstallError> {
        let name = self.by_id(id).unwrap();
        let mut all = self.containers.lock().unwrap();
        let mut c = all.remove(&name).unwrap();
        c.name = new_name.to_string();
        all.insert(new_name.to_string(), c);
        Ok(())
    }
    async fn wait_exit(&self, id: &str) -> Result<i64, InstallError> {
        let name = self.by_id(id).unwrap();
        Ok(self.containers.lock().unwrap()[&name].exit_code.unwrap_or(0))
    }
    async fn logs(&self, _id: &str, _lines: usize) -> Result<String, InstallError> {
        Ok("boom: scripted failure".into())
    }
    async fn container_events(&self, _id: &str) -> Result<mpsc::Receiver<()>, InstallError> {
        // No event stream: gates poll.
        Err(InstallError::Docker { action: "events".into(), message: "not in the fake engine".into() })
    }
    // Data copies are tested on the real dockerd (tests/e2e/data.rs); these tests apply with
    // --no-snapshot.
    async fn volume_mountpoint(&self, _name: &str) -> Result<Option<std::path::PathBuf>, InstallError> {
        Ok(None)
    }
    async fn remove_volume(&self, _name: &str) -> Result<(), InstallError> {
        Ok(())
    }
    async fn volume_users(&self, _name: &str) -> Result<Vec<ContainerState>, InstallError> {
        Ok(vec![])
    }
    async fn labelled(&self, _label: &str) -> Result<Vec<ContainerState>, InstallError> {
        Ok(vec![])
    }
    async fn export(&self, _id: &str, _path: &str, _sink: mpsc::Sender<Bytes>) -> Result<(), InstallError> {
        Err(InstallError::Docker { action: "export".into(), message: "not in the fake engine".into() })
    }
    async fn import(
        &self,
        _id: &str,
        _path: &str,
        _body: mpsc::Receiver<std::io::Result<Bytes>>,
    ) -> Result<(), InstallError> {
        Err(InstallError::Docker { action: "import".into(), message: "not in the fake engine".into() })
    }
}

const COMPOSE: &str = r"
name: fake
x-bundle:
  product: fake
  migrations: [migrate]
  backup: backup
  variables:
    GREETING: {default: hello}
services:
  backup:
    image: fake.local/db:1
    volumes: [data:/data]
    depends_on: {db: {condition: service_healthy}}
  db:
    image: fake.local/db:1
    volumes: [data:/data]
  migrate:
    image: fake.local/app:1
    depends_on: {db: {condition: service_healthy}}
  web:
    image: fake.local/app:1
    environment:
      GREETING: ${GREETING}
    depends_on:
      db: {condition: service_healthy}
      migrate: {condition: service_completed_successfully}
  cache:
    image: fake.local/db:1
volumes:
  data:
";

fn build_bundle(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let compose = dir.join("compose.yaml");
    std::fs::write(&compose, COMPOSE).unwrap();
    let key = manifests::SecretKey::generate();
    let (secret, public) = (dir.join("k.key"), dir.join("k.pub"));
    std::fs::write(&secret, key.to_file_string()).unwrap();
    std::fs::write(&public, key.public_key().to_file_string()).unwrap();
    let out = dir.join("b.tar");
    let opts = bundler::build::BuildOptions {
        load: manifests::compose::LoadOptions::default(),
        compose,
        secret_key: secret,
        version: "1".into(),
        release: 1,
        output: out.clone(),
        cache_dir: dir.join("cache"),
        created: 1_790_000_000,
        valid_days: None,
        jobs: 2,
        rotate_to: None,
        part_size: None,
    };
    let source = FakeSource::new(&["fake.local/db:1", "fake.local/app:1"]);
    runtime().block_on(bundler::build::build(&opts, &source, &bundler::report::Silent)).unwrap();
    (out, public)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

fn options(dir: &Path, bundle: &Path, public: &Path) -> installer::apply::ApplyOptions {
    installer::apply::ApplyOptions {
        bundle: bundle.to_path_buf(),
        media: Vec::new(),
        keys: vec![public.to_path_buf()],
        state_dir: dir.join("state"),
        values_file: None,
        allow_downgrade: false,
        adopt: false,
        // Data copies need the archive endpoints: tested on the real dockerd (tests/e2e/data.rs).
        no_snapshot: true,
    }
}

fn position(calls: &[String], call: &str) -> usize {
    calls.iter().position(|c| c == call).unwrap_or_else(|| panic!("no `{call}` in {calls:?}"))
}

#[test]
fn apply_loads_then_starts_in_dependency_order_and_a_rerun_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (bundle, public) = build_bundle(dir.path());
    let engine = FakeEngine::default();
    let opts = options(dir.path(), &bundle, &public);
    let outcome = runtime().block_on(installer::apply::apply(&opts, &engine, &installer::report::Silent)).unwrap();
    let calls = engine.take_calls();
    let load = calls.iter().position(|c| c.starts_with("load ")).expect("images loaded");
    assert!(load < position(&calls, "network fake_default"));
    assert!(position(&calls, "volume fake_data") < position(&calls, "create fake-db-1"));
    assert!(position(&calls, "start fake-db-1") < position(&calls, "create fake-migrate-1"));
    assert!(position(&calls, "start fake-migrate-1") < position(&calls, "create fake-web-1"));
    // The backup job runs after what it depends on and before every migration.
    assert!(position(&calls, "start fake-db-1") < position(&calls, "create fake-backup-1"));
    assert!(position(&calls, "start fake-backup-1") < position(&calls, "create fake-migrate-1"));
    assert_eq!(outcome.migrations_run, vec!["backup", "migrate"]);
    assert!(outcome.bytes_sent > 0);

    let again = runtime().block_on(installer::apply::apply(&opts, &engine, &installer::report::Silent)).unwrap();
    let calls = engine.take_calls();
    assert!(!calls.iter().any(|c| c.starts_with("create") || c.starts_with("load")), "rerun changed things: {calls:?}");
    assert!(again.migrations_run.is_empty());
    assert_eq!(again.bytes_sent, 0);
    let mut kept = again.kept.clone();
    kept.sort();
    assert_eq!(kept, vec!["cache", "db", "web"]);
}

/// Keeps every event as a JSON line.
#[derive(Default)]
struct Collect(Mutex<Vec<String>>);

impl installer::report::Reporter for Collect {
    fn event(&self, event: &installer::report::Event) {
        self.0.lock().unwrap().push(serde_json::to_string(event).unwrap());
    }
}

impl Collect {
    fn text(&self) -> String {
        self.0.lock().unwrap().join("\n")
    }
}

/// The diff ID of the layer every fake image shares.
fn shared_base_layer() -> Digest {
    Digest::of(&layer("base.txt", "shared base"))
}

#[test]
fn an_engine_that_refuses_a_partial_archive_gets_every_layer_on_the_second_try() {
    let dir = tempfile::tempdir().unwrap();
    let (bundle, public) = build_bundle(dir.path());
    let engine = FakeEngine { held_layers: vec![shared_base_layer()], refuse_partial: true, ..FakeEngine::default() };
    let opts = options(dir.path(), &bundle, &public);
    let events = Collect::default();
    let outcome = runtime().block_on(installer::apply::apply(&opts, &engine, &events)).unwrap();
    let loads: Vec<String> = engine.calls().into_iter().filter(|c| c.starts_with("load ")).collect();
    assert_eq!(loads.len(), 2, "one refused partial load, one full: {loads:?}");
    assert!(events.text().contains("sending all layers"), "the operator is told: {}", events.text());
    assert!(outcome.bytes_sent > 0);
    assert!(engine.calls().iter().any(|c| c == "start fake-web-1"));
}

#[test]
fn an_unrecognised_engine_gets_every_layer_and_the_plan_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let (bundle, public) = build_bundle(dir.path());
    for (kind, skipped) in
        [(installer::engine::EngineKind::GraphDriver, true), (installer::engine::EngineKind::Unknown, false)]
    {
        let engine = FakeEngine { kind: Some(kind), held_layers: vec![shared_base_layer()], ..FakeEngine::default() };
        let opts = options(dir.path(), &bundle, &public);
        let report = runtime().block_on(installer::apply::plan_only(&opts, &engine)).unwrap();
        let text = installer::apply::render_plan(&report);
        assert_eq!(report.plan.load.bytes_skipped > 0, skipped, "{kind:?}: {text}");
        if kind == installer::engine::EngineKind::Unknown {
            assert!(text.contains("unrecognised engine (every layer is sent)"), "{text}");
        }
    }
}

#[test]
fn an_engine_too_old_and_podman_without_systemd_are_named_in_preflight() {
    let dir = tempfile::tempdir().unwrap();
    let (bundle, public) = build_bundle(dir.path());
    let opts = options(dir.path(), &bundle, &public);
    let failed = |engine: &FakeEngine| {
        let report = runtime().block_on(installer::apply::plan_only(&opts, engine)).unwrap();
        let json = serde_json::to_value(&report.preflight).unwrap();
        json["checks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["ok"] == false)
            .map(|c| format!("{} {}", c["check"].as_str().unwrap(), c["detail"].as_str().unwrap()))
            .collect::<Vec<_>>()
    };
    let old = failed(&FakeEngine { api: Some("1.40"), ..FakeEngine::default() });
    assert_eq!(old.len(), 1, "{old:?}");
    assert!(old[0].starts_with("docker Docker fake (API 1.40), bundle needs API 1.41"), "{old:?}");
    let podman = failed(&FakeEngine { kind: Some(installer::engine::EngineKind::Podman), ..FakeEngine::default() });
    assert_eq!(podman.len(), 1, "{podman:?}");
    assert!(podman[0].starts_with("engine Podman") && podman[0].contains("systemd"), "{podman:?}");
    // The apply itself stops there: nothing created.
    let engine = FakeEngine { api: Some("1.40"), ..FakeEngine::default() };
    let err = runtime().block_on(installer::apply::apply(&opts, &engine, &installer::report::Silent)).unwrap_err();
    assert_eq!(err.exit(), Exit::PreflightDocker, "{err}");
    assert!(!engine.calls().iter().any(|c| c.starts_with("create") || c.starts_with("load")), "{:?}", engine.calls());
}

#[test]
fn status_shows_a_finished_job_as_done_not_unhealthy() {
    let dir = tempfile::tempdir().unwrap();
    let (bundle, public) = build_bundle(dir.path());
    let engine = FakeEngine::default();
    let opts = options(dir.path(), &bundle, &public);
    runtime().block_on(installer::apply::apply(&opts, &engine, &installer::report::Silent)).unwrap();
    let state = installer::state::StateDir::new(dir.path().join("state"));
    let report = runtime().block_on(installer::status::status(&state, &engine)).unwrap();
    let migrate = report.services.iter().find(|s| s.service == "migrate").unwrap();
    assert_eq!((migrate.exit_code, migrate.health, migrate.ok), (Some(0), None, true), "{migrate:?}");
    assert!(report.healthy);
}

#[test]
fn a_failing_migration_stops_before_the_services_that_need_it() {
    let dir = tempfile::tempdir().unwrap();
    let (bundle, public) = build_bundle(dir.path());
    let engine = FakeEngine { exit_codes: BTreeMap::from([("migrate".to_string(), 3)]), ..FakeEngine::default() };
    let opts = options(dir.path(), &bundle, &public);
    let err = runtime().block_on(installer::apply::apply(&opts, &engine, &installer::report::Silent)).unwrap_err();
    assert_eq!(err.exit(), Exit::MigrationFailed);
    assert!(err.to_string().contains("migration `migrate`") && err.to_string().contains("boom"), "{err}");
    let calls = engine.calls();
    assert!(!calls.iter().any(|c| c == "create fake-web-1"), "web was created: {calls:?}");
    assert!(calls.iter().any(|c| c == "create fake-db-1"));
}

#[test]
fn a_bundle_for_another_product_is_refused_before_any_change() {
    let dir = tempfile::tempdir().unwrap();
    let (bundle, public) = build_bundle(dir.path());
    let engine = FakeEngine::default();
    let opts = options(dir.path(), &bundle, &public);
    runtime().block_on(installer::apply::apply(&opts, &engine, &installer::report::Silent)).unwrap();
    let state = installer::state::StateDir::new(dir.path().join("state"));
    let mut installed = state.installed().unwrap().unwrap();
    installed.product = "other".into();
    state.set_installed(&installed).unwrap();
    engine.take_calls();
    let err = runtime().block_on(installer::apply::apply(&opts, &engine, &installer::report::Silent)).unwrap_err();
    assert_eq!(err.exit(), Exit::PolicyRejected, "{err}");
    assert!(engine.calls().is_empty(), "engine touched: {:?}", engine.calls());
}

#[test]
fn installer_plan_output_is_stable() {
    let dir = tempfile::tempdir().unwrap();
    let (bundle, public) = build_bundle(dir.path());
    let engine = FakeEngine::default();
    let opts = options(dir.path(), &bundle, &public);
    let render = |engine: &FakeEngine| {
        let report = runtime().block_on(installer::apply::plan_only(&opts, engine)).unwrap();
        // Free space and the hypervisor differ between machines: keep each check's name and verdict.
        installer::apply::render_plan(&report)
            .lines()
            .map(|l| match l.split_whitespace().collect::<Vec<_>>().as_slice() {
                [verdict @ ("ok" | "FAIL"), check, ..] => format!("  {verdict} {check}"),
                _ => l.to_string(),
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    insta::assert_snapshot!("plan_first_install", render(&engine));
    runtime().block_on(installer::apply::apply(&opts, &engine, &installer::report::Silent)).unwrap();
    insta::assert_snapshot!("plan_after_install", render(&engine));
}

#[test]
fn a_changed_operator_value_recreates_only_its_service_and_the_plan_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let (bundle, public) = build_bundle(dir.path());
    let engine = FakeEngine::default();
    let mut opts = options(dir.path(), &bundle, &public);
    runtime().block_on(installer::apply::apply(&opts, &engine, &installer::report::Silent)).unwrap();
    let values = dir.path().join("site.env");
    std::fs::write(&values, "GREETING=hi\n").unwrap();
    opts.values_file = Some(values);
    let report = runtime().block_on(installer::apply::plan_only(&opts, &engine)).unwrap();
    let text = installer::apply::render_plan(&report);
    let line = |service: &str| {
        text.lines().find(|l| l.trim_start().starts_with(service)).unwrap_or_else(|| panic!("{service} in {text}"))
    };
    assert!(line("web").ends_with("recreate (environment changed (bundle or operator values))"), "{text}");
    assert!(line("db").ends_with("keep (unchanged)"), "{text}");
    assert!(line("cache").ends_with("keep (unchanged)"), "{text}");
    engine.take_calls();
    runtime().block_on(installer::apply::apply(&opts, &engine, &installer::report::Silent)).unwrap();
    let created: Vec<String> = engine.take_calls().into_iter().filter(|c| c.starts_with("create")).collect();
    assert_eq!(created, vec!["create fake-web-1".to_string()]);
}

/// What to copy before migrations, and the generations a plan mounts (pure planning).
#[test]
fn the_plan_copies_what_the_migrations_reach_and_mounts_the_recorded_generation() {
    let dir = tempfile::tempdir().unwrap();
    let (bundle, _) = build_bundle(dir.path());
    let mut manifest =
        manifests::Manifest::from_bytes(&e2e::split_tar(&std::fs::read(&bundle).unwrap())[0].data).unwrap();
    let paths = installer::plan::HostPaths {
        files: dir.path().join("files"),
        data: dir.path().join("data"),
        values: dir.path().join("values"),
        rendered: dir.path().join("rendered"),
    };
    let values = std::collections::BTreeMap::from([("GREETING".to_string(), "hello".to_string())]);
    let digests = installer::apply::file_digests(&manifest);
    let plan = |m: &manifests::Manifest, host: &installer::plan::HostState| {
        installer::plan::plan(m, host, &values, &paths, &digests, true).unwrap()
    };
    let service = |p: &installer::plan::Plan, name: &str| {
        p.waves.iter().flatten().find(|s| s.name == name).cloned().unwrap_or_else(|| panic!("no {name}"))
    };
    let fresh = installer::plan::HostState::default();
    let p0 = plan(&manifest, &fresh);
    // migrate depends on db, which mounts `data`; cache mounts nothing.
    assert_eq!(p0.snapshot_keys, vec!["volume:data".to_string()]);
    let data = p0.data.iter().find(|d| d.key == "volume:data").unwrap();
    assert_eq!((data.base.as_str(), data.current.as_str()), ("fake_data", "fake_data"));
    assert_eq!(data.services, vec!["backup".to_string(), "db".to_string()]);

    // On the copy: db mounts it and is recreated for it; cache keeps its hash.
    let mut moved = installer::plan::HostState::default();
    moved.generations.insert("volume:data".into(), "fake_data-r2".into());
    let p1 = plan(&manifest, &moved);
    assert!(
        service(&p1, "db").spec.binds.contains(&"fake_data-r2:/data".to_string()),
        "{:?}",
        service(&p1, "db").spec.binds
    );
    assert_ne!(service(&p1, "db").config_hash, service(&p0, "db").config_hash);
    assert_eq!(service(&p1, "cache").config_hash, service(&p0, "cache").config_hash);
    assert_eq!(p1.stack.volume_name("data"), Some("fake_data-r2"));

    // Nothing to copy when the migration already ran, or when the author turned it off.
    let mut done = installer::plan::HostState::default();
    done.migrations.done.insert(
        installer::state::Migrations::key(1, "migrate"),
        installer::state::MigrationRecord {
            release: 1,
            service: "migrate".into(),
            container: "c".into(),
            finished_at: 0,
        },
    );
    done.migrations.done.insert(
        installer::state::Migrations::key(1, "backup"),
        installer::state::MigrationRecord {
            release: 1,
            service: "backup".into(),
            container: "c".into(),
            finished_at: 0,
        },
    );
    assert!(plan(&manifest, &done).snapshot_keys.is_empty());
    manifest.snapshot = Some(vec![]);
    assert!(plan(&manifest, &fresh).snapshot_keys.is_empty());
    manifest.snapshot = Some(vec!["data".into()]);
    assert_eq!(plan(&manifest, &fresh).snapshot_keys, vec!["volume:data".to_string()]);
}
