"""The change log on an S3-compatible object store served over HTTP (moto's server mode, infra/s3.py).

The same contract as on a local folder (test_store.py): a batch exists once its manifest does, a rewrite
removes an earlier attempt's parts, a deleted batch leaves no object behind; plus what only a URI brings:
credentials stay out of it, and no error quotes a secret.
"""

import pytest

from dbmazz_connectors.changelog import ChangeLog
from dbmazz_connectors.core import OP_INSERT, ChangeLogError, ConfigError, Heartbeat, Rows
from dbmazz_connectors.sources.postgres.position import Lsn

from ..core._rows import ORDERS, rows
from .test_store import _write

pytest.importorskip("moto.server", reason="moto[server] (dev extra) serves the S3 API")


@pytest.fixture(scope="module")
def s3():
    from infra.s3 import S3Server

    with S3Server() as server:
        yield server


@pytest.fixture
def log(s3, monkeypatch, request):
    for key, value in s3.env().items():  # pyarrow's default credential chain reads them, as in production
        monkeypatch.setenv(key, value)
    return ChangeLog(s3.uri(f"changelog/{request.node.name}"))


def _keys(s3, log) -> list[str]:
    import pyarrow.fs as pafs

    infos = s3.filesystem().get_file_info(pafs.FileSelector(log.root, recursive=True, allow_not_found=True))
    return sorted(i.path[len(log.root) + 1 :] for i in infos if i.is_file)


def test_batch_round_trips_through_the_object_store(log, s3):
    manifest, wider = _write(log)
    assert log.manifest("p", "b1").to_dict() == manifest.to_dict()
    batch = log.read_batch("p", "b1", "public.orders")
    assert [type(e).__name__ for e in batch.events] == ["Rows", "Truncate", "SchemaChange", "Rows"]
    assert batch.events[3].data["extra"].to_pylist() == [True, None]
    segments = log.segments("p", "b1", "public.orders")
    assert sum(s.rows for s in segments) == 3
    assert _keys(s3, log) == [
        "p/_batches/b1.json",
        "p/public.orders/b1/part-00000.parquet",
        "p/public.orders/b1/part-00001.parquet",
    ]


def test_uncommitted_parts_are_invisible_and_removed_by_the_rewrite(log, s3):
    writer = log.writer("p", "b1", Lsn(1))
    for n in range(3):  # an attempt that staged three parts, then died before its manifest
        writer.add(Rows(ORDERS, rows(ORDERS, [(OP_INSERT, 2 + n, {"id": n})])))
        writer._flush("public.orders", writer.tables["public.orders"])
    assert log.manifest("p", "b1") is None and log.batches("p") == [] and log.checkpoint("p") is None
    _write(log)
    assert [m.batch_id for m in log.batches("p")] == ["b1"]
    assert [k for k in _keys(s3, log) if k.endswith(".parquet")] == [
        "p/public.orders/b1/part-00000.parquet",
        "p/public.orders/b1/part-00001.parquet",
    ]


def test_records_checkpoint_and_delete_leave_nothing_behind(log, s3):
    _write(log)
    log.record_idle_checkpoint("p", Lsn(900))
    log.write_plan("p", "b2", Lsn(900), Lsn(1000))
    assert log.checkpoint("p") == Lsn(900) and log.plan("p", "b2") == (Lsn(900), Lsn(1000))
    log.write_plan("p", "b1", Lsn(100), Lsn(400))
    log.delete_batch("p", "b1")
    assert log.manifest("p", "b1") is None and log.plan("p", "b1") is None
    assert _keys(s3, log) == ["p/_plans/b2.json", "p/_state/idle_checkpoint.json"]


def test_many_batches_list_in_position_order(log):
    for n in range(12):  # listing order on the store is by key ("b10" < "b2"); the log orders by position
        writer = log.writer("p", f"b{n}", Lsn(100 * n))
        writer.add(Rows(ORDERS, rows(ORDERS, [(OP_INSERT, 100 * n + 1, {"id": n})])))
        writer.add(Heartbeat(Lsn(100 * n + 50)))
        writer.commit()
    assert [m.batch_id for m in log.batches("p")] == [f"b{n}" for n in range(12)]
    assert log.checkpoint("p") == Lsn(1150)


