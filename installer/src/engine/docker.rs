//! [`Engine`] on the Docker Engine API through bollard: the only module that imports bollard.
//!
//! `Docker::connect_with_local_defaults()` honours DOCKER_HOST and never pins an API version
//! (bollard 0.21 sends unversioned paths; the daemon answers at its own version), so the same
//! binary talks to Docker 20.10 and to current releases.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use bollard::Docker;
use bollard::errors::Error as BollardError;
use bollard::models::{
    ContainerCreateBody, DeviceMapping, EndpointIpamConfig, EndpointSettings, HealthConfig, HealthStatusEnum,
    HostConfig, HostConfigLogConfig, Ipam, IpamConfig, NetworkCreateRequest, NetworkingConfig, PortBinding,
    ResourcesUlimits, RestartPolicy, RestartPolicyNameEnum, VolumeCreateRequest,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ImportImageOptionsBuilder, InspectContainerOptions, ListContainersOptionsBuilder,
    ListImagesOptionsBuilder, ListNetworksOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder,
    RemoveImageOptionsBuilder, RenameContainerOptions, StopContainerOptionsBuilder, TagImageOptionsBuilder,
    WaitContainerOptionsBuilder,
};
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use manifests::{Digest, NetworkDef, VolumeDef};
use tokio::sync::mpsc;

use crate::engine::{ContainerSpec, ContainerState, Engine, EngineInfo, EngineKind, Health, HostImage, ImageRemoval};
use crate::error::InstallError;

/// The local Docker Engine.
pub struct DockerEngine {
    docker: Docker,
}

impl DockerEngine {
    /// The same connection's Swarm API (a manager's services, tasks, configs).
    #[must_use]
    pub fn swarm(&self) -> crate::engine::swarm::SwarmEngine {
        crate::engine::swarm::SwarmEngine::new(self.docker.clone())
    }

    /// Connect (lazily: the first call reports an unreachable daemon).
    ///
    /// # Errors
    /// If DOCKER_HOST cannot be parsed.
    pub fn connect() -> Result<Self, InstallError> {
        let docker = Docker::connect_with_local_defaults()
            .map_err(|e| InstallError::DockerUnreachable { during: String::new(), message: e.to_string() })?
            // docker load spools the whole upload before its first answer; the default 120 s
            // would cut large loads.
            .with_timeout(Duration::from_secs(3600));
        Ok(Self { docker })
    }
}

/// `host[:container[:permissions]]` as Docker's device mapping.
fn device(spec: &str) -> DeviceMapping {
    let mut parts = spec.splitn(3, ':');
    let host = parts.next().unwrap_or_default().to_string();
    let container = parts.next().filter(|s| !s.is_empty()).map_or_else(|| host.clone(), str::to_string);
    let perms = parts.next().filter(|s| !s.is_empty()).unwrap_or("rwm").to_string();
    DeviceMapping { path_on_host: Some(host), path_in_container: Some(container), cgroup_permissions: Some(perms) }
}

fn classify(action: &str) -> impl Fn(BollardError) -> InstallError + '_ {
    move |e| match e {
        BollardError::DockerResponseServerError { message, .. } => {
            InstallError::Docker { action: action.to_string(), message }
        }
        BollardError::DockerStreamError { error } => InstallError::Load { message: error },
        other => InstallError::DockerUnreachable {
            during: format!(" while trying to {action}"),
            message: manifests::display::error_chain(&other),
        },
    }
}

fn is_not_found(e: &BollardError) -> bool {
    matches!(e, BollardError::DockerResponseServerError { status_code: 404, .. })
}

fn nanos(ms: Option<u64>) -> Option<i64> {
    ms.map(|m| i64::try_from(m).unwrap_or(i64::MAX / 1_000_000).saturating_mul(1_000_000))
}

