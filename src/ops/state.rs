/*!
`karpctl status` and `karpctl state show|unlock|pull|push`: read and repair the
state file wherever the config keeps it. `push` validates what it writes and
takes the lock, so a repair cannot race a running `up`.
*/

use std::time::Duration;

use anyhow::{bail, Context};

use crate::cli::{Global, OutputFormat, StateCommand};
use crate::config;
use crate::state::{LockInfo, State};

use super::Report;

pub async fn status(g: &Global) -> anyhow::Result<Report> {
    let loaded = config::load(&g.config)?;
    let c = &loaded.config;
    let backend = super::context::backend(c, g).await?;
    let state = backend.load().await.with_context(|| format!("reading state from {}", backend.describe()))?;
    if let Some(s) = &state {
        s.check_identity(&c.cluster.name)?;
    }
    let holder = backend.lock_holder().await?;
    let (live, access) = live(g, c, state.as_ref()).await;
    let mut help = Vec::new();
    let mut notes = Vec::new();
    if let Some(a) = &access {
        help.extend(a.help());
    } else if live.get("error").is_some() {
        help.push("karpctl doctor   # checks the credentials and the cluster in AWS; the error above says how its API server failed".to_string());
    }
    if state.is_none() && access.is_none() {
        let mut found: Vec<String> = super::context::karpctl_stack(g, c).await.into_iter().collect();
        let managed = |key: &str, kind: &str| -> Option<String> {
            let names: Vec<&str> = live[key]
                .as_array()?
                .iter()
                .filter(|o| o["managedByKarpctl"] == true)
                .filter_map(|o| o["name"].as_str())
                .collect();
            (!names.is_empty()).then(|| format!("{kind} {} (labelled app.kubernetes.io/managed-by=karpctl)", names.join(", ")))
        };
        found.extend(managed("nodePools", "NodePool(s)"));
        found.extend(managed("nodeClasses", "EC2NodeClass(es)"));
        if !found.is_empty() {
            let (note, h) = super::context::missing_state(&backend, g, &found);
            notes.push(note);
            help.push(h);
        }
    }
    if let Some(h) = &holder {
        help.push(format!("only if that run is gone: karpctl state unlock {}", h.id));
    }
    let stdout = match g.output {
        OutputFormat::Text => {
            let mut s = crate::ui::status_text(&c.cluster.name, &backend.describe(), state.as_ref(), holder.as_ref());
            s.push_str(&crate::ui::live_text(&live));
            s
        }
        f => {
            let doc = crate::output::Status {
                api_version: crate::output::ApiVersion::V1Alpha1,
                kind: crate::output::StatusKind::Status,
                cluster: c.cluster.name.clone(),
                backend: backend.describe(),
                state,
                lock: holder,
                live,
            };
            crate::output::encode(&doc, f)?
        }
    };
    let aws_access = access.and_then(|a| a.access);
    Ok(Report { stdout, warnings: loaded.warnings, help, notes, aws_access, ..Default::default() })
}

/// The cluster as it is now; `{"error": …}` when it cannot be reached in time,
/// with the AWS error when AWS could not be asked at all.
async fn live(g: &Global, c: &config::Config, state: Option<&State>) -> (serde_json::Value, Option<crate::aws::AwsError>) {
    let read = async {
        let client = super::context::kube_client(g, c, state).await?;
        anyhow::Ok(super::live::gather(&client, c).await)
    };
    match tokio::time::timeout(Duration::from_secs(20), read).await {
        Ok(Ok(v)) => (v, None),
        Ok(Err(e)) => {
            let access = crate::aws::access_failure(&e).cloned();
            (serde_json::json!({"error": format!("{e:#}")}), access)
        }
        Err(_) => (serde_json::json!({"error": "the cluster did not answer within 20s"}), None),
    }
}

pub async fn state(g: &Global, cmd: &StateCommand) -> anyhow::Result<Report> {
    let loaded = config::load(&g.config)?;
    let c = &loaded.config;
    let backend = super::context::backend(c, g).await?;
    use crate::output::{encode, ApiVersion, StateAction, StateChange, StateChangeKind, StateDoc, StateKind};
    let change = |action, lock_id: Option<String>, file: Option<std::path::PathBuf>, serial: Option<u64>| StateChange {
        api_version: ApiVersion::V1Alpha1,
        kind: StateChangeKind::StateChange,
        action,
        backend: backend.describe(),
        lock_id,
        file,
        serial,
    };
    let stdout = match cmd {
        StateCommand::Show | StateCommand::Pull => {
            let st = backend.load().await.with_context(|| format!("reading state from {}", backend.describe()))?;
            let Some(s) = st else {
                bail!("no state at {} yet; `karpctl up` creates it", backend.describe());
            };
            match (cmd, g.output) {
                // `pull` prints the state file itself, ready for `state push`.
                (StateCommand::Pull, _) => crate::state::encode(&s)?,
                (_, OutputFormat::Text) => {
                    let lock = backend.lock_holder().await?;
                    crate::ui::state_text(&backend.describe(), &s, lock.as_ref())
                }
                (_, f) => {
                    let lock = backend.lock_holder().await?;
                    encode(&StateDoc { api_version: ApiVersion::V1Alpha1, kind: StateKind::State, backend: backend.describe(), lock, state: s }, f)?
                }
            }
        }
        StateCommand::Unlock { id } => {
            backend.unlock(id).await?;
            match g.output {
                OutputFormat::Text => format!("released lock {id} on {}\n", backend.describe()),
                f => encode(&change(StateAction::Unlock, Some(id.clone()), None, None), f)?,
            }
        }
        StateCommand::Push { file } => {
            let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
            let mut incoming: State = crate::state::decode(&bytes).with_context(|| format!("reading {}", file.display()))?;
            incoming.check_identity(&c.cluster.name)?;
            // Ctrl-C while waiting for the lock ends it cleanly; once held, the push (one
            // read, one atomic write) runs to its end.
            super::context::locked(&backend, g, Some(LockInfo::for_this_process("state push")), async |_interrupt| {
                let current = backend.load().await;
                if let Ok(Some(cur)) = &current {
                    if cur.lineage != incoming.lineage {
                        bail!(
                            "{} has lineage {}, the state at {} has {}: it belongs to another installation",
                            file.display(),
                            incoming.lineage,
                            backend.describe(),
                            cur.lineage
                        );
                    }
                    incoming.serial = incoming.serial.max(cur.serial);
                }
                backend.save(&mut incoming).await?;
                Ok(match g.output {
                    OutputFormat::Text => format!("pushed {} to {} (serial {})\n", file.display(), backend.describe(), incoming.serial),
                    f => encode(&change(StateAction::Push, None, Some(file.clone()), Some(incoming.serial)), f)?,
                })
            })
            .await?
        }
    };
    Ok(Report { stdout, warnings: loaded.warnings, ..Default::default() })
}
