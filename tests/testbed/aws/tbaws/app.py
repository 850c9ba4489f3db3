"""The testbed WSGI middleware in front of moto's dispatcher.

For every AWS request it: identifies ``service:Operation`` (tbaws.ops), counts it, applies fault-injection rules
(tbaws.faults), serves the operations moto lacks (tbaws.eks_ext), serialises S3 object writes so conditional writes
are atomic, and otherwise hands the request to moto. Requests under ``/_testbed/`` are the control API (see README).
"""

from __future__ import annotations

import io
import json
import os
import threading
import time
import uuid
from collections import Counter, deque
from contextlib import contextmanager

from . import ec2_ext, eks_ext, pricing_ext
from .faults import FaultRegistry, FaultSpecError, error_response, fault_response
from .loopback import Loopback
from .ops import OperationResolver, is_mutating
from .seed import ACCOUNT_ID, SeedOptions, publish_release, seed

CONTROL_PREFIX = "/_testbed"
LOG_LIMIT = 10000


class RWLock:
    """Many AWS requests at once, or one reset alone."""

    def __init__(self):
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False

    @contextmanager
    def read(self):
        with self._cond:
            while self._writer:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                self._cond.notify_all()

    @contextmanager
    def write(self):
        with self._cond:
            while self._writer:
                self._cond.wait()
            self._writer = True
            while self._readers:
                self._cond.wait()
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


def _json(status: int, payload, start_response, extra_headers=None):
    body = json.dumps(payload, indent=None, sort_keys=True, default=str).encode()
    reason = {200: "OK", 201: "Created", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
              500: "Internal Server Error"}.get(status, "OK")
    headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))] + (extra_headers or [])
    start_response(f"{status} {reason}", headers)
    return [body]


def _status_line(status: int) -> str:
    from http import HTTPStatus

    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return f"{status} Unknown"


