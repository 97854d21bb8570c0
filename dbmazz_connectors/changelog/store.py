"""Reading and writing change-log batches through ``pyarrow.fs``.

Layout under the root::

    <pipeline>/<table>/<batch>/part-00000.parquet   row chunks, in source order
    <pipeline>/_batches/<batch>.json                the manifest, written last

Durability contract: ``BatchWriter.commit`` returns only after every part and then the manifest
are written (and, on a local filesystem, fsynced); a batch without a manifest does not exist and
its leftover parts are removed when the batch is written again.
"""

from __future__ import annotations

import json
import os
import threading
import uuid
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from ..core.batch import (
    ChangeBatch,
    ChangeEvent,
    Heartbeat,
    Rows,
    SchemaChange,
    TableEvent,
    Truncate,
    op_counts,
)
from ..core.errors import ChangeLogError
from ..core.positions import SourcePosition, position_from_dict
from ..core.schema import COMMIT_TS_COLUMN, VERSION_COLUMN, TableSchema
from .manifest import BatchManifest, TableEntry

__all__ = ["ChangeLog", "BatchWriter"]

_MANIFESTS = "_batches"
_SNAPSHOTS = "_snapshots"
_PRUNED_SNAPSHOTS = "_pruned_snapshots"
SEGMENT_ROWS = 100_000  # rows a sink applies at once from a snapshot batch (engine.apply_batch)


# manifests read by ``ChangeLog.batches``, per (filesystem, path): ((size, mtime), manifest), least recent first
_MANIFEST_CACHE: OrderedDict[tuple[str, str], tuple[tuple[int | None, int | None], BatchManifest]] = (
    OrderedDict()
)
_CACHE_LOCK = threading.Lock()
_CACHE_SIZE = 50_000


def _segment(name: str) -> str:
    return quote(name, safe=".-_")


