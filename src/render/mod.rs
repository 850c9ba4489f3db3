/*!
Pure rendering: config (+ resolved AMI pins and facts) → every artifact karpctl
would apply: EC2NodeClasses, NodePools, extra objects, Helm values for the
controller and the device plugin, and the CloudFormation template. No clients,
no I/O; the same inputs always give byte-identical output.
*/

pub mod cfn;
pub mod helm;
pub mod nodes;
pub mod userdata;

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use crate::config::Config;
use crate::model::version::KarpenterVersion;

pub use helm::Facts;
pub use nodes::AmiChoice;

/// What a rendered document is, which decides where it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum DocKind {
    /// Kubernetes manifests (node classes, pools, extra objects).
    Manifest,
    /// Helm values files.
    HelmValues,
    /// The CloudFormation template.
    Template,
}

#[derive(Debug, Clone, Serialize)]
pub struct Document {
    /// Relative file name used with `--out`.
    pub path: String,
    pub kind: DocKind,
    pub content: Value,
}

#[derive(Debug, Clone, Serialize)]
pub struct Bundle {
    pub documents: Vec<Document>,
    pub notes: Vec<String>,
    /// Facts a document needs to work on its own that the inputs lacked.
    #[serde(skip)]
    pub missing: Vec<helm::Missing>,
}

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error(transparent)]
    Cfn(#[from] cfn::CfnError),
}

/// Inputs beyond the config.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    /// AMI pin per node class name.
    pub amis: BTreeMap<String, AmiChoice>,
    pub facts: Facts,
}

fn to_value<T: Serialize>(v: &T) -> Value {
    serde_json::to_value(v).expect("rendered objects serialize")
}

pub fn render(c: &Config, inputs: &Inputs) -> Result<Bundle, RenderError> {
    let version = KarpenterVersion::parse(&c.karpenter.version).expect("validated version");
    let mut notes = Vec::new();
    let mut docs = Vec::new();
    for nc in &c.node_classes {
        let obj = nodes::node_class(c, nc, inputs.amis.get(&nc.name), &mut notes);
        docs.push(Document { path: format!("ec2nodeclass-{}.yaml", nc.name), kind: DocKind::Manifest, content: to_value(&obj) });
    }
    for np in &c.node_pools {
        let obj = nodes::node_pool(c, np);
        docs.push(Document { path: format!("nodepool-{}.yaml", np.name), kind: DocKind::Manifest, content: to_value(&obj) });
    }
    for o in &c.extra_objects {
        let kind = o.get("kind").and_then(Value::as_str).unwrap_or("object").to_lowercase();
        let name = o.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("unnamed");
        let ns = o.pointer("/metadata/namespace").and_then(Value::as_str);
        let path = match ns {
            Some(ns) => format!("extra-{kind}-{ns}-{name}.yaml"),
            None => format!("extra-{kind}-{name}.yaml"),
        };
        docs.push(Document { path, kind: DocKind::Manifest, content: o.clone() });
    }
    let kv = helm::karpenter_values(c, &inputs.facts);
    let missing: Vec<helm::Missing> = helm::karpenter_values_missing(c, &inputs.facts).into_iter().collect();
    docs.push(Document { path: "helm/karpenter-values.yaml".into(), kind: DocKind::HelmValues, content: to_value(&kv) });
    if helm::device_plugin_enabled(c) {
        let dv = helm::device_plugin_values(c);
        docs.push(Document { path: "helm/nvidia-device-plugin-values.yaml".into(), kind: DocKind::HelmValues, content: to_value(&dv) });
    }
    let t = cfn::template(c, version)?;
    docs.push(Document { path: "cloudformation/karpenter.json".into(), kind: DocKind::Template, content: to_value(&t) });
    Ok(Bundle { documents: docs, notes, missing })
}

/// Output encodings for rendered documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Yaml,
    Json,
}

pub fn encode(v: &Value, enc: Encoding) -> String {
    match enc {
        Encoding::Yaml => quote_yaml11(serde_yaml::to_string(v).expect("YAML serializes")),
        Encoding::Json => {
            let mut s = serde_json::to_string_pretty(v).expect("JSON serializes");
            s.push('\n');
            s
        }
    }
}

