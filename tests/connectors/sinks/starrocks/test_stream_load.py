"""Stream Load as the sink speaks it, against the stand-in StarRocks: the FE's redirect followed with the
credentials, labels making a repeat a no-op, a refused load raising a terminal error with its ErrorURL."""

import pickle
import urllib.request

import pytest

from dbmazz_connectors.core import BatchRef, ConfigError
from dbmazz_connectors.sinks.starrocks._stream_load import (
    StreamLoadError,
    StreamLoadUnavailableError,
    put_stream_load,
)

from .._types import type_batch
from ._read import sink  # noqa: F401 - the fixture


def _load(sr_db, body: bytes, label: str, password: str | None = None, port: int | None = None, **headers):
    server = sr_db.server
    return put_stream_load(
        "127.0.0.1",
        port or server.http_port,
        sr_db.name,
        "types",
        {"label": label, "format": "json", "strip_outer_array": "true", "max_filter_ratio": "0", **headers},
        body,
        user=server.user,
        password=server.password if password is None else password,
        timeout=30,
        source_table="public.types",
    )


def test_a_replayed_batch_is_refused_by_its_labels_and_counted_as_applied(sink, sr_db):  # noqa: F811
    """The applied record lost (a crash just before it): the replay's loads are answered
    "Label Already Exists", nothing is loaded twice, and the batch is recorded."""
    batch = type_batch(["c_int64", "c_string"])
    first = sink.write_batch(batch, BatchRef("p", "b1"))
    loads = len(sr_db.server.loads)
    sink.execute("DELETE FROM _dbmazz_applied_batches WHERE batch_id = 'b1'")
    assert not sink.is_applied(BatchRef("p", "b1"), "public.types")
    again = sink.write_batch(batch, BatchRef("p", "b1"))
    assert not again.already_applied and again.details["loads_already_done"] == again.details["loads"] == 1
    assert len(sr_db.server.loads) == loads, "the stand-in loaded nothing a second time"
    assert sink.is_applied(BatchRef("p", "b1"), "public.types")
    assert first.rows_written == again.rows_written == 4 and sink.row_count("public.types") == 4


def test_the_redirect_to_the_be_keeps_the_credentials(sink, sr_db):  # noqa: F811
    sink.write_batch(type_batch(["c_int64"]), BatchRef("p", "b1"))
    result = _load(
        sr_db,
        b'[{"id": 9, "c_int64": 5, "_dbmazz_version": 11, "_dbmazz_is_deleted": 0}]',
        "direct-1",
        columns="id,c_int64,_dbmazz_version,_dbmazz_is_deleted",
        merge_condition="_dbmazz_version",
    )
    assert (result.status, result.loaded_rows) == ("Success", 1)
    assert sink.query_rows("SELECT c_int64 FROM types WHERE id = 9") == [(5,)]
    again = _load(sr_db, b"[]", "direct-1")
    assert again.already_loaded and again.body["ExistingJobStatus"] == "FINISHED"


def test_a_value_that_does_not_fit_fails_the_load_with_its_error_url(sink, sr_db):  # noqa: F811
    sink.write_batch(type_batch(["c_int32"]), BatchRef("p", "b1"))
    with pytest.raises(StreamLoadError) as info:
        _load(
            sr_db,
            b'[{"id": 7, "c_int32": 99999999999, "_dbmazz_version": 12, "_dbmazz_is_deleted": 0}]',
            "too-big",
            columns="id,c_int32,_dbmazz_version,_dbmazz_is_deleted",
        )
    error = info.value
    assert not error.transient and error.status == "Fail" and error.label == "too-big"
    assert "too many filtered rows" in str(error) and error.error_url in str(error)
    with urllib.request.urlopen(error.error_url, timeout=10) as response:
        assert "Column: c_int32" in response.read().decode()
    copy = pickle.loads(pickle.dumps(error))
    assert (type(copy), str(copy), copy.error_url) == (StreamLoadError, str(error), error.error_url)
    assert sink.query_rows("SELECT count(*) FROM types WHERE id = 7") == [(0,)]
    # a failed load frees its label: the same label loads once the row fits
    ok = _load(
        sr_db,
        b'[{"id": 7, "c_int32": 1, "_dbmazz_version": 12, "_dbmazz_is_deleted": 0}]',
        "too-big",
        columns="id,c_int32,_dbmazz_version,_dbmazz_is_deleted",
    )
    assert ok.status == "Success"


def test_wrong_credentials_on_stream_load_are_a_config_error_without_the_password(sink, sr_db):  # noqa: F811
    sink.write_batch(type_batch(["c_int64"]), BatchRef("p", "b1"))
    with pytest.raises(ConfigError, match=r"Stream Load refused user root \(HTTP 401") as info:
        _load(sr_db, b"[]", "x", password="n0t-the-Pa55")
    assert "n0t-the-Pa55" not in str(info.value)


def test_a_be_that_does_not_answer_is_transient(sr_db):
    from infra._common import free_port

    with pytest.raises(StreamLoadUnavailableError) as info:
        _load(sr_db, b"[]", "x", port=free_port())
    assert info.value.transient and "did not complete" in str(info.value)


def test_delete_then_older_insert_replayed_keeps_the_key_deleted(sink, sr_db):  # noqa: F811
    """The reason for tombstones: a physical delete would forget the version, and an older insert
    loaded afterwards would bring the key back."""
    from dbmazz_connectors.core import OP_DELETE, OP_INSERT, ChangeBatch, Rows

    from .._scenarios import BASE
    from .._workload import rows_table

    def apply(batch_id, *changes):
        rows = rows_table(BASE, list(changes))
        return sink.write_batch(
            ChangeBatch(BASE.qualified_name, BASE, [Rows(BASE, rows)]), BatchRef("p", batch_id)
        )

    apply("b1", (OP_INSERT, 10, {"id": 1, "qty": 1}, None))
    deleted = apply("b2", (OP_DELETE, 20, {"id": 1}, None))
    assert deleted.details["tombstones"] == 1
    apply("b1-again-under-a-new-id", (OP_INSERT, 10, {"id": 1, "qty": 1}, None))
    assert sink.row_count("public.items") == 0
    assert sink.query_rows("SELECT _dbmazz_is_deleted, _dbmazz_version FROM items") == [(1, 20)]


def test_non_ascii_and_quoted_names_reach_their_columns(sink):  # noqa: F811
    from dbmazz_connectors.core import (
        OP_INSERT,
        OP_UPDATE,
        ChangeBatch,
        Column,
        LogicalType,
        Rows,
        TableSchema,
    )

    from .._workload import rows_table

    schema = TableSchema(
        "public",
        "prix",
        (
            Column("clé", LogicalType.of("string"), False),
            Column("montant €", LogicalType.of("int64")),
            Column('note "x"', LogicalType.of("string")),
        ),
        ("clé",),
    )

    def apply(batch_id, *changes):
        rows = rows_table(schema, list(changes))
        sink.write_batch(
            ChangeBatch(schema.qualified_name, schema, [Rows(schema, rows)]), BatchRef("p", batch_id)
        )

    apply("b1", (OP_INSERT, 10, {"clé": "ü", "montant €": 5, 'note "x"': "kept"}, None))
    apply("b2", (OP_UPDATE, 20, {"clé": "ü", "montant €": 6}, ['note "x"']))
    assert sink.query_rows('SELECT `clé`, `montant €`, `note "x"` FROM prix_current') == [("ü", 6, "kept")]
