/*!
karpctl: takes an existing EKS cluster to a working, verified Karpenter setup
and back again. The binary is a thin shell over this library so tests can drive
every layer directly.

Without the default `cli` feature only the offline core is built (config,
model, render, the state format, json, fsutil): it has no cloud clients, so the fuzz
targets link it in minutes.
*/

#[cfg(feature = "cli")]
pub mod amis;
#[cfg(feature = "cli")]
pub mod aws;
#[cfg(feature = "cli")]
pub mod cli;
pub mod config;
#[cfg(feature = "cli")]
pub mod engine;
pub mod fsutil;
#[cfg(feature = "cli")]
pub mod helm;
#[cfg(feature = "cli")]
pub mod help;
pub mod json;
#[cfg(feature = "cli")]
pub mod kube;
pub mod model;
#[cfg(feature = "cli")]
pub mod ops;
#[cfg(feature = "cli")]
pub mod output;
pub mod render;
#[cfg(feature = "cli")]
pub mod rollback;
pub mod state;
#[cfg(feature = "cli")]
pub mod steps;
#[cfg(feature = "cli")]
pub mod ui;