@pytest.mark.parametrize("userinfo", ["AKIAEXAMPLE:s3cr3t/with+slash", "AKIAEXAMPLE:s3cr3t", "AKIAEXAMPLE"])
def test_credentials_in_the_uri_are_refused_without_quoting_them(userinfo):
    with pytest.raises(ChangeLogError) as raised:
        ChangeLog(f"s3://{userinfo}@bucket/changelog?scheme=http")
    assert "s3cr3t" not in str(raised.value) and "AKIAEXAMPLE" not in str(raised.value)
    assert "carries credentials" in str(raised.value) and "AWS_SECRET_ACCESS_KEY" in str(raised.value)


def test_an_unknown_uri_option_says_what_is_accepted():
    with pytest.raises(ChangeLogError, match="endpoint_override=host:port&scheme=http"):
        ChangeLog("s3://bucket/changelog?endpoint=127.0.0.1:9000")


def test_a_pipeline_with_credentials_in_its_change_log_uri_is_refused_at_load(tmp_path):
    """Before Dagster stores and shows the resource's config: the pipeline does not load."""
    from dbmazz_connectors.config import load_pipelines

    path = tmp_path / "pipelines.yaml"
    path.write_text(
        "pipelines:\n  shop:\n    source: {url: 'postgresql://capture@127.0.0.1/shop'}\n"
        "    tables: [public.orders]\n    sinks: {duckdb: {url: 'duckdb:///shop.duckdb'}}\n"
        "    changelog: 's3://AKIAEXAMPLE:s3cr3t/x@bucket/cl?scheme=http'\n"
    )
    with pytest.raises(ConfigError) as raised:
        load_pipelines(str(path))
    assert "carries credentials" in str(raised.value)
    assert "s3cr3t" not in str(raised.value) and "AKIAEXAMPLE" not in str(raised.value)


def _commit(log, batch_id: str, low: int, rows_: int = 1):
    writer = log.writer("p", batch_id, Lsn(low))
    writer.add(Rows(ORDERS, rows(ORDERS, [(OP_INSERT, low + 1 + n, {"id": n}) for n in range(rows_)])))
    writer.add(Heartbeat(Lsn(low + 50)))
    return writer.commit()


def _manifest_reads(s3, log) -> list[str]:
    """GETs of manifest objects the store served (its access log), not listings."""
    return [
        path for method, path in s3.requests() if method == "GET" and "/_batches/" in path and "?" not in path
    ]


def test_listing_again_reads_only_the_new_manifests(log, s3):
    """The sensor lists every kept batch on each tick: each manifest is read from the store once."""
    for n in range(5):
        _commit(log, f"b{n}", 100 * n)
    before = len(_manifest_reads(s3, log))
    assert len(log.batches("p")) == 5
    assert len(_manifest_reads(s3, log)) - before == 5
    assert log.checkpoint("p") == Lsn(450) and len(log.batches("p")) == 5
    assert len(_manifest_reads(s3, log)) - before == 5  # listed twice more, read no more
    _commit(log, "b5", 500)
    assert log.checkpoint("p") == Lsn(550)
    assert len(_manifest_reads(s3, log)) - before == 6  # only b5's


def test_a_deleted_and_rewritten_batch_is_read_again(log):
    _commit(log, "b0", 0)
    _commit(log, "b1", 100)
    assert [m.rows for m in log.batches("p")] == [1, 1]
    log.delete_batch("p", "b1")
    assert [m.batch_id for m in log.batches("p")] == ["b0"]
    _commit(log, "b1", 100, rows_=3)  # the same id, other content: never served from what was read before
    assert [m.rows for m in log.batches("p")] == [1, 3]
    assert ChangeLog(log._origin).batches("p")[-1].rows == 3  # another ChangeLog of the same root agrees
