//! One compose service -> [`ServiceDef`]. Every key a single Docker host honours is carried;
//! what cannot work offline on one host is refused with a hint; `x-*` keys were dropped before.

use std::collections::BTreeMap;

use serde_json::{Map, Value as Json};

use super::ctx::{Ctx, parse_bytes, parse_cpus, parse_duration};
use super::{Sources, StackNames, relative_path};
use crate::manifest::{
    Condition, HealthcheckDef, LimitsDef, LoggingDef, Mount, MountKind, PortMapping, RuntimeDef, ServiceDef, Ulimit,
};

/// Keys accepted and not carried, with why.
const IGNORED: &[&str] = &["container_name", "pull_policy", "develop", "attach", "annotations", "scale"];

/// Keys refused, with the hint.
const REFUSED: &[(&str, &str)] = &[
    ("external_links", "link to a service of this stack instead; containers outside the bundle are not managed"),
    ("gpus", "GPU reservations are not supported by the installer yet"),
    ("label_file", "write the labels under `labels`"),
    ("credential_spec", "Windows containers are not supported"),
    ("isolation", "Windows containers are not supported"),
    ("storage_opt", "set storage options on the Docker daemon"),
    ("blkio_config", "block I/O weights are not supported yet"),
    ("device_cgroup_rules", "list the devices under `devices`"),
    ("use_api_socket", "mount /var/run/docker.sock explicitly if the service needs it"),
    ("provider", "provider services are not supported"),
    ("models", "model runners are not supported"),
    ("post_start", "lifecycle hooks are not supported; use a one-shot service with depends_on"),
    ("pre_stop", "lifecycle hooks are not supported"),
    ("mac_address", "set the address on the network instead"),
    ("cpu_count", "use `cpus`"),
    ("cpu_percent", "use `cpus`"),
    ("cpu_period", "use `cpus`"),
    ("cpu_quota", "use `cpus`"),
    ("cpu_rt_period", "real-time scheduling is not supported"),
    ("cpu_rt_runtime", "real-time scheduling is not supported"),
];

