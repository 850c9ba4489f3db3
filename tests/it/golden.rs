//! Golden files for every preset's render output. Regenerate with
//! `KARPCTL_BLESS=1 cargo test --test it golden` and review the diff.

use karpctl::render::Inputs;

use crate::support::*;

#[test]
fn presets_match_golden_files() {
    let bless = std::env::var_os("KARPCTL_BLESS").is_some();
    let mut failures = Vec::new();
    for p in presets() {
        let name = preset_name(p);
        let c = load_preset(p);
        let got = render_stream(&c, &pinned_inputs(&c));
        let path = repo().join(format!("tests/golden/{name}.yaml"));
        if bless {
            std::fs::write(&path, &got).unwrap();
            continue;
        }
        let want = read(&path);
        if got != want {
            let diff = similar_lines(&want, &got);
            failures.push(format!("{name}: render differs from {}:\n{diff}", path.display()));
        }
    }
    assert!(failures.is_empty(), "{}\nrun with KARPCTL_BLESS=1 to accept", failures.join("\n"));
}

fn similar_lines(a: &str, b: &str) -> String {
    let mut out = String::new();
    for (i, (x, y)) in a.lines().zip(b.lines()).enumerate() {
        if x != y {
            out.push_str(&format!("line {}:\n- {x}\n+ {y}\n", i + 1));
            if out.len() > 2000 {
                break;
            }
        }
    }
    if a.lines().count() != b.lines().count() {
        out.push_str(&format!("line counts differ: {} vs {}\n", a.lines().count(), b.lines().count()));
    }
    out
}

#[test]
fn dynamo_on_bottlerocket_sets_user_namespaces_in_toml() {
    // The Dynamo write-up's second option: Bottlerocket with user namespaces.
    let mut c = load_preset(karpctl::cli::Preset::Dynamo);
    for nc in &mut c.node_classes {
        nc.ami_family = karpctl::config::types::AmiFamily::Bottlerocket;
    }
    let got = render_stream(&c, &pinned_inputs(&c));
    let path = repo().join("tests/golden/dynamo-bottlerocket.yaml");
    if std::env::var_os("KARPCTL_BLESS").is_some() {
        std::fs::write(&path, &got).unwrap();
    }
    assert_eq!(got, read(&path));
    assert_eq!(got.matches("\"user.max_user_namespaces\" = \"16384\"").count(), 2);
    assert!(got.contains("alias: bottlerocket@v1.46.0"));
    // Bottlerocket NVIDIA ships its own device plugin: no Helm values for it.
    assert!(!got.contains("nvidia-device-plugin-values"));
}

#[test]
fn render_is_byte_identical_across_runs() {
    for p in presets() {
        let c = load_preset(p);
        for inputs in [Inputs::default(), pinned_inputs(&c)] {
            let a = render_stream(&c, &inputs);
            // A fresh parse of the same file must give the same bytes too.
            let c2 = load_preset(p);
            let b = render_stream(&c2, &inputs);
            assert_eq!(a, b, "preset {} renders differently across runs", preset_name(p));
        }
    }
}

#[test]
fn unpinned_classes_render_latest_alias_with_a_note() {
    let c = load_preset(karpctl::cli::Preset::Falkordb);
    let b = karpctl::render::render(&c, &Inputs::default()).unwrap();
    let nc = b.documents.iter().find(|d| d.path == "ec2nodeclass-default.yaml").unwrap();
    assert_eq!(nc.content["spec"]["amiSelectorTerms"][0]["alias"], "al2023@latest");
    assert!(b.notes.iter().any(|n| n.contains("node class default") && n.contains("al2023@latest")), "{:?}", b.notes);
}
