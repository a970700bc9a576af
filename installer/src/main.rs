//! The `installer` binary: parse, run, render the error with its hint, exit with its code.

mod cli;
mod progress;

use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use cli::{ApplyArgs, Cli, Command};
use installer::InstallError;
use installer::apply::ApplyOptions;
use installer::engine::docker::DockerEngine;
use installer::state::StateDir;
use manifests::Diagnose;
use progress::{Terminal, human_bytes};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("INSTALLER_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(match cli.verbose {
            0 => "warn",
            1 => "info",
            _ => "debug",
        })
    });
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
    let json = cli.json;
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(err) => {
            let hint = err.hint();
            if json {
                let v = serde_json::json!({"event": "error", "exit_code": err.exit().code(), "kind": err.exit().name(),
                    "message": err.to_string(), "hint": hint});
                progress::emit(&v.to_string());
            }
            progress::say(&format!("error: {err}"));
            if let Some(h) = hint {
                progress::say(&format!("hint: {h}"));
            }
            ExitCode::from(err.exit().code())
        }
    }
}

fn apply_options(cli: &Cli, a: &ApplyArgs) -> ApplyOptions {
    ApplyOptions {
        bundle: a.bundle.bundle.clone(),
        media: a.bundle.media.clone(),
        keys: a.bundle.key.clone(),
        state_dir: cli.state_dir.clone(),
        values_file: a.values.clone(),
        allow_downgrade: a.allow_downgrade,
        adopt: a.adopt,
        no_snapshot: a.no_snapshot,
    }
}

/// Resolves when the operator or the system asks the process to stop (Ctrl-C, SIGTERM).
///
/// SIGHUP is not among them: a closed SSH session must not leave an upgrade half done (an old
/// container stopped, its replacement not yet started). Once this is called, SIGHUP only silences
/// the output and the apply runs to its end, or rolls back by itself.
async fn interrupted() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term), Ok(mut hup)) =
        (signal(SignalKind::interrupt()), signal(SignalKind::terminate()), signal(SignalKind::hangup()))
    else {
        return std::future::pending().await;
    };
    loop {
        tokio::select! {
            _ = int.recv() => return "SIGINT",
            _ = term.recv() => return "SIGTERM",
            _ = hup.recv() => progress::terminal_gone(),
        }
    }
}

