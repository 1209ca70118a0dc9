use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    match stoker::cli::run(stoker::cli::Cli::parse()) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}
