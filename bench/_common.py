"""Shared helpers for benchmark scripts: result files in the format of shared/BENCH.md, memory readings."""

from __future__ import annotations

import json
import os
import platform
import resource
import sys
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def write_result(
    name: str,
    *,
    figure: str,
    value: float,
    reference: str,
    reference_value: float,
    target_ratio: float,
    details: dict[str, Any],
    higher_is_better: bool = True,
    peak_rss: float | None = None,
) -> dict[str, Any]:
    """Write ``bench/results/<name>.json``; ``ratio`` is value/reference (reference/value for latencies)."""
    ratio = value / reference_value if higher_is_better else reference_value / value
    result = {
        "name": name,
        "figure": figure,
        "value": round(value, 3),
        "reference": reference,
        "reference_value": round(reference_value, 3),
        "ratio": round(ratio, 3),
        "target_ratio": target_ratio,
        "peak_rss_mb": round(peak_rss if peak_rss is not None else peak_rss_mb(), 1),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "details": details,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2), file=sys.stderr)
    return result
