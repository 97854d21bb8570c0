"""Compaction and folding follow the ordering invariant (DESIGN §2)."""

from dbmazz_connectors.core import OP_DELETE, OP_INSERT, OP_UPDATE, compact, fold

from ._rows import ORDERS, rows


def _state(table):
    return sorted(zip(table["id"].to_pylist(), table["qty"].to_pylist(), table["note"].to_pylist(), strict=True))


def test_last_change_per_key_wins_in_source_order():
    batch = rows(ORDERS, [
        (OP_INSERT, 10, {"id": 1, "qty": 1, "note": "a"}),
        (OP_UPDATE, 10, {"id": 1, "qty": 2, "note": "b"}),
        (OP_INSERT, 10, {"id": 2, "qty": 5, "note": "x"}),
        (OP_UPDATE, 11, {"id": 1, "qty": 3, "note": "c"}),
        (OP_DELETE, 11, {"id": 2}),
    ])
    out = compact(batch, ["id"])
    assert out["id"].to_pylist() == [1, 2]
    assert out["qty"].to_pylist() == [3, None]
    assert out["_dbmazz_op"].to_pylist() == [OP_UPDATE, OP_DELETE]


def test_unknown_value_is_filled_from_the_same_keys_earlier_change():
    batch = rows(ORDERS, [
        (OP_INSERT, 10, {"id": 1, "qty": 1, "note": "big text"}),
        (OP_UPDATE, 11, {"id": 1, "qty": 2}, ["note"]),
        (OP_UPDATE, 12, {"id": 7, "qty": 2}, ["note"]),
    ])
    out = compact(batch, ["id"])
    assert out.to_pydict()["note"] == ["big text", None]
    assert out.to_pydict()["_dbmazz_unknown_columns"] == [None, ["note"]]


def test_fold_keeps_highest_version_so_replays_change_nothing():
    first = rows(ORDERS, [(OP_INSERT, 10, {"id": 1, "qty": 1, "note": "a"}),
                          (OP_INSERT, 10, {"id": 2, "qty": 1, "note": "a"})])
    second = rows(ORDERS, [(OP_UPDATE, 20, {"id": 1, "qty": 9, "note": "z"}), (OP_DELETE, 20, {"id": 2})])
    state = fold(fold(None, first, ["id"]), second, ["id"])
    assert _state(state) == [(1, 9, "z")]
    replayed = fold(fold(state, second, ["id"]), rows(ORDERS, [(OP_INSERT, 10, {"id": 1, "qty": 1, "note": "a"})]),
                    ["id"])
    assert _state(replayed) == [(1, 9, "z")]


def test_fold_keeps_previous_value_for_unknown_columns():
    state = fold(None, rows(ORDERS, [(OP_INSERT, 10, {"id": 1, "qty": 1, "note": "toasted"})]), ["id"])
    state = fold(state, rows(ORDERS, [(OP_UPDATE, 20, {"id": 1, "qty": 2}, ["note"])]), ["id"])
    assert _state(state) == [(1, 2, "toasted")]
