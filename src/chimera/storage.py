"""Object storage through fsspec URLs: atomic writes, a lease, mirrors, and readers of the tables.

Every access Chimera makes to a URL (``s3://bucket/prefix``, ``file://...``, any fsspec
protocol) goes through this module. The pipeline itself works on local folders; a site that
shares its inbox, archive, quarantine and warehouse through object storage runs each poll
inside :func:`synced_site`, which

1. takes the shared warehouse's lease object (:class:`Lease`: a conditional create, so two
   sites never write at once, with or without a shared file system or a Prefect server);
2. pulls the warehouse's changed files and the inbox's objects into the local folders (an
   object is listed only once its upload completed, so it needs no settling);
3. lets the poll run on the local folders;
4. publishes the warehouse's changes (raw tables first, the ledger last, removals at the end;
   each file written to a temporary key and copied into place, :meth:`Store.write_atomic`),
   copies new archive/quarantine files up, and deletes the inbox objects the poll placed.

A crash before step 4 ends changes nothing shared; a crash during it leaves the inbox objects,
which the next poll reads again (their raw rows are found and the patients rebuilt). Scientists
read the published tables directly: :func:`scan_table` (polars) and :func:`duckdb_connect`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import platform
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Self

import fsspec
import polars as pl
from fsspec.spec import AbstractFileSystem

from chimera.settings import ScaleSettings, Settings

TMP_MARK = ".tmp-"
"""Temporary keys hold this in their name; no reader's ``*.parquet`` pattern matches them."""
LEASE_KEY = ".lease"
PUBLISH_ORDER = ("samples", "infusions", "observations_")
"""Warehouse folders published first (raw rows); ``ingest_log`` goes last."""


def is_url(location: str | Path) -> bool:
    """Whether a location is an fsspec URL rather than a local path.

    Examples
    --------
    >>> is_url("s3://lab/warehouse"), is_url("chimera-data/warehouse")
    (True, False)
    """
    return "://" in str(location)


@dataclass(frozen=True)
class Store:
    """One fsspec location (a bucket prefix or a folder) and the operations Chimera needs."""

    fs: AbstractFileSystem
    root: str
    """The location's path as the file system names it (no protocol)."""

    @classmethod
    def from_url(cls, url: str, options: Mapping[str, Any] | None = None) -> Store:
        """Open ``url`` with fsspec (``options``: the protocol's storage options)."""
        fs, root = fsspec.core.url_to_fs(url, **dict(options or {}))
        return cls(fs, root.rstrip("/"))

    def key(self, relative: str) -> str:
        """The full key of a path relative to the location."""
        return f"{self.root}/{relative}" if relative else self.root

    def write_atomic(self, relative: str, data: bytes) -> None:
        """Write ``data`` to a temporary key, then copy it into place and drop the temporary.

        A reader sees the old object or the whole new one, never a part (the copy is one
        server-side operation; on a local file system it is a rename).
        """
        target = self.key(relative)
        tmp = f"{target}{TMP_MARK}{uuid.uuid4().hex}"
        self.fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
        self.fs.pipe_file(tmp, data)
        try:
            self.fs.mv(tmp, target)
        finally:
            if self.fs.exists(tmp):
                self.fs.rm_file(tmp)

    def create_exclusive(self, relative: str, data: bytes) -> bool:
        """Create an object only if it does not exist (S3 ``If-None-Match: *``); False if it did."""
        target = self.key(relative)
        self.fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
        try:
            with self.fs.open(target, "xb") as fh:
                fh.write(data)
        except FileExistsError:
            return False
        return True

    def read_bytes(self, relative: str) -> bytes:
        """The content of one object."""
        data: bytes = self.fs.cat_file(self.key(relative))
        return data

    def remove(self, relative: str) -> None:
        """Delete one object (absent: nothing to do)."""
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self.key(relative))

    def listing(self) -> dict[str, str]:
        """Every object under the location (temporary keys excluded) -> its content signature.

        The signature is the MD5 hex digest S3 reports as ETag for objects written in one
        request (every write here is); other file systems get one computed from the bytes.
        """
        self.fs.invalidate_cache()
        if not self.fs.exists(self.root):
            return {}
        found = self.fs.find(self.root, detail=True)
        out = {}
        for key, info in found.items():
            relative = key[len(self.root) :].lstrip("/")
            if TMP_MARK in relative or info.get("type") == "directory":
                continue
            etag = str(info.get("ETag", "")).strip('"')
            out[relative] = etag if etag and "-" not in etag else md5_hex(self.fs.cat_file(key))
        return out

    def lease(
        self, *, owner: str, seconds: float, clock: Callable[[], datetime] | None = None
    ) -> Lease:
        """A :class:`Lease` on this location."""
        return Lease(self, owner=owner, seconds=seconds, clock=clock or _utcnow)


