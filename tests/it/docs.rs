//! README stays true: every config field and every command is documented.

use clap::CommandFactory;
use serde_json::Value;

use crate::support::*;

fn property_names(schema: &Value, out: &mut std::collections::BTreeSet<String>) {
    match schema {
        Value::Object(m) => {
            if let Some(Value::Object(props)) = m.get("properties") {
                out.extend(props.keys().cloned());
            }
            for v in m.values() {
                property_names(v, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|v| property_names(v, out)),
        _ => {}
    }
}

#[test]
fn readme_documents_every_config_field() {
    let readme = read(&repo().join("README.md"));
    let reference = readme.split("## Config reference").nth(1).expect("README has a config reference").split("\n## ").next().unwrap();
    let mut names = std::collections::BTreeSet::new();
    property_names(&karpctl::config::schema::json_schema(), &mut names);
    assert!(names.len() > 80, "schema walk found only {} fields", names.len());
    let missing: Vec<_> = names.iter().filter(|n| !reference.contains(&format!("`{n}`"))).collect();
    assert!(missing.is_empty(), "README's config reference lacks: {missing:?}");
}

#[test]
fn readme_lists_every_command() {
    let readme = read(&repo().join("README.md"));
    for sub in karpctl::cli::Cli::command().get_subcommands() {
        let name = sub.get_name();
        assert!(readme.contains(&format!("`karpctl {name}")), "README does not list `karpctl {name}`");
    }
}

#[test]
fn ci_runs_the_readme_test_command() {
    let readme = read(&repo().join("README.md"));
    let tests = readme.split("## Tests").nth(1).expect("README has a Tests section");
    let cmd = tests.split("```sh\n").nth(1).and_then(|s| s.lines().next()).expect("a test command").trim().to_string();
    let ci = read(&repo().join(".ci/run"));
    assert!(ci.contains(&cmd.replace("./", "")), ".ci/run does not call the README test command {cmd:?}");
}
