/*!
Step `cfn-stack/<name>`: the Karpenter CloudFormation stack (node role,
controller policies, interruption queue and rules) from karpctl's own template.

CloudFormation is the one place where a failure is slow and its cause is buried
in an event stream, so this step does three things beyond create/update: it
waits with backoff while showing the newest stack events, it puts the first
`*_FAILED` event's resource and reason into the error itself, and it turns a
stack left in `ROLLBACK_COMPLETE` (a failed create, which AWS refuses to update)
into a delete-and-recreate that needs `--yes`. The deployed template is compared
with the desired one as canonical JSON, and the plan names the resources (by
logical id) and tags that differ.
*/

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_cloudformation::types::{Capability, Stack, StackEvent, Tag, TemplateStage};
use futures::future::BoxFuture;
use serde_json::{json, Value};

use crate::aws::AwsError;
use crate::json::canonical;
use crate::engine::{Action, Change, FieldChange, Step, StepCx};
use crate::model::ownership::STEP_TAG;

/// CloudFormation's limit for an inline `TemplateBody`.
pub const MAX_TEMPLATE_BODY: usize = 51_200;
/// How long one stack operation may take before karpctl gives up waiting.
pub const WAIT_TIMEOUT: Duration = Duration::from_secs(30 * 60);
const FIRST_DELAY: Duration = Duration::from_secs(1);
const MAX_DELAY: Duration = Duration::from_secs(10);
/// Events older than this before the operation started are never its own
/// (a guard against reading a previous operation's events; allows clock skew).
const EVENT_SKEW: Duration = Duration::from_secs(15 * 60);
const STACK_TYPE: &str = "AWS::CloudFormation::Stack";

pub struct CfnStack {
    pub stack_name: String,
    /// The rendered template (render::cfn::template), as JSON.
    pub template: Value,
    /// Stack tags; always includes `karpctl.io/cluster`. The step adds
    /// `karpctl.io/step`.
    pub tags: BTreeMap<String, String>,
    pub cfn: aws_sdk_cloudformation::Client,
}

pub fn id(stack_name: &str) -> String {
    format!("cfn-stack/{stack_name}")
}

/// A stack operation that ended somewhere other than where it was going.
#[derive(Debug, thiserror::Error)]
pub struct StackFailed {
    pub stack: String,
    /// The stack's final status (`ROLLBACK_COMPLETE`, `UPDATE_ROLLBACK_COMPLETE` …).
    pub status: String,
    /// The first `*_FAILED` event of the operation: logical id, its status, reason.
    pub resource: Option<String>,
    pub resource_status: Option<String>,
    pub reason: Option<String>,
    /// The exact next command, when there is one.
    pub help: Option<String>,
}

impl fmt::Display for StackFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "stack `{}` ended in {}", self.stack, self.status)?;
        match (&self.resource, &self.resource_status) {
            (Some(r), Some(s)) => write!(f, ": {r} {s}")?,
            (Some(r), None) => write!(f, ": {r}")?,
            _ => {}
        }
        match &self.reason {
            Some(reason) => write!(f, ": {reason}")?,
            None => f.write_str(" (no failure reason in the stack events)")?,
        }
        if let Some(h) = &self.help {
            write!(f, "\nhelp: {h}")?;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("timed out after {} minutes waiting for stack `{stack}` (still {status}); it keeps going in AWS\nhelp: run `karpctl {rerun}` again to resume waiting", timeout.as_secs() / 60)]
pub struct StackTimeout {
    pub stack: String,
    pub status: String,
    pub timeout: Duration,
    /// The command that resumes the wait (`up`, `rollback --purge`).
    pub rerun: String,
}

/// What a wait is waiting for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Create,
    Update,
    Delete,
    /// An operation started outside this run: any settled state will do.
    Foreign,
}

impl Op {
    fn success(self, status: &str) -> bool {
        match self {
            Op::Create => status == "CREATE_COMPLETE",
            Op::Update => status == "UPDATE_COMPLETE",
            Op::Delete => status == "DELETE_COMPLETE",
            Op::Foreign => true,
        }
    }
}

/// Still moving: wait. `REVIEW_IN_PROGRESS` (a change set never executed) never
/// moves on its own, so it is not one of these.
pub fn in_progress(status: &str) -> bool {
    status.ends_with("_IN_PROGRESS") && status != "REVIEW_IN_PROGRESS"
}

/// Settled states from which only a delete leads anywhere.
fn needs_replace(status: &str) -> bool {
    matches!(status, "ROLLBACK_COMPLETE" | "ROLLBACK_FAILED" | "CREATE_FAILED" | "DELETE_FAILED" | "REVIEW_IN_PROGRESS")
}

