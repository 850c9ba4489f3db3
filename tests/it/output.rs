//! What commands print: every `-o json|yaml` document validates against the
//! schema `karpctl schema <document>` prints (offline commands here, the rest on
//! the AWS emulator), and the plan reads like terraform's, coloured only when asked.

use std::path::Path;
use std::process::{Command, Output};

use clap::ValueEnum;
use karpctl::cli::SchemaDocument;
use serde_json::Value;

use crate::beds::AwsEmulator;
use crate::support::*;

fn run(dir: &Path, endpoint: &str, args: &[&str], color_env: bool) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_karpctl"));
    cmd.args(args).current_dir(dir).env("CI", "1");
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("AWS_") || k == "KARPCTL_CONFIG" || k == "NO_COLOR" {
            cmd.env_remove(k);
        }
    }
    if !color_env {
        cmd.env("NO_COLOR", "1");
    }
    cmd.env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-west-2")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .expect("karpctl runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The schema as the binary prints it (so `karpctl schema` itself is covered).
fn schema_of(doc: SchemaDocument) -> Value {
    let name = doc.to_possible_value().unwrap().get_name().to_string();
    let o = Command::new(env!("CARGO_BIN_EXE_karpctl")).args(["schema", &name]).output().unwrap();
    assert!(o.status.success(), "schema {name}: {}", text(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("schema {name} is not JSON: {e}"))
}

fn violations(doc: SchemaDocument, v: &Value) -> Vec<String> {
    let schema = schema_of(doc);
    let validator = jsonschema::options().should_validate_formats(false).build(&schema).expect("a valid JSON Schema");
    validator.iter_errors(v).map(|e| format!("{e} at {}", e.instance_path())).collect()
}

/// `out` parsed (JSON or YAML) and checked against `doc`'s schema.
fn conforms(doc: SchemaDocument, out: &Output, yaml: bool) -> Value {
    let v: Value = if yaml {
        serde_yaml::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}{}", text(&out.stdout), text(&out.stderr)))
    } else {
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}{}", text(&out.stdout), text(&out.stderr)))
    };
    let errs = violations(doc, &v);
    assert!(errs.is_empty(), "{doc:?} document breaks its schema: {errs:#?}\n{v:#}");
    assert_eq!(v["apiVersion"], "karpctl.io/v1alpha1", "{v}");
    v
}

const CLOSED: &str = "http://127.0.0.1:9";

#[test]
fn every_schema_compiles_and_tells_documents_apart() {
    for doc in SchemaDocument::value_variants() {
        let s = schema_of(*doc);
        jsonschema::options().should_validate_formats(false).build(&s).unwrap_or_else(|e| panic!("{doc:?}: {e}"));
    }
    // A schema must be able to say no: a Status document is not a Render document,
    // and a document without its kind is not a Status.
    let d = scratch("out-kinds");
    std::fs::copy(repo().join("examples/default.yaml"), d.join("karpctl.yaml")).unwrap();
    let status: Value = serde_json::from_slice(&run(&d, CLOSED, &["status", "-o", "json"], false).stdout).unwrap();
    assert!(violations(SchemaDocument::Status, &status).is_empty());
    assert!(!violations(SchemaDocument::Render, &status).is_empty(), "a Status passed as a Render");
    let mut kindless = status.clone();
    kindless.as_object_mut().unwrap().remove("kind");
    assert!(!violations(SchemaDocument::Status, &kindless).is_empty(), "kind is required");
    let mut extra = status;
    extra["surprise"] = Value::Bool(true);
    assert!(!violations(SchemaDocument::Status, &extra).is_empty(), "undocumented fields are refused");
}