class ChangeLog:
    """The change log of every pipeline under one root (a local folder or a filesystem URI)."""

    def __init__(
        self,
        root: str,
        *,
        part_rows: int = 500_000,
        part_bytes: int = 128 * 1024 * 1024,
        compression: str = "zstd",
        segment_rows: int = SEGMENT_ROWS,
    ) -> None:
        self._origin = root if "://" in root else "file"  # tells filesystems apart in the manifest cache
        if "://" in root:
            self.fs, self.root = _open_uri(root)
        else:
            self.fs, self.root = pafs.LocalFileSystem(), os.path.abspath(root)
        self.part_rows = part_rows
        self.part_bytes = part_bytes
        self.compression = compression
        self.segment_rows = segment_rows
        self.is_local = isinstance(self.fs, pafs.LocalFileSystem)

    def __repr__(self) -> str:
        return f"ChangeLog({self.root!r})"

    # paths
    def _pipeline_dir(self, pipeline: str) -> str:
        return f"{self.root}/{_segment(pipeline)}"

    def manifest_path(self, pipeline: str, batch_id: str) -> str:
        return f"{self._pipeline_dir(pipeline)}/{_MANIFESTS}/{_segment(batch_id)}.json"

    def part_dir(self, pipeline: str, table: str, batch_id: str) -> str:
        return f"{self._pipeline_dir(pipeline)}/{_segment(table)}/{_segment(batch_id)}"

    # reading
    def manifest(self, pipeline: str, batch_id: str) -> BatchManifest | None:
        """The batch's manifest, or None when the batch was never completed."""
        path = self.manifest_path(pipeline, batch_id)
        try:
            with self.fs.open_input_stream(path) as stream:
                return BatchManifest.from_dict(json.loads(stream.read()))
        except FileNotFoundError:
            return None

    def batches(self, pipeline: str) -> list[BatchManifest]:
        """Every complete batch of the pipeline, ordered by position."""
        selector = pafs.FileSelector(f"{self._pipeline_dir(pipeline)}/{_MANIFESTS}", allow_not_found=True)
        manifests = [
            self._listed_manifest(info)
            for info in self.fs.get_file_info(selector)
            if info.is_file and info.path.endswith(".json")
        ]
        return sorted(manifests, key=lambda m: (m.end.version, m.start.version))

    def _listed_manifest(self, info: pafs.FileInfo) -> BatchManifest:
        """A listed manifest, read once per process while its size and modification time stay the same.

        A complete batch is never rewritten, only deleted (retention; ``delete_batch`` forgets it here too), so
        the sensor, which lists every kept batch on each tick, reads only the new ones: on an object store each
        read is a request, and reading 500 manifests took seconds (``docs/deployment.md``).
        """
        key = (self._origin, info.path)
        stamp = (info.size, info.mtime_ns)
        with _CACHE_LOCK:
            cached = _MANIFEST_CACHE.get(key)
            if cached is not None and cached[0] == stamp:
                _MANIFEST_CACHE.move_to_end(key)
                return cached[1]
        with self.fs.open_input_stream(info.path) as stream:
            manifest = BatchManifest.from_dict(json.loads(stream.read()))
        with _CACHE_LOCK:
            _MANIFEST_CACHE[key] = (stamp, manifest)
            while len(_MANIFEST_CACHE) > _CACHE_SIZE:
                _MANIFEST_CACHE.popitem(last=False)
        return manifest

    def read_batch(self, pipeline: str, batch_id: str, table: str) -> ChangeBatch:
        """One table's changes of a complete batch (an empty batch if the table had none)."""
        manifest = self.manifest(pipeline, batch_id)
        if manifest is None:
            raise ChangeLogError(
                f"batch {batch_id} of pipeline {pipeline} is not in the change log {self.root}"
            )
        entry = manifest.tables.get(table)
        if entry is None:
            raise ChangeLogError(f"batch {batch_id} of pipeline {pipeline} has no entry for table {table}")
        return ChangeBatch(table, entry.schema, list(self._events(pipeline, batch_id, table, entry)))

    def segments(self, pipeline: str, batch_id: str, table: str) -> list[Segment]:
        """One table's batch cut, in order, into segments of about ``segment_rows`` rows (whole row groups).

        Applying the segments one after the other gives what applying the batch gives (each is a
        smaller batch of the same stream, and sinks converge batch by batch); see
        ``engine.apply_batch``. Reads Parquet footers only.
        """
        manifest = self.manifest(pipeline, batch_id)
        entry = manifest.tables.get(table) if manifest is not None else None
        if entry is None:
            raise ChangeLogError(f"batch {batch_id} of pipeline {pipeline} has no entry for table {table}")
        folder = self.part_dir(pipeline, table, batch_id)
        segments: list[Segment] = []
        schema, start, leading = entry.schema, entry.schema, []  # start: the schema before ``leading``
        for item in entry.entries:
            if item["kind"] != "rows":
                leading.append(item)
                if item["kind"] == "schema":
                    schema = TableSchema.from_dict(item["schema"])
                continue
            with self.fs.open_input_file(f"{folder}/{item['file']}") as handle:
                meta = pq.ParquetFile(handle).metadata
            groups: list[int] = []
            rows = 0
            for index in range(meta.num_row_groups):
                groups.append(index)
                rows += meta.row_group(index).num_rows
                if rows >= self.segment_rows or index == meta.num_row_groups - 1:
                    segments.append(
                        Segment(
                            f"{item['file']}/{groups[0]}",
                            start,
                            tuple(leading),
                            item["file"],
                            tuple(groups),
                            rows,
                        )
                    )
                    groups, rows, leading, start = [], 0, [], schema
        if leading or not segments:
            segments.append(Segment("tail", start, tuple(leading), None, (), 0))
        return segments

    def read_segment(self, pipeline: str, batch_id: str, table: str, segment: Segment) -> ChangeBatch:
        """A segment (from ``segments``) as a batch of its own: its truncates and schema changes, then its rows."""
        events: list[TableEvent] = []
        schema = segment.schema
        for item in segment.leading:
            event = _entry_event(table, item, batch_id)
            schema = event.schema if isinstance(event, SchemaChange) else schema
            events.append(event)
        if segment.file is not None:
            path = f"{self.part_dir(pipeline, table, batch_id)}/{segment.file}"
            with self.fs.open_input_file(path) as handle:
                data = pq.ParquetFile(handle).read_row_groups(list(segment.row_groups))
            events.append(Rows(schema, data.cast(schema.arrow_schema())))
        return ChangeBatch(table, segment.schema, events)

    def _events(self, pipeline: str, batch_id: str, table: str, entry: TableEntry) -> Iterable[TableEvent]:
        schema = entry.schema
        folder = self.part_dir(pipeline, table, batch_id)
        for item in entry.entries:
            if item["kind"] == "rows":
                data = pq.read_table(f"{folder}/{item['file']}", filesystem=self.fs)
                yield Rows(schema, data.cast(schema.arrow_schema()))
            else:
                event = _entry_event(table, item, batch_id)
                schema = event.schema if isinstance(event, SchemaChange) else schema
                yield event

    # planned ranges and the idle checkpoint (small JSON records beside the manifests)
    def _record_path(self, pipeline: str, kind: str, name: str) -> str:
        return f"{self._pipeline_dir(pipeline)}/{kind}/{_segment(name)}.json"

    def _read_record(self, path: str) -> dict[str, Any] | None:
        try:
            with self.fs.open_input_stream(path) as stream:
                return json.loads(stream.read())
        except FileNotFoundError:
            return None

    def write_plan(self, pipeline: str, batch_id: str, start: SourcePosition, end: SourcePosition) -> None:
        """Record the range a planned batch covers, so any later run of it reads exactly that range."""
        payload = json.dumps({"start": start.to_dict(), "end": end.to_dict()}).encode()
        self._write_bytes_atomically(self._record_path(pipeline, "_plans", batch_id), payload)

    def plan(self, pipeline: str, batch_id: str) -> tuple[SourcePosition, SourcePosition] | None:
        record = self._read_record(self._record_path(pipeline, "_plans", batch_id))
        if record is None:
            return None
        return position_from_dict(record["start"]), position_from_dict(record["end"])

    def record_idle_checkpoint(self, pipeline: str, position: SourcePosition) -> None:
        """Record that the source was acknowledged to ``position`` with nothing to capture before it."""
        payload = json.dumps({"position": position.to_dict(), "at": datetime.now(UTC).isoformat()}).encode()
        self._write_bytes_atomically(self._record_path(pipeline, "_state", "idle_checkpoint"), payload)

    def checkpoint(self, pipeline: str) -> SourcePosition | None:
        """The position everything before which is captured: the newest log batch's end or the idle checkpoint.

        Snapshot batches never count: they read tables, not the source's log.
        """
        candidates = []
        latest = [m for m in self.batches(pipeline) if not m.is_snapshot]
        if latest:
            candidates.append(latest[-1].end)
        record = self._read_record(self._record_path(pipeline, "_state", "idle_checkpoint"))
        if record is not None:
            candidates.append(position_from_dict(record["position"]))
        return max(candidates, key=lambda p: p.version) if candidates else None

    def table_identities(self, pipeline: str) -> dict[str, str]:
        """The identity (e.g. relation id) each table had when it was last set up or snapshotted."""
        record = self._read_record(self._record_path(pipeline, "_state", "table_identities"))
        return dict(record or {})

    def record_table_identities(self, pipeline: str, identities: dict[str, str]) -> None:
        merged = {**self.table_identities(pipeline), **identities}
        payload = json.dumps(merged, indent=1, sort_keys=True).encode()
        self._write_bytes_atomically(self._record_path(pipeline, "_state", "table_identities"), payload)

    # snapshot plans
    def write_snapshot_plan(self, pipeline: str, snapshot_id: str, payload: dict[str, Any]) -> None:
        """Record a planned snapshot (its floor, tables and chunks), before any of its batches runs."""
        data = json.dumps(payload, indent=1, sort_keys=True).encode()
        self._write_bytes_atomically(self._record_path(pipeline, _SNAPSHOTS, snapshot_id), data)

    def snapshot_plan(self, pipeline: str, snapshot_id: str) -> dict[str, Any] | None:
        return self._read_record(self._record_path(pipeline, _SNAPSHOTS, snapshot_id))

    def snapshot_plans(self, pipeline: str) -> list[dict[str, Any]]:
        """Every planned snapshot of the pipeline, oldest first."""
        selector = pafs.FileSelector(f"{self._pipeline_dir(pipeline)}/{_SNAPSHOTS}", allow_not_found=True)
        plans = [
            self._read_record(info.path)
            for info in self.fs.get_file_info(selector)
            if info.is_file and info.path.endswith(".json")
        ]
        return sorted((p for p in plans if p is not None), key=lambda p: p["snapshot_id"])

    def record_snapshot_pruned(self, pipeline: str, snapshot_id: str) -> None:
        """Record that retention removed every batch of a snapshot (its plan stays: it says the table was loaded)."""
        payload = json.dumps({"at": datetime.now(UTC).isoformat()}).encode()
        self._write_bytes_atomically(self._record_path(pipeline, _PRUNED_SNAPSHOTS, snapshot_id), payload)

    def pruned_snapshots(self, pipeline: str) -> set[str]:
        """The snapshots whose batches retention removed, all of them (``record_snapshot_pruned``)."""
        selector = pafs.FileSelector(
            f"{self._pipeline_dir(pipeline)}/{_PRUNED_SNAPSHOTS}", allow_not_found=True
        )
        return {
            info.base_name.removesuffix(".json")
            for info in self.fs.get_file_info(selector)
            if info.is_file and info.base_name.endswith(".json")
        }

    # writing
    def writer(
        self,
        pipeline: str,
        batch_id: str,
        start: SourcePosition,
        *,
        kind: str = "cdc",
        snapshot: dict[str, Any] | None = None,
    ) -> BatchWriter:
        """A writer for a new batch; leftovers of an earlier, uncompleted attempt are removed."""
        if self.manifest(pipeline, batch_id) is not None:
            raise ChangeLogError(f"batch {batch_id} of pipeline {pipeline} is already complete")
        self._remove_parts(pipeline, batch_id)
        return BatchWriter(self, pipeline, batch_id, start, kind=kind, snapshot=snapshot)

    def delete_batch(self, pipeline: str, batch_id: str) -> None:
        """Remove a batch: the manifest first (so it stops existing at once), then its parts and plan."""
        with _CACHE_LOCK:
            _MANIFEST_CACHE.pop((self._origin, self.manifest_path(pipeline, batch_id)), None)
        for path in (self.manifest_path(pipeline, batch_id), self._record_path(pipeline, "_plans", batch_id)):
            try:
                self.fs.delete_file(path)
            except FileNotFoundError:
                pass
        self._remove_parts(pipeline, batch_id)

    def _remove_parts(self, pipeline: str, batch_id: str) -> None:
        selector = pafs.FileSelector(self._pipeline_dir(pipeline), allow_not_found=True)
        for info in self.fs.get_file_info(selector):
            if info.type == pafs.FileType.Directory and info.base_name not in (
                _MANIFESTS,
                _SNAPSHOTS,
                "_plans",
                "_state",
            ):
                folder = f"{info.path}/{_segment(batch_id)}"
                if self.fs.get_file_info(folder).type == pafs.FileType.Directory:
                    self.fs.delete_dir(folder)

    def _write_bytes_atomically(self, path: str, payload: bytes) -> None:
        parent = path.rsplit("/", 1)[0]
        self.fs.create_dir(parent, recursive=True)
        if not self.is_local:
            with self.fs.open_output_stream(path) as out:  # an object PUT is atomic
                out.write(payload)
            return
        tmp = f"{path}.tmp-{uuid.uuid4().hex}"
        with open(tmp, "wb") as out:
            out.write(payload)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
        _fsync_dir(parent)


