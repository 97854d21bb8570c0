"""A soak: a steady write load through Dagster for a long time; memory, freshness and retained WAL over time.

    .venv/bin/python bench/soak.py [--minutes 30] [--changes-per-s 1000]      (--quick: 4 minutes)

A real pipeline (tests/faults/_harness.py: PostgreSQL -> DuckDB and ClickHouse, the capture sensor and the
queued run coordinator in ``dagster-daemon run``, each batch a run process of its own, least-privilege roles)
loads pgbench's tables, then ``pgbench -R`` writes at a steady rate (TPC-B: 3 replicated changes a
transaction) while a marker row is committed every 2 seconds into ``public.soak_marks`` (replicated too).
Every 10 seconds: the RSS of every process of the pipeline (daemon, code server, run processes) and the WAL the
slot retains. Freshness: for each marker, the time from its commit to its first sighting in the ClickHouse sink
(polled every 0.25 s; DuckDB's file is locked by the apply runs and is not polled). At the end the writer stops,
the pipeline drains, and every sink is compared with the source row by row.

Reports per 5-minute window: freshness p50/p95, the largest retained WAL, and the RSS slope (MB/hour, least
squares after a 5-minute warm-up, a quarter of the run if shorter) of every long-lived process, and the peak RSS of the run processes. The
figure is the largest slope of a process that lives through the soak (the daemon: the daemon replaces code
servers every few minutes, and runs last seconds; their peaks are reported apart), target about 0. Writes bench/results/soak.json
(soak_quick.json with --quick).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import write_result  # noqa: E402
from tests.faults._harness import DATABASE, PIPELINE, SINK_DATABASE, FaultRig, slot_wal, wait_initial_load  # noqa: E402

WINDOW = 300  # seconds
WARM_UP = 300
PER_TRANSACTION = 3  # replicated changes of one pgbench (TPC-B) transaction


class SoakRig(FaultRig):
    """The fault rig's pipeline plus a marker table, for freshness."""

    def _prepare_source(self) -> dict:
        import psycopg

        source = super()._prepare_source()
        assert self.pg
        with psycopg.connect(self.pg.url(DATABASE), autocommit=True) as conn:
            # written_at as epoch microseconds: a plain value every sink reader returns alike
            conn.execute("CREATE TABLE public.soak_marks (id bigint PRIMARY KEY, written_at bigint NOT NULL)")
            conn.execute("GRANT SELECT ON public.soak_marks TO faults_capture")
            conn.execute(f"ALTER PUBLICATION dbmazz_{PIPELINE} ADD TABLE public.soak_marks")
        self.tables.append("public.soak_marks")
        return source


