//! The corpus: compose files software vendors publish for self-hosted installs
//! (tests/corpus/compose/*/, each with its SOURCE), with only `x-bundle: {product: …}` added.
//! Each must pass `bundler check` (the same load and file checks `build` runs first), with the
//! arguments in its ARGS file if any; a directory with an EXPECT file must be refused with
//! exactly those problems (a snapshot: `UPDATE_EXPECT=1` rewrites it).

use std::path::{Path, PathBuf};

fn corpus() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/corpus/compose");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .expect("tests/corpus/compose exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("compose.yaml").is_file())
        .collect();
    dirs.sort();
    dirs
}

fn check(dir: &Path) -> Result<String, String> {
    let mut opts = manifests::compose::LoadOptions::default();
    if let Ok(args) = std::fs::read_to_string(dir.join("ARGS")) {
        let words: Vec<&str> = args.split_whitespace().collect();
        for pair in words.chunks(2) {
            match pair {
                ["--profile", p] => opts.profiles.push((*p).to_string()),
                ["--env-file", f] => opts.env_files.push(dir.join(f)),
                other => panic!("{}: unknown ARGS {other:?}", dir.display()),
            }
        }
    }
    let compose = dir.join("compose.yaml");
    let prepared = manifests::compose::load(&compose, &opts).map_err(|e| e.to_string())?;
    let files = bundler::build::check_sources(&compose, &prepared).map_err(|e| e.to_string())?;
    Ok(format!("{} services, {} images, {} files", prepared.probe.services.len(), prepared.images.len(), files.len()))
}

#[test]
fn vendor_compose_files_are_accepted_as_written() {
    let dirs = corpus();
    assert!(dirs.len() >= 15, "the corpus has {} files", dirs.len());
    let mut accepted = 0;
    let mut failures = Vec::new();
    for dir in &dirs {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        assert!(dir.join("SOURCE").is_file(), "{name}: every corpus file names its source");
        let expect = dir.join("EXPECT");
        let prefix = format!("{}/", dir.display());
        match (check(dir), expect.is_file()) {
            (Ok(_), false) => accepted += 1,
            (Ok(summary), true) => {
                failures.push(format!("{name}: expected a refusal (EXPECT), but it passed: {summary}"))
            }
            (Err(e), false) => failures.push(format!("{name}: refused:\n{e}")),
            (Err(e), true) => {
                let got = e.replace(&prefix, "");
                if std::env::var_os("UPDATE_EXPECT").is_some() {
                    std::fs::write(&expect, &got).unwrap();
                }
                let want = std::fs::read_to_string(&expect).unwrap();
                if got != want {
                    failures.push(format!("{name}: refused differently than EXPECT says:\n{got}"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    assert!(accepted >= 15, "only {accepted} accepted");
}

#[test]
fn a_bundled_directory_over_the_file_limit_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let compose = dir.path().join("compose.yaml");
    std::fs::write(
        &compose,
        "x-bundle: {product: p}\nservices:\n  a:\n    image: r/a:1\n    volumes: [\"./many:/many:ro\"]\n",
    )
    .unwrap();
    let many = dir.path().join("many");
    std::fs::create_dir(&many).unwrap();
    for i in 0..=bundler::build::MAX_TREE_FILES {
        std::fs::write(many.join(i.to_string()), b"").unwrap();
    }
    let prepared = manifests::compose::load(&compose, &manifests::compose::LoadOptions::default()).unwrap();
    let err = bundler::build::check_sources(&compose, &prepared).unwrap_err().to_string();
    assert!(err.contains("`many`") && err.contains("more than 10000 files"), "{err}");
}