async fn run(cli: Cli) -> Result<ExitCode, InstallError> {
    let state = StateDir::new(cli.state_dir.clone());
    match &cli.command {
        Command::Verify(a) => {
            let keys = installer::trust::trusted_keys(&state.keys_dir(), &a.key)?;
            let signed = installer::verify::open(&a.bundle, &a.media, &keys)?;
            let verified = installer::verify::verify(signed)?;
            let m = &verified.manifest;
            if cli.json {
                println!(
                    "{}",
                    serde_json::json!({"event": "verified", "product": m.product, "version": m.version,
                        "release": m.release, "key_id": verified.signer.key_id.to_string(), "entries": m.entries.len() + 2})
                );
            } else {
                eprintln!(
                    "ok: {} is {} {} (release {}), signed by trusted key {}, all {} entries match",
                    a.bundle.display(),
                    m.product,
                    m.version,
                    m.release,
                    verified.signer.key_id,
                    m.entries.len() + 2
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Push(a) => {
            let registry = installer::registry::http::HttpRegistry::new(
                &a.registry.host,
                &installer::registry::http::Options { plain_http: a.plain_http, ca: a.ca.clone(), docker_config: None },
            )?;
            let reporter = Terminal::new(cli.json);
            let opts = installer::push::PushOptions {
                bundle: a.bundle.bundle.clone(),
                media: a.bundle.media.clone(),
                keys: a.bundle.key.clone(),
                state_dir: cli.state_dir.clone(),
                destination: a.registry.clone(),
                jobs: a.jobs,
            };
            let report = installer::push::push(&opts, &registry, &reporter).await?;
            if cli.json {
                let mut v = serde_json::to_value(&report).unwrap_or_default();
                v["event"] = "pushed".into();
                println!("{v}");
            } else {
                for img in &report.images {
                    println!("{}  ->  {}", img.reference, img.pinned);
                }
                eprintln!(
                    "pushed {} images to {}: {} blobs sent ({}), {} already there, {} linked from another repository, {} manifests and tags written",
                    report.images.len(),
                    report.registry,
                    report.blobs_sent,
                    manifests::display::human_bytes(report.bytes_sent),
                    report.blobs_present,
                    report.blobs_mounted,
                    report.manifests_written
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Plan(a) if a.target == cli::Target::Swarm => Err(InstallError::Policy(
            "`installer plan --target swarm` is not there yet: `installer apply --target swarm` shows each step".into(),
        )),
        Command::Plan(a) => {
            let engine = DockerEngine::connect()?;
            let report = installer::apply::plan_only(&apply_options(&cli, a), &engine).await?;
            if cli.json {
                println!("{}", serde_json::to_string(&report).unwrap_or_default());
            } else {
                print!("{}", installer::apply::render_plan(&report));
            }
            // The plan is printed whole; a failing check still decides the exit code.
            report.preflight.result()?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Apply(a) if a.target == cli::Target::Swarm => {
            let engine = DockerEngine::connect()?;
            let dest =
                a.registry.clone().ok_or_else(|| InstallError::Policy("--target swarm needs --registry".into()))?;
            let http_opts =
                installer::registry::http::Options { plain_http: a.plain_http, ca: a.ca.clone(), docker_config: None };
            let registry = installer::registry::http::HttpRegistry::new(&dest.host, &http_opts)?;
            let reporter = Terminal::new(cli.json);
            let pull = installer::engine::swarm::PullAuth { auth: registry.credentials(), server: dest.host.clone() };
            let swarm_opts = installer::target::swarm::SwarmOptions {
                registry: dest,
                endpoint_mode: a.endpoint_mode.clone(),
                jobs: 4,
            };
            let opts = apply_options(&cli, a);
            let swarm = engine.swarm();
            let outcome = tokio::select! {
                r = installer::target::swarm::apply(&opts, &swarm_opts, &swarm, &registry, &pull, &reporter) => r?,
                signal = interrupted() => return Err(InstallError::Interrupted(signal)),
            };
            if cli.json {
                let mut v = serde_json::to_value(&outcome).unwrap_or_default();
                v["event"] = "applied".into();
                v["target"] = "swarm".into();
                println!("{v}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Apply(a) => {
            let engine = DockerEngine::connect()?;
            let reporter = Terminal::new(cli.json);
            let opts = apply_options(&cli, a);
            let outcome = tokio::select! {
                r = installer::apply::apply(&opts, &engine, &reporter) => r?,
                signal = interrupted() => return Err(InstallError::Interrupted(signal)),
            };
            print_outcome(&outcome, cli.json);
            Ok(ExitCode::SUCCESS)
        }
        Command::Backup { output, key } => {
            let engine = DockerEngine::connect()?;
            let reporter = Terminal::new(cli.json);
            let opts = installer::apply::DataOptions {
                state_dir: cli.state_dir.clone(),
                keys: key.clone(),
                file: output.clone(),
            };
            // Ctrl-C or SIGTERM does not cancel it: the services it stopped must start again
            // (it ends soon, the copy being the only long step). A kill -9 is caught up by the
            // next backup, restore or apply.
            let watcher = tokio::spawn(async {
                loop {
                    let signal = interrupted().await;
                    progress::say(&format!(
                        "{signal}: finishing the backup first (the services it stopped start again)"
                    ));
                }
            });
            let report = installer::apply::backup_installed(&opts, &engine, &reporter).await;
            watcher.abort();
            let report = report?;
            if cli.json {
                let mut v = serde_json::to_value(&report).unwrap_or_default();
                v["event"] = "backup".into();
                progress::emit(&v.to_string());
            } else {
                progress::say(&format!(
                    "backup written: {} ({}, {} parts, mode 0600); services were stopped {:.1}s",
                    report.path.display(),
                    human_bytes(report.bytes),
                    report.manifest.parts.len(),
                    report.downtime_secs
                ));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Restore { file, key } => {
            let engine = DockerEngine::connect()?;
            let reporter = Terminal::new(cli.json);
            let opts = installer::apply::DataOptions {
                state_dir: cli.state_dir.clone(),
                keys: key.clone(),
                file: Some(file.clone()),
            };
            let outcome = installer::apply::restore(&opts, &engine, &reporter).await?;
            print_outcome(&outcome, cli.json);
            Ok(ExitCode::SUCCESS)
        }
        Command::Rollback { key, yes } => {
            let engine = DockerEngine::connect()?;
            let reporter = Terminal::new(cli.json);
            let opts =
                installer::apply::RollbackOptions { state_dir: cli.state_dir.clone(), keys: key.clone(), yes: *yes };
            let outcome = tokio::select! {
                r = installer::apply::rollback_on_demand(&opts, &engine, &reporter) => r?,
                signal = interrupted() => return Err(InstallError::Interrupted(signal)),
            };
            print_outcome(&outcome, cli.json);
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { target: cli::Target::Swarm } => {
            let engine = DockerEngine::connect()?;
            let project = installer::target::swarm::project_from(&state).ok_or_else(|| {
                InstallError::Policy(format!("no swarm apply was made from {}", state.root().display()))
            })?;
            let report = installer::target::swarm::status(&engine.swarm(), &project).await?;
            if cli.json {
                println!("{}", serde_json::to_string(&report).unwrap_or_default());
            } else {
                match &report.release {
                    Some(r) => {
                        println!("{} {} (release {}) in the swarm as `{project}`", r.product, r.version, r.release)
                    }
                    None => println!("no release record of `{project}` in the swarm"),
                }
                println!("{:<32} {:<8} IMAGE", "SERVICE", "TASKS");
                for (name, running, desired, image) in &report.services {
                    println!("{name:<32} {:<8} {image}", format!("{running}/{desired}"));
                }
            }
            if report.healthy { Ok(ExitCode::SUCCESS) } else { Ok(ExitCode::from(manifests::Exit::Unhealthy.code())) }
        }
        Command::Status { .. } => {
            let engine = DockerEngine::connect()?;
            let report = installer::status::status(&state, &engine).await?;
            if cli.json {
                println!("{}", serde_json::to_string(&report).unwrap_or_default());
            } else {
                print!("{}", render_status(&report));
            }
            if report.healthy { Ok(ExitCode::SUCCESS) } else { Ok(ExitCode::from(manifests::Exit::Unhealthy.code())) }
        }
        Command::Prune { dry_run, keep_snapshots } => {
            let engine = DockerEngine::connect()?;
            let report = installer::prune::prune(&state, &engine, *dry_run, *keep_snapshots).await?;
            if cli.json {
                println!("{}", serde_json::to_string(&report).unwrap_or_default());
            } else {
                print!("{}", installer::prune::render(&report));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Report { output } => {
            let output = output.clone().unwrap_or_else(|| {
                let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
                let stamp = manifests::time::rfc3339(manifests::time::now()).replace([':', '-'], "");
                std::path::PathBuf::from(format!("installer-report-{}-{stamp}.tar.gz", host.trim()))
            });
            let engine = DockerEngine::connect();
            let report =
                installer::support::report(&state, engine.as_ref().map_err(ToString::to_string), &output).await?;
            if cli.json {
                let mut v = serde_json::to_value(&report).unwrap_or_default();
                v["event"] = "report".into();
                progress::emit(&v.to_string());
            } else {
                for m in &report.missing {
                    progress::say(&format!("not collected: {m}"));
                }
                progress::say(&format!(
                    "report written: {} ({}, {} files, {} secret values redacted, mode 0600)",
                    report.path.display(),
                    human_bytes(report.bytes),
                    report.files.len(),
                    report.redactions
                ));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::History { target: cli::Target::Swarm } => {
            let engine = DockerEngine::connect()?;
            let project = installer::target::swarm::project_from(&state).ok_or_else(|| {
                InstallError::Policy(format!("no swarm apply was made from {}", state.root().display()))
            })?;
            let records = installer::target::swarm::records(&engine.swarm(), &project).await?;
            for r in &records {
                if cli.json {
                    let mut v = serde_json::to_value(r).unwrap_or_default();
                    if let Some(o) = v.as_object_mut() {
                        o.remove("services");
                    }
                    println!("{v}");
                } else {
                    println!(
                        "{}  release {:<4} {} {}  {} services, migrations: {}",
                        manifests::time::rfc3339(r.applied_at),
                        r.release,
                        r.product,
                        r.version,
                        r.services.len(),
                        if r.migrations.is_empty() { "none".into() } else { r.migrations.join(", ") }
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::History { .. } => {
            let entries = state.history()?;
            if cli.json {
                for e in &entries {
                    println!("{}", serde_json::to_string(e).unwrap_or_default());
                }
            } else {
                print!("{}", render_history(&entries));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Completions { shell } => {
            clap_complete::generate(*shell, &mut Cli::command(), "installer", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Command::Man { out } => {
            std::fs::create_dir_all(out)
                .and_then(|()| clap_mangen::generate_to(Cli::command(), out))
                .map_err(InstallError::state(out))?;
            eprintln!("man pages written to {}", out.display());
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn render_history(entries: &[installer::state::HistoryEntry]) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    if entries.is_empty() {
        s.push_str("no apply recorded yet\n");
    }
    for e in entries {
        let _ = write!(
            s,
            "{}  {} {} (release {}, was {})  {}  by {}",
            manifests::time::rfc3339(e.at),
            e.product,
            e.version,
            e.release,
            e.previous_release.map_or_else(|| "none".to_string(), |p| p.to_string()),
            e.outcome,
            e.operator
        );
        if !e.overrides.is_empty() {
            let _ = write!(s, "  overrides: {}", e.overrides.join(", "));
        }
        if let Some(err) = &e.error {
            let _ = write!(s, "\n    {err}");
        }
        s.push('\n');
    }
    s
}

fn print_outcome(outcome: &installer::apply::Outcome, json: bool) {
    if json {
        let mut v = serde_json::to_value(outcome).unwrap_or_default();
        v["event"] = "outcome".into();
        progress::emit(&v.to_string());
    } else {
        progress::say(&format!(
            "sent {} to Docker ({} already present); changed: {}; kept: {}; migrations run: {}",
            human_bytes(outcome.bytes_sent),
            human_bytes(outcome.bytes_skipped),
            list(&outcome.changed),
            list(&outcome.kept),
            list(&outcome.migrations_run)
        ));
    }
}

fn list(v: &[String]) -> String {
    if v.is_empty() { "none".into() } else { v.join(", ") }
}

fn render_status(r: &installer::status::StatusReport) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{} {} (release {}), applied {}, engine {} ({})",
        r.product,
        r.version,
        r.release,
        r.applied_at,
        r.docker_version,
        r.engine.describe()
    );
    let _ = writeln!(s, "host: {}", r.hypervisor);
    if !r.last_apply_finished {
        let _ =
            writeln!(s, "WARNING: the last apply did not finish; run `installer apply` with the same bundle to resume");
    }
    let _ = writeln!(s, "{:<12} {:<10} {:<10} {:<10} IMAGE", "SERVICE", "STATE", "HEALTH", "UPTIME");
    for svc in &r.services {
        let health = match svc.health {
            Some(h) => serde_json::to_value(h).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default(),
            None => "-".into(),
        };
        let state = match (svc.one_shot, svc.exit_code) {
            (true, Some(code)) => format!("{} ({code})", svc.state),
            _ => svc.state.clone(),
        };
        let uptime = svc.uptime_secs.map_or_else(|| "-".to_string(), |u| format!("{}m{}s", u / 60, u % 60));
        let mark = if svc.ok { "" } else { "  <-- not ok" };
        let _ = writeln!(s, "{:<12} {:<10} {:<10} {:<10} {}{mark}", svc.service, state, health, uptime, svc.image);
    }
    for (key, at) in &r.data {
        let _ = writeln!(s, "data {key}: {at} (a copy made before migrations, or restored)");
    }
    let _ = writeln!(s, "{}", if r.healthy { "all services ok" } else { "NOT HEALTHY" });
    s
}
