//! The one integration-test binary: golden renders, CRD schema validation, the
//! invalid-config corpus, property tests, the engine and state, CLI behaviour.
#![allow(clippy::print_stderr, clippy::print_stdout)]

mod beds;
mod cfn;
mod cli;
mod crds;
mod docs;
mod engine;
mod golden;
mod helm;
mod hostile;
mod invalid;
mod kube_client;
mod props;
mod rollback;
mod sim;
mod state;
mod steps;
mod support;
mod testbed;
mod up;
