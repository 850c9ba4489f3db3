/*!
Shows engine events while a run goes: one indicatif spinner line per running
step (elapsed time and current sub-action) on a terminal, plain timestamped log
lines when stderr is not a terminal or under CI, and one JSON object per event
with `-o json` (on stderr, so stdout keeps only the final document).
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
    Json,
}

impl Style {
    /// Bars on an interactive terminal, lines under CI or in a pipe, JSON when asked.
    pub fn detect(json: bool) -> Style {
        if json {
            Style::Json
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
        Progress { style, multi, bars: Mutex::new(BTreeMap::new()), last_line: Mutex::new(BTreeMap::new()) }
    }

    fn stamp() -> String {
        humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
    }

    pub fn event(&self, e: Event) {
        match self.style {
            Style::Json => {
                if let Ok(s) = serde_json::to_string(&e) {
                    say!("{s}");
                }
            }
            Style::Lines => match &e {
                Event::Started { step, why } => {
                    let why: Vec<String> = why.iter().map(|w| w.to_string()).collect();
                    say!("{} {step}: started ({})", Self::stamp(), why.join("; "));
                }
                Event::Progress { step, message } => {
                    let shape: String = message.chars().map(|c| if c.is_ascii_digit() { '#' } else { c }).collect();
                    let mut last = self.last_line.lock().expect("progress lock");
                    let now = std::time::Instant::now();
                    let due = match last.get(step) {
                        Some((prev, at)) => *prev != shape || now.duration_since(*at) >= LINE_EVERY,
                        None => true,
                    };
                    if due {
                        last.insert(step.clone(), (shape, now));
                        say!("{} {step}: {message}", Self::stamp());
                    }
                }
                Event::Finished { step, outcome, elapsed_ms } => {
                    if *outcome != Outcome::Fresh {
                        say!("{} {step}: {} after {:.1}s", Self::stamp(), outcome_text(outcome), *elapsed_ms as f64 / 1000.0);
                    }
                }
            },
            Style::Bars => {
                let mut bars = self.bars.lock().expect("progress lock");
                match e {
                    Event::Started { step, .. } => {
                        let pb = self.multi.add(ProgressBar::new_spinner());
                        pb.set_style(
                            ProgressStyle::with_template("{spinner:.cyan} [{elapsed:>4}] {prefix:.bold} {wide_msg}")
                                .expect("valid template"),
                        );
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
