//! `dlock`: run a command under a distributed lock, inspect and release
//! locks, on any coordinator dlock supports. See `dlock --help`.

mod cli;
mod exit;
mod group;
mod release;
mod run;
mod signals;
mod status;
mod stop;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { exit::USAGE } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    init_logging(cli.verbose, cli.quiet);
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("dlock: cannot start the async runtime: {e}");
            return ExitCode::from(exit::LOCK_ERROR);
        }
    };
    // Everything, including spawning the command and its sentinel, runs on
    // this (main) thread.
    ExitCode::from(rt.block_on(dispatch(cli)))
}

async fn dispatch(cli: cli::Cli) -> u8 {
    let Some(url) = cli.url.clone().filter(|u| !u.trim().is_empty()) else {
        eprintln!(
            "dlock: no coordinator URL: pass --url URL or set DLOCK_URL \
             (e.g. sqlite:///var/lib/dlock/locks.db, postgres://user:pass@host/db); \
             this build supports: {}",
            dlock::supported_schemes().join(", ")
        );
        return exit::USAGE;
    };
    match cli.command {
        cli::Command::Run(args) => {
            let mut signals = match signals::Signals::install() {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("dlock: cannot install signal handlers: {e}");
                    return exit::LOCK_ERROR;
                }
            };
            run::run(&url, args, cli.quiet, &mut signals).await
        }
        cli::Command::Status(args) => status::status(&url, args).await,
        cli::Command::Release(args) => release::release(&url, args, cli.quiet).await,
    }
}

/// Connects and applies `--owner`.
pub(crate) async fn connect(url: &str, owner: Option<&str>) -> dlock::Result<dlock::Locker> {
    let locker = dlock::connect(url).await?;
    match owner {
        Some(o) => locker.with_owner(o),
        None => Ok(locker),
    }
}

fn init_logging(verbose: u8, quiet: bool) {
    let level = match (quiet, verbose) {
        (true, _) => tracing::Level::ERROR,
        (false, 0) => tracing::Level::WARN,
        (false, 1) => tracing::Level::INFO,
        (false, _) => tracing::Level::DEBUG,
    };
    let _ = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}