pub(super) fn service(
    ctx: &mut Ctx<'_>,
    name: &str,
    svc: &Map<String, Json>,
    names: &StackNames,
    sources: &mut Sources,
) -> ServiceDef {
    let p = |k: &str| format!("services.{name}.{k}");
    let mut def = ServiceDef {
        image: String::new(),
        command: None,
        entrypoint: None,
        environment: BTreeMap::new(),
        env_file: vec![],
        ports: vec![],
        volumes: vec![],
        networks: BTreeMap::new(),
        depends_on: BTreeMap::new(),
        healthcheck: None,
        restart: None,
        user: None,
        labels: BTreeMap::new(),
        working_dir: None,
        limits: None,
        logging: None,
        runtime: RuntimeDef::default(),
    };
    let mut limits = LimitsDef { nano_cpus: None, memory_bytes: None };
    let mut extra_aliases: Vec<String> = Vec::new();
    let rt = &mut def.runtime;
    for (key, v) in svc {
        let path = p(key);
        match key.as_str() {
            "image" => def.image = ctx.str(v, &path).unwrap_or_default(),
            "build" => {} // with `image`: the image is pulled (checked in prepare)
            "command" => def.command = command(ctx, v, &path),
            "entrypoint" => def.entrypoint = command(ctx, v, &path),
            "environment" => {
                for (k, val) in ctx.map_or_list(v, &path, '=') {
                    match val {
                        Some(val) => {
                            def.environment.insert(k, val);
                        }
                        // `- TZ`: the site's value, left out when there is none (as compose does
                        // with the shell's environment).
                        None => {
                            let t = format!("${{{k}+${{{k}}}}}");
                            if let Some(v) = ctx.interp(&t, &path)
                                && ctx.interp(&format!("${{{k}+set}}"), &path).as_deref() == Some("set")
                            {
                                def.environment.insert(k, v);
                            }
                        }
                    }
                }
            }
            "env_file" => env_files(ctx, v, &path, &mut def.env_file, sources),
            "ports" => ports(ctx, v, &path, &mut def.ports),
            "expose" => {
                for (i, e) in as_items(v).iter().enumerate() {
                    if let Some(s) = ctx.str(e, &format!("{path}[{i}]")) {
                        let (port, proto) = s.split_once('/').unwrap_or((&s, "tcp"));
                        match port_range(port) {
                            Some((a, b)) => rt.expose.extend((a..=b).map(|n| format!("{n}/{proto}"))),
                            None => ctx.problem(&format!("{path}[{i}]"), format!("`{s}` is not a port"), None),
                        }
                    }
                }
            }
            "volumes" => {
                for (i, item) in as_items(v).iter().enumerate() {
                    if let Some(m) = volume(ctx, item, &format!("{path}[{i}]"), names, sources) {
                        def.volumes.push(m);
                    }
                }
            }
            "tmpfs" => {
                for t in ctx.list(v, &path) {
                    let (target, opts) = t.split_once(':').unwrap_or((&t, ""));
                    let options = opts.split(',').filter(|o| !o.is_empty()).map(str::to_string).collect();
                    def.volumes.push(Mount {
                        kind: MountKind::Tmpfs,
                        source: String::new(),
                        target: target.to_string(),
                        read_only: false,
                        options,
                    });
                }
            }
            "secrets" | "configs" => mounts_of(ctx, key, v, &path, names, &mut def.volumes),
            "networks" => networks(ctx, v, &path, names, &mut def.networks, &mut rt.network_ipv4),
            "network_mode" => {
                if let Some(m) = ctx.str(v, &path) {
                    match m.as_str() {
                        "host" | "none" | "bridge" => rt.network_mode = Some(m),
                        s if s.starts_with("service:") => {
                            let target = &s["service:".len()..];
                            if !names.services.contains(target) {
                                ctx.problem(&path, format!("there is no service `{target}`"), None);
                            }
                            def.depends_on.entry(target.to_string()).or_insert(Condition::Started);
                            rt.network_mode = Some(m);
                        }
                        s if s.starts_with("container:") => ctx.problem(
                            &path,
                            format!("`{s}`: a container outside the stack"),
                            Some("use `service:NAME` for a service of this stack"),
                        ),
                        other => ctx.problem(
                            &path,
                            format!("`{other}` (use host, none, bridge or service:NAME)"),
                            Some("to join a network, list it under `networks`"),
                        ),
                    }
                }
            }
            "depends_on" => depends_on(ctx, v, &path, names, &mut def.depends_on),
            "healthcheck" => def.healthcheck = healthcheck(ctx, v, &path),
            "restart" => {
                if let Some(r) = ctx.str(v, &path) {
                    if valid_restart(&r) {
                        def.restart = Some(r);
                    } else {
                        ctx.problem(&path, format!("`{r}` (use no, always, unless-stopped or on-failure[:N])"), None);
                    }
                }
            }
            "user" => def.user = ctx.str(v, &path),
            "working_dir" => def.working_dir = ctx.str(v, &path),
            "labels" => {
                def.labels = ctx.map_or_list(v, &path, '=').into_iter().map(|(k, v)| (k, v.unwrap_or_default())).collect();
            }
            "logging" => def.logging = logging(ctx, v, &path),
            "deploy" => deploy(ctx, v, &path, &mut limits, rt, &mut def.restart),
            "mem_limit" => limits.memory_bytes = ctx.parsed(v, &path, parse_bytes),
            "cpus" => limits.nano_cpus = ctx.parsed(v, &path, parse_cpus),
            "mem_reservation" => rt.mem_reservation = ctx.parsed(v, &path, parse_bytes),
            "memswap_limit" => rt.memswap_limit = ctx.parsed(v, &path, |s| if s == "-1" { Ok(-1) } else { parse_bytes(s) }),
            "mem_swappiness" => rt.mem_swappiness = ctx.int(v, &path),
            "oom_kill_disable" => rt.oom_kill_disable = ctx.bool(v, &path),
            "oom_score_adj" => rt.oom_score_adj = ctx.int(v, &path),
            "cpu_shares" => rt.cpu_shares = ctx.int(v, &path),
            "cpuset" => rt.cpuset = ctx.str(v, &path),
            "pids_limit" => rt.pids_limit = ctx.int(v, &path),
            "shm_size" => rt.shm_size = ctx.parsed(v, &path, parse_bytes),
            "init" => rt.init = ctx.bool(v, &path),
            "read_only" => rt.read_only = ctx.bool(v, &path).unwrap_or(false),
            "privileged" => rt.privileged = ctx.bool(v, &path).unwrap_or(false),
            "tty" => rt.tty = ctx.bool(v, &path).unwrap_or(false),
            "stdin_open" => rt.stdin_open = ctx.bool(v, &path).unwrap_or(false),
            "security_opt" => rt.security_opt = ctx.list(v, &path),
            "cap_add" => rt.cap_add = ctx.list(v, &path),
            "cap_drop" => rt.cap_drop = ctx.list(v, &path),
            "group_add" => rt.group_add = ctx.list(v, &path),
            "dns" => rt.dns = ctx.list(v, &path),
            "dns_search" => rt.dns_search = ctx.list(v, &path),
            "dns_opt" => rt.dns_opt = ctx.list(v, &path),
            "devices" => {
                for (i, d) in as_items(v).iter().enumerate() {
                    let dp = format!("{path}[{i}]");
                    match d {
                        Json::Object(m) => {
                            let host = m.get("source").and_then(|s| ctx.str(s, &dp)).unwrap_or_default();
                            let cont = m.get("target").and_then(|s| ctx.str(s, &dp)).unwrap_or_else(|| host.clone());
                            let perm = m.get("permissions").and_then(|s| ctx.str(s, &dp)).unwrap_or_else(|| "rwm".into());
                            rt.devices.push(format!("{host}:{cont}:{perm}"));
                        }
                        other => rt.devices.extend(ctx.str(other, &dp)),
                    }
                }
            }
            "extra_hosts" => {
                for (host, ip) in ctx.map_or_list(v, &path, ':') {
                    // List items are `host:ip` or `host=ip`; an IPv6 address keeps its colons.
                    let (host, ip) = match ip {
                        Some(ip) => (host, ip),
                        None => match host.split_once('=') {
                            Some((h, i)) => (h.to_string(), i.to_string()),
                            None => {
                                ctx.problem(&path, format!("`{host}` is not host:ip"), None);
                                continue;
                            }
                        },
                    };
                    let (host, ip) = match host.split_once('=') {
                        Some((h, rest)) => (h.to_string(), format!("{rest}:{ip}")),
                        None => (host, ip),
                    };
                    rt.extra_hosts.push(format!("{host}:{}", ip.trim_start_matches('[').trim_end_matches(']')));
                }
            }
            "sysctls" => {
                rt.sysctls = ctx.map_or_list(v, &path, '=').into_iter().map(|(k, v)| (k, v.unwrap_or_default())).collect();
            }
            "ulimits" => match v {
                Json::Object(m) => {
                    for (k, l) in m {
                        let lp = format!("{path}.{k}");
                        let u = match l {
                            Json::Object(sh) => {
                                let soft = sh.get("soft").and_then(|x| ctx.int(x, &lp));
                                let hard = sh.get("hard").and_then(|x| ctx.int(x, &lp));
                                soft.zip(hard).map(|(soft, hard)| Ulimit { soft, hard })
                            }
                            other => ctx.int(other, &lp).map(|n| Ulimit { soft: n, hard: n }),
                        };
                        if let Some(u) = u {
                            rt.ulimits.insert(k.clone(), u);
                        }
                    }
                }
                _ => ctx.structural(&path, "expected a map of name: limit or name: {soft, hard}", None),
            },
            "stop_signal" => rt.stop_signal = ctx.str(v, &path),
            "stop_grace_period" => rt.stop_grace_period_ms = ctx.parsed(v, &path, parse_duration),
            "hostname" => rt.hostname = ctx.str(v, &path),
            "domainname" => rt.domainname = ctx.str(v, &path),
            "ipc" => rt.ipc = ctx.str(v, &path),
            "pid" => rt.pid = ctx.str(v, &path),
            "uts" => rt.uts = ctx.str(v, &path),
            "userns_mode" => rt.userns_mode = ctx.str(v, &path),
            "cgroup_parent" => rt.cgroup_parent = ctx.str(v, &path),
            "cgroup" => {} // host or private: Docker's default namespace mode is kept
            "runtime" => rt.runtime = ctx.str(v, &path),
            "links" => {
                for l in ctx.list(v, &path) {
                    let target = l.split(':').next().unwrap_or("").to_string();
                    if !names.services.contains(&target) {
                        ctx.problem(&path, format!("there is no service `{target}`"), None);
                    }
                    def.depends_on.entry(target).or_insert(Condition::Started);
                    rt.links.push(l);
                }
            }
            "volumes_from" => {
                for l in ctx.list(v, &path) {
                    let target = l.split(':').next().unwrap_or("").to_string();
                    if target.starts_with("container:") || !names.services.contains(&target) {
                        ctx.problem(&path, format!("`{l}`: only services of this stack can be named"), None);
                        continue;
                    }
                    def.depends_on.entry(target).or_insert(Condition::Started);
                    rt.volumes_from.push(l);
                }
            }
            "platform" => {
                if let Some(pl) = ctx.str(v, &path)
                    && !matches!(pl.as_str(), "" | "linux/amd64" | "linux/x86_64" | "amd64")
                {
                    ctx.problem(&path, format!("`{pl}`: bundles are built for linux/amd64"), None);
                }
            }
            "profiles" | "extends" => {} // applied in prepare
            "container_name" => {
                // Containers are named `<project>-<service>-1`; the vendor's name stays reachable
                // as a DNS alias, since other services often connect to it by that name.
                if let Some(n) = ctx.str(v, &path) {
                    extra_aliases.push(n);
                }
            }
            "hostname_alias" => {}
            "scale" => {
                if ctx.int(v, &path).is_some_and(|n| n > 1) {
                    ctx.problem(&path, "more than one replica", Some("one host runs one replica per service"));
                }
            }
            k if IGNORED.contains(&k) => {}
            k => match REFUSED.iter().find(|(r, _)| *r == k) {
                Some((_, hint)) => ctx.structural(&path, format!("`{k}` is not supported"), Some(hint)),
                None => ctx.structural(
                    &path,
                    format!("unknown service key `{k}`"),
                    Some("see docs/compose-subset.md for the keys a bundle carries; vendor extensions must start with `x-`"),
                ),
            },
        }
    }
    if !extra_aliases.is_empty() {
        for aliases in def.networks.values_mut() {
            aliases.extend(extra_aliases.iter().cloned());
        }
    }
    if def.runtime.network_mode.is_none() && def.networks.is_empty() {
        let mut aliases = Vec::new();
        aliases.extend(extra_aliases);
        def.networks.insert("default".into(), aliases);
    }
    if def.runtime.network_mode.is_some() {
        def.networks.clear();
    }
    if limits.nano_cpus.is_some() || limits.memory_bytes.is_some() {
        def.limits = Some(limits);
    }
    def
}

