"""What metrics cost: ``session_scope()`` with MONITORING on vs off vs a hand-written session.

Run from the repository root (``make bench``)::

    python -m bench.bench_metrics [--mode processes|switch] [--rounds N] [--scopes N] [-v]

Every variant runs ``SELECT 1`` in its own transaction, ``--scopes`` times per
round, on PostgreSQL:

(a) raw: ``create_engine()`` on the same URL with the same pool settings (queue
    pool of 5, overflow 10, pre-ping on) and ``with Session(engine) as s,
    s.begin(): s.execute(text("SELECT 1"))``;
(b) ``session_scope()`` with ``MONITORING`` False;
(c) ``session_scope()`` with ``MONITORING`` True and the default thresholds
    (``LEAK_THRESHOLD`` 30 s, ``SLOW_QUERY_THRESHOLD`` 1 s).

The variants take turns round by round, the order rotating (a b c, b c a,
c a b, ...), so that drift from other work on the machine hits all three alike.
``MONITORING`` is global, so (b) and (c) cannot share an engine. By default
(``--mode processes``) each variant has its own long-lived worker process,
with its engine built once and its connection kept warm, and only one worker
runs at a time; rounds can then be short and finely interleaved.
``--mode switch`` runs all three in this process instead, switching
``settings.MINGUS_SESSIONS`` and calling ``conf.invalidate()`` (which rebuilds
the engine) before each round; (a) then also gets a fresh engine per round.
Every round starts with an untimed warm-up and a ``gc.collect()``.

Printed: median µs per scope over the rounds, the p95 and the best of the
per-round means, ratios to (a), the metrics overhead (c)/(b) against the 3% budget, the
Python calls per scope (deterministic, so a regression shows without timing
noise), and memory over ``--memory-scopes`` scopes with metrics on.

The database: ``MINGUS_BENCH_DB`` names an existing one to reuse; otherwise
``mingus_bench`` is created (through an admin connection to ``dbname=postgres``)
and dropped at the end. ``PGHOST``, ``PGPORT``, ``PGUSER`` and ``PGPASSWORD``
are honoured. The exit status is 0 unless something fails; a budget overrun is
reported, not turned into a failure.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import math
import os
import platform
import statistics
import sys
import time
import tracemalloc
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

#: The issue's budget for metrics, as a fraction of a SELECT 1 scope.
METRICS_BUDGET = 0.03
#: DESIGN.md's budget for a monitored scope against a hand-written session.
SCOPE_BUDGET = 1.05

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DB = "mingus_bench"

RAW, OFF, ON = "a", "b", "c"
LABELS = {
    RAW: "(a) raw SQLAlchemy Session",
    OFF: "(b) session_scope, metrics off",
    ON: "(c) session_scope, metrics on",
}


# -- the database ---------------------------------------------------------------------------


def _admin_params() -> dict[str, Any]:
    return {
        "host": os.environ.get("PGHOST", "127.0.0.1"),
        "port": int(os.environ.get("PGPORT", "5432")),
        "user": os.environ.get("PGUSER", "postgres"),
        "password": os.environ.get("PGPASSWORD") or None,
        "dbname": "postgres",
        "autocommit": True,
    }


@contextlib.contextmanager
def bench_database() -> Iterator[str]:
    """The database to run in: ``MINGUS_BENCH_DB`` as is, or a fresh one dropped afterwards."""
    given = os.environ.get("MINGUS_BENCH_DB")
    if given:
        yield given
        return
    import psycopg
    from psycopg import errors, sql

    name = DEFAULT_DB
    with psycopg.connect(**_admin_params()) as admin:
        try:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        except errors.DuplicateDatabase:
            # Someone else's run (or a killed one of ours) holds the name: do
            # not drop what we did not create.
            name = f"{DEFAULT_DB}_{os.getpid()}"
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    os.environ["MINGUS_BENCH_DB"] = name
    try:
        yield name
    finally:
        os.environ.pop("MINGUS_BENCH_DB", None)
        with psycopg.connect(**_admin_params()) as admin:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def setup_django(settings_module: str = "bench.settings") -> None:
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    os.environ["DJANGO_SETTINGS_MODULE"] = settings_module
    # The environment must not override the MONITORING this benchmark sets.
    os.environ.pop("DB_ENABLE_MONITORING", None)
    import django

    django.setup()


# -- the variants ---------------------------------------------------------------------------


def use_monitoring(on: bool, **overrides: Any) -> None:
    """Switch MONITORING (and other top-level keys) and drop the engine; the next scope builds it.

    Keys not given keep the values of ``bench/settings.py``.
    """
    from django.conf import settings

    from bench import settings as bench_settings
    from mingus_sessions import conf

    value = dict(bench_settings.MINGUS_SESSIONS)
    value["MONITORING"] = on
    value.update(overrides)
    settings.MINGUS_SESSIONS = value
    conf.invalidate()


def check_monitoring(on: bool) -> None:
    from mingus_sessions._core.recorder import PoolRecorder
    from mingus_sessions.engines import get_entry

    probe = get_entry().probe
    if isinstance(probe, PoolRecorder) != on:
        raise RuntimeError(f"MONITORING={on} expected, but the pool has {type(probe).__name__}")


def make_scope_loop() -> Callable[[int], None]:
    from sqlalchemy import text

    from mingus_sessions import session_scope

    def scope_loop(n: int) -> None:
        for _ in range(n):
            with session_scope() as s:
                s.execute(text("SELECT 1"))

    return scope_loop


def raw_engine(pool_size: int = 5, max_overflow: int = 10, pre_ping: bool = True) -> Any:
    """A plain engine on the pool's URL, with the pool settings the scopes get."""
    from sqlalchemy import create_engine
    from sqlalchemy.pool import QueuePool

    from mingus_sessions import get_engine

    url = get_engine().url
    return create_engine(
        url,
        poolclass=QueuePool,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_timeout=30,
        pool_recycle=1800,
        pool_pre_ping=pre_ping,
    )


