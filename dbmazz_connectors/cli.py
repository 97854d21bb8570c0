"""The ``dbmazz`` command: ``dbmazz check pipelines.yaml`` runs every preflight check without changing anything."""

from __future__ import annotations

import argparse
import signal
import sys

from .config import PipelineConfig, literal_passwords, load_pipelines
from .core.errors import DbmazzError, Problem
from .core.registry import create_sink, create_source


def check_pipeline(
    pipeline: PipelineConfig, notes: list[tuple[str, str]] | None = None
) -> list[tuple[str, Problem]]:
    """Preflight of the pipeline's source and every sink; returns (component, problem) pairs.

    ``notes`` (when given) receives (component, line) for each column that will not reach the sinks as it is
    (a connector's ``omitted_columns()``): not a problem, but what the user should know.

    A password written in the file is a problem too: the Dagster definitions refuse to load it."""
    found: list[tuple[str, Problem]] = [
        (
            label,
            Problem(
                "config",
                f"expected the {label}'s password from the environment, found it written in the file",
                "replace it by password_env: VAR, or ${VAR} inside the url, and export VAR",
            ),
        )
        for label in literal_passwords(pipeline)
    ]
    components = [("source", lambda: create_source(pipeline.source_config()))]
    components += [
        (f"sink {name}", lambda name=name: create_sink(pipeline.sink_config(name))) for name in pipeline.sinks
    ]
    for label, build in components:
        try:
            connector = build()
            connector.connect()
            try:
                checks = (
                    connector.preflight()
                    if label == "source"
                    else connector.preflight(tables=pipeline.tables)
                )
                found += [(label, p) for p in checks]
                if notes is not None and hasattr(connector, "omitted_columns"):
                    notes += [(label, line) for line in connector.omitted_columns()]
            finally:
                connector.disconnect()
        except DbmazzError as exc:
            found.append((label, Problem("connect", exc.message, exc.hint)))
    return found


def _interrupt(signum: int, _frame: object) -> None:
    """SIGTERM (a process manager's stop) and SIGHUP take Ctrl-C's path: connections are closed on the way out."""
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv: list[str] | None = None) -> int:
    previous = {signum: signal.signal(signum, _interrupt) for signum in (signal.SIGTERM, signal.SIGHUP)}
    try:
        return _main(argv)
    except KeyboardInterrupt as exc:
        name = str(exc) if str(exc) in ("SIGTERM", "SIGHUP") else "SIGINT"
        print(f"dbmazz: stopped by {name}", file=sys.stderr)
        return 128 + signal.Signals[name]
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _main(argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(prog="dbmazz", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check", help="run preflight checks for the pipelines in a config file")
    check.add_argument("config", help="pipelines.yaml")
    check.add_argument("--pipeline", help="check only this pipeline")
    args = parser.parse_args(argv)
    try:
        pipelines = load_pipelines(args.config)
    except DbmazzError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.pipeline:
        if args.pipeline not in pipelines:
            print(f"error: no pipeline {args.pipeline!r} in {args.config}", file=sys.stderr)
            return 2
        pipelines = {args.pipeline: pipelines[args.pipeline]}
    failed = False
    for name, pipeline in pipelines.items():
        notes: list[tuple[str, str]] = []
        problems = check_pipeline(pipeline, notes)
        failed |= bool(problems)
        print(f"{name}: {'ok' if not problems else f'{len(problems)} problem(s)'}")
        for label, problem in problems:
            print(f"  {label}: {problem}")
        for label, line in notes:
            print(f"  {label}: column not replicated as is: {line}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