class TestbedApp:
    def __init__(self, opts: SeedOptions, handle_path: str | None = None):
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

        self.moto_app = DomainDispatcherApplication(create_backend_app)
        self.loopback = Loopback(self.moto_app, opts.region)
        eks_ext.CONFIG.loopback = self.loopback
        self.resolver = OperationResolver()
        self.faults = FaultRegistry()
        self.opts = opts
        self.base_opts = opts  # what POST /_testbed/reset starts from: the command-line options
        self.handle_path = handle_path
        self.server_info: dict = {}
        self.seeded: dict = {}
        self._rw = RWLock()
        self._s3_lock = threading.Lock()
        self._stats_lock = threading.Lock()
        self._counts: Counter = Counter()
        # The same counts per caller (the request's access key id): the tool under test and,
        # in the sandbox, the Karpenter controller sign with different keys.
        self._by_caller: dict[str, Counter] = {}
        self._injected: Counter = Counter()
        self._log: deque = deque(maxlen=LOG_LIMIT)
        self._seq = 0

    # ------------------------------------------------------------------------------------------ state management

    def seed(self) -> None:
        self.loopback.default_region = self.opts.region
        self.seeded = seed(self.loopback, self.opts)

    def reset(self, overrides: dict | None = None) -> dict:
        from moto.moto_api._internal.models import moto_api_backend

        new_opts = SeedOptions(**{**self.base_opts.to_json(), **(overrides or {})})
        new_opts.validate()
        with self._rw.write():
            moto_api_backend.reset()
            self.faults.clear()
            self._clear_stats()
            self.opts = new_opts
            self.seed()
            handle = self.handle()
            self.write_handle()
        return handle

    def _clear_stats(self) -> None:
        with self._stats_lock:
            self._counts.clear()
            self._by_caller.clear()
            self._injected.clear()
            self._log.clear()
            self._seq = 0

    def handle(self) -> dict:
        endpoint = self.server_info.get("endpoint", "")
        return {
            "endpoint": endpoint,
            "port": self.server_info.get("port"),
            "pid": os.getpid(),
            "region": self.opts.region,
            "account_id": self.seeded.get("account_id"),
            "started_at": self.server_info.get("started_at"),
            "moto_version": self.server_info.get("moto_version"),
            "env": {
                "AWS_ENDPOINT_URL": endpoint,
                "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_REGION": self.opts.region,
                "AWS_DEFAULT_REGION": self.opts.region,
            },
            "control": {
                "health": f"{endpoint}{CONTROL_PREFIX}/health",
                "handle": f"{endpoint}{CONTROL_PREFIX}/handle",
                "faults": f"{endpoint}{CONTROL_PREFIX}/faults",
                "requests": f"{endpoint}{CONTROL_PREFIX}/requests",
                "reset": f"{endpoint}{CONTROL_PREFIX}/reset",
            },
            "options": self.opts.to_json(),
            "seed": self.seeded,
        }

    def write_handle(self) -> None:
        if not self.handle_path:
            return
        tmp = f"{self.handle_path}.tmp.{os.getpid()}"
        with open(tmp, "w") as fh:
            json.dump(self.handle(), fh, indent=2, sort_keys=True)
            fh.write("\n")
        os.replace(tmp, self.handle_path)

    def stats(self, with_log: bool, caller: str | None = None) -> dict:
        """Request counts; with ``caller``, only the requests signed with that access key id."""
        with self._stats_lock:
            source = self._counts if caller is None else self._by_caller.get(caller, Counter())
            counts = dict(sorted(source.items()))
            out = {
                "counts": counts,
                "total": sum(counts.values()),
                "mutating": sum(n for k, n in counts.items() if is_mutating(k.split(":", 1)[1])),
                "read_only": sum(n for k, n in counts.items() if not is_mutating(k.split(":", 1)[1])),
                "faults_injected": dict(sorted(self._injected.items())),
                "classification": "read-only = operation name starts with Describe, Get, List or Head; "
                "everything else is mutating",
            }
            out["callers"] = {c: sum(n.values()) for c, n in sorted(self._by_caller.items())}
            if caller is not None:
                out["caller"] = caller
            if with_log:
                out["log"] = [e for e in self._log if caller is None or e.get("caller") == caller]
            return out

    # ------------------------------------------------------------------------------------------ WSGI

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path == CONTROL_PREFIX or path.startswith(CONTROL_PREFIX + "/"):
            try:
                return self._control(environ, start_response, path[len(CONTROL_PREFIX):] or "/")
            except Exception as exc:  # surface bugs to the caller instead of a bare 500
                return _json(500, {"error": f"{type(exc).__name__}: {exc}"}, start_response)
        with self._rw.read():
            return self._aws(environ, start_response)

    @staticmethod
    def _read_body(environ) -> bytes:
        length = environ.get("CONTENT_LENGTH")
        stream = environ["wsgi.input"]
        if length:
            body = stream.read(int(length))
        elif environ.get("wsgi.input_terminated") or environ.get("HTTP_TRANSFER_ENCODING", "").lower() == "chunked":
            body = stream.read()
            environ.pop("HTTP_TRANSFER_ENCODING", None)
        else:
            body = b""
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        return body

    def _record(self, key: str, status: int, fault: str | None, caller: str = "") -> None:
        with self._stats_lock:
            self._seq += 1
            self._log.append({"seq": self._seq, "operation": key, "status": status, "fault": fault, "caller": caller,
                              "t": round(time.time(), 3)})

    def _aws(self, environ, start_response):
        body = self._read_body(environ)
        info = self.resolver.resolve(environ, body)
        key = info.key
        caller = info.access_key or ""
        environ["karpctl.testbed.caller"] = caller
        with self._stats_lock:
            self._counts[key] += 1
            self._by_caller.setdefault(caller, Counter())[key] += 1

        rule = self.faults.draw(key, caller)
        if rule is not None:
            if rule.kind == "lost-response":
                # Carried out for real; only the answer is lost.
                self._forward(environ, lambda *_a: (lambda _d: None), info, body, key, record=False)
            with self._stats_lock:
                self._injected[key] += 1
            status, headers, payload = fault_response(info.service, info.style, rule.kind)
            self._record(key, status, rule.kind, caller)
            if environ.get("REQUEST_METHOD") == "HEAD":
                payload = b""
            start_response(_status_line(status), headers + [("Content-Length", str(len(payload)))])
            return [payload]
        return self._forward(environ, start_response, info, body, key)

    def _forward(self, environ, start_response, info, body: bytes, key: str, record: bool = True):
        """Serves the request: the EKS operations moto lacks here, everything else by moto."""
        after = None
        if info.service == "pricing" or (info.service == "ec2" and info.operation in ec2_ext.OPERATIONS):
            return self._serve_ext(start_response, info, body, key, record)
        if info.service == "eks":
            from moto.eks.models import eks_backends
            from moto.iam.models import get_account_id_from

            account = get_account_id_from(info.access_key) if info.access_key else "123456789012"
            result = eks_ext.dispatch(
                info.operation, eks_backends[account][info.region or self.opts.region], account,
                info.region or self.opts.region, info.path_params, info.query, body,
            )
            if callable(result):
                after = result
            elif result is not None:
                status, payload = result
                err = payload.get("__error__") if isinstance(payload, dict) else None
                if err is not None:
                    status, headers, data = error_response("eks", "rest", err.status, err.code, err.message, err.extra)
                else:
                    data = json.dumps(payload).encode()
                    headers = [("Content-Type", "application/json"), ("x-amzn-RequestId", str(uuid.uuid4()))]
                if record:
                    self._record(key, status, None, environ.get("karpctl.testbed.caller", ""))
                start_response(_status_line(status), headers + [("Content-Length", str(len(data)))])
                return [data]

        captured: dict = {}

        def capture(status, headers, exc_info=None):
            captured["status"], captured["headers"] = status, headers
            return lambda _data: None

        serialize_s3 = info.service == "s3" and environ.get("REQUEST_METHOD") in ("PUT", "POST", "DELETE")
        lock = self._s3_lock if serialize_s3 else None
        if lock:
            lock.acquire()
        try:
            iterable = self.moto_app(environ, capture)
            try:
                data = b"".join(iterable)
            finally:
                if hasattr(iterable, "close"):
                    iterable.close()
        finally:
            if lock:
                lock.release()
        if after is not None:
            after()
        status = int(captured["status"].split(" ", 1)[0])
        if record:
            self._record(key, status, None, environ.get("karpctl.testbed.caller", ""))
        headers = [(k, v) for k, v in captured["headers"] if k.lower() != "content-length"]
        if environ.get("REQUEST_METHOD") != "HEAD":
            headers.append(("Content-Length", str(len(data))))
        else:
            headers.extend((k, v) for k, v in captured["headers"] if k.lower() == "content-length")
        start_response(captured["status"], headers)
        return [data]

    def _serve_ext(self, start_response, info, body: bytes, key: str, record: bool):
        """The pricing API and the EC2 operations of tbaws.ec2_ext (moto lacks them or gets them wrong)."""
        from moto.iam.models import get_account_id_from

        account = get_account_id_from(info.access_key) if info.access_key else "123456789012"
        region = info.region or self.opts.region
        if info.service == "pricing":
            status, result = pricing_ext.dispatch(info.operation, body)
            if isinstance(result, pricing_ext.PricingError):
                status, headers, data = error_response("pricing", "json", result.status, result.code, result.message)
            else:
                data = json.dumps(result).encode()
                headers = [("Content-Type", "application/x-amz-json-1.1"), ("x-amzn-RequestId", str(uuid.uuid4()))]
        else:
            from moto.ec2.models import ec2_backends

            status, result = ec2_ext.dispatch(info.operation, ec2_backends[account][region], account, region,
                                              info.query, body)
            if isinstance(result, ec2_ext.Ec2Error):
                status, headers, data = error_response("ec2", "query", result.status, result.code, result.message)
            else:
                data = result
                headers = [("Content-Type", "text/xml;charset=UTF-8"), ("x-amzn-RequestId", str(uuid.uuid4()))]
        if record:
            self._record(key, status, None)
        start_response(_status_line(status), headers + [("Content-Length", str(len(data)))])
        return [data]

    # ------------------------------------------------------------------------------------------ control API

    def _control(self, environ, start_response, sub: str):
        method = environ.get("REQUEST_METHOD", "GET")
        query = environ.get("QUERY_STRING", "")
        body = self._read_body(environ)
        try:
            payload = json.loads(body) if body.strip() else None
        except ValueError:
            return _json(400, {"error": "request body is not valid JSON"}, start_response)

        if sub in ("/", "/health"):
            if method != "GET":
                return _json(405, {"error": "use GET"}, start_response)
            return _json(200, {"status": "ok", "seeded": bool(self.seeded), "pid": os.getpid()}, start_response)
        if sub == "/handle":
            if method != "GET":
                return _json(405, {"error": "use GET"}, start_response)
            return _json(200, self.handle(), start_response)
        if sub == "/requests":
            if method == "GET":
                from urllib.parse import parse_qs

                q = parse_qs(query)
                caller = q["caller"][0] if "caller" in q else None
                return _json(200, self.stats("log=1" in query or "log=true" in query, caller), start_response)
            if method == "DELETE":
                self._clear_stats()
                return _json(200, {"cleared": True}, start_response)
            return _json(405, {"error": "use GET or DELETE"}, start_response)
        if sub == "/faults":
            if method == "GET":
                return _json(200, {"faults": self.faults.list()}, start_response)
            if method == "DELETE":
                self.faults.clear()
                return _json(200, {"faults": []}, start_response)
            if method == "POST":
                specs = payload if isinstance(payload, list) else [payload]
                try:
                    added = [self.faults.add(spec).to_json() for spec in specs]
                except FaultSpecError as exc:
                    return _json(400, {"error": str(exc)}, start_response)
                return _json(201, {"faults": added}, start_response)
            return _json(405, {"error": "use GET, POST or DELETE"}, start_response)
        if sub == "/reset":
            if method != "POST":
                return _json(405, {"error": "use POST"}, start_response)
            overrides = payload or {}
            if not isinstance(overrides, dict):
                return _json(400, {"error": "reset body must be a JSON object of seed options"}, start_response)
            allowed = set(SeedOptions().to_json())
            unknown = set(overrides) - allowed
            if unknown:
                return _json(400, {"error": f"unknown seed option(s) {sorted(unknown)}; allowed: {sorted(allowed)}"},
                             start_response)
            try:
                return _json(200, self.reset(overrides), start_response)
            except ValueError as exc:
                return _json(400, {"error": str(exc)}, start_response)
        if sub == "/amis":
            # A new public AMI release for one Kubernetes minor (what AWS publishes every few weeks).
            if method != "POST":
                return _json(405, {"error": "use POST"}, start_response)
            p = payload if isinstance(payload, dict) else {}
            try:
                params = publish_release(ACCOUNT_ID, self.opts.region, str(p.get("kubernetesVersion", "")),
                                         str(p.get("release", "")), str(p.get("bottlerocket", "")))
                self.seeded.setdefault("ssm_parameters", {}).update(params)
            except ValueError as exc:
                return _json(400, {"error": str(exc)}, start_response)
            return _json(200, {"ssm_parameters": params}, start_response)
        return _json(404, {"error": f"unknown control path {CONTROL_PREFIX}{sub}",
                           "paths": ["/health", "/handle", "/requests", "/faults", "/reset", "/amis"]}, start_response)