@dataclass(frozen=True)
class Segment:
    """A slice of one table's batch that applies on its own (``ChangeLog.segments``): its leading truncates
    and schema changes, then some row groups of one part (none for a ``tail``)."""

    name: str  # unique within the table's batch: "<part file>/<first row group>", or "tail"
    schema: TableSchema  # in effect where the segment starts
    leading: tuple[dict[str, Any], ...]
    file: str | None
    row_groups: tuple[int, ...]
    rows: int


CREDENTIALS_HINT = (
    "remove them from the URI and set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or a profile or "
    "role) in the environment of the daemon, the code server and every run"
)


def credentials_in_uri(uri: str) -> bool:
    """Whether a filesystem URI carries a user part (``scheme://KEY:SECRET@...``)."""
    if "://" not in uri:
        return False
    userinfo, at, _ = uri.partition("://")[2].split("?", 1)[0].partition("@")
    # an AWS secret may hold a '/', so the user part is not cut at the first slash
    return bool(at) and (":" in userinfo or "/" not in userinfo)


def _open_uri(uri: str) -> tuple[pafs.FileSystem, str]:
    """The filesystem and root path of a change-log URI, refusing credentials in it.

    A key pair in the URI (``s3://KEY:SECRET@bucket/...``, which pyarrow accepts) would travel wherever the
    URI does: pipelines.yaml, the Dagster resource's config shown in the UI, error messages (pyarrow's own
    parse errors quote the whole URI, and an AWS secret with a ``/`` in it fails to parse). The store's
    credentials belong in the environment (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, a profile, an
    instance or pod role), where pyarrow's default credential chain finds them.
    """
    if credentials_in_uri(uri):
        scheme, _, rest = uri.partition("://")
        raise ChangeLogError(
            f"the change-log URI {scheme}://***@{rest.split('?', 1)[0].partition('@')[2]} "
            "carries credentials",
            hint=CREDENTIALS_HINT,
        )
    try:
        return pafs.FileSystem.from_uri(uri)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError) as exc:
        raise ChangeLogError(
            f"the change-log URI {uri} is not a filesystem URI pyarrow accepts: {exc}",
            hint="a local folder, file:///path, or s3://bucket/prefix (options as query "
            "parameters: endpoint_override=host:port&scheme=http for an S3-compatible "
            "store)",
        ) from None