def _utcnow() -> datetime:
    return datetime.now(UTC)


def md5_hex(data: bytes) -> str:
    """The MD5 hex digest S3 uses as the ETag of a one-request object (not a security hash)."""
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


class LeaseHeldError(TimeoutError):
    """Another site holds the shared warehouse's lease."""


@dataclass
class Lease:
    """Exclusive hold of a shared location: a lease object created only if absent.

    The object names its owner and when it expires; a lease found expired (its holder crashed)
    is broken. Used as a context manager; :meth:`acquire` returns False when another owner holds
    an unexpired lease.
    """

    store: Store
    owner: str
    seconds: float
    clock: Callable[[], datetime]

    def acquire(self) -> bool:
        """Take the lease; break it first when its holder let it expire."""
        body = json.dumps(
            {
                "owner": self.owner,
                "expires_at": (self.clock() + timedelta(seconds=self.seconds)).isoformat(),
            }
        ).encode()
        if self.store.create_exclusive(LEASE_KEY, body):
            return True
        held = self.holder()
        if held is None or datetime.fromisoformat(held["expires_at"]) <= self.clock():
            self.store.remove(LEASE_KEY)
            return self.store.create_exclusive(LEASE_KEY, body)
        return False

    def holder(self) -> dict[str, str] | None:
        """The current lease's owner and expiry (None: no lease)."""
        try:
            held: dict[str, str] = json.loads(self.store.read_bytes(LEASE_KEY))
        except FileNotFoundError:
            return None
        return held

    def check_held(self) -> None:
        """Raise :class:`LeaseHeldError` when the lease expired and another site took it."""
        held = self.holder()
        if held is None or held["owner"] != self.owner:
            msg = (
                f"the lease on {self.store.root} passed to {(held or {}).get('owner')} "
                f"(longer than lease_seconds = {self.seconds:g}): nothing is published"
            )
            raise LeaseHeldError(msg)

    def release(self) -> None:
        """Give the lease back (only our own)."""
        held = self.holder()
        if held is not None and held["owner"] == self.owner:
            self.store.remove(LEASE_KEY)

    def __enter__(self) -> Self:
        if not self.acquire():
            held = self.holder() or {}
            msg = (
                f"the shared warehouse {self.store.root} is held by {held.get('owner')} "
                f"until {held.get('expires_at')}"
            )
            raise LeaseHeldError(msg)
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _local_listing(folder: Path) -> dict[str, str]:
    """Files under a local folder (hidden names excluded) -> MD5 of their bytes."""
    if not folder.is_dir():
        return {}
    return {
        path.relative_to(folder).as_posix(): md5_hex(path.read_bytes())
        for path in folder.rglob("*")
        if path.is_file() and not any(p.startswith(".") for p in path.relative_to(folder).parts)
    }


def _publish_rank(relative: str) -> tuple[int, str]:
    top = relative.split("/", 1)[0]
    if top.startswith(PUBLISH_ORDER):
        return (0, relative)
    return (2 if top == "ingest_log" else 1, relative)


def push(folder: Path, store: Store, *, delete: bool) -> list[str]:
    """Copy a local folder's new and changed files up (atomically); return what changed.

    Raw tables go first and the ledger last; with ``delete`` the objects whose local file is
    gone are removed at the end.
    """
    local, remote = _local_listing(folder), store.listing()
    changed = sorted((r for r, sig in local.items() if remote.get(r) != sig), key=_publish_rank)
    for relative in changed:
        store.write_atomic(relative, (folder / relative).read_bytes())
    gone = sorted(r for r in remote if r not in local and r != LEASE_KEY) if delete else []
    for relative in gone:
        store.remove(relative)
    return changed + gone


def pull(store: Store, folder: Path, *, delete: bool) -> list[str]:
    """Copy a location's new and changed objects down; return what changed.

    With ``delete`` local files (hidden ones excepted) absent from the location are removed.
    """
    local, remote = _local_listing(folder), store.listing()
    changed = sorted(r for r, sig in remote.items() if r != LEASE_KEY and local.get(r) != sig)
    for relative in changed:
        target = folder / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}{TMP_MARK}{uuid.uuid4().hex}")
        tmp.write_bytes(store.read_bytes(relative))
        tmp.replace(target)
    gone = sorted(r for r in local if r not in remote) if delete else []
    for relative in gone:
        (folder / relative).unlink()
    return changed + gone


