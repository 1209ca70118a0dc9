//! Warm pools: cron-scheduled headroom held as preemptible pause pods.

pub mod admission;
pub mod pause;
pub mod preemption;
pub mod reconcile;
pub mod shape;
pub mod windows;
