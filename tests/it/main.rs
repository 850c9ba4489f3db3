//! The one integration-test binary: golden renders, CRD schema validation, the
//! invalid-config corpus, property tests, the engine and state, CLI behaviour.
#![allow(clippy::print_stderr, clippy::print_stdout)]

mod beds;
mod cfn;
mod cli;
mod crash;
mod crds;
mod docs;
mod engine;
mod faults;
mod golden;
mod helm;
mod hostile;
mod invalid;
mod output;
mod kube_client;
mod props;
mod rollback;
mod rollout;
mod security;
mod sim;
mod state;
mod steps;
mod support;
mod testbed;
mod up;
mod validators;
mod versions;
