/*!
`karpctl init`: writes a commented starter config from one of the presets in
examples/, each reproducing a real deployment. The preset files are embedded in
the binary, so `init` works offline; the only edit is the cluster name, which is
validated before it is written.
*/

use anyhow::{bail, Context};

use crate::cli::{Global, InitArgs, Preset};
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
    if args.list {
        let mut s = String::new();
        for p in all_presets() {
            let pv = p.to_possible_value().expect("presets have names");
            s.push_str(&format!("{:<10} {}\n", pv.get_name(), pv.get_help().map(|h| h.to_string()).unwrap_or_default()));
        }
        return Ok(Report { stdout: s, ..Default::default() });
    }
    let text = starter(args.preset, args.cluster.as_deref())?;
    let target = args.out.clone().unwrap_or_else(|| g.config.clone());
    if target.as_os_str() == "-" {
        return Ok(Report { stdout: text, ..Default::default() });
    }
    if target.exists() && !args.force {
        bail!("{} already exists; pass --force to overwrite it or --out to write elsewhere", target.display());
    }
    write_atomic(&target, text.as_bytes(), 0o644).with_context(|| format!("writing {}", target.display()))?;
    let mut notes = vec![format!("wrote {}", target.display())];
    if args.cluster.is_none() {
        notes.push(format!("set cluster.name (now {PLACEHOLDER:?}) or rerun with --cluster NAME"));
    }
    notes.push(format!("next: karpctl validate -c {0} && karpctl plan -c {0}", target.display()));
    Ok(Report { notes, ..Default::default() })
}