fn as_items(v: &Json) -> Vec<Json> {
    match v {
        Json::Array(a) => a.clone(),
        Json::Null => vec![],
        other => vec![other.clone()],
    }
}

fn valid_restart(r: &str) -> bool {
    matches!(r, "no" | "always" | "unless-stopped" | "on-failure")
        || r.strip_prefix("on-failure:").is_some_and(|n| n.parse::<u32>().is_ok())
}

fn command(ctx: &mut Ctx<'_>, v: &Json, path: &str) -> Option<Vec<String>> {
    match v {
        Json::Null => None,
        Json::Array(_) => Some(ctx.list(v, path)),
        other => {
            let s = ctx.str(other, path)?;
            match shell_split(&s) {
                Ok(w) => Some(w),
                Err(m) => {
                    ctx.problem(path, m, None);
                    None
                }
            }
        }
    }
}

fn env_files(ctx: &mut Ctx<'_>, v: &Json, path: &str, out: &mut Vec<String>, sources: &mut Sources) {
    for (i, item) in as_items(v).iter().enumerate() {
        let ip = format!("{path}[{i}]");
        let (file, required) = match item {
            Json::Object(m) => {
                let f = m.get("path").and_then(|x| ctx.str(x, &ip));
                let r = m.get("required").and_then(|x| ctx.bool(x, &ip)).unwrap_or(true);
                (f, r)
            }
            other => (ctx.str(other, &ip), true),
        };
        let Some(file) = file else { continue };
        if file.starts_with('/') {
            // A file on the client's host, read at install time (as compose reads it at `up`).
            out.push(if required { file } else { format!("?{file}") });
            continue;
        }
        match relative_path(&file) {
            Ok(rel) => {
                if (sources.exists)(&rel) {
                    sources.files.insert(rel.clone());
                    out.push(rel);
                } else if required {
                    ctx.problem(
                        &ip,
                        format!("env file `{file}` does not exist"),
                        Some("create it, or write `{path: FILE, required: false}`"),
                    );
                }
            }
            Err(m) => ctx.problem(&ip, m, None),
        }
    }
}

