//! The compose reader on crafted files: every problem at once, messages that name compose keys,
//! the two interpolation phases, and the keys the old subset refused.

use std::collections::BTreeMap;
use std::path::Path;

use super::prepare::{LoadOptions, Prepared, prepare};
use super::{Problems, resolve};
use crate::manifest::{Manifest, MountKind};

fn load(text: &str) -> Result<Prepared, Problems> {
    load_env(text, &[])
}

fn load_env(text: &str, env: &[(&str, &str)]) -> Result<Prepared, Problems> {
    let opts = LoadOptions {
        environment: env.iter().map(|(k, v)| ((*k).to_string(), (*v).to_string())).collect(),
        ..LoadOptions::default()
    };
    prepare(text, "compose.yaml", Path::new("/nonexistent-compose-dir"), &opts)
}

fn manifest_of(p: &Prepared) -> Manifest {
    let mut m = crate::reader::empty_manifest();
    m.project = p.project.clone();
    m.stack = p.stack.clone();
    m.variables = p.variables.clone();
    m
}

fn values(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| ((*k).to_string(), (*v).to_string())).collect()
}

#[test]
fn every_problem_is_reported_in_one_run_with_line_key_and_hint() {
    let text = "x-bundle: {product: p}
services:
  api:
    image: r/api:${TAG}
    ports:
      - target: 80
        published: eighty
    healthcheck:
      retries: lots
      interval: 1 fortnight
    frobnicate: 1
    depends_on: [nothere]
  db:
    image: r/db:1
    volumes: [data:/var/lib/db]
    restart: sometimes
";
    let err = load(text).unwrap_err().to_string();
    let expected = "7 problems in the compose file:
  compose.yaml:4: services.api.image: variable TAG is not set at bundle time
    hint: what the bundle ships is fixed when it is built: set the variable in the bundler's environment or in the .env file next to the compose file (or --env-file)
  compose.yaml:5: services.api.ports[0]: `eighty:80`: `eighty` is not a host port
  compose.yaml:9: services.api.healthcheck.retries: `lots` is not a whole number of retries
  compose.yaml:10: services.api.healthcheck.interval: `1 fortnight` is not a duration (examples: 30s, 1m30s, 500ms)
  compose.yaml:11: services.api.frobnicate: unknown service key `frobnicate`
    hint: see docs/compose-subset.md for the keys a bundle carries; vendor extensions must start with `x-`
  compose.yaml:12: services.api.depends_on: there is no service `nothere`
  compose.yaml:16: services.db.restart: `sometimes` (use no, always, unless-stopped or on-failure[:N])
";
    // Volume `data` is undeclared too (line 15); checked on its own.
    assert!(err.contains("volume `data` is not declared"), "{err}");
    let without_volume: String =
        err.lines().filter(|l| !l.contains("volume `data`")).map(|l| format!("{l}\n")).collect();
    assert_eq!(without_volume.replace("8 problems", "7 problems"), expected);
    for rust in ["untagged", "enum", "u32", "invalid type", "struct"] {
        assert!(!err.contains(rust), "a message names a Rust type ({rust}): {err}");
    }
}

