//! Copies through the Engine API. A helper container is *created, never started*: the engine
//! mounts its volumes for archive calls all the same (shared/notes/backups.md §3), so any image
//! of the bundle will do (distroless too), nothing runs, nothing goes through a log, and no tool
//! on the host is needed. The data is mounted at a path no image has, so Docker's copy-up of
//! image content into an empty volume never happens.

use std::collections::BTreeMap;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::archive::{Inspector, Summary};
use crate::engine::{ContainerSpec, Engine};
use crate::error::InstallError;

/// Where a helper mounts the data. GET of this path yields entries `installer-data/…`, the
/// root entry included (the volume root's owner and mode travel with it); PUT of such a stream
/// at `/` writes them back into the mount.
pub const MOUNT: &str = "/installer-data";

/// Label of helper containers (value: the project), so that leftovers of a killed run are found.
pub const HELPER_LABEL: &str = "io.installer.helper";

/// Create a helper mounting `source` (a volume name or an absolute host path).
///
/// # Errors
/// Docker's refusal.
pub async fn helper<E: Engine>(
    engine: &E,
    project: &str,
    name: &str,
    image: &str,
    source: &str,
) -> Result<String, InstallError> {
    let container = format!("{project}-installer-{name}");
    if let Some(old) = engine.container(&container).await? {
        engine.remove(&old.id).await?;
    }
    let mut spec = ContainerSpec {
        name: container,
        image: image.to_string(),
        // Never started: the entrypoint need not exist.
        entrypoint: Some(vec!["/installer-helper-never-runs".into()]),
        binds: vec![format!("{source}:{MOUNT}")],
        labels: BTreeMap::from([(HELPER_LABEL.to_string(), project.to_string())]),
        ..ContainerSpec::default()
    };
    spec.runtime.network_mode = Some("none".into());
    engine.create(&spec).await
}

/// Remove every helper of a project (a killed run leaves them behind).
///
/// # Errors
/// Docker unreachable.
pub async fn remove_helpers<E: Engine>(engine: &E, project: &str) -> Result<(), InstallError> {
    for c in engine.labelled(&format!("{HELPER_LABEL}={project}")).await? {
        engine.remove(&c.id).await?;
    }
    Ok(())
}

/// Remove every helper this installer left on the engine, whatever the project (best effort).
pub async fn remove_helpers_any<E: Engine>(engine: &E) {
    if let Ok(list) = engine.labelled(HELPER_LABEL).await {
        for c in list {
            let _ = engine.remove(&c.id).await;
        }
    }
}

/// Read the data a helper mounts, passing each chunk to `sink` (a file, an upload) and to
/// `progress`; the stream is checked whole (see [`super::archive`]).
///
/// # Errors
/// Docker's error, the sink's, or a stream that is not a whole archive.
pub async fn export<E: Engine, F, Fut>(
    engine: &E,
    helper: &str,
    what: &str,
    mut sink: F,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Summary, InstallError>
where
    F: FnMut(Bytes) -> Fut,
    Fut: std::future::Future<Output = Result<(), InstallError>>,
{
    let (tx, mut rx) = mpsc::channel::<Bytes>(16);
    let reading = engine.export(helper, MOUNT, tx);
    let consuming = async {
        let mut inspector = Inspector::new();
        while let Some(chunk) = rx.recv().await {
            inspector.feed(&chunk);
            let n = chunk.len() as u64;
            sink(chunk).await?;
            progress(n);
        }
        Ok::<_, InstallError>(inspector)
    };
    let (read, consumed) = futures_util::join!(reading, consuming);
    read?;
    consumed?.finish().map_err(|e| InstallError::Data { what: what.to_string(), message: e })
}

/// Copy the data one helper mounts into the one another mounts, then read the copy back and
/// compare: the same tree or an error.
///
/// # Errors
/// Docker's errors, a stream that is not a whole archive, a copy that differs.
pub async fn clone<E: Engine>(
    engine: &E,
    from: &str,
    to: &str,
    what: &str,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Summary, InstallError> {
    let (up_tx, up_rx) = mpsc::channel::<std::io::Result<Bytes>>(16);
    let uploading = engine.import(to, "/", up_rx);
    let reading = async {
        let abort = up_tx.clone();
        let r = export(
            engine,
            from,
            what,
            move |chunk| {
                // A full channel waits: the upload sets the pace.
                let tx = up_tx.clone();
                async move {
                    tx.send(Ok(chunk)).await.map_err(|_| InstallError::Data {
                        what: String::new(),
                        message: "the engine stopped taking the copy".into(),
                    })
                }
            },
            progress,
        )
        .await;
        if let Err(e) = &r {
            // Abort the upload: what the engine unpacked so far is in a copy the caller removes.
            let _ = abort.send(Err(std::io::Error::other(e.to_string()))).await;
        }
        drop(abort);
        r
    };
    let (uploaded, source) = futures_util::join!(uploading, reading);
    let source = source?;
    uploaded?;
    verify(engine, to, what, &source).await?;
    Ok(source)
}

/// Read a copy back and compare it with what was written.
///
/// # Errors
/// The copy's tree differs, or cannot be read whole.
pub async fn verify<E: Engine>(engine: &E, helper: &str, what: &str, expected: &Summary) -> Result<(), InstallError> {
    let copy = export(engine, helper, what, |_| std::future::ready(Ok(())), &|_| {}).await?;
    if copy.tree != expected.tree || copy.entries != expected.entries {
        return Err(InstallError::Data {
            what: what.to_string(),
            message: format!(
                "the copy read back differs from the source ({} entries against {}): a file changed or was not written",
                copy.entries, expected.entries
            ),
        });
    }
    Ok(())
}