fn port_range(s: &str) -> Option<(u16, u16)> {
    let num = |p: &str| p.trim().parse::<u16>().ok();
    match s.split_once('-') {
        Some((a, b)) => Some((num(a)?, num(b)?)).filter(|(a, b)| a <= b),
        None => num(s).map(|n| (n, n)),
    }
}

fn ports(ctx: &mut Ctx<'_>, v: &Json, path: &str, out: &mut Vec<PortMapping>) {
    for (i, item) in as_items(v).iter().enumerate() {
        let ip = format!("{path}[{i}]");
        match item {
            Json::Object(m) => {
                let target = m.get("target").and_then(|x| ctx.str(x, &ip));
                let published = m.get("published").and_then(|x| ctx.str(x, &ip)).unwrap_or_default();
                let host_ip = m.get("host_ip").and_then(|x| ctx.str(x, &ip)).unwrap_or_else(|| "0.0.0.0".into());
                let protocol = m.get("protocol").and_then(|x| ctx.str(x, &ip)).unwrap_or_else(|| "tcp".into());
                let Some(target) = target else { continue };
                let spec = if published.is_empty() { target } else { format!("{published}:{target}") };
                push_port(ctx, &ip, &host_ip, &spec, &protocol, out);
            }
            other => {
                let Some(s) = ctx.str(other, &ip) else { continue };
                let (spec, protocol) = match s.rsplit_once('/') {
                    Some((a, p)) => (a.to_string(), p.to_string()),
                    None => (s.clone(), "tcp".to_string()),
                };
                // `[ip:]host:container`, the ip possibly `[::1]`.
                let (host_ip, rest) = if let Some(r) = spec.strip_prefix('[') {
                    match r.split_once("]:") {
                        Some((ip6, rest)) => (ip6.to_string(), rest.to_string()),
                        None => ("0.0.0.0".to_string(), spec.clone()),
                    }
                } else {
                    let parts: Vec<&str> = spec.split(':').collect();
                    if parts.len() == 3 {
                        (parts[0].to_string(), format!("{}:{}", parts[1], parts[2]))
                    } else {
                        ("0.0.0.0".to_string(), spec.clone())
                    }
                };
                push_port(ctx, &ip, &host_ip, &rest, &protocol, out);
            }
        }
    }
}

