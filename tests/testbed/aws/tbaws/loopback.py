"""boto3 clients that talk to the moto WSGI dispatcher inside this process, without a socket.

Used by the seeder so that seeding goes through the public API shapes (and moto's own validation) without being
counted by the request counter or blocked by the reset lock. A botocore ``before-send`` hook hands each prepared
request to the WSGI app through werkzeug's test client and returns the response to botocore unchanged.
"""

from __future__ import annotations

import threading
from urllib.parse import urlsplit

import boto3
import botocore.awsrequest
from botocore.config import Config
from werkzeug.test import Client

_ENDPOINT = "http://127.0.0.1:1"  # never contacted: every request is answered in-process


class _Raw:
    def __init__(self, data: bytes):
        self._data = data

    def stream(self, *_a, **_kw):
        yield self._data


class Loopback:
    def __init__(self, wsgi_app, region: str):
        self._client = Client(wsgi_app)
        self.default_region = region
        self._clients: dict = {}
        self._lock = threading.Lock()
        self._session = boto3.session.Session(
            aws_access_key_id="testing", aws_secret_access_key="testing", region_name=region
        )

    def _send(self, request, **_kwargs):
        parts = urlsplit(request.url)
        body = request.body
        if hasattr(body, "read"):
            body = body.read()
        if isinstance(body, str):
            body = body.encode()
        headers = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in request.headers.items()}
        resp = self._client.open(
            path=parts.path or "/",
            query_string=parts.query,
            method=request.method,
            headers=headers,
            data=body or b"",
            base_url=f"{parts.scheme}://{parts.netloc}",
        )
        data = resp.get_data()
        return botocore.awsrequest.AWSResponse(request.url, resp.status_code, dict(resp.headers), _Raw(data))

    def client(self, service: str, region: str | None = None):
        key = (service, region or self.default_region)
        with self._lock:  # creating a botocore client costs ~0.25 s: build each one once
            if key not in self._clients:
                c = self._session.client(
                    service,
                    endpoint_url=_ENDPOINT,
                    region_name=key[1],
                    config=Config(retries={"mode": "standard", "max_attempts": 1}),
                )
                c.meta.events.register("before-send", self._send)
                self._clients[key] = c
            return self._clients[key]