#[test]
fn offline_commands_print_documents_that_match_their_schemas() {
    let d = scratch("out-offline");
    let init = run(&d, CLOSED, &["init", "--preset", "dev-gpu", "--cluster", "demo", "-o", "json"], false);
    assert!(init.status.success(), "{}", text(&init.stderr));
    let v = conforms(SchemaDocument::Init, &init, false);
    assert_eq!(v["file"], "karpctl.yaml");
    assert!(d.join("karpctl.yaml").exists());
    let list = conforms(SchemaDocument::Init, &run(&d, CLOSED, &["init", "--list", "-o", "yaml"], false), true);
    assert_eq!(list["presets"].as_array().unwrap().len(), karpctl::ops::init::all_presets().len());

    let v = conforms(SchemaDocument::Validate, &run(&d, CLOSED, &["validate", "-o", "json"], false), false);
    assert_eq!((v["valid"].clone(), v["nodePools"].clone()), (Value::Bool(true), Value::from(3)));

    let r = run(&d, CLOSED, &["render", "-o", "json"], false);
    assert!(r.status.success(), "{}", text(&r.stderr));
    let v = conforms(SchemaDocument::Render, &r, false);
    assert!(v["documents"].as_array().unwrap().iter().any(|x| x["content"]["kind"] == "NodePool"), "{v}");
    // dev-gpu uses IRSA: a directory with its values needs the account id.
    let out = run(&d, CLOSED, &["render", "--out", "gitops", "-o", "yaml", "--account-id", "111122223333"], false);
    let v = conforms(SchemaDocument::Render, &out, true);
    assert!(v["files"].as_array().unwrap().iter().any(|f| f == "kustomization.yaml"), "{v}");
    assert!(d.join("gitops/kustomization.yaml").exists());

    // The state commands and status work without any cluster; status reports it unreachable.
    let s = run(&d, CLOSED, &["status", "-o", "json"], false);
    assert!(s.status.success(), "{}", text(&s.stderr));
    let v = conforms(SchemaDocument::Status, &s, false);
    assert!(v["state"].is_null() && v["live"]["error"].is_string(), "{v}");

    // Errors: a missing state, an unknown lock, an invalid config — each an Error document.
    let e = run(&d, CLOSED, &["state", "show", "-o", "json"], false);
    assert_eq!(e.status.code(), Some(1));
    let v = conforms(SchemaDocument::Error, &e, false);
    assert!(v["error"]["message"].as_str().unwrap().contains("no state"), "{v}");
    let e = run(&d, CLOSED, &["state", "show", "-o", "yaml"], false);
    conforms(SchemaDocument::Error, &e, true);
    std::fs::write(d.join("bad.yaml"), "apiVersion: karpctl.io/v1alpha1\ncluster: {name: c}\nnodePools: [{name: a, nodeClass: nope}]\n").unwrap();
    let e = run(&d, CLOSED, &["validate", "-c", "bad.yaml", "-o", "json"], false);
    assert_eq!(e.status.code(), Some(3));
    let v = conforms(SchemaDocument::Error, &e, false);
    assert_eq!(v["error"]["kind"], "invalid-config");
    // A second init refuses to overwrite and says what to run instead.
    let again = run(&d, CLOSED, &["init", "-o", "json"], false);
    assert_eq!(again.status.code(), Some(1));
    let v = conforms(SchemaDocument::Error, &again, false);
    assert!(v["error"]["help"][0].as_str().unwrap().contains("karpctl init --force"), "{v}");
}

const CONFIG: &str = r#"apiVersion: karpctl.io/v1alpha1
cluster: {name: karpctl-sandbox, region: us-west-2}
nodeClasses:
  - {name: general, architectures: [amd64, arm64]}
  - {name: gpu, variant: nvidia}
nodePools:
  - {name: general, nodeClass: general}
  - {name: spot, nodeClass: general, capacityTypes: [spot, on-demand]}
"#;

