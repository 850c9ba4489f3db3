/*!
EC2NodeClass userData for each AMI family, built from typed parts: a TOML table
for Bottlerocket (sysctls and the built-in NVIDIA plugin's sharing settings), and
a MIME multipart archive of shell scripts and nodeadm NodeConfig documents for
AL2023/AL2 (karpenter-facts §3). Karpenter appends its own bootstrap part; the
MIME boundary is chosen so that no user content can end a part early.
*/

use std::collections::BTreeMap;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::config::types::{AmiFamily, Config, NodeClass, Variant};
use crate::config::validate::is_mime;

/// A rendered userData string plus notes for the user.
pub struct Rendered {
    pub user_data: Option<String>,
    pub notes: Vec<String>,
}

pub fn render(c: &Config, nc: &NodeClass) -> Rendered {
    match nc.ami_family {
        AmiFamily::Bottlerocket => bottlerocket(c, nc),
        AmiFamily::Al2023 | AmiFamily::Al2 => linux(nc),
    }
}

/// Sets `value` at `path` in a TOML table, creating tables on the way. Returns
/// the previous value when it differed.
fn set(root: &mut toml::Table, path: &[&str], value: toml::Value) -> Option<toml::Value> {
    let (last, parents) = path.split_last().expect("non-empty path");
    let mut cur = root;
    for p in parents {
        let entry = cur.entry((*p).to_string()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if !entry.is_table() {
            *entry = toml::Value::Table(toml::Table::new());
        }
        cur = entry.as_table_mut().expect("just made a table");
    }
    match cur.insert((*last).to_string(), value.clone()) {
        Some(old) if old != value => Some(old),
        _ => None,
    }
}

fn bottlerocket(c: &Config, nc: &NodeClass) -> Rendered {
    let mut notes = Vec::new();
    let u = &nc.user_data;
    // Validation guarantees raw parses as TOML for Bottlerocket classes.
    let mut root: toml::Table = u.raw.as_deref().and_then(|r| r.parse().ok()).unwrap_or_default();
    if let Some(n) = u.user_namespaces {
        if let Some(old) = set(&mut root, &["settings", "kernel", "sysctl", "user.max_user_namespaces"], toml::Value::String(n.to_string())) {
            notes.push(format!(
                "node class {}: userNamespaces ({n}) overrides user.max_user_namespaces = {old} from userData.raw",
                nc.name
            ));
        }
    }
    if nc.variant == Variant::Nvidia {
        if let Some(ts) = c.device_plugin.sharing.as_ref().and_then(|s| s.time_slicing.as_ref()) {
            let base = ["settings", "kubelet-device-plugins", "nvidia"];
            set(&mut root, &[base[0], base[1], base[2], "device-sharing-strategy"], toml::Value::String("time-slicing".into()));
            let ts_path = [base[0], base[1], base[2], "time-slicing"];
            let mut with = |k: &'static str, v: toml::Value| {
                let mut p = ts_path.to_vec();
                p.push(k);
                set(&mut root, &p, v);
            };
            with("replicas", toml::Value::Integer(ts.replicas));
            with("rename-by-default", toml::Value::Boolean(ts.rename_by_default));
            with("fail-requests-greater-than-one", toml::Value::Boolean(ts.fail_requests_greater_than_one));
            notes.push(format!(
                "node class {}: GPU time-slicing is configured in Bottlerocket's built-in device plugin (needs Bottlerocket 1.25 or later)",
                nc.name
            ));
        }
    }
    let user_data = if root.is_empty() { None } else { Some(toml::to_string(&root).expect("TOML table serializes")) };
    Rendered { user_data, notes }
}

/// One part of a MIME multipart userData document.
struct Part {
    content_type: &'static str,
    body: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct NodeConfig {
    api_version: &'static str,
    kind: &'static str,
    spec: NodeConfigSpec,
}

#[derive(Serialize)]
struct NodeConfigSpec {
    containerd: ContainerdConfig,
}

#[derive(Serialize)]
struct ContainerdConfig {
    config: String,
}

fn user_namespaces_script(n: u32) -> String {
    format!(
        "#!/bin/bash\n\
         # karpctl: user namespaces for rootless BuildKit\n\
         set -euo pipefail\n\
         echo 'user.max_user_namespaces = {n}' > /etc/sysctl.d/90-karpctl-userns.conf\n\
         sysctl -w user.max_user_namespaces={n}\n"
    )
}

fn soci_script(version: &str) -> String {
    // The version is validated as digits and dots, so it is safe inside the script.
    format!(
        r#"#!/bin/bash
# karpctl: SOCI snapshotter {version} for lazy-loading container images
set -euo pipefail
case "$(uname -m)" in
  x86_64) arch=amd64 ;;
  aarch64) arch=arm64 ;;
  *) echo "karpctl soci: unsupported architecture $(uname -m)" >&2; exit 1 ;;
esac
dnf install -y fuse
modprobe fuse
echo fuse > /etc/modules-load.d/fuse.conf
tmp=$(mktemp -d)
curl -fsSL --retry 5 -o "$tmp/soci.tar.gz" \
  "https://github.com/awslabs/soci-snapshotter/releases/download/v{version}/soci-snapshotter-{version}-linux-$arch.tar.gz"
