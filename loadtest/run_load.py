"""Drive the demo under gunicorn with wrk and check what it must survive (scripts/load_test.sh).

Phase 1, steady load: no error at all, every worker in the fleet view, every
pool back to 0 checked out once the load stops, each worker's resident memory
flat between the first and the last minute. Phase 2, the same load while the
PostgreSQL cluster restarts: errors only in the outage, every endpoint
answering again within seconds, and every write acknowledged with a 2xx in
either phase in the database exactly once. The environment (DATABASE_URL,
DEMO_CACHE_URL, ...) is the one gunicorn runs with, so the fleet is read with
``get_fleet_metrics()`` from the same cache. Exits 1 when a check fails.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
#: Resident memory may grow this much between the first and the last minute.
RSS_SLACK_KB = 5 * 1024
#: After the restart, errors must stop and every endpoint answer within this.
RECOVERY_BUDGET = 5.0
KINDS = ("sa-read", "sa-write", "orm-read", "orm-write")
#: wrk: one thread per core, two connections per worker (sync workers serve one each).
WRK_ARGS = ("-t2", "-c8", "--timeout", "5s", "--latency")


@dataclass
class WrkResult:
    acked: list[tuple[str, str]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    ok: Counter[tuple[str, int]] = field(default_factory=Counter)
    err: Counter[tuple[str, int, int]] = field(default_factory=Counter)
    latency_us: dict[str, int] = field(default_factory=dict)
    summary: dict[str, int] = field(default_factory=dict)

    @property
    def socket_errors(self) -> int:
        return sum(self.summary[k] for k in ("connect", "read", "write", "timeout"))

    @property
    def rps(self) -> float:
        return self.summary["requests"] / (self.summary["duration_us"] / 1e6)


class Checks:
    def __init__(self) -> None:
        self.failed: list[str] = []

    def expect(self, condition: bool, what: str) -> None:
        print(f"  [{'ok' if condition else 'FAIL'}] {what}")
        if not condition:
            self.failed.append(what)


def run_wrk(url: str, seconds: int, run: str, out: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "LOAD_RUN": run, "LOAD_OUT": str(out)}
    command = ["wrk", *WRK_ARGS, "-d", f"{seconds}s", "-s", str(ROOT / "loadtest/mix.lua"), url]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True)


def parse_wrk(out: Path) -> WrkResult:
    result = WrkResult()
    for line in out.read_text().splitlines():
        record, *rest = line.split()
        if record == "acked":
            result.acked.append((rest[0], rest[1]))
        elif record == "failed":
            result.failed.append((rest[0], rest[1]))
        elif record == "ok":
            result.ok[(rest[0], int(rest[1]))] += int(rest[2])
        elif record == "err":
            result.err[(rest[0], int(rest[1]), int(rest[2]))] += int(rest[3])
        elif record == "latency":
            result.latency_us = dict(
                zip(("p50", "p99", "mean", "max"), map(int, rest), strict=True)
            )
        elif record == "summary":
            names = ("requests", "duration_us", "connect", "read", "write", "status", "timeout")
            result.summary = dict(zip(names, map(int, rest), strict=True))
    return result


def throughput(result: WrkResult) -> str:
    latency = {name: us / 1000 for name, us in result.latency_us.items()}
    return (
        f"requests {result.summary['requests']}, {result.rps:.0f}/s; "
        f"latency p50 {latency['p50']:.1f} ms, p99 {latency['p99']:.1f} ms"
    )


def worker_pids(master: int) -> set[int]:
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # The command may hold spaces: the fields after ") " are fixed.
            ppid = int(stat.read_text().rsplit(") ", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == master:
            found.add(int(stat.parent.name))
    return found


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def wait_ready(url: str, workers: int, master: int, timeout: float = 60.0) -> set[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/health/database", timeout=5) as response:
                pids = worker_pids(master)
                if response.status == 200 and len(pids) == workers:
                    return pids
        except OSError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"gunicorn did not answer healthy within {timeout:.0f} s")


def fleet() -> list[dict[str, Any]]:
    from mingus_sessions.metrics import get_fleet_metrics

    return get_fleet_metrics()


def fleet_after(since: float, pids: set[int], interval: float) -> dict[int, dict[str, Any]]:
    """Each worker's first fleet snapshot published after ``since`` (waits up to 3 intervals)."""
    deadline = time.time() + 3 * interval + 5
    seen: dict[int, dict[str, Any]] = {}
    while time.time() < deadline and set(seen) < pids:
        for snap in fleet():
            if snap["pid"] in pids and snap["updated_at"] > since:
                seen.setdefault(snap["pid"], snap)
        time.sleep(1)
    return seen


def check_pools_idle(checks: Checks, snaps: dict[int, dict[str, Any]], pids: set[int]) -> None:
    checks.expect(set(snaps) == pids, f"fleet view lists every worker {sorted(pids)}")
    busy = {
        (pid, pool): (m["checked_out"], m["waiting"])
        for pid, snap in snaps.items()
        for pool, m in snap["pools"].items()
        if m["checked_out"] or m["waiting"]
    }
    active = {pid: s["sessions"]["active_sessions"] for pid, s in snaps.items()}
    checks.expect(not busy, f"every pool of every worker at 0 checked out, 0 waiting {busy or ''}")
    checks.expect(not any(active.values()), f"no session open in any worker {active}")