def _entry_event(table: str, item: dict[str, Any], batch_id: str) -> Truncate | SchemaChange:
    if item["kind"] == "truncate":
        return Truncate(table, int(item["version"]), int(item["commit_ts_us"]))
    if item["kind"] == "schema":
        return SchemaChange(TableSchema.from_dict(item["schema"]), int(item["version"]), item.get("ddl"))
    raise ChangeLogError(f"unknown change-log entry kind {item['kind']!r} in batch {batch_id}")


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _TableState:
    __slots__ = (
        "start_schema",
        "schema",
        "part",
        "lane_parts",
        "parts_opened",
        "entries",
        "ops",
        "bytes",
        "max_version",
        "max_commit_ts_us",
    )

    def __init__(self, schema: TableSchema) -> None:
        self.start_schema = schema
        self.schema = schema
        self.part: _Part | None = None  # the part being written
        self.lane_parts: dict[int, _Part] = {}  # parts written by ``add_unordered``, one per lane
        self.parts_opened = 0
        self.entries: list[dict[str, Any]] = []
        self.ops = {"insert": 0, "update": 0, "delete": 0}
        self.bytes = 0
        self.max_version: int | None = None
        self.max_commit_ts_us: int | None = None


class _Part:
    """One Parquet part being written: each row chunk becomes a row group as it arrives."""

    __slots__ = ("name", "path", "writer", "rows", "bytes", "ops", "min_version", "max_version", "max_ts")

    def __init__(self, name: str, path: str, writer: pq.ParquetWriter) -> None:
        self.name, self.path, self.writer = name, path, writer
        self.rows = self.bytes = 0
        self.ops = {"insert": 0, "update": 0, "delete": 0}
        self.min_version: int | None = None
        self.max_version: int | None = None
        self.max_ts: int | None = None

    def write(self, data: pa.Table) -> None:
        self.writer.write_table(data, row_group_size=max(data.num_rows, 1))
        self.rows += data.num_rows
        self.bytes += data.nbytes
        for op, n in op_counts(data).items():
            self.ops[op] += n
        low, high = pc.min_max(data.column(VERSION_COLUMN)).values()
        latest = pc.max(data.column(COMMIT_TS_COLUMN).cast(pa.int64())).as_py()
        self.min_version = _lower(self.min_version, low.as_py())
        self.max_version = _higher(self.max_version, high.as_py())
        self.max_ts = _higher(self.max_ts, latest)