fn push_port(ctx: &mut Ctx<'_>, path: &str, host_ip: &str, spec: &str, protocol: &str, out: &mut Vec<PortMapping>) {
    if !matches!(protocol, "tcp" | "udp" | "sctp") {
        ctx.problem(path, format!("protocol `{protocol}` (use tcp or udp)"), None);
        return;
    }
    let (host, container) = match spec.rsplit_once(':') {
        Some((h, c)) => (Some(h), c),
        None => (None, spec),
    };
    let Some((c0, c1)) = port_range(container).filter(|(a, _)| *a > 0) else {
        ctx.problem(path, format!("`{spec}`: `{container}` is not a container port"), None);
        return;
    };
    let (h0, h1) = match host.filter(|h| !h.is_empty()) {
        None => (0, 0),
        Some(h) => match port_range(h) {
            Some(r) => r,
            None => {
                ctx.problem(path, format!("`{spec}`: `{h}` is not a host port"), None);
                return;
            }
        },
    };
    let count = c1 - c0;
    if h0 != 0 && h1 - h0 != count {
        ctx.problem(path, format!("`{spec}`: the host and container ranges differ in length"), None);
        return;
    }
    let host_ip = if host_ip.is_empty() { "0.0.0.0" } else { host_ip };
    for k in 0..=count {
        out.push(PortMapping {
            host_ip: host_ip.to_string(),
            host_port: if h0 == 0 { 0 } else { h0 + k },
            container_port: c0 + k,
            protocol: protocol.to_string(),
        });
    }
}

fn volume(ctx: &mut Ctx<'_>, v: &Json, path: &str, names: &StackNames, sources: &mut Sources) -> Option<Mount> {
    let (typ, source, target, read_only, mut options) = match v {
        Json::Object(m) => {
            let get = |ctx: &mut Ctx<'_>, k: &str| m.get(k).and_then(|x| ctx.str(x, path));
            let typ = get(ctx, "type").unwrap_or_else(|| "volume".into());
            let source = get(ctx, "source").unwrap_or_default();
            let target = get(ctx, "target")?;
            let ro = m.get("read_only").and_then(|x| ctx.bool(x, path)).unwrap_or(false);
            let mut opts = Vec::new();
            if let Some(Json::Object(b)) = m.get("bind") {
                if let Some(pr) = b.get("propagation").and_then(|x| ctx.str(x, path)) {
                    opts.push(pr);
                }
                if let Some(se) = b.get("selinux").and_then(|x| ctx.str(x, path)) {
                    opts.push(se);
                }
            }
            if let Some(Json::Object(vo)) = m.get("volume")
                && vo.get("nocopy").and_then(|x| ctx.bool(x, path)) == Some(true)
            {
                opts.push("nocopy".into());
            }
            if let Some(Json::Object(t)) = m.get("tmpfs") {
                if let Some(size) = t.get("size").and_then(|x| ctx.parsed(x, path, parse_bytes)) {
                    opts.push(format!("size={size}"));
                }
                if let Some(mode) = t.get("mode").and_then(|x| ctx.str(x, path)) {
                    opts.push(format!("mode={mode}"));
                }
            }
            (typ, source, target, ro, opts)
        }
        other => {
            let s = ctx.str(other, path)?;
            let parts: Vec<&str> = s.split(':').collect();
            let (source, target, mode) = match parts.as_slice() {
                [t] => (String::new(), (*t).to_string(), ""),
                [s, t] => ((*s).to_string(), (*t).to_string(), ""),
                [s, t, m] => ((*s).to_string(), (*t).to_string(), *m),
                _ => {
                    ctx.problem(path, format!("`{s}` is not source:target[:mode]"), None);
                    return None;
                }
            };
            let mut ro = false;
            let mut opts = Vec::new();
            for m in mode.split(',').filter(|m| !m.is_empty()) {
                match m {
                    "ro" => ro = true,
                    "rw" => {}
                    "z" | "Z" | "nocopy" | "shared" | "rshared" | "slave" | "rslave" | "private" | "rprivate"
                    | "cached" | "delegated" | "consistent" => {
                        if !matches!(m, "cached" | "delegated" | "consistent") {
                            opts.push(m.to_string());
                        }
                    }
                    other => {
                        ctx.problem(
                            path,
                            format!("`{s}`: mode `{other}` (use ro, rw, z, Z, nocopy or a propagation)"),
                            None,
                        );
                        return None;
                    }
                }
            }
            let typ = if source.is_empty() {
                "volume"
            } else if source.starts_with(['.', '/', '~']) {
                "bind"
            } else {
                "volume"
            };
            (typ.to_string(), source, target, ro, opts)
        }
    };
    if !target.starts_with('/') {
        ctx.problem(path, format!("`{target}`: the container path must be absolute"), None);
        return None;
    }
    match typ.as_str() {
        "tmpfs" => Some(Mount { kind: MountKind::Tmpfs, source: String::new(), target, read_only, options }),
        "volume" if source.is_empty() => {
            // An anonymous volume: Docker would make a new one for every container, and a
            // recreate would leave the data behind. It becomes a named volume of the service
            // and path instead, so the data stays across releases.
            let key = anonymous_volume_key(service_of(path), &target);
            sources.anonymous.insert(key.clone());
            Some(Mount { kind: MountKind::Volume, source: key, target, read_only, options })
        }
        "volume" => {
            if !names.volumes.contains(&source) {
                ctx.problem(path, format!("volume `{source}` is not declared under top-level `volumes`"), None);
                return None;
            }
            Some(Mount { kind: MountKind::Volume, source, target, read_only, options })
        }
        "bind" => {
            if source.starts_with('/') {
                return Some(Mount { kind: MountKind::Bind, source, target, read_only, options });
            }
            if source == "~" || source.starts_with("~/") {
                // As compose: the home directory of whoever installs (root, on the client's VM).
                return Some(Mount { kind: MountKind::Bind, source, target, read_only, options });
            }
            match relative_path(&source) {
                Ok(rel) if (sources.exists)(&rel) => {
                    sources.files.insert(rel.clone());
                    Some(Mount { kind: MountKind::Bind, source: rel, target, read_only, options })
                }
                // Not in the bundle: a directory the stack writes at run time.
                Ok(rel) => {
                    options.retain(|o| o != "nocopy");
                    Some(Mount { kind: MountKind::SiteData, source: rel, target, read_only, options })
                }
                Err(m) => {
                    ctx.problem(path, m, None);
                    None
                }
            }
        }
        "npipe" | "cluster" | "image" => {
            ctx.problem(path, format!("volume type `{typ}` is not supported on a Linux Docker host"), None);
            None
        }
        other => {
            ctx.problem(path, format!("unknown volume type `{other}` (use bind, volume or tmpfs)"), None);
            None
        }
    }
}