fn restart_policy(r: Option<&str>) -> Option<RestartPolicy> {
    let r = r?;
    let (name, count) = match r.split_once(':') {
        Some(("on-failure", n)) => (RestartPolicyNameEnum::ON_FAILURE, n.parse().ok()),
        _ => (
            match r {
                "always" => RestartPolicyNameEnum::ALWAYS,
                "unless-stopped" => RestartPolicyNameEnum::UNLESS_STOPPED,
                "on-failure" => RestartPolicyNameEnum::ON_FAILURE,
                _ => RestartPolicyNameEnum::NO,
            },
            None,
        ),
    };
    Some(RestartPolicy { name: Some(name), maximum_retry_count: count })
}

impl Engine for DockerEngine {
    async fn info(&self) -> Result<EngineInfo, InstallError> {
        let version = self.docker.version().await.map_err(classify("read its version"))?;
        let info = self.docker.info().await.map_err(classify("describe itself"))?;
        let components: Vec<String> = version.components.iter().flatten().map(|c| c.name.clone()).collect();
        let podman = components.iter().any(|c| c.contains("Podman"));
        let snapshotter = info.driver_status.iter().flatten().any(|kv| {
            kv.first().is_some_and(|k| k == "driver-type") && kv.get(1).is_some_and(|v| v.contains("snapshotter"))
        });
        let docker = components.iter().any(|c| c == "Engine") || info.driver.is_some();
        let kind = if podman {
            EngineKind::Podman
        } else if snapshotter {
            EngineKind::ContainerdStore
        } else if docker && info.driver.as_deref().is_some_and(|d| !d.is_empty()) {
            EngineKind::GraphDriver
        } else {
            EngineKind::Unknown
        };
        let server_version = version.version.clone().unwrap_or_default();
        Ok(EngineInfo {
            kind,
            product: format!("{} {server_version}", if podman { "Podman" } else { "Docker" }),
            min_api_version: version.min_api_version.unwrap_or_default(),
            cgroup_driver: info.cgroup_driver.map(|c| c.to_string()).unwrap_or_default(),
            server_version,
            api_version: version.api_version.unwrap_or_default(),
            root_dir: info.docker_root_dir.unwrap_or_default(),
            storage_driver: info.driver.unwrap_or_default(),
            architecture: info.architecture.unwrap_or_default(),
            mem_total: info.mem_total.unwrap_or_default(),
        })
    }

    async fn images(&self) -> Result<Vec<HostImage>, InstallError> {
        // `manifests=1` (API 1.47+, containerd store) says which platform manifests have every
        // blob in the content store; older engines ignore the parameter.
        let images = self
            .docker
            .list_images(Some(ListImagesOptionsBuilder::default().all(true).manifests(true).build()))
            .await
            .map_err(classify("list images"))?;
        let mut out = Vec::new();
        for summary in images {
            let Ok(id) = summary.id.parse::<Digest>() else { continue };
            let image = match self.docker.inspect_image(&summary.id).await {
                Ok(i) => i,
                Err(e) if is_not_found(&e) => continue,
                Err(e) => return Err(classify("inspect an image")(e)),
            };
            let diff_ids = image
                .root_fs
                .and_then(|r| r.layers)
                .unwrap_or_default()
                .iter()
                .filter_map(|d| d.parse().ok())
                .collect();
            let repo_digests = summary
                .repo_digests
                .iter()
                .filter_map(|r| r.rsplit_once('@').and_then(|(_, d)| d.parse().ok()))
                .collect();
            let manifests_reported = summary.manifests.is_some();
            let available_manifests =
                summary.manifests.iter().flatten().filter(|m| m.available).filter_map(|m| m.id.parse().ok()).collect();
            out.push(HostImage { id, repo_digests, diff_ids, available_manifests, manifests_reported });
        }
        Ok(out)
    }