#[test]
fn aws_commands_print_documents_that_match_their_schemas() {
    let Some(emu) = AwsEmulator::start(&[]) else { return };
    let d = scratch("out-aws");
    std::fs::write(d.join("karpctl.yaml"), CONFIG).unwrap();
    let e = &emu.endpoint;

    let plan = run(&d, e, &["plan", "--target", "aws", "--detailed-exitcode", "-o", "json"], false);
    assert_eq!(plan.status.code(), Some(2), "{}", text(&plan.stderr));
    let v = conforms(SchemaDocument::Plan, &plan, false);
    assert_eq!(v["kind"], "Plan");
    let planned = v["planned"].as_array().unwrap().len();
    assert!(planned > 0);
    assert_eq!(v["summary"]["add"], planned, "a fresh cluster: every planned step creates: {v}");

    let doctor = run(&d, e, &["doctor", "-o", "json"], false);
    let v = conforms(SchemaDocument::Doctor, &doctor, false);
    assert_eq!(v["ok"], doctor.status.success(), "{v}");

    let up = run(&d, e, &["up", "--target", "aws", "--skip-preflight", "-o", "yaml"], false);
    assert!(up.status.success(), "{}", text(&up.stderr));
    let v = conforms(SchemaDocument::Up, &up, true);
    assert_eq!((v["kind"].as_str(), v["applied"].as_bool()), (Some("Apply"), Some(true)));
    // Progress went to stderr as timestamped lines (CI is set), never to stdout.
    let progress = text(&up.stderr);
    assert!(progress.contains("amis/pins: started"), "{progress}");
    assert!(!progress.contains("(not created yet)"), "a new step just starts: {progress}");

    conforms(SchemaDocument::Amis, &run(&d, e, &["amis", "-o", "json"], false), false);
    let st = conforms(SchemaDocument::State, &run(&d, e, &["state", "show", "-o", "json"], false), false);
    assert!(st["state"]["steps"]["amis/pins"].is_object(), "{st}");
    let s = conforms(SchemaDocument::Status, &run(&d, e, &["status", "-o", "json"], false), false);
    assert_eq!(s["state"]["serial"], st["state"]["serial"]);
    let lock = run(&d, e, &["state", "unlock", "no-such-lock", "-o", "json"], false);
    conforms(if lock.status.success() { SchemaDocument::StateChange } else { SchemaDocument::Error }, &lock, false);

    // The text views are tables with a header row.
    let show = text(&run(&d, e, &["state", "show"], false).stdout);
    let header = show.lines().find(|l| l.starts_with("STEP")).unwrap_or_else(|| panic!("no header: {show}"));
    for col in ["KIND", "STATUS", "STARTED", "FINISHED"] {
        assert!(header.contains(col), "{header}");
    }
    let amis = text(&run(&d, e, &["amis"], false).stdout);
    let row = amis.lines().find(|l| l.starts_with("gpu ")).unwrap_or_else(|| panic!("no gpu row: {amis}"));
    let header = amis.lines().find(|l| l.starts_with("CLASS")).unwrap();
    assert_eq!(row.find("al2023/nvidia"), header.find("FAMILY"), "columns line up:\n{amis}");
}

