//! `tapectl`: drive a tape library (changer and LTO drives) over SG_IO, iSCSI or the virtual library.

mod cli;
mod cli_key;
mod cli_ltfs;
mod cli_media;
mod cli_rotation;
mod cli_set;
mod fuse_mount;
mod output;
mod progress;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Args::parse();
    // Rust ignores SIGPIPE, so `tapectl ... --json | head` would panic in println!; a command whose
    // reader went away ends quietly, as other Unix tools do.
    // SAFETY: setting a signal's disposition to the default before any thread starts.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let filter = if args.verbose { "debug" } else { "warn" };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RACKVAULT_LOG")
                .unwrap_or_else(|_| filter.into()),
        )
        .with_writer(std::io::stderr)
        // Colour only on a terminal: not in a log file or the journal.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let json = args.json();
    match cli::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let code = cli::exit_code(&e);
            common::report::print_exit_error("tapectl", &e, code, json);
            ExitCode::from(code)
        }
    }
}
