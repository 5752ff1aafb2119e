//! The `artculture` binary: with no subcommand it opens the GUI, otherwise it runs one command
//! of the CLI. Both call the same library functions.
mod cli;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    artculture::alloc::tune_for_tensors();
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
