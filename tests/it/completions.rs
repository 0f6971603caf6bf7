//! `pytest-abort completions` and `pytest-abort manpage`: the output names
//! the commands' options, bash really completes them, man renders the pages,
//! and the copies the wheel installs (packaging/wheel-data) are current.

use std::path::{Path, PathBuf};
use std::process::Command;

const TOOL: &str = env!("CARGO_BIN_EXE_pytest-abort");

fn tool(args: &[&str]) -> String {
    let out = Command::new(TOOL).args(args).output().expect("run pytest-abort");
    assert!(out.status.success(), "pytest-abort {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// Options of pytest-abort-wrap that every completion and page must name.
const WRAP_OPTIONS: [&str; 4] = ["--crash-log", "--recheck-crashed", "--test-timeout", "--junit-xml"];

#[test]
fn completions_name_every_commands_options_in_each_shell() {
    for shell in ["bash", "zsh", "fish"] {
        let all = tool(&["completions", shell]);
        for cmd in pytest_abort::completions::COMMANDS {
            assert!(all.contains(cmd), "{shell}: no completions for {cmd}");
        }
        let wrap = tool(&["completions", shell, "--command", "pytest-abort-wrap"]);
        for opt in WRAP_OPTIONS {
            // fish names long options without their dashes (-l crash-log).
            let name = if shell == "fish" { opt.trim_start_matches('-') } else { opt };
            assert!(wrap.contains(name), "{shell}: {opt} missing");
        }
        let toolbox = tool(&["completions", shell, "--command", "pytest-abort"]);
        for sub in ["sanitize-html", "handle-abort", "completions", "manpage"] {
            assert!(toolbox.contains(sub), "{shell}: subcommand {sub} missing");
        }
    }
}

#[test]
fn bash_completes_the_wrappers_options() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("pytest-abort-wrap.bash");
    std::fs::write(&script, tool(&["completions", "bash", "--command", "pytest-abort-wrap"])).unwrap();
    // Load the script, find the function it registered for the command
    // (`complete -p`), and ask it for the completions of `pytest-abort-wrap --re`.
    let probe = "source \"$1\" && spec=$(complete -p pytest-abort-wrap) && fn=${spec#*-F } && fn=${fn%% *} && \
                 COMP_WORDS=(pytest-abort-wrap --re) && COMP_CWORD=1 && COMP_LINE='pytest-abort-wrap --re' && \
                 COMP_POINT=${#COMP_LINE} && \"$fn\" pytest-abort-wrap --re pytest-abort-wrap && printf '%s\\n' \"${COMPREPLY[@]}\"";
    let out = Command::new("bash").args(["-c", probe, "probe"]).arg(&script).output().expect("run bash");
    let got = String::from_utf8_lossy(&out.stdout);
    let mut words: Vec<&str> = got.lines().collect();
    words.sort_unstable();
    assert_eq!(
        words,
        ["--recheck-crashed", "--repeat", "--reproduce", "--retry-mode"],
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn man_renders_the_wrappers_page() {
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("pytest-abort-wrap.1");
    std::fs::write(&page, tool(&["manpage"])).unwrap();
    let out = Command::new("man")
        .arg("-l")
        .arg(&page)
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "100")
        .output()
        .expect("run man");
    assert!(out.status.success(), "man -l: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout).replace('\u{2010}', "-");
    assert!(text.contains("pytest-abort-wrap"), "{text}");
    for opt in WRAP_OPTIONS {
        assert!(text.contains(opt), "{opt} missing from the rendered page:\n{text}");
    }
    let retry = tool(&["manpage", "--command", "pytest-abort-retry"]);
    assert!(retry.contains(".TH pytest-abort-retry 1") && retry.contains("clear\\-crash\\-log"), "{retry}");
}

fn files_under(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path.strip_prefix(root).unwrap().to_path_buf());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn the_wheels_completions_and_man_pages_are_current() {
    let dir = tempfile::tempdir().unwrap();
    for shell in ["bash", "zsh", "fish"] {
        tool(&["completions", shell, "--out-dir", dir.path().to_str().unwrap()]);
    }
    tool(&["manpage", "--out-dir", dir.path().to_str().unwrap()]);
    let committed = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/wheel-data/data");
    let fresh = files_under(dir.path());
    assert_eq!(fresh.len(), 16, "{fresh:?}");
    assert_eq!(files_under(&committed), fresh, "run scripts/gen-wheel-data.sh");
    for rel in &fresh {
        let want = std::fs::read(dir.path().join(rel)).unwrap();
        let have = std::fs::read(committed.join(rel)).unwrap();
        assert!(
            want == have,
            "{}: stale; run scripts/gen-wheel-data.sh after changing a command's options",
            rel.display()
        );
    }
}
