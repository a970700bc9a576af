//! Command-line arguments (clap only; the library takes typed options).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueHint};

/// Build signed offline bundles of a docker compose stack.
#[derive(Debug, Parser)]
#[command(name = "bundler", version, about)]
pub struct Cli {
    /// Print machine-readable JSON on stdout instead of human text.
    #[arg(long, global = true)]
    pub json: bool,
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
    /// Create a signing key pair (minisign format).
    Keygen(KeygenArgs),
    /// Check a compose file without a registry: every problem in one run.
    Check(CheckArgs),
    /// Build a signed bundle from a compose file.
    Build(BuildArgs),
    /// Show what a bundle contains.
    Inspect(InspectArgs),
    /// Check a bundle's signature and every entry.
    Verify(VerifyArgs),
    /// Write a bundle as ISO 9660 images (VMware, Hyper-V), each at most one FAT32 file.
    Iso(IsoArgs),
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

/// `keygen`.
#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Where to write the secret key (mode 0600).
    #[arg(long, value_hint = ValueHint::FilePath)]
    pub secret_key: PathBuf,
    /// Where to write the public key.
    #[arg(long, value_hint = ValueHint::FilePath)]
    pub public_key: PathBuf,
    /// Overwrite existing key files.
    #[arg(long)]
    pub force: bool,
}

/// The compose file and how to read it (shared by `check` and `build`).
#[derive(Debug, Args)]
pub struct ComposeArgs {
    /// The compose file.
    #[arg(short = 'f', long = "file", default_value = "compose.yaml", value_hint = ValueHint::FilePath)]
    pub compose: PathBuf,
    /// Activate a compose profile: its services go into the bundle. Repeatable.
    #[arg(long = "profile")]
    pub profiles: Vec<String>,
    /// An env file for bundle-time values (image tags, pinned variables), read after the `.env`
    /// next to the compose file; the environment wins over both. Repeatable.
    #[arg(long = "env-file", value_hint = ValueHint::FilePath)]
    pub env_files: Vec<PathBuf>,
}

/// `check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The compose file.
    #[command(flatten)]
    pub compose: ComposeArgs,
}

/// `build`.
#[derive(Debug, Args)]
pub struct BuildArgs {
    /// The compose file.
    #[command(flatten)]
    pub compose: ComposeArgs,
    /// The secret key that signs the bundle: a file, `-` (read from standard input) or
    /// `env:NAME` (the variable holds the key file's text; for CI secret stores, nothing on disk).
    #[arg(long, env = "BUNDLER_KEY", value_hint = ValueHint::FilePath)]
    pub key: PathBuf,
    /// Version shown to operators, e.g. 1.4.0.
    #[arg(long)]
    pub version: String,
    /// Release counter; must grow with every release (anti-rollback).
    #[arg(long)]
    pub release: u64,
    /// Output bundle file.
    #[arg(short, long, value_hint = ValueHint::FilePath)]
    pub output: PathBuf,
    /// Registry (host:port) to reach over plain HTTP. Repeatable.
    #[arg(long = "insecure-registry", env = "BUNDLER_INSECURE_REGISTRIES", value_delimiter = ',')]
    pub insecure_registry: Vec<String>,
    /// Blob cache directory [default: $XDG_CACHE_HOME/bundler or ~/.cache/bundler].
    #[arg(long, env = "BUNDLER_CACHE_DIR", value_hint = ValueHint::DirPath)]
    pub cache_dir: Option<PathBuf>,
    /// Days the bundle stays valid (installers refuse it afterwards).
    #[arg(long)]
    pub valid_days: Option<u64>,
    /// Parallel downloads.
    #[arg(long, default_value_t = 4)]
    pub jobs: usize,
    /// Split the bundle into parts of at most SIZE bytes for removable media: OUT.000 (the signed
    /// header), OUT.001, … K, M, G are powers of 1024; 4095M fits FAT32 (4 GiB - 1 byte per file)
    /// and one ISO volume. `cat OUT.0* > OUT` gives the one-file bundle.
    #[arg(long, value_name = "SIZE", value_parser = manifests::media::parse_size)]
    pub part_size: Option<u64>,
    /// Rotate to this new public key: hosts that trust the current key and apply this bundle
    /// will trust the new key too. Sign later bundles with the new secret key.
    #[arg(long, value_hint = ValueHint::FilePath)]
    pub rotate_to: Option<PathBuf>,
}

/// `inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The bundle: its file, or part 000 of a split bundle.
    #[arg(value_hint = ValueHint::FilePath)]
    pub bundle: PathBuf,
    /// A directory holding parts of a split bundle (another stick or volume). Repeatable.
    #[arg(long, value_hint = ValueHint::DirPath)]
    pub media: Vec<PathBuf>,
    /// Check the manifest's signature with this public key. Repeatable.
    #[arg(long)]
    pub key: Vec<PathBuf>,
}

/// `verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The bundle: its file, or part 000 of a split bundle.
    #[arg(value_hint = ValueHint::FilePath)]
    pub bundle: PathBuf,
    /// A directory holding parts of a split bundle (another stick or volume). Repeatable.
    #[arg(long, value_hint = ValueHint::DirPath)]
    pub media: Vec<PathBuf>,
    /// Trusted public key. Repeatable.
    #[arg(long, required = true)]
    pub key: Vec<PathBuf>,
}

/// `iso`.
#[derive(Debug, Args)]
pub struct IsoArgs {
    /// The bundle: its file, or part 000 of a split bundle.
    #[arg(value_hint = ValueHint::FilePath)]
    pub bundle: PathBuf,
    /// A directory holding parts not beside part 000. Repeatable.
    #[arg(long, value_hint = ValueHint::DirPath)]
    pub media: Vec<PathBuf>,
    /// Where to write the images (`PRODUCT-VERSION-1of2.iso`, …).
    #[arg(long, value_hint = ValueHint::DirPath)]
    pub output_dir: PathBuf,
    /// Largest image size (K, M, G: powers of 1024). The default, 4 GiB - 1 byte, lets each image
    /// ride on a FAT32 stick too.
    #[arg(long, value_name = "SIZE", value_parser = manifests::media::parse_size, default_value_t = manifests::media::FAT32_MAX_FILE)]
    pub volume_size: u64,
    /// The static installer binary, put on the first volume.
    #[arg(long, value_hint = ValueHint::FilePath)]
    pub installer: Option<PathBuf>,
    /// The vendor's public key, put on the first volume (its fingerprint in the README); the
    /// bundle is verified with it before any image is written.
    #[arg(long, value_hint = ValueHint::FilePath)]
    pub public_key: Option<PathBuf>,
}

#[cfg(test)]
mod tests {
    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
