//! The standard process metrics every Prometheus client exports (`process_cpu_seconds_total`,
//! `process_resident_memory_bytes`, ...), read from `/proc/self` at each scrape, unprefixed as
//! dashboards and alerts expect them. Where `/proc` cannot be read (not Linux), nothing is
//! exported rather than zeros.

use procfs::WithCurrentSystemInfo;
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{counter::ConstCounter, gauge::ConstGauge},
};

/// What one scrape reads.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcessFigures {
    pub cpu_seconds: f64,
    pub resident_memory_bytes: u64,
    pub virtual_memory_bytes: u64,
    pub start_time_seconds: u64,
    pub open_fds: Option<u64>,
    pub max_fds: Option<u64>,
}

impl ProcessFigures {
    /// This process's figures now, or `None` where `/proc/self` cannot be read.
    pub fn read() -> Option<Self> {
        let process = procfs::process::Process::myself().ok()?;
        let stat = process.stat().ok()?;
        let ticks = procfs::ticks_per_second() as f64;
        let boot = procfs::boot_time_secs().ok()?;
        let max_fds = process.limits().ok().and_then(|limits| match limits.max_open_files.soft_limit {
            procfs::process::LimitValue::Value(value) => Some(value),
            procfs::process::LimitValue::Unlimited => None,
        });
        Some(Self {
            cpu_seconds: (stat.utime + stat.stime) as f64 / ticks,
            resident_memory_bytes: stat.rss_bytes().get(),
            virtual_memory_bytes: stat.vsize,
            start_time_seconds: boot + stat.starttime / procfs::ticks_per_second(),
            open_fds: process.fd_count().ok().map(|count| count as u64),
            max_fds,
        })
    }
}

/// Registered once; reads the figures at each scrape.
#[derive(Debug, Default)]
pub struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(figures) = ProcessFigures::read() else { return Ok(()) };
        let cpu = ConstCounter::new(figures.cpu_seconds);
        cpu.encode(encoder.encode_descriptor(
            "process_cpu_seconds", // the encoder adds `_total` to counters
            "Total user and system CPU time spent in seconds",
            None,
            cpu.metric_type(),
        )?)?;
        let gauges = [
            ("process_resident_memory_bytes", "Resident memory size in bytes", Some(figures.resident_memory_bytes)),
            ("process_virtual_memory_bytes", "Virtual memory size in bytes", Some(figures.virtual_memory_bytes)),
            (
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds",
                Some(figures.start_time_seconds),
            ),
            ("process_open_fds", "Number of open file descriptors", figures.open_fds),
            ("process_max_fds", "Maximum number of open file descriptors", figures.max_fds),
        ];
        for (name, help, value) in gauges {
            let Some(value) = value else { continue };
            let gauge = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_of_this_process_are_plausible() {
        let figures = ProcessFigures::read().expect("/proc/self is readable on Linux");
        assert!(figures.resident_memory_bytes > 1 << 20, "{figures:?}");
        assert!(figures.virtual_memory_bytes >= figures.resident_memory_bytes);
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        assert!(figures.start_time_seconds <= now && figures.start_time_seconds > now - 86_400, "{figures:?}");
        assert!(figures.open_fds.is_some_and(|fds| fds >= 3));
    }
}
