"""Fault injection rules and AWS-shaped error responses.

A rule is ``{"operation": "eks:CreateAccessEntry" | "eks:*" | "*", "kind": "throttle" | "5xx" | "unavailable",
"rate": 0.0-1.0, "count": null | N, "seed": int, "caller": null | "<access key id>"}``; with ``caller`` it
matches only requests signed with that access key id (the tool under test, not a controller beside it). For every request whose ``service:Operation`` matches the
pattern (shell-style, case-sensitive), the rule draws from its own ``random.Random(seed)``; if the draw is below
``rate`` and the rule still has budget (``count`` is null = unlimited, else the number of faults left), the request
is answered with the fault instead of reaching moto. Rules are evaluated in the order they were added.
``lost-response`` is the other way round: the request *is* carried out, then its answer is replaced by the
``5xx`` error below, as when AWS did the work and the response was lost (the client's retry then meets what the
first attempt created).

The error bodies follow each protocol so that the AWS SDKs classify them the way they classify the real thing:

=============  ================================  ===================================  ==========================
request style  throttle                          5xx                                  unavailable
=============  ================================  ===================================  ==========================
json           400 ThrottlingException           500 InternalFailure                  503 ServiceUnavailable
query          400 Throttling (EC2: 503          500 InternalFailure (EC2:            503 ServiceUnavailable
               RequestLimitExceeded)             InternalError)
rest (EKS)     429 ThrottlingException           500 ServerException                  503 ServiceUnavailableException
rest (S3)      503 SlowDown                      500 InternalError                    503 ServiceUnavailable
=============  ================================  ===================================  ==========================
"""

from __future__ import annotations

import fnmatch
import json
import random
import threading
import uuid
from dataclasses import dataclass, field

KINDS = ("throttle", "5xx", "unavailable", "lost-response")


class FaultSpecError(ValueError):
    pass


@dataclass
class FaultRule:
    id: int
    operation: str
    kind: str
    rate: float
    count: int | None
    seed: int
    caller: str | None = None
    injected: int = 0
    matched: int = 0
    _rng: random.Random = field(default=None, repr=False)  # type: ignore[assignment]

    def __post_init__(self):
        self._rng = random.Random(self.seed)

    def to_json(self) -> dict:
        return {
            "id": self.id,
            "operation": self.operation,
            "kind": self.kind,
            "rate": self.rate,
            "count": self.count,
            "seed": self.seed,
            "caller": self.caller,
            "matched": self.matched,
            "injected": self.injected,
        }


class FaultRegistry:
    def __init__(self):
        self._lock = threading.Lock()
        self._rules: list[FaultRule] = []
        self._next_id = 1

    def add(self, spec: dict) -> FaultRule:
        if not isinstance(spec, dict):
            raise FaultSpecError("fault spec must be a JSON object")
        unknown = set(spec) - {"operation", "kind", "rate", "count", "seed", "caller"}
        if unknown:
            raise FaultSpecError(f"unknown fault field(s): {sorted(unknown)}")
        op = spec.get("operation")
        if not isinstance(op, str) or not op or (op != "*" and ":" not in op):
            raise FaultSpecError('"operation" must be "*" or "service:Operation" (wildcards allowed, e.g. "eks:*")')
        kind = spec.get("kind")
        if kind not in KINDS:
            raise FaultSpecError(f'"kind" must be one of {list(KINDS)}')
        rate = spec.get("rate", 1.0)
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 < float(rate) <= 1.0:
            raise FaultSpecError('"rate" must be a number in (0, 1]')
        count = spec.get("count")
        if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 1):
            raise FaultSpecError('"count" must be null or a positive integer')
        seed = spec.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise FaultSpecError('"seed" must be an integer')
        caller = spec.get("caller")
        if caller is not None and (not isinstance(caller, str) or not caller):
            raise FaultSpecError('"caller" must be null or an access key id')
        with self._lock:
            rule = FaultRule(self._next_id, op, kind, float(rate), count, seed, caller)
            self._next_id += 1
            self._rules.append(rule)
            return rule

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def list(self) -> list[dict]:
        with self._lock:
            return [r.to_json() for r in self._rules]

    def draw(self, key: str, caller: str = "") -> FaultRule | None:
        """Return the rule that fires for this request, if any (and charge it)."""
        with self._lock:
            for rule in self._rules:
                if rule.operation != "*" and not fnmatch.fnmatchcase(key, rule.operation):
                    continue
                if rule.caller is not None and rule.caller != caller:
                    continue
                if rule.count is not None and rule.injected >= rule.count:
                    continue
                rule.matched += 1
                if rule._rng.random() < rule.rate:
                    rule.injected += 1
                    return rule
            return None


