/*!
The one registry of `help:` lines: for an error from any layer, the exact next
command its kind calls for, asked of the error types that know (AWS, Helm, the
state file, Kubernetes apply). [`classify`] is the step runner's view of the same
errors: help, whether the whole run is blocked (AWS could not be asked at all),
and whether a create was refused because the thing exists.
*/

use crate::aws::{Access, AwsError};
use crate::engine::{Blocker, Failure, RunReport};
use crate::helm::HelmError;
use crate::kube::apply::ApplyError;
use crate::state::StateError;
use crate::steps::objects::DryRunRefused;

/// The `help:` line for an error: the first error in its chain whose kind says
/// what to do next. Errors that carry their own `help:` in the text give none.
pub fn for_error(e: &anyhow::Error) -> Option<String> {
    for c in e.chain() {
        if let Some(a) = c.downcast_ref::<AwsError>() {
            return a.help();
        }
        if let Some(h) = c.downcast_ref::<HelmError>() {
            return h.help();
        }
        if let Some(s) = c.downcast_ref::<StateError>() {
            return s.help();
        }
        if let Some(d) = c.downcast_ref::<DryRunRefused>() {
            return Some(d.help());
        }
        if let Some(ApplyError::Conflict { .. }) = c.downcast_ref::<ApplyError>() {
            return Some("`karpctl up --force-conflicts` takes the fields over from the other manager".into());
        }
    }
    if crate::kube::is_transient(e) {
        return Some(
            "the Kubernetes API server did not answer; check it is reachable (`kubectl get --raw /readyz`), then run `karpctl up` again (finished steps are skipped)"
                .into(),
        );
    }
    None
}

/// What a step's error means to the runner ([`crate::engine::Classify`]).
pub fn classify(e: &anyhow::Error) -> Failure {
    Failure {
        help: for_error(e),
        blocker: crate::aws::access_failure(e).and_then(|a| a.access).map(|a| Blocker { key: access_key(a), what: "AWS could not be asked" }),
        already_exists: crate::aws::is_already_exists(e),
    }
}

/// Why AWS could not be asked, when a step of the run failed for that.
pub fn aws_access(report: &RunReport) -> Option<Access> {
    let key = report.blocked_by()?.key;
    ACCESS.iter().find(|a| access_key(**a) == key).copied()
}

const ACCESS: [Access; 6] =
    [Access::NoCredentials, Access::CredentialsFailed, Access::CredentialsRefused, Access::NoRegion, Access::NoSuchHost, Access::Unreachable];

fn access_key(a: Access) -> &'static str {
    match a {
        Access::NoCredentials => "aws-no-credentials",
        Access::CredentialsFailed => "aws-credentials-failed",
        Access::CredentialsRefused => "aws-credentials-refused",
        Access::NoRegion => "aws-no-region",
        Access::NoSuchHost => "aws-no-such-host",
        Access::Unreachable => "aws-unreachable",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_access_problem_has_its_own_key_and_comes_back_from_it() {
        let mut keys: Vec<&str> = ACCESS.iter().map(|a| access_key(*a)).collect();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), ACCESS.len());
        for a in ACCESS {
            let r = RunReport { blocked: Some(Box::new((Blocker { key: access_key(a), what: "x" }, "step".into()))), ..Default::default() };
            assert_eq!(aws_access(&r), Some(a));
        }
        assert_eq!(aws_access(&RunReport::default()), None);
    }

    #[test]
    fn a_conflict_and_a_refused_dry_run_get_their_next_command() {
        let e = anyhow::Error::from(ApplyError::Conflict { reference: "NodePool/x".into(), message: "conflict with kubectl".into() });
        assert!(for_error(&e).unwrap().contains("--force-conflicts"));
        assert_eq!(for_error(&anyhow::anyhow!("plain")), None);
        assert_eq!(classify(&anyhow::anyhow!("plain")), Failure::default());
    }
}