#[test]
fn bundle_time_pins_the_image_everywhere_and_leaves_site_values() {
    let text = "name: shop
x-bundle: {product: shop}
services:
  api:
    image: r/api:${TAG:-1.0}
    labels: {version: \"${TAG}\"}
    ports: [\"${API_PORT:-8080}:80\"]
    command: [\"sh\", \"-c\", \"echo $$HOME ${GREETING:?say hello}\"]
    environment:
      - TZ
      - DB=${DB_HOST}
";
    let p = load_env(text, &[("TAG", "2.5"), ("API_PORT", "9999")]).unwrap();
    assert_eq!(p.images.iter().collect::<Vec<_>>(), vec!["r/api:2.5"]);
    assert_eq!(p.pinned, BTreeMap::from([("TAG".to_string(), "2.5".to_string())]));
    let api = &p.stack["services"]["api"];
    assert_eq!(api["labels"]["version"], "2.5", "a pinned name has one value everywhere");
    assert_eq!(api["ports"][0], "${API_PORT:-8080}:80", "CI's API_PORT never enters the bundle");
    let v = &p.variables;
    assert!(v["API_PORT"].optional && v["TZ"].optional);
    assert!(!v["DB_HOST"].optional && !v["GREETING"].optional);
    assert_eq!(v["GREETING"].description.as_deref(), Some("say hello"));
    assert!(!v.contains_key("TAG") && !v.contains_key("HOME"));

    let m = manifest_of(&p);
    let r = resolve(&m, &values(&[("DB_HOST", "db.local"), ("GREETING", "hi"), ("TZ", "UTC")])).unwrap();
    let api = &r.services["api"];
    assert_eq!(api.ports[0].host_port, 8080);
    assert_eq!(api.command.as_ref().unwrap()[2], "echo $HOME hi");
    assert_eq!(api.environment["TZ"], "UTC");
    assert_eq!(api.environment["DB"], "db.local");
    let r = resolve(&m, &values(&[("DB_HOST", "x"), ("GREETING", "hi"), ("API_PORT", "443")])).unwrap();
    assert_eq!(r.services["api"].ports[0].host_port, 443);
    assert!(!r.services["api"].environment.contains_key("TZ"), "`- TZ` without a site value is left out");
    let err = resolve(&m, &values(&[("DB_HOST", "x"), ("API_PORT", "http")])).unwrap_err().to_string();
    assert!(err.contains("services.api.ports[0]") && err.contains("API_PORT"), "{err}");
    assert!(err.contains("GREETING is required: say hello"), "{err}");
}

#[test]
fn secrets_are_never_pinned_nor_defaulted() {
    let text = "x-bundle:
  product: p
  pin: [PASSWORD]
  variables:
    PASSWORD: {secret: true}
    TOKEN: {secret: true, default: abc}
services:
  a: {image: r/a:1}
";
    let err = load_env(text, &[("PASSWORD", "hunter2")]).unwrap_err().to_string();
    assert!(err.contains("PASSWORD is secret and cannot be pinned"), "{err}");
    assert!(err.contains("`TOKEN` is secret and has a default"), "{err}");
    assert!(!err.contains("hunter2"));
}

#[test]
fn extends_profiles_and_optional_dependencies() {
    let text = "x-bundle: {product: p}
x-base: &base
  image: r/base:1
  restart: always
services:
  base:
    <<: *base
    environment: {A: \"1\"}
    ports: [\"8001:80\"]
  child:
    extends: base
    environment: {B: \"2\"}
    ports: [\"8002:81\"]
    depends_on:
      debug: {condition: service_started, required: false}
  debug:
    image: r/debug:1
    profiles: [debug]
";
    let p = load(text).unwrap();
    assert!(!p.probe.services.contains_key("debug"));
    let child = &p.probe.services["child"];
    assert_eq!(child.image, "r/base:1");
    assert_eq!(child.restart.as_deref(), Some("always"));
    assert_eq!(child.environment.len(), 2);
    assert_eq!(child.ports.len(), 2);
    assert!(child.depends_on.is_empty());
    let p = prepare(
        text,
        "compose.yaml",
        Path::new("/nonexistent"),
        &LoadOptions { profiles: vec!["debug".into()], ..LoadOptions::default() },
    )
    .unwrap();
    assert!(p.probe.services["child"].depends_on.contains_key("debug"));
}

#[test]
fn mounts_secrets_and_anonymous_volumes() {
    let text = "x-bundle: {product: p}
services:
  a:
    image: r/a:1
    volumes:
      - ./data:/data:rw,z
      - /srv/host:/host:ro,rshared
      - /var/lib/anon
      - type: tmpfs
        target: /run/t
        tmpfs: {size: 1m, mode: 1777}
    secrets: [s]
    configs: [{source: c, target: /etc/c.conf}]
    network_mode: none
secrets:
  s: {environment: S_VALUE}
configs:
  c: {environment: C_VALUE}
";
    let p = load(text).unwrap();
    let a = &p.probe.services["a"];
    let kinds: Vec<(MountKind, &str, &str)> =
        a.volumes.iter().map(|m| (m.kind, m.source.as_str(), m.target.as_str())).collect();
    assert_eq!(
        kinds,
        vec![
            (MountKind::Value, "C_VALUE", "/etc/c.conf"),
            (MountKind::Value, "S_VALUE", "/run/secrets/s"),
            (MountKind::SiteData, "data", "/data"),
            (MountKind::Bind, "/srv/host", "/host"),
            (MountKind::Volume, "a_anon_var_lib_anon", "/var/lib/anon"),
            (MountKind::Tmpfs, "", "/run/t"),
        ]
    );
    assert_eq!(a.volumes[2].options, vec!["z"]);
    assert_eq!(a.volumes[3].options, vec!["rshared"]);
    assert_eq!(a.volumes[5].options, vec!["size=1048576", "mode=1777"]);
    assert!(p.probe.volumes.iter().any(|v| v.name == "p_a_anon_var_lib_anon"));
    assert!(a.networks.is_empty() && a.runtime.network_mode.as_deref() == Some("none"));
    assert!(p.probe.networks.is_empty(), "no service is on the default network");
}

#[test]
fn templates_make_site_variables_and_must_be_mounted_files() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("conf")).unwrap();
    std::fs::write(dir.path().join("conf/app.conf"), "a=${GREETING}\nb=${MODE:-safe}\nc=$$5\n").unwrap();
    std::fs::write(dir.path().join("conf/bad.conf"), "a=${}\n").unwrap();
    let text = "x-bundle: {product: p, templates: [./conf/app.conf]}
services:
  app:
    image: r/app:1
    volumes: [./conf/app.conf:/etc/app.conf:ro]
";
    let p = prepare(text, "compose.yaml", dir.path(), &LoadOptions::default()).unwrap();
    assert_eq!(p.templates["conf/app.conf"], vec!["GREETING".to_string(), "MODE".to_string()]);
    let g = &p.variables["GREETING"];
    assert!(!g.optional && g.description.as_deref() == Some("used by template conf/app.conf"), "{g:?}");
    assert!(p.variables["MODE"].optional);

    let text = "x-bundle: {product: p, templates: [./conf/bad.conf, ./conf/app.conf, ./conf/none.conf]}
services:
  app:
    image: r/app:1
";
    let err = prepare(text, "compose.yaml", dir.path(), &LoadOptions::default()).unwrap_err().to_string();
    for needle in [
        "template conf/bad.conf:",
        "`conf/app.conf`, which is not a file a service bind-mounts",
        "template conf/none.conf:",
    ] {
        assert!(err.contains(needle), "{needle} in {err}");
    }
}

#[test]
fn swarm_settings_are_read_and_what_cannot_work_on_a_swarm_is_refused() {
    let ok = load(
        "x-bundle:
  product: p
  swarm:
    db: {replicas: 1, placement: [node.labels.db == true]}
    api: {replicas: 3, order: start-first}
services:
  db: {image: r/db:1, volumes: [data:/var/lib/db]}
  api: {image: r/api:1}
volumes: {data: {}}
",
    )
    .unwrap();
    assert_eq!(ok.swarm["db"].placement, vec!["node.labels.db == true".to_string()]);
    assert_eq!((ok.swarm["api"].replicas, ok.swarm["api"].order.as_deref()), (Some(3), Some("start-first")));

    let err = load(
        "x-bundle:
  product: p
  swarm:
    db: {replicas: 2, order: start-first}
    web: {replicas: 2}
    nope: {replicas: 1}
    api: {replicas: two, order: sideways, colour: blue}
services:
  db: {image: r/db:1, volumes: [data:/var/lib/db]}
  web: {image: r/web:1, ports: [\"8080:80\"]}
  api: {image: r/api:1}
volumes: {data: {}}
",
    )
    .unwrap_err()
    .to_string();
    for needle in [
        "`db` has 2 replicas and a named volume",
        "`start-first` would run two copies on the same data",
        "`web` publishes ports and has 2 replicas",
        "x-bundle.swarm names `nope`, which is not a service",
        "`replicas` must be a whole number",
        "order `sideways`",
        "unknown key `colour`",
    ] {
        assert!(err.contains(needle), "{needle} in {err}");
    }
}
