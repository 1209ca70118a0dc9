//! stoker: a Karpenter-style node provisioner and warm-pool manager for Kubernetes on AWS.

pub mod apis;
pub mod calendar;
pub mod cli;
pub mod cloudprovider;
pub mod controllers;
pub mod crontab;
pub mod error;
pub mod metrics;
pub mod operator;
pub mod scheduling;
pub mod state;
pub mod yaml;
