/*!
karpctl: takes an existing EKS cluster to a working, verified Karpenter setup
and back again. The binary is a thin shell over this library so tests can drive
every layer directly.
*/

pub mod amis;
pub mod aws;
pub mod cli;
pub mod config;
pub mod engine;
pub mod fsutil;
pub mod helm;
pub mod kube;
pub mod model;
pub mod ops;
pub mod output;
pub mod render;
pub mod rollback;
pub mod state;
pub mod steps;
pub mod ui;
