//! Checks that run before anything on the host changes.

use std::net::TcpListener;

use crate::error::InstallError;
use crate::plan::{Action, HostState, Plan, labels};

/// Every host port the stack publishes must be free, unless a running container of this project
/// holds it (it is stopped before its replacement starts).
///
/// # Errors
/// [`InstallError::PortInUse`] naming the service and port.
pub fn check_ports(plan: &Plan, host: &HostState) -> Result<(), InstallError> {
    for sp in plan.waves.iter().flatten() {
        if matches!(sp.action, Action::Keep | Action::Skip { .. }) {
            continue;
        }
        for p in sp.spec.ports.iter().filter(|p| p.protocol == "tcp") {
            let ip = if p.host_ip.is_empty() { "0.0.0.0" } else { p.host_ip.as_str() };
            if let Err(e) = TcpListener::bind((ip, p.host_port))
                && e.kind() == std::io::ErrorKind::AddrInUse
                && !held_by_project(host, &plan.project, p.host_port)
            {
                return Err(InstallError::PortInUse {
                    service: sp.name.clone(),
                    ip: ip.to_string(),
                    port: p.host_port,
                });
            }
        }
    }
    Ok(())
}

fn held_by_project(host: &HostState, project: &str, port: u16) -> bool {
    host.containers.values().any(|c| {
        c.running
            && c.labels.get(labels::PROJECT).map(String::as_str) == Some(project)
            && c.labels.get(labels::PORTS).is_some_and(|ports| ports.split(',').any(|x| x == port.to_string()))
    })
}
