//! Command-line arguments (clap only).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueHint};

/// Install and run signed offline bundles on this host's Docker Engine.
#[derive(Debug, Parser)]
#[command(name = "installer", version, about)]
pub struct Cli {
    /// Print one JSON event per line on stdout instead of human text.
    #[arg(long, global = true)]
    pub json: bool,
    /// State directory (installed release, journal, trusted keys, values).
    #[arg(long, global = true, env = "INSTALLER_STATE_DIR", default_value = "/var/lib/installer", value_hint = ValueHint::DirPath)]
    pub state_dir: PathBuf,
    /// More log output (-v, -vv).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check a bundle's signature and every entry, without changing anything.
    Verify(BundleArgs),
    /// Show what `apply` would do, without changing anything.
    Plan(ApplyArgs),
    /// Install or upgrade: verify, load images, run migrations once, start services gated on health.
    Apply(ApplyArgs),
    /// Copy the bundle's images into a site registry byte for byte (digests unchanged), for
    /// Swarm or Kubernetes nodes to pull.
    Push(PushArgs),
    /// Go back to the release installed before the current one (its images and files are still here).
    Rollback {
        /// Trust this public key (in addition to <state-dir>/keys). Repeatable.
        #[arg(long, value_hint = ValueHint::FilePath)]
        key: Vec<PathBuf>,
        /// Go back even when the data goes back too (what was written since the upgrade is set
        /// aside in the newer copy, not deleted).
        #[arg(long)]
        yes: bool,
    },
    /// Write the stack's data (volumes, site data directories), values and release record to one
    /// file (services stopped during the copy, then started again).
    Backup {
        /// Output file [default: <state-dir>/backups/<project>-r<release>-<time>.tar].
        #[arg(short, long, value_hint = ValueHint::FilePath)]
        output: Option<PathBuf>,
        /// Trust this public key (in addition to <state-dir>/keys). Repeatable.
        #[arg(long, value_hint = ValueHint::FilePath)]
        key: Vec<PathBuf>,
    },
    /// Check a backup file whole, restore it into fresh volumes and switch the stack to them,
    /// gated on health (the data in use comes back if a gate fails).
    Restore {
        /// The backup file.
        #[arg(value_hint = ValueHint::FilePath)]
        file: PathBuf,
        /// Trust this public key (in addition to <state-dir>/keys). Repeatable.
        #[arg(long, value_hint = ValueHint::FilePath)]
        key: Vec<PathBuf>,
    },
    /// Show the installed release and the state of every service.
    Status {
        /// `host` (this engine) or `swarm` (the stack's services in the swarm this engine manages).
        #[arg(long, value_enum, default_value_t = Target::Host)]
        target: Target,
    },
    /// Show every apply on this host: release, time, outcome, who ran it, overrides.
    History {
        /// `host` (this host's applies) or `swarm` (the release records in the swarm).
        #[arg(long, value_enum, default_value_t = Target::Host)]
        target: Target,
    },
    /// Write a support archive (tar.gz) to send to the vendor: versions, engine, preflight,
    /// status, history, journal, the release's manifest, container logs, disk and memory, with
    /// every secret value redacted.
    Report {
        /// Output file [default: ./installer-report-<host>-<time>.tar.gz].
        #[arg(short, long, value_hint = ValueHint::FilePath)]
        output: Option<PathBuf>,
    },
    /// Remove the images and files of releases older than the one `rollback` returns to.
    Prune {
        /// Only show what would be removed.
        #[arg(long)]
        dry_run: bool,
        /// Copies of data made before migrations to keep, besides those the installed and the
        /// previous release use.
        #[arg(long, default_value_t = installer::data::KEEP_SNAPSHOTS)]
        keep_snapshots: usize,
    },
    /// Print shell completions.
    Completions {
        /// Shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write man pages into a directory.
    Man {
        /// Output directory.
        #[arg(long, default_value = "man", value_hint = ValueHint::DirPath)]
        out: PathBuf,
    },
}

/// A bundle and the keys to trust.
#[derive(Debug, Args)]
pub struct BundleArgs {
    /// The bundle: its file, or part 000 of a split bundle (`NAME.000`).
    #[arg(value_hint = ValueHint::FilePath)]
    pub bundle: PathBuf,
    /// A directory holding parts of a split bundle that are not beside part 000: another USB
    /// stick or ISO volume's mount point. Repeatable; also INSTALLER_MEDIA (colon-separated).
    #[arg(long, value_hint = ValueHint::DirPath, env = "INSTALLER_MEDIA", value_delimiter = ':')]
    pub media: Vec<PathBuf>,
    /// Trust this public key (in addition to <state-dir>/keys). Repeatable.
    #[arg(long, value_hint = ValueHint::FilePath)]
    pub key: Vec<PathBuf>,
}

/// `push`.
#[derive(Debug, Args)]
pub struct PushArgs {
    /// The bundle and keys.
    #[command(flatten)]
    pub bundle: BundleArgs,
    /// The registry: HOST[:PORT][/PREFIX]. Each image goes to PREFIX/<its path without the
    /// source registry>:<tag>.
    #[arg(long, value_parser = installer::registry::Destination::parse)]
    pub registry: installer::registry::Destination,
    /// Speak plain HTTP (a registry without TLS).
    #[arg(long)]
    pub plain_http: bool,
    /// Trust this CA certificate file (PEM) for the registry's TLS, besides the host's.
    #[arg(long, value_hint = ValueHint::FilePath)]
    pub ca: Option<PathBuf>,
    /// Blobs sent at once.
    #[arg(long, default_value_t = 4)]
    pub jobs: usize,
}

/// Where a release goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    /// This Docker Engine's containers.
    Host,
    /// Services of the Docker Swarm this engine manages (needs --registry).
    Swarm,
}

/// `apply` and `plan`.
#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// The bundle and keys.
    #[command(flatten)]
    pub bundle: BundleArgs,
    /// `host` (this engine) or `swarm` (this engine is a Swarm manager: the images are pushed to
    /// --registry and the stack becomes Swarm services).
    #[arg(long, value_enum, default_value_t = Target::Host)]
    pub target: Target,
    /// The site registry for --target swarm: HOST[:PORT][/PREFIX] (see `installer push`).
    #[arg(long, value_parser = installer::registry::Destination::parse, required_if_eq("target", "swarm"))]
    pub registry: Option<installer::registry::Destination>,
    /// --target swarm: the registry speaks plain HTTP.
    #[arg(long)]
    pub plain_http: bool,
    /// --target swarm: a CA certificate file (PEM) for the registry's TLS.
    #[arg(long, value_hint = ValueHint::FilePath)]
    pub ca: Option<PathBuf>,
    /// --target swarm: how services are found: `vip` (a virtual IP, needs IPVS on the nodes) or
    /// `dnsrr` (DNS round robin).
    #[arg(long, default_value = "vip", value_parser = ["vip", "dnsrr"])]
    pub endpoint_mode: String,
    /// Operator values (NAME=value lines) for the bundle's variables and secrets.
    #[arg(long, value_hint = ValueHint::FilePath)]
    pub values: Option<PathBuf>,
    /// Install a release older than the installed one.
    #[arg(long)]
    pub allow_downgrade: bool,
    /// Take over a project this state directory did not install (its migrations run again).
    #[arg(long)]
    pub adopt: bool,
    /// Run this release's migrations without copying the data first (a rollback then cannot
    /// give the data back). Recorded in the history.
    #[arg(long)]
    pub no_snapshot: bool,
}

#[cfg(test)]
mod tests {
    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
