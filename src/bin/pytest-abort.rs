//! `pytest-abort <command>`: the toolbox of report and crash-file commands.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use pytest_abort::{compat, reports};

/// pytest-abort tools.
#[derive(Debug, Parser)]
#[command(name = "pytest-abort", version, arg_required_else_help = true)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
enum Cmd {
    /// Repair pytest-html reports' data-jsonblob so pytest_html_merger can
    /// read them (files, or folders meaning their files matching --glob).
    SanitizeHtml {
        /// HTML files or folders.
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<PathBuf>,
        /// Which files of a folder to sanitize.
        #[arg(long, default_value = reports::DEFAULT_GLOB, value_name = "GLOB")]
        glob: String,
    },
    /// The original's handle_abort for runner scripts: report the crash of a
    /// per-file pytest run (marker or --crash-info) into its json and html
    /// reports and the crash log. Prints true/false; exit 0 when a crash
    /// was reported, 1 when there was none, 2 on error.
    HandleAbort(compat::HandleAbortArgs),
    /// Add one crash (the original's abort info, JSON) to a pytest-json-report file.
    AppendJson(compat::AppendArgs),
    /// Add one crash (the original's abort info, JSON) to a pytest-html report.
    AppendHtml(compat::AppendArgs),
    /// Add one crash (the original's abort info, JSON) to a pytest-csv report.
    AppendCsv(compat::AppendArgs),
}

fn handle_abort(args: &compat::HandleAbortArgs) -> i32 {
    match compat::handle_abort(args) {
        Ok(found) => {
            println!("{found}");
            i32::from(!found)
        }
        Err(e) => {
            eprintln!("pytest-abort handle-abort: error: {e:#}");
            println!("false");
            2
        }
    }
}

fn append(kind: reports::Kind, args: &compat::AppendArgs) -> i32 {
    match compat::append(kind, args) {
        Ok(p) => {
            println!("{}: added {}{}", p.path.display(), p.added, if p.created { " (created)" } else { "" });
            0
        }
        Err(e) => {
            eprintln!("pytest-abort append-{kind}: error: {e:#}");
            2
        }
    }
}

fn sanitize_html(paths: &[PathBuf], glob: &str) -> i32 {
    let (modified, total, failed) = reports::sanitize_paths(paths, glob);
    println!("modified={modified} total={total} failed={failed}");
    i32::from(failed > 0)
}

fn main() {
    let cli = Cli::parse();
    let code = match &cli.cmd {
        Cmd::SanitizeHtml { paths, glob } => sanitize_html(paths, glob),
        Cmd::HandleAbort(a) => handle_abort(a),
        Cmd::AppendJson(a) => append(reports::Kind::Json, a),
        Cmd::AppendHtml(a) => append(reports::Kind::Html, a),
        Cmd::AppendCsv(a) => append(reports::Kind::Csv, a),
    };
    std::process::exit(code);
}
