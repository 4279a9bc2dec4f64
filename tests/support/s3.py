"""A real S3-compatible server for the spend archive's tests: moto in server mode (from PyPI),
started as a subprocess on 127.0.0.1, with SigV4 authentication enforced (after the three IAM calls
that create the test's user and its access key, every request must be signed by a key moto knows)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import botocore.session
import pytest
from botocore.config import Config

__all__ = ["S3Server", "free_port", "s3_server", "start_moto"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class S3Server:
    """A running moto server and an access key it accepts."""

    url: str
    key_id: str
    secret: str
    process: subprocess.Popen[bytes]

    def client(self, key_id: str | None = None, secret: str | None = None) -> Any:
        session = botocore.session.get_session()
        return session.create_client("s3", region_name="us-east-1", endpoint_url=self.url,
                                     aws_access_key_id=key_id or self.key_id, aws_secret_access_key=secret or self.secret,
                                     config=Config(s3={"addressing_style": "path"}, retries={"total_max_attempts": 1}))

    def bucket(self, name: str) -> Any:
        client = self.client()
        client.create_bucket(Bucket=name)
        return client

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


def start_moto(port: int | None = None, *, auth: bool = True) -> S3Server:
    """Start moto on `port` (a free one when None), wait until it answers, make a user and key.
    Without `auth`, moto checks no signature (any key is accepted)."""
    port = port or free_port()
    env = {**os.environ, "MOTO_ALLOW_NONEXISTENT_REGION": "true"}
    if auth:
        env["INITIAL_NO_AUTH_ACTION_COUNT"] = "3"
    process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:  # ready when it answers (a condition, polled)
        try:
            with urllib.request.urlopen(f"{url}/moto-api/data.json", timeout=1):
                break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError("moto server did not start") from None
            time.sleep(0.05)
    session = botocore.session.get_session()
    iam = session.create_client("iam", region_name="us-east-1", endpoint_url=url, aws_access_key_id="bootstrap",
                                aws_secret_access_key="bootstrap")
    iam.create_user(UserName="archiver")
    key = iam.create_access_key(UserName="archiver")["AccessKey"]
    iam.put_user_policy(UserName="archiver", PolicyName="s3", PolicyDocument=json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
    return S3Server(url, key["AccessKeyId"], key["SecretAccessKey"], process)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    server = start_moto()
    try:
        yield server
    finally:
        server.stop()