/// The service name in a `services.NAME.…` path.
fn service_of(path: &str) -> &str {
    path.strip_prefix("services.").and_then(|r| r.split('.').next()).unwrap_or("")
}

/// The volume key an anonymous volume of `service` at `target` gets.
pub(super) fn anonymous_volume_key(service: &str, target: &str) -> String {
    let t: String =
        target.trim_matches('/').chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect();
    format!("{service}_anon_{t}")
}

fn mounts_of(ctx: &mut Ctx<'_>, kind: &str, v: &Json, path: &str, names: &StackNames, out: &mut Vec<Mount>) {
    for (i, item) in as_items(v).iter().enumerate() {
        let ip = format!("{path}[{i}]");
        let (source, target) = match item {
            Json::Object(m) => (
                m.get("source").and_then(|x| ctx.str(x, &ip)).unwrap_or_default(),
                m.get("target").and_then(|x| ctx.str(x, &ip)),
            ),
            other => (ctx.str(other, &ip).unwrap_or_default(), None),
        };
        let declared = if kind == "secrets" { &names.secrets } else { &names.configs };
        let Some(src) = declared.get(&source) else {
            ctx.problem(&ip, format!("{kind} `{source}` is not declared under top-level `{kind}`"), None);
            continue;
        };
        let target = match target {
            Some(t) if t.starts_with('/') => t,
            Some(t) if kind == "secrets" => format!("/run/secrets/{t}"),
            Some(t) => format!("/{t}"),
            None if kind == "secrets" => format!("/run/secrets/{source}"),
            None => format!("/{source}"),
        };
        let (mkind, s) = match src {
            super::FileOrValue::File(f) => (MountKind::Bind, f.clone()),
            super::FileOrValue::Value(var) => (MountKind::Value, var.clone()),
        };
        out.push(Mount { kind: mkind, source: s, target, read_only: true, options: vec![] });
    }
}

