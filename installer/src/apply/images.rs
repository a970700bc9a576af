//! Step 5 of an apply: the one pass over the bundle that verifies every entry and streams what
//! the engine lacks; once more with every layer if the engine wants a layer that was left out.

#[allow(clippy::wildcard_imports, reason = "the steps share the apply module's imports and context")]
use super::*;
/// The pass over the bundle, with Docker on the other end of the stream when images are needed.
/// If Docker refuses an archive without the layers it has, the pass runs again with every layer.
pub(super) async fn load_images<E: Engine>(
    ctx: &Ctx<'_, E>,
    signed: SignedBundle,
    the_plan: &Plan,
    opts: &ApplyOptions,
    keys: &manifests::TrustedKeys,
) -> Result<(VerifiedBundle, u64, bool), InstallError> {
    let load = &the_plan.load;
    ctx.reporter.event(&Event::LoadStart {
        bytes_to_send: load.bytes_to_send,
        bytes_skipped: load.bytes_skipped,
        images_to_load: load.images.iter().filter(|i| i.action == ImageAction::Load).count(),
        images_present: load.images.iter().filter(|i| i.action == ImageAction::Present).count(),
    });
    match run_pass(ctx, signed, load).await {
        // An engine that wants a layer file we left out (graph driver: "no such file"; containerd
        // store: "not found" or an unpack error; Podman: "missing"): once more, with every layer.
        Err(InstallError::Load { message })
            if load.images.iter().any(|i| i.layers_skipped > 0 && i.action == ImageAction::Load)
                && ["no such file", "not found", "Error unpacking", "missing"].iter().any(|m| message.contains(m)) =>
        {
            ctx.reporter.event(&Event::Info {
                message: format!("the engine needs every layer ({message}); sending all layers of the new images"),
            });
            let kind = ctx.engine.info().await?.kind;
            let holdings = kind.strategy().holdings(&ctx.engine.images().await?, &[]);
            let full = crate::load::plan_load(ctx.manifest, kind.strategy(), &holdings, false);
            let signed = verify::open(&opts.bundle, &opts.media, keys)?;
            let (v, _) = run_pass(ctx, signed, &full).await?;
            tag_present(ctx, &the_plan.load).await?;
            Ok((v, full.bytes_to_send, true))
        }
        Err(e) => Err(e),
        Ok((v, _)) => {
            tag_present(ctx, load).await?;
            Ok((v, load.bytes_to_send, false))
        }
    }
}

pub(super) async fn tag_present<E: Engine>(ctx: &Ctx<'_, E>, load: &crate::load::LoadPlan) -> Result<(), InstallError> {
    for img in &load.images {
        if !img.reference.contains('@') {
            ctx.engine.tag(&img.image_id, &img.reference).await?;
        }
    }
    Ok(())
}

pub(super) async fn run_pass<E: Engine>(
    ctx: &Ctx<'_, E>,
    signed: SignedBundle,
    load: &crate::load::LoadPlan,
) -> Result<(VerifiedBundle, u64), InstallError> {
    let SignedBundle { path, reader, signer, manifest_sha256 } = signed;
    let manifest = reader.manifest().clone();
    let needs_docker = !load.trailer.is_empty();
    let (tx, rx) = mpsc::channel(8);
    let files = FilesTarget { release_dir: ctx.state.release_dir(manifest.release) };
    if let Some(parent) = files.release_dir.parent() {
        std::fs::create_dir_all(parent).map_err(InstallError::state(parent))?;
    }
    let load_owned = load.clone();
    let reporter_bytes = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = reporter_bytes.clone();
    let blocking = tokio::task::spawn_blocking(move || {
        let progress = move |n: u64| {
            counter.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        };
        crate::load::pass(reader, &load_owned, needs_docker.then_some(tx), Some(&files), &progress)
    });
    let docker_side = async { if needs_docker { ctx.engine.load(rx).await.map(Some) } else { Ok(None) } };
    let ticker = async {
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let n = reporter_bytes.swap(0, std::sync::atomic::Ordering::Relaxed);
            if n > 0 {
                ctx.reporter.event(&Event::LoadProgress { bytes: n });
            }
        }
    };
    let (pass_result, docker_result) = tokio::select! {
        r = async { tokio::join!(blocking, docker_side) } => r,
        () = ticker => unreachable!("the ticker never ends"),
    };
    let n = reporter_bytes.swap(0, std::sync::atomic::Ordering::Relaxed);
    if n > 0 {
        ctx.reporter.event(&Event::LoadProgress { bytes: n });
    }
    let pass_result =
        pass_result.map_err(|e| InstallError::Load { message: format!("the bundle reader stopped: {e}") })?;
    // A bundle problem is the real cause even if Docker also complained about the aborted upload.
    let report = match pass_result {
        Err(manifests::BundleError::Sink { .. }) if docker_result.is_err() => {
            return Err(docker_result.err().unwrap_or(InstallError::Load { message: "upload aborted".into() }));
        }
        Err(source) => return Err(InstallError::Bundle { path, source }),
        Ok(r) => r,
    };
    if let Some(lines) = docker_result? {
        for l in lines {
            ctx.reporter.event(&Event::Info { message: l });
        }
    }
    Ok((VerifiedBundle::after_pass(manifest, manifest_sha256, signer), report.bytes_streamed))
}
