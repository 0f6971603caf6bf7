//! GitHub Actions output of a real crashing run: the `::error` annotations
//! parse back (file, line of the test's frame, title, message, with the
//! workflow-command escaping undone) and the job summary renders as Markdown
//! with a table of the crashes (markdown-it-py).

use std::collections::BTreeMap;
use std::process::Command;

use crate::util::{python, Suite};

const SUITE: &str = r#"import ctypes, os
import pytest


def helper():
    ctypes.string_at(0)


@pytest.mark.parametrize("p", ["a,b:c%d"])
def test_seg(p):
    helper()


class TestK:
    def test_abort(self):
        os.abort()


def test_ok():
    pass
"#;

/// One parsed `::error` command: its properties and message, unescaped.
#[derive(Debug)]
struct Annotation {
    props: BTreeMap<String, String>,
    message: String,
}

fn unescape(s: &str) -> String {
    s.replace("%0D", "\r").replace("%0A", "\n").replace("%3A", ":").replace("%2C", ",").replace("%25", "%")
}

/// Parses workflow commands as the runner does: `::error k=v,k=v::message`.
fn annotations(stdout: &str) -> Vec<Annotation> {
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix("::error "))
        .map(|rest| {
            let (props, message) = rest.split_once("::").expect("::error without a message");
            let props = props
                .split(',')
                .map(|kv| {
                    let (k, v) = kv.split_once('=').expect("property without =");
                    (k.to_string(), unescape(v))
                })
                .collect();
            Annotation { props, message: unescape(message) }
        })
        .collect()
}

fn wrap(s: &Suite, extra: &[&str]) -> crate::util::Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pytest-abort-wrap"));
    cmd.arg("--crash-log").arg(s.crash_log()).arg("--junit-xml").arg(s.path().join("junit.xml")).args(extra);
    cmd.arg("--").arg(python()).args(["-m", "pytest", "-p", "no:cacheprovider", "test_gh.py"]);
    cmd.env("GITHUB_ACTIONS", "true")
        .env("GITHUB_STEP_SUMMARY", s.path().join("summary.md"))
        .env("GITHUB_WORKSPACE", s.path())
        .env("GITHUB_SERVER_URL", "https://github.com")
        .env("GITHUB_REPOSITORY", "o/r")
        .env("GITHUB_RUN_ID", "42");
    s.run_cmd(cmd)
}

/// 1-based line of the first line of SUITE containing `needle`.
fn line_of(needle: &str) -> String {
    (SUITE.lines().position(|l| l.contains(needle)).unwrap() + 1).to_string()
}

#[test]
fn annotations_name_the_tests_line_and_the_summary_renders() {
    let s = Suite::new();
    s.write("test_gh.py", SUITE);
    // The summary file already holds an earlier step's summary: it is appended to.
    s.write("summary.md", "# earlier step\n\n");
    let r = wrap(&s, &[]);
    assert_eq!(r.code(), 1, "{}", r.dump());
    let found = annotations(&r.stdout());
    assert_eq!(found.len(), 2, "one annotation per crash: {}", r.dump());
    let seg = found.iter().find(|a| a.props["title"].starts_with("SIGSEGV")).expect("SIGSEGV annotation");
    assert_eq!(seg.props["file"], "test_gh.py");
    assert_eq!(seg.props["line"], line_of("    helper()"), "the test's frame, not the helper's");
    assert_eq!(seg.props["title"], "SIGSEGV in test_seg[a,b:c%d]");
    assert!(seg.message.contains("crashed with SIGSEGV"), "{seg:?}");
    let abort = found.iter().find(|a| a.props["title"].starts_with("SIGABRT")).expect("SIGABRT annotation");
    assert_eq!(abort.props["title"], "SIGABRT in TestK::test_abort");
    assert_eq!(abort.props["line"], line_of("os.abort()"));

    let summary = std::fs::read_to_string(s.path().join("summary.md")).unwrap();
    assert!(summary.starts_with("# earlier step\n\n## pytest-abort"), "{summary}");
    let render = "import sys\nfrom markdown_it import MarkdownIt\n\
                  print(MarkdownIt('commonmark').enable('table').render(open(sys.argv[1]).read()))";
    let out = Command::new(python()).args(["-c", render]).arg(s.path().join("summary.md")).output().unwrap();
    assert!(out.status.success(), "markdown-it-py: {}", String::from_utf8_lossy(&out.stderr));
    let html = String::from_utf8(out.stdout).unwrap();
    assert_eq!(html.matches("<table>").count(), 1, "{html}");
    assert_eq!(html.matches("<tr>").count(), 3, "header + one row per crash: {html}");
    assert!(html.contains("<td>test_gh.py::test_seg[a,b:c%d]</td>"), "{html}");
    assert!(html.contains("<td>test_gh.py::TestK::test_abort</td>"), "{html}");
    assert!(html.contains("<strong>1 passed, 0 failed, 2 crashed, 0 not run</strong>"), "{html}");
    assert!(html.contains("<a href=\"https://github.com/o/r/actions/runs/42#artifacts\">junit.xml</a>"), "{html}");
}

#[test]
fn no_ci_annotations_turns_it_off() {
    let s = Suite::new();
    s.write("test_gh.py", SUITE);
    let r = wrap(&s, &["--no-ci-annotations"]);
    assert_eq!(r.code(), 1, "{}", r.dump());
    assert!(annotations(&r.stdout()).is_empty(), "{}", r.stdout());
    assert!(!s.path().join("summary.md").exists());
}
