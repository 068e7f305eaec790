"""Scale fixtures: a local S3 server (moto) started by the tests, a small inbox of sample files."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

SMALL_INBOX = (
    "manifest.csv",
    "infusion_log.xlsx",
    "str/2025-03-03_GM2502_sizing.txt",
    "qpcr/2025-02-26_QS250226A_marker_screen.txt",
    "qpcr/2025-04-05_QP2503A_followup.txt",
    "ddpcr/2025-04-07_DP2503A_quantasoft.csv",
)
"""A manifest, an infusion log and one export per method: a few seconds to ingest."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A moto S3 server in this process (threaded), stopped after the session."""
    server_module = pytest.importorskip("moto.server", reason="moto[server] is not installed")
    port = _free_port()
    server = server_module.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    try:
        server.start()
    except OSError as err:  # pragma: no cover - depends on the machine
        pytest.skip(f"the local S3 server (moto) could not start: {err}")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_options(s3_endpoint: str) -> dict[str, Any]:
    """s3fs storage options of the local server."""
    return {
        "key": "testing",
        "secret": "testing",
        "client_kwargs": {"endpoint_url": s3_endpoint, "region_name": "us-east-1"},
    }


@pytest.fixture
def bucket(s3_options: dict[str, Any]) -> str:
    """A fresh bucket on the local server; returns its URL."""
    name = f"chimera-{uuid.uuid4().hex[:12]}"
    client = boto3.client(
        "s3",
        endpoint_url=s3_options["client_kwargs"]["endpoint_url"],
        region_name="us-east-1",
        aws_access_key_id=s3_options["key"],
        aws_secret_access_key=s3_options["secret"],
    )
    client.create_bucket(Bucket=name)
    return f"s3://{name}"


@pytest.fixture
def small_inbox(sample_data_path: Path) -> list[Path]:
    """The sample files of :data:`SMALL_INBOX`."""
    return [sample_data_path / name for name in SMALL_INBOX]
