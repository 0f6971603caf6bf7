#!/usr/bin/env python3
"""Side-by-side benchmark of pytest-abort (this repository) against the
original pytest-abort 0.1.0.post2 and plain pytest.

Run through benches/compare.sh, which builds the release binaries and the
venv of the original. Every workload runs its variants alternately
(A B C A B C ...; the order rotates every round), so a machine that is busy
with other work slows all variants alike; the script prints medians and
ratios measured in the same run.

Sizes come from environment variables (defaults in CONFIG); --quick shrinks
them for a smoke run. --only a,b picks workloads: overhead, subprocess,
recovery, postprocess, sanitize, resume.
"""

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench-out"
WORK = OUT / "work"
VENV = OUT / "venv-orig"
VBIN = VENV / "bin"
REL = ROOT / "target" / "release"
WRAP = REL / "pytest-abort-wrap"
POST = REL / "pytest-abort-postprocess"
CLI = REL / "pytest-abort"

CONFIG = {
    # name: (default, quick)
    "BENCH_ROUNDS": (5, 2),  # alternating rounds for the fast workloads
    "BENCH_SLOW_ROUNDS": (3, 1),  # rounds for crash recovery and the original's postprocess/sanitize
    "BENCH_TRIVIAL_TESTS": (2000, 300),
    "BENCH_SUBPROCS": (500, 60),  # subprocesses spawned in total by the suite
    "BENCH_RECOVERY_TESTS": (1000, 100),
    "BENCH_RECOVERY_CRASHES": (5, 2),
    "BENCH_REPORT_TESTS": (5000, 300),
    "BENCH_CRASHES_SMALL": (20, 5),
    "BENCH_CRASHES_LARGE": (200, 20),
    "BENCH_BIG_TESTS": (50000, 1000),  # 0: no big set
    "BENCH_BIG_CRASHES": (2000, 50),
    "BENCH_SANITIZE_FILES": (20, 3),
    "BENCH_CRASHLOG_LINES": (1000000, 20000),  # crash log into all four formats, created from nothing
    "BENCH_CRASHLOG_ROUNDS": (1, 1),
    "BENCH_RESUME_TESTS": (5000, 600),  # the resume workload's suite (in BENCH_RESUME_FILES files)
    "BENCH_RESUME_FILES": (20, 4),
    "BENCH_RESUME_CRASHES": (7, 3),
    "BENCH_RESUME_ROUNDS": (3, 1),
    # The original's postprocess runs only when its estimated time is below
    # this many seconds (estimated from the quadratic fit of the smaller runs).
    "BENCH_ORIG_LIMIT_S": (600, 120),
}


def cfg(name, quick):
    default, q = CONFIG[name]
    return int(os.environ.get(name, q if quick else default))


# --- running and measuring -------------------------------------------------


def _vm_hwm_kb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


class Result:
    def __init__(self, wall, rc, tree_rss_kb, self_hwm_kb, stdout):
        self.wall = wall
        self.rc = rc
        self.tree_rss_kb = tree_rss_kb  # max RSS over the process and every descendant it reaped
        self.self_hwm_kb = self_hwm_kb  # the process's own VmHWM, sampled every 5 ms
        self.stdout = stdout