fn networks(
    ctx: &mut Ctx<'_>,
    v: &Json,
    path: &str,
    names: &StackNames,
    out: &mut BTreeMap<String, Vec<String>>,
    ips: &mut BTreeMap<String, String>,
) {
    let mut add = |ctx: &mut Ctx<'_>, n: &str, aliases: Vec<String>| {
        if !names.networks.contains(n) && n != "default" {
            ctx.problem(path, format!("network `{n}` is not declared under top-level `networks`"), None);
        }
        out.insert(n.to_string(), aliases);
    };
    match v {
        Json::Array(l) => {
            for (i, n) in l.iter().enumerate() {
                if let Some(n) = ctx.str(n, &format!("{path}[{i}]")) {
                    add(ctx, &n, vec![]);
                }
            }
        }
        Json::Object(m) => {
            for (n, o) in m {
                let np = format!("{path}.{n}");
                let mut aliases = vec![];
                if let Json::Object(o) = o {
                    if let Some(a) = o.get("aliases") {
                        aliases = ctx.list(a, &np);
                    }
                    if let Some(ip) = o.get("ipv4_address").and_then(|x| ctx.str(x, &np)) {
                        ips.insert(n.clone(), ip);
                    }
                    for k in o.keys() {
                        if !matches!(
                            k.as_str(),
                            "aliases"
                                | "ipv4_address"
                                | "ipv6_address"
                                | "priority"
                                | "gw_priority"
                                | "link_local_ips"
                                | "driver_opts"
                                | "mac_address"
                                | "interface_name"
                        ) {
                            ctx.structural(&format!("{np}.{k}"), format!("unknown network option `{k}`"), None);
                        }
                    }
                }
                add(ctx, n, aliases);
            }
        }
        Json::Null => {}
        _ => ctx.structural(path, "expected a list or a map of networks", None),
    }
}

fn depends_on(ctx: &mut Ctx<'_>, v: &Json, path: &str, names: &StackNames, out: &mut BTreeMap<String, Condition>) {
    let mut entries: Vec<(String, Condition, bool)> = Vec::new();
    match v {
        Json::Array(l) => {
            for (i, n) in l.iter().enumerate() {
                if let Some(n) = ctx.str(n, &format!("{path}[{i}]")) {
                    entries.push((n, Condition::Started, true));
                }
            }
        }
        Json::Object(m) => {
            for (dep, e) in m {
                let ep = format!("{path}.{dep}");
                let mut cond = Condition::Started;
                let mut required = true;
                if let Json::Object(e) = e {
                    if let Some(c) = e.get("condition").and_then(|x| ctx.str(x, &ep)) {
                        cond = match c.as_str() {
                            "service_started" => Condition::Started,
                            "service_healthy" => Condition::Healthy,
                            "service_completed_successfully" => Condition::CompletedSuccessfully,
                            other => {
                                ctx.problem(
                                    &ep,
                                    format!("unknown condition `{other}`"),
                                    Some("use service_started, service_healthy or service_completed_successfully"),
                                );
                                continue;
                            }
                        };
                    }
                    if let Some(r) = e.get("required").and_then(|x| ctx.bool(x, &ep)) {
                        required = r;
                    }
                }
                entries.push((dep.clone(), cond, required));
            }
        }
        Json::Null => {}
        _ => ctx.structural(path, "expected a list or a map of services", None),
    }
    for (dep, cond, required) in entries {
        if !names.services.contains(&dep) {
            // `required: false`: compose goes on without it (left out by a profile, say).
            if required && !names.all_services.contains(&dep) {
                ctx.problem(path, format!("there is no service `{dep}`"), None);
            } else if required {
                ctx.problem(
                    path,
                    format!("service `{dep}` is not in the bundle (its profile is not active)"),
                    Some("build with `--profile` naming its profile, or mark the dependency `required: false`"),
                );
            }
            continue;
        }
        out.insert(dep, cond);
    }
}

fn healthcheck(ctx: &mut Ctx<'_>, v: &Json, path: &str) -> Option<HealthcheckDef> {
    let Json::Object(h) = v else {
        ctx.structural(path, "expected a map", None);
        return None;
    };
    let mut def = HealthcheckDef {
        test: vec![],
        interval_ms: None,
        timeout_ms: None,
        retries: None,
        start_period_ms: None,
        start_interval_ms: None,
    };
    for (k, x) in h {
        let kp = format!("{path}.{k}");
        match k.as_str() {
            "test" => {
                def.test = match x {
                    Json::Array(_) => {
                        let l = ctx.list(x, &kp);
                        if !matches!(l.first().map(String::as_str), Some("CMD" | "CMD-SHELL" | "NONE")) {
                            ctx.problem(&kp, "a list `test` must start with CMD, CMD-SHELL or NONE", None);
                        }
                        l
                    }
                    other => match ctx.str(other, &kp) {
                        Some(s) if s == "NONE" => vec!["NONE".into()],
                        Some(s) => vec!["CMD-SHELL".into(), s],
                        None => vec![],
                    },
                }
            }
            "interval" => def.interval_ms = ctx.parsed(x, &kp, parse_duration),
            "timeout" => def.timeout_ms = ctx.parsed(x, &kp, parse_duration),
            "start_period" => def.start_period_ms = ctx.parsed(x, &kp, parse_duration),
            "start_interval" => def.start_interval_ms = ctx.parsed(x, &kp, parse_duration),
            "retries" => {
                def.retries = ctx.parsed(x, &kp, |s| {
                    s.trim().parse::<u32>().map_err(|_| format!("`{s}` is not a whole number of retries"))
                });
            }
            "disable" => {
                if ctx.bool(x, &kp) == Some(true) {
                    def.test = vec!["NONE".into()];
                }
            }
            other => ctx.structural(&kp, format!("unknown healthcheck key `{other}`"), None),
        }
    }
    if def.test.first().is_some_and(|t| t == "NONE") {
        def = HealthcheckDef { test: vec!["NONE".into()], ..def };
    }
    Some(def)
}