tar -C /usr/local/bin -xzf "$tmp/soci.tar.gz" soci soci-snapshotter-grpc
rm -rf "$tmp"
mkdir -p /etc/soci-snapshotter-grpc /var/lib/soci-snapshotter-grpc
cat > /etc/systemd/system/soci-snapshotter.service <<'UNIT'
[Unit]
Description=SOCI snapshotter (installed by karpctl)
Before=containerd.service
[Service]
Type=notify
ExecStart=/usr/local/bin/soci-snapshotter-grpc --address /run/soci-snapshotter-grpc/soci-snapshotter-grpc.sock
Restart=always
[Install]
WantedBy=multi-user.target
UNIT
systemctl daemon-reload
systemctl enable --now soci-snapshotter
"#
    )
}

fn soci_nodeconfig() -> String {
    // containerd's config is TOML; build it as a table, not as text.
    let mut t = toml::Table::new();
    set(&mut t, &["proxy_plugins", "soci", "type"], toml::Value::String("snapshot".into()));
    set(
        &mut t,
        &["proxy_plugins", "soci", "address"],
        toml::Value::String("/run/soci-snapshotter-grpc/soci-snapshotter-grpc.sock".into()),
    );
    set(&mut t, &["plugins", "io.containerd.grpc.v1.cri", "containerd", "snapshotter"], toml::Value::String("soci".into()));
    set(&mut t, &["plugins", "io.containerd.grpc.v1.cri", "containerd", "disable_snapshot_annotations"], toml::Value::Boolean(false));
    let nc = NodeConfig {
        api_version: "node.eks.aws/v1alpha1",
        kind: "NodeConfig",
        spec: NodeConfigSpec { containerd: ContainerdConfig { config: toml::to_string(&t).expect("TOML serializes") } },
    };
    serde_yaml::to_string(&nc).expect("NodeConfig serializes")
}

fn is_nodeconfig(raw: &str) -> bool {
    serde_yaml::from_str::<BTreeMap<String, serde_yaml::Value>>(raw)
        .ok()
        .and_then(|m| m.get("apiVersion").and_then(|v| v.as_str().map(|s| s.starts_with("node.eks.aws/"))))
        .unwrap_or(false)
}

fn linux(nc: &NodeClass) -> Rendered {
    let u = &nc.user_data;
    let mut parts = Vec::new();
    if let Some(n) = u.user_namespaces {
        parts.push(Part { content_type: "text/x-shellscript; charset=\"us-ascii\"", body: user_namespaces_script(n) });
    }
    if let Some(s) = &u.soci {
        parts.push(Part { content_type: "text/x-shellscript; charset=\"us-ascii\"", body: soci_script(&s.version) });
        parts.push(Part { content_type: "application/node.eks.aws", body: soci_nodeconfig() });
    }
    match &u.raw {
        // Validation refuses a MIME raw together with generated parts.
        Some(raw) if is_mime(raw) || parts.is_empty() => {
            return Rendered { user_data: Some(raw.clone()), notes: vec![] };
        }
        Some(raw) => {
            let ct = if is_nodeconfig(raw) { "application/node.eks.aws" } else { "text/x-shellscript; charset=\"us-ascii\"" };
            parts.push(Part { content_type: ct, body: raw.clone() });
        }
        None => {}
    }
    if parts.is_empty() {
        return Rendered { user_data: None, notes: vec![] };
    }
    Rendered { user_data: Some(mime(&parts)), notes: vec![] }
}

/// A boundary no part contains, derived from the content so output is stable.
fn boundary(parts: &[Part]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.body.as_bytes());
    }
    let digest = h.finalize();
    let mut n = 0u32;
    loop {
        let hex: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
        let b = format!("karpctl-{hex}-{n}");
        if !parts.iter().any(|p| p.body.contains(&b)) {
            return b;
        }
        n += 1;
    }
}

fn mime(parts: &[Part]) -> String {
    let b = boundary(parts);
    let mut out = format!("MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"{b}\"\n\n");
    for p in parts {
        out.push_str(&format!("--{b}\nContent-Type: {}\n\n", p.content_type));
        out.push_str(&p.body);
        if !p.body.ends_with('\n') {
            out.push('\n');
        }
    }
    out.push_str(&format!("--{b}--\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boundary_never_occurs_in_a_part() {
        let evil = Part { content_type: "text/x-shellscript", body: String::new() };
        let b0 = boundary(std::slice::from_ref(&evil));
        let crafted = Part { content_type: "text/x-shellscript", body: format!("echo\n--{b0}--\n") };
        let b1 = boundary(std::slice::from_ref(&crafted));
        assert!(!crafted.body.contains(&b1));
        let doc = mime(&[crafted]);
        assert_eq!(doc.matches(&format!("--{b1}--")).count(), 1);
    }

    #[test]
    fn toml_set_reports_overrides() {
        let mut t: toml::Table = "[settings.kernel.sysctl]\n\"user.max_user_namespaces\" = \"10\"\n".parse().unwrap();
        let old = set(&mut t, &["settings", "kernel", "sysctl", "user.max_user_namespaces"], toml::Value::String("16384".into()));
        assert_eq!(old, Some(toml::Value::String("10".into())));
        assert!(toml::to_string(&t).unwrap().contains("\"user.max_user_namespaces\" = \"16384\""));
    }
}