fn aws_err<E>(op: &'static str, e: &aws_sdk_cloudformation::error::SdkError<E, aws_sdk_cloudformation::config::http::HttpResponse>) -> AwsError
where
    E: aws_sdk_cloudformation::error::ProvideErrorMetadata + std::error::Error + 'static,
{
    AwsError::from_sdk(op, e)
}

fn epoch_secs(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

fn status_of(s: &Stack) -> String {
    s.stack_status().map(|x| x.as_str().to_string()).unwrap_or_default()
}

fn tags_of(s: &Stack) -> BTreeMap<String, String> {
    s.tags().iter().filter_map(|t| Some((t.key()?.to_string(), t.value().unwrap_or_default().to_string()))).collect()
}

fn outputs_of(s: &Stack) -> BTreeMap<String, String> {
    s.outputs()
        .iter()
        .filter_map(|o| Some((o.output_key()?.to_string(), o.output_value().unwrap_or_default().to_string())))
        .collect()
}

/// The step's outputs from a described stack.
fn outputs_json(name: &str, s: &Stack) -> Value {
    json!({
        "stackName": s.stack_name().unwrap_or(name),
        "stackId": s.stack_id(),
        "status": status_of(s),
        "outputs": outputs_of(s),
    })
}

/// GetTemplate's body as JSON: karpctl writes JSON; a YAML body (another tool)
/// is read as YAML; anything else stays a string (and so always differs).
fn parse_template(body: &str) -> Value {
    if let Ok(v) = serde_json::from_str::<Value>(body) {
        return v;
    }
    match serde_yaml::from_str::<Value>(body) {
        Ok(v) if v.is_object() => v,
        _ => Value::String(body.to_string()),
    }
}

fn event_line(e: &StackEvent) -> String {
    let status = e.resource_status().map(|s| s.as_str()).unwrap_or("?");
    let mut line = format!("{} {status}", e.logical_resource_id().unwrap_or("?"));
    if status.ends_with("_FAILED") {
        if let Some(r) = e.resource_status_reason() {
            line.push_str(&format!(": {r}"));
        }
    }
    line
}

/// The changes between a deployed template and the desired one, by logical id
/// for resources and outputs.
pub fn template_changes(old: &Value, new: &Value) -> Vec<FieldChange> {
    let mut out = Vec::new();
    let (Some(o), Some(n)) = (old.as_object(), new.as_object()) else {
        out.push(FieldChange {
            field: "template".into(),
            old: Value::String("(not a JSON or YAML template)".into()),
            new: Value::String("karpctl's template".into()),
        });
        return out;
    };
    let empty = serde_json::Map::new();
    let section = |m: &serde_json::Map<String, Value>, k: &str| m.get(k).and_then(Value::as_object).cloned().unwrap_or_else(|| empty.clone());
    let rtype = |r: &Value| Value::String(r.get("Type").and_then(Value::as_str).unwrap_or("(no type)").to_string());

    let (or, nr) = (section(o, "Resources"), section(n, "Resources"));
    let ids: BTreeSet<&String> = or.keys().chain(nr.keys()).collect();
    for id in ids {
        match (or.get(id), nr.get(id)) {
            (None, Some(r)) => out.push(FieldChange { field: format!("resources.{id}"), old: Value::Null, new: rtype(r) }),
            (Some(r), None) => out.push(FieldChange { field: format!("resources.{id}"), old: rtype(r), new: Value::Null }),
            (Some(a), Some(b)) if canonical(a) != canonical(b) => {
                let mut paths: Vec<String> = Vec::new();
                for crate::json::FieldChange { field: p, .. } in crate::json::field_changes("", a, b) {
                    if !paths.contains(&p) {
                        paths.push(p);
                    }
                }
                let shown = if paths.len() > 3 { format!("{}, …", paths[..3].join(", ")) } else { paths.join(", ") };
                let t = rtype(b);
                out.push(FieldChange {
                    field: format!("resources.{id}"),
                    old: t.clone(),
                    new: Value::String(format!("{} (changed: {shown})", t.as_str().unwrap_or_default())),
                });
            }
            _ => {}
        }
    }

    let (oo, no) = (section(o, "Outputs"), section(n, "Outputs"));
    let keys: BTreeSet<&String> = oo.keys().chain(no.keys()).collect();
    for k in keys {
        let (a, b) = (oo.get(k).and_then(|x| x.get("Value")), no.get(k).and_then(|x| x.get("Value")));
        if a.map(canonical) != b.map(canonical) {
            out.push(FieldChange { field: format!("outputs.{k}"), old: a.cloned().unwrap_or(Value::Null), new: b.cloned().unwrap_or(Value::Null) });
        }
    }

    let others: BTreeSet<&String> = o.keys().chain(n.keys()).filter(|k| *k != "Resources" && *k != "Outputs").collect();
    for k in others {
        let (a, b) = (o.get(k), n.get(k));
        if a.map(canonical) != b.map(canonical) {
            let field = if k == "Description" { "description".to_string() } else { format!("template.{k}") };
            let show = |v: Option<&Value>| match v {
                None => Value::Null,
                Some(Value::String(s)) => Value::String(s.clone()),
                Some(_) => Value::String("(set)".into()),
            };
            out.push(FieldChange { field, old: show(a), new: show(b) });
        }
    }
    out
}

fn tag_changes(old: &BTreeMap<String, String>, new: &BTreeMap<String, String>) -> Vec<FieldChange> {
    let keys: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    keys.into_iter()
        .filter(|k| old.get(*k) != new.get(*k))
        .map(|k| FieldChange {
            field: format!("tags.{k}"),
            old: old.get(k).map(|v| Value::String(v.clone())).unwrap_or(Value::Null),
            new: new.get(k).map(|v| Value::String(v.clone())).unwrap_or(Value::Null),
        })
        .collect()
}

/// Reads the events of the operation in progress, newest first from the API,
/// back to the stack-level event that started it, and shows the new ones.
struct EventTail {
    stack_name: String,
    since: SystemTime,
    /// ClientRequestToken of our operation: events carrying another token are older.
    token: Option<String>,
    shown: Mutex<BTreeSet<String>>,
}

impl EventTail {
    fn new(stack_name: &str, since: SystemTime, token: Option<&str>) -> EventTail {
        EventTail { stack_name: stack_name.to_string(), since, token: token.map(String::from), shown: Mutex::new(BTreeSet::new()) }
    }

    fn starts_operation(&self, e: &StackEvent) -> bool {
        e.resource_type() == Some(STACK_TYPE)
            && e.logical_resource_id() == Some(self.stack_name.as_str())
            && matches!(
                e.resource_status().map(|s| s.as_str()),
                Some("CREATE_IN_PROGRESS" | "UPDATE_IN_PROGRESS" | "DELETE_IN_PROGRESS" | "IMPORT_IN_PROGRESS")
            )
    }

    /// The current operation's events, oldest first.
    async fn fetch(&self, cfn: &aws_sdk_cloudformation::Client, stack_id: &str) -> Result<Vec<StackEvent>, AwsError> {
        let floor = epoch_secs(self.since) - EVENT_SKEW.as_secs() as i64;
        let mut out = Vec::new();
        let mut next: Option<String> = None;
        'pages: for _ in 0..10 {
            let page = cfn
                .describe_stack_events()
                .stack_name(stack_id)
                .set_next_token(next.take())
                .send()
                .await
                .map_err(|e| aws_err("cloudformation:DescribeStackEvents", &e))?;
            for e in page.stack_events() {
                if e.timestamp().is_some_and(|t| t.secs() < floor) {
                    break 'pages;
                }
                if let (Some(ours), Some(theirs)) = (&self.token, e.client_request_token()) {
                    if ours != theirs {
                        break 'pages;
                    }
                }
                let start = self.starts_operation(e);
                out.push(e.clone());
                if start {
                    break 'pages;
                }
            }
            match page.next_token() {
                Some(t) => next = Some(t.to_string()),
                None => break,
            }
        }
        out.reverse();
        Ok(out)
    }

    /// Sends the events not shown yet to the progress line, oldest first.
    fn show(&self, cx: &StepCx<'_>, events: &[StackEvent]) -> bool {
        let mut shown = self.shown.lock().expect("not poisoned");
        let mut any = false;
        for e in events {
            let key = e.event_id().map(String::from).unwrap_or_else(|| event_line(e));
            if shown.insert(key) {
                cx.progress(event_line(e));
                any = true;
            }
        }
        any
    }
}

/// The first failure of an operation: a resource's `*_FAILED` event if there is
/// one (later ones are usually "Resource creation cancelled"), else the stack's.
fn first_failure(events: &[StackEvent], stack_name: &str) -> Option<(String, String, Option<String>)> {
    let failed = |e: &&StackEvent| e.resource_status().is_some_and(|s| s.as_str().ends_with("_FAILED"));
    let is_stack = |e: &&StackEvent| e.resource_type() == Some(STACK_TYPE) && e.logical_resource_id() == Some(stack_name);
    let pick = events.iter().filter(failed).find(|e| !is_stack(e)).or_else(|| events.iter().find(failed))?;
    Some((
        pick.logical_resource_id().unwrap_or("?").to_string(),
        pick.resource_status().map(|s| s.as_str().to_string()).unwrap_or_default(),
        pick.resource_status_reason().map(String::from),
    ))
}

/// The calls on one stack that the `up` step and rollback's delete share: read it,
/// and wait on an operation while its events go to the progress line, ending in
/// the settled stack or an error that names the first failed resource.
pub struct StackCalls<'a> {
    pub cfn: &'a aws_sdk_cloudformation::Client,
    pub name: &'a str,
    /// The command that resumes the operation, for `help:` lines (`up`, `rollback --purge`).
    pub rerun: &'a str,
}

