"""Compaction and folding follow the ordering invariant (docs/architecture.md, "The ordering invariant")."""

from dbmazz_connectors.core import OP_DELETE, OP_INSERT, OP_UPDATE, compact, fold

from ._rows import ORDERS, rows


def _state(table):
    return sorted(
        zip(table["id"].to_pylist(), table["qty"].to_pylist(), table["note"].to_pylist(), strict=True)
    )


def test_last_change_per_key_wins_in_source_order():
    batch = rows(
        ORDERS,
        [
            (OP_INSERT, 10, {"id": 1, "qty": 1, "note": "a"}),
            (OP_UPDATE, 10, {"id": 1, "qty": 2, "note": "b"}),
            (OP_INSERT, 10, {"id": 2, "qty": 5, "note": "x"}),
            (OP_UPDATE, 11, {"id": 1, "qty": 3, "note": "c"}),
            (OP_DELETE, 11, {"id": 2}),
        ],
    )
    out = compact(batch, ["id"])
    assert out["id"].to_pylist() == [1, 2]
    assert out["qty"].to_pylist() == [3, None]
    assert out["_dbmazz_op"].to_pylist() == [OP_UPDATE, OP_DELETE]


def test_unknown_value_is_filled_from_the_same_keys_earlier_change():
    batch = rows(
        ORDERS,
        [
            (OP_INSERT, 10, {"id": 1, "qty": 1, "note": "big text"}),
            (OP_UPDATE, 11, {"id": 1, "qty": 2}, ["note"]),
            (OP_UPDATE, 12, {"id": 7, "qty": 2}, ["note"]),
        ],
    )
    out = compact(batch, ["id"])
    assert out.to_pydict()["note"] == ["big text", None]
    assert out.to_pydict()["_dbmazz_unknown_columns"] == [None, ["note"]]


def test_fold_keeps_highest_version_so_replays_change_nothing():
    first = rows(
        ORDERS,
        [
            (OP_INSERT, 10, {"id": 1, "qty": 1, "note": "a"}),
            (OP_INSERT, 10, {"id": 2, "qty": 1, "note": "a"}),
        ],
    )
    second = rows(ORDERS, [(OP_UPDATE, 20, {"id": 1, "qty": 9, "note": "z"}), (OP_DELETE, 20, {"id": 2})])
    state = fold(fold(None, first, ["id"]), second, ["id"])
    assert _state(state) == [(1, 9, "z")]
    replayed = fold(
        fold(state, second, ["id"]), rows(ORDERS, [(OP_INSERT, 10, {"id": 1, "qty": 1, "note": "a"})]), ["id"]
    )
    assert _state(replayed) == [(1, 9, "z")]


def test_fold_keeps_previous_value_for_unknown_columns():
    state = fold(None, rows(ORDERS, [(OP_INSERT, 10, {"id": 1, "qty": 1, "note": "toasted"})]), ["id"])
    state = fold(state, rows(ORDERS, [(OP_UPDATE, 20, {"id": 1, "qty": 2}, ["note"])]), ["id"])
    assert _state(state) == [(1, 2, "toasted")]


def _fill_row_wise(changes: list[tuple], columns: list[str]) -> list[tuple[dict, list | None]]:
    """The reference: each unknown value taken from the key's previous change, unless that was a delete."""
    out, last = [], {}
    for op, _version, values, unknown in changes:
        values, unknown = dict(values), list(unknown or [])
        prev = last.get(values["id"])
        if unknown and prev is not None and prev[0] != OP_DELETE:
            still = []
            for name in unknown:
                if name in (prev[2] or []):
                    still.append(name)
                else:
                    values[name] = prev[1].get(name)
            unknown = still
        last[values["id"]] = (op, values, unknown)
        out.append(({c: values.get(c) for c in columns}, unknown or None))
    return out


def test_unknown_values_resolve_like_the_row_wise_definition():
    """Random chains of inserts, updates with unknown columns and deletes, several keys interleaved."""
    import random

    from dbmazz_connectors.core.compaction import _fill_unknown

    from ._rows import rows

    rng = random.Random(7)
    for _ in range(200):
        changes = []
        for i in range(rng.randint(1, 12)):
            op = rng.choice([OP_INSERT, OP_UPDATE, OP_UPDATE, OP_DELETE])
            key = rng.randint(1, 3)
            unknown = [c for c in ("qty", "note") if op != OP_DELETE and rng.random() < 0.5] or None
            values = (
                {"id": key}
                if op == OP_DELETE
                else {
                    "id": key,
                    "qty": None if unknown and "qty" in unknown else i,
                    "note": None if unknown and "note" in unknown else f"n{i}",
                }
            )
            changes.append((op, 10 + i, values, unknown))
        got = _fill_unknown(rows(ORDERS, changes), ["id"]).to_pylist()
        want = _fill_row_wise(changes, ["id", "qty", "note"])
        assert [
            ({c: r[c] for c in ("id", "qty", "note")}, r["_dbmazz_unknown_columns"]) for r in got
        ] == want, changes


def test_unknown_values_of_rows_holding_dates_no_python_date_can_hold():
    """BC dates and +-infinity (outside datetime's years 1..9999) in a batch with unchanged-TOAST updates."""
    import pyarrow as pa

    from dbmazz_connectors.core import Column, LogicalType, TableSchema
    from dbmazz_connectors.core.types import DATE_POS_INFINITY, TIMESTAMP_NEG_INFINITY

    schema = TableSchema(
        "public",
        "edge",
        (
            Column("id", LogicalType.of("date"), nullable=False),
            Column("ts", LogicalType.of("timestamp")),
            Column("body", LogicalType.of("string")),
        ),
        ("id",),
    )
    bc, far = -2_440_588, 2_145_042_905  # 4714-11-24 BC, 5874897-12-31
    data = pa.table(
        {
            "id": pa.array([bc, far, bc, DATE_POS_INFINITY, far], pa.int32()).cast(pa.date32()),
            "ts": pa.array([TIMESTAMP_NEG_INFINITY, -(10**18), 5, 2**62, 6], pa.int64()).cast(
                pa.timestamp("us")
            ),
            "body": ["toasted", "big", None, None, None],
            "_dbmazz_op": pa.array([OP_INSERT, OP_INSERT, OP_UPDATE, OP_UPDATE, OP_UPDATE], pa.int8()),
            "_dbmazz_version": pa.array([1, 1, 2, 2, 3], pa.uint64()),
            "_dbmazz_commit_ts": pa.array([0] * 5, pa.int64()).cast(pa.timestamp("us", tz="UTC")),
            "_dbmazz_unknown_columns": [None, None, ["body"], ["body"], ["body"]],
        }
    ).cast(schema.arrow_schema())
    out = compact(data, ["id"])
    assert out.column("id").cast(pa.int32()).to_pylist() == [bc, DATE_POS_INFINITY, far]
    assert out.column("ts").cast(pa.int64()).to_pylist() == [5, 2**62, 6]
    assert out.column("body").to_pylist() == ["toasted", None, "big"]
    assert out.column("_dbmazz_unknown_columns").to_pylist() == [None, ["body"], None]
