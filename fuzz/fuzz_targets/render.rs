//! Whatever the loader accepts must render without a panic, and every rendered
//! document must read back as the same data (no value can break out of the
//! YAML or JSON it is written into); userData must stay TOML for Bottlerocket.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use karpctl::render::{self, Encoding, Inputs};

fuzz_target!(|data: &[u8]| {
    let Ok(loaded) = karpctl::config::parse(Path::new("fuzz.yaml"), data) else { return };
    let bundle = match render::render(&loaded.config, &Inputs::default()) {
        Ok(b) => b,
        // A typed refusal (an oversized IAM policy) is an answer, not a crash.
        Err(_) => return,
    };
    for d in &bundle.documents {
        let yaml = render::encode(&d.content, Encoding::Yaml);
        let back: serde_json::Value = serde_yaml::from_str(&yaml).expect("rendered YAML parses");
        assert_eq!(back, d.content, "{} does not read back as written:\n{yaml}", d.path);
        let json = render::encode(&d.content, Encoding::Json);
        let back: serde_json::Value = serde_json::from_str(&json).expect("rendered JSON parses");
        assert_eq!(back, d.content, "{}: JSON does not read back", d.path);
        if let Some(ud) = d.content.pointer("/spec/userData").and_then(|v| v.as_str()) {
            if d.content.pointer("/spec/amiFamily").and_then(|v| v.as_str()) == Some("Bottlerocket") {
                let t: toml::Table = ud.parse().expect("Bottlerocket userData is TOML");
                assert!(t.keys().all(|k| k == "settings"), "userData has tables besides [settings]: {ud}");
            }
        }
    }
    let docs: Vec<&render::Document> = bundle.documents.iter().collect();
    let stream = render::stream(&docs, Encoding::Yaml);
    let n = serde_yaml::Deserializer::from_str(&stream).count();
    assert_eq!(n, docs.len(), "the YAML stream has {n} documents for {} rendered", docs.len());
    for (name, _) in render::files(&docs, Encoding::Yaml) {
        assert!(!name.starts_with('/') && !name.split('/').any(|s| s == ".." || s.is_empty()), "file name {name:?} escapes the output directory");
    }
});
