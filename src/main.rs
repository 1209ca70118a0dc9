use std::process::ExitCode;

use clap::Parser;

/// jemalloc keeps the controller's memory close to what it uses and returns it after a burst;
/// glibc's per-thread arenas kept more resident (docs/performance.md).
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read before `main`: one arena instead of eight (the controller's threads
/// mostly wait, and per-thread arenas each kept their own free pages) and freed pages returned
/// at once. At 10,000 pods they took the peak from 142 to 121 MiB (docs/performance.md). The
/// environment (`_RJEM_MALLOC_CONF`) still overrides them.
#[cfg(feature = "jemalloc")]
#[unsafe(export_name = "_rjem_malloc_conf")]
static MALLOC_CONF: &[u8; 44] = b"narenas:1,dirty_decay_ms:0,muzzy_decay_ms:0\0";

fn main() -> ExitCode {
    match stoker::cli::run(stoker::cli::Cli::parse()) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::from(error.exit_code())
        }
    }
}