#[test]
fn the_plan_is_a_terraform_like_diff_coloured_only_when_asked() {
    let Some(emu) = AwsEmulator::start(&[]) else { return };
    let d = scratch("out-color");
    std::fs::write(d.join("karpctl.yaml"), CONFIG).unwrap();
    let e = &emu.endpoint;
    let json: Value = serde_json::from_slice(&run(&d, e, &["plan", "--target", "aws", "-o", "json"], false).stdout).unwrap();
    let add = json["summary"]["add"].as_u64().unwrap();

    let plain = text(&run(&d, e, &["plan", "--target", "aws"], true).stdout);
    assert!(!plain.contains('\x1b'), "a pipe gets no colour:\n{plain}");
    assert!(plain.contains(&format!("Plan: {add} to add, 0 to change, 0 to destroy.")), "{plain}");
    for p in json["planned"].as_array().unwrap() {
        assert!(plain.contains(&format!("  + {} (create)", p["step"].as_str().unwrap())), "{p}:\n{plain}");
    }
    let never = text(&run(&d, e, &["plan", "--target", "aws", "--color", "never"], true).stdout);
    assert_eq!(never, plain);

    let coloured = text(&run(&d, e, &["plan", "--target", "aws", "--color", "always"], false).stdout);
    assert!(coloured.contains("\x1b[32m+\x1b[0m \x1b[1m"), "--color always paints creates green, even with NO_COLOR:\n{coloured:?}");
    let stripped = strip_ansi(&coloured);
    assert_eq!(stripped, plain, "colour is the only difference");
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for d in chars.by_ref() {
                if d == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The listing itself, from a report with every kind of change.
#[test]
fn plan_text_shows_symbols_reasons_fields_and_a_closing_count() {
    use karpctl::engine::{Action, Change, FieldChange, Outcome, Planned, RunReport, Why};
    use serde_json::json;
    let step = |id: &str, action: Action, fields: Vec<FieldChange>, why: Vec<Why>| Planned {
        step: id.into(),
        kind: "fake".into(),
        why,
        change: Change::new(action, format!("{action} {id}")).with_fields(fields),
    };
    let f = |field: &str, old: Value, new: Value| FieldChange { field: field.into(), old, new };
    let report = RunReport {
        planned: vec![
            step("a/new", Action::Create, vec![f("size", Value::Null, json!(3))], vec![Why::NotCreated]),
            step("b/edit", Action::Update, vec![f("limits.cpu", json!("100"), json!("200"))], vec![Why::InputsChanged { field: "limits.cpu".into(), old: json!("100"), new: json!("200") }]),
            step("c/gone", Action::Delete, vec![f("pool", json!("old"), Value::Null)], vec![]),
            step("d/ami", Action::Replace, vec![], vec![Why::Drifted { summary: "AMI moved".into() }]),
        ],
        outcomes: vec![("e/same".into(), Outcome::UpToDate), ("f/broken".into(), Outcome::Failed { error: "boom".into() })],
        fresh: vec!["g/fresh".into()],
        ..Default::default()
    };
    let plain = karpctl::ui::plan_text(&report, 7, false, false);
    for line in [
        "  + a/new (create)",
        "      + size: 3",
        "  ~ b/edit (update)",
        "      # because limits.cpu changed: 100 → 200",
        "      ~ limits.cpu: 100 → 200",
        "  - c/gone (delete)",
        "      - pool: old",
        "  -/+ d/ami (replace)",
        "      # because drift detected: AMI moved",
        "! f/broken: boom",
        "Plan: 2 to add, 1 to change, 2 to destroy. (2 unchanged, 1 not done)",
    ] {
        assert!(plain.lines().any(|l| l == line), "missing {line:?} in:\n{plain}");
    }
    assert!(!plain.contains('\x1b'));
    let coloured = karpctl::ui::plan_text(&report, 7, false, true);
    for painted in ["\x1b[32m+\x1b[0m \x1b[1ma/new", "\x1b[33m~\x1b[0m \x1b[1mb/edit", "\x1b[31m-\x1b[0m \x1b[1mc/gone", "\x1b[31m-\x1b[0m/\x1b[32m+\x1b[0m \x1b[1md/ami"] {
        assert!(coloured.contains(painted), "missing {painted:?} in {coloured:?}");
    }
    assert_eq!(strip_ansi(&coloured), plain);
    let applied = karpctl::ui::plan_text(&report, 7, true, false);
    assert!(applied.contains("Applied: 2 added, 1 changed, 2 destroyed."), "{applied}");
    let nothing = karpctl::ui::plan_text(&RunReport { fresh: vec!["x".into()], ..Default::default() }, 1, false, false);
    assert!(nothing.contains("No changes.") && !nothing.contains("Plan:"), "{nothing}");
}
