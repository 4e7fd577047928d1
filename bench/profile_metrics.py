"""Where the metrics' cost goes: per-call costs, a profile, and two attributions.

Run from the repository root::

    python -m bench.profile_metrics [--timing] [--instructions] [--only timing|instructions]

Every section looks at the client-side work that ``MONITORING`` adds to a
``SELECT 1`` scope (the server's work is the same with and without metrics):

1. (``--timing``) Attribution by timing: this thread's CPU time per scope for
   ``session_scope()`` with MONITORING off, off plus no-op SQLAlchemy listeners
   (what the event dispatch alone costs), and on with ``LEAK_THRESHOLD`` and/or
   ``SLOW_QUERY_THRESHOLD`` set to None (which drop the site capture and the
   statement timing). Interleaved round by round; best round and median.
   Needs a quiet machine to mean anything.
2. Per-call cost of each piece of the recorder, in ns (``timeit``, best of 7),
   outside any database.
3. ``cProfile`` of N scopes with MONITORING off and on: the functions whose
   call counts or own time differ.
4. (``--instructions``) The same configurations as 1, counted in instructions
   per scope under valgrind's callgrind: deterministic and blind to the load
   of the machine, so the one to trust when timings are noisy; plus the C
   functions whose instruction counts grow most with metrics on.

Uses the database as ``bench_metrics`` does (``MINGUS_BENCH_DB`` or a fresh
``mingus_bench``).
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import pstats
import statistics
import sys
import time
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_metrics import (
    ROOT,
    Raw,
    bench_database,
    make_scope_loop,
    serve,
    setup_django,
    use_monitoring,
)


def _noop(*args: Any) -> None:
    return None


def _pass_through(*args: Any) -> None:
    """A do_execute listener that lets the dialect run the statement (returns None)."""
    return None


def _configure(kind: str) -> None:
    from sqlalchemy import event

    from mingus_sessions import get_engine

    if kind.startswith("off"):
        use_monitoring(False)
        engine = get_engine()
        if kind == "off+noop pool":
            event.listen(engine, "checkout", _noop)
            event.listen(engine, "checkin", _noop)
        elif kind == "off+noop do_execute":
            event.listen(engine, "do_execute", _pass_through)
            event.listen(engine, "do_execute_no_params", _pass_through)
        return
    overrides: dict[str, Any] = {}
    if kind in ("on, no leak", "on, neither"):
        overrides["LEAK_THRESHOLD"] = None
    if kind in ("on, no slow", "on, neither"):
        overrides["SLOW_QUERY_THRESHOLD"] = None
    use_monitoring(True, **overrides)


KINDS = [
    "off",
    "off+noop pool",
    "off+noop do_execute",
    "on, neither",
    "on, no leak",
    "on, no slow",
    "on",
]


def attribution(rounds: int, scopes: int) -> None:
    cpu: dict[str, list[float]] = {k: [] for k in KINDS}
    for round_no in range(rounds):
        shift = round_no % len(KINDS)
        for kind in KINDS[shift:] + KINDS[:shift]:
            _configure(kind)
            loop = make_scope_loop()
            loop(200)
            gc.collect()
            started = time.thread_time_ns()
            loop(scopes)
            cpu[kind].append((time.thread_time_ns() - started) / scopes / 1000.0)
    best_off = min(cpu["off"])
    median_off = statistics.median(cpu["off"])
    print(f"1. CPU µs per scope, {rounds} rounds x {scopes} scopes (this thread):")
    print(f"   {'configuration':18} {'best':>7} {'+best':>7} {'median':>7} {'+median':>8}")
    for kind in KINDS:
        best, median = min(cpu[kind]), statistics.median(cpu[kind])
        print(
            f"   {kind:18} {best:7.1f} {best - best_off:+7.1f} {median:7.1f} "
            f"{median - median_off:+8.1f}"
        )
    print()


def _at_depth(depth: int, fn: Callable[[], Any]) -> Any:
    if depth <= 0:
        return fn()
    return _at_depth(depth - 1, fn)


class _Record:
    __slots__ = ("info",)

    def __init__(self) -> None:
        self.info: dict[Any, Any] = {}


def _ns(stmt: Callable[[], Any], number: int = 20000) -> float:
    return min(timeit.repeat(stmt, number=number, repeat=7)) / number * 1e9


def per_call() -> None:
    """Per-call costs of the recorder's pieces, each skipped if this version lacks it."""
    from mingus_sessions._core import recorder as rec
    from mingus_sessions._core.histogram import Histogram

    histogram = Histogram()
    rows: list[tuple[str, Callable[[], Any] | None]] = [
        ("time.perf_counter()", time.perf_counter),
        ("Histogram.record(123)", lambda: histogram.record(123)),
        ("_guarded wrapper around a no-op", lambda: rec._guarded("main", _noop)(None, None)),
    ]
    note = getattr(rec, "note_opening", None)
    if note is not None:
        rows.append(("note_opening, from here", lambda: note(sys._getframe())))
    capture = getattr(rec, "capture_stack", None)
    if capture is not None:
        rows.append(("capture_stack, from here (~10 frames)", lambda: capture(sys._getframe())))
        rows.append(
            (
                "capture_stack, 40 frames deeper",
                lambda: _at_depth(40, lambda: capture(sys._getframe())),
            )
        )
        rows.append(("(recursion to depth 40 alone)", lambda: _at_depth(40, _noop)))
    for leak in (30.0, None):
        recorder = rec.PoolRecorder("bench-micro", leak_threshold=leak)
        record = _Record()
        checkout = rec._guarded("main", recorder._on_checkout)
        checkin = rec._guarded("main", recorder._on_checkin)

        def pair(checkout: Any = checkout, checkin: Any = checkin, record: Any = record) -> None:
            checkout(None, record, None)
            checkin(None, record)

        # Outside a scope, a leak-tracking checkout walks the stack itself.
        rows.append((f"checkout+checkin listeners, LEAK_THRESHOLD {leak}", pair))
    statement_ran = getattr(rec.PoolRecorder("bench-micro"), "_statement_ran", None)
    if statement_ran is not None:

        def timed_statement() -> None:
            started = time.perf_counter()
            statement_ran(time.perf_counter() - started, "SELECT 1", None)

        rows.append(("statement timing (2 clocks + _statement_ran)", timed_statement))

    def acquire_timing() -> None:
        started = time.perf_counter()
        histogram.record(int((time.perf_counter() - started) * 1_000_000))

    rows.append(("acquire timing in _do_get (2 clocks + record)", acquire_timing))
    print("2. Per-call cost outside the database (timeit, best of 7), ns:")
    for label, stmt in rows:
        if stmt is not None:
            print(f"   {label:46} {_ns(stmt, 5000 if 'deeper' in label else 20000):9.0f}")
    print()


