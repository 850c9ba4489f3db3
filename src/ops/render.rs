/*!
`karpctl render` and `karpctl validate`: load and validate the config, render
every artifact offline, and print them as one stream or write them as a GitOps
directory. Without `--from-state` it never builds a client, so it works without
credentials or network; a local state file is read for the AMI pins `up` recorded.
*/

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use crate::cli::{Global, OutputFormat, RenderArgs};
use crate::config::source::FieldPath;
use crate::config::types::IdentityMode;
use crate::config::{self, rules};
use crate::fsutil::write_atomic;
use crate::render::helm::Missing;
use crate::render::{self, AmiChoice, Encoding, Facts, Inputs};

use super::Report;

/// Parses `--ami CLASS=VALUE` flags.
pub fn parse_ami_flags(flags: &[String], c: &config::Config) -> anyhow::Result<BTreeMap<String, AmiChoice>> {
    let mut out = BTreeMap::new();
    for f in flags {
        let Some((class, value)) = f.split_once('=') else {
            bail!("--ami {f:?}: expected CLASS=FAMILY@VERSION or CLASS=ami-…[,ami-…]");
        };
        let Some(nc) = c.node_classes.iter().find(|n| n.name == class) else {
            let known: Vec<&str> = c.node_classes.iter().map(|n| n.name.as_str()).collect();
            bail!("--ami {f:?}: no node class named {class:?} (classes: {})", known.join(", "));
        };
        let choice = if value.starts_with("ami-") {
            let ids: Vec<String> = value.split(',').map(str::to_string).collect();
            if let Some(bad) = ids.iter().find(|i| !rules::is_aws_id(i, "ami")) {
                bail!("--ami {f:?}: {bad:?} is not an AMI id");
            }
            AmiChoice::Ids(ids)
        } else {
            match value.split_once('@') {
                Some((fam, ver)) if fam == nc.ami_family.alias_name() && !ver.is_empty() && value.len() <= 30 => {
                    AmiChoice::Alias(value.to_string())
                }
                Some((fam, _)) if fam != nc.ami_family.alias_name() => {
                    bail!("--ami {f:?}: node class {class} is {}, not {fam}", nc.ami_family.alias_name())
                }
                _ => bail!("--ami {f:?}: expected {}@VERSION or ami ids", nc.ami_family.alias_name()),
            }
        };
        out.insert(class.to_string(), choice);
    }
    Ok(out)
}

/// `render --out` refusing to write a directory whose values would not work on their own.
#[derive(Debug, thiserror::Error)]
pub enum RenderRefusal {
    #[error("not writing {}: {} {}", dir.display(), missing.document, missing.message)]
    Incomplete { dir: PathBuf, missing: Missing },
}

impl RenderRefusal {
    pub fn help(&self) -> String {
        match self {
            RenderRefusal::Incomplete { dir, missing } => supply(missing.flag, Some(dir)),
        }
    }
}

/// The command that supplies a fact `render` cannot look up offline, and where its value comes from.
fn supply(flag: &str, out: Option<&Path>) -> String {
    let out = out.map(|d| format!(" --out {}", d.display())).unwrap_or_default();
    match flag {
        "--account-id" => format!(
            "karpctl render --account-id <ACCOUNT_ID>{out}   # the cluster's 12-digit account: aws sts get-caller-identity --query Account --output text"
        ),
        other => format!("pass {other} to karpctl render{out}"),
    }
}

/// The AMI pins `up` recorded in the state, for the classes whose family still
/// matches (a class whose family changed since gets none), with a note saying where
/// they came from. A local state file is read when it exists (no network); an S3
/// state only with `--from-state`, which also insists that a state exists.
async fn state_pins(g: &Global, c: &config::Config, from_state: bool, notes: &mut Vec<String>) -> anyhow::Result<BTreeMap<String, AmiChoice>> {
    let local = c.state.s3.is_none();
    if !from_state && !local {
        notes.push("the state is kept in S3: `karpctl render --from-state` renders the AMI pins it records (needs AWS access)".into());
        return Ok(BTreeMap::new());
    }
    let backend = super::context::backend(c, g).await?;
    if !from_state && !super::context::state_path(c, &g.config).exists() {
        return Ok(BTreeMap::new());
    }
    let read = async {
        let state = match backend.load().await.with_context(|| format!("reading state from {}", backend.describe()))? {
            Some(s) => s,
            None => bail!("--from-state: no state at {} yet; `karpctl up` creates it and records the AMI pins", backend.describe()),
        };
        state.check_identity(&c.cluster.name)?;
        anyhow::Ok(state)
    };
    let state = match read.await {
        Ok(s) => s,
        Err(e) if from_state => return Err(e),
        // Offline rendering does not fail on a state it cannot use: it says so and renders without pins.
        Err(e) => {
            notes.push(format!("the state at {} is not usable ({e:#}): rendered without its AMI pins", backend.describe()));
            return Ok(BTreeMap::new());
        }
    };
    let recorded: BTreeMap<String, AmiChoice> = state
        .steps
        .get(crate::steps::ami_lookup::ID)
        .and_then(|r| serde_json::from_value(r.outputs["pins"].clone()).ok())
        .unwrap_or_default();
    let pins: BTreeMap<String, AmiChoice> = recorded
        .into_iter()
        .filter(|(class, pin)| {
            c.node_classes.iter().any(|nc| {
                nc.name == *class
                    && match pin {
                        AmiChoice::Alias(a) => a.starts_with(&format!("{}@", nc.ami_family.alias_name())),
                        AmiChoice::Ids(_) => true,
                    }
            })
        })
        .collect();
    if !pins.is_empty() {
        let list: Vec<String> = pins.iter().map(|(k, v)| format!("{k}={v}")).collect();
        notes.push(format!("AMI pins from the state at {}: {}", backend.describe(), list.join(" ")));
    }
    Ok(pins)
}