impl StackCalls<'_> {
    /// DescribeStacks; `None` when the stack does not exist (or, by id, is gone).
    pub async fn describe(&self, name_or_id: &str) -> Result<Option<Stack>, AwsError> {
        let out = self.cfn.describe_stacks().stack_name(name_or_id).send().await.map_err(|e| aws_err("cloudformation:DescribeStacks", &e));
        Ok(crate::aws::found(out)?.and_then(|o| o.stacks.unwrap_or_default().into_iter().next()))
    }

    /// Polls until the stack leaves `*_IN_PROGRESS`, showing new events.
    /// Returns the settled stack, or `None` once it is gone.
    async fn wait(&self, cx: &StepCx<'_>, stack_id: &str, tail: &EventTail) -> anyhow::Result<Option<Stack>> {
        let started = tokio::time::Instant::now();
        let mut delay = FIRST_DELAY;
        loop {
            let stack = match self.describe(stack_id).await {
                Ok(s) => s,
                // Throttled or a 5xx even after the SDK's retries: the stack is still
                // there and still moving; ask again at the next poll.
                Err(e) if e.is_transient() && started.elapsed() + delay <= WAIT_TIMEOUT => {
                    cx.progress(format!("could not read the stack ({e}); polling again"));
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(MAX_DELAY);
                    continue;
                }
                Err(e) => return Err(anyhow::Error::from(e).context(format!("waiting for stack `{}`", self.name))),
            };
            let Some(stack) = stack else { return Ok(None) };
            let status = status_of(&stack);
            if !in_progress(&status) {
                return Ok(Some(stack));
            }
            let shown = match tail.fetch(self.cfn, stack_id).await {
                Ok(events) => tail.show(cx, &events),
                Err(e) => {
                    cx.progress(format!("{status} (could not read stack events: {e})"));
                    true
                }
            };
            if !shown {
                cx.progress(status.clone());
            }
            if started.elapsed() + delay > WAIT_TIMEOUT {
                return Err(StackTimeout { stack: self.name.to_string(), status, timeout: WAIT_TIMEOUT, rerun: self.rerun.to_string() }.into());
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(MAX_DELAY);
        }
    }

    /// After a wait: the outputs on success, else the error with the first failure.
    async fn settle(&self, cx: &StepCx<'_>, op: Op, stack_id: &str, stack: Option<Stack>, tail: &EventTail) -> anyhow::Result<Option<Stack>> {
        let status = stack.as_ref().map(status_of).unwrap_or_else(|| "DELETE_COMPLETE".into());
        if op.success(&status) {
            return Ok(stack);
        }
        let events = match tail.fetch(self.cfn, stack_id).await {
            Ok(ev) => {
                tail.show(cx, &ev);
                ev
            }
            Err(e) => {
                cx.progress(format!("could not read stack events: {e}"));
                Vec::new()
            }
        };
        let (resource, resource_status, reason) = match first_failure(&events, self.name) {
            Some((r, s, reason)) => (Some(r), Some(s), reason),
            None => (None, None, stack.as_ref().and_then(|s| s.stack_status_reason()).map(String::from)),
        };
        let help = match status.as_str() {
            "ROLLBACK_COMPLETE" | "ROLLBACK_FAILED" | "CREATE_FAILED" => {
                Some("fix the cause above, then run `karpctl up --yes`: the failed stack is deleted and created again".to_string())
            }
            "UPDATE_ROLLBACK_COMPLETE" => Some("the stack is back on its previous template; fix the cause above, then run `karpctl up` again".to_string()),
            "UPDATE_ROLLBACK_FAILED" => Some(format!(
                "run `aws cloudformation continue-update-rollback --stack-name {}`, then `karpctl up` again",
                self.name
            )),
            "DELETE_FAILED" => Some(format!("remove what blocks the deletion (see above), then run `karpctl {}` again", self.rerun)),
            _ => None,
        };
        Err(StackFailed { stack: self.name.to_string(), status, resource, resource_status, reason, help }.into())
    }

    /// Deletes the stack (unless a delete is already running) and waits until it is
    /// gone; a `DELETE_FAILED` names the first resource that failed and why.
    pub async fn delete(&self, cx: &StepCx<'_>, stack_id: &str, already_deleting: bool) -> anyhow::Result<()> {
        let since = SystemTime::now();
        let token = (!already_deleting).then(CfnStack::token);
        if let Some(token) = &token {
            cx.progress(format!("deleting stack {}", self.name));
            self.cfn
                .delete_stack()
                .stack_name(stack_id)
                .client_request_token(token)
                .send()
                .await
                .map_err(|e| anyhow::Error::from(aws_err("cloudformation:DeleteStack", &e)).context(format!("deleting stack `{}`", self.name)))?;
        }
        let tail = EventTail::new(self.name, since, token.as_deref());
        let stack = self.wait(cx, stack_id, &tail).await?;
        self.settle(cx, Op::Delete, stack_id, stack, &tail).await?;
        Ok(())
    }
}

