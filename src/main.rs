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
            eprintln!("error: {}", sentence(&e));
            ExitCode::from(1)
        }
    }
}

/// The error and its causes in one line, each cause once: our errors often name their source
/// in their own message already, and anyhow's `{:#}` would repeat it.
fn sentence(e: &anyhow::Error) -> String {
    let mut msg = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !msg.contains(&c) {
            msg.push_str(": ");
            msg.push_str(&c);
        }
    }
    msg
}