def profile(scopes: int) -> None:
    results: dict[str, pstats.Stats] = {}
    for kind in ("off", "on"):
        _configure(kind)
        loop = make_scope_loop()
        loop(500)
        profiler = cProfile.Profile()
        profiler.enable()
        loop(scopes)
        profiler.disable()
        results[kind] = pstats.Stats(profiler)
    rows: dict[tuple[str, int, str], list[float]] = {}
    for kind, stats in results.items():
        column = 0 if kind == "off" else 1
        for func, (_cc, calls, tottime, _ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
            row = rows.setdefault(func, [0, 0, 0.0, 0.0])
            row[column] = calls
            row[2 + column] = tottime
    print(f"3. cProfile, {scopes} scopes: functions called more often with metrics on (per scope;")
    print("   own times include the profiler's overhead, which is large for small functions)")
    print(
        f"   {'calls off':>9} {'calls on':>8} {'own ns off':>10} {'own ns on':>9} "
        f"{'ns/call':>8}  function"
    )
    # Only the functions called a different number of times: own times of the
    # others move with the load on the machine between the two profiles.
    changed = [item for item in rows.items() if item[1][0] != item[1][1]]
    ranked = sorted(changed, key=lambda item: item[1][3] - item[1][2], reverse=True)
    total_off = sum(r[2] for r in rows.values()) / scopes * 1e9
    total_on = sum(r[3] for r in rows.values()) / scopes * 1e9
    for (filename, line, name), (c_off, c_on, t_off, t_on) in ranked[:25]:
        where = filename.rsplit("site-packages/", 1)[-1]
        where = where[where.find("mingus_sessions/") :] if "mingus_sessions/" in where else where
        per_call = (t_on - t_off) / (c_on - c_off) * 1e9 if c_on != c_off else 0.0
        print(
            f"   {c_off / scopes:9.1f} {c_on / scopes:8.1f} {t_off / scopes * 1e9:10.0f} "
            f"{t_on / scopes * 1e9:9.0f} {per_call:8.0f}  {where}:{line}({name})"
        )
    print(f"   own time per scope under the profiler: off {total_off:.0f} ns, on {total_on:.0f} ns")
    print()


# -- 4. instructions under callgrind ---------------------------------------------------------


def _count_instructions(kind: str, scopes: int, workdir: str, layout: int) -> tuple[float, str]:
    """Instructions per scope of ``kind`` in one worker under callgrind, and its last dump.

    After a warm-up, counting is switched on and the counts of ``base`` and
    ``base + scopes`` scopes are dumped, so that their difference is
    ``scopes`` scopes and nothing else. ``layout`` picks the string hash seed
    and pads the environment, which moves the interpreter's objects and so
    which lookups collide in its caches.
    """
    import os
    import subprocess

    base = 200
    slug = kind.replace(" ", "_").replace(",", "").replace("+", "_")
    out_file = os.path.join(workdir, f"cg.{slug}.{layout}")
    env = dict(os.environ, PYTHONHASHSEED=str(layout), MINGUS_LAYOUT_PAD="x" * (977 * layout))
    proc = subprocess.Popen(
        [
            "valgrind",
            "--tool=callgrind",
            "--instr-atstart=no",
            f"--callgrind-out-file={out_file}",
            sys.executable,
            "-m",
            "bench.profile_metrics",
            "--worker",
            kind,
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=ROOT,
        env=env,
    )

    def ask(command: str) -> str:
        proc.stdin.write(command + "\n")  # type: ignore[union-attr]
        proc.stdin.flush()  # type: ignore[union-attr]
        answer: str = proc.stdout.readline()  # type: ignore[union-attr]
        if not answer:
            raise RuntimeError(f"callgrind worker {kind} ended")
        return answer

    def control(*args: str) -> None:
        subprocess.run(["callgrind_control", *args, str(proc.pid)], capture_output=True, check=True)

    try:
        ask("warm 300")
        control("-i", "on")
        totals = []
        for n in (base, base + scopes):
            control("-z")
            ask(f"run {n} 0")
            control("-d", f"run{n}")
            totals.append(_callgrind_total(out_file, f"run{n}"))
        control("-i", "off")
    finally:
        proc.stdin.close()  # type: ignore[union-attr]  # the worker stops at the end of its input
        proc.wait(timeout=600)
    return (totals[1] - totals[0]) / scopes, _callgrind_dump(out_file, f"run{base + scopes}")


def instructions(
    scopes: int,
    kinds: list[str],
    detail: bool,
    layouts: int = 1,
    pair: tuple[str, str] = ("off", "on"),
) -> None:
    """Instructions per scope, counted by callgrind: deterministic, blind to the machine's load.

    Each configuration runs in a worker under ``valgrind --tool=callgrind``, once
    per memory layout. One layout's count repeats exactly, but a change of
    layout moves a configuration by up to about 0.7% (collisions in the
    interpreter's method cache and dicts), so the difference between two
    configurations is reported per layout and as the mean over the layouts.
    """
    import shutil
    import statistics
    import tempfile

    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        print("4. Instructions: valgrind (callgrind) not installed; skipped.")
        return
    found: dict[str, list[float]] = {kind: [] for kind in kinds}
    dumps: dict[str, str] = {}
    workdir = tempfile.mkdtemp(prefix="mingus-callgrind-")
    print(
        f"4. Instructions per scope (callgrind, {scopes} scopes after a warm-up, "
        f"{layouts} memory layout(s)):",
        flush=True,
    )
    try:
        for layout in range(layouts):
            for kind in kinds:
                count, dump = _count_instructions(kind, scopes, workdir, layout)
                found[kind].append(count)
                if layout == 0:
                    dumps[kind] = dump
                reference = found.get("off")
                delta = (
                    f"{count - reference[layout]:+9.0f}"
                    if reference and len(reference) > layout and kind != "off"
                    else ""
                )
                print(f"   layout {layout}  {kind:20} {count:10.0f} Ir {delta}", flush=True)
        if layouts > 1:
            print("   mean over the layouts:")
            for kind in kinds:
                print(f"   {kind:29} {statistics.mean(found[kind]):10.0f} Ir")
        if "off" in found and "on" in found:
            shares = [on / off - 1.0 for on, off in zip(found["on"], found["off"], strict=True)]
            spread = f" (layouts: {min(shares) * 100:+.1f}% to {max(shares) * 100:+.1f}%)"
            print(
                "   metrics (on vs off): "
                f"{statistics.mean(shares) * 100:+.1f}% of the client's instructions per scope"
                + (spread if layouts > 1 else "")
            )
        if detail and pair[0] in dumps and pair[1] in dumps:
            print(f"   C functions whose own instructions grow most, {pair[1]!r} vs {pair[0]!r}:")
            _function_diff(dumps[pair[0]], dumps[pair[1]], 200 + scopes)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print()


def _callgrind_dump(out_file: str, label: str) -> str:
    import glob

    for path in glob.glob(out_file + ".*"):
        with open(path) as dump:
            head = dump.read(4096)
        if f"Trigger: dump {label}\n" in head:
            return path
    raise RuntimeError(f"no callgrind dump {label} for {out_file}")


def _callgrind_total(out_file: str, label: str) -> int:
    with open(_callgrind_dump(out_file, label)) as dump:
        for line in dump:
            if line.startswith("totals:"):
                return int(line.split()[1])
    raise RuntimeError(f"no totals in the callgrind dump {label}")


def _function_diff(off: str, on: str, scopes: int) -> None:
    """The C functions whose own instructions grow most with metrics on, per scope."""
    import re
    import subprocess

    def own(path: str) -> dict[str, int]:
        text = subprocess.run(
            ["callgrind_annotate", "--threshold=100", path],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        costs: dict[str, int] = {}
        for line in text.splitlines():
            match = re.match(r"\s*([\d,]+)\s+\(\s*[\d.]+%\)\s+(\S+)", line)
            if match and "PROGRAM TOTALS" not in line:
                name = match.group(2).rsplit("/", 1)[-1]
                costs[name] = costs.get(name, 0) + int(match.group(1).replace(",", ""))
        return costs

    before, after = own(off), own(on)
    grown = sorted(
        ((after.get(k, 0) - before.get(k, 0)) / scopes, k) for k in set(before) | set(after)
    )
    for cost, name in grown[::-1][:12]:
        print(f"   {cost:9.0f}  {name}")


def worker(kind: str) -> int:
    setup_django()
    raw = Raw()
    try:
        if kind == "raw":
            loop = raw.prepare()
        else:
            _configure(kind)
            loop = make_scope_loop()
        serve(loop)
    finally:
        raw.close()
        from mingus_sessions import dispose_engines

        dispose_engines()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--scopes", type=int, default=1000)
    parser.add_argument("--profile-scopes", type=int, default=5000)
    parser.add_argument(
        "--timing",
        action="store_true",
        help="also section 1, attribution by timing (minutes; noisy on a loaded machine)",
    )
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="also section 4, instructions per scope under valgrind's callgrind (minutes)",
    )
    parser.add_argument(
        "--only", choices=("timing", "instructions"), help="run only this one section"
    )
    parser.add_argument(
        "--kinds",
        help="the configurations section 4 counts, separated by semicolons (default: all)",
    )
    parser.add_argument(
        "--layouts",
        type=int,
        default=1,
        help="section 4: count each configuration under this many memory layouts (default 1)",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args.worker)
    with bench_database():
        setup_django()
        try:
            if args.only is None:
                per_call()
                profile(args.profile_scopes)
            if args.timing or args.only == "timing":
                attribution(args.rounds, args.scopes)
            if args.instructions or args.only == "instructions":
                kinds = args.kinds.split(";") if args.kinds else ["raw", *KINDS]
                instructions(1000, kinds, detail=True, layouts=args.layouts)
        finally:
            from mingus_sessions import dispose_engines

            dispose_engines()
    return 0


if __name__ == "__main__":
    sys.exit(main())