impl CfnStack {
    /// The tags the stack carries: the configured ones plus `karpctl.io/step`.
    pub fn desired_tags(&self) -> BTreeMap<String, String> {
        let mut t = self.tags.clone();
        t.insert(STEP_TAG.into(), id(&self.stack_name));
        t
    }

    fn cfn_tags(&self) -> Vec<Tag> {
        self.desired_tags().into_iter().map(|(k, v)| Tag::builder().key(k).value(v).build()).collect()
    }

    fn body(&self) -> anyhow::Result<String> {
        let body = serde_json::to_string(&self.template)?;
        if body.len() > MAX_TEMPLATE_BODY {
            anyhow::bail!(
                "the template for stack `{}` is {} bytes, over CloudFormation's {MAX_TEMPLATE_BODY}-byte limit for an inline template",
                self.stack_name,
                body.len()
            );
        }
        Ok(body)
    }

    fn token() -> String {
        format!("karpctl-{}", uuid::Uuid::new_v4())
    }

    async fn observe_now(&self, cx: &StepCx<'_>) -> anyhow::Result<Value> {
        cx.progress(format!("reading stack {}", self.stack_name));
        let stack = self.calls("up").describe(&self.stack_name).await.map_err(|e| anyhow::Error::from(e).context(format!("reading stack `{}`", self.stack_name)))?;
        let Some(stack) = stack else {
            return Ok(json!({"exists": false, "stackName": self.stack_name}));
        };
        let stack_id = stack.stack_id().unwrap_or(&self.stack_name).to_string();
        let body = self
            .cfn
            .get_template()
            .stack_name(&stack_id)
            .template_stage(TemplateStage::Original)
            .send()
            .await
            .map_err(|e| anyhow::Error::from(aws_err("cloudformation:GetTemplate", &e)).context(format!("reading the template of stack `{}`", self.stack_name)))?;
        let template = body.template_body().map(parse_template).unwrap_or(Value::Null);
        Ok(json!({
            "exists": true,
            "stackName": stack.stack_name().unwrap_or(&self.stack_name),
            "stackId": stack_id,
            "status": status_of(&stack),
            "statusReason": stack.stack_status_reason(),
            "template": template,
            "tags": tags_of(&stack),
            "outputs": outputs_of(&stack),
        }))
    }