def make_raw_loop(engine: Any) -> Callable[[int], None]:
    from sqlalchemy import text
    from sqlalchemy.orm import Session

    def raw_loop(n: int) -> None:
        for _ in range(n):
            with Session(engine) as s, s.begin():
                s.execute(text("SELECT 1"))

    return raw_loop


class Raw:
    """Variant (a): a fresh engine per round, as (b) and (c) get one per switch."""

    def __init__(self) -> None:
        self.engine: Any = None

    def prepare(self) -> Callable[[int], None]:
        if self.engine is not None:
            self.engine.dispose()
        self.engine = raw_engine()
        return make_raw_loop(self.engine)

    def close(self) -> None:
        if self.engine is not None:
            self.engine.dispose()
            self.engine = None


def prepare(variant: str, raw: Raw) -> Callable[[int], None]:
    if variant == RAW:
        return raw.prepare()
    on = variant == ON
    use_monitoring(on)
    check_monitoring(on)
    return make_scope_loop()


def timed_round(loop: Callable[[int], None], scopes: int, warmup: int) -> tuple[float, float]:
    """Run ``scopes`` scopes after an untimed warm-up; wall and CPU µs per scope.

    The CPU time is this thread's (user + system): the client side of a scope,
    without the server's work and without the time spent waiting for it.
    """
    loop(warmup)
    gc.collect()
    cpu_started = time.thread_time_ns()
    started = time.perf_counter_ns()
    loop(scopes)
    elapsed = time.perf_counter_ns() - started
    cpu = time.thread_time_ns() - cpu_started
    return elapsed / scopes / 1000.0, cpu / scopes / 1000.0


class InProcess:
    """All three variants in this process: MONITORING switched (engine rebuilt) per round."""

    description = "in one process, MONITORING switched and the engine rebuilt before each round"

    def __init__(self, raw: Raw) -> None:
        self.raw = raw

    def measure(self, variant: str, scopes: int, warmup: int) -> tuple[float, float]:
        return timed_round(prepare(variant, self.raw), scopes, warmup)

    def close(self) -> None:
        pass


class Workers:
    """One long-lived worker process per variant, each with its engine built once.

    The workers take turns (only one runs at any time); each keeps its warm
    engine, connection and server backend, so the rounds can be short and
    interleaved finely. All run with the same PYTHONHASHSEED, so that they lay
    out their dicts alike.
    """

    description = "one worker process per variant (engines built once), taking turns"

    def __init__(self, variants: list[str], warmup: int) -> None:
        import subprocess

        env = dict(os.environ, PYTHONHASHSEED="0")
        env.setdefault("PYTHONPATH", str(ROOT))
        self.procs: dict[str, Any] = {}
        for variant in variants:
            self.procs[variant] = subprocess.Popen(
                [sys.executable, "-m", "bench.bench_metrics", "--worker", variant],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                cwd=ROOT,
                env=env,
            )
        for variant in variants:
            self._ask(variant, f"warm {warmup}")

    def _ask(self, variant: str, command: str) -> str:
        proc = self.procs[variant]
        proc.stdin.write(command + "\n")
        proc.stdin.flush()
        answer: str = proc.stdout.readline()
        if not answer:
            raise RuntimeError(f"worker {variant} ended (exit status {proc.wait()})")
        return answer

    def measure(self, variant: str, scopes: int, warmup: int) -> tuple[float, float]:
        wall_us, cpu_us = self._ask(variant, f"run {scopes} {warmup}").split()
        return float(wall_us), float(cpu_us)

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                with contextlib.suppress(OSError):
                    proc.stdin.write("quit\n")
                    proc.stdin.flush()
        for proc in self.procs.values():
            proc.wait(timeout=30)


