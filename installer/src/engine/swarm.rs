//! The Swarm API of a manager node, through bollard: the seam of `apply --target swarm`
//! ([`Swarm`]; [`crate::target::swarm`] drives it). Specs go in and objects come out as the
//! Engine API's JSON (`ServiceSpec`, `Service`, `Task`), so the mapping from the plan reads like
//! the API reference and `docker service inspect`.

use std::collections::BTreeMap;

use bollard::Docker;
use bollard::auth::DockerCredentials;
use bollard::query_parameters::{
    InspectServiceOptions, ListConfigsOptionsBuilder, ListServicesOptionsBuilder, ListTasksOptionsBuilder,
    UpdateServiceOptionsBuilder,
};
use serde_json::Value;

use crate::error::InstallError;

/// Registry credentials passed to the nodes with a service (`X-Registry-Auth`).
#[derive(Debug, Clone, Default)]
pub struct PullAuth {
    /// `user:password` base64, as the Docker config file holds it.
    pub auth: Option<String>,
    /// The registry.
    pub server: String,
}

/// What a Swarm target needs from a manager.
#[allow(async_fn_in_trait, reason = "used with concrete types; no dyn dispatch needed")]
pub trait Swarm {
    /// Whether this engine is a Swarm manager that can take changes.
    async fn manager(&self) -> Result<bool, InstallError>;
    /// The project's services (`com.docker.stack.namespace`), with task counts.
    async fn services(&self, project: &str) -> Result<Vec<Value>, InstallError>;
    /// One service, if it exists.
    async fn service(&self, name: &str) -> Result<Option<Value>, InstallError>;
    /// Create a service from a `ServiceSpec`.
    async fn create_service(&self, spec: &Value, auth: &PullAuth) -> Result<(), InstallError>;
    /// Replace a service's spec (`version` from its last inspect).
    async fn update_service(&self, name: &str, version: u64, spec: &Value, auth: &PullAuth)
    -> Result<(), InstallError>;
    /// Remove a service.
    async fn remove_service(&self, name: &str) -> Result<(), InstallError>;
    /// A service's tasks.
    async fn tasks(&self, service: &str) -> Result<Vec<Value>, InstallError>;
    /// Create an attachable overlay network unless it exists.
    async fn ensure_network(&self, name: &str, labels: &BTreeMap<String, String>) -> Result<(), InstallError>;
    /// The project's configs (name, id, labels; data only with `with_data`).
    async fn configs(&self, project: &str) -> Result<Vec<Value>, InstallError>;
    /// Create a config (immutable) unless one of that name exists; its id.
    async fn ensure_config(
        &self,
        name: &str,
        data: &[u8],
        labels: &BTreeMap<String, String>,
    ) -> Result<String, InstallError>;
    /// Create a secret unless one of that name exists; its id.
    async fn ensure_secret(
        &self,
        name: &str,
        data: &[u8],
        labels: &BTreeMap<String, String>,
    ) -> Result<String, InstallError>;
}

/// A manager reached through bollard.
pub struct SwarmEngine {
    docker: Docker,
}

impl SwarmEngine {
    pub(crate) fn new(docker: Docker) -> Self {
        Self { docker }
    }
}

fn classify(action: &str) -> impl Fn(bollard::errors::Error) -> InstallError + '_ {
    move |e| match e {
        bollard::errors::Error::DockerResponseServerError { message, .. } => {
            InstallError::Docker { action: action.to_string(), message }
        }
        other => InstallError::DockerUnreachable {
            during: format!(" while trying to {action}"),
            message: manifests::display::error_chain(&other),
        },
    }
}

fn to_json<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or_default()
}

fn typed<T: serde::de::DeserializeOwned>(v: &Value, what: &str) -> Result<T, InstallError> {
    serde_json::from_value(v.clone())
        .map_err(|e| InstallError::Docker { action: format!("build the {what}"), message: e.to_string() })
}

fn credentials(auth: &PullAuth) -> Option<DockerCredentials> {
    auth.auth.as_ref().map(|a| DockerCredentials {
        auth: Some(a.clone()),
        serveraddress: Some(auth.server.clone()),
        ..Default::default()
    })
}

fn namespace_filter(project: &str) -> std::collections::HashMap<String, Vec<String>> {
    std::collections::HashMap::from([("label".to_string(), vec![format!("com.docker.stack.namespace={project}")])])
}

impl Swarm for SwarmEngine {
    async fn manager(&self) -> Result<bool, InstallError> {
        let info = self.docker.info().await.map_err(classify("read the engine's info"))?;
        Ok(info.swarm.and_then(|s| s.control_available).unwrap_or(false))
    }