/// serde_yaml writes YAML 1.2, where `yes`, `on`, `y` or `1_000` are plain
/// strings; kubectl, kustomize and helm read YAML 1.1, where they are booleans
/// and numbers (a label value `yes` would arrive as `true`). Such scalars are
/// single-quoted, so every reader sees the same string.
fn quote_yaml11(text: String) -> String {
    use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
    use yaml_rust2::scanner::{Marker, TScalarStyle};
    struct Spans(Vec<(usize, String)>);
    impl MarkedEventReceiver for Spans {
        fn on_event(&mut self, ev: Event, mark: Marker) {
            if let Event::Scalar(v, TScalarStyle::Plain, _, _) = ev {
                if yaml11_only_non_string(&v) {
                    self.0.push((mark.index(), v));
                }
            }
        }
    }
    let mut spans = Spans(Vec::new());
    if Parser::new_from_str(&text).load(&mut spans, true).is_err() || spans.0.is_empty() {
        return text;
    }
    // Marker indexes count characters (whatever their docs say); accept a byte offset too.
    let starts: Vec<usize> = text.char_indices().map(|(b, _)| b).collect();
    let mut out = text.clone();
    for (at, v) in spans.0.iter().rev() {
        let fits = |b: usize| text.is_char_boundary(b) && text[b..].starts_with(v.as_str());
        let Some(b) = starts.get(*at).copied().filter(|b| fits(*b)).or(Some(*at).filter(|b| *b <= text.len() && fits(*b))) else {
            continue;
        };
        out.replace_range(b..b + v.len(), &format!("'{v}'"));
    }
    out
}

/// Plain scalars YAML 1.1 reads as something other than a string while YAML
/// 1.2 (and so serde_yaml) leaves them plain.
fn yaml11_only_non_string(s: &str) -> bool {
    const WORDS: &[&str] = &["y", "Y", "yes", "Yes", "YES", "n", "N", "no", "No", "NO", "on", "On", "ON", "off", "Off", "OFF", "=", "<<"];
    if WORDS.contains(&s) {
        return true;
    }
    let t = s.strip_prefix(['-', '+']).unwrap_or(s);
    if !t.starts_with(|c: char| c.is_ascii_digit() || c == '.') {
        return false;
    }
    let digits = t.replace('_', "");
    let binary = digits.strip_prefix("0b").is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b == b'0' || b == b'1'));
    let underscored = t.contains('_') && (digits.parse::<f64>().is_ok() || binary || u64::from_str_radix(digits.trim_start_matches("0x"), 16).is_ok());
    let sexagesimal = t.contains(':') && t.split(':').all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit() || b == b'.' || b == b'_'));
    binary || underscored || sexagesimal
}

/// One multi-document stream, each document headed by a `# Source:` comment.
pub fn stream(docs: &[&Document], enc: Encoding) -> String {
    match enc {
        Encoding::Yaml => {
            let mut out = String::new();
            for d in docs {
                out.push_str("---\n# Source: ");
                out.push_str(&d.path);
                out.push('\n');
                out.push_str(&encode(&d.content, enc));
            }
            out
        }
        Encoding::Json => {
            let list: Vec<Value> = docs
                .iter()
                .map(|d| serde_json::json!({"path": d.path, "kind": d.kind, "content": d.content}))
                .collect();
            encode(&Value::Array(list), enc)
        }
    }
}

/// File name and content for every document, plus a kustomization.yaml listing the
/// manifests, for a GitOps directory.
pub fn files(docs: &[&Document], enc: Encoding) -> Vec<(String, String)> {
    let ext = match enc {
        Encoding::Yaml => "yaml",
        Encoding::Json => "json",
    };
    let mut out = Vec::new();
    let mut resources = Vec::new();
    for d in docs {
        let path = match d.kind {
            DocKind::Template => d.path.clone(),
            _ => match d.path.rsplit_once('.') {
                Some((stem, _)) => format!("{stem}.{ext}"),
                None => d.path.clone(),
            },
        };
        let content = match d.kind {
            DocKind::Template => encode(&d.content, Encoding::Json),
            _ => encode(&d.content, enc),
        };
        if d.kind == DocKind::Manifest {
            resources.push(path.clone());
        }
        out.push((path, content));
    }
    if !resources.is_empty() {
        let k = serde_json::json!({
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            "resources": resources,
        });
        out.push(("kustomization.yaml".into(), encode(&k, Encoding::Yaml)));
    }
    out
}