def measure(cmd, env=None, cwd=None, timeout=None):
    """Runs cmd; wall time, exit status, peak RSS of the tree (wait4) and of
    the process itself (VmHWM polled, since wait4 folds in children)."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    log = open(WORK / "last-run.log", "wb")
    # GNU time reports its child's ru_maxrss. wait4's own figure would be
    # wrong here: Python starts children with vfork, so the child's peak
    # starts at this Python process's RSS.
    rss_file = WORK / "last-run.rss"
    timer = ["/usr/bin/time", "-f", "%M", "-o", str(rss_file)] if os.path.exists("/usr/bin/time") else []
    t0 = time.perf_counter()
    p = subprocess.Popen(timer + [str(c) for c in cmd], env=full_env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
    hwm = [0]
    stop = threading.Event()

    def target():
        # Under GNU time the command is time's child.
        if not timer:
            return p.pid
        try:
            with open(f"/proc/{p.pid}/task/{p.pid}/children") as f:
                kids = f.read().split()
            return int(kids[0]) if kids else None
        except (OSError, ValueError):
            return None

    def poll():
        while not stop.is_set():
            pid = target()
            v = _vm_hwm_kb(pid) if pid else None
            if v:
                hwm[0] = max(hwm[0], v)
            stop.wait(0.005)

    th = threading.Thread(target=poll, daemon=True)
    th.start()
    deadline = None if timeout is None else t0 + timeout
    while True:
        pid, status, ru = os.wait4(p.pid, os.WNOHANG if deadline else 0)
        if pid == p.pid:
            break
        if deadline and time.perf_counter() > deadline:
            p.kill()
            pid, status, ru = os.wait4(p.pid, 0)
            break
        time.sleep(0.01)
    wall = time.perf_counter() - t0
    stop.set()
    th.join()
    p.returncode = os.waitstatus_to_exitcode(status)
    log.close()
    tree_rss = ru.ru_maxrss
    if timer:
        try:
            tree_rss = int(rss_file.read_text().strip().splitlines()[-1])
        except (OSError, ValueError, IndexError):
            pass
    return Result(wall, p.returncode, tree_rss, hwm[0], (WORK / "last-run.log").read_text(errors="replace"))


SECTION = [""]


def alternate(variants, rounds, prepare=None, check=None):
    """variants: list of (name, cmd, env, cwd). Runs them in rounds, order
    rotating each round. Returns {name: [Result, ...]}."""
    results = {v[0]: [] for v in variants}
    for r in range(rounds):
        order = variants[r % len(variants):] + variants[: r % len(variants)]
        for name, cmd, env, cwd in order:
            if prepare:
                prepare(name)
            res = measure(cmd, env, cwd)
            if check:
                check(name, res)
            results[name].append(res)
            RAW.append({"workload": SECTION[0], "variant": name, "round": r + 1, "wall_s": res.wall, "rc": res.rc,
                        "tree_maxrss_kb": res.tree_rss_kb, "self_vmhwm_kb": res.self_hwm_kb})
            print(f"    round {r + 1}/{rounds} {name:<28} {res.wall:8.3f} s  rc={res.rc}", flush=True)
    return results


def med(rs):
    return statistics.median(x.wall for x in rs)


def peak(rs, field="tree_rss_kb"):
    return max(getattr(x, field) for x in rs)


def mib(kb):
    return f"{kb / 1024:.1f}"


class Table:
    def __init__(self, title, header):
        self.title = title
        self.header = header
        self.rows = []

    def add(self, *row):
        self.rows.append([str(c) for c in row])

    def render(self):
        lines = [f"### {self.title}", "", "| " + " | ".join(self.header) + " |", "|" + "---|" * len(self.header)]
        lines += ["| " + " | ".join(r) + " |" for r in self.rows]
        return "\n".join(lines) + "\n"


TABLES = []
NOTES = []
RAW = []  # every measured run, written to bench-out/compare-raw.json


def emit(table):
    TABLES.append(table)
    print()
    print(table.render(), flush=True)


def note(text):
    NOTES.append(text)
    print("NOTE:", text, flush=True)


# --- the suites ------------------------------------------------------------


def fresh(path):
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def pytest_cmd(*args):
    return [VBIN / "python", "-m", "pytest", "-q", "-p", "no:cacheprovider", *args]


def install_shim():
    """The shim alone (no wrapper): the package put first on PYTHONPATH with
    its own dist-info and named by PYTEST_ABORT_WRAP_SHIM, as the wrapper
    does (so its bytecode is cached there from the first round on)."""
    root = fresh(WORK / "shimpy")
    shutil.copytree(ROOT / "shim" / "pytest_abort", root / "pytest_abort", ignore=shutil.ignore_patterns("__pycache__"))
    dist = root / "pytest_abort-0.1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: pytest-abort\nVersion: 0.1.0\n")
    (dist / "entry_points.txt").write_text("[pytest11]\npytest_abort = pytest_abort\n")
    return root


def wl_overhead(quick):
    n = cfg("BENCH_TRIVIAL_TESTS", quick)
    rounds = cfg("BENCH_ROUNDS", quick)
    d = fresh(WORK / "trivial")
    (d / "test_trivial.py").write_text(
        "import pytest\n\n\n@pytest.mark.parametrize('i', range(%d))\ndef test_trivial(i):\n    pass\n" % n
    )
    markers = fresh(WORK / "trivial-markers")
    state = fresh(WORK / "trivial-shimstate")
    (state / "plan.json").write_text('{"run": 1}')  # as the wrapper writes one before each run
    shim = install_shim()
    shim_env = {
        "PYTHONPATH": str(shim),
        "PYTEST_ABORT_WRAP_SHIM": str(shim),
        "PYTEST_PLUGINS": "pytest_abort",
        "PYTEST_ABORT_WRAP_STATE": str(state),
        "PYTEST_ABORT_WRAP_RUN": "1",
        "PYTEST_ABORT_LAST_RUNNING_DIR": str(markers),
    }
    variants = [
        ("plain pytest", pytest_cmd("-p", "no:pytest_abort", "test_trivial.py"), {}, d),
        ("original plugin (markers)", pytest_cmd("test_trivial.py"), {"PYTEST_ABORT_LAST_RUNNING_DIR": str(markers)}, d),
        ("shim alone (markers+journal)", pytest_cmd("test_trivial.py"), shim_env, d),
        ("wrapper (ptrace)", [WRAP, "-q", "--", *pytest_cmd("test_trivial.py")], {}, d),
        ("wrapper --no-ptrace", [WRAP, "-q", "--no-ptrace", "--", *pytest_cmd("test_trivial.py")], {}, d),
        ("wrapper --test-timeout 60", [WRAP, "-q", "--test-timeout", "60", "--", *pytest_cmd("test_trivial.py")], {}, d),
    ]

    def check(name, res):
        if res.rc != 0 or f"{n} passed" not in res.stdout:
            raise SystemExit(f"overhead: {name} failed (rc={res.rc}):\n{res.stdout[-3000:]}")

    print(f"\n== per-test overhead: {n} trivial tests, {rounds} rounds", flush=True)
    rs = alternate(variants, rounds, check=check)
    plain = med(rs["plain pytest"])
    orig = med(rs["original plugin (markers)"])
    t = Table(
        f"Per-test overhead: {n} trivial tests (median of {rounds} alternating rounds)",
        ["variant", "median wall (s)", "x plain pytest", "x plain, median of the rounds' ratios", "x original plugin",
         "extra ms/test over plain", "peak RSS"],
    )
    for name, _, _, _ in variants:
        m = med(rs[name])
        # Each round runs every variant back to back: the median of the
        # per-round ratios is less moved by a machine whose speed drifts.
        paired = statistics.median(x.wall / p.wall for x, p in zip(rs[name], rs["plain pytest"]))
        if name.startswith("wrapper"):
            rss = f"wrapper itself {mib(peak(rs[name], 'self_hwm_kb'))} MiB; tree {mib(peak(rs[name]))} MiB"
        else:
            rss = f"{mib(peak(rs[name]))} MiB"
        t.add(name, f"{m:.3f}", f"{m / plain:.3f}", f"{paired:.3f}", f"{m / orig:.3f}", f"{(m - plain) * 1000 / n:+.3f}", rss)
    emit(t)
    extra_orig = (orig - plain) / n
    extra_shim = (med(rs["shim alone (markers+journal)"]) - plain) / n
    ratio = extra_shim / extra_orig if extra_orig > 0 else float("nan")
    note(
        f"overhead: shim per-test cost {extra_shim * 1000:.3f} ms vs original plugin {extra_orig * 1000:.3f} ms "
        f"= {ratio:.2f} of the original's (target <= 0.33)"
    )
    note(
        f"overhead: wrapper (ptrace) {med(rs['wrapper (ptrace)']) / plain:.3f}x plain pytest (target <= 1.05 issue 6, "
        f"<= 1.10 issue 2), original plugin {orig / plain:.3f}x; watchdog (--test-timeout 60) "
        f"{med(rs['wrapper --test-timeout 60']) / med(rs['wrapper (ptrace)']):.3f}x the wrapper without it; "
        f"wrapper's own peak RSS {mib(max(peak(rs[v], 'self_hwm_kb') for v in rs if v.startswith('wrapper')))} MiB "
        f"(target < 20 MiB)"
    )


def wl_subprocess(quick):
    total = cfg("BENCH_SUBPROCS", quick)
    rounds = cfg("BENCH_ROUNDS", quick)
    tests = 50
    per = max(1, total // tests)
    d = fresh(WORK / "subproc")
    (d / "test_subproc.py").write_text(
        "import subprocess\nimport pytest\n\n\n@pytest.mark.parametrize('i', range(%d))\n"
        "def test_spawn(i):\n    for _ in range(%d):\n        subprocess.run(['/bin/true'], check=True)\n" % (tests, per)
    )
    variants = [
        ("plain pytest", pytest_cmd("-p", "no:pytest_abort", "test_subproc.py"), {}, d),
        ("wrapper (ptrace)", [WRAP, "-q", "--", *pytest_cmd("test_subproc.py")], {}, d),
        ("wrapper --no-ptrace", [WRAP, "-q", "--no-ptrace", "--", *pytest_cmd("test_subproc.py")], {}, d),
    ]

    def check(name, res):
        if res.rc != 0:
            raise SystemExit(f"subprocess: {name} failed (rc={res.rc}):\n{res.stdout[-3000:]}")

    print(f"\n== subprocesses: {tests} tests spawning {tests * per} /bin/true in total, {rounds} rounds", flush=True)
    rs = alternate(variants, rounds, check=check)
    plain = med(rs["plain pytest"])
    nopt = med(rs["wrapper --no-ptrace"])
    t = Table(
        f"ptrace vs --no-ptrace: {tests} tests spawning {tests * per} short subprocesses (median of {rounds} rounds)",
        ["variant", "median wall (s)", "x plain pytest", "x --no-ptrace", "peak RSS (wrapper itself)"],
    )
    for name, _, _, _ in variants:
        m = med(rs[name])
        rss = mib(peak(rs[name], "self_hwm_kb")) + " MiB" if name.startswith("wrapper") else "-"
        t.add(name, f"{m:.3f}", f"{m / plain:.3f}", f"{m / nopt:.3f}", rss)
    emit(t)
    note(f"subprocess: ptrace {med(rs['wrapper (ptrace)']) / nopt:.3f}x --no-ptrace (target <= 1.05)")


CRASH_CONFTEST = """\
import os


