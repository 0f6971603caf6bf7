//! `pytest-abort-wrap [OPTIONS] -- pytest ARGS...`

use clap::Parser;
use pytest_abort::reporter::terminal::{write_stderr, Terminal};
use pytest_abort::reporter::{github::GitHub, jsonl::JsonLines, Reporters};
use pytest_abort::shard::node::Sharding;
use pytest_abort::{cli::WrapArgs, error, run, summary::Summary};

fn main() {
    let args = match WrapArgs::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let code = if e.use_stderr() { error::EXIT_USAGE } else { 0 };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    let mut cfg = args.config();
    let sharding = match &args.reproduce {
        Some(_) => None,
        None => match Sharding::prepare(&args.shard, &|k| std::env::var(k).ok()) {
            Ok(s) => s,
            Err(e) => {
                write_stderr(&format!("pytest-abort-wrap: {e}\n"));
                std::process::exit(error::EXIT_USAGE);
            }
        },
    };
    if let Some(s) = &sharding {
        cfg.extra_env = s.env();
    }
    cfg.gpu = match pytest_abort::gpu::prepare(&args.gpu, &|k| std::env::var(k).ok()) {
        Ok(plan) => plan,
        Err(e) => fail(e.into()),
    };
    let mut out = Reporters::none().with(Terminal::new(args.quiet));
    if !args.no_ci_annotations {
        if let Some(gh) = GitHub::from_env(&|k| std::env::var(k).ok()) {
            out = out.with(gh);
        }
    }
    if let Some(path) = &args.events {
        match JsonLines::create(path) {
            Ok(j) => out = out.with(j),
            Err(e) => fail(e.into()),
        }
    }
    let code = match &args.reproduce {
        Some(nodeid) => run::reproduce(&cfg, nodeid, args.repeat, &out).map(|r| r.exit_code()),
        None => run::run(&cfg, &out).map(|session| {
            let summary = Summary::of(&session, cfg.max_runs, cfg.crash_log.as_deref());
            let code = summary.exit_code;
            out.emit(pytest_abort::reporter::Event::SessionFinished(summary));
            match &sharding {
                Some(s) => s.end(&session, &cfg, code, args.quiet),
                None => code,
            }
        }),
    };
    let code = code.unwrap_or_else(|e| fail(e));
    std::process::exit(with_reporter_failures(&out, code));
}

/// A file reporter (`--events`) that could not write makes the exit status
/// 74, as an unwritten report does (an interrupt's 128+N still wins).
fn with_reporter_failures(out: &Reporters, code: i32) -> i32 {
    let failures = out.failures();
    for f in &failures {
        write_stderr(&format!("pytest-abort-wrap: error: {f}\n"));
    }
    if failures.is_empty() || code > 128 {
        code
    } else {
        error::EXIT_IO
    }
}

fn fail(e: anyhow::Error) -> ! {
    write_stderr(&format!("pytest-abort-wrap: error: {e:#}\n"));
    std::process::exit(error::exit_code(&e));
}
