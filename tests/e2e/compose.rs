//! Compose as vendors write it, on the real dockerd (issue 10): a stack that uses anchors and
//! merge keys, profiles, hardening keys, tmpfs, secrets and configs, a bundled directory, a
//! runtime directory, an external network, a named volume with `name:`, and site values in
//! ports, healthcheck and command. Checked with `docker inspect` and by the service answering.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use e2e::{bin, docker_snapshot, e2e_enabled, run};

use crate::apply::Site;

const STACK: &str = r#"name: PROJECT
x-bundle:
  product: PROJECT
  variables:
    API_KEY: {secret: true, description: the API key of the site}
x-hardening: &hardening
  read_only: true
  init: true
  security_opt: ["no-new-privileges:true"]
  cap_drop: [NET_RAW, MKNOD]
  restart: unless-stopped
services:
  web:
    <<: *hardening
    image: 127.0.0.1:5000/stack/web:${WEB_TAG}
    platform: linux/amd64
    pull_policy: always
    container_name: vendor-web
    ports:
      - "127.0.0.1:${WEB_PORT:-18099}:8080"
      - target: 8081
        published: "${STATUS_PORT:-18098}"
        host_ip: 127.0.0.1
    expose: ["9000"]
    command: ["sh", "-c", "trap 'exit 0' TERM INT; echo ${GREETING:-hello} > /tmp/greeting; busybox httpd -f -p 8080 -h /www & wait $$!"]
    healthcheck:
      test: ["CMD-SHELL", "wget -q -O- http://127.0.0.1:8080/health || exit 1"]
      interval: ${HC_INTERVAL:-1s}
      retries: ${HC_RETRIES:-30}
      start_interval: 1s
    tmpfs: ["/tmp:size=16m,mode=1777"]
    ulimits:
      nofile: {soft: 1024, hard: 2048}
      nproc: 512
    shm_size: 64m
    pids_limit: 200
    stop_signal: SIGINT
    stop_grace_period: 7s
    hostname: web-host
    extra_hosts: ["db.example:10.1.2.3"]
    dns_search: [example.internal]
    sysctls: {net.core.somaxconn: "1024"}
    mem_limit: 128m
    mem_reservation: 32m
    cpus: 0.5
    oom_score_adj: 100
    environment:
      - TZ
      - SITE_LABEL=${SITE_LABEL:?name this site}
    labels:
      io.example.site: ${SITE_LABEL}
    volumes:
      - ./html:/www/extra:ro,z
      - ./data:/var/data
      - type: volume
        source: cache
        target: /var/cache/app
        volume: {nocopy: true}
    secrets: [api_key_file]
    configs:
      - source: app_config
        target: /etc/app.conf
    networks: [front, outside]
  sidecar:
    image: 127.0.0.1:5000/test/base:1
    network_mode: service:web
    command: ["sh", "-c", "trap 'exit 0' TERM INT; while :; do sleep 1 & wait $$!; done"]
    deploy:
      restart_policy: {condition: on-failure, max_attempts: 3}
      resources:
        limits: {pids: 50}
        reservations: {memory: 16m}
  debug:
    image: 127.0.0.1:5000/test/base:1
    profiles: [debug]
    command: ["sleep", "3600"]
volumes:
  cache:
    name: PROJECT-shared-cache
    labels: {io.example.kind: cache}
networks:
  front:
    driver_opts: {com.docker.network.bridge.enable_icc: "true"}
    labels: {io.example.kind: front}
  outside:
    external: true
    name: PROJECT-outside
secrets:
  api_key_file:
    environment: API_KEY
configs:
  app_config:
    file: ./conf/app.conf
"#;

struct Features {
    site: Site,
    bundle: PathBuf,
}

