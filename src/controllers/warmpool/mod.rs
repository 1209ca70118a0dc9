//! Warm pools: cron-scheduled headroom held as preemptible pause pods.

pub mod windows;