def _lower(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else min(a, b)


def _higher(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else max(a, b)


class BatchWriter:
    """Stages one batch's events into Parquet parts, then commits the manifest.

    Each row chunk is written at once, as a row group of the table's current part; a part is closed
    at the change log's ``part_rows``/``part_bytes`` (or at a truncate or schema change). Memory
    holds no more than the chunk in hand however large the batch, and little is left to write
    when the stream ends.
    """

    def __init__(
        self,
        log: ChangeLog,
        pipeline: str,
        batch_id: str,
        start: SourcePosition,
        *,
        kind: str = "cdc",
        snapshot: dict[str, Any] | None = None,
    ) -> None:
        self.log = log
        self.kind = kind
        self.snapshot = snapshot
        self.pipeline = pipeline
        self.batch_id = batch_id
        self.start = start
        self.tables: dict[str, _TableState] = {}
        self.end: SourcePosition | None = None
        self._written_files: list[str] = []
        self._lock = threading.Lock()  # guards tables, entries and files against concurrent lanes

    def add_unordered(self, rows: Rows, lane: int) -> None:
        """Write rows whose order within the batch does not matter, on ``lane``'s own part.

        For snapshot batches: every row has the same version and a key no other row of the batch has,
        so parts may be written side by side. Lanes may be used from different threads at once (the
        Parquet encoding and compression run in parallel); one lane must not be used by two threads.
        """
        if self.kind != "snapshot":
            raise ChangeLogError(f"batch {self.batch_id}: only snapshot rows may be written out of order")
        if not rows.data.num_rows:
            return
        with self._lock:
            state = self._state(rows.table, rows.schema)
            if rows.schema != state.schema:
                raise ChangeLogError(
                    f"batch {self.batch_id}: snapshot rows of {rows.table} arrived with another "
                    "schema than the table's; a snapshot reads each table with one schema"
                )
            part = state.lane_parts.get(lane)
            if part is None:
                part = state.lane_parts[lane] = self._new_part(rows.table, state, rows.data.schema)
        part.write(rows.data)  # outside the lock: this is the work that runs in parallel
        if part.rows >= self.log.part_rows or part.bytes >= self.log.part_bytes:
            with self._lock:
                del state.lane_parts[lane]
            self._close_part(state, part)

    def add(self, event: ChangeEvent) -> None:
        if isinstance(event, Heartbeat):
            self.end = event.position
            return
        if isinstance(event, Rows):
            state = self._state(event.table, event.schema)
            if event.schema != state.schema:  # a schema change the source did not announce
                self._flush(event.table, state)
                state.schema = event.schema
                state.entries.append({"kind": "schema", "schema": event.schema.to_dict(), "version": None})
            if event.data.num_rows:
                part = state.part or self._open_part(event.table, state, event.data.schema)
                part.write(event.data)
                if part.rows >= self.log.part_rows or part.bytes >= self.log.part_bytes:
                    self._flush(event.table, state)
            return
        if isinstance(event, Truncate):
            state = self._state(event.table, None)
            self._flush(event.table, state)
            state.entries.append(
                {"kind": "truncate", "version": event.version, "commit_ts_us": event.commit_ts_us}
            )
            _raise_max(state, event.version, event.commit_ts_us)
            return
        if isinstance(event, SchemaChange):
            state = self._state(event.table, event.schema)
            self._flush(event.table, state)
            state.schema = event.schema
            state.entries.append(
                {
                    "kind": "schema",
                    "schema": event.schema.to_dict(),
                    "version": event.version,
                    "ddl": event.ddl,
                }
            )
            return
        raise TypeError(f"expected a change event, got {type(event).__name__}")

    def declare_table(self, schema: TableSchema) -> None:
        """Record a table with no changes, so sinks see an (empty) batch for it."""
        self._state(schema.qualified_name, schema)

    def _state(self, table: str, schema: TableSchema | None) -> _TableState:
        state = self.tables.get(table)
        if state is None:
            if schema is None:
                raise ChangeLogError(f"a truncate of {table} arrived before its schema")
            state = self.tables[table] = _TableState(schema)
        return state

    def _open_part(self, table: str, state: _TableState, schema: pa.Schema) -> _Part:
        state.part = self._new_part(table, state, schema)
        return state.part

    def _new_part(self, table: str, state: _TableState, schema: pa.Schema) -> _Part:
        name = f"part-{state.parts_opened:05d}.parquet"  # in the order the table's parts were opened
        state.parts_opened += 1
        folder = self.log.part_dir(self.pipeline, table, self.batch_id)
        self.log.fs.create_dir(folder, recursive=True)
        path = f"{folder}/{name}"
        # Dictionary pages cost more time than they save here: most text is unique, zstd takes the rest.
        writer = pq.ParquetWriter(
            path,
            schema,
            filesystem=self.log.fs,
            compression=self.log.compression,
            use_dictionary=False,
            write_statistics=False,
        )
        self._written_files.append(path)
        return _Part(name, path, writer)

    def _flush(self, table: str, state: _TableState) -> None:
        """Close the table's current part and its lanes' parts (if any) and record them."""
        part, state.part = state.part, None
        lane_parts, state.lane_parts = list(state.lane_parts.values()), {}
        for each in [p for p in (part, *lane_parts) if p is not None]:
            self._close_part(state, each)

    def _close_part(self, state: _TableState, part: _Part) -> None:
        part.writer.close()
        size = self.log.fs.get_file_info(part.path).size or 0
        with self._lock:
            state.entries.append(
                {
                    "kind": "rows",
                    "file": part.name,
                    "rows": part.rows,
                    "bytes": size,
                    "ops": part.ops,
                    "min_version": part.min_version,
                    "max_version": part.max_version,
                }
            )
            for op, n in part.ops.items():
                state.ops[op] += n
            state.bytes += size
            _raise_max(state, part.max_version, part.max_ts)

    def commit(self, stats: dict[str, Any] | None = None) -> BatchManifest:
        """Write the remaining parts, then the manifest; the batch is durable when this returns."""
        if self.end is None:
            raise ChangeLogError(f"batch {self.batch_id}: the source stream ended without its final position")
        for table, state in self.tables.items():
            self._flush(table, state)
        if self.log.is_local:
            for path in self._written_files:
                with open(path, "rb+") as fh:
                    os.fsync(fh.fileno())
            for folder in {p.rsplit("/", 1)[0] for p in self._written_files}:
                _fsync_dir(folder)
        manifest = BatchManifest(
            pipeline=self.pipeline,
            batch_id=self.batch_id,
            start=self.start,
            end=self.end,
            tables={
                table: TableEntry(
                    s.start_schema, tuple(s.entries), s.ops, s.bytes, s.max_version, s.max_commit_ts_us
                )
                for table, s in self.tables.items()
            },
            created_at=datetime.now(UTC).isoformat(),
            stats=dict(stats or {}),
            kind=self.kind,
            snapshot=self.snapshot,
        )
        payload = json.dumps(manifest.to_dict(), indent=1, sort_keys=True).encode()
        self.log._write_bytes_atomically(self.log.manifest_path(self.pipeline, self.batch_id), payload)
        return manifest


def _raise_max(state: _TableState, version: int | None, commit_ts_us: int | None) -> None:
    state.max_version = _higher(state.max_version, version)
    state.max_commit_ts_us = _higher(state.max_commit_ts_us, commit_ts_us)