def phase1(args: argparse.Namespace, checks: Checks, pids: set[int]) -> dict[str, Any]:
    from mingus_sessions import conf

    print(f"\n== Phase 1: steady load, {args.phase1} s ==")
    out = args.work / "phase1.out"
    start = time.time()
    wrk = run_wrk(args.url, args.phase1, "p1", out)
    rss: dict[int, list[tuple[float, int]]] = defaultdict(list)
    fleet_reads: list[set[int]] = []
    next_fleet = start + 15
    while wrk.poll() is None:
        now = time.time()
        for pid in pids:
            rss[pid].append((now - start, rss_kb(pid)))
        if now >= next_fleet:
            fleet_reads.append({snap["pid"] for snap in fleet()})
            next_fleet = now + 5
        time.sleep(2)
    end = time.time()
    assert wrk.stdout is not None
    (args.work / "phase1.wrk.txt").write_text(wrk.stdout.read())
    result = parse_wrk(out)
    elapsed = end - start

    interval = conf.get_config().fleet.interval
    snaps = fleet_after(end, pids, interval)
    complete = sum(1 for members in fleet_reads if pids <= members)

    memory = {}
    for pid, samples in sorted(rss.items()):
        first = max(kb for t, kb in samples if t < 60)
        last = max(kb for t, kb in samples if t >= elapsed - 60)
        memory[pid] = (first, last)

    print(f"  {throughput(result)}")
    print(f"  writes acknowledged {len(result.acked)}")
    print(f"  fleet reads under load listing every worker: {complete}/{len(fleet_reads)}")
    print("  worker   RSS first minute   RSS last minute   growth   (max VmRSS, MB)")
    for pid, (first, last) in memory.items():
        growth = (last - first) / 1024
        print(f"  {pid:>6}   {first / 1024:16.1f}   {last / 1024:15.1f}   {growth:+6.1f}")
    checks.expect(
        not result.err and result.summary["status"] == 0, f"no non-2xx ({dict(result.err)})"
    )
    checks.expect(result.socket_errors == 0, f"no socket error {result.summary}")
    checks.expect(worker_pids(args.master) == pids, "the same workers from start to end")
    check_pools_idle(checks, snaps, pids)
    for pid, (first, last) in memory.items():
        checks.expect(last - first <= RSS_SLACK_KB, f"worker {pid} RSS flat within 5 MB")
    return {
        "requests": result.summary["requests"],
        "rps": round(result.rps, 1),
        "p50_ms": result.latency_us["p50"] / 1000,
        "p99_ms": result.latency_us["p99"] / 1000,
        "acked": result.acked,
        "failed": result.failed,
        "rss_mb": {pid: (round(a / 1024, 1), round(b / 1024, 1)) for pid, (a, b) in memory.items()},
        "fleet": sorted(snaps),
        "fleet_reads_complete": [complete, len(fleet_reads)],
    }


