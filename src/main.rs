//! Parse arguments, run one `ops` function, show its report, map errors to exit codes.

use clap::CommandFactory;

use karpctl::cli::{Cli, Command};
use karpctl::config::LoadError;
use karpctl::engine::RunnerError;
use karpctl::ops::{self, exit, Report};
use karpctl::ui;

async fn run(cli: &Cli) -> anyhow::Result<Report> {
    let g = &cli.global;
    match &cli.command {
        Command::Render(a) => ops::render::render(g, a).await,
        Command::Validate => ops::render::validate(g),
        Command::Init(a) => ops::init::init(g, a),
        Command::Schema(a) => {
            let s = serde_json::to_string_pretty(&karpctl::output::schema(a.document))?;
            Ok(Report { stdout: format!("{s}\n"), ..Default::default() })
        }
        Command::Completions(a) => {
            let mut buf = Vec::new();
            clap_complete::generate(a.shell, &mut Cli::command(), "karpctl", &mut buf);
            Ok(Report { stdout: String::from_utf8(buf)?, ..Default::default() })
        }
        Command::Up(a) if a.staged => ops::rollout::staged(g, a).await,
        Command::Up(a) => ops::plan::up(g, a).await,
        Command::Plan(a) => ops::plan::plan(g, a).await,
        Command::Status => ops::state::status(g).await,
        Command::Verify(a) => ops::verify::verify(g, a).await,
        Command::Amis(a) => ops::amis::amis(g, a).await,
        Command::Doctor => ops::doctor::doctor(g).await,
        Command::Rollback(a) => ops::rollback::rollback(g, a).await,
        Command::State(c) => ops::state::state(g, c).await,
    }
}

/// Recoverable situations end with the exact next command.
fn help(e: &anyhow::Error, g: &karpctl::cli::Global) -> Vec<String> {
    let mut out = Vec::new();
    let preflight = e.chain().find_map(|c| c.downcast_ref::<ops::doctor::PreflightFailed>());
    if let Some(p) = preflight {
        if p.access.is_some() {
            out.extend(ops::context::sandbox_hint(g));
        }
        out.push("karpctl doctor   # every check, with why and fix".into());
        return out;
    }
    if let Some(a) = karpctl::aws::access_failure(e) {
        out.extend(a.help());
        out.extend(ops::context::sandbox_hint(g));
        return out;
    }
    // The domain errors' next command (AWS, Helm, the state file, Kubernetes apply).
    out.extend(karpctl::help::for_error(e));
    if let Some(i) = e.chain().find_map(|c| c.downcast_ref::<ops::init::InitError>()) {
        out.push(i.help());
    }
    if let Some(r) = e.chain().find_map(|c| c.downcast_ref::<ops::render::RenderRefusal>()) {
        out.push(r.help());
    }
    if e.chain().any(|c| matches!(c.downcast_ref::<RunnerError>(), Some(RunnerError::Cancelled { .. }))) {
        out.push("karpctl up   # (or the command you ran) resumes where it stopped".into());
    }
    if out.is_empty() && e.chain().any(|c| c.downcast_ref::<kube::Error>().is_some() || c.downcast_ref::<karpctl::aws::AwsError>().is_some()) {
        out.push("karpctl doctor   # checks the credentials and the cluster in AWS".into());
    }
    out
}

#[tokio::main]
async fn main() {
    let cli = match karpctl::cli::parse_from(std::env::args_os()) {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { exit::USAGE } else { exit::OK };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    ui::set_color(cli.global.color);
    karpctl::aws::show_sdk_detail(cli.global.verbose > 0);
    let format = cli.global.output;
    let code = match run(&cli).await {
        Ok(report) => {
            for w in &report.warnings {
                ui::diagnostic(w);
            }
            for n in &report.notes {
                ui::note(n);
            }
            let sandbox = report.aws_access.and_then(|_| ops::context::sandbox_hint(&cli.global));
            for h in report.help.iter().chain(&sandbox) {
                ui::help_line(h);
            }
            match ui::out(&report.stdout) {
                Ok(()) => report.exit,
                Err(e) => {
                    ui::error(&anyhow::Error::new(e).context("writing the result to standard output"), karpctl::cli::OutputFormat::Text, &[]);
                    exit::ERROR
                }
            }
        }
        Err(e) => {
            if let Some(LoadError::Read { path, source }) = e.downcast_ref::<LoadError>() {
                let help = if source.kind() == std::io::ErrorKind::NotFound {
                    vec![format!("karpctl init -c {}   # or point -c at your config", path.display())]
                } else {
                    vec![]
                };
                ui::error(&e, format, &help);
                // A config that cannot be read is as unusable as an invalid one, and nothing was changed.
                exit::INVALID_CONFIG
            } else if let Some(LoadError::Invalid(ce)) = e.downcast_ref::<LoadError>() {
                ui::config_errors(ce, format);
                exit::INVALID_CONFIG
            } else {
                ui::error(&e, format, &help(&e, &cli.global));
                if e.chain().any(|c| matches!(c.downcast_ref::<RunnerError>(), Some(RunnerError::Cancelled { .. }))) {
                    exit::INTERRUPTED
                } else {
                    exit::ERROR
                }
            }
        }
    };
    std::process::exit(code);
}