    async fn create(&self, cx: &StepCx<'_>) -> anyhow::Result<Value> {
        let body = self.body()?;
        let token = Self::token();
        let since = SystemTime::now();
        cx.progress(format!("creating stack {}", self.stack_name));
        let out = self
            .cfn
            .create_stack()
            .stack_name(&self.stack_name)
            .template_body(body)
            .capabilities(Capability::CapabilityNamedIam)
            .set_tags(Some(self.cfn_tags()))
            .client_request_token(&token)
            .send()
            .await
            .map_err(|e| anyhow::Error::from(aws_err("cloudformation:CreateStack", &e)).context(format!("creating stack `{}`", self.stack_name)))?;
        let stack_id = out.stack_id().unwrap_or(&self.stack_name).to_string();
        let tail = EventTail::new(&self.stack_name, since, Some(&token));
        let calls = self.calls("up");
        let stack = calls.wait(cx, &stack_id, &tail).await?;
        let stack = calls.settle(cx, Op::Create, &stack_id, stack, &tail).await?;
        let stack = stack.ok_or_else(|| anyhow::anyhow!("stack `{}` vanished after it was created", self.stack_name))?;
        Ok(outputs_json(&self.stack_name, &stack))
    }

    async fn update(&self, cx: &StepCx<'_>, observed: &Value) -> anyhow::Result<Value> {
        let stack_id = observed["stackId"].as_str().unwrap_or(&self.stack_name).to_string();
        let body = self.body()?;
        let token = Self::token();
        let since = SystemTime::now();
        cx.progress(format!("updating stack {}", self.stack_name));
        let sent = self
            .cfn
            .update_stack()
            .stack_name(&stack_id)
            .template_body(body)
            .capabilities(Capability::CapabilityNamedIam)
            .set_tags(Some(self.cfn_tags()))
            .client_request_token(&token)
            .send()
            .await;
        if let Err(e) = sent {
            let err = aws_err("cloudformation:UpdateStack", &e);
            if err.is_no_updates() {
                cx.progress("no updates are to be performed");
                return Ok(self.outputs_from(observed));
            }
            return Err(anyhow::Error::from(err).context(format!("updating stack `{}`", self.stack_name)));
        }
        let tail = EventTail::new(&self.stack_name, since, Some(&token));
        let calls = self.calls("up");
        let stack = calls.wait(cx, &stack_id, &tail).await?;
        let stack = calls.settle(cx, Op::Update, &stack_id, stack, &tail).await?;
        let stack = stack.ok_or_else(|| anyhow::anyhow!("stack `{}` vanished while it was updated", self.stack_name))?;
        Ok(outputs_json(&self.stack_name, &stack))
    }