pub async fn render(g: &Global, args: &RenderArgs) -> anyhow::Result<Report> {
    let loaded = config::load(&g.config)?;
    let c = &loaded.config;
    if let Some(a) = &args.account_id {
        if a.len() != 12 || !a.bytes().all(|b| b.is_ascii_digit()) {
            bail!("--account-id {a:?}: an AWS account id is 12 digits");
        }
    }
    // The partition (for ARNs) follows the region, as `up` would find it: --region, else the config's.
    let region = g.region.as_deref().or(c.cluster.region.as_deref());
    let mut state_notes = Vec::new();
    let mut amis = state_pins(g, c, args.from_state, &mut state_notes).await?;
    amis.extend(parse_ami_flags(&args.amis, c)?);
    let inputs = Inputs {
        amis,
        facts: Facts {
            account_id: args.account_id.clone(),
            partition: region.map(|r| render::cfn::partition_of(r).to_string()),
            cluster_endpoint: args.cluster_endpoint.clone(),
            irsa: None,
        },
    };
    let bundle = render::render(c, &inputs).with_context(|| format!("rendering {}", g.config.display()))?;
    let docs: Vec<&render::Document> =
        bundle.documents.iter().filter(|d| args.only.is_empty() || args.only.contains(&d.kind)).collect();
    let enc = match g.output {
        OutputFormat::Json => Encoding::Json,
        _ => Encoding::Yaml,
    };
    let mut notes: Vec<String> = state_notes.into_iter().chain(bundle.notes.iter().cloned()).collect();
    let mut report = Report { warnings: loaded.warnings.clone(), notes: notes.clone(), ..Default::default() };
    match c.identity.mode {
        IdentityMode::Auto => notes.push(
            "identity.mode auto: the controller's values are rendered for EKS Pod Identity (no role annotation; `up` creates the \
             association). On a cluster without the eks-pod-identity-agent add-on `up` uses IRSA instead: for such a cluster \
             set identity.mode: irsa and render with --account-id"
                .into(),
        ),
        IdentityMode::Irsa if args.account_id.is_some() && region.is_none() => notes.push(
            "the IRSA role ARN assumes partition `aws`: set cluster.region (or --region) for China or GovCloud".into(),
        ),
        _ => {}
    }
    report.notes = notes.clone();
    // What the written or printed documents lack: loud on stderr, at the config field that
    // needs it; `--out` refuses, since a GitOps tool would install the directory as it is.
    for m in bundle.missing.iter().filter(|m| docs.iter().any(|d| d.path == m.document)) {
        if let Some(dir) = &args.out {
            return Err(RenderRefusal::Incomplete { dir: dir.clone(), missing: m.clone() }.into());
        }
        let field = m.field.split('.').fold(FieldPath::root(), |p, k| p.key(k));
        let help = supply(m.flag, None);
        report.warnings.push(loaded.warning_at(&field, &format!("{} {}", m.document, m.message), Some(&help)));
        notes.push(format!("{} {} (pass {})", m.document, m.message, m.flag));
    }
    let mut doc = crate::output::Render {
        api_version: crate::output::ApiVersion::V1Alpha1,
        kind: crate::output::RenderKind::Render,
        documents: Vec::new(),
        out: args.out.clone(),
        files: Vec::new(),
        notes,
    };
    match &args.out {
        None if g.output == OutputFormat::Text => report.stdout = render::stream(&docs, enc),
        None => {
            doc.documents = docs
                .iter()
                .map(|d| crate::output::Rendered { path: d.path.clone(), kind: d.kind, content: d.content.clone() })
                .collect();
        }
        Some(dir) => {
            let files = render::files(&docs, enc);
            for (name, content) in &files {
                let path = dir.join(name);
                write_atomic(&path, content.as_bytes(), 0o644).with_context(|| format!("writing {}", path.display()))?;
            }
            report.notes.push(format!("wrote {} files to {}", files.len(), dir.display()));
            doc.files = files.into_iter().map(|(name, _)| name).collect();
        }
    }
    if g.output != OutputFormat::Text {
        report.stdout = crate::output::encode(&doc, g.output)?;
    }
    Ok(report)
}

pub fn validate(g: &Global) -> anyhow::Result<Report> {
    let loaded = config::load(&g.config)?;
    let summary = format!(
        "{} is valid: {} node class(es), {} node pool(s), Karpenter {}\n",
        g.config.display(),
        loaded.config.node_classes.len(),
        loaded.config.node_pools.len(),
        loaded.config.karpenter.version
    );
    let stdout = match g.output {
        OutputFormat::Text => summary,
        f => crate::output::encode(
            &crate::output::Validation {
                api_version: crate::output::ApiVersion::V1Alpha1,
                kind: crate::output::ValidateKind::Validation,
                valid: true,
                file: g.config.clone(),
                node_classes: loaded.config.node_classes.len(),
                node_pools: loaded.config.node_pools.len(),
                karpenter_version: loaded.config.karpenter.version.clone(),
                warnings: loaded.warnings.clone(),
            },
            f,
        )?,
    };
    Ok(Report { stdout, warnings: loaded.warnings, ..Default::default() })
}
