//! The binary as a user runs it: exit codes, output streams, files written.

use std::path::Path;
use std::process::{Command, Output};

use crate::support::*;

pub(crate) fn karpctl(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_karpctl"))
        .args(args)
        .current_dir(dir)
        // Nothing here may reach AWS: point every client at a closed port.
        .env("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
        .env("NO_COLOR", "1")
        .env_remove("KARPCTL_CONFIG")
        .output()
        .expect("karpctl runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn init_then_validate_then_render_to_a_gitops_directory() {
    let d = scratch("init");
    let o = karpctl(&d, &["init", "--preset", "dev-gpu", "--cluster", "prod-1"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let cfg = std::fs::read_to_string(d.join("karpctl.yaml")).unwrap();
    assert!(cfg.contains("name: prod-1") && !cfg.contains("my-cluster"));

    let again = karpctl(&d, &["init", "--preset", "dev-gpu"]);
    assert_eq!(again.status.code(), Some(1), "init must not overwrite");
    assert!(text(&again.stderr).contains("--force"));

    let v = karpctl(&d, &["validate"]);
    assert!(v.status.success(), "{}", text(&v.stderr));

    // dev-gpu uses IRSA: the values need the account id (without it, --out refuses; tests/it/validators.rs).
    let r = karpctl(&d, &["render", "--out", "out", "--ami", "gpu=al2023@v20250915", "--account-id", "111122223333"]);
    assert!(r.status.success(), "{}", text(&r.stderr));
    let k = std::fs::read_to_string(d.join("out/kustomization.yaml")).unwrap();
    for f in ["ec2nodeclass-default.yaml", "ec2nodeclass-gpu.yaml", "nodepool-gpu-inference.yaml"] {
        assert!(k.contains(f), "kustomization lacks {f}:\n{k}");
        assert!(d.join("out").join(f).exists());
    }
    assert!(!k.contains("helm/"), "values files are not kustomize resources");
    let gpu = std::fs::read_to_string(d.join("out/ec2nodeclass-gpu.yaml")).unwrap();
    assert!(gpu.contains("alias: al2023@v20250915"), "{gpu}");
    let t: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(d.join("out/cloudformation/karpenter.json")).unwrap()).unwrap();
    assert!(t["Resources"]["KarpenterNodeRole"].is_object());
}

#[test]
fn invalid_config_exits_3_with_positions_and_json() {
    let d = scratch("invalid");
    std::fs::write(d.join("karpctl.yaml"), "apiVersion: karpctl.io/v1alpha1\ncluster:\n  name: x\nnodePools:\n  - name: a\n    nodeClass: missing\n    weight: 0\n").unwrap();
    let o = karpctl(&d, &["render"]);
    assert_eq!(o.status.code(), Some(3));
    let err = text(&o.stderr);
    assert!(err.contains("nodePools[0].weight") && err.contains("karpctl.yaml:7:"), "{err}");
    assert!(err.contains("nodePools[0].nodeClass") && err.contains("karpctl.yaml:6:"), "{err}");
    assert!(o.stdout.is_empty(), "nothing rendered on error");

    let j = karpctl(&d, &["render", "-o", "json"]);
    assert_eq!(j.status.code(), Some(3));
    let v: serde_json::Value = serde_json::from_slice(&j.stdout).expect("JSON error document");
    let fields: Vec<&str> = v["error"]["diagnostics"].as_array().unwrap().iter().map(|d| d["field"].as_str().unwrap()).collect();
    assert!(fields.contains(&"nodePools[0].weight"), "{fields:?}");
}

#[test]
fn rollback_flags_and_a_bad_config_fail_before_any_call() {
    let d = scratch("rollback-cli");
    let o = karpctl(&d, &["plan", "--purge"]);
    assert_eq!(o.status.code(), Some(64), "--purge plans a rollback only: {}", text(&o.stderr));
    let h = karpctl(&d, &["rollback", "--help"]);
    for flag in ["--dry-run", "--purge", "--force", "--delete-crds", "--wait-timeout"] {
        assert!(text(&h.stdout).contains(flag), "rollback --help lacks {flag}");
    }
    std::fs::write(d.join("karpctl.yaml"), "apiVersion: karpctl.io/v1alpha1\ncluster: {name: c}\nrollback:\n  nodegroups:\n    - {name: ng, minSize: 3, desiredSize: 1, maxSize: 2}\n").unwrap();
    for cmd in [vec!["rollback"], vec!["rollback", "--dry-run"], vec!["plan", "--rollback"]] {
        let o = karpctl(&d, &cmd);
        assert_eq!(o.status.code(), Some(3), "{cmd:?}: {}", text(&o.stderr));
        assert!(text(&o.stderr).contains("rollback.nodegroups[0].desiredSize"), "{cmd:?}: {}", text(&o.stderr));
    }
    assert!(!d.join(".karpctl").exists(), "no state, no lock");
}

#[test]
fn usage_errors_and_help() {
    let d = scratch("usage");
    let o = karpctl(&d, &["render", "--no-such-flag"]);
    assert_eq!(o.status.code(), Some(64));
    let h = karpctl(&d, &["--help"]);
    assert!(h.status.success());
    for sub in ["up", "plan", "render", "status", "verify", "amis", "init", "doctor", "rollback", "state", "completions"] {
        assert!(text(&h.stdout).contains(sub), "help lacks {sub}");
    }
    for shell in ["bash", "zsh", "fish"] {
        let c = karpctl(&d, &["completions", shell]);
        assert!(c.status.success() && text(&c.stdout).contains("karpctl"), "{shell}");
    }
}

#[test]
fn render_json_stream_and_only_filter() {
    let d = scratch("json");
    let cfg = repo().join("examples/default.yaml");
    let o = karpctl(&d, &["render", "-c", cfg.to_str().unwrap(), "-o", "json", "--only", "manifest"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["kind"], "Render");
    let kinds: Vec<&str> = v["documents"].as_array().unwrap().iter().map(|d| d["content"]["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["EC2NodeClass", "EC2NodeClass", "NodePool", "NodePool"]);
    let t = karpctl(&d, &["render", "-c", cfg.to_str().unwrap(), "--only", "template"]);
    assert!(text(&t.stdout).contains("AWSTemplateFormatVersion"));
    assert!(!text(&t.stdout).contains("kind: NodePool"));
}

#[test]
fn the_config_schema_is_printable_json() {
    let d = scratch("schema");
    let o = karpctl(&d, &["schema"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["properties"]["nodePools"].is_object());
}

#[test]
fn status_and_state_work_on_a_fresh_directory_and_foreign_state_is_refused() {
    let d = scratch("engine-cmds");
    std::fs::copy(repo().join("examples/falkordb.yaml"), d.join("karpctl.yaml")).unwrap();
    let s = karpctl(&d, &["status"]);
    assert!(s.status.success());
    assert!(text(&s.stdout).contains(".karpctl/my-cluster.state.json") && text(&s.stdout).contains("No state yet"), "{}", text(&s.stdout));
    let show = karpctl(&d, &["state", "show"]);
    assert_eq!(show.status.code(), Some(1));
    assert!(text(&show.stderr).contains("no state"), "{}", text(&show.stderr));
    // A foreign cluster's state file is refused, and nothing is written over it.
    std::fs::create_dir_all(d.join(".karpctl")).unwrap();
    let foreign = serde_json::json!({"version": 1, "lineage": "6b1c3c1e-0000-4000-8000-000000000000", "serial": 3,
        "tool_version": "0.1.0", "cluster": "other", "region": null, "steps": {}});
    let path = d.join(".karpctl/my-cluster.state.json");
    std::fs::write(&path, serde_json::to_string(&foreign).unwrap()).unwrap();
    let before = std::fs::read(&path).unwrap();
    // Refused before any AWS call (the endpoint here is a closed port).
    for cmd in [&["plan"][..], &["up"][..], &["status"][..]] {
        let r = karpctl(&d, cmd);
        assert_eq!(r.status.code(), Some(1), "{cmd:?}");
        assert!(text(&r.stderr).contains("other"), "{cmd:?}: {}", text(&r.stderr));
    }
    assert_eq!(std::fs::read(&path).unwrap(), before);
    assert!(!d.join(".karpctl/my-cluster.state.json.lock").exists(), "the lock is released after a refusal");
}

/// Near-miss spellings of a long flag's name: a letter left out, doubled or
/// swapped with its neighbour, the hyphens dropped or made underscores, the end cut off.
fn near_misses(name: &str) -> Vec<String> {
    let c: Vec<char> = name.chars().collect();
    let mut out = std::collections::BTreeSet::new();
    for i in 0..c.len() {
        let mut d = c.clone();
        d.remove(i);
        out.insert(d.iter().collect::<String>());
        let mut dup = c.clone();
        dup.insert(i, c[i]);
        out.insert(dup.iter().collect::<String>());
        if i + 1 < c.len() {
            let mut t = c.clone();
            t.swap(i, i + 1);
            out.insert(t.iter().collect::<String>());
        }
    }
    out.insert(name.replace('-', ""));
    out.insert(name.replace('-', "_"));
    if c.len() > 4 {
        out.insert(c[..c.len() - 2].iter().collect());
    }
    out.remove(name);
    out.into_iter().filter(|s| !s.is_empty()).collect()
}

/// Every command path (`[]`, `["up"]`, `["state", "push"]` …) with its built command.
fn command_paths(cmd: &clap::Command, path: Vec<String>, out: &mut Vec<(Vec<String>, clap::Command)>) {
    out.push((path.clone(), cmd.clone()));
    for sub in cmd.get_subcommands() {
        let mut p = path.clone();
        p.push(sub.get_name().to_string());
        command_paths(sub, p, out);
    }
}

#[test]
fn no_typo_of_any_flag_suggests_a_destructive_flag() {
    use clap::CommandFactory;
    use karpctl::cli::DESTRUCTIVE_FLAGS;
    let mut root = karpctl::cli::Cli::command();
    root.build();
    let mut paths = Vec::new();
    command_paths(&root, Vec::new(), &mut paths);
    let longs = |cmd: &clap::Command| -> std::collections::BTreeSet<String> {
        cmd.get_arguments().filter_map(|a| a.get_long()).map(|l| format!("--{l}")).collect()
    };
    // The list is decided by what the flags do: any flag whose help says it deletes,
    // terminates, replaces, overwrites, approves, takes over or skips the preflight is in it.
    for (path, cmd) in &paths {
        for a in cmd.get_arguments() {
            let (Some(long), Some(h)) = (a.get_long(), a.get_help()) else { continue };
            let h = h.to_string().to_lowercase();
            let risky = ["delete", "terminate", "replace", "overwrite", "approve", "take over", "preflight"].iter().any(|w| h.contains(w));
            let flag = format!("--{long}");
            if risky && !h.starts_with("with --rollback") {
                assert!(DESTRUCTIVE_FLAGS.contains(&flag.as_str()), "karpctl {} {flag} ({h}) is destructive but not in DESTRUCTIVE_FLAGS", path.join(" "));
            }
        }
    }
    let all: std::collections::BTreeSet<String> = paths.iter().flat_map(|(_, c)| longs(c)).collect();
    let mut checked = 0;
    for (path, cmd) in &paths {
        let own = longs(cmd);
        // Near misses of the command's own flags, and other commands' flags as they are.
        let tries: std::collections::BTreeSet<String> =
            own.iter().flat_map(|f| near_misses(&f[2..]).into_iter().map(|t| format!("--{t}"))).chain(all.iter().cloned()).collect();
        {
            for typo in tries {
                if own.contains(&typo) {
                    continue;
                }
                let mut args = vec!["karpctl".to_string()];
                args.extend(path.iter().cloned());
                args.push(typo.clone());
                let os: Vec<std::ffi::OsString> = args.iter().map(Into::into).collect();
                let Err(e) = karpctl::cli::matches_from(&root, &os) else { continue };
                let text = e.to_string();
                // Not as a tip, and not in the usage line clap writes the suggestion into.
                for d in DESTRUCTIVE_FLAGS.iter().filter(|d| **d != typo) {
                    let said = text.split(|c: char| c.is_whitespace() || c == '\'').any(|w| w == *d);
                    assert!(!said, "`{}` is answered with the destructive {d}:\n{text}", args.join(" "));
                }
                checked += 1;
            }
        }
    }
    assert!(checked > 3000, "only {checked} typos checked");
    eprintln!("{checked} typos checked");
    // The guard can fail: clap alone answers these with a destructive flag.
    use clap::Parser;
    for (args, flag) in [(["karpctl", "up", "--prnue"], "--prune"), (["karpctl", "rollback", "--purg"], "--purge")] {
        let raw = karpctl::cli::Cli::try_parse_from(args).unwrap_err().to_string();
        assert!(raw.contains(&format!("'{flag}'")), "clap's own suggestion changed: {raw}");
        assert!(!karpctl::cli::parse_from(args).unwrap_err().to_string().contains(flag));
    }
    // And the safe flag a typo was meant for is still offered.
    let d = scratch("typo");
    let o = karpctl(&d, &["up", "--dryrun"]);
    assert_eq!(o.status.code(), Some(64));
    assert!(text(&o.stderr).contains("a similar argument exists: '--dry-run'"), "{}", text(&o.stderr));
}

#[test]
fn up_help_lists_its_own_flags_apart_from_the_global_ones() {
    let d = scratch("help-headings");
    let h = text(&karpctl(&d, &["up", "--help"]).stdout);
    let (own, global) = h.split_once("Global options:").unwrap_or_else(|| panic!("no Global options heading:\n{h}"));
    for flag in ["--dry-run", "--refresh", "--update-amis", "--prune", "--skip-preflight", "--force-conflicts", "--wait-timeout", "--target"] {
        assert!(own.contains(flag) && !global.contains(flag), "{flag} belongs to up's own options:\n{h}");
    }
    for flag in ["--config", "--region", "--profile", "--endpoint-url", "--kubeconfig", "--context", "--output", "--color", "--yes", "--lock-timeout", "--verbose"] {
        assert!(global.contains(flag) && !own.contains(flag), "{flag} belongs under Global options:\n{h}");
    }
}

#[test]
fn up_dry_run_is_plan() {
    let d = scratch("up-dry-run");
    std::fs::copy(repo().join("examples/falkordb.yaml"), d.join("karpctl.yaml")).unwrap();
    // A state of another cluster: both refuse it the same way before any AWS call.
    std::fs::create_dir_all(d.join(".karpctl")).unwrap();
    let foreign = serde_json::json!({"version": 1, "lineage": "6b1c3c1e-0000-4000-8000-000000000000", "serial": 3,
        "tool_version": "0.1.0", "cluster": "other", "region": null, "steps": {}});
    std::fs::write(d.join(".karpctl/my-cluster.state.json"), foreign.to_string()).unwrap();
    let plan = karpctl(&d, &["plan", "-o", "json"]);
    let dry = karpctl(&d, &["up", "--dry-run", "-o", "json"]);
    assert_eq!(plan.status.code(), Some(1));
    assert_eq!((dry.status.code(), text(&dry.stdout)), (plan.status.code(), text(&plan.stdout)));
    assert!(!d.join(".karpctl/my-cluster.state.json.lock").exists(), "a dry run takes no lock");
    let o = karpctl(&d, &["up", "--detailed-exitcode"]);
    assert_eq!(o.status.code(), Some(64), "--detailed-exitcode needs --dry-run: {}", text(&o.stderr));
}

/// A state file as `up` writes it, with AMI pins recorded for `pins`.
fn state_with_pins(cluster: &str, pins: serde_json::Value) -> String {
    serde_json::json!({"version": 1, "lineage": "6b1c3c1e-0000-4000-8000-000000000001", "serial": 4, "tool_version": "0.1.0",
        "cluster": cluster, "region": "us-west-2", "steps": {"amis/pins": {"kind": "ami-pins", "fingerprint": "x", "status": "done",
        "inputs": {}, "outputs": {"pins": pins}, "error": null, "started_at": null, "finished_at": null}}})
    .to_string()
}

#[test]
fn every_path_in_the_config_resolves_from_the_config_file() {
    // Every path-typed field of the config is known and documented as relative to the config file.
    let schema = karpctl::config::schema::json_schema();
    let mut found = Vec::new();
    for (def, body) in schema["$defs"].as_object().unwrap() {
        for (prop, p) in body["properties"].as_object().into_iter().flatten() {
            if prop.to_lowercase().ends_with("path") {
                let doc = p["description"].as_str().unwrap_or_default().replace('\n', " ");
                assert!(doc.contains("relative to the config file"), "{def}.{prop}: {doc}");
                found.push((def.clone(), prop.clone()));
            }
        }
    }
    let known: Vec<(String, String)> = karpctl::config::PATH_FIELDS.iter().map(|(d, p)| (d.to_string(), p.to_string())).collect();
    found.sort();
    assert_eq!(found, known, "a path field is missing from config::PATH_FIELDS");

    // From another working directory, `status` finds the state beside the config.
    let d = scratch("paths");
    std::fs::create_dir_all(d.join("conf/state")).unwrap();
    std::fs::create_dir_all(d.join("elsewhere")).unwrap();
    let cfg = read(&repo().join("examples/falkordb.yaml")) + "\nstate:\n  path: state/prod.json\n";
    std::fs::write(d.join("conf/karpctl.yaml"), cfg).unwrap();
    std::fs::write(d.join("conf/state/prod.json"), state_with_pins("my-cluster", serde_json::json!({}))).unwrap();
    let o = karpctl(&d.join("elsewhere"), &["status", "-c", "../conf/karpctl.yaml", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|_| panic!("{}", text(&o.stderr)));
    assert_eq!(v["state"]["serial"], 4, "the state beside the config: {v}");
    assert!(v["backend"].as_str().unwrap().contains("conf/state/prod.json"), "{v}");
    assert!(!d.join("elsewhere/state").exists());
    // The default path too: .karpctl/ beside the config file.
    let mut cfg = read(&repo().join("examples/falkordb.yaml"));
    cfg.push('\n');
    std::fs::write(d.join("conf/karpctl.yaml"), cfg).unwrap();
    let o = karpctl(&d.join("elsewhere"), &["status", "-c", "../conf/karpctl.yaml"]);
    assert!(text(&o.stdout).contains("conf/.karpctl/my-cluster.state.json"), "{}", text(&o.stdout));
}

#[test]
fn render_uses_the_pins_the_state_records() {
    let d = scratch("render-pins");
    std::fs::copy(repo().join("examples/falkordb.yaml"), d.join("karpctl.yaml")).unwrap();
    let c = karpctl::config::load(&d.join("karpctl.yaml")).unwrap().config;
    let classes: Vec<String> = c.node_classes.iter().map(|n| n.name.clone()).collect();
    let first = &classes[0];
    let before = karpctl(&d, &["render", "--only", "manifest"]);
    assert!(text(&before.stdout).contains("@latest"), "no state: unpinned");
    assert!(text(&before.stderr).contains("`karpctl up` records a pin per class"), "{}", text(&before.stderr));

    std::fs::create_dir_all(d.join(".karpctl")).unwrap();
    let pins: serde_json::Map<String, serde_json::Value> =
        classes.iter().map(|n| (n.clone(), serde_json::json!({"kind": "alias", "value": "al2023@v20251103"}))).collect();
    std::fs::write(d.join(".karpctl/my-cluster.state.json"), state_with_pins("my-cluster", pins.into())).unwrap();
    let o = karpctl(&d, &["render", "--only", "manifest"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    assert!(out.contains("alias: al2023@v20251103") && !out.contains("@latest"), "the state's pins:\n{out}");
    assert!(text(&o.stderr).contains("AMI pins from the state at"), "{}", text(&o.stderr));
    // --ami still wins for its class.
    let o = karpctl(&d, &["render", "--only", "manifest", "--ami", &format!("{first}=al2023@v20250101")]);
    assert!(text(&o.stdout).contains("alias: al2023@v20250101"), "{}", text(&o.stdout));
    // A state it cannot use does not stop an offline render; it says so.
    std::fs::write(d.join(".karpctl/my-cluster.state.json"), "{not json").unwrap();
    let o = karpctl(&d, &["render", "--only", "manifest"]);
    assert!(o.status.success() && text(&o.stdout).contains("@latest"), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("is not usable"), "{}", text(&o.stderr));
    // --from-state insists on a state.
    std::fs::remove_file(d.join(".karpctl/my-cluster.state.json")).unwrap();
    let o = karpctl(&d, &["render", "--from-state"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("no state at") && text(&o.stderr).contains("`karpctl up` creates it"), "{}", text(&o.stderr));
}

/// karpctl with no AWS settings at all (no credentials, no endpoint override), so
/// the SDK's own chain is what it finds; `extra` adds to that environment.
fn bare(dir: &Path, args: &[&str], extra: &[(&str, &str)]) -> (Output, std::time::Duration) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_karpctl"));
    cmd.args(args).current_dir(dir).env("NO_COLOR", "1").env("HOME", dir).env("AWS_EC2_METADATA_DISABLED", "true");
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().to_string();
        if k.starts_with("AWS_") || k.starts_with("KARPCTL_") || k == "KUBECONFIG" {
            cmd.env_remove(&k);
        }
    }
    cmd.env("AWS_EC2_METADATA_DISABLED", "true").env("AWS_CONFIG_FILE", dir.join("no-aws-config")).env("AWS_SHARED_CREDENTIALS_FILE", dir.join("no-aws-credentials"));
    for (k, v) in extra {
        cmd.env(k, v);
    }
    let t = std::time::Instant::now();
    let o = cmd.output().unwrap();
    (o, t.elapsed())
}

#[test]
fn aws_failures_are_one_line_in_words_with_a_help_line_and_no_retries_when_dns_fails() {
    let d = scratch("aws-words");
    std::fs::copy(repo().join("examples/falkordb.yaml"), d.join("karpctl.yaml")).unwrap();
    let creds = [("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE"), ("AWS_SECRET_ACCESS_KEY", "example")];

    // A region AWS does not have: its endpoint does not resolve, and that is not retried.
    let (o, took) = bare(&d, &["plan", "--region", "us-wset-2"], &creds);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    let out = text(&o.stdout);
    // Whichever of the concurrent first reads (eks:DescribeCluster, cloudformation:DescribeStacks) fails first.
    let line = out.lines().find(|l| l.starts_with("! ") && l.contains("the endpoint does not resolve")).unwrap_or_else(|| panic!("no failed step:\n{out}\n{err}"));
    assert!(line.contains("us-wset-2 is not an AWS region karpctl knows") && line.contains("region us-wset-2 (--region)"), "{line}");
    assert!(!out.contains("DispatchFailure") && !out.contains("ConnectorError") && !out.contains("unhandled error"), "{out}");
    assert!(err.lines().any(|l| l.trim_start().starts_with("help: correct the region (us-wset-2)")), "plan ends with a help line:\n{err}");
    assert!(took < std::time::Duration::from_secs(10), "not 8 attempts of backoff: {took:?}");

    // No credentials anywhere: one row says so, the others were not checked.
    for cmd in [&["doctor"][..], &["up"], &["plan"]] {
        let (o, _) = bare(&d, cmd, &[("AWS_REGION", "us-west-2")]);
        let all = format!("{}{}", text(&o.stdout), text(&o.stderr));
        assert_eq!(o.status.code(), Some(1), "{cmd:?}: {all}");
        assert!(all.contains("no AWS credentials found (region us-west-2 (cluster.region), profile default)") || all.contains("no AWS credentials found (region us-west-2 (AWS_REGION), profile default)"), "{cmd:?}: {all}");
        // Said once in the result (a pipe's progress log on stderr has every event too).
        let result = if cmd[0] == "up" { text(&o.stderr) } else { text(&o.stdout) };
        assert_eq!(result.matches("no AWS credentials found").count(), 1, "{cmd:?}: said once:\n{all}");
        assert!(!all.contains("CredentialsNotLoaded") && !all.contains("check cluster.name"), "{cmd:?}: {all}");
        assert!(text(&o.stderr).contains("help: "), "{cmd:?}: {all}");
        assert!(!all.contains("source .sandbox/env"), "{cmd:?}: no sandbox here: {all}");
        assert!(result.len() < 2000, "{cmd:?}: {} characters:\n{all}", result.len());
    }
    // The SDK's own description only with -v.
    let (o, _) = bare(&d, &["plan", "-v"], &[("AWS_REGION", "us-west-2")]);
    assert!(text(&o.stdout).contains("AWS SDK: "), "{}", text(&o.stdout));

    // With a sandbox environment file in the checkout, the hint to use it.
    std::fs::create_dir_all(d.join(".sandbox")).unwrap();
    std::fs::write(d.join(".sandbox/env"), "# karpctl sandbox: source this file\n").unwrap();
    for cmd in [&["up"][..], &["plan"]] {
        let (o, _) = bare(&d, cmd, &[("AWS_REGION", "us-west-2")]);
        assert!(text(&o.stderr).contains("help: source .sandbox/env"), "{cmd:?}: {}", text(&o.stderr));
    }
}
