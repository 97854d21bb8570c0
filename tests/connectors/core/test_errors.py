"""Every DbmazzError survives a pickle round trip (work may run in another process, e.g. a Dagster run worker)."""

from __future__ import annotations

import importlib
import inspect
import pickle
import pkgutil

import pytest

import dbmazz_connectors
from dbmazz_connectors.core.errors import DbmazzError, PreflightError, Problem


def _all_error_classes() -> list[type[DbmazzError]]:
    for module in pkgutil.walk_packages(dbmazz_connectors.__path__, "dbmazz_connectors."):
        importlib.import_module(module.name)
    found, todo = set(), [DbmazzError]
    while todo:
        for sub in todo.pop().__subclasses__():
            if sub not in found:
                found.add(sub)
                todo.append(sub)
    return sorted(found | {DbmazzError}, key=lambda c: f"{c.__module__}.{c.__qualname__}")


def _example(cls: type[DbmazzError]) -> DbmazzError:
    """An instance built from the constructor's own parameters (distinct strings, ints where annotated)."""
    if cls is PreflightError:
        return cls(
            [
                Problem(
                    "slots", "expected a free slot, found none", "ALTER SYSTEM SET max_replication_slots = 12"
                )
            ]
        )
    kwargs = {}
    for name, param in inspect.signature(cls.__init__).parameters.items():
        if name == "self" or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        kwargs[name] = (
            7 if "int" in str(param.annotation) and "str" not in str(param.annotation) else f"<{name}>"
        )
        if name == "known":
            kwargs[name] = ["a", "b"]
    return cls(**kwargs)


@pytest.mark.parametrize("cls", _all_error_classes(), ids=lambda c: c.__qualname__)
def test_error_survives_pickle_with_its_message_attributes_and_notes(cls):
    error = _example(cls)
    error.add_note("while applying public.orders of batch b1")
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is cls
    assert str(copy) == str(error) and copy.args == error.args
    assert copy.__dict__ == error.__dict__  # table, column, hint, transient flags, notes...
    assert copy.__notes__ == ["while applying public.orders of batch b1"]
