"""Writes to stdout an empty pytest-html 4.x report page rendered with the
installed pytest-html's own template, CSS and script, as pytest-html renders
a self-contained report with no tests. Part of pytest-abort (run by
``src/reports/html_page.rs`` with the Python that runs the tests), so a
report it creates looks like, and merges like, the user's other reports.

Usage: python -c <this text> TITLE. Exit status 3: no pytest-html 4 here.
The package is found without being imported (importing it imports pytest).
"""

import datetime
import json
import os
import platform
import sys
from importlib import metadata, util

# The counters pytest-html 4 shows (ReportData's outcomes), in its order.
OUTCOMES = [
    ("failed", "Failed"),
    ("passed", "Passed"),
    ("skipped", "Skipped"),
    ("xfailed", "Expected failures"),
    ("xpassed", "Unexpected passes"),
    ("error", "Errors"),
    ("rerun", "Reruns"),
]
# pytest-html 4.2 added a counter for pytest-retry's results.
RETRIED = ("retried", "Retried")

TABLE_HEAD = [
    '<th class="sortable" data-column-type="result">Result</th>',
    '<th class="sortable" data-column-type="testId">Test</th>',
    '<th class="sortable" data-column-type="duration">Duration</th>',
    "<th>Links</th>",
]


def main() -> int:
    title = sys.argv[1] if len(sys.argv) > 1 else "report.html"
    spec = util.find_spec("pytest_html")
    if spec is None or not spec.submodule_search_locations:
        return 3
    version = metadata.version("pytest-html")
    parts = [int(p) if p.isdigit() else 0 for p in version.split(".")[:2]] + [0]
    if parts[0] != 4:
        return 3
    resources = os.path.join(list(spec.submodule_search_locations)[0], "resources")
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader([resources]),
        autoescape=jinja2.select_autoescape(enabled_extensions=("jinja2",)),
    )
    template = env.get_template("index.jinja2")
    with open(os.path.join(resources, "style.css"), encoding="utf-8") as f:
        css = f.read()
    outcomes = OUTCOMES + ([RETRIED] if parts[1] >= 2 else [])
    data = {
        "environment": {"Python": platform.python_version(), "Platform": platform.platform()},
        "tests": {},
        "renderCollapsed": ["passed"],
        "initialSort": "result",
        "title": title,
    }
    now = datetime.datetime.now()
    page = template.render(
        title=title,
        date=now.strftime("%d-%b-%Y"),
        time=now.strftime("%H:%M:%S"),
        version=version,
        styles=css,
        run_count="0 test took 0 ms.",
        running_state="finished",
        self_contained=True,
        outcomes={k: {"label": label, "value": 0} for k, label in outcomes},
        test_data=json.dumps(data),
        table_head=TABLE_HEAD,
        additional_summary={"prefix": [], "summary": [], "postfix": []},
    )
    sys.stdout.buffer.write(page.encode("utf-8"))
    return 0


sys.exit(main())