fn features(project: &str, port: u16) -> Features {
    let site = Site::new(project, port);
    let dir = site.ws.path("features");
    for (path, text) in [
        ("compose.yaml", STACK.replace("PROJECT", project)),
        ("html/index.html", "bundled tree\n".into()),
        ("html/sub/page.html", "nested page\n".into()),
        ("conf/app.conf", "setting=1\n".into()),
        (".env", "WEB_TAG=1\n".into()),
    ] {
        let p = dir.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    let bundle = site.ws.path("features.tar");
    let r = site.ws.build(&dir.join("compose.yaml"), 1, &bundle, &[]);
    assert_eq!(r.code, 0, "build: {r:?}");
    let _ = run(Command::new("docker").args(["network", "rm", &format!("{project}-outside")]));
    let _ = run(Command::new("docker").args(["volume", "rm", &format!("{project}-shared-cache")]));
    Features { site, bundle }
}

fn inspect(container: &str, format: &str) -> String {
    let r = run(Command::new("docker").args(["inspect", "-f", format, container]));
    assert_eq!(r.code, 0, "inspect {container}: {r:?}");
    r.stdout.trim().to_string()
}

fn http(port: u16, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes()).unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    body
}

fn write_values(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

#[test]
fn a_vendor_style_stack_runs_with_every_key_carried_into_docker() {
    if !e2e_enabled("a_vendor_style_stack_runs_with_every_key_carried_into_docker") {
        return;
    }
    let project = "e2efeat";
    let f = features(project, 18131);
    let site = &f.site;
    let r = run(Command::new("docker").args(["network", "create", &format!("{project}-outside")]));
    assert_eq!(r.code, 0, "{r:?}");
    write_values(
        &site.values,
        "API_KEY=s3cret-value\nWEB_PORT=18131\nSTATUS_PORT=18132\nSITE_LABEL=plant-7\nTZ=Europe/Berlin\nHC_INTERVAL=2s\n",
    );
    let r = site.apply(&f.bundle, &[]);
    assert_eq!(r.code, 0, "apply: {r:?}");

    let web = format!("{project}-web-1");
    // Site values in ports, healthcheck, labels, environment (`- TZ` takes the site's value).
    assert!(http(18131, "/").contains("200 OK"));
    assert!(http(18131, "/extra/sub/page.html").contains("nested page"), "the bundled directory is mounted");
    assert_eq!(inspect(&web, "{{(index (index .HostConfig.PortBindings \"8080/tcp\") 0).HostPort}}"), "18131");
    assert_eq!(inspect(&web, "{{(index (index .HostConfig.PortBindings \"8081/tcp\") 0).HostPort}}"), "18132");
    assert_eq!(inspect(&web, "{{.Config.Healthcheck.Interval}}"), "2s");
    assert_eq!(inspect(&web, "{{.Config.Healthcheck.Retries}}"), "30");
    assert_eq!(inspect(&web, "{{index .Config.Labels \"io.example.site\"}}"), "plant-7");
    let env = inspect(&web, "{{json .Config.Env}}");
    assert!(env.contains("TZ=Europe/Berlin") && env.contains("SITE_LABEL=plant-7"), "{env}");
    // The command kept `$!` for the container's shell and got the compose default of GREETING.
    let r = run(Command::new("docker").args(["exec", &web, "cat", "/tmp/greeting"]));
    assert_eq!(r.stdout.trim(), "hello", "{r:?}");
    // Hardening and runtime keys, from the anchor and the service.
    for (format, want) in [
        ("{{.HostConfig.ReadonlyRootfs}}", "true"),
        ("{{.HostConfig.Init}}", "true"),
        ("{{json .HostConfig.SecurityOpt}}", "[\"no-new-privileges:true\"]"),
        ("{{json .HostConfig.CapDrop}}", "[\"NET_RAW\",\"MKNOD\"]"),
        ("{{.HostConfig.RestartPolicy.Name}}", "unless-stopped"),
        ("{{json .HostConfig.Tmpfs}}", "{\"/tmp\":\"size=16m,mode=1777\"}"),
        ("{{.HostConfig.ShmSize}}", "67108864"),
        ("{{.HostConfig.PidsLimit}}", "200"),
        ("{{.Config.StopSignal}}", "SIGINT"),
        ("{{.Config.StopTimeout}}", "7"),
        ("{{.Config.Hostname}}", "web-host"),
        ("{{json .HostConfig.ExtraHosts}}", "[\"db.example:10.1.2.3\"]"),
        ("{{json .HostConfig.DnsSearch}}", "[\"example.internal\"]"),
        ("{{json .HostConfig.Sysctls}}", "{\"net.core.somaxconn\":\"1024\"}"),
        ("{{.HostConfig.Memory}}", "134217728"),
        ("{{.HostConfig.MemoryReservation}}", "33554432"),
        ("{{.HostConfig.NanoCpus}}", "500000000"),
        ("{{.HostConfig.OomScoreAdj}}", "100"),
    ] {
        assert_eq!(inspect(&web, format), want, "{format}");
    }
    let ulimits = inspect(&web, "{{json .HostConfig.Ulimits}}");
    assert!(ulimits.contains("\"Name\":\"nofile\",\"Hard\":2048,\"Soft\":1024"), "{ulimits}");
    assert!(inspect(&web, "{{json .Config.ExposedPorts}}").contains("9000/tcp"));
    // Networks: the stack's own (with its driver options and labels), the external one, and
    // the vendor's container_name as an alias.
    let nets = inspect(&web, "{{json .NetworkSettings.Networks}}");
    assert!(nets.contains(&format!("{project}_front")) && nets.contains(&format!("{project}-outside")), "{nets}");
    assert!(nets.contains("vendor-web"), "container_name is an alias: {nets}");
    let r =
        run(Command::new("docker").args(["network", "inspect", "-f", "{{json .Labels}}", &format!("{project}_front")]));
    assert!(r.stdout.contains("io.example.kind"), "{r:?}");
    // The named volume keeps its `name:`; `nocopy` reaches the mount.
    let mounts = inspect(&web, "{{json .Mounts}}");
    assert!(mounts.contains(&format!("{project}-shared-cache")), "{mounts}");
    // The secret from a site value and the bundled config are mounted where compose mounts them.
    let r = run(Command::new("docker").args(["exec", &web, "cat", "/run/secrets/api_key_file", "/etc/app.conf"]));
    assert_eq!(r.stdout, "s3cret-valuesetting=1\n", "{r:?}");
    // The runtime directory lives in the site data directory and survives.
    let r = run(Command::new("docker").args(["exec", &web, "sh", "-c", "echo kept > /var/data/file"]));
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(std::fs::read_to_string(site.state.join("data/data/file")).unwrap(), "kept\n");
    // Another container on the stack's network reaches web by its service name and by the
    // vendor's container_name (DNS and forwarding between containers work on this engine).
    for host in ["web", "vendor-web"] {
        let r = run(Command::new("docker").args([
            "run",
            "--rm",
            "--network",
            &format!("{project}_front"),
            "127.0.0.1:5000/test/base:1",
            "wget",
            "-q",
            "-O-",
            &format!("http://{host}:8080/extra/index.html"),
        ]));
        assert!(r.stdout.contains("bundled tree"), "{host}: {r:?}");
    }
    // network_mode: service:web shares web's network namespace.
    let sidecar = format!("{project}-sidecar-1");
    assert_eq!(inspect(&sidecar, "{{.HostConfig.NetworkMode}}"), format!("container:{}", inspect(&web, "{{.Id}}")));
    assert_eq!(inspect(&sidecar, "{{.HostConfig.RestartPolicy.Name}}"), "on-failure");
    assert_eq!(inspect(&sidecar, "{{.HostConfig.RestartPolicy.MaximumRetryCount}}"), "3");
    assert_eq!(inspect(&sidecar, "{{.HostConfig.PidsLimit}}"), "50");
    // A profile that was not active at bundle time is not in the bundle.
    assert!(site.container_id("debug").is_none());

    // A rerun with the same values changes nothing; a changed site value recreates only web.
    let before = (site.container_id("web"), site.container_id("sidecar"));
    assert_eq!(site.apply(&f.bundle, &[]).code, 0);
    assert_eq!((site.container_id("web"), site.container_id("sidecar")), before);
    let r = site.apply(&f.bundle, &[("SITE_LABEL", "plant-8")]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_ne!(site.container_id("web"), before.0);
    assert_eq!(inspect(&web, "{{index .Config.Labels \"io.example.site\"}}"), "plant-8");
    assert_eq!(std::fs::read_to_string(site.state.join("data/data/file")).unwrap(), "kept\n", "site data stays");
    // A new value of the secret recreates web, and the mounted file has it.
    let web_before = site.container_id("web");
    let r = site.apply(&f.bundle, &[("SITE_LABEL", "plant-8"), ("API_KEY", "rotated")]);
    assert_eq!(r.code, 0, "{r:?}");
    assert_ne!(site.container_id("web"), web_before);
    let r = run(Command::new("docker").args(["exec", &web, "cat", "/run/secrets/api_key_file"]));
    assert_eq!(r.stdout, "rotated", "{r:?}");
    let _ = run(Command::new("docker").args(["rm", "-f", &sidecar, &web]));
    let _ = run(Command::new("docker").args(["network", "rm", &format!("{project}-outside")]));
    let _ = run(Command::new("docker").args(["volume", "rm", &format!("{project}-shared-cache")]));
}

#[test]
fn bad_site_values_and_a_missing_external_network_are_refused_before_any_change() {
    if !e2e_enabled("bad_site_values_and_a_missing_external_network_are_refused_before_any_change") {
        return;
    }
    let project = "e2ebadval";
    let f = features(project, 18133);
    let site = &f.site;
    let before = docker_snapshot();
    let apply = |values: &str| {
        write_values(&site.values, values);
        site.apply(&f.bundle, &[])
    };
    // Missing required values: every name, with the author's message.
    let r = apply("WEB_PORT=18133\n");
    assert_eq!(r.code, 30, "{r:?}");
    assert!(
        r.stderr.contains("API_KEY (the API key of the site)") && r.stderr.contains("SITE_LABEL (name this site)"),
        "{r:?}"
    );
    assert!(r.stderr.contains("hint:"), "{r:?}");
    // A value that makes a port and a duration invalid: named with the field and the variable.
    let r = apply("API_KEY=k\nSITE_LABEL=x\nWEB_PORT=eighty\nHC_INTERVAL=soon\n");
    assert_eq!(r.code, 30, "{r:?}");
    for needle in [
        "services.web.ports[0]",
        "WEB_PORT",
        "services.web.healthcheck.interval",
        "HC_INTERVAL",
        "`soon` is not a duration",
    ] {
        assert!(r.stderr.contains(needle), "stderr lacks `{needle}`: {}", r.stderr);
    }
    assert!(!r.stderr.contains("k\n") || !r.stderr.contains("API_KEY=k"), "no secret value in the output");
    // Good values, but the external network does not exist.
    let r = apply("API_KEY=k\nSITE_LABEL=x\nWEB_PORT=18133\nSTATUS_PORT=18134\n");
    assert_eq!(r.code, 30, "{r:?}");
    assert!(r.stderr.contains(&format!("network `{project}-outside`")) && r.stderr.contains("external"), "{r:?}");
    assert_eq!(docker_snapshot(), before, "nothing changed on the host");
    assert!(!site.state.join("installed.json").exists());
}

#[test]
fn bundle_time_problems_are_all_reported_at_once() {
    if !e2e_enabled("bundle_time_problems_are_all_reported_at_once") {
        return;
    }
    let f = features("e2echeck", 18135);
    let dir = f.site.ws.path("features");
    let check = |dir: &Path| {
        run(Command::new(bin("bundler")).args(["check", "-f"]).arg(dir.join("compose.yaml")).env_remove("WEB_TAG"))
    };
    assert_eq!(check(&dir).code, 0, "{:?}", check(&dir));
    // Undefined variable in `image`, a symlink out of a bundled directory, a device-like file
    // (a FIFO), an unknown key and a bad duration: one run names them all.
    std::fs::remove_file(dir.join(".env")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", dir.join("html/leak")).unwrap();
    let text = std::fs::read_to_string(dir.join("compose.yaml")).unwrap();
    std::fs::write(
        dir.join("compose.yaml"),
        text.replace("    hostname: web-host\n", "    hostname: web-host\n    frobnicate: 1\n")
            .replace("start_interval: 1s", "start_interval: 1 fortnight"),
    )
    .unwrap();
    let r = check(&dir);
    assert_eq!(r.code, 10, "{r:?}");
    for needle in [
        "variable WEB_TAG is not set at bundle time",
        "services.web.image",
        "unknown service key `frobnicate`",
        "`1 fortnight` is not a duration",
        "compose.yaml:",
    ] {
        assert!(r.stderr.contains(needle), "stderr lacks `{needle}`: {}", r.stderr);
    }
    // With those fixed, the symlink leaving the tree is refused, naming it.
    std::fs::write(dir.join(".env"), "WEB_TAG=1\n").unwrap();
    std::fs::write(dir.join("compose.yaml"), &text).unwrap();
    let r = check(&dir);
    assert_eq!(r.code, 10, "{r:?}");
    assert!(r.stderr.contains("html/leak") && r.stderr.contains("leaves the bundled directory"), "{r:?}");
    std::fs::remove_file(dir.join("html/leak")).unwrap();
    let fifo = dir.join("html/pipe");
    assert_eq!(run(Command::new("mkfifo").arg(&fifo)).code, 0);
    let r = check(&dir);
    assert_eq!(r.code, 10, "{r:?}");
    assert!(r.stderr.contains("html/pipe") && r.stderr.contains("not a regular file"), "{r:?}");
}

const TEMPLATED: &str = r#"name: PROJECT
x-bundle:
  product: PROJECT
  templates: [./conf/app.conf]
services:
  app:
    image: 127.0.0.1:5000/test/base:1
    command: ["sh", "-c", "trap 'exit 0' TERM INT; while :; do sleep 1 & wait $$!; done"]
    volumes: ["./conf/app.conf:/etc/app.conf:ro"]
    healthcheck: {disable: true}
  other:
    image: 127.0.0.1:5000/test/base:1
    command: ["sh", "-c", "trap 'exit 0' TERM INT; while :; do sleep 1 & wait $$!; done"]
    healthcheck: {disable: true}
"#;

/// `x-bundle.templates` (issue 13): a bundled file rendered with the site's values; its
/// variables are site variables; a changed value re-renders it and recreates only the service
/// that mounts it; a missing value is refused before any change, naming the file.
#[test]
fn a_config_template_is_rendered_with_the_site_values_and_follows_them() {
    if !e2e_enabled("a_config_template_is_rendered_with_the_site_values_and_follows_them") {
        return;
    }
    let project = "e2etemplate";
    let site = Site::new(project, 18134);
    let dir = site.ws.path("templated");
    std::fs::create_dir_all(dir.join("conf")).unwrap();
    std::fs::write(dir.join("compose.yaml"), TEMPLATED.replace("PROJECT", project)).unwrap();
    std::fs::write(dir.join("conf/app.conf"), "greeting=${GREETING}\nmode=${MODE:-safe}\nprice=$$5\n").unwrap();
    let bundle = site.ws.path("templated.tar");
    let r = site.ws.build(&dir.join("compose.yaml"), 1, &bundle, &[]);
    assert_eq!(r.code, 0, "build: {r:?}");
    let r = run(Command::new(bin("bundler")).args(["inspect"]).arg(&bundle));
    assert!(r.stdout.contains("GREETING") && r.stdout.contains("used by template conf/app.conf"), "{r:?}");

    let before = docker_snapshot();
    write_values(&site.values, "DB_PASSWORD=x\n");
    let r = site.apply(&bundle, &[]);
    assert_eq!(r.code, 30, "{r:?}");
    assert!(r.stderr.contains("GREETING") && r.stderr.contains("conf/app.conf"), "{r:?}");
    assert_eq!(docker_snapshot(), before, "a refused apply changed the host");

    write_values(&site.values, "GREETING=hello\n");
    let r = site.apply(&bundle, &[]);
    assert_eq!(r.code, 0, "{r:?}");
    let cat = |c: &str| run(Command::new("docker").args(["exec", c, "cat", "/etc/app.conf"])).stdout;
    assert_eq!(cat(&format!("{project}-app-1")), "greeting=hello\nmode=safe\nprice=$5\n");
    let other = inspect(&format!("{project}-other-1"), "{{.Id}}");

    write_values(&site.values, "GREETING=hi there\n");
    let r = site.apply(&bundle, &[]);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("app: recreate"), "{r:?}");
    assert_eq!(cat(&format!("{project}-app-1")), "greeting=hi there\nmode=safe\nprice=$5\n");
    assert_eq!(
        inspect(&format!("{project}-other-1"), "{{.Id}}"),
        other,
        "a service without the template was recreated"
    );
}
