//! Service graph to start order. Services in one wave have no dependency on each other and may
//! start in parallel; a cycle is an error that names it.

use std::collections::{BTreeMap, BTreeSet};

use crate::ServiceDef;

/// A dependency problem.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OrderError {
    /// A cycle, written `a -> b -> a`.
    #[error("dependency cycle: {0}")]
    Cycle(String),
    /// A dependency on a service that does not exist.
    #[error("service `{service}` depends on `{missing}`, which does not exist")]
    Unknown {
        /// The dependent.
        service: String,
        /// The missing dependency.
        missing: String,
    },
}

/// Start order as waves (each sorted by name).
///
/// # Errors
/// Unknown dependencies and cycles.
pub fn start_order(services: &BTreeMap<String, ServiceDef>) -> Result<Vec<Vec<String>>, OrderError> {
    let graph: BTreeMap<&str, Vec<&str>> =
        services.iter().map(|(n, s)| (n.as_str(), s.depends_on.keys().map(String::as_str).collect())).collect();
    waves(&graph)
}

/// Waves of a graph given as node -> dependencies.
///
/// # Errors
/// Unknown dependencies and cycles.
pub fn waves(graph: &BTreeMap<&str, Vec<&str>>) -> Result<Vec<Vec<String>>, OrderError> {
    for (n, deps) in graph {
        for d in deps {
            if !graph.contains_key(d) {
                return Err(OrderError::Unknown { service: (*n).to_string(), missing: (*d).to_string() });
            }
        }
    }
    let mut done: BTreeSet<&str> = BTreeSet::new();
    let mut out = Vec::new();
    while done.len() < graph.len() {
        let wave: Vec<&str> = graph
            .iter()
            .filter(|(n, deps)| !done.contains(*n) && deps.iter().all(|d| done.contains(d)))
            .map(|(n, _)| *n)
            .collect();
        if wave.is_empty() {
            return Err(OrderError::Cycle(find_cycle(graph, &done)));
        }
        done.extend(wave.iter().copied());
        out.push(wave.into_iter().map(String::from).collect());
    }
    Ok(out)
}

/// Follow unfinished dependencies from any unfinished node until one repeats.
fn find_cycle(graph: &BTreeMap<&str, Vec<&str>>, done: &BTreeSet<&str>) -> String {
    let start = graph.keys().find(|n| !done.contains(*n)).copied().unwrap_or_default();
    let mut path = vec![start];
    let mut current = start;
    loop {
        let next = graph[current].iter().find(|d| !done.contains(*d)).copied().unwrap_or(start);
        if let Some(pos) = path.iter().position(|p| *p == next) {
            let mut cycle: Vec<&str> = path[pos..].to_vec();
            cycle.push(next);
            return cycle.join(" -> ");
        }
        path.push(next);
        current = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waves_and_cycles() {
        let g = BTreeMap::from([
            ("api", vec!["db", "migrate"]),
            ("db", vec![]),
            ("migrate", vec!["db"]),
            ("redis", vec![]),
        ]);
        assert_eq!(waves(&g).unwrap(), vec![vec!["db", "redis"], vec!["migrate"], vec!["api"]]);
        let g = BTreeMap::from([("a", vec!["b"]), ("b", vec!["c"]), ("c", vec!["a"]), ("d", vec![])]);
        assert_eq!(waves(&g).unwrap_err(), OrderError::Cycle("a -> b -> c -> a".into()));
        let g = BTreeMap::from([("a", vec!["x"])]);
        assert!(matches!(waves(&g).unwrap_err(), OrderError::Unknown { .. }));
    }
}
