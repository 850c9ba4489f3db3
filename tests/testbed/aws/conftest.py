"""pytest fixtures for the AWS emulator smoke tests.

One launcher process per test module (started exactly as scripts/testbed-aws.sh starts it, on a free port), and a
reset through the control API before every test, so tests are independent without paying for a new process each time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

HERE = Path(__file__).resolve().parent
START_TIMEOUT_S = 60


class Testbed:
    def __init__(self, proc: subprocess.Popen, handle_path: Path):
        self.proc = proc
        self.handle_path = handle_path
        self.handle = json.loads(handle_path.read_text())
        self.endpoint = self.handle["endpoint"]
        self.region = self.handle["region"]

    @property
    def seed(self) -> dict:
        return self.handle["seed"]

    def client(self, service: str, retries: int = 1, **config):
        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name=self.region,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            config=Config(retries={"mode": "standard", "total_max_attempts": retries}, **config),
        )

    def control(self, method: str, path: str, body=None) -> tuple[int, dict]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"{self.endpoint}/_testbed{path}", data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read() or b"{}")

    def reset(self, **overrides) -> dict:
        status, handle = self.control("POST", "/reset", overrides)
        assert status == 200, handle
        self.handle = handle
        return handle

    def requests(self) -> dict:
        status, stats = self.control("GET", "/requests?log=1")
        assert status == 200, stats
        return stats

    def add_fault(self, **spec) -> dict:
        status, out = self.control("POST", "/faults", spec)
        assert status == 201, out
        return out["faults"][0]


def _start(tmp: Path) -> Testbed:
    handle = tmp / "handle.json"
    log = open(tmp / "launcher.log", "w")
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "launcher.py"), "--port", "0", "--handle", str(handle)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={k: v for k, v in os.environ.items() if not k.startswith("AWS_")},
    )
    deadline = time.monotonic() + START_TIMEOUT_S
    while not handle.exists():
        if proc.poll() is not None:
            raise RuntimeError(f"launcher exited with {proc.returncode}:\n{(tmp / 'launcher.log').read_text()}")
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"launcher not ready after {START_TIMEOUT_S}s:\n{(tmp / 'launcher.log').read_text()}")
        time.sleep(0.05)
    return Testbed(proc, handle)


@pytest.fixture(scope="module")
def testbed(tmp_path_factory):
    for var in [k for k in os.environ if k.startswith("AWS_")]:
        os.environ.pop(var)
    tb = _start(tmp_path_factory.mktemp("testbed-aws"))
    yield tb
    tb.proc.terminate()
    assert tb.proc.wait(timeout=30) == 0, "launcher did not exit cleanly on SIGTERM"
    assert not tb.handle_path.exists(), "launcher left its handle file behind"


@pytest.fixture(autouse=True)
def fresh(request):
    """Reset moto state, counters and faults (and re-seed) before every test that uses the testbed."""
    if "testbed" in request.fixturenames:
        request.getfixturevalue("testbed").reset()
    yield