    async fn load(&self, body: mpsc::Receiver<std::io::Result<Bytes>>) -> Result<Vec<String>, InstallError> {
        let stream = futures_util::stream::unfold(body, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
        let mut responses =
            self.docker.import_image_stream(ImportImageOptionsBuilder::default().quiet(false).build(), stream, None);
        let mut loaded = Vec::new();
        while let Some(item) = responses.next().await {
            let info = item.map_err(|e| match e {
                BollardError::DockerStreamError { error } => InstallError::Load { message: error },
                BollardError::DockerResponseServerError { message, .. } => InstallError::Load { message },
                other => InstallError::DockerUnreachable {
                    during: " while loading images".into(),
                    message: manifests::display::error_chain(&other),
                },
            })?;
            if let Some(line) = info.stream {
                let line = line.trim();
                // Docker 27+ with the containerd store reports a failed unpack inside a 200
                // response and keeps the imported content (moby image_exporter.go).
                if line.starts_with("Error unpacking image") {
                    return Err(InstallError::Load { message: line.to_string() });
                }
                if !line.is_empty() {
                    loaded.push(line.to_string());
                }
            }
        }
        Ok(loaded)
    }

    async fn tag(&self, image_id: &Digest, reference: &str) -> Result<(), InstallError> {
        // Split at the last ':' after the last '/' (registry ports contain ':').
        let slash = reference.rfind('/').map_or(0, |i| i + 1);
        let (repo, tag) = match reference[slash..].rfind(':') {
            Some(i) => (&reference[..slash + i], &reference[slash + i + 1..]),
            None => (reference, "latest"),
        };
        self.docker
            .tag_image(&image_id.to_string(), Some(TagImageOptionsBuilder::default().repo(repo).tag(tag).build()))
            .await
            .map_err(classify(&format!("tag image {} as {reference}", image_id.short())))
    }

    async fn image_tags(&self, image_id: &Digest) -> Result<Option<Vec<String>>, InstallError> {
        match self.docker.inspect_image(&image_id.to_string()).await {
            Ok(image) => Ok(Some(image.repo_tags.unwrap_or_default())),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(classify(&format!("inspect image {}", image_id.short()))(e)),
        }
    }

    async fn remove_image(&self, image_id: &Digest) -> Result<ImageRemoval, InstallError> {
        let opts = RemoveImageOptionsBuilder::default().force(false).noprune(false).build();
        match self.docker.remove_image(&image_id.to_string(), Some(opts), None).await {
            Ok(_) => Ok(ImageRemoval::Removed),
            Err(e) if is_not_found(&e) => Ok(ImageRemoval::Absent),
            // 409: used by a container, tagged more than once, or has child images.
            Err(BollardError::DockerResponseServerError { status_code: 409, message }) => {
                Ok(ImageRemoval::Refused(message))
            }
            Err(e) => Err(classify(&format!("remove image {}", image_id.short()))(e)),
        }
    }

    async fn network_exists(&self, name: &str) -> Result<bool, InstallError> {
        match self.docker.inspect_network(name, None::<bollard::query_parameters::InspectNetworkOptions>).await {
            Ok(_) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) => Err(classify(&format!("inspect network {name}"))(e)),
        }
    }