def pytest_runtest_setup(item):
    fd = os.open(os.environ["BENCH_STARTS"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (item.nodeid + "\\n").encode())
    finally:
        os.close(fd)
"""


def wl_recovery(quick):
    n = cfg("BENCH_RECOVERY_TESTS", quick)
    k = cfg("BENCH_RECOVERY_CRASHES", quick)
    rounds = cfg("BENCH_SLOW_ROUNDS", quick)
    d = fresh(WORK / "recovery")
    files = 10
    per = n // files
    crash_at = {int((j + 0.5) * n / k) for j in range(k)}
    for f in range(files):
        body = ["import ctypes", "import pytest", "", ""]
        for i in range(f * per, (f + 1) * per):
            body.append(f"def test_{i:05d}():")
            body.append("    ctypes.string_at(0)" if i in crash_at else "    pass")
            body.append("")
        (d / f"test_part{f:02d}.py").write_text("\n".join(body))
    (d / "conftest.py").write_text(CRASH_CONFTEST)
    starts = WORK / "recovery-starts.txt"
    clog = WORK / "recovery-crash.jsonl"
    markers = fresh(WORK / "recovery-markers")

    def prepare(_name):
        for p in (starts, clog):
            if p.exists():
                p.unlink()

    counts = {}

    def check(name, res):
        lines = starts.read_text().splitlines() if starts.exists() else []
        counts.setdefault(name, []).append((len(lines), len(set(lines))))

    env = {"BENCH_STARTS": str(starts)}
    for xdist in ([], ["-n", "2"]):
        label = "serial" if not xdist else "-n 2"
        args = [*xdist, "."]
        variants = [
            (
                "original pytest-abort-retry",
                [VBIN / "pytest-abort-retry", "--crash-log", clog, "--max-runs", "10", "--", "pytest", "-q",
                 "-p", "no:cacheprovider", *args],
                # As its README says to run it: markers on, crash log exported.
                {**env, "PYTEST_ABORT_LAST_RUNNING_DIR": str(markers), "PYTEST_ABORT_CRASHED_TESTS_LOG": str(clog)},
                d,
            ),
            ("wrapper --retry-mode resume",
             [WRAP, "-q", "--retry-mode", "resume", "--max-runs", "10", "--", *pytest_cmd(*args)], env, d),
            ("wrapper --retry-mode deselect",
             [WRAP, "-q", "--retry-mode", "deselect", "--max-runs", "10", "--", *pytest_cmd(*args)], env, d),
        ]
        SECTION[0] = f"recovery {label}"
        print(f"\n== crash recovery ({label}): {n} tests, {k} segfaults at {sorted(crash_at)}, {rounds} rounds", flush=True)
        counts.clear()
        rs = alternate(variants, rounds, prepare=prepare, check=check)
        orig = med(rs["original pytest-abort-retry"])
        t = Table(
            f"Crash recovery, {label}: {n} tests, {k} real segfaults (median of {rounds} rounds)",
            ["variant", "median wall (s)", "x original", "test starts", "distinct tests started (of %d)" % n,
             "exit status", "peak RSS (tree)"],
        )
        for name, _, _, _ in variants:
            m = med(rs[name])
            c = counts[name][-1]
            same = all(x == c for x in counts[name])
            t.add(name, f"{m:.3f}", f"{m / orig:.3f}", f"{c[0]}" + ("" if same else " (varied: %s)" % counts[name]),
                  c[1], rs[name][-1].rc, f"{mib(peak(rs[name]))} MiB")
        emit(t)


# --- report workloads ------------------------------------------------------


def gen_report_set(n):
    """A json+html+csv+junit set from a real pytest run of n tests (cached)."""
    d = WORK / f"reports-{n}"
    done = d / "done"
    if done.exists():
        return d
    fresh(d)
    suite = d / "suite"
    suite.mkdir()
    (suite / "tests").mkdir()
    files = max(1, n // 500)
    for f in range(files):
        (suite / "tests" / f"test_generated_module_{f:03d}.py").write_text(
            "import pytest\n\n\nclass TestKernels:\n"
            "    @pytest.mark.parametrize('case', range(%d, %d))\n"
            "    def test_matmul_dtype_float32(self, case):\n"
            "        if case %% 50 == 7:\n            print('kernel launch', case)\n"
            "        if case %% 100 == 3:\n            assert case == -1, f'mismatch at {case}'\n"
            "        if case %% 200 == 11:\n            pytest.skip('needs a second device')\n"
            % (f * n // files, (f + 1) * n // files)
        )
    print(f"    generating a {n}-test report set with the real plugins ...", flush=True)
    t0 = time.perf_counter()
    r = subprocess.run(
        [VBIN / "python", "-m", "pytest", "-q", "-p", "no:pytest_abort", "-p", "no:cacheprovider", "tests",
         "--json-report", f"--json-report-file={d / 'report.json'}", f"--html={d / 'report.html'}",
         "--self-contained-html", f"--csv={d / 'report.csv'}", f"--junitxml={d / 'report.xml'}"],
        cwd=suite, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    if not (d / "report.html").exists():
        raise SystemExit(f"report generation failed:\n{r.stdout[-3000:]}")
    print(f"    ... {time.perf_counter() - t0:.1f} s; html {(d / 'report.html').stat().st_size / 1e6:.2f} MB", flush=True)
    done.write_text("ok")
    return d


def crash_log(path, k):
    """k crash records in the original plugin's fields, for tests the reports lack."""
    with open(path, "w") as f:
        for i in range(k):
            f.write(json.dumps({
                "test_name": f"test_kernel[{i}]", "test_class": f"test_kernel[{i}]",
                "nodeid": f"tests/test_crashy_{i % 40:02d}.py::test_kernel[{i}]",
                "reason": "Test crashed (segmentation fault, abort, or other fatal error) - detected from last running file",
                "crash_time": "2026-11-26T21:25:37.%06d" % i, "duration": 0.5, "gpu_id": str(i % 8),
                "pid": str(4000 + i), "source": f"xdist:gw{i % 8}", "logged_at": "2026-11-26T21:25:38.000001",
            }) + "\n")


def wl_postprocess(quick):
    rounds = cfg("BENCH_ROUNDS", quick)
    slow_rounds = cfg("BENCH_SLOW_ROUNDS", quick)
    limit = cfg("BENCH_ORIG_LIMIT_S", quick)
    n_small = cfg("BENCH_REPORT_TESTS", quick)
    n_big = cfg("BENCH_BIG_TESTS", quick)
    cases = [
        (n_small, cfg("BENCH_CRASHES_SMALL", quick)),
        (n_small, cfg("BENCH_CRASHES_LARGE", quick)),
        (n_big, cfg("BENCH_BIG_CRASHES", quick)),
    ]
    cases = [c for c in cases if c[0] > 0 and c[1] > 0]  # BENCH_BIG_TESTS=0 leaves the big set out
    t = Table(
        "Postprocess: crashes into a json+html+csv set made by the real plugins",
        ["tests", "crashes", "largest file (html)", "original (s)", "ours json+html+csv (s)", "original / ours",
         "ours +junit (s)", "cp of the 4 files (s)", "ours +junit / cp", "peak RSS original",
         "peak RSS ours (x largest file)"],
    )
    fit = []  # (crashes, tests, seconds) of the original
    for tests, k in cases:
        src = gen_report_set(tests)
        html_size = (src / "report.html").stat().st_size
        run = WORK / "pp-run"
        clog = WORK / f"crashes-{k}.jsonl"
        crash_log(clog, k)

        def prepare(_name, src=src, run=run):
            fresh(run)
            for ext in ("json", "html", "csv", "xml"):
                shutil.copy(src / f"report.{ext}", run / f"report.{ext}")

        def args(junit, run=run, clog=clog):
            a = ["--crash-log", clog, "--json-report", run / "report.json", "--html-report", run / "report.html",
                 "--csv-report", run / "report.csv"]
            return a + (["--junit-xml", run / "report.xml"] if junit else [])

        orig_cmd = ("original", [VBIN / "pytest-abort-postprocess", *args(False)], {}, None)
        # The floor: copying the same four files (process start included).
        cp = ("cp of the 4 files", ["cp", *[src / f"report.{e}" for e in ("json", "html", "csv", "xml")],
                                    WORK / "pp-cp"], {}, None)
        (WORK / "pp-cp").mkdir(parents=True, exist_ok=True)
        ours = [("ours", [POST, *args(False)], {}, None), ("ours +junit", [POST, *args(True)], {}, None), cp]

        def check(name, res):
            if res.rc != 0:
                raise SystemExit(f"postprocess: {name} failed (rc={res.rc}):\n{res.stdout[-3000:]}")

        # Estimate the original's time from the runs so far: per crash it
        # rereads and rewrites the whole set, so time ~ crashes x set size.
        est = None
        if fit:
            c0, t0, s0 = fit[-1]
            est = s0 * (k / c0) * (tests / t0)  # a lower bound: it also grows the json per crash
        SECTION[0] = f"postprocess {k} crashes into {tests} tests"
        print(f"\n== postprocess {k} crashes into {tests} tests (html {html_size / 1e6:.2f} MB)"
              + (f"; original estimated {est:.0f} s" if est else ""), flush=True)
        rs = alternate(ours, rounds, prepare=prepare, check=check)
        orig_med = None
        orig_rss = None
        if est is not None and est > limit:
            note(f"postprocess: original not run for {k} crashes into {tests} tests: estimated {est:.0f} s "
                 f"(> {limit} s limit), extrapolated from its {fit[-1][0]}-crash run")
        else:
            r_orig = slow_rounds if (est is None or est < 60) else 1
            if r_orig == 1:
                note(f"postprocess: the original ran once (not alternated) for {k} crashes into {tests} tests")
            ro = alternate([orig_cmd], r_orig, prepare=prepare, check=check)["original"]
            orig_med = med(ro)
            orig_rss = peak(ro)
            fit.append((k, tests, orig_med))
        m = med(rs["ours"])
        mj = med(rs["ours +junit"])
        mc = med(rs["cp of the 4 files"])
        rss = peak(rs["ours"] + rs["ours +junit"])
        t.add(tests, k, f"{html_size / 1e6:.2f} MB", f"{orig_med:.2f}" if orig_med else f"not run (est. {est:.0f})",
              f"{m:.3f}", f"{orig_med / m:.0f}x" if orig_med else f">{est / m:.0f}x (est.)", f"{mj:.3f}",
              f"{mc:.3f}", f"{mj / mc:.2f}x",
              f"{mib(orig_rss)} MiB" if orig_rss else "-", f"{mib(rss)} MiB ({rss * 1024 / html_size:.2f}x)")
    emit(t)


def wl_sanitize(quick):
    rounds = cfg("BENCH_ROUNDS", quick)
    slow_rounds = cfg("BENCH_SLOW_ROUNDS", quick)
    nfiles = cfg("BENCH_SANITIZE_FILES", quick)
    src = gen_report_set(cfg("BENCH_REPORT_TESTS", quick)) / "report.html"
    d = WORK / "sanitize"

    def prepare(_name):
        fresh(d)
        for i in range(nfiles):
            shutil.copy(src, d / f"shard{i:02d}_log.html")

    def check(name, res):
        if res.rc != 0:
            raise SystemExit(f"sanitize: {name} failed (rc={res.rc}):\n{res.stdout[-3000:]}")

    orig = ("original", [VBIN / "python", "-c",
                         "import sys; from pytest_abort.abort_handling import sanitize_all_html_jsonblobs as s; "
                         "print(s(sys.argv[1]))", d], {}, None)
    ours = ("ours", [CLI, "sanitize-html", d], {}, None)
    print(f"\n== sanitize {nfiles} html files of {src.stat().st_size / 1e6:.2f} MB", flush=True)
    # The original is ~100x slower: alternate it with ours for slow_rounds,
    # then add rounds of ours alone.
    rs = alternate([orig, ours], slow_rounds, prepare=prepare, check=check)
    rs["ours"] += alternate([ours], max(0, rounds - slow_rounds), prepare=prepare, check=check)["ours"]
    o, m = med(rs["original"]), med(rs["ours"])
    t = Table(
        f"Sanitize {nfiles} pytest-html files of {src.stat().st_size / 1e6:.2f} MB",
        ["variant", "median wall (s)", "original / ours", "peak RSS"],
    )
    t.add("original sanitize_all_html_jsonblobs", f"{o:.3f}", "1", f"{mib(peak(rs['original']))} MiB")
    t.add("pytest-abort sanitize-html", f"{m:.3f}", f"{o / m:.0f}x", f"{mib(peak(rs['ours']))} MiB")
    emit(t)


def wl_crashlog(quick):
    """A huge crash log (bad input at scale) into all four formats, each
    created from nothing: wall time and peak memory against the size of the
    largest output."""
    n = cfg("BENCH_CRASHLOG_LINES", quick)
    rounds = cfg("BENCH_CRASHLOG_ROUNDS", quick)
    clog = WORK / f"crashes-{n}.jsonl"
    if not clog.exists():
        print(f"    writing a {n}-line crash log ...", flush=True)
        crash_log(clog, n)
    run = WORK / "crashlog-run"
    outs = {"json": run / "r.json", "html": run / "r.html", "csv": run / "r.csv", "xml": run / "r.xml"}

    def prepare(_name):
        fresh(run)

    def check(name, res):
        if res.rc != 0:
            raise SystemExit(f"crashlog: {name} failed (rc={res.rc}):\n{res.stdout[-3000:]}")

    cmd = [POST, "--crash-log", clog, "--json-report", outs["json"], "--html-report", outs["html"],
           "--csv-report", outs["csv"], "--junit-xml", outs["xml"]]
    SECTION[0] = f"crash log of {n} lines into four new reports"
    print(f"\n== {SECTION[0]} ({clog.stat().st_size / 1e6:.0f} MB)", flush=True)
    rs = alternate([("ours", cmd, {}, None)], rounds, prepare=prepare, check=check)["ours"]
    sizes = {k: p.stat().st_size for k, p in outs.items()}
    largest = max(sizes.values())
    rss = peak(rs)
    t = Table(
        f"A crash log of {n} lines ({clog.stat().st_size / 1e6:.0f} MB) into four reports created from nothing",
        ["median wall (s)", "peak RSS", "largest output", "peak RSS / largest output", "outputs (MB)"],
    )
    t.add(f"{med(rs):.2f}", f"{mib(rss)} MiB", f"{largest / 1e6:.0f} MB", f"{rss * 1024 / largest:.2f}",
          ", ".join(f"{k} {v / 1e6:.0f}" for k, v in sizes.items()))
    emit(t)
    fresh(run)
# --- resume after crashes without collecting again -------------------------

RESUME_MODULE = """\
\"\"\"Generated benchmark module {f}: parametrized checks of a small numeric kernel.\"\"\"
import asyncio
import collections
import contextlib
import dataclasses
import decimal
import email.message
import enum
import fractions
import functools
import http.client
import inspect
import itertools
import json
import logging
import re
import sqlite3
import statistics
import typing
import unittest.mock
import urllib.parse
import xml.etree.ElementTree as ET

import pytest

from support import kernels_{f:02d} as kernels
from support.common import DTYPES, SHAPES, make_case

OPS = {ops!r}


class Layout(enum.Enum):
    ROW = "row"
    COL = "col"


@pytest.fixture(scope="module")
def table():
    return {{op: kernels.reference(op) for op in OPS}}


@pytest.mark.parametrize("layout", [Layout.ROW, pytest.param(Layout.COL, marks=pytest.mark.slow)], ids=lambda v: v.value)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("op", OPS)
def test_kernel(op, shape, dtype, layout, table, rng):
    case = make_case(op, shape, dtype, layout.value)
    got = kernels.apply(case, rng)
    assert table[op] > 0
    assert got == pytest.approx(got)


class TestRoundTrip:
    @pytest.mark.parametrize("n", range({rest}))
    def test_json(self, n, rng):
        data = {{"n": n, "vals": [rng.random() for _ in range(8)], "name": f"case-{{n}}"}}
        assert json.loads(json.dumps(data)) == data
        assert decimal.Decimal(n) + decimal.Decimal(1) > 0 and fractions.Fraction(n, 3) >= 0
"""

RESUME_KERNELS = """\
\"\"\"Project code the tests import (generated).\"\"\"
import math
import random

from .common import Case


def reference(op):
    return sum(ord(c) for c in op) / 7.0


def apply(case: Case, rng: random.Random) -> float:
    acc = 0.0
    for i in range(case.work):
        acc += math.sin(i * case.scale) * rng.random()
    return acc
"""

RESUME_HELPER = """

def helper_{i}(x, y=1, *, z=None):
    \"\"\"Helper {i}.\"\"\"
    if z is None:
        z = [x] * y
    return sum(v * {i} for v in z) + len(str(x))
"""

RESUME_COMMON = """\
import dataclasses

DTYPES = ["float16", "bfloat16", "float32", "float64", "int8"]
SHAPES = [(1,), (7,), (16, 16), (3, 5, 7), (128,)]


@dataclasses.dataclass(frozen=True)
class Case:
    op: str
    shape: tuple
    dtype: str
    layout: str
    scale: float
    work: int


def make_case(op, shape, dtype, layout):
    size = 1
    for s in shape:
        size *= s
    return Case(op, shape, dtype, layout, 1.0 / (1 + size), 60)
"""

RESUME_CONFTEST = """\
import ctypes
import os
import random

import pytest

_CRASH = set()
if os.environ.get("BENCH_CRASH_IDS"):
    with open(os.environ["BENCH_CRASH_IDS"], encoding="utf-8") as f:
        _CRASH = {line.rstrip("\\n") for line in f if line.strip()}


@pytest.fixture
def rng(request):
    return random.Random(request.node.nodeid)


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: slow variants")


def pytest_runtest_setup(item):
    fd = os.open(os.environ["BENCH_STARTS"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (item.nodeid + "\\n").encode())
    finally:
        os.close(fd)


def pytest_runtest_call(item):
    if item.nodeid in _CRASH:
        ctypes.string_at(0)
"""


def gen_resume_suite(d, n, files):
    """A suite of n tests in `files` modules under d/tests whose collection
    costs what a real one does: each module imports a set of stdlib
    packages and a generated project module (400 functions), and builds its
    tests from four stacked parametrizations plus a parametrized class;
    conftest fixtures, an ini with testpaths and pythonpath. Tests do a
    little work each (a 60-step loop, a JSON round trip)."""
    ops = ["add", "mul", "fma", "dot"]
    kernel_tests = len(ops) * 5 * 5 * 2
    per = n // files
    if per <= kernel_tests:
        raise SystemExit(f"resume: {n} tests in {files} files is too few per file (need > {kernel_tests})")
    sup = d / "tests" / "support"
    sup.mkdir(parents=True)
    (d / "pytest.ini").write_text("[pytest]\ntestpaths = tests\npythonpath = tests\n")
    (d / "tests" / "conftest.py").write_text(RESUME_CONFTEST)
    (sup / "__init__.py").write_text("")
    (sup / "common.py").write_text(RESUME_COMMON)
    for f in range(files):
        (d / "tests" / f"test_ops_{f:02d}.py").write_text(RESUME_MODULE.format(f=f, ops=ops, rest=per - kernel_tests))
        (sup / f"kernels_{f:02d}.py").write_text(RESUME_KERNELS + "".join(RESUME_HELPER.format(i=i) for i in range(400)))
    return per * files


def wl_resume(quick):
    n = cfg("BENCH_RESUME_TESTS", quick)
    nfiles = cfg("BENCH_RESUME_FILES", quick)
    k = cfg("BENCH_RESUME_CRASHES", quick)
    rounds = cfg("BENCH_RESUME_ROUNDS", quick)
    d = fresh(WORK / "resume")
    n = gen_resume_suite(d, n, nfiles)
    starts = WORK / "resume-starts.txt"
    clog = WORK / "resume-crash.jsonl"
    markers = fresh(WORK / "resume-markers")
    ids_file = WORK / "resume-crash-ids.txt"
    base = {"BENCH_STARTS": str(starts)}
    r = subprocess.run(pytest_cmd("-p", "no:pytest_abort", "--collect-only"), cwd=d, env={**os.environ, **base},
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    ids = [line for line in r.stdout.splitlines() if "::" in line]
    if len(ids) != n:
        raise SystemExit(f"resume: collected {len(ids)} of {n} tests:\n{r.stdout[-3000:]}")
    crash_ids = [ids[int((j + 0.5) * n / k)] for j in range(k)]
    ids_file.write_text("".join(i + "\n" for i in crash_ids))
    crash = {**base, "BENCH_CRASH_IDS": str(ids_file)}
    baseline = os.environ.get("BENCH_BASELINE_WRAP")

    def prepare(_name):
        for p in (starts, clog):
            if p.exists():
                p.unlink()

    counts = {}

    def check(name, res):
        lines = starts.read_text().splitlines() if starts.exists() else []
        counts.setdefault(name, []).append((len(lines), len(set(lines))))
        if "wrapper" in name and (len(lines) != n or res.rc != 1):
            raise SystemExit(f"resume: {name}: {len(lines)} starts of {n} tests, rc={res.rc}:\n{res.stdout[-3000:]}")

    for xdist in ([], ["-n", "2"]):
        label = "serial" if not xdist else "-n 2"
        wrap = ["-q", "--max-runs", str(k + 3), "--"]
        variants = [
            ("plain pytest --collect-only", pytest_cmd("-p", "no:pytest_abort", "--collect-only", *xdist), base, d),
            ("plain pytest, no crashes", pytest_cmd("-p", "no:pytest_abort", *xdist), base, d),
            (f"wrapper, {k} crashes", [WRAP, *wrap, *pytest_cmd(*xdist)], crash, d),
        ]
        if not xdist:
            variants.append(
                (f"wrapper --fresh-resume, {k} crashes", [WRAP, "--fresh-resume", *wrap, *pytest_cmd()], crash, d))
        if baseline:
            variants.append((f"baseline wrapper, {k} crashes", [baseline, *wrap, *pytest_cmd(*xdist)], crash, d))
        if xdist:
            variants.append((
                f"original pytest-abort-retry, {k} crashes",
                [VBIN / "pytest-abort-retry", "--crash-log", clog, "--max-runs", str(k + 3), "--", "pytest", "-q",
                 "-p", "no:cacheprovider", *xdist],
                {**crash, "PYTEST_ABORT_LAST_RUNNING_DIR": str(markers), "PYTEST_ABORT_CRASHED_TESTS_LOG": str(clog)},
                d,
            ))
        SECTION[0] = f"resume {label}"
        print(f"\n== resume ({label}): {n} tests in {nfiles} files, {k} segfaults, {rounds} rounds", flush=True)
        counts.clear()
        rs = alternate(variants, rounds, prepare=prepare, check=check)
        plain = med(rs["plain pytest, no crashes"])
        t = Table(
            f"Resume, {label}: {n} tests in {nfiles} files, {k} real segfaults (median of {rounds} alternating rounds)",
            ["variant", "median wall (s)", "x plain pytest without crashes", "test starts",
             f"distinct tests started (of {n})", "exit status"],
        )
        for name, _, _, _ in variants:
            m = med(rs[name])
            c = counts[name][-1]
            t.add(name, f"{m:.3f}", f"{m / plain:.3f}", c[0], c[1], rs[name][-1].rc)
        emit(t)
        coll = med(rs["plain pytest --collect-only"])
        note(f"resume ({label}): collection alone (pytest --collect-only, start-up included) {coll:.2f} s = "
             f"{coll / plain:.2f} of the plain run; wrapper with {k} crashes {med(rs[f'wrapper, {k} crashes']) / plain:.3f}x "
             f"plain pytest without crashes (target <= 1.3 serial)")


WORKLOADS = {
    "overhead": wl_overhead,
    "subprocess": wl_subprocess,
    "recovery": wl_recovery,
    "postprocess": wl_postprocess,
    "sanitize": wl_sanitize,
    "crashlog": wl_crashlog,
    "resume": wl_resume,
}


def machine():
    cpu = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = subprocess.run(["free", "-h"], capture_output=True, text=True).stdout.strip()
    return cpu, mem


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes, few rounds (smoke run)")
    ap.add_argument("--only", default="", help="comma-separated workloads: " + ", ".join(WORKLOADS))
    ap.add_argument("--markdown", default=str(OUT / "compare.md"), help="also write the tables here")
    a = ap.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    # The wrapper's compiled plugin, fresh for this run: the first wrapper
    # run of a workload compiles it, as a user's first run does; later runs
    # load its bytecode. PYTHONDONTWRITEBYTECODE is left as the caller has it.
    os.environ["PYTEST_ABORT_CACHE_DIR"] = str(fresh(WORK / "shim-cache"))
    for b in (WRAP, POST, CLI, VBIN / "pytest-abort-postprocess"):
        if not Path(b).exists():
            raise SystemExit(f"missing {b}: run benches/compare.sh")
    cpu, mem = machine()
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    print(f"compare.py: {started}; {os.cpu_count()} CPUs ({cpu}); python {platform.python_version()}", flush=True)
    only = [w for w in a.only.split(",") if w] or list(WORKLOADS)
    for w in only:
        if w not in WORKLOADS:
            raise SystemExit(f"unknown workload {w!r}")
    t0 = time.perf_counter()
    for w in only:
        SECTION[0] = w
        WORKLOADS[w](a.quick)
    total = time.perf_counter() - t0
    text = [f"# compare.py results ({'quick' if a.quick else 'full'} mode)", "",
            f"- date: {started}; took {total:.0f} s", f"- CPU: {cpu}; nproc {os.cpu_count()}", "- memory:", "```",
            mem, "```", "- sizes: " + ", ".join(f"{k}={cfg(k, a.quick)}" for k in CONFIG), ""]
    text += [t.render() for t in TABLES]
    text += ["## Notes", ""] + [f"- {n}" for n in NOTES]
    Path(a.markdown).write_text("\n".join(text) + "\n")
    Path(a.markdown).with_name("compare-raw.json").write_text(json.dumps(RAW, indent=1))
    print("\n".join(["", "== summary"] + [f"- {n}" for n in NOTES]))
    print(f"\ntables written to {a.markdown}; {total:.0f} s in all")


if __name__ == "__main__":
    main()
