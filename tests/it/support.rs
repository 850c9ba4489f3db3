//! Helpers shared by the integration tests.

use std::path::{Path, PathBuf};

use karpctl::cli::Preset;
use karpctl::config::{self, Config};
use karpctl::ops::init::{all_presets, preset_text};
use karpctl::render::{self, AmiChoice, Facts, Inputs};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The real Karpenter CRDs, present beside the repo in CI (../shared/reference).
pub fn crds_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("KARPCTL_CRDS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("../shared/reference/karpenter-crds"));
    let found = dir.join("karpenter.sh_nodepools.yaml").exists();
    // In CI the CRDs sit beside the checkout; their absence there is a broken setup, not a skip.
    assert!(found || std::env::var_os("CI").is_none(), "CI=true but the Karpenter CRDs are not at {}", dir.display());
    found.then_some(dir)
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