    async fn volume_exists(&self, name: &str) -> Result<bool, InstallError> {
        match self.docker.inspect_volume(name).await {
            Ok(_) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) => Err(classify(&format!("inspect volume {name}"))(e)),
        }
    }

    async fn ensure_network(&self, def: &NetworkDef, labels: &BTreeMap<String, String>) -> Result<(), InstallError> {
        let name = def.name.as_str();
        // Docker allows two networks of one name; an apply killed while its create request was
        // in flight can leave a twin. Keep one (removing twins that have no containers).
        let filters = HashMap::from([("name", vec![name.to_string()])]);
        let list = self
            .docker
            .list_networks(Some(ListNetworksOptionsBuilder::default().filters(&filters).build()))
            .await
            .map_err(classify(&format!("list networks named {name}")))?;
        let same: Vec<String> =
            list.into_iter().filter(|n| n.name.as_deref() == Some(name)).filter_map(|n| n.id).collect();
        if !same.is_empty() {
            let mut left = same.len();
            for id in &same {
                if left > 1 && self.docker.remove_network(id).await.is_ok() {
                    left -= 1;
                }
            }
            return Ok(());
        }
        self.docker
            .create_network(NetworkCreateRequest {
                name: name.to_string(),
                driver: Some(def.driver.clone().unwrap_or_else(|| "bridge".into())),
                internal: def.internal.then_some(true),
                options: (!def.driver_opts.is_empty()).then(|| def.driver_opts.clone().into_iter().collect()),
                ipam: (!def.subnets.is_empty()).then(|| Ipam {
                    config: Some(
                        def.subnets
                            .iter()
                            .map(|(subnet, gateway)| IpamConfig {
                                subnet: Some(subnet.clone()),
                                gateway: gateway.clone(),
                                ..Default::default()
                            })
                            .collect(),
                    ),
                    ..Default::default()
                }),
                labels: Some(labels.clone().into_iter().chain(def.labels.clone()).collect()),
                ..Default::default()
            })
            .await
            .map(|_| ())
            .map_err(classify(&format!("create network {name}")))
    }

    async fn ensure_volume(&self, def: &VolumeDef, labels: &BTreeMap<String, String>) -> Result<(), InstallError> {
        let name = def.name.as_str();
        match self.docker.inspect_volume(name).await {
            Ok(_) => return Ok(()),
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(classify(&format!("inspect volume {name}"))(e)),
        }
        self.docker
            .create_volume(VolumeCreateRequest {
                name: Some(name.to_string()),
                driver: def.driver.clone(),
                driver_opts: (!def.driver_opts.is_empty()).then(|| def.driver_opts.clone().into_iter().collect()),
                labels: Some(labels.clone().into_iter().chain(def.labels.clone()).collect()),
                ..Default::default()
            })
            .await
            .map(|_| ())
            .map_err(classify(&format!("create volume {name}")))
    }

    async fn container(&self, name: &str) -> Result<Option<ContainerState>, InstallError> {
        let c = match self.docker.inspect_container(name, None::<InspectContainerOptions>).await {
            Ok(c) => c,
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) => return Err(classify(&format!("inspect container {name}"))(e)),
        };
        let state = c.state.unwrap_or_default();
        let health = state.health.clone().unwrap_or_default();
        let health_output =
            health.log.as_ref().and_then(|l| l.last()).and_then(|r| r.output.clone()).map(|o| o.trim().to_string());
        Ok(Some(ContainerState {
            id: c.id.unwrap_or_default(),
            name: c.name.unwrap_or_default().trim_start_matches('/').to_string(),
            labels: c.config.and_then(|c| c.labels).unwrap_or_default().into_iter().collect(),
            running: state.running.unwrap_or(false),
            status: state.status.map(|s| s.to_string()).unwrap_or_default(),
            exit_code: state.exit_code,
            health: match health.status {
                Some(HealthStatusEnum::HEALTHY) => Health::Healthy,
                Some(HealthStatusEnum::UNHEALTHY) => Health::Unhealthy,
                Some(HealthStatusEnum::STARTING) => Health::Starting,
                _ => Health::None,
            },
            health_output,
            image_id: c.image.unwrap_or_default(),
            started_at: state.started_at,
        }))
    }

    async fn project_containers(&self, project: &str) -> Result<Vec<ContainerState>, InstallError> {
        self.filtered("label", &format!("com.docker.compose.project={project}")).await
    }

    async fn create(&self, spec: &ContainerSpec) -> Result<String, InstallError> {
        let mut port_bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
        let mut exposed = Vec::new();
        for p in &spec.ports {
            let key = format!("{}/{}", p.container_port, p.protocol);
            exposed.push(key.clone());
            port_bindings
                .entry(key)
                .or_insert_with(|| Some(Vec::new()))
                .get_or_insert_with(Vec::new)
                .push(PortBinding { host_ip: Some(p.host_ip.clone()), host_port: Some(p.host_port.to_string()) });
        }
        let rt = &spec.runtime;
        exposed.extend(rt.expose.iter().filter(|e| !exposed.contains(e)).cloned().collect::<Vec<_>>());
        let healthcheck = spec.healthcheck.as_ref().map(|h| HealthConfig {
            test: if h.test.is_empty() { None } else { Some(h.test.clone()) },
            interval: nanos(h.interval_ms),
            timeout: nanos(h.timeout_ms),
            retries: h.retries.map(i64::from),
            start_period: nanos(h.start_period_ms),
            start_interval: nanos(h.start_interval_ms),
        });
        let mut endpoints = HashMap::new();
        for (net, aliases) in &spec.networks {
            let ipam_config = rt
                .network_ipv4
                .get(net)
                .map(|ip| EndpointIpamConfig { ipv4_address: Some(ip.clone()), ..Default::default() });
            endpoints.insert(
                net.clone(),
                EndpointSettings { aliases: Some(aliases.clone()), ipam_config, ..Default::default() },
            );
        }
        let some_vec = |v: &Vec<String>| (!v.is_empty()).then(|| v.clone());
        // Docker 20.10 attaches only one network at create time; the rest are connected after.
        let first: Option<(String, EndpointSettings)> =
            spec.networks.first().and_then(|(n, _)| endpoints.remove(n).map(|e| (n.clone(), e)));
        let body = ContainerCreateBody {
            image: Some(spec.image.clone()),
            cmd: spec.command.clone(),
            entrypoint: spec.entrypoint.clone(),
            env: Some(spec.env.clone()),
            labels: Some(spec.labels.clone().into_iter().collect()),
            exposed_ports: if exposed.is_empty() { None } else { Some(exposed) },
            healthcheck,
            user: spec.user.clone(),
            working_dir: spec.working_dir.clone(),
            hostname: rt.hostname.clone(),
            domainname: rt.domainname.clone(),
            stop_signal: rt.stop_signal.clone(),
            stop_timeout: rt.stop_grace_period_ms.map(|ms| i64::try_from(ms.div_ceil(1000)).unwrap_or(i64::MAX)),
            tty: rt.tty.then_some(true),
            open_stdin: rt.stdin_open.then_some(true),
            host_config: Some(HostConfig {
                binds: Some(spec.binds.clone()),
                tmpfs: (!spec.tmpfs.is_empty()).then(|| spec.tmpfs.clone().into_iter().collect()),
                port_bindings: if port_bindings.is_empty() { None } else { Some(port_bindings) },
                restart_policy: restart_policy(spec.restart.as_deref()),
                nano_cpus: spec.limits.as_ref().and_then(|l| l.nano_cpus),
                memory: spec.limits.as_ref().and_then(|l| l.memory_bytes),
                log_config: spec.logging.as_ref().map(|l| HostConfigLogConfig {
                    typ: Some(l.driver.clone()),
                    config: Some(l.options.clone().into_iter().collect()),
                }),
                network_mode: rt.network_mode.clone().or_else(|| first.as_ref().map(|(n, _)| n.clone())),
                init: rt.init,
                readonly_rootfs: rt.read_only.then_some(true),
                privileged: rt.privileged.then_some(true),
                security_opt: some_vec(&rt.security_opt),
                cap_add: some_vec(&rt.cap_add),
                cap_drop: some_vec(&rt.cap_drop),
                group_add: some_vec(&rt.group_add),
                dns: some_vec(&rt.dns),
                dns_search: some_vec(&rt.dns_search),
                dns_options: some_vec(&rt.dns_opt),
                extra_hosts: some_vec(&rt.extra_hosts),
                links: some_vec(&rt.links),
                volumes_from: some_vec(&rt.volumes_from),
                devices: (!rt.devices.is_empty()).then(|| rt.devices.iter().map(|d| device(d)).collect()),
                ulimits: (!rt.ulimits.is_empty()).then(|| {
                    rt.ulimits
                        .iter()
                        .map(|(name, u)| ResourcesUlimits {
                            name: Some(name.clone()),
                            soft: Some(u.soft),
                            hard: Some(u.hard),
                        })
                        .collect()
                }),
                shm_size: rt.shm_size,
                pids_limit: rt.pids_limit,
                sysctls: (!rt.sysctls.is_empty()).then(|| rt.sysctls.clone().into_iter().collect()),
                ipc_mode: rt.ipc.clone(),
                pid_mode: rt.pid.clone(),
                uts_mode: rt.uts.clone(),
                userns_mode: rt.userns_mode.clone(),
                cgroup_parent: rt.cgroup_parent.clone(),
                runtime: rt.runtime.clone(),
                memory_reservation: rt.mem_reservation,
                memory_swap: rt.memswap_limit,
                memory_swappiness: rt.mem_swappiness,
                oom_kill_disable: rt.oom_kill_disable,
                oom_score_adj: rt.oom_score_adj,
                cpu_shares: rt.cpu_shares,
                cpuset_cpus: rt.cpuset.clone(),
                ..Default::default()
            }),
            networking_config: first.map(|(n, e)| NetworkingConfig { endpoints_config: Some(HashMap::from([(n, e)])) }),
            ..Default::default()
        };
        let action = format!("create container {}", spec.name);
        let created = self
            .docker
            .create_container(Some(CreateContainerOptionsBuilder::default().name(&spec.name).build()), body)
            .await
            .map_err(classify(&action))?;
        for (net, settings) in endpoints {
            self.docker
                .connect_network(
                    &net,
                    bollard::models::NetworkConnectRequest {
                        container: created.id.clone(),
                        endpoint_config: Some(settings),
                    },
                )
                .await
                .map_err(classify(&format!("connect {} to network {net}", spec.name)))?;
        }
        Ok(created.id)
    }

    async fn start(&self, id: &str) -> Result<(), InstallError> {
        self.docker
            .start_container(id, None::<bollard::query_parameters::StartContainerOptions>)
            .await
            .map_err(classify(&format!("start container {id}")))
    }

    async fn stop(&self, id: &str, timeout_secs: i64) -> Result<(), InstallError> {
        let t = i32::try_from(timeout_secs).unwrap_or(30);
        match self.docker.stop_container(id, Some(StopContainerOptionsBuilder::default().t(t).build())).await {
            Ok(()) => Ok(()),
            Err(BollardError::DockerResponseServerError { status_code: 304 | 404, .. }) => Ok(()),
            Err(e) => Err(classify(&format!("stop container {id}"))(e)),
        }
    }

    async fn remove(&self, id: &str) -> Result<(), InstallError> {
        match self
            .docker
            .remove_container(id, Some(RemoveContainerOptionsBuilder::default().force(true).v(false).build()))
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(classify(&format!("remove container {id}"))(e)),
        }
    }

    async fn rename(&self, id: &str, new_name: &str) -> Result<(), InstallError> {
        self.docker
            .rename_container(id, RenameContainerOptions { name: new_name.to_string() })
            .await
            .map_err(classify(&format!("rename container {id} to {new_name}")))
    }

    async fn wait_exit(&self, id: &str) -> Result<i64, InstallError> {
        let result = self
            .docker
            .wait_container(id, Some(WaitContainerOptionsBuilder::default().condition("not-running").build()))
            .try_collect::<Vec<_>>()
            .await;
        match result {
            Ok(v) => Ok(v.last().map_or(0, |r| r.status_code)),
            // A non-zero exit arrives as an error.
            Err(BollardError::DockerContainerWaitError { code, .. }) => Ok(code),
            Err(e) => Err(classify(&format!("wait for container {id}"))(e)),
        }
    }

    async fn logs(&self, id: &str, lines: usize) -> Result<String, InstallError> {
        let mut stream = self
            .docker
            .logs(id, Some(LogsOptionsBuilder::default().stdout(true).stderr(true).tail(&lines.to_string()).build()));
        let mut out = String::new();
        while let Some(item) = stream.next().await {
            match item {
                Ok(chunk) => out.push_str(&String::from_utf8_lossy(&chunk.into_bytes())),
                Err(e) if is_not_found(&e) => break,
                Err(e) => return Err(classify(&format!("read the logs of {id}"))(e)),
            }
        }
        Ok(out.trim_end().to_string())
    }

    async fn container_events(&self, id: &str) -> Result<mpsc::Receiver<()>, InstallError> {
        let (tx, rx) = mpsc::channel(4);
        let docker = self.docker.clone();
        let filters = HashMap::from([("container", vec![id.to_string()]), ("type", vec!["container".to_string()])]);
        let opts = bollard::query_parameters::EventsOptionsBuilder::default().filters(&filters).build();
        tokio::spawn(async move {
            let mut stream = Box::pin(docker.events(Some(opts)));
            loop {
                tokio::select! {
                    // The gate is decided: stop listening (and free the connection).
                    () = tx.closed() => break,
                    item = stream.next() => match item {
                        Some(Ok(_)) => {
                            // A full channel already holds a signal: the gate looks anyway.
                            let _ = tx.try_send(());
                        }
                        _ => break,
                    },
                }
            }
        });
        Ok(rx)
    }

    async fn volume_mountpoint(&self, name: &str) -> Result<Option<std::path::PathBuf>, InstallError> {
        match self.docker.inspect_volume(name).await {
            Ok(v) => Ok(Some(v.mountpoint.into())),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(classify(&format!("inspect volume {name}"))(e)),
        }
    }

    async fn remove_volume(&self, name: &str) -> Result<(), InstallError> {
        match self.docker.remove_volume(name, None::<bollard::query_parameters::RemoveVolumeOptions>).await {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(classify(&format!("remove volume {name}"))(e)),
        }
    }

    async fn volume_users(&self, name: &str) -> Result<Vec<ContainerState>, InstallError> {
        self.filtered("volume", name).await
    }

    async fn labelled(&self, label: &str) -> Result<Vec<ContainerState>, InstallError> {
        self.filtered("label", label).await
    }

    async fn export(&self, id: &str, path: &str, sink: mpsc::Sender<Bytes>) -> Result<(), InstallError> {
        let opts = bollard::query_parameters::DownloadFromContainerOptionsBuilder::default().path(path).build();
        let mut stream = self.docker.download_from_container(id, Some(opts));
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(classify(&format!("read {path} of container {id}")))?;
            if sink.send(chunk).await.is_err() {
                break;
            }
        }
        Ok(())
    }

    async fn import(
        &self,
        id: &str,
        path: &str,
        body: mpsc::Receiver<std::io::Result<Bytes>>,
    ) -> Result<(), InstallError> {
        let stream = futures_util::stream::unfold(body, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
        // Never `copyUIDGID`: it would chown every file to the helper's user.
        let opts = bollard::query_parameters::UploadToContainerOptionsBuilder::default().path(path).build();
        self.docker
            .upload_to_container(id, Some(opts), bollard::body_try_stream(stream))
            .await
            .map_err(classify(&format!("write {path} of container {id}")))
    }
}

impl DockerEngine {
    async fn filtered(&self, key: &str, value: &str) -> Result<Vec<ContainerState>, InstallError> {
        let filters = HashMap::from([(key, vec![value.to_string()])]);
        let list = self
            .docker
            .list_containers(Some(ListContainersOptionsBuilder::default().all(true).filters(&filters).build()))
            .await
            .map_err(classify("list containers"))?;
        let mut out = Vec::new();
        for c in list {
            if let Some(id) = c.id
                && let Some(state) = self.container(&id).await?
            {
                out.push(state);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }
}