fn logging(ctx: &mut Ctx<'_>, v: &Json, path: &str) -> Option<LoggingDef> {
    let Json::Object(l) = v else { return None };
    let driver =
        l.get("driver").and_then(|d| ctx.str(d, &format!("{path}.driver"))).unwrap_or_else(|| "json-file".into());
    let options = match l.get("options") {
        Some(o) => ctx
            .map_or_list(o, &format!("{path}.options"), '=')
            .into_iter()
            .map(|(k, v)| (k, v.unwrap_or_default()))
            .collect(),
        None => BTreeMap::new(),
    };
    Some(LoggingDef { driver, options })
}

fn deploy(
    ctx: &mut Ctx<'_>,
    v: &Json,
    path: &str,
    limits: &mut LimitsDef,
    rt: &mut RuntimeDef,
    restart: &mut Option<String>,
) {
    let Json::Object(d) = v else { return };
    for (k, x) in d {
        let kp = format!("{path}.{k}");
        match k.as_str() {
            "resources" => {
                let Json::Object(r) = x else { continue };
                if let Some(Json::Object(l)) = r.get("limits") {
                    if let Some(c) = l.get("cpus") {
                        limits.nano_cpus = ctx.parsed(c, &format!("{kp}.limits.cpus"), parse_cpus);
                    }
                    if let Some(m) = l.get("memory") {
                        limits.memory_bytes = ctx.parsed(m, &format!("{kp}.limits.memory"), parse_bytes);
                    }
                    if let Some(p) = l.get("pids") {
                        rt.pids_limit = ctx.int(p, &format!("{kp}.limits.pids"));
                    }
                }
                if let Some(Json::Object(res)) = r.get("reservations") {
                    if let Some(m) = res.get("memory") {
                        rt.mem_reservation = ctx.parsed(m, &format!("{kp}.reservations.memory"), parse_bytes);
                    }
                    if res.get("devices").is_some() {
                        ctx.structural(
                            &format!("{kp}.reservations.devices"),
                            "device reservations (GPUs) are not supported yet",
                            None,
                        );
                    }
                    // `cpus`: Docker has no CPU reservation on one host; compose ignores it too.
                }
            }
            "restart_policy" => {
                let Json::Object(rp) = x else { continue };
                let cond = rp.get("condition").and_then(|c| ctx.str(c, &kp)).unwrap_or_else(|| "any".into());
                let max = rp.get("max_attempts").and_then(|m| ctx.int(m, &kp));
                *restart = match (cond.as_str(), max) {
                    ("none", _) => Some("no".into()),
                    ("on-failure", Some(n)) => Some(format!("on-failure:{n}")),
                    ("on-failure", None) => Some("on-failure".into()),
                    ("any", _) => Some("always".into()),
                    (other, _) => {
                        ctx.problem(&kp, format!("condition `{other}` (use none, on-failure or any)"), None);
                        None
                    }
                };
            }
            "replicas" => {
                if ctx.int(x, &kp).is_some_and(|n| n > 1) {
                    ctx.problem(
                        &kp,
                        "more than one replica",
                        Some("one host runs one replica per service; for several hosts see Swarm support"),
                    );
                }
            }
            "mode" | "labels" | "update_config" | "rollback_config" | "placement" | "endpoint_mode" => {}
            other => ctx.structural(&kp, format!("unknown deploy key `{other}`"), None),
        }
    }
}

/// Split a command string like compose does (POSIX shell words: quotes and backslashes).
pub(super) fn shell_split(s: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => cur.push(c),
                        None => return Err(format!("unterminated single quote in `{s}`")),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => cur.push(c),
                            Some(c) => {
                                cur.push('\\');
                                cur.push(c);
                            }
                            None => return Err(format!("unterminated double quote in `{s}`")),
                        },
                        Some(c) => cur.push(c),
                        None => return Err(format!("unterminated double quote in `{s}`")),
                    }
                }
            }
            '\\' => {
                in_word = true;
                if let Some(c) = chars.next() {
                    cur.push(c);
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    Ok(words)
}