    /// The stack's calls; `rerun` resumes what they were doing.
    fn calls<'a>(&'a self, rerun: &'a str) -> StackCalls<'a> {
        StackCalls { cfn: &self.cfn, name: &self.stack_name, rerun }
    }

    async fn delete(&self, cx: &StepCx<'_>, stack_id: &str) -> anyhow::Result<()> {
        self.calls("up --yes").delete(cx, stack_id, false).await
    }
}

impl Step for CfnStack {
    fn id(&self) -> String {
        id(&self.stack_name)
    }
    fn kind(&self) -> &'static str {
        "cfn-stack"
    }
    fn inputs(&self) -> Value {
        json!({"stackName": self.stack_name, "template": self.template, "tags": self.desired_tags()})
    }
    fn observe<'a>(&'a self, cx: &'a StepCx<'a>) -> BoxFuture<'a, anyhow::Result<Value>> {
        Box::pin(self.observe_now(cx))
    }
    fn diff(&self, observed: &Value, _cx: &StepCx<'_>) -> Change {
        let name = &self.stack_name;
        if observed["exists"] != Value::Bool(true) {
            let n = self.template["Resources"].as_object().map(|r| r.len()).unwrap_or(0);
            return Change::new(Action::Create, format!("create stack {name} ({n} resources)"));
        }
        let status = observed["status"].as_str().unwrap_or_default();
        if needs_replace(status) {
            let why = match status {
                "ROLLBACK_COMPLETE" | "ROLLBACK_FAILED" | "CREATE_FAILED" => "failed to create",
                "DELETE_FAILED" => "failed to delete",
                _ => "was never created (a change set that was not executed)",
            };
            return Change::new(Action::Replace, format!("stack {name} {why} ({status}) and will be deleted and recreated"))
                .with_fields(vec![FieldChange { field: "status".into(), old: Value::String(status.into()), new: "CREATE_COMPLETE".into() }])
                .destructive();
        }
        if in_progress(status) {
            return Change::new(Action::Update, format!("stack {name} is {status}: wait for it to finish, then update it if it still differs"));
        }
        let mut fields = Vec::new();
        if canonical(&observed["template"]) != canonical(&self.template) {
            fields.extend(template_changes(&observed["template"], &self.template));
            if fields.is_empty() {
                fields.push(FieldChange { field: "template".into(), old: "(deployed)".into(), new: "(rendered)".into() });
            }
        }
        let have: BTreeMap<String, String> = serde_json::from_value(observed["tags"].clone()).unwrap_or_default();
        let tags = tag_changes(&have, &self.desired_tags());
        let tags_changed = !tags.is_empty();
        fields.extend(tags);
        if status == "UPDATE_ROLLBACK_FAILED" {
            return Change::new(
                Action::Update,
                format!("stack {name} is UPDATE_ROLLBACK_FAILED: its rollback must be continued (`aws cloudformation continue-update-rollback --stack-name {name}`) before it can be updated"),
            )
            .with_fields(fields);
        }
        if fields.is_empty() {
            return Change::none();
        }
        let count = |pred: &dyn Fn(&FieldChange) -> bool| fields.iter().filter(|f| f.field.starts_with("resources.") && pred(f)).count();
        let added = count(&|f| f.old.is_null());
        let removed = count(&|f| f.new.is_null());
        let changed = count(&|f| !f.old.is_null() && !f.new.is_null());
        let mut parts = Vec::new();
        if added > 0 {
            parts.push(format!("{added} resource{} added", if added == 1 { "" } else { "s" }));
        }
        if changed > 0 {
            parts.push(format!("{changed} changed"));
        }
        if removed > 0 {
            parts.push(format!("{removed} removed"));
        }
        if parts.is_empty() && fields.iter().any(|f| !f.field.starts_with("tags.")) {
            parts.push("template changed".into());
        }
        if tags_changed {
            parts.push("tags changed".into());
        }
        Change::new(Action::Update, format!("update stack {name}: {}", parts.join(", "))).with_fields(fields)
    }
    fn apply<'a>(&'a self, cx: &'a StepCx<'a>, observed: &'a Value, change: &'a Change) -> BoxFuture<'a, anyhow::Result<Value>> {
        Box::pin(async move {
            let mut observed = observed.clone();
            let mut change = change.clone();
            let status = observed["status"].as_str().unwrap_or_default().to_string();
            if in_progress(&status) {
                // Someone else's operation: let it finish, then look again.
                let stack_id = observed["stackId"].as_str().unwrap_or(&self.stack_name).to_string();
                cx.progress(format!("waiting for stack {}: {status}", self.stack_name));
                let tail = EventTail::new(&self.stack_name, SystemTime::now() - EVENT_SKEW, None);
                let calls = self.calls("up");
                let settled = calls.wait(cx, &stack_id, &tail).await?;
                calls.settle(cx, Op::Foreign, &stack_id, settled, &tail).await?;
                observed = self.observe_now(cx).await?;
                change = self.diff(&observed, cx);
                if in_progress(observed["status"].as_str().unwrap_or_default()) {
                    anyhow::bail!("stack `{}` is busy again ({}); run `karpctl up` once it settles", self.stack_name, observed["status"]);
                }
                if change.destructive {
                    anyhow::bail!("{}\nhelp: run `karpctl up --yes` to let karpctl delete and recreate it", change.summary);
                }
            }
            match change.action {
                Action::None => Ok(self.outputs_from(&observed)),
                Action::Create => self.create(cx).await,
                Action::Update => {
                    if observed["status"] == "UPDATE_ROLLBACK_FAILED" {
                        anyhow::bail!(
                            "stack `{0}` is UPDATE_ROLLBACK_FAILED and cannot be updated\nhelp: run `aws cloudformation continue-update-rollback --stack-name {0}`, then `karpctl up` again",
                            self.stack_name
                        );
                    }
                    self.update(cx, &observed).await
                }
                Action::Replace => {
                    let stack_id = observed["stackId"].as_str().unwrap_or(&self.stack_name).to_string();
                    self.delete(cx, &stack_id).await?;
                    self.create(cx).await
                }
                Action::Delete => anyhow::bail!("deleting stack `{}` is not part of this step", self.stack_name),
            }
        })
    }
    fn outputs_from(&self, observed: &Value) -> Value {
        json!({
            "stackName": observed.get("stackName").cloned().unwrap_or_else(|| Value::String(self.stack_name.clone())),
            "stackId": observed.get("stackId").cloned().unwrap_or(Value::Null),
            "status": observed.get("status").cloned().unwrap_or(Value::Null),
            "outputs": observed.get("outputs").cloned().unwrap_or_else(|| json!({})),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(template: Value, tags: &[(&str, &str)]) -> CfnStack {
        let conf = aws_sdk_cloudformation::Config::builder().behavior_version(aws_sdk_cloudformation::config::BehaviorVersion::latest()).build();
        CfnStack {
            stack_name: "Karpenter-demo".into(),
            template,
            tags: tags.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            cfn: aws_sdk_cloudformation::Client::from_conf(conf),
        }
    }

    fn tpl(resources: Value) -> Value {
        json!({"AWSTemplateFormatVersion": "2010-09-09", "Description": "d", "Resources": resources, "Outputs": {}})
    }

    fn observed(s: &CfnStack, status: &str, template: Value) -> Value {
        json!({"exists": true, "stackName": s.stack_name, "stackId": "arn:stack/x", "status": status,
               "template": template, "tags": s.desired_tags(), "outputs": {}})
    }

    fn diff(s: &CfnStack, obs: &Value) -> Change {
        let up = BTreeMap::new();
        let ev = |_e: crate::engine::Event| {};
        let cx = StepCx::new("t", &up, None, &ev);
        s.diff(obs, &cx)
    }

    #[test]
    fn absent_creates_and_failed_create_replaces_destructively() {
        let s = step(tpl(json!({"A": {"Type": "AWS::SQS::Queue"}})), &[("karpctl.io/cluster", "demo")]);
        assert_eq!(diff(&s, &json!({"exists": false})).action, Action::Create);
        let c = diff(&s, &observed(&s, "ROLLBACK_COMPLETE", s.template.clone()));
        assert_eq!(c.action, Action::Replace);
        assert!(c.destructive);
        assert!(c.summary.contains("failed to create") && c.summary.contains("deleted and recreated"), "{}", c.summary);
        let c = diff(&s, &observed(&s, "UPDATE_IN_PROGRESS", s.template.clone()));
        assert_eq!(c.action, Action::Update);
        assert!(c.summary.contains("wait"), "{}", c.summary);
        assert!(!c.destructive);
    }

    #[test]
    fn same_template_in_another_key_order_is_up_to_date() {
        let s = step(tpl(json!({"A": {"Type": "AWS::SQS::Queue", "Properties": {"QueueName": "q", "DelaySeconds": 1}}})), &[]);
        let reordered: Value = serde_json::from_str(
            r#"{"Resources": {"A": {"Properties": {"DelaySeconds": 1, "QueueName": "q"}, "Type": "AWS::SQS::Queue"}}, "Outputs": {}, "Description": "d", "AWSTemplateFormatVersion": "2010-09-09"}"#,
        )
        .unwrap();
        assert_eq!(diff(&s, &observed(&s, "UPDATE_COMPLETE", reordered)), Change::none());
    }

    #[test]
    fn update_names_resources_by_logical_id_and_tags() {
        let old = tpl(json!({"Keep": {"Type": "AWS::SQS::Queue"}, "Gone": {"Type": "AWS::Events::Rule"},
                             "Policy": {"Type": "AWS::IAM::ManagedPolicy", "Properties": {"PolicyDocument": {"Statement": [1]}}}}));
        let s = step(
            tpl(json!({"Keep": {"Type": "AWS::SQS::Queue"}, "New": {"Type": "AWS::IAM::ManagedPolicy"},
                       "Policy": {"Type": "AWS::IAM::ManagedPolicy", "Properties": {"PolicyDocument": {"Statement": [1, 2]}}}})),
            &[("team", "platform")],
        );
        let mut obs = observed(&s, "CREATE_COMPLETE", old);
        obs["tags"]["team"] = "infra".into();
        let c = diff(&s, &obs);
        assert_eq!(c.action, Action::Update);
        let f: BTreeMap<&str, (&Value, &Value)> = c.fields.iter().map(|f| (f.field.as_str(), (&f.old, &f.new))).collect();
        assert_eq!(f["resources.New"], (&Value::Null, &json!("AWS::IAM::ManagedPolicy")));
        assert_eq!(f["resources.Gone"], (&json!("AWS::Events::Rule"), &Value::Null));
        assert!(f["resources.Policy"].1.as_str().unwrap().contains("Properties.PolicyDocument.Statement"), "{:?}", f["resources.Policy"]);
        assert_eq!(f["tags.team"], (&json!("infra"), &json!("platform")));
        assert!(!f.contains_key("resources.Keep"));
        assert_eq!(c.summary, "update stack Karpenter-demo: 1 resource added, 1 changed, 1 removed, tags changed");
    }

    #[test]
    fn a_failed_delete_names_the_first_resource_that_failed() {
        let ev = |id: &str, ty: &str, st: &str, reason: Option<&str>| {
            StackEvent::builder().logical_resource_id(id).resource_type(ty).resource_status(st.into()).set_resource_status_reason(reason.map(String::from)).build()
        };
        let events = vec![
            ev("S", STACK_TYPE, "DELETE_IN_PROGRESS", None),
            ev("Queue", "AWS::SQS::Queue", "DELETE_COMPLETE", None),
            ev("NodeRole", "AWS::IAM::Role", "DELETE_FAILED", Some("Cannot delete entity, must remove roles from instance profile first.")),
            ev("Policy", "AWS::IAM::ManagedPolicy", "DELETE_FAILED", Some("Resource deletion cancelled")),
            ev("S", STACK_TYPE, "DELETE_FAILED", Some("The following resource(s) failed to delete: [NodeRole]")),
        ];
        let (resource, status, reason) = first_failure(&events, "S").unwrap();
        assert_eq!((resource.as_str(), status.as_str()), ("NodeRole", "DELETE_FAILED"));
        assert_eq!(first_failure(&events[4..], "S").unwrap().0, "S", "only the stack's own event");
        assert!(first_failure(&events[..2], "S").is_none());
        let err = StackFailed {
            stack: "S".into(),
            status: "DELETE_FAILED".into(),
            resource: Some(resource),
            resource_status: Some(status),
            reason,
            help: Some("remove what blocks the deletion (see above), then run `karpctl rollback --purge` again".into()),
        };
        assert_eq!(
            err.to_string(),
            "stack `S` ended in DELETE_FAILED: NodeRole DELETE_FAILED: Cannot delete entity, must remove roles from instance profile first.\n\
             help: remove what blocks the deletion (see above), then run `karpctl rollback --purge` again"
        );
    }

    #[test]
    fn first_failure_prefers_the_resource_over_the_stack() {
        let ev = |id: &str, ty: &str, st: &str, reason: Option<&str>| {
            StackEvent::builder()
                .logical_resource_id(id)
                .resource_type(ty)
                .resource_status(st.into())
                .set_resource_status_reason(reason.map(String::from))
                .build()
        };
        let events = vec![
            ev("S", STACK_TYPE, "CREATE_IN_PROGRESS", Some("User Initiated")),
            ev("Role", "AWS::IAM::Role", "CREATE_FAILED", Some("Role exists")),
            ev("Queue", "AWS::SQS::Queue", "CREATE_FAILED", Some("Resource creation cancelled")),
            ev("S", STACK_TYPE, "ROLLBACK_IN_PROGRESS", Some("The following resource(s) failed to create: [Role]")),
        ];
        assert_eq!(first_failure(&events, "S"), Some(("Role".into(), "CREATE_FAILED".into(), Some("Role exists".into()))));
    }

    #[test]
    fn failure_error_carries_resource_reason_and_help() {
        let e = StackFailed {
            stack: "S".into(),
            status: "ROLLBACK_COMPLETE".into(),
            resource: Some("KarpenterNodeRole".into()),
            resource_status: Some("CREATE_FAILED".into()),
            reason: Some("Role with name X already exists.".into()),
            help: Some("run it".into()),
        };
        assert_eq!(e.to_string(), "stack `S` ended in ROLLBACK_COMPLETE: KarpenterNodeRole CREATE_FAILED: Role with name X already exists.\nhelp: run it");
    }
}
