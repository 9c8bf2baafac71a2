"""A real local S3 endpoint for tests: moto's server mode (HTTP and the S3 protocol on a free
port, the same requests boto3 sends to AWS or MinIO), not the in-process mock."""

from __future__ import annotations

import logging
import socket
import uuid
from dataclasses import dataclass
from typing import Any

import boto3
from moto.server import ThreadedMotoServer

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "wellpanel-test-key-id",
               "AWS_SECRET_ACCESS_KEY": "wellpanel-test-secret-do-not-log",
               "AWS_DEFAULT_REGION": "us-east-1"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class S3Server:
    server: ThreadedMotoServer
    endpoint: str

    def client(self) -> Any:
        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"])

    def bucket(self, *, lock: bool = True, versioning: bool | None = None) -> str:
        """A fresh bucket: with Object Lock (which turns versioning on) or without."""
        name = f"ledger-{uuid.uuid4().hex[:16]}"
        client = self.client()
        client.create_bucket(Bucket=name, ObjectLockEnabledForBucket=lock)
        if versioning is not None:
            client.put_bucket_versioning(Bucket=name, VersioningConfiguration={
                "Status": "Enabled" if versioning else "Suspended"})
        return name


def start() -> S3Server:
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    return S3Server(server, f"http://127.0.0.1:{port}")
