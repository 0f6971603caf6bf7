//! `pytest-abort <command>`: the toolbox of report and crash-file commands.

use std::path::PathBuf;

use clap::Parser;
use pytest_abort::cli_tools::{ToolsCli as Cli, ToolsCmd as Cmd};
use pytest_abort::reporter::terminal::{write_stderr, write_stdout};
use pytest_abort::{compat, completions, reports, shard};

fn handle_abort(args: &compat::HandleAbortArgs) -> i32 {
    match compat::handle_abort(args) {
        Ok(found) => {
            write_stdout(&format!("{found}\n"));
            i32::from(!found)
        }
        Err(e) => {
            write_stderr(&format!("pytest-abort handle-abort: error: {e:#}\n"));
            write_stdout("false\n");
            2
        }
    }
}

fn append(kind: reports::Kind, args: &compat::AppendArgs) -> i32 {
    match compat::append(kind, args) {
        Ok(p) => {
            write_stdout(&format!(
                "{}: added {}{}\n",
                p.path.display(),
                p.added,
                if p.created { " (created)" } else { "" }
            ));
            0
        }
        Err(e) => {
            write_stderr(&format!("pytest-abort append-{kind}: error: {e:#}\n"));
            2
        }
    }
}

fn sanitize_html(paths: &[PathBuf], glob: &str) -> i32 {
    let (modified, total, failed) = reports::sanitize_paths(paths, glob);
    write_stdout(&format!("modified={modified} total={total} failed={failed}\n"));
    i32::from(failed > 0)
}

fn merge(args: &shard::merge::MergeArgs) -> i32 {
    match shard::merge::run(args) {
        Ok(m) => {
            for line in &m.missing {
                write_stderr(&format!("pytest-abort merge: missing shard: {line}\n"));
            }
            for p in &m.written {
                write_stdout(&format!("{}\n", p.display()));
            }
            m.exit_status
        }
        Err(e) => {
            write_stderr(&format!("pytest-abort merge: error: {e:#}\n"));
            let usage = format!("{e:#}").contains("different splits");
            if usage {
                64
            } else {
                74
            }
        }
    }
}

fn main() {
    reports::tune_allocator();
    let cli = Cli::parse();
    let code = match &cli.cmd {
        Cmd::SanitizeHtml { paths, glob } => sanitize_html(paths, glob),
        Cmd::HandleAbort(a) => handle_abort(a),
        Cmd::Merge(a) => merge(a),
        Cmd::AppendJson(a) => append(reports::Kind::Json, a),
        Cmd::AppendHtml(a) => append(reports::Kind::Html, a),
        Cmd::AppendCsv(a) => append(reports::Kind::Csv, a),
        Cmd::Completions(a) => completions::completions_main(a),
        Cmd::Manpage(a) => completions::manpage_main(a),
    };
    std::process::exit(code);
}