def worker(variant: str) -> int:
    """A worker of :class:`Workers`: variant ``variant``, served over stdin/stdout."""
    setup_django()
    raw = Raw()
    try:
        serve(prepare(variant, raw))
    finally:
        raw.close()
        from mingus_sessions import dispose_engines

        dispose_engines()
    return 0


def serve(loop: Callable[[int], None]) -> None:
    """Answer ``warm N`` (ok), ``run N WARMUP`` (wall and CPU µs per scope); stop on ``quit``."""
    for line in sys.stdin:
        command, *numbers = line.split()
        if command == "warm":
            loop(int(numbers[0]))
            print("ok", flush=True)
        elif command == "run":
            wall_us, cpu_us = timed_round(loop, int(numbers[0]), int(numbers[1]))
            print(f"{wall_us} {cpu_us}", flush=True)
        else:
            break


# -- statistics -----------------------------------------------------------------------------


def p95(values: list[float]) -> float:
    """Nearest-rank 95th percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]


def quartiles(values: list[float]) -> tuple[float, float]:
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[0], q[2]


# -- deterministic guard: Python calls per scope -----------------------------------------------


def count_calls(loop: Callable[[int], None], scopes: int) -> tuple[float, float, Counter[str]]:
    """Python calls and C calls per scope, and the Python calls by function (totals)."""
    by_function: Counter[str] = Counter()
    c_calls = 0

    def profiler(frame: Any, event: str, arg: Any) -> None:
        nonlocal c_calls
        if event == "call":
            code = frame.f_code
            by_function[f"{_short(code.co_filename)}:{code.co_name}"] += 1
        elif event == "c_call":
            c_calls += 1

    sys.setprofile(profiler)
    try:
        loop(scopes)
    finally:
        sys.setprofile(None)
    # The loop's own frame and the profiler's teardown are not part of a scope.
    total = sum(by_function.values())
    return total / scopes, c_calls / scopes, by_function


def _short(filename: str) -> str:
    for marker in ("site-packages/", "mingus_sessions/", "bench/"):
        at = filename.rfind(marker)
        if at >= 0:
            return filename[at + (len(marker) if marker == "site-packages/" else 0) :]
    return filename.rsplit("/", 1)[-1]


# -- memory ---------------------------------------------------------------------------------


def rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def recorder_sizes() -> dict[str, int]:
    """The length of every container the pool's recorder holds, and of the pooled info dicts.

    Read generically (every list, dict, set or histogram among the recorder's
    attributes), so that it keeps working as the recorder's internals change.
    """
    from mingus_sessions._core.histogram import Histogram
    from mingus_sessions.engines import get_entry

    entry = get_entry()
    probe = entry.probe
    sizes: dict[str, int] = {}
    names = sorted({n for cls in type(probe).__mro__ for n in getattr(cls, "__slots__", ())})
    for name in names:
        value = getattr(probe, name, None)
        if isinstance(value, list | dict | set | tuple):
            sizes[name.lstrip("_")] = len(value)
        elif isinstance(value, Histogram):
            sizes[f"{name} buckets"] = len(value.buckets())
            sizes[f"{name} count"] = value.count
    pooled = getattr(getattr(entry.engine.pool, "_pool", None), "queue", ())
    sizes["pooled info keys"] = sum(len(record.info) for record in list(pooled))
    return sizes


def memory_run(total: int, first: int) -> list[tuple[int, int, int, int, dict[str, int]]]:
    """Scopes with metrics on; (scopes, RSS KiB, traced bytes, gc objects, recorder) per mark."""
    use_monitoring(True)
    check_monitoring(True)
    scope_loop = make_scope_loop()
    scope_loop(500)
    gc.collect()
    tracemalloc.start()
    marks: list[tuple[int, int, int, int, dict[str, int]]] = []

    def mark(done: int) -> None:
        gc.collect()
        marks.append(
            (
                done,
                rss_kib(),
                tracemalloc.get_traced_memory()[0],
                len(gc.get_objects()),
                recorder_sizes(),
            )
        )

    mark(0)
    done = 0
    for target in (first, total):
        scope_loop(target - done)
        done = target
        mark(done)
    tracemalloc.stop()
    return marks


# -- versions -------------------------------------------------------------------------------


def source_revision() -> str:
    """The git commit the package was measured at, and whether its files had local changes."""
    import subprocess

    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "status", "--porcelain", "--", "mingus_sessions"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "(not a git checkout)"
    return f"at commit {commit}" + (" + local changes in mingus_sessions/" if changed else "")


def versions(engine: Any) -> list[tuple[str, str]]:
    import django
    import psycopg
    import sqlalchemy
    from sqlalchemy import text

    with engine.connect() as conn:
        server = conn.execute(text("SHOW server_version")).scalar_one()
    cpu = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    import mingus_sessions

    return [
        ("mingus", f"{mingus_sessions.__version__} {source_revision()}"),
        ("Python", platform.python_version()),
        ("Django", django.get_version()),
        ("SQLAlchemy", sqlalchemy.__version__),
        ("psycopg", psycopg.__version__),
        ("PostgreSQL", str(server)),
        ("CPUs", f"{os.cpu_count()} x {cpu}"),
    ]


# -- the run --------------------------------------------------------------------------------


def report_times(out: Any, title: str, samples: dict[str, list[float]]) -> float:
    """Print the table and the ratios of one measure; return the metrics overhead (paired)."""
    medians = {v: statistics.median(found) for v, found in samples.items()}
    base = medians[RAW]
    print(file=out)
    print(f"{title}:", file=out)
    print(
        f"  {'variant':34} {'median µs':>10} {'p95 µs':>9} {'best µs':>9} {'vs (a)':>8}", file=out
    )
    for v, found in samples.items():
        print(
            f"  {LABELS[v]:34} {medians[v]:10.1f} {p95(found):9.1f} {min(found):9.1f} "
            f"{medians[v] / base:8.3f}",
            file=out,
        )
    paired = [c / b for b, c in zip(samples[OFF], samples[ON], strict=True)]
    paired_a = [c / a for a, c in zip(samples[RAW], samples[ON], strict=True)]
    paired_median = statistics.median(paired)
    low, high = quartiles(paired)
    print(
        f"  (c)/(b) metrics: ratio of medians {medians[ON] / medians[OFF]:.4f}; per-round ratios "
        f"median {paired_median:.4f}, IQR {low:.4f}..{high:.4f}, "
        f"{sum(r > 1 for r in paired)}/{len(paired)} rounds above 1",
        file=out,
    )
    print(
        f"  (c)/(a) scope vs hand-written: ratio of medians {medians[ON] / base:.4f}; "
        f"per-round median {statistics.median(paired_a):.4f} "
        f"(DESIGN.md budget {SCOPE_BUDGET:.2f}x)",
        file=out,
    )
    return paired_median - 1.0


def run(args: argparse.Namespace, db_name: str) -> None:
    setup_django()
    raw = Raw()
    try:
        _run(args, db_name, raw)
    finally:
        raw.close()
        from mingus_sessions import dispose_engines

        dispose_engines()


def _run(args: argparse.Namespace, db_name: str, raw: Raw) -> None:
    out = sys.stdout
    variants = [RAW, OFF, ON]
    runner: InProcess | Workers = (
        Workers(variants, args.warmup) if args.mode == "processes" else InProcess(raw)
    )
    print(f"mingus_sessions metrics benchmark: database {db_name}", file=out)
    print(
        f"{args.rounds} rounds x {args.scopes} scopes of SELECT 1 per variant, untimed warm-up "
        f"of {args.warmup} before each; order rotating a b c / b c a / c a b;\n"
        f"{runner.description}",
        file=out,
        flush=True,
    )

    wall: dict[str, list[float]] = {v: [] for v in variants}
    cpu: dict[str, list[float]] = {v: [] for v in variants}
    began = time.monotonic()
    try:
        for round_no in range(args.rounds):
            shift = round_no % len(variants)
            for variant in variants[shift:] + variants[:shift]:
                wall_us, cpu_us = runner.measure(variant, args.scopes, args.warmup)
                wall[variant].append(wall_us)
                cpu[variant].append(cpu_us)
            if args.verbose:
                print(
                    f"  round {round_no + 1:3d} wall/cpu µs: "
                    + "  ".join(f"{v} {wall[v][-1]:6.1f}/{cpu[v][-1]:6.1f}" for v in variants),
                    file=out,
                    flush=True,
                )
    finally:
        runner.close()
    timing_s = time.monotonic() - began

    overhead = report_times(out, "Wall time per scope (what the caller waits)", wall)
    report_times(out, "CPU time per scope (this thread only: the client side)", cpu)
    verdict = "held" if overhead <= METRICS_BUDGET else "EXCEEDED"
    print(file=out)
    print(
        f"metrics overhead: {overhead * 100:+.1f}% (budget {METRICS_BUDGET * 100:.0f}%): "
        f"{verdict}  [wall time, median of the per-round (c)/(b) ratios]",
        file=out,
    )
    print(f"(timing phase: {timing_s:.0f} s)", file=out, flush=True)

    # Deterministic guard: Python calls per scope.
    print(file=out)
    print("Python calls per scope (sys.setprofile, after warm-up):", file=out)
    counted: dict[str, Counter[str]] = {}
    guard_scopes = 200
    for v in variants:
        loop = prepare(v, raw)
        loop(args.warmup)
        py_calls, c_calls, by_function = count_calls(loop, guard_scopes)
        counted[v] = by_function
        print(f"  {LABELS[v]:34} {py_calls:7.1f} Python calls, {c_calls:6.1f} C calls", file=out)
    extra = counted[ON] - counted[OFF]
    if extra:
        print("  calls (c) makes beyond (b), per scope:", file=out)
        for name, count in extra.most_common(15):
            print(f"    {count / guard_scopes:5.1f}  {name}", file=out)
    print(file=out, flush=True)

    # Memory with metrics on.
    began = time.monotonic()
    marks = memory_run(args.memory_scopes, min(10_000, args.memory_scopes))
    memory_s = time.monotonic() - began
    print(f"Memory over {args.memory_scopes} scopes, metrics on (tracemalloc on):", file=out)
    print(
        f"  {'scopes':>7} {'RSS MiB':>8} {'traced KiB':>10} {'gc objects':>10}  recorder", file=out
    )
    for done, rss, traced, objects, sizes in marks:
        shown = ", ".join(f"{k} {v}" for k, v in sizes.items())
        print(
            f"  {done:7d} {rss / 1024:8.1f} {traced / 1024:10.1f} {objects:10d}  {shown}", file=out
        )
    first, last = marks[1], marks[-1]
    rss_growth = (last[1] - first[1]) / 1024
    traced_growth = (last[2] - first[2]) / 1024
    flat = rss_growth < 2.0 and traced_growth < 256 and last[4]["outstanding"] <= 1
    print(
        f"  growth {first[0]} -> {last[0]} scopes: RSS {rss_growth:+.2f} MiB, traced "
        f"{traced_growth:+.1f} KiB, gc objects {last[3] - first[3]:+d}: "
        f"{'flat' if flat else 'NOT flat'} ({memory_s:.0f} s)",
        file=out,
    )

    print(file=out)
    engine = raw.engine if raw.engine is not None else raw_engine()
    for name, value in versions(engine):
        print(f"{name:11} {value}", file=out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--rounds", type=int, help="default: 120 (processes), 30 (switch)")
    parser.add_argument(
        "--scopes", type=int, help="timed scopes per round; default: 500 (processes), 2000 (switch)"
    )
    parser.add_argument(
        "--warmup", type=int, help="untimed scopes per round; default: 50 (processes), 200 (switch)"
    )
    parser.add_argument("--memory-scopes", type=int, default=100_000)
    parser.add_argument(
        "--mode",
        choices=("processes", "switch"),
        default="processes",
        help="processes: one worker per variant, taking turns; switch: one process, "
        "MONITORING switched and the engine rebuilt before each round",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="print every round")
    parser.add_argument("--worker", choices=(RAW, OFF, ON), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args.worker)
    processes = args.mode == "processes"
    for name, in_processes, in_switch in (
        ("rounds", 120, 30),
        ("scopes", 500, 2000),
        ("warmup", 50, 200),
    ):
        if getattr(args, name) is None:
            setattr(args, name, in_processes if processes else in_switch)
    with bench_database() as db_name:
        run(args, db_name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