def _kind(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            cmd = fh.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return "gone"
    if "_daemon" in cmd or "dagster-daemon" in cmd:
        return "daemon"
    if "grpc" in cmd or "code-server" in cmd:
        return "code_server"
    if (
        "execute_run" in cmd
        or "execute_step" in cmd
        or "api execute" in cmd
        or "multiprocessing.spawn" in cmd
    ):
        return "run"  # the default run launcher starts runs from the code server (multiprocessing spawn)
    return "other: " + cmd[:80]


def _rss_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _slope_mb_per_hour(points: list[tuple[float, float]]) -> float | None:
    if len(points) < 3 or points[-1][0] - points[0][0] < 120:
        return None
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    var = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var * 3600 if var else None


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class Soak:
    def __init__(self, rig: SoakRig, seconds: int, changes_per_s: int) -> None:
        self.rig, self.seconds, self.changes_per_s = rig, seconds, changes_per_s
        self.began = 0.0
        self.stop = threading.Event()
        self.marks: dict[int, float] = {}  # id -> commit time (monotonic)
        self.seen: dict[int, float] = {}  # id -> first seen in ClickHouse
        self.rss: dict[int, tuple[str, list[tuple[float, float]]]] = {}
        self.wal: list[tuple[float, int]] = []
        self.errors: list[str] = []

    def _loop(self, every: float, step) -> None:
        while not self.stop.is_set():
            try:
                step()
            except Exception as exc:  # a sample lost is reported, the soak goes on
                self.errors.append(f"{type(exc).__name__}: {exc}"[:300])
            self.stop.wait(every)

    def _mark(self, conn) -> None:
        mark = len(self.marks) + 1
        conn.execute(
            "INSERT INTO public.soak_marks VALUES (%s, (extract(epoch FROM clock_timestamp()) * 1e6)::bigint)",
            (mark,),
        )
        self.marks[mark] = time.monotonic()

    def _look(self, client, view: str) -> None:
        top = client.query(f"SELECT max(id) FROM {view}").result_rows[0][0] or 0
        now = time.monotonic()
        for mark in [m for m in self.marks if m <= top and m not in self.seen]:
            self.seen[mark] = now

    def _sample(self) -> None:
        now = time.monotonic() - self.began
        for pid in self.rig._our_processes():
            rss = _rss_mb(pid)
            if rss is not None:
                kind, points = self.rss.setdefault(pid, (_kind(pid), []))
                points.append((now, rss))
        self.wal.append((now, slot_wal(self.rig)[0]))

    def run(self) -> dict:
        import psycopg

        from dbmazz_connectors.core import create_sink

        rig = self.rig
        assert rig.pg and rig.ch
        sink = create_sink(
            {
                "url": f"clickhouse://faults_sinker:{rig.env['FAULTS_CH_PASSWORD']}@127.0.0.1:"
                f"{rig.ch.port}/{SINK_DATABASE}",
                "pipeline": PIPELINE,
            }
        )
        sink.connect()
        view = sink.q(sink.target_name("public.soak_marks") + "_current")
        writer = psycopg.connect(rig.pg.url(DATABASE), autocommit=True)
        self.began = time.monotonic()
        client = rig.client(self.seconds, rate=self.changes_per_s // PER_TRANSACTION)
        threads = [
            threading.Thread(target=self._loop, args=(2.0, lambda: self._mark(writer)), daemon=True),
            threading.Thread(
                target=self._loop, args=(0.25, lambda: self._look(sink.client, view)), daemon=True
            ),
            threading.Thread(target=self._loop, args=(10.0, self._sample), daemon=True),
        ]
        for thread in threads:
            thread.start()
        try:
            result = client.wait()
        finally:
            time.sleep(15)  # the last markers become visible
            self.stop.set()
            for thread in threads:
                thread.join(30)
            writer.close()
            sink.disconnect()
        return {
            "transactions": result.transactions,
            "seconds": round(result.seconds, 1),
            "changes_per_s": round(result.transactions * PER_TRANSACTION / result.seconds),
        }

    def report(self) -> dict:
        windows = []
        for start in range(0, self.seconds, WINDOW):
            lags = [
                self.seen[m] - t
                for m, t in self.marks.items()
                if m in self.seen and start <= t - self.began < start + WINDOW
            ]
            missing = sum(
                1
                for m, t in self.marks.items()
                if m not in self.seen and start <= t - self.began < start + WINDOW
            )
            wal = [w for at, w in self.wal if start <= at < start + WINDOW]
            windows.append(
                {
                    "from_minute": start // 60,
                    "markers": len(lags),
                    "never_seen": missing,
                    "freshness_p50_s": round(_percentile(lags, 0.5) or -1, 2),
                    "freshness_p95_s": round(_percentile(lags, 0.95) or -1, 2),
                    "retained_wal_max_mb": round(max(wal) / 2**20, 1) if wal else None,
                }
            )
        processes = []
        for pid, (kind, points) in self.rss.items():
            lifetime = points[-1][0] - points[0][0]
            steady = [p for p in points if p[0] >= min(WARM_UP, self.seconds / 4)]
            processes.append(
                {
                    "pid": pid,
                    "kind": kind,
                    "samples": len(points),
                    "seconds": round(lifetime),
                    "first_mb": round(points[0][1], 1),
                    "last_mb": round(points[-1][1], 1),
                    "peak_mb": round(max(r for _, r in points), 1),
                    "slope_mb_per_hour": _round(_slope_mb_per_hour(steady)),
                }
            )
        return {"windows": windows, "processes": processes}


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--changes-per-s", type=int, default=1000)
    parser.add_argument("--quick", action="store_true", help="4 minutes")
    args = parser.parse_args()
    minutes = 4 if args.quick else args.minutes
    log = lambda message: print(message, file=sys.stderr, flush=True)  # noqa: E731
    with SoakRig(
        "postgres", scale=5, clients=2, sinks=("duckdb", "clickhouse"), poll_interval=5, log=log
    ) as rig:
        load_seconds = wait_initial_load(rig, timeout=900)
        log(
            f"initial load drained in {load_seconds:.0f}s; soaking {minutes} min at {args.changes_per_s} changes/s"
        )
        soak = Soak(rig, int(minutes * 60), args.changes_per_s)
        client = soak.run()
        drain_began = time.monotonic()
        rig.drain(timeout=900)
        drain_seconds = time.monotonic() - drain_began
        comparison = rig.compare()
        report = soak.report()
    # the figure: processes that live through the soak (the daemon; code servers are replaced every few
    # minutes by the daemon's workspace reloads, and runs last seconds: their peaks are reported apart)
    long_lived = [
        p
        for p in report["processes"]
        if p["kind"] != "run"
        and p["slope_mb_per_hour"] is not None
        and p["seconds"] >= min(600, minutes * 60 / 2)
    ]
    short_lived = [p for p in report["processes"] if p["kind"] != "run" and p not in long_lived]
    runs = [p for p in report["processes"] if p["kind"] == "run"]
    print(json.dumps(report), file=sys.stderr)
    # the figure: the largest slope (floored at 0.1 MB/hour, where a ratio to 10 MB/hour is still finite)
    worst = max([0.1, *(abs(p["slope_mb_per_hour"]) for p in long_lived)])
    p95s = [w["freshness_p95_s"] for w in report["windows"] if w["markers"]]
    write_result(
        "soak" + ("_quick" if args.quick else ""),
        figure="largest_rss_slope_mb_per_hour_of_a_long_lived_process",
        value=worst,
        reference="10 MB/hour, taken as about 0 (a leak of a few MB an hour would show)",
        reference_value=10.0,
        target_ratio=1.0,
        higher_is_better=False,
        peak_rss=max((p["peak_mb"] for p in report["processes"]), default=0.0),
        details={
            "minutes": minutes,
            "changes_per_s": args.changes_per_s,
            "initial_load_seconds": round(load_seconds),
            "drain_seconds": round(drain_seconds, 1),
            "rows_compared": comparison.rows,
            "diffs": comparison.diffs,
            "freshness_p95_s_per_window": p95s,
            "windows": report["windows"],
            "long_lived_processes": long_lived,
            "short_lived_processes": {
                "count": len(short_lived),
                "peak_mb_max": max((p["peak_mb"] for p in short_lived), default=None),
                "kinds": sorted({p["kind"] for p in short_lived}),
            },
            "run_processes": {
                "count": len(runs),
                "peak_mb_max": max((p["peak_mb"] for p in runs), default=None),
                "peak_mb_median": _percentile([p["peak_mb"] for p in runs], 0.5),
            },
            "markers": len(soak.marks),
            "markers_seen": len(soak.seen),
            "sample_errors": soak.errors[:20],
            "client": client,
        },
    )
    if comparison.total:
        raise SystemExit(f"sinks differ from the source: {comparison.diffs} {comparison.examples[:5]}")


if __name__ == "__main__":
    main()