# ---------------------------------------------------------------------------------------------- error rendering


def _xml_escape(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def error_response(service: str, style: str, status: int, code: str, message: str, extra: dict | None = None):
    """Build (status, headers, body) for an AWS error in the protocol the request used."""
    request_id = str(uuid.uuid4())
    if style == "json":
        body = {"__type": code, "message": message}
        body.update(extra or {})
        return (
            status,
            [
                ("Content-Type", "application/x-amz-json-1.1"),
                ("x-amzn-RequestId", request_id),
                ("x-amzn-ErrorType", code),
            ],
            json.dumps(body).encode(),
        )
    if style == "query":
        if service == "ec2":
            xml = (
                '<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error>'
                f"<Code>{_xml_escape(code)}</Code><Message>{_xml_escape(message)}</Message>"
                f"</Error></Errors><RequestID>{request_id}</RequestID></Response>"
            )
        else:
            err_type = "Receiver" if status >= 500 else "Sender"
            xml = (
                '<?xml version="1.0" encoding="UTF-8"?>\n<ErrorResponse><Error>'
                f"<Type>{err_type}</Type><Code>{_xml_escape(code)}</Code><Message>{_xml_escape(message)}</Message>"
                f"</Error><RequestId>{request_id}</RequestId></ErrorResponse>"
            )
        return status, [("Content-Type", "text/xml"), ("x-amzn-RequestId", request_id)], xml.encode()
    if service == "s3":
        xml = (
            '<?xml version="1.0" encoding="UTF-8"?>\n<Error>'
            f"<Code>{_xml_escape(code)}</Code><Message>{_xml_escape(message)}</Message>"
            f"<RequestId>{request_id}</RequestId></Error>"
        )
        return status, [("Content-Type", "application/xml"), ("x-amz-request-id", request_id)], xml.encode()
    # rest-json (EKS and friends)
    body = {"message": message}
    body.update(extra or {})
    return (
        status,
        [
            ("Content-Type", "application/json"),
            ("x-amzn-RequestId", request_id),
            ("x-amzn-ErrorType", code),
        ],
        json.dumps(body).encode(),
    )


def fault_response(service: str, style: str, kind: str):
    if kind == "lost-response":
        kind = "5xx"
    if kind == "throttle":
        if style == "json":
            return error_response(service, style, 400, "ThrottlingException", "Rate exceeded")
        if style == "query":
            if service == "ec2":
                return error_response(service, style, 503, "RequestLimitExceeded", "Request limit exceeded.")
            return error_response(service, style, 400, "Throttling", "Rate exceeded")
        if service == "s3":
            return error_response(service, style, 503, "SlowDown", "Please reduce your request rate.")
        return error_response(service, style, 429, "ThrottlingException", "Rate exceeded")
    if kind == "5xx":
        if service == "s3" or (style == "query" and service == "ec2"):
            return error_response(service, style, 500, "InternalError", "We encountered an internal error. Please try again.")
        if style == "rest":
            return error_response(service, style, 500, "ServerException", "Internal service error (injected by testbed)")
        return error_response(service, style, 500, "InternalFailure", "Internal service error (injected by testbed)")
    # unavailable
    code = "ServiceUnavailableException" if (style == "rest" and service != "s3") else "ServiceUnavailable"
    return error_response(service, style, 503, code, "Service is unavailable (injected by testbed)")
