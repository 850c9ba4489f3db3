"""EC2 operations that moto 5.2.5 lacks or answers unusably, served from the testbed middleware.

* ``DescribeSpotPriceHistory``: moto answers 0.00001 for every offering; here each (instance type, zone) moto offers
  gets the price of ``tbaws.pricing_ext.spot_price`` for ``Linux/UNIX`` and ``Windows``, with the filters
  (``availability-zone``, ``instance-type``, ``product-description``, ``spot-price``), ``InstanceType.N``,
  ``ProductDescription.N``, ``AvailabilityZone``, ``MaxResults`` and ``NextToken``.
* Placement groups (moto has none; ``DescribePlacementGroups`` is an HTML 500): ``CreatePlacementGroup``,
  ``DescribePlacementGroups`` (``GroupName.N``, ``GroupId.N``, filters ``group-name``, ``group-arn``, ``state``,
  ``strategy``, ``spread-level``, ``tag:<key>``, ``tag-key``), ``DeletePlacementGroup``.
* On-Demand Capacity Reservations (moto has none): ``CreateCapacityReservation``, ``DescribeCapacityReservations``
  (``CapacityReservationId.N``, filters ``instance-type``, ``owner-id``, ``availability-zone``, ``instance-platform``,
  ``tenancy``, ``state``, ``instance-match-criteria``, ``end-date-type``, ``tag:<key>``, ``tag-key``; ``MaxResults``,
  ``NextToken``), ``CancelCapacityReservation``.

State lives on moto's EC2 backend object of the account and region (attribute ``_tb_ext``), so a moto reset clears
it. Errors use the EC2 error codes (``InvalidPlacementGroup.Duplicate``, ``InvalidPlacementGroup.Unknown``,
``InvalidCapacityReservationId.NotFound``, ``InvalidCapacityReservationId.Malformed``, ``InvalidParameterValue``,
``MissingParameter``, ``InvalidNextToken``), all 400 in EC2's XML error shape.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import threading
import uuid
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

from . import pricing_ext

XMLNS = "http://ec2.amazonaws.com/doc/2016-11-15/"
SPOT_DESCRIPTIONS = ("Linux/UNIX", "Windows")
PLATFORMS = ("Linux/UNIX", "Red Hat Enterprise Linux", "SUSE Linux", "Windows", "Windows with SQL Server",
             "Red Hat Enterprise Linux with HA", "Ubuntu Pro", "Linux with SQL Server Standard")
STRATEGIES = ("cluster", "spread", "partition")
_LOCK = threading.RLock()


class Ec2Error(Exception):
    def __init__(self, code: str, message: str, status: int = 400):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


# ---------------------------------------------------------------------------------------------- request parsing


def params_of(query: dict, body: bytes) -> dict:
    out = dict(query)
    if body:
        out.update(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
    return out


def _indexed(params: dict, prefix: str) -> list[str]:
    found = []
    for key, value in params.items():
        if key.startswith(prefix + "."):
            rest = key[len(prefix) + 1:]
            if rest.isdigit():
                found.append((int(rest), value))
    return [v for _, v in sorted(found)]


def _filters(params: dict) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    n = 1
    while f"Filter.{n}.Name" in params:
        out.setdefault(params[f"Filter.{n}.Name"], []).extend(_indexed(params, f"Filter.{n}.Value"))
        n += 1
    return out


def _tag_specs(params: dict, resource_type: str) -> dict[str, str]:
    tags: dict[str, str] = {}
    # The query name differs per operation (CreatePlacementGroup: TagSpecification.N, CreateCapacityReservation:
    # TagSpecifications.N).
    for spec in ("TagSpecification", "TagSpecifications"):
        n = 1
        while f"{spec}.{n}.ResourceType" in params:
            if params[f"{spec}.{n}.ResourceType"] == resource_type:
                m = 1
                while f"{spec}.{n}.Tag.{m}.Key" in params:
                    tags[params[f"{spec}.{n}.Tag.{m}.Key"]] = params.get(f"{spec}.{n}.Tag.{m}.Value", "")
                    m += 1
            n += 1
    return tags


def _matches(filters, obj, fields):
    """Whether `obj` (with "tags") passes every EC2 filter: tag:KEY, tag-key and tag-value,
    or a field named in `fields` (filter name -> key of obj); any other filter is refused."""
    ok = True
    for fname, values in filters.items():
        tag = _tag_filters_match(obj["tags"], fname, values)
        if tag is not None:
            ok = ok and tag
        elif fname in fields:
            ok = ok and str(obj.get(fields[fname])) in values
        else:
            raise Ec2Error("InvalidParameterValue", f"The filter '{fname}' is invalid")
    return ok


def _tag_filters_match(tags: dict[str, str], name: str, values: list[str]) -> bool | None:
    """None when `name` is not a tag filter."""
    if name == "tag-key":
        return any(k in tags for k in values)
    if name.startswith("tag:"):
        return tags.get(name[4:]) in values
    return None


def _max_results(params: dict, default: int, low: int, high: int | None) -> int:
    raw = params.get("MaxResults")
    if raw is None:
        return default
    try:
        n = int(raw)
    except ValueError:
        raise Ec2Error("InvalidParameterValue", f"Value ({raw}) for parameter maxResults is invalid.") from None
    if n < low or (high is not None and n > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise Ec2Error("InvalidParameterValue", f"Value ({raw}) for parameter maxResults is invalid. "
                                                f"Expecting a value {bound}.")
    return n


def _page(items: list, params: dict, size: int, scope: str) -> tuple[list, str | None]:
    fingerprint = hashlib.sha256(scope.encode()).hexdigest()[:12]
    offset = 0
    if params.get("NextToken"):
        try:
            data = json.loads(base64.urlsafe_b64decode(params["NextToken"].encode()))
            offset, ok = int(data["o"]), data["f"] == fingerprint
        except Exception:
            ok = False
        if not ok or offset < 0:
            raise Ec2Error("InvalidNextToken", "The specified token is invalid or has expired.")
    page = items[offset:offset + size]
    token = None
    if offset + size < len(items):
        token = base64.urlsafe_b64encode(json.dumps({"o": offset + size, "f": fingerprint}).encode()).decode()
    return page, token


# ---------------------------------------------------------------------------------------------- XML rendering


def _esc(s) -> str:
    return str(s).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def _el(tag: str, value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        value = "true" if value else "false"
    return f"<{tag}>{value if isinstance(value, _Raw) else _esc(value)}</{tag}>"


class _Raw(str):
    pass


def _items(tag: str, inner: list[str]) -> _Raw:
    return _Raw(f"<{tag}>" + "".join(f"<item>{i}</item>" for i in inner) + f"</{tag}>")


def _tag_set(tags: dict[str, str]) -> _Raw:
    return _items("tagSet", [_el("key", k) + _el("value", v) for k, v in sorted(tags.items())])


def _response(operation: str, body: str) -> bytes:
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<{operation}Response xmlns="{XMLNS}">'
            f"<requestId>{uuid.uuid4()}</requestId>{body}</{operation}Response>").encode()


def _iso(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.000Z")


# ---------------------------------------------------------------------------------------------- state


@dataclass
class Ec2Ext:
    placement_groups: dict = field(default_factory=dict)  # name -> dict
    capacity_reservations: dict = field(default_factory=dict)  # id -> dict


def state(backend) -> Ec2Ext:
    with _LOCK:
        st = getattr(backend, "_tb_ext", None)
        if st is None:
            st = Ec2Ext()
            backend._tb_ext = st
        return st


@dataclass
class Ctx:
    backend: object
    account: str
    region: str
    params: dict


def _zones(ctx: Ctx) -> list[str]:
    return sorted({z for _, z in pricing_ext.zone_offerings(ctx.region)})


# ---------------------------------------------------------------------------------------------- spot prices


def describe_spot_price_history(ctx: Ctx) -> str:
    p = ctx.params
    filters = _filters(p)
    types = set(_indexed(p, "InstanceType")) | set(filters.get("instance-type", []))
    descriptions = set(_indexed(p, "ProductDescription")) | set(filters.get("product-description", []))
    zones = set(filters.get("availability-zone", []))
    if p.get("AvailabilityZone"):
        zones.add(p["AvailabilityZone"])
    unknown = set(filters) - {"instance-type", "product-description", "availability-zone", "spot-price", "timestamp"}
    if unknown:
        raise Ec2Error("InvalidParameterValue", f"The filter '{sorted(unknown)[0]}' is invalid")
    size = _max_results(p, 1000, 1, None)
    # The price in effect now: changed at the top of the current hour.
    stamp = _iso(dt.datetime.now(dt.timezone.utc).replace(minute=0, second=0, microsecond=0))
    rows = []
    for itype, zone in pricing_ext.zone_offerings(ctx.region):
        if (types and itype not in types) or (zones and zone not in zones):
            continue
        for desc in SPOT_DESCRIPTIONS:
            if descriptions and desc not in descriptions:
                continue
            price = pricing_ext.spot_price(itype, zone, "Windows" if desc.startswith("Windows") else "Linux")
            text = f"{price:.6f}"
            if "spot-price" in filters and text not in filters["spot-price"]:
                continue
            rows.append(_el("availabilityZone", zone) + _el("instanceType", itype) + _el("productDescription", desc)
                        + _el("spotPrice", text) + _el("timestamp", stamp))
    scope = json.dumps([sorted(types), sorted(descriptions), sorted(zones), filters.get("spot-price"), size])
    page, token = _page(rows, p, size, scope)
    return _items("spotPriceHistorySet", page) + _el("nextToken", token or "")


# ---------------------------------------------------------------------------------------------- placement groups


def _pg_xml(pg: dict) -> str:
    return (_el("groupName", pg["name"]) + _el("state", pg["state"]) + _el("strategy", pg["strategy"])
            + _el("partitionCount", pg.get("partitionCount")) + _el("groupId", pg["id"]) + _tag_set(pg["tags"])
            + _el("groupArn", pg["arn"]) + _el("spreadLevel", pg.get("spreadLevel")))


def create_placement_group(ctx: Ctx) -> str:
    p = ctx.params
    name = p.get("GroupName")
    if not name:
        raise Ec2Error("MissingParameter", "The request must contain the parameter groupName")
    strategy = p.get("Strategy")
    if strategy not in STRATEGIES:
        raise Ec2Error("InvalidParameterValue", f"Value ({strategy}) for parameter strategy is invalid. "
                                                f"Valid values: {', '.join(STRATEGIES)}")
    pg = {"name": name, "strategy": strategy, "state": "available",
          "id": "pg-" + hashlib.sha256(f"{ctx.account}|{ctx.region}|{name}|{uuid.uuid4()}".encode()).hexdigest()[:17],
          "tags": _tag_specs(p, "placement-group")}
    pg["arn"] = f"arn:aws:ec2:{ctx.region}:{ctx.account}:placement-group/{name}"
    if strategy == "partition":
        count = int(p.get("PartitionCount", "2"))
        if not 1 <= count <= 7:
            raise Ec2Error("InvalidParameterValue", f"Value ({count}) for parameter partitionCount is invalid. "
                                                    "Expecting a value between 1 and 7.")
        pg["partitionCount"] = count
    elif p.get("PartitionCount"):
        raise Ec2Error("InvalidParameterValue", "PartitionCount is only valid for the partition strategy.")
    if strategy == "spread":
        level = p.get("SpreadLevel", "rack")
        if level not in ("host", "rack"):
            raise Ec2Error("InvalidParameterValue", f"Value ({level}) for parameter spreadLevel is invalid.")
        pg["spreadLevel"] = level
    st = state(ctx.backend)
    with _LOCK:
        if name in st.placement_groups:
            raise Ec2Error("InvalidPlacementGroup.Duplicate", f"The Placement Group '{name}' already exists.")
        st.placement_groups[name] = pg
    return _Raw("<placementGroup>" + _pg_xml(pg) + "</placementGroup>")


def describe_placement_groups(ctx: Ctx) -> str:
    p = ctx.params
    st = state(ctx.backend)
    names, ids = _indexed(p, "GroupName"), _indexed(p, "GroupId")
    filters = _filters(p)
    with _LOCK:
        groups = list(st.placement_groups.values())
    for n in names:
        if not any(g["name"] == n for g in groups):
            raise Ec2Error("InvalidPlacementGroup.Unknown", f"The Placement Group '{n}' is unknown.")
    for i in ids:
        if not any(g["id"] == i for g in groups):
            raise Ec2Error("InvalidPlacementGroup.Unknown", f"The Placement Group '{i}' is unknown.")
    fields = {"group-name": "name", "group-arn": "arn", "state": "state", "strategy": "strategy",
              "spread-level": "spreadLevel"}
    out = []
    for g in sorted(groups, key=lambda g: g["name"]):
        if (names and g["name"] not in names) or (ids and g["id"] not in ids):
            continue
        if _matches(filters, g, fields):
            out.append(_pg_xml(g))
    return _items("placementGroupSet", out)


def delete_placement_group(ctx: Ctx) -> str:
    name = ctx.params.get("GroupName")
    if not name:
        raise Ec2Error("MissingParameter", "The request must contain the parameter groupName")
    st = state(ctx.backend)
    with _LOCK:
        if st.placement_groups.pop(name, None) is None:
            raise Ec2Error("InvalidPlacementGroup.Unknown", f"The Placement Group '{name}' is unknown.")
    return _el("return", True)


# ---------------------------------------------------------------------------------------------- capacity reservations


def _cr_xml(cr: dict) -> str:
    keys = ("capacityReservationId", "ownerId", "capacityReservationArn", "availabilityZoneId", "instanceType",
            "instancePlatform", "availabilityZone", "tenancy", "totalInstanceCount", "availableInstanceCount",
            "ebsOptimized", "ephemeralStorage", "state", "startDate", "endDate", "endDateType",
            "instanceMatchCriteria", "createDate", "reservationType", "deliveryPreference")
    return "".join(_el(k, cr.get(k)) for k in keys) + _tag_set(cr["tags"])


def create_capacity_reservation(ctx: Ctx) -> str:
    p = ctx.params
    for required in ("InstanceType", "InstancePlatform", "InstanceCount"):
        if not p.get(required):
            raise Ec2Error("MissingParameter", f"The request must contain the parameter {required[0].lower() + required[1:]}")
    itype, platform = p["InstanceType"], p["InstancePlatform"]
    zone = p.get("AvailabilityZone")
    if not zone:
        raise Ec2Error("MissingParameter", "The request must contain the parameter availabilityZone or availabilityZoneId")
    if platform not in PLATFORMS:
        raise Ec2Error("InvalidParameterValue", f"Value ({platform}) for parameter instancePlatform is invalid.")
    if zone not in _zones(ctx):
        raise Ec2Error("InvalidParameterValue", f"Invalid availability zone: [{zone}]")
    if (itype, zone) not in set(pricing_ext.zone_offerings(ctx.region)):
        raise Ec2Error("InvalidParameterValue", f"The instance type '{itype}' is not supported in availability zone '{zone}'.")
    try:
        count = int(p["InstanceCount"])
    except ValueError:
        count = 0
    if count < 1:
        raise Ec2Error("InvalidParameterValue", f"Value ({p['InstanceCount']}) for parameter instanceCount is invalid.")
    criteria = p.get("InstanceMatchCriteria", "open")
    if criteria not in ("open", "targeted"):
        raise Ec2Error("InvalidParameterValue", f"Value ({criteria}) for parameter instanceMatchCriteria is invalid.")
    end_type = p.get("EndDateType", "unlimited")
    if end_type not in ("unlimited", "limited"):
        raise Ec2Error("InvalidParameterValue", f"Value ({end_type}) for parameter endDateType is invalid.")
    if end_type == "limited" and not p.get("EndDate"):
        raise Ec2Error("InvalidParameterValue", "EndDate is required when EndDateType is limited.")
    now = _iso(dt.datetime.now(dt.timezone.utc))
    cid = "cr-" + uuid.uuid4().hex[:17]
    zone_id = next((z.zone_id for z in ctx.backend.zones.get(ctx.region, []) if z.name == zone), None)
    cr = {
        "capacityReservationId": cid, "ownerId": ctx.account,
        "capacityReservationArn": f"arn:aws:ec2:{ctx.region}:{ctx.account}:capacity-reservation/{cid}",
        "availabilityZoneId": zone_id, "instanceType": itype, "instancePlatform": platform,
        "availabilityZone": zone, "tenancy": p.get("Tenancy", "default"), "totalInstanceCount": count,
        "availableInstanceCount": count, "ebsOptimized": p.get("EbsOptimized", "false") == "true",
        "ephemeralStorage": False, "state": "active", "startDate": now, "endDate": p.get("EndDate"),
        "endDateType": end_type, "instanceMatchCriteria": criteria, "createDate": now,
        "reservationType": "default", "deliveryPreference": "fixed",
        "tags": _tag_specs(p, "capacity-reservation"),
    }
    with _LOCK:
        state(ctx.backend).capacity_reservations[cid] = cr
    return _Raw("<capacityReservation>" + _cr_xml(cr) + "</capacityReservation>")


def _check_cr_id(cid: str) -> None:
    if not (cid.startswith("cr-") and len(cid) == 20 and all(c in "0123456789abcdef" for c in cid[3:])):
        raise Ec2Error("InvalidCapacityReservationId.Malformed", f"Invalid id: \"{cid}\"")


def describe_capacity_reservations(ctx: Ctx) -> str:
    p = ctx.params
    ids = _indexed(p, "CapacityReservationId")
    filters = _filters(p)
    if ids and p.get("MaxResults"):
        raise Ec2Error("InvalidParameterCombination", "The parameter capacityReservationSet cannot be used with the "
                                                      "parameter maxResults")
    size = _max_results(p, 1000, 1, 1000)
    with _LOCK:
        all_crs = dict(state(ctx.backend).capacity_reservations)
    for cid in ids:
        _check_cr_id(cid)
        if cid not in all_crs:
            raise Ec2Error("InvalidCapacityReservationId.NotFound", f"The capacity reservation ID '{cid}' does not exist")
    fields = {"instance-type": "instanceType", "owner-id": "ownerId", "availability-zone": "availabilityZone",
              "instance-platform": "instancePlatform", "tenancy": "tenancy", "state": "state",
              "instance-match-criteria": "instanceMatchCriteria", "end-date-type": "endDateType"}
    out = []
    for cid in sorted(all_crs):
        cr = all_crs[cid]
        if ids and cid not in ids:
            continue
        if _matches(filters, cr, fields):
            out.append(_cr_xml(cr))
    page, token = _page(out, p, size, json.dumps([ids, filters, size], sort_keys=True))
    return _items("capacityReservationSet", page) + _el("nextToken", token)


def cancel_capacity_reservation(ctx: Ctx) -> str:
    cid = ctx.params.get("CapacityReservationId")
    if not cid:
        raise Ec2Error("MissingParameter", "The request must contain the parameter capacityReservationId")
    _check_cr_id(cid)
    with _LOCK:
        cr = state(ctx.backend).capacity_reservations.get(cid)
        if cr is None:
            raise Ec2Error("InvalidCapacityReservationId.NotFound", f"The capacity reservation ID '{cid}' does not exist")
        if cr["state"] != "active":
            raise Ec2Error("IncorrectState", f"The capacity reservation '{cid}' is not active")
        cr["state"] = "cancelled"
        cr["availableInstanceCount"] = 0
    return _el("return", True)


OPERATIONS = {
    "DescribeSpotPriceHistory": describe_spot_price_history,
    "CreatePlacementGroup": create_placement_group,
    "DescribePlacementGroups": describe_placement_groups,
    "DeletePlacementGroup": delete_placement_group,
    "CreateCapacityReservation": create_capacity_reservation,
    "DescribeCapacityReservations": describe_capacity_reservations,
    "CancelCapacityReservation": cancel_capacity_reservation,
}


def dispatch(operation: str, backend, account: str, region: str, query: dict, body: bytes) -> tuple[int, bytes | Ec2Error]:
    ctx = Ctx(backend, account, region, params_of(query, body))
    if ctx.params.get("DryRun") == "true":
        return 412, Ec2Error("DryRunOperation", "Request would have succeeded, but DryRun flag is set.", 412)
    try:
        return 200, _response(operation, OPERATIONS[operation](ctx))
    except Ec2Error as err:
        return err.status, err
