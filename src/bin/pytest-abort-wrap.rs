//! `pytest-abort-wrap [OPTIONS] -- pytest ARGS...`

use clap::Parser;
use pytest_abort::{cli::WrapArgs, run, summary};

fn main() {
    let args = WrapArgs::parse();
    let cfg = args.config();
    match run::run(&cfg) {
        Ok(session) => {
            if cfg.verbose {
                eprint!("{}", summary::render(&session, cfg.max_runs, cfg.crash_log.as_deref()));
            }
            std::process::exit(session.exit_code());
        }
        Err(e) => {
            eprintln!("pytest-abort-wrap: error: {e:#}");
            let msg = format!("{e:#}");
            std::process::exit(if msg.contains("command not found") { 127 } else { 70 });
        }
    }
}
