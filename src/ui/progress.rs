/*!
Shows engine events while a run goes: one indicatif spinner line per running
step (elapsed time and what it is waiting on) on a terminal, plain timestamped
log lines when stderr is not a terminal or under CI, and one JSON object per
event with `-o json` (on stderr, so stdout keeps only the final document; each
carries `elapsed_ms` since its step started). Every wait in the steps reports
through here via `StepCx::progress`.
*/
#![allow(clippy::print_stderr)]

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};

use std::sync::Mutex;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::say;
use crate::engine::{Event, Outcome};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Bars,
    Lines,
    /// `-v`: a timestamped line for every event and every progress message, unthrottled,
    /// including steps skipped as unchanged.
    Verbose,
    Json,
}

impl Style {
    /// Bars on an interactive terminal, lines under CI or in a pipe, every line with
    /// `-v`, JSON when asked.
    pub fn detect(json: bool, verbose: bool) -> Style {
        if json {
            Style::Json
        } else if verbose {
            Style::Verbose
        } else if std::io::stderr().is_terminal() && std::env::var_os("CI").is_none() {
            Style::Bars
        } else {
            Style::Lines
        }
    }
}

pub struct Progress {
    style: Style,
    multi: MultiProgress,
    bars: Mutex<BTreeMap<String, ProgressBar>>,
    /// Lines style: the last progress line per step (digits blanked) and when it was printed.
    last_line: Mutex<BTreeMap<String, (String, std::time::Instant)>>,
    /// When each running step started, for the elapsed time of its progress.
    started: Mutex<BTreeMap<String, std::time::Instant>>,
}

/// The reasons worth a word when a step starts. "Not created yet" and "looked up
/// on every run" say nothing a reader needs (and read wrong for a rollback step,
/// which deletes): the step's own progress lines say what it does.
fn started_text(why: &[crate::engine::Why]) -> String {
    use crate::engine::Why;
    let told: Vec<String> = why.iter().filter(|w| !matches!(w, Why::NotCreated | Why::Lookup)).map(|w| w.to_string()).collect();
    if told.is_empty() {
        "started".into()
    } else {
        format!("started ({})", told.join("; "))
    }
}

/// In a log, a wait's progress is worth a line when it says something new, or every 15s.
const LINE_EVERY: Duration = Duration::from_secs(15);

fn outcome_text(o: &Outcome) -> String {
    match o {
        Outcome::Fresh => "unchanged".into(),
        Outcome::UpToDate => "up to date".into(),
        Outcome::Applied { action } => match action {
            crate::engine::Action::None => "done".into(),
            crate::engine::Action::Create => "created".into(),
            crate::engine::Action::Update => "updated".into(),
            crate::engine::Action::Replace => "replaced".into(),
            crate::engine::Action::Delete => "deleted".into(),
        },
        Outcome::WouldChange { action } => format!("would {action}"),
        Outcome::Failed { error } => format!("FAILED: {error}"),
        Outcome::Blocked { by } => format!("skipped: {by} did not finish"),
        Outcome::NeedsApproval { summary } => format!("needs --yes: {summary}"),
    }
}

impl Progress {
    pub fn new(style: Style) -> Progress {
        let multi = MultiProgress::new();
        if style != Style::Bars {
            multi.set_draw_target(ProgressDrawTarget::hidden());
        }
        Progress {
            style,
            multi,
            bars: Mutex::new(BTreeMap::new()),
            last_line: Mutex::new(BTreeMap::new()),
            started: Mutex::new(BTreeMap::new()),
        }
    }

    fn stamp() -> String {
        humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
    }

    /// Milliseconds since `step` started (0 when it was never seen starting).
    fn elapsed_ms(&self, e: &Event) -> u128 {
        let mut started = self.started.lock().expect("progress lock");
        match e {
            Event::Started { step, .. } => {
                started.insert(step.clone(), std::time::Instant::now());
                0
            }
            Event::Progress { step, .. } => started.get(step).map(|t| t.elapsed().as_millis()).unwrap_or(0),
            Event::Finished { step, elapsed_ms, .. } => {
                started.remove(step);
                *elapsed_ms
            }
        }
    }

    pub fn event(&self, e: Event) {
        let elapsed = self.elapsed_ms(&e);
        match self.style {
            Style::Json => {
                if let Ok(mut v) = serde_json::to_value(&e) {
                    if let Event::Progress { .. } = e {
                        v["elapsed_ms"] = serde_json::json!(elapsed);
                    }
                    say!("{v}");
                }
            }
            Style::Lines | Style::Verbose => match &e {
                Event::Started { step, why } => {
                    say!("{} {step}: {}", Self::stamp(), started_text(why));
                }
                Event::Progress { step, message } => {
                    let shape: String = message.chars().map(|c| if c.is_ascii_digit() { '#' } else { c }).collect();
                    let mut last = self.last_line.lock().expect("progress lock");
                    let now = std::time::Instant::now();
                    let due = match last.get(step) {
                        Some(_) if self.style == Style::Verbose => true,
                        Some((prev, at)) => *prev != shape || now.duration_since(*at) >= LINE_EVERY,
                        None => true,
                    };
                    if due {
                        last.insert(step.clone(), (shape, now));
                        say!("{} {step}: {message}", Self::stamp());
                    }
                }
                Event::Finished { step, outcome, elapsed_ms } => {
                    if *outcome != Outcome::Fresh || self.style == Style::Verbose {
                        say!("{} {step}: {} after {:.1}s", Self::stamp(), outcome_text(outcome), *elapsed_ms as f64 / 1000.0);
                    }
                }
            },
            Style::Bars => {
                let mut bars = self.bars.lock().expect("progress lock");
                match e {
                    Event::Started { step, .. } => {
                        let pb = self.multi.add(ProgressBar::new_spinner());
                        let template = if crate::ui::color() {
                            "{spinner:.cyan} [{elapsed:>4}] {prefix:.bold} {wide_msg}"
                        } else {
                            "{spinner} [{elapsed:>4}] {prefix} {wide_msg}"
                        };
                        pb.set_style(ProgressStyle::with_template(template).expect("valid template"));
                        pb.set_prefix(step.clone());
                        pb.enable_steady_tick(Duration::from_millis(120));
                        bars.insert(step, pb);
                    }
                    Event::Progress { step, message } => {
                        if let Some(pb) = bars.get(&step) {
                            pb.set_message(message);
                        }
                    }
                    Event::Finished { step, outcome, .. } => {
                        if let Some(pb) = bars.remove(&step) {
                            pb.finish_with_message(outcome_text(&outcome));
                        }
                    }
                }
            }
        }
    }
}
