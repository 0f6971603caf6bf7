//! pytest-html pages that pytest-abort creates because the file was
//! missing (`pytest-abort-postprocess`, `handle-abort`, the wrapper's own
//! `--html-report`, `pytest-abort merge`) are full pytest-html 4.x pages:
//! pytest_html_merger takes the first file in its reverse-sorted order as
//! the page it fills, so whichever file that is, the merged page opened in
//! a real headless Chromium must show every row, with counters that agree
//! with the rows. Built from the installed pytest-html when the Python that
//! runs the tests has it, else from pytest-abort's own bundled page.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::reports::{blob, chromium_dom};
use crate::util::{python, segv_record, Suite};
use pytest_abort::record::CrashRecord;

/// Where `pytest-abort-postprocess` finds the pytest-html it builds a new
/// page from.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Flavor {
    /// The venv's Python, which has pytest-html 4: its template, CSS and script.
    Installed,
    /// A Python without site-packages (no pytest-html): the bundled page.
    NoPackage,
    /// No Python at all: the bundled page.
    NoPython,
}

impl Flavor {
    const ALL: [Flavor; 3] = [Flavor::Installed, Flavor::NoPackage, Flavor::NoPython];

    /// The value of `PYTEST_ABORT_PYTHON` for this flavor.
    fn python(self, s: &Suite) -> PathBuf {
        match self {
            Flavor::Installed => python(),
            Flavor::NoPackage => {
                let p = s.path().join("python-no-site");
                std::fs::write(&p, format!("#!/bin/sh\nexec '{}' -S \"$@\"\n", python().display())).unwrap();
                use std::os::unix::fs::PermissionsExt as _;
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
                p
            }
            Flavor::NoPython => s.path().join("no-such-python"),
        }
    }
}

const PLAIN: &str = r#"
def test_ok():
    pass

def test_bad():
    assert 1 == 2
"#;

/// Parametrize ids pytest keeps as they are (with the ini option below):
/// quotes, markup, entities, newlines, tabs, unicode, NUL. Markup that runs
/// script from an attribute (`onerror`) is left to the crash records:
/// pytest-html itself puts node ids into its rows unescaped.
const HOSTILE: &str = r#"
import pytest

IDS = ['q"uote', "ap'os", "<script>document.title='PWNED4'</script>", "amp&amp;x", "new\nline", "tab\there",
       "unicod\u00e9\u65e5\u672c\U0001f389", "nul\x00byte", "back\\slash", "</td></tr>x"]

@pytest.mark.parametrize("i", range(40), ids=[f"{IDS[i % 10]}-{i}" for i in range(40)])
def test_p(i):
    if i % 8 == 5:
        pytest.skip("not today")
    assert i % 7 != 3
"#;

const HOSTILE_INI: &str = "[pytest]\ndisable_test_id_escaping_and_forfeit_all_rights_to_community_support = true\n";

/// Crash records with node ids that would run script if unescaped, and
/// every kind of awkward character.
fn hostile_records() -> Vec<CrashRecord> {
    [
        "test_c.py::test_x[<img src=x onerror=\"document.title='PWNED1';document.body.appendChild(document.createElement('pwned'))\">]",
        "test_c.py::test_x[</td></tr><script>document.title='PWNED2'</script>]",
        "test_c.py::test_x[\"'&amp;&lt;]",
        "test_c.py::test_x[line1\nline2\r\n]",
        "test_c.py::test_x[nul\u{0}bell\u{7}esc\u{1b}[31m]",
        "test_c.py::test_x[\u{202e}bidi \u{e9}\u{65e5}\u{1f389}]",
        "test_c.py::test_x[\u{2028}sep\u{2029}]",
        "test_c.py::test_x[{\"tests\": {}}]",
        "test_c.py::test_x[\\\" data-jsonblob=\"{}\"]",
    ]
    .iter()
    .map(|id| CrashRecord {
        traceback: Some("Fatal Python error: Segmentation fault\n</div><script>document.title='PWNED3'</script>".into()),
        ..segv_record(id)
    })
    .collect()
}

/// A real pytest-html page (self-contained) of `suite_py` at `dest`.
fn real_page(s: &Suite, suite_py: &str, ini: Option<&str>, dest: &Path) {
    s.write("test_r.py", suite_py);
    if let Some(ini) = ini {
        s.write("pytest.ini", ini);
    }
    let mut cmd = Command::new(python());
    cmd.args(["-m", "pytest", "-p", "no:cacheprovider", "-q", "test_r.py", "--self-contained-html"]);
    cmd.arg(format!("--html={}", dest.display()));
    let run = s.run_cmd(cmd);
    assert_eq!(run.code(), 1, "{}", run.dump());
    assert!(dest.exists(), "{}", run.dump());
}

