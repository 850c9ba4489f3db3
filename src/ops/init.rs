/*!
`karpctl init`: writes a commented starter config from one of the presets in
examples/, each reproducing a real deployment. The preset files are embedded in
the binary, so `init` works offline; the only edit is the cluster name, which is
validated before it is written.
*/

use anyhow::{bail, Context};

use crate::cli::{Global, InitArgs, OutputFormat, Preset};
use crate::output::{ApiVersion, Init, InitKind, PresetInfo};
use crate::config::rules::is_cluster_name;
use crate::fsutil::write_atomic;

use super::Report;

/// Placeholder cluster name used by every preset file.
pub const PLACEHOLDER: &str = "my-cluster";

pub fn preset_text(p: Preset) -> &'static str {
    match p {
        Preset::Default => include_str!("../../examples/default.yaml"),
        Preset::Dynamo => include_str!("../../examples/dynamo.yaml"),
        Preset::DevGpu => include_str!("../../examples/dev-gpu.yaml"),
        Preset::Falkordb => include_str!("../../examples/falkordb.yaml"),
        Preset::Platform => include_str!("../../examples/platform.yaml"),
    }
}

pub fn all_presets() -> [Preset; 5] {
    [Preset::Default, Preset::Dynamo, Preset::DevGpu, Preset::Falkordb, Preset::Platform]
}

/// The preset with the cluster name filled in.
pub fn starter(p: Preset, cluster: Option<&str>) -> anyhow::Result<String> {
    let text = preset_text(p);
    let Some(name) = cluster else { return Ok(text.to_string()) };
    if !is_cluster_name(name) {
        bail!("--cluster {name:?} is not a valid EKS cluster name (1–100 letters, digits, '-' or '_')");
    }
    let line = format!("  name: {PLACEHOLDER}\n");
    if text.matches(&line).count() != 1 {
        bail!("preset has no single cluster name line to fill in");
    }
    // Discovery tags and other mentions of the placeholder follow the cluster name.
    Ok(text.replace(PLACEHOLDER, name))
}

pub fn init(g: &Global, args: &InitArgs) -> anyhow::Result<Report> {
    use clap::ValueEnum;
    let name = |p: Preset| p.to_possible_value().map(|v| v.get_name().to_string()).unwrap_or_default();
    let doc = |file: Option<std::path::PathBuf>, presets: Vec<PresetInfo>| Init {
        api_version: ApiVersion::V1Alpha1,
        kind: InitKind::Init,
        preset: file.as_ref().map(|_| name(args.preset)),
        file,
        cluster: args.cluster.clone(),
        presets,
    };
    if args.list {
        let presets: Vec<PresetInfo> = all_presets()
            .into_iter()
            .map(|p| {
                let pv = p.to_possible_value().expect("presets have names");
                PresetInfo { name: pv.get_name().to_string(), description: pv.get_help().map(|h| h.to_string()).unwrap_or_default() }
            })
            .collect();
        let stdout = match g.output {
            OutputFormat::Text => crate::ui::presets_text(&presets),
            f => crate::output::encode(&doc(None, presets), f)?,
        };
        return Ok(Report { stdout, ..Default::default() });
    }
    let text = starter(args.preset, args.cluster.as_deref())?;
    let target = args.out.clone().unwrap_or_else(|| g.config.clone());
    if target.as_os_str() == "-" {
        return Ok(Report { stdout: text, ..Default::default() });
    }
    if target.exists() && !args.force {
        return Err(anyhow::Error::new(InitError::Exists(target.clone())));
    }
    write_atomic(&target, text.as_bytes(), 0o644).with_context(|| format!("writing {}", target.display()))?;
    let mut notes = vec![format!("wrote {}", target.display())];
    if args.cluster.is_none() {
        notes.push(format!("set cluster.name (now {PLACEHOLDER:?}) or rerun with --cluster NAME"));
    }
    notes.push(format!("next: karpctl validate -c {0} && karpctl plan -c {0}", target.display()));
    let stdout = match g.output {
        OutputFormat::Text => String::new(),
        f => crate::output::encode(&doc(Some(target.clone()), Vec::new()), f)?,
    };
    Ok(Report { stdout, notes, ..Default::default() })
}

/// A refusal `main` can add the exact next command to.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("{} already exists; pass --force to overwrite it or --out to write elsewhere", .0.display())]
    Exists(std::path::PathBuf),
}

impl InitError {
    pub fn help(&self) -> String {
        match self {
            InitError::Exists(p) => format!("karpctl init --force --out {}   # or keep it: karpctl validate -c {0}", p.display()),
        }
    }
}
