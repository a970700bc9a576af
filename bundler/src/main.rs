//! The `bundler` binary: parse, run, render the error with its hint, exit with its code.

mod cli;
mod progress;

use std::path::PathBuf;
use std::process::ExitCode;

use bundler::BundlerError;
use bundler::build::BuildOptions;
use bundler::keys::KeygenOptions;
use clap::{CommandFactory, Parser};
use cli::{Cli, Command};
use manifests::Diagnose;
use progress::{Terminal, human_bytes};

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    let json = cli.json;
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            report_error(&err, json);
            ExitCode::from(err.exit().code())
        }
    }
}

fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("BUNDLER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

fn report_error(err: &BundlerError, json: bool) {
    let hint = err.hint();
    if json {
        let v = serde_json::json!({
            "event": "error",
            "exit_code": err.exit().code(),
            "kind": err.exit().name(),
            "message": err.to_string(),
            "hint": hint,
        });
        println!("{v}");
    }
    eprintln!("error: {err}");
    if let Some(h) = hint {
        eprintln!("hint: {h}");
    }
}

fn run(cli: Cli) -> Result<(), BundlerError> {
    match cli.command {
        Command::Keygen(a) => {
            let public = bundler::keys::keygen(&KeygenOptions {
                secret_key: a.secret_key.clone(),
                public_key: a.public_key.clone(),
                force: a.force,
            })?;
            if cli.json {
                println!(
                    "{}",
                    serde_json::json!({"event": "keygen", "key_id": public.key_id.to_string(),
                        "fingerprint": public.fingerprint(), "secret_key": a.secret_key, "public_key": a.public_key})
                );
            } else {
                eprintln!("secret key: {} (0600; keep it in your CI secret store)", a.secret_key.display());
                eprintln!("public key: {} (give it to every client site)", a.public_key.display());
                eprintln!("key id:     {}", public.fingerprint());
            }
            Ok(())
        }
        Command::Check(a) => {
            let prepared = manifests::compose::load(&a.compose.compose, &load_options(&a.compose))?;
            bundler::build::check_sources(&a.compose.compose, &prepared)?;
            if cli.json {
                println!(
                    "{}",
                    serde_json::json!({"event": "checked", "file": a.compose.compose, "project": prepared.project,
                        "services": prepared.probe.services.keys().collect::<Vec<_>>(), "images": prepared.images,
                        "pinned": prepared.pinned, "variables": prepared.variables, "files": prepared.files})
                );
            } else {
                eprintln!(
                    "ok: {} ({} services, {} images, {} bundled paths)",
                    a.compose.compose.display(),
                    prepared.probe.services.len(),
                    prepared.images.len(),
                    prepared.files.len()
                );
                for (k, v) in &prepared.pinned {
                    eprintln!("  pinned   {k}={v}");
                }
                for (k, v) in &prepared.variables {
                    let what = match (&v.default, v.optional) {
                        (Some(d), _) => format!("default `{d}`"),
                        (None, true) => "optional".into(),
                        (None, false) => "required".into(),
                    };
                    let secret = if v.secret { ", secret" } else { "" };
                    eprintln!("  site     {k} ({what}{secret})");
                }
            }
            Ok(())
        }
        Command::Build(a) => {
            let created = match std::env::var("SOURCE_DATE_EPOCH") {
                Ok(v) => v
                    .trim()
                    .parse()
                    .map_err(|_| BundlerError::Usage(format!("SOURCE_DATE_EPOCH=`{v}` is not a number of seconds")))?,
                Err(_) => manifests::time::now(),
            };
            let opts = BuildOptions {
                load: load_options(&a.compose),
                compose: a.compose.compose,
                secret_key: a.key,
                version: a.version,
                release: a.release,
                output: a.output,
                cache_dir: a.cache_dir.unwrap_or_else(default_cache_dir),
                created,
                valid_days: a.valid_days,
                jobs: a.jobs,
                rotate_to: a.rotate_to,
                part_size: a.part_size,
            };
            if a.part_size.is_some_and(|s| s > manifests::media::FAT32_MAX_FILE) && !cli.json {
                eprintln!(
                    "note: parts larger than 4 GiB - 1 byte do not fit a FAT32 stick or one ISO 9660 file; 4095M does"
                );
            }
            let source = bundler::registry::OciRegistry::new(a.insecure_registry)?;
            let reporter = Terminal::new(cli.json);
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .map_err(|e| BundlerError::Usage(format!("cannot start the async runtime: {e}")))?;
            let summary = runtime.block_on(bundler::build::build(&opts, &source, &reporter))?;
            if cli.json {
                let mut v = serde_json::to_value(&summary).unwrap_or_default();
                v["event"] = "built".into();
                println!("{v}");
            } else {
                eprintln!(
                    "built {} ({}, {} images, {} unique blobs; downloaded {}, from cache {})",
                    summary.path.display(),
                    human_bytes(summary.size),
                    summary.images,
                    summary.blobs,
                    human_bytes(summary.downloaded_bytes),
                    human_bytes(summary.cached_bytes)
                );
                match &summary.sha256 {
                    Some(d) => eprintln!("sha256 {}  signed by key {}", d.hex(), summary.key_id),
                    None => {
                        eprintln!("{} parts, signed by key {}:", summary.parts.len(), summary.key_id);
                        for p in &summary.parts {
                            eprintln!("  {}  {:>10}  sha256 {}", p.path.display(), human_bytes(p.size), p.sha256.hex());
                        }
                    }
                }
            }
            Ok(())
        }
        Command::Inspect(a) => {
            let keys = if a.key.is_empty() { None } else { Some(bundler::keys::load_public_keys(&a.key)?) };
            let info = bundler::inspect::inspect(&a.bundle, &a.media, keys.as_ref())?;
            if cli.json {
                println!("{}", serde_json::to_string(&info).unwrap_or_default());
            } else {
                print_inspection(&info);
            }
            Ok(())
        }
        Command::Verify(a) => {
            let keys = bundler::keys::load_public_keys(&a.key)?;
            let (manifest, signer) = bundler::inspect::verify(&a.bundle, &a.media, &keys)?;
            if cli.json {
                println!(
                    "{}",
                    serde_json::json!({"event": "verified", "bundle": a.bundle, "key_id": signer.key_id.to_string(),
                        "product": manifest.product, "version": manifest.version, "release": manifest.release,
                        "entries": manifest.entries.len() + 2})
                );
            } else {
                eprintln!(
                    "ok: {} is {} {} (release {}), signed by key {}, all {} entries match",
                    a.bundle.display(),
                    manifest.product,
                    manifest.version,
                    manifest.release,
                    signer.key_id,
                    manifest.entries.len() + 2
                );
            }
            Ok(())
        }
        Command::Iso(a) => {
            let volumes = bundler::iso::write_isos(&bundler::iso::IsoOptions {
                bundle: a.bundle.clone(),
                media: a.media.clone(),
                output_dir: a.output_dir.clone(),
                volume_size: a.volume_size,
                installer: a.installer.clone(),
                public_key: a.public_key.clone(),
            })?;
            if cli.json {
                println!("{}", serde_json::json!({"event": "iso", "volumes": volumes}));
            } else {
                for v in &volumes {
                    eprintln!(
                        "wrote {} ({}, label {}): {}",
                        v.path.display(),
                        human_bytes(v.size),
                        v.label,
                        v.files.join(", ")
                    );
                }
                if a.public_key.is_none() {
                    eprintln!(
                        "note: the bundle's signature was not checked (pass --public-key to check it and put the key on volume 1)"
                    );
                }
            }
            Ok(())
        }
        Command::Completions { shell } => {
            let mut cmd = Cli::command();
            clap_complete::generate(shell, &mut cmd, "bundler", &mut std::io::stdout());
            Ok(())
        }
        Command::Man { out } => {
            std::fs::create_dir_all(&out)
                .and_then(|()| clap_mangen::generate_to(Cli::command(), &out))
                .map_err(|source| BundlerError::Output { path: out.clone(), source })?;
            eprintln!("man pages written to {}", out.display());
            Ok(())
        }
    }
}

fn load_options(a: &cli::ComposeArgs) -> manifests::compose::LoadOptions {
    manifests::compose::LoadOptions {
        profiles: a.profiles.clone(),
        env_files: a.env_files.clone(),
        environment: std::env::vars().collect(),
    }
}

fn default_cache_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(x).join("bundler");
    }
    std::env::var_os("HOME")
        .map_or_else(|| PathBuf::from(".bundler-cache"), |h| PathBuf::from(h).join(".cache/bundler"))
}

