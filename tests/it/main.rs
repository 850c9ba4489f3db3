//! The one integration-test binary: golden renders, CRD schema validation, the
#![allow(clippy::print_stderr, clippy::print_stdout)]
//! invalid-config corpus, property tests and CLI behaviour.

mod cli;
mod crds;
mod golden;
mod invalid;
mod props;
mod support;