def phase2(args: argparse.Namespace, checks: Checks, pids: set[int]) -> dict[str, Any]:
    from mingus_sessions import conf

    print(f"\n== Phase 2: the same load, PostgreSQL restarted after {args.phase2 // 3} s ==")
    out = args.work / "phase2.out"
    wrk = run_wrk(args.url, args.phase2, "p2", out)
    time.sleep(args.phase2 // 3)
    down = time.time()
    subprocess.run(
        ["bash", str(ROOT / "scripts/pg_cluster.sh"), "restart", args.pg_dir], check=True
    )
    up = time.time()
    wrk.wait()
    end = time.time()
    assert wrk.stdout is not None
    (args.work / "phase2.wrk.txt").write_text(wrk.stdout.read())
    result = parse_wrk(out)

    errors = sum(result.err.values())
    by_status = Counter()
    for (kind, status, _), count in result.err.items():
        by_status[f"{kind} {status}"] += count
    err_times = [ds / 10 for (_, _, ds) in result.err]
    first_err = min(err_times, default=None)
    last_err = max(err_times, default=None)
    # The first 2xx of each kind in a tenth of a second that began after the restart.
    first_ok = {
        kind: min((ds / 10 for (k, ds) in result.ok if k == kind and ds / 10 >= up), default=None)
        for kind in KINDS
    }
    print(f"  {throughput(result)}")
    print(f"  outage (pg_cluster.sh restart): {up - down:.2f} s")
    print(f"  errors {errors}: {dict(by_status)}")
    if first_err is not None and last_err is not None:
        print(
            f"  errors from {first_err - down:+.1f} s to {last_err + 0.1 - down:+.1f} s "
            f"after the stop began ({last_err + 0.1 - up:+.1f} s after the restart ended)"
        )
    for kind, at in first_ok.items():
        shown = f"{at - up:.1f} s" if at is not None else "never"
        print(f"  first {kind} success after the restart: {shown}")
    checks.expect(result.socket_errors == 0, f"no socket error {result.summary}")
    checks.expect(
        first_err is None or first_err >= down - 0.1,
        "no error before the outage",
    )
    checks.expect(
        last_err is None or last_err <= up + RECOVERY_BUDGET,
        f"no error later than {RECOVERY_BUDGET:.0f} s after the restart",
    )
    checks.expect(
        all(at is not None and at - up <= RECOVERY_BUDGET for at in first_ok.values()),
        f"every endpoint succeeds within {RECOVERY_BUDGET:.0f} s of the restart",
    )
    checks.expect(worker_pids(args.master) == pids, "the same workers from start to end")
    check_pools_idle(checks, fleet_after(end, pids, conf.get_config().fleet.interval), pids)
    return {
        "requests": result.summary["requests"],
        "rps": round(result.rps, 1),
        "outage_s": round(up - down, 2),
        "errors": errors,
        "errors_by_kind": dict(by_status),
        "errors_span_s": (
            [round(first_err - down, 1), round(last_err + 0.1 - down, 1)] if last_err else None
        ),
        "recovery_s": {k: (round(v - up, 1) if v else None) for k, v in first_ok.items()},
        "acked": result.acked,
        "failed": result.failed,
    }


def _stored_key(kind: str, key: str) -> str:
    return f"{kind.split('-')[0]}-{key}"  # as loadviews stores it: sa-<key>, orm-<key>


def check_writes(
    checks: Checks, acked: list[tuple[str, str]], failed: list[tuple[str, str]]
) -> dict[str, int]:
    """Each acknowledged write in the database exactly once, no failed one at all.

    Read directly with psycopg. Writes still in flight when wrk stopped have no
    answer either way: they may or may not be there.
    """
    import psycopg

    expected = Counter(_stored_key(kind, key) for kind, key in acked)
    refused = {_stored_key(kind, key) for kind, key in failed}
    with psycopg.connect(os.environ["DATABASE_URL"]) as conn:
        rows = conn.execute(
            "SELECT idempotency_key, count(*) FROM communications_communicationmetrics "
            "WHERE message_type = 'load_test' GROUP BY idempotency_key"
        ).fetchall()
    stored = dict(rows)
    missing = [key for key in expected if key not in stored]
    twice = [key for key in expected if stored.get(key, 0) > 1 or expected[key] > 1]
    landed = sorted(refused & set(stored))
    unanswered = len(set(stored) - set(expected) - refused)
    print(
        f"\n== Writes ==\n  acknowledged {len(expected)}, in the database {len(stored)}, "
        f"missing {len(missing)}, more than once {len(twice)}; answered with an error "
        f"{len(refused)}, of which in the database {len(landed)}; in the database without "
        f"an answer (in flight when wrk stopped) {unanswered}"
    )
    checks.expect(not missing, f"no acknowledged write lost {missing[:5]}")
    checks.expect(not twice, f"no write stored or acknowledged twice {twice[:5]}")
    checks.expect(not landed, f"no write answered with an error is in the database {landed[:5]}")
    return {
        "acked": len(expected),
        "stored": len(stored),
        "missing": len(missing),
        "twice": len(twice),
        "failed": len(refused),
        "failed_but_stored": len(landed),
        "unanswered_stored": unanswered,
    }


def log_summary(log: Path) -> dict[str, int]:
    """Lines per level and logger in the workers' log (the demo's LOGGING format)."""
    counts: Counter[str] = Counter()
    for line in log.read_text(errors="replace").splitlines() if log.exists() else ():
        parts = line.split(" ", 4)
        if len(parts) == 5 and parts[2].isupper() and parts[3].endswith(":"):
            counts[f"{parts[2]} {parts[3][:-1]}"] += 1
    return dict(counts)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--master", type=int, required=True, help="gunicorn's master pid")
    parser.add_argument("--workers", type=int, required=True)
    parser.add_argument("--pg-dir", required=True, help="the cluster of scripts/pg_cluster.sh")
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--phase1", type=int, default=150, help="seconds")
    parser.add_argument("--phase2", type=int, default=60, help="seconds")
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    import django

    django.setup()

    pids = wait_ready(args.url, args.workers, args.master)
    print(f"gunicorn master {args.master}, workers {sorted(pids)}")
    checks = Checks()
    one = phase1(args, checks, pids)
    two = phase2(args, checks, pids)
    writes = check_writes(
        checks, one.pop("acked") + two.pop("acked"), one.pop("failed") + two.pop("failed")
    )
    logged = log_summary(args.work / "gunicorn.log")
    print(f"\n== Workers' log ==\n  {logged or 'nothing logged'}")
    figures = {"phase1": one, "phase2": two, "writes": writes, "logged": logged}
    (args.work / "figures.json").write_text(json.dumps(figures, indent=2))
    print(f"\nFigures: {json.dumps(figures)}")
    if checks.failed:
        print(f"\n{len(checks.failed)} check(s) failed:", *checks.failed, sep="\n  ")
        return 1
    print("\nEvery check passed.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