fn print_inspection(i: &bundler::inspect::Inspection) {
    println!("product    {}", i.product);
    println!("version    {} (release {}, channel {})", i.version, i.release, i.channel);
    println!("created    {}", i.created);
    println!("expires    {}", i.expires.as_deref().unwrap_or("never"));
    println!(
        "key id     {}{}",
        i.key_id,
        if i.signature_checked { " (signature checked)" } else { " (signature not checked; pass --key to check)" }
    );
    if let Some(k) = &i.rotates_to {
        println!("rotates to key {k} (hosts that apply this bundle will trust it)");
    }
    println!("images");
    for img in &i.images {
        println!("  {}  {} layers  {}  {}", img.reference, img.layers, human_bytes(img.size), img.digest);
    }
    println!("start order");
    for (n, wave) in i.start_order.iter().enumerate() {
        let names: Vec<String> = wave
            .iter()
            .map(|s| if i.migrations.contains(s) { format!("{s} (migration)") } else { s.clone() })
            .collect();
        println!("  {}. {}", n + 1, names.join(", "));
    }
    println!("migrations {}", if i.migrations.is_empty() { "none".to_string() } else { i.migrations.join(", ") });
    if let Some(b) = &i.backup {
        println!("backup     {b}");
    }
    if !i.variables.is_empty() {
        println!("site variables");
        for v in &i.variables {
            println!("  {v}");
        }
    }
    println!("total      {} in {} entries", human_bytes(i.total_size), i.entries);
    if !i.parts.is_empty() {
        println!("parts      {} files (part 000 is the signed header)", i.parts.len());
        for p in &i.parts {
            println!("  {}  {:>10}  {}", p.name, human_bytes(p.size), p.path.display());
        }
    }
}