    async fn services(&self, project: &str) -> Result<Vec<Value>, InstallError> {
        let opts = ListServicesOptionsBuilder::new().filters(&namespace_filter(project)).status(true).build();
        let list = self.docker.list_services(Some(opts)).await.map_err(classify("list the services"))?;
        Ok(list.iter().map(to_json).collect())
    }

    async fn service(&self, name: &str) -> Result<Option<Value>, InstallError> {
        match self.docker.inspect_service(name, None::<InspectServiceOptions>).await {
            Ok(s) => Ok(Some(to_json(&s))),
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => Ok(None),
            Err(e) => Err(classify("inspect a service")(e)),
        }
    }

    async fn create_service(&self, spec: &Value, auth: &PullAuth) -> Result<(), InstallError> {
        let name = spec["Name"].as_str().unwrap_or_default();
        let action = format!("create service {name}");
        self.docker.create_service(typed(spec, "service spec")?, credentials(auth)).await.map_err(classify(&action))?;
        Ok(())
    }

    async fn update_service(
        &self,
        name: &str,
        version: u64,
        spec: &Value,
        auth: &PullAuth,
    ) -> Result<(), InstallError> {
        let action = format!("update service {name}");
        let version = i32::try_from(version).unwrap_or(i32::MAX);
        let opts = UpdateServiceOptionsBuilder::new().version(version).build();
        self.docker
            .update_service(name, typed(spec, "service spec")?, opts, credentials(auth))
            .await
            .map_err(classify(&action))?;
        Ok(())
    }

    async fn remove_service(&self, name: &str) -> Result<(), InstallError> {
        match self.docker.delete_service(name).await {
            Ok(()) | Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => Ok(()),
            Err(e) => Err(classify(&format!("remove service {name}"))(e)),
        }
    }

    async fn tasks(&self, service: &str) -> Result<Vec<Value>, InstallError> {
        let filters = std::collections::HashMap::from([("service".to_string(), vec![service.to_string()])]);
        let opts = ListTasksOptionsBuilder::new().filters(&filters).build();
        let list = self.docker.list_tasks(Some(opts)).await.map_err(classify("list tasks"))?;
        Ok(list.iter().map(to_json).collect())
    }

    async fn ensure_network(&self, name: &str, labels: &BTreeMap<String, String>) -> Result<(), InstallError> {
        if self.docker.inspect_network(name, None::<bollard::query_parameters::InspectNetworkOptions>).await.is_ok() {
            return Ok(());
        }
        let req = bollard::models::NetworkCreateRequest {
            name: name.to_string(),
            driver: Some("overlay".into()),
            attachable: Some(true),
            labels: Some(labels.clone().into_iter().collect()),
            ..Default::default()
        };
        self.docker.create_network(req).await.map_err(classify(&format!("create network {name}")))?;
        Ok(())
    }

    async fn configs(&self, project: &str) -> Result<Vec<Value>, InstallError> {
        let opts = ListConfigsOptionsBuilder::new().filters(&namespace_filter(project)).build();
        let list = self.docker.list_configs(Some(opts)).await.map_err(classify("list configs"))?;
        Ok(list.iter().map(to_json).collect())
    }

    async fn ensure_config(
        &self,
        name: &str,
        data: &[u8],
        labels: &BTreeMap<String, String>,
    ) -> Result<String, InstallError> {
        use base64::Engine as _;
        if let Ok(c) = self.docker.inspect_config(name).await {
            return Ok(c.id.unwrap_or_default());
        }
        let spec = bollard::models::ConfigSpec {
            name: Some(name.to_string()),
            labels: Some(labels.clone().into_iter().collect()),
            data: Some(base64::engine::general_purpose::STANDARD.encode(data)),
            ..Default::default()
        };
        let id = self.docker.create_config(spec).await.map_err(classify(&format!("create config {name}")))?;
        Ok(id.id)
    }

    async fn ensure_secret(
        &self,
        name: &str,
        data: &[u8],
        labels: &BTreeMap<String, String>,
    ) -> Result<String, InstallError> {
        use base64::Engine as _;
        if let Ok(s) = self.docker.inspect_secret(name).await {
            return Ok(s.id.unwrap_or_default());
        }
        let spec = bollard::models::SecretSpec {
            name: Some(name.to_string()),
            labels: Some(labels.clone().into_iter().collect()),
            data: Some(base64::engine::general_purpose::STANDARD.encode(data)),
            ..Default::default()
        };
        let id = self.docker.create_secret(spec).await.map_err(classify(&format!("create secret {name}")))?;
        Ok(id.id)
    }
}
