"""Identify the AWS service and operation of a raw WSGI request.

* service: the SigV4 credential scope (``Authorization: AWS4-HMAC-SHA256 Credential=AK/date/region/SERVICE/aws4_request``
  or the ``X-Amz-Credential`` query parameter of a presigned URL).
* operation, by protocol:
    - JSON protocols (SSM, EventBridge, SQS-json, ...): the ``X-Amz-Target`` header (``AmazonSSM.GetParameters``);
    - query protocols (EC2, IAM, STS, SQS-query, CloudFormation): the ``Action`` query/form parameter;
    - REST protocols (EKS, S3): method + path, matched against a table built from the botocore service model
      (``http.method`` + ``http.requestUri`` of every operation), most specific match wins.

The classification used by the request counter lives here too: an operation whose name starts with
Describe/Get/List/Head is read-only, everything else is mutating.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote

READ_ONLY_PREFIXES = ("Describe", "Get", "List", "Head")

# SigV4 signing name -> botocore service model name, where the two differ.
SIGNING_NAME_TO_MODEL = {
    "elasticloadbalancing": "elbv2",
    "execute-api": "apigateway",
    "states": "stepfunctions",
    "monitoring": "cloudwatch",
}

_CRED_RE = re.compile(r"Credential=([^/,\s]+)/(\d{8})/([^/]+)/([^/]+)/aws4_request")


def is_mutating(operation: str) -> bool:
    return not operation.startswith(READ_ONLY_PREFIXES)


@dataclass
class RequestInfo:
    service: str  # signing name, e.g. "eks"; "unknown" when the request is not signed
    region: str
    operation: str  # e.g. "DescribeCluster"; "Unknown" when no rule matched
    style: str  # "json" | "query" | "rest" (how the request was expressed; used to render errors)
    access_key: str = ""
    path_params: dict = field(default_factory=dict)
    query: dict = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.service}:{self.operation}"


@dataclass
class _Route:
    operation: str
    method: str
    segments: list  # list of (kind, value): ("lit", "clusters") | ("var", "name") | ("greedy", "Key")
    query: list  # list of (key, value-or-None) that must be present

    @property
    def score(self) -> tuple:
        literals = sum(1 for k, _ in self.segments if k == "lit")
        return (len(self.query), literals, -sum(1 for k, _ in self.segments if k == "greedy"))


def _compile_uri(uri: str) -> tuple[list, list]:
    path, _, qs = uri.partition("?")
    segments = []
    for seg in [s for s in path.split("/") if s != ""]:
        m = re.fullmatch(r"\{([^}+]+)(\+?)\}", seg)
        if m:
            segments.append(("greedy" if m.group(2) else "var", m.group(1)))
        else:
            segments.append(("lit", seg))
    query = []
    for part in [p for p in qs.split("&") if p]:
        k, eq, v = part.partition("=")
        query.append((k, v if eq else None))
    return segments, query


def _match_segments(route_segs: list, segs: list) -> dict | None:
    params: dict[str, str] = {}
    i = 0
    for idx, (kind, value) in enumerate(route_segs):
        if kind == "greedy":
            rest = segs[i:]
            if not rest or idx != len(route_segs) - 1:
                return None
            params[value] = "/".join(rest)
            return params
        if i >= len(segs):
            return None
        if kind == "lit":
            if segs[i] != value:
                return None
        else:
            params[value] = segs[i]
        i += 1
    return params if i == len(segs) else None


class RestTable:
    """Method+path -> operation table for one REST service, built from its botocore model."""

    def __init__(self, service_model):
        self.routes: list[_Route] = []
        for name in service_model.operation_names:
            http = service_model.operation_model(name).http
            segments, query = _compile_uri(http.get("requestUri", "/"))
            self.routes.append(_Route(name, http.get("method", "GET").upper(), segments, query))
        self.routes.sort(key=lambda r: r.score, reverse=True)

    def match(self, method: str, raw_path: str, query: dict) -> tuple[str, dict] | None:
        segs = [unquote(s) for s in raw_path.split("/") if s != ""]
        for route in self.routes:
            if route.method != method:
                continue
            ok = True
            for k, v in route.query:
                if k not in query or (v is not None and query[k] != v):
                    ok = False
                    break
            if not ok:
                continue
            params = _match_segments(route.segments, segs)
            if params is not None:
                return route.operation, params
        return None


class OperationResolver:
    def __init__(self):
        self._lock = threading.Lock()
        self._tables: dict[str, RestTable | None] = {}
        self._session = None

    def _table(self, signing_name: str) -> RestTable | None:
        with self._lock:
            if signing_name in self._tables:
                return self._tables[signing_name]
            table = None
            try:
                import botocore.session

                if self._session is None:
                    self._session = botocore.session.get_session()
                model = self._session.get_service_model(SIGNING_NAME_TO_MODEL.get(signing_name, signing_name))
                if model.protocol in ("rest-json", "rest-xml"):
                    table = RestTable(model)
            except Exception:  # unknown service: no REST table
                table = None
            self._tables[signing_name] = table
            return table

    def resolve(self, environ: dict, body: bytes | None) -> RequestInfo:
        headers_auth = environ.get("HTTP_AUTHORIZATION", "")
        qs = environ.get("QUERY_STRING", "")
        query = dict(parse_qsl(qs, keep_blank_values=True))
        service, region, access_key = "unknown", "", ""
        m = _CRED_RE.search(headers_auth)
        if not m and "X-Amz-Credential" in query:
            m = _CRED_RE.search("Credential=" + query["X-Amz-Credential"])
        if m:
            access_key, region, service = m.group(1), m.group(3), m.group(4)

        target = environ.get("HTTP_X_AMZ_TARGET")
        if target:
            return RequestInfo(service, region, target.rsplit(".", 1)[-1], "json", access_key, {}, query)

        action = query.get("Action")
        ctype = environ.get("CONTENT_TYPE", "")
        if not action and body and ctype.startswith("application/x-www-form-urlencoded"):
            form = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
            action = form.get("Action")
        if action:
            return RequestInfo(service, region, action, "query", access_key, {}, query)

        raw = environ.get("RAW_URI") or environ.get("REQUEST_URI") or environ.get("PATH_INFO", "/")
        raw_path = raw.split("?", 1)[0]
        if raw_path.startswith("http://") or raw_path.startswith("https://"):
            raw_path = "/" + raw_path.split("/", 3)[-1]
        table = self._table(service) if service != "unknown" else None
        if table is not None:
            hit = table.match(environ.get("REQUEST_METHOD", "GET").upper(), raw_path, query)
            if hit:
                return RequestInfo(service, region, hit[0], "rest", access_key, hit[1], query)
        return RequestInfo(service, region, "Unknown", "rest", access_key, {}, query)
