//! `pytest-abort-wrap [OPTIONS] -- pytest ARGS...`

use clap::Parser;
use pytest_abort::{cli::WrapArgs, run, summary};

fn main() {
    let args = match WrapArgs::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let code = if e.use_stderr() { pytest_abort::error::EXIT_USAGE } else { 0 };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    let cfg = args.config();
    if let Some(nodeid) = &args.reproduce {
        std::process::exit(reproduce(&cfg, nodeid, args.repeat));
    }
    match run::run(&cfg) {
        Ok(session) => {
            if cfg.verbose {
                eprint!("{}", summary::render(&session, cfg.max_runs, cfg.crash_log.as_deref()));
            }
            std::process::exit(session.exit_code());
        }
        Err(e) => fail(e),
    }
}

fn reproduce(cfg: &run::Config, nodeid: &str, repeat: u32) -> i32 {
    let r = match run::reproduce(cfg, nodeid, repeat) {
        Ok(r) => r,
        Err(e) => fail(e),
    };
    if let Some(sig) = r.interrupted {
        return 128 + sig;
    }
    eprintln!("\n=== pytest-abort reproduce ===");
    if !r.found && r.first.is_none() {
        eprintln!("{nodeid}: not collected by the command (check the node id)");
        return 4;
    }
    eprintln!("{nodeid}: crashed {}/{} runs", r.crashed, r.runs);
    if let Some(rec) = &r.first {
        eprint!("{}", summary::forensics(rec));
        return 1;
    }
    0
}

fn fail(e: anyhow::Error) -> ! {
    eprintln!("pytest-abort-wrap: error: {e:#}");
    std::process::exit(pytest_abort::error::exit_code(&e));
}
