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

/// Every `karpctl …` command that a message in src/ tells the user to run, as
/// written: in backticks, or a help string that starts with it.
fn commands_in_messages() -> Vec<(String, String)> {
    fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let mut files = Vec::new();
    walk(&repo().join("src"), &mut files);
    let mut out = Vec::new();
    for f in files {
        // Join string continuations (`\` at the end of a line) so a message is one line.
        let mut text = read(&f);
        while let Some(i) = text.find("\\\n") {
            let rest = text[i + 2..].trim_start().to_string();
            text = format!("{}{rest}", &text[..i]);
        }
        for line in text.lines() {
            let mut from = 0;
            while let Some(at) = line[from..].find("karpctl ").map(|i| i + from) {
                from = at + 8;
                let before = line[..at].chars().last();
                let rest = &line[at..];
                let cmd = match before {
                    Some('`') => rest.split('`').next().unwrap(),
                    Some('"') => rest.split(['"', '#']).next().unwrap(),
                    _ if line[..at].ends_with("help: ") => rest.split(['"', '#', ',', ';']).next().unwrap(),
                    _ => continue,
                };
                // A shell pipe or a parenthetical ends the command.
                let cmd = cmd.split(" |").next().unwrap();
                let cmd = cmd.split(" (").next().unwrap();
                let cmd = cmd.trim().trim_end_matches(['.', ')', ':']);
                let second = cmd.split_whitespace().nth(1).unwrap_or("");
                // Prose that happens to start with the name ("karpctl does not …").
                if second.chars().next().is_some_and(|c| c.is_ascii_lowercase()) || second.starts_with('-') || second.starts_with('{') {
                    out.push((f.strip_prefix(repo()).unwrap().display().to_string(), cmd.to_string()));
                }
            }
        }
    }
    out
}

#[test]
fn every_command_a_message_names_exists() {
    use clap::CommandFactory;
    let subs: Vec<String> = karpctl::cli::Cli::command().get_subcommands().map(|s| s.get_name().to_string()).collect();
    let found = commands_in_messages();
    assert!(found.len() > 40, "found only {}: {found:?}", found.len());
    let mut bad = Vec::new();
    // `state show|unlock|pull|push`: each alternative.
    let found: Vec<(String, String)> = found
        .into_iter()
        .flat_map(|(f, cmd)| match cmd.split_whitespace().find(|w| w.contains('|')) {
            Some(alts) => alts.split('|').map(|a| (f.clone(), cmd.replacen(alts, a, 1))).collect::<Vec<_>>(),
            None => vec![(f, cmd)],
        })
        .collect();
    // The command exists when clap takes it, or only misses an argument the message
    // leaves out (`karpctl state push`) or gets a placeholder where a choice goes.
    let accepted = |w: &[String]| match karpctl::cli::Cli::try_parse_from(w) {
        Ok(_) => true,
        Err(e) => {
            use clap::error::ErrorKind::*;
            matches!(e.kind(), MissingRequiredArgument | DisplayHelp | DisplayHelpOnMissingArgumentOrSubcommand)
                || (e.kind() == InvalidValue && w.iter().any(|x| x == "X"))
        }
    };
    for (file, cmd) in &found {
        // Placeholders: `{}` / `{id}` / `<ID>` / `FILE` become a value.
        let words: Vec<String> = cmd
            .split_whitespace()
            .map(|w| if w.starts_with('{') || w.starts_with('<') { "X".to_string() } else { w.to_string() })
            .collect();
        if words.len() < 2 {
            bad.push(format!("{file}: `{cmd}` names no command"));
            continue;
        }
        // A subcommand given by a placeholder (`karpctl {command} --yes`): one of them must take the rest.
        let candidates: Vec<Vec<String>> = if cmd.split_whitespace().nth(1).is_some_and(|w| w.starts_with('{')) {
            subs.iter().map(|s| { let mut w = words.clone(); w[1] = s.clone(); w }).collect()
        } else if !subs.contains(&words[1]) && !words[1].starts_with('-') {
            // Prose after all ("karpctl made these changes"): not a command.
            continue;
        } else {
            vec![words.clone()]
        };
        if !candidates.iter().any(|w| accepted(w)) {
            let e = karpctl::cli::Cli::try_parse_from(&candidates[0]).unwrap_err();
            bad.push(format!("{file}: `{cmd}`: {}", e.to_string().lines().next().unwrap_or_default()));
        }
    }
    assert!(bad.is_empty(), "messages name commands karpctl does not have:\n{}", bad.join("\n"));
    // The guard can fail.
    assert!(karpctl::cli::Cli::try_parse_from(["karpctl", "amis", "--pin"]).is_err());
}

/// The build directory a script settles on in a clean environment (HOME=/h):
/// its own lines that set KARPCTL_CACHE and CARGO_TARGET_DIR, run by bash.
fn script_target_dir(script: &str) -> String {
    let text = read(&repo().join(script));
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| ["KARPCTL_CACHE=", "CARGO_TARGET_DIR=", "export KARPCTL_CACHE=", "export CARGO_TARGET_DIR="].iter().any(|p| l.starts_with(p)))
        .collect();
    assert!(lines.iter().any(|l| l.contains("CARGO_TARGET_DIR=")), "{script} sets no CARGO_TARGET_DIR");
    let o = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!("{}\nprintf %s \"$CARGO_TARGET_DIR\"", lines.join("\n")))
        .env_clear()
        .env("HOME", "/h")
        .output()
        .unwrap();
    String::from_utf8(o.stdout).unwrap()
}

#[test]
fn the_sandbox_cargo_run_the_tests_and_install_build_in_one_directory() {
    let dirs: Vec<(&str, String)> = ["scripts/test.sh", "scripts/sandbox.sh", "install.sh"].iter().map(|s| (*s, script_target_dir(s))).collect();
    for (s, d) in &dirs {
        assert_eq!(d, "/h/.cache/karpctl/target", "{s} builds elsewhere: {dirs:?}");
    }
    // `cargo run` after `source .sandbox/env` uses it too: the env file sets it.
    let sandbox = read(&repo().join("scripts/sandbox.sh"));
    let env_block = sandbox.split("> \"$sb/env.tmp\"").next().unwrap().rsplit("{\n").next().unwrap();
    assert!(env_block.contains("echo \"export CARGO_TARGET_DIR='$CARGO_TARGET_DIR'\""), "the sandbox env does not set the build directory:\n{env_block}");
    let readme = read(&repo().join("README.md"));
    let quick = readme.split("## Quickstart").nth(1).unwrap().split("\n## ").next().unwrap();
    assert!(quick.contains("CARGO_TARGET_DIR") && quick.contains("install.sh"), "README's quickstart says which build is shared");
}
