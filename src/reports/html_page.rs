//! The page a pytest-html report pytest-abort creates starts from (the
//! report file was missing: postprocess, handle-abort, the wrapper's own
//! `--html-report`, a run that died before pytest-html wrote its page).
//!
//! It is a full pytest-html 4.x page with no tests, so pytest_html_merger
//! can take it as the page it fills (the first file in its order) and a
//! browser renders every row the blob holds:
//!
//! - built from the installed pytest-html when the Python that runs the
//!   tests has it: `html_page.py` renders pytest-html's own template with
//!   its CSS and script, as pytest-html writes a self-contained report (run
//!   once per interpreter and process: only creating a page pays for it,
//!   never patching one);
//! - else pytest-abort's own page (`html_page.html`): the same elements
//!   and blob, with a small script of its own that renders the rows.
//!
//! The Python: the one [`use_python`] chose (the wrapper: the interpreter
//! its pytest processes journaled), else `$PYTEST_ABORT_PYTHON`, else
//! `python3` on `PATH`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use super::text::{attr_escape_into, html_escape, py_str_into};

/// Renders the installed pytest-html's empty page (our own script).
const RENDER_PY: &str = include_str!("html_page.py");
/// pytest-abort's own page, for a Python without pytest-html 4.
const BUNDLED: &str = include_str!("html_page.html");
/// The environment variable naming the Python to build pages with.
pub const PYTHON_ENV: &str = "PYTEST_ABORT_PYTHON";
/// The title pages are rendered with, then given the report's file name.
const PLACEHOLDER_TITLE: &str = "report.html";
/// How long the interpreter may take to render the page.
const RENDER_TIMEOUT: Duration = Duration::from_secs(30);

static CHOSEN: Mutex<Option<PathBuf>> = Mutex::new(None);
/// Rendered pages per interpreter (`None`: it has no pytest-html 4).
static RENDERED: Mutex<Option<HashMap<PathBuf, Option<String>>>> = Mutex::new(None);

/// Makes `python` the interpreter new pages are built with in this process
/// (the wrapper: the one that ran the tests).
pub fn use_python(python: &Path) {
    *CHOSEN.lock().unwrap_or_else(|e| e.into_inner()) = Some(python.to_path_buf());
}

/// The interpreter to ask: [`use_python`]'s, `$PYTEST_ABORT_PYTHON`, or
/// `python3` (looked up on `PATH` when run).
fn python() -> PathBuf {
    if let Some(p) = CHOSEN.lock().unwrap_or_else(|e| e.into_inner()).clone() {
        return p;
    }
    match std::env::var_os(PYTHON_ENV) {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from("python3"),
    }
}

/// A new, empty pytest-html page titled `title` (the report's file name,
/// as pytest-html titles its pages).
pub(crate) fn new_page(title: &str) -> String {
    let python = python();
    let page = {
        let mut cache = RENDERED.lock().unwrap_or_else(|e| e.into_inner());
        let cache = cache.get_or_insert_with(HashMap::new);
        cache.entry(python.clone()).or_insert_with(|| render_installed(&python)).clone()
    };
    match page {
        Some(page) => retitle(&page, PLACEHOLDER_TITLE, title),
        None => bundled(title),
    }
}

/// The installed pytest-html's page rendered by `python`, or `None` when
/// it has no pytest-html 4 (or no Python is there, or it fails).
fn render_installed(python: &Path) -> Option<String> {
    let mut cmd = Command::new(python);
    cmd.args(["-c", RENDER_PY, PLACEHOLDER_TITLE]).env("PYTHONIOENCODING", "utf-8");
    let (status, out) = crate::tool::output_within(&mut cmd, RENDER_TIMEOUT)?;
    let out = String::from_utf8(out).ok()?;
    let usable = status.success()
        && out.contains("id=\"data-container\"")
        && out.contains("<script>")
        && out.contains("<p class=\"run-count\">");
    usable.then_some(out)
}

/// pytest-abort's own page titled `title`.
pub(crate) fn bundled(title: &str) -> String {
    let mut json = String::from(
        "{\"environment\": {}, \"tests\": {}, \"renderCollapsed\": [\"passed\"], \"initialSort\": \"result\", \"title\": ",
    );
    py_str_into(title, true, &mut json);
    json.push('}');
    let mut blob = String::new();
    attr_escape_into(&json, &mut blob);
    let date = chrono::Local::now().format("%d-%b-%Y at %H:%M:%S").to_string();
    BUNDLED.replace("@TITLE@", &html_escape(title)).replacen("@DATE@", &date, 1).replacen("@BLOB@", &blob, 1)
}

/// Gives a page titled `from` (in `<title>`, `<h1>` and the blob's
/// `title`) the title `to`, as pytest-html titles a page with its file
/// name.
pub(crate) fn retitle(page: &str, from: &str, to: &str) -> String {
    if from == to {
        return page.to_string();
    }
    let (from_h, to_h) = (html_escape(from), html_escape(to));
    let blob_key = |t: &str| {
        let mut json = String::from("\"title\": ");
        py_str_into(t, true, &mut json);
        let mut esc = String::new();
        attr_escape_into(&json, &mut esc);
        esc
    };
    let (from_b, to_b) = (blob_key(from), blob_key(to));
    page.replacen(
        &format!("<title id=\"head-title\">{from_h}</title>"),
        &format!("<title id=\"head-title\">{to_h}</title>"),
        1,
    )
    .replacen(&format!("<h1 id=\"title\">{from_h}</h1>"), &format!("<h1 id=\"title\">{to_h}</h1>"), 1)
    .replacen(&from_b, &to_b, 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundled_page_escapes_its_title_and_parses() {
        let page = bundled("a\"<b>&'.html");
        assert!(page.contains("<title id=\"head-title\">a&quot;&lt;b&gt;&amp;&#x27;.html</title>"), "{page}");
        assert!(!page.contains("<b>"));
        assert!(!page.contains('@'), "every placeholder filled");
        let back = retitle(&page, "a\"<b>&'.html", "x.html");
        assert!(
            back.contains("<title id=\"head-title\">x.html</title>") && back.contains("<h1 id=\"title\">x.html</h1>")
        );
        assert!(back.contains("&#34;title&#34;: &#34;x.html&#34;"), "{back}");
    }

    #[test]
    fn a_missing_interpreter_renders_nothing() {
        assert!(render_installed(Path::new("/nonexistent/python3")).is_none());
    }
}