/// A page `pytest-abort-postprocess` creates at `dest` for `records`.
fn created_page(s: &Suite, flavor: Flavor, records: &[CrashRecord], dest: &Path) -> String {
    let log = s.path().join(format!("crashes-{}.jsonl", dest.file_stem().unwrap().to_string_lossy()));
    std::fs::write(&log, records.iter().map(CrashRecord::to_json_line).collect::<String>()).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pytest-abort-postprocess"));
    cmd.arg("--crash-log").arg(&log).arg("--html-report").arg(dest).env("PYTEST_ABORT_PYTHON", flavor.python(s));
    let run = s.run_cmd(cmd);
    assert!(dest.exists(), "{flavor:?}: not created\n{}", run.dump());
    std::fs::read_to_string(dest).unwrap()
}

/// Rows the page's script built, per result class.
fn rows(dom: &str) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for part in dom.split("<tbody class=\"results-table-row ").skip(1) {
        let class = part.split(['"', ' ']).next().unwrap().to_string();
        *m.entry(class).or_default() += 1;
    }
    m
}

/// The filter counters (`<span class="failed">3 Failed,</span>`), per class.
fn counters(dom: &str) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for class in ["passed", "failed", "skipped", "error", "xfailed", "xpassed", "rerun"] {
        let open = format!("<span class=\"{class}\">");
        let at = dom.find(&open).unwrap_or_else(|| panic!("no {class} counter"));
        let n: String = dom[at + open.len()..].chars().take_while(char::is_ascii_digit).collect();
        let n: usize = n.parse().unwrap_or_else(|_| panic!("no number in the {class} counter"));
        if n > 0 {
            m.insert(class.to_string(), n);
        }
    }
    m
}

/// Checks a page as Chromium shows it: `want` rows, counters equal to the
/// rows per result, no injected script ran.
fn check_dom(dom: &str, want: usize, what: &str) {
    let r = rows(dom);
    assert_eq!(r.values().sum::<usize>(), want, "{what}: rows shown {r:?}");
    assert_eq!(counters(dom), r, "{what}: counters disagree with the rows");
    for pwned in ["PWNED1", "PWNED2", "PWNED3", "PWNED4"] {
        assert!(!dom.contains(&format!("{pwned}</title>")), "{what}: injected script ran ({pwned})");
    }
    assert!(!dom.contains("<pwned>"), "{what}: injected onerror ran");
}

/// Runs pytest_html_merger on `files` (name in the input folder, source)
/// and returns what Chromium shows of the merged page.
fn merged_dom(s: &Suite, tag: &str, files: &[(&str, &Path)]) -> String {
    let inp = s.path().join(format!("in-{tag}"));
    std::fs::create_dir_all(&inp).unwrap();
    for (name, src) in files {
        std::fs::copy(src, inp.join(name)).unwrap();
    }
    let out = s.path().join(format!("merged-{tag}.html"));
    let st =
        Command::new(python()).args(["-m", "pytest_html_merger", "-i"]).arg(&inp).arg("-o").arg(&out).output().unwrap();
    assert!(st.status.success(), "{tag}: merger failed: {}", String::from_utf8_lossy(&st.stderr));
    chromium_dom(&out)
}

/// The page is a pytest-html 4 page the merger and the browser can use.
fn check_structure(html: &str, flavor: Flavor) {
    for part in [
        "<p>Report generated on ",
        "<table id=\"environment\"",
        "<table id=\"results-table\"",
        "<p class=\"run-count\">",
        "id=\"data-container\" data-jsonblob=\"",
        "<script>",
    ] {
        assert!(html.contains(part), "{flavor:?}: no {part:?} in the page");
    }
    let installed = std::fs::read_to_string(pytest_html_resource("app.js")).unwrap();
    let css = std::fs::read_to_string(pytest_html_resource("style.css")).unwrap();
    let probe = |text: &str| text.lines().find(|l| l.trim().len() > 30).unwrap().trim().to_string();
    let (js_line, css_line) = (probe(&installed), probe(&css));
    let has_installed = html.contains(&js_line) && html.contains(&css_line);
    assert_eq!(has_installed, flavor == Flavor::Installed, "{flavor:?}: pytest-html's own script and CSS");
}

/// A file of the installed pytest-html's resources (read by the test only).
fn pytest_html_resource(name: &str) -> PathBuf {
    let out = Command::new(python())
        .args(["-c", "import importlib.util as u, os; print(os.path.join(u.find_spec('pytest_html').submodule_search_locations[0], 'resources'))"])
        .output()
        .unwrap();
    assert!(out.status.success(), "the venv has no pytest-html");
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim()).join(name)
}

