use std::process::ExitCode;

use clap::Parser;

/// jemalloc keeps the controller's memory close to what it uses and returns it after a burst;
/// glibc's per-thread arenas kept more resident (docs/performance.md).
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    match stoker::cli::run(stoker::cli::Cli::parse()) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}