@dataclass(frozen=True)
class SiteSync:
    """What one :func:`synced_site` poll moved (relative keys)."""

    pulled: tuple[str, ...] = ()
    published: tuple[str, ...] = ()
    placed: tuple[str, ...] = ()
    """Inbox objects the poll archived or quarantined (deleted from the shared inbox)."""


def _store(url: str | None, scale: ScaleSettings) -> Store | None:
    return None if url is None else Store.from_url(url, scale.storage_options)


def site_owner() -> str:
    """The name a lease gives its holder: host and a random id."""
    return f"{platform.node()}-{uuid.uuid4().hex[:8]}"


@contextlib.contextmanager
def synced_site(
    settings: Settings, *, clock: Callable[[], datetime] | None = None
) -> Iterator[tuple[Settings, list[SiteSync]]]:
    """Run a poll against shared object storage (module docstring, steps 1-4).

    Yields the settings the poll uses (downloaded objects need no settling) and a list that
    holds the :class:`SiteSync` once the block ended without error. Without any URL in
    ``settings.scale`` the settings come back unchanged and nothing is copied.
    """
    scale = settings.scale
    warehouse = _store(scale.warehouse_url, scale)
    inbox = _store(scale.inbox_url, scale)
    record: list[SiteSync] = []
    with contextlib.ExitStack() as stack:
        lease = None
        if warehouse is not None:
            lease = stack.enter_context(
                warehouse.lease(owner=site_owner(), seconds=scale.lease_seconds, clock=clock)
            )
        pulled = pull(warehouse, settings.warehouse, delete=True) if warehouse else []
        if inbox is not None:
            pulled += pull(inbox, settings.inbox, delete=True)
        fetched = set(inbox.listing()) if inbox is not None else set()
        rules = replace(settings.inbox_rules, settle_seconds=0.0, incomplete_settle_seconds=0.0)
        yield (replace(settings, inbox_rules=rules) if inbox is not None else settings), record
        if lease is not None:
            lease.check_held()
        published = push(settings.warehouse, warehouse, delete=True) if warehouse else []
        for url, folder in (
            (scale.archive_url, settings.archive),
            (scale.quarantine_url, settings.quarantine),
        ):
            target = _store(url, scale)
            if target is not None:
                published += push(folder, target, delete=False)
        placed = sorted(r for r in fetched if not (settings.inbox / r).exists())
        for relative in placed:
            assert inbox is not None
            inbox.remove(relative)
        record.append(SiteSync(tuple(pulled), tuple(published), tuple(placed)))


def polars_options(options: Mapping[str, Any]) -> dict[str, str]:
    """s3fs storage options as polars' (object_store) ones: endpoint, keys, region.

    Examples
    --------
    >>> polars_options({"key": "k", "secret": "s", "client_kwargs": {"endpoint_url": "http://h:9"}})
    {'aws_access_key_id': 'k', 'aws_secret_access_key': 's', 'aws_endpoint_url': 'http://h:9', 'aws_allow_http': 'true'}
    """
    out: dict[str, str] = {}
    if "key" in options:
        out["aws_access_key_id"] = str(options["key"])
    if "secret" in options:
        out["aws_secret_access_key"] = str(options["secret"])
    client = options.get("client_kwargs", {})
    endpoint = client.get("endpoint_url") or options.get("endpoint_url")
    if endpoint:
        out["aws_endpoint_url"] = str(endpoint)
        if str(endpoint).startswith("http://"):
            out["aws_allow_http"] = "true"
    if "region_name" in client:
        out["aws_region"] = str(client["region_name"])
    return out


def scan_table(warehouse_url: str, table: str, options: Mapping[str, Any]) -> pl.LazyFrame:
    """A published table as a polars lazy frame, read straight from object storage."""
    return pl.scan_parquet(
        f"{warehouse_url.rstrip('/')}/{table}/**/*.parquet",
        storage_options=polars_options(options) or None,
    )


def duckdb_connect(warehouse_url: str, tables: Sequence[str], options: Mapping[str, Any]) -> Any:
    """A DuckDB connection with one view per published table, read through fsspec.

    DuckDB's own ``httpfs`` extension downloads at first use; an fsspec file system registered
    with DuckDB needs nothing beyond the Python packages.
    """
    import duckdb  # noqa: PLC0415 - only SQL readers of object storage need it

    store = Store.from_url(warehouse_url, options)
    con = duckdb.connect()
    con.register_filesystem(store.fs)
    protocol = warehouse_url.split("://", 1)[0]
    for table in tables:
        if store.fs.glob(f"{store.root}/{table}/**/*.parquet"):
            glob = f"{protocol}://{store.root}/{table}/**/*.parquet"
            con.execute(f"create view {table} as select * from read_parquet('{glob}')")
    return con