#[test]
fn created_pages_merge_in_any_order_and_show_every_row() {
    let s = Suite::new();
    let real = s.path().join("real.html");
    real_page(&s, PLAIN, None, &real);
    for flavor in Flavor::ALL {
        let created = s.path().join(format!("created-{flavor:?}.html"));
        let html = created_page(&s, flavor, &[segv_record("test_c.py::test_crashed")], &created);
        check_structure(&html, flavor);
        check_dom(&chromium_dom(&created), 1, &format!("{flavor:?} alone"));
        // Reverse-sorted: `z_` is the merger's shell.
        let first =
            merged_dom(&s, &format!("{flavor:?}-first"), &[("z_created.html", &created), ("a_real.html", &real)]);
        check_dom(&first, 3, &format!("{flavor:?}, created page as the shell"));
        let last = merged_dom(&s, &format!("{flavor:?}-last"), &[("a_created.html", &created), ("z_real.html", &real)]);
        check_dom(&last, 3, &format!("{flavor:?}, real page as the shell"));
    }
}

#[test]
fn created_pages_with_hostile_ids_merge_in_any_order() {
    let s = Suite::new();
    let real = s.path().join("real.html");
    real_page(&s, HOSTILE, Some(HOSTILE_INI), &real);
    for flavor in [Flavor::Installed, Flavor::NoPackage] {
        let created = s.path().join(format!("created-{flavor:?}.html"));
        let html = created_page(&s, flavor, &hostile_records(), &created);
        assert_eq!(blob(&html)["tests"].as_object().unwrap().len(), 9, "{flavor:?}");
        assert!(!html.contains("<img src=x") && !html.contains("<script>document"), "{flavor:?}: raw markup");
        check_dom(&chromium_dom(&created), 9, &format!("{flavor:?} alone"));
        let first =
            merged_dom(&s, &format!("{flavor:?}-first"), &[("z_created.html", &created), ("a_real.html", &real)]);
        check_dom(&first, 49, &format!("{flavor:?}, created page as the shell"));
        assert!(first.contains("test_x[&lt;img src=x onerror="), "{flavor:?}: the id shown as text");
        let last = merged_dom(&s, &format!("{flavor:?}-last"), &[("a_created.html", &created), ("z_real.html", &real)]);
        check_dom(&last, 49, &format!("{flavor:?}, real page as the shell"));
    }
}

const CRASHY: &str = r#"
import ctypes

def test_1():
    pass

def test_2():
    ctypes.string_at(0)

def test_3():
    assert False, "plain failure"
"#;

/// `pytest-abort-wrap WRAP_ARGS -- <venv python> -m pytest` with
/// `$PYTEST_ABORT_PYTHON` naming no interpreter: the page can only come
/// from the pytest-html of the interpreter the tests ran in.
fn wrap(s: &Suite, wrap_args: &[&str]) -> crate::util::Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pytest-abort-wrap"));
    cmd.arg("--crash-log").arg(s.crash_log()).args(wrap_args).arg("--").arg(python());
    cmd.args(["-m", "pytest", "-p", "no:cacheprovider"]).env("PYTEST_ABORT_PYTHON", s.path().join("no-such-python"));
    s.run_cmd(cmd)
}

#[test]
fn wrapper_html_report_and_shard_merge_are_full_pages() {
    let s = Suite::new();
    s.write("test_a.py", CRASHY);
    s.write(
        "test_b.py",
        "import pytest\n\ndef test_4():\n    pass\n\n@pytest.mark.skip(reason='no')\ndef test_5():\n    pass\n",
    );
    // The wrapper's own report, no pytest-html page to start from.
    let run = wrap(&s, &["--html-report", "w.html"]);
    assert_eq!(run.code(), 1, "{}", run.dump());
    let w = s.path().join("w.html");
    let html = std::fs::read_to_string(&w).unwrap();
    check_structure(&html, Flavor::Installed);
    assert!(html.contains("<title id=\"head-title\">w.html</title>"), "titled like pytest-html");
    check_dom(&chromium_dom(&w), 5, "wrapper --html-report");

    // Two shards, each with its own created page, merged.
    let mut dirs = Vec::new();
    for k in 1..=2 {
        let dir = s.path().join(format!("shard-{k}"));
        let run = wrap(
            &s,
            &[&format!("--shard={k}/2"), "--html-report", &format!("w{k}.html"), "--out-dir", dir.to_str().unwrap()],
        );
        assert!(run.code() <= 1, "{}", run.dump());
        dirs.push(dir);
    }
    let out = s.path().join("merged");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pytest-abort"));
    cmd.arg("merge").arg(&out).args(&dirs);
    let m = s.run_cmd(cmd);
    assert_eq!(m.code(), 1, "{}", m.dump());
    let merged = out.join("report.html");
    check_structure(&std::fs::read_to_string(&merged).unwrap(), Flavor::Installed);
    check_dom(&chromium_dom(&merged), 5, "pytest-abort merge");
}
