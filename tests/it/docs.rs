//! README stays true: every config field and every command is documented.

use clap::{CommandFactory, Parser};
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

/// The rows of README's exit-code table: (code, meaning).
fn readme_exit_codes() -> Vec<(i32, String)> {
    let readme = read(&repo().join("README.md"));
    let section = readme.split("### Exit codes").nth(1).expect("README has an exit-code table").split("\n#").next().unwrap();
    section
        .lines()
        .filter(|l| l.starts_with("| `"))
        .map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split(" | ").map(str::trim).collect();
            assert_eq!(cells.len(), 2, "two cells per row: {l}");
            (cells[0].trim_matches('`').parse().unwrap_or_else(|_| panic!("not a code: {l}")), cells[1].to_string())
        })
        .collect()
}

#[test]
fn readme_exit_code_table_is_the_codes_list() {
    let code: Vec<(i32, String)> = karpctl::ops::exit::ALL.iter().map(|(c, m)| (*c, m.to_string())).collect();
    assert_eq!(readme_exit_codes(), code, "README's exit-code table and ops::exit::ALL differ");
    // And the list names every constant main uses.
    use karpctl::ops::exit::*;
    for c in [OK, ERROR, CHANGES, INVALID_CONFIG, USAGE, INTERRUPTED] {
        assert!(ALL.iter().any(|(x, _)| *x == c), "exit code {c} is not in ops::exit::ALL");
    }
    let main = read(&repo().join("src/main.rs"));
    for name in main.split("exit::").skip(1).map(|s| s.split(|c: char| !c.is_ascii_alphanumeric() && c != '_').next().unwrap()) {
        assert!(["OK", "ERROR", "CHANGES", "INVALID_CONFIG", "USAGE", "INTERRUPTED"].contains(&name), "main uses exit::{name}, which the table lacks");
    }
}

#[test]
fn every_flag_and_argument_has_help() {
    fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
        for a in cmd.get_arguments() {
            let id = a.get_id().as_str();
            if id == "help" || id == "version" {
                continue;
            }
            if a.get_help().is_none() && a.get_long_help().is_none() {
                missing.push(format!("{path} {id}"));
            }
        }
        for sub in cmd.get_subcommands() {
            if sub.get_about().is_none() {
                missing.push(format!("{path} {} (no about)", sub.get_name()));
            }
            walk(sub, &format!("{path} {}", sub.get_name()), missing);
        }
    }
    let mut missing = Vec::new();
    walk(&karpctl::cli::Cli::command(), "karpctl", &mut missing);
    assert!(missing.is_empty(), "no help text: {missing:?}");
}

/// Every `karpctl …` command line in a workflow's `run:` scripts, as words.
fn karpctl_lines(workflow: &Value) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for job in workflow["jobs"].as_object().expect("jobs").values() {
        for step in job["steps"].as_array().into_iter().flatten() {
            let Some(script) = step["run"].as_str() else { continue };
            for line in script.lines() {
                let line = line.split(" #").next().unwrap();
                let Some(at) = line.find("karpctl ").filter(|&i| i == 0 || line[..i].ends_with([' ', '(', '!'])) else { continue };
                let cmd = line[at..].split(['>', '|', ';', '&']).next().unwrap();
                out.push(cmd.split_whitespace().map(|w| w.trim_matches(|c| c == '"' || c == '\'').to_string()).collect());
            }
        }
    }
    out
}

#[test]
fn the_ci_example_runs_only_commands_karpctl_accepts() {
    let path = repo().join("examples/ci/github-actions.yml");
    let workflow: Value = serde_yaml::from_str(&read(&path)).expect("the workflow is YAML");
    let lines = karpctl_lines(&workflow);
    let subs: Vec<&str> = lines.iter().map(|l| l[1].as_str()).collect();
    for needed in ["plan", "up"] {
        assert!(subs.contains(&needed), "the example never runs `karpctl {needed}`: {lines:?}");
    }
    for words in &lines {
        if let Err(e) = karpctl::cli::Cli::try_parse_from(words) {
            panic!("{}: `{}` is refused:\n{e}", path.display(), words.join(" "));
        }
    }
    let plan = lines.iter().find(|l| l[1] == "plan").unwrap();
    for flag in ["--detailed-exitcode", "json"] {
        assert!(plan.iter().any(|w| w == flag), "the plan job runs `{}`", plan.join(" "));
    }
    let up = lines.iter().find(|l| l[1] == "up").unwrap();
    assert!(up.iter().any(|w| w == "--yes"), "CI has no terminal to confirm on: `{}`", up.join(" "));
    // The guard itself can fail: a flag clap does not know is caught.
    assert!(karpctl::cli::Cli::try_parse_from(["karpctl", "plan", "--no-such-flag"]).is_err());
    // Credentials come from OIDC, and helm is installed before karpctl runs.
    let text = read(&path);
    assert!(text.contains("aws-actions/configure-aws-credentials") && text.contains("id-token: write"));
    assert!(text.contains("helm"));
}

#[test]
fn docs_output_md_describes_every_document_and_field() {
    use clap::ValueEnum;
    use karpctl::cli::SchemaDocument;
    let doc = read(&repo().join("docs/output.md"));
    let mut missing = Vec::new();
    for d in SchemaDocument::value_variants().iter().filter(|d| **d != SchemaDocument::Config) {
        let name = d.to_possible_value().unwrap().get_name().to_string();
        if !doc.contains(&format!("`{name}`")) {
            missing.push(format!("schema {name}"));
        }
        let schema = karpctl::output::schema(*d);
        for kind in schema["$defs"].as_object().unwrap().iter().filter(|(k, _)| k.ends_with("Kind")).flat_map(|(_, v)| v["enum"].as_array().cloned().unwrap_or_default()) {
            if !doc.contains(&format!("`{}`", kind.as_str().unwrap())) {
                missing.push(format!("kind {kind}"));
            }
        }
        for field in schema["properties"].as_object().unwrap().keys() {
            if !doc.contains(&format!("`{field}`")) {
                missing.push(format!("{name}.{field}"));
            }
        }
    }
    assert!(missing.is_empty(), "docs/output.md lacks: {missing:?}");
}
