//! Helpers shared by the integration tests.

use std::path::{Path, PathBuf};

use karpctl::cli::Preset;
use karpctl::config::{self, Config};
use karpctl::ops::init::{all_presets, preset_text};
use karpctl::render::{self, AmiChoice, Facts, Inputs};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A directory of a pinned upstream artifact (`scripts/upstream.sh path NAME VERSION PART`):
/// the real Karpenter chart and CRDs or NVIDIA's device plugin chart, fetched from the Go
/// module proxy and cached. None (a skip) when it cannot be fetched, except under CI.
pub fn upstream(name: &str, version: &str, part: &str) -> Option<PathBuf> {
    let out = std::process::Command::new(repo().join("scripts/upstream.sh"))
        .args(["path", name, version, part])
        .stderr(std::process::Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("running scripts/upstream.sh: {e}"));
    let ok = out.status.success();
    assert!(ok || std::env::var_os("CI").is_none(), "CI=true but scripts/upstream.sh path {name} {version} {part} failed");
    if !ok {
        eprintln!("skipping: scripts/upstream.sh could not fetch {name} {version}");
        return None;
    }
    Some(PathBuf::from(String::from_utf8(out.stdout).expect("a UTF-8 path").trim()))
}

/// The real Karpenter CRDs of the pinned release, or `KARPCTL_CRDS_DIR`.
pub fn crds_dir() -> Option<PathBuf> {
    match std::env::var_os("KARPCTL_CRDS_DIR") {
        Some(d) => Some(PathBuf::from(d)),
        None => upstream("karpenter", "", "crds"),
    }
}

pub fn preset_name(p: Preset) -> &'static str {
    use clap::ValueEnum;
    let v = p.to_possible_value().expect("named");
    Box::leak(v.get_name().to_string().into_boxed_str())
}

pub fn load_preset(p: Preset) -> Config {
    let name = preset_name(p);
    let path = PathBuf::from(format!("examples/{name}.yaml"));
    match config::parse(&path, preset_text(p).as_bytes()) {
        Ok(l) => l.config,
        Err(e) => panic!("preset {name} does not validate:\n{e}"),
    }
}

/// Inputs as `up` would have them: pinned AMIs and known facts.
pub fn pinned_inputs(c: &Config) -> Inputs {
    let amis = c
        .node_classes
        .iter()
        .map(|nc| {
            let alias = match nc.ami_family {
                config::types::AmiFamily::Al2023 => "al2023@v20250915",
                config::types::AmiFamily::Bottlerocket => "bottlerocket@v1.46.0",
                config::types::AmiFamily::Al2 => "al2@v20251103",
            };
            (nc.name.clone(), AmiChoice::Alias(alias.to_string()))
        })
        .collect();
    Inputs {
        amis,
        facts: Facts {
            account_id: Some("111122223333".into()),
            partition: Some("aws".into()),
            cluster_endpoint: Some("https://EXAMPLE0123.gr7.us-west-2.eks.amazonaws.com".into()),
            irsa: None,
        },
    }
}

pub fn render_stream(c: &Config, inputs: &Inputs) -> String {
    let b = render::render(c, inputs).expect("renders");
    let docs: Vec<&render::Document> = b.documents.iter().collect();
    render::stream(&docs, render::Encoding::Yaml)
}

pub fn presets() -> [Preset; 5] {
    all_presets()
}

/// The files in `dir` whose extension is `ext`, sorted.
pub fn files_with_extension(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .collect();
    files.sort();
    files
}

pub fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
}

/// A fresh, empty scratch directory unique to this process and call.
pub fn scratch(name: &str) -> PathBuf {
    static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let d = std::env::temp_dir().join(format!("karpctl-it-{name}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("creating {}: {e}", d.display()));
    d
}
