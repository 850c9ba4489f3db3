"""The AWS Price List Query API (``pricing:GetProducts``) and the testbed's price model.

moto has no ``pricing`` service at all, and its ``DescribeSpotPriceHistory`` answers 0.00001 for everything. Karpenter
needs both: it refuses to start without on-demand prices, and it picks the cheapest offering by spot price. This
module serves ``GetProducts`` (JSON protocol, ``X-Amz-Target: AWSPriceListService.GetProducts``) from a deterministic
price model over the instance types moto knows for the requested region, and exposes the same model to
``tbaws.ec2_ext`` for spot prices.

The model (testbed numbers, plausible in shape, not AWS's):

* Linux on-demand, per hour = 0.0204 * vCPU + 0.0069 * GiB of memory (m5.large: 0.0960), times 0.80 on Graviton
  (arm64), 0.90 on AMD, 0.45 for burstable (t2, t3, t4g, ...), 1.10 for local-NVMe families (``d`` in the family suffix), plus a
  per-accelerator price (NVIDIA T4 0.33, A10G 0.77, L4 0.50, L40S 1.30, V100 2.20, A100 2.70, H100 4.90, H200 5.50,
  B200 7.00, other GPUs 1.00; Inferentia 0.14, Inferentia2 0.38, Trainium 1.10, Trainium2 2.40, other 0.50).
* Windows adds 0.046 per vCPU; Dedicated tenancy is 10 % more than Shared.
* Spot = on-demand * (0.25 .. 0.70), fixed per (instance type, availability zone) by a SHA-256 of the pair.

Products: one per (instance type, tenancy Shared|Dedicated, operating system Linux|Windows), ``productFamily``
``Compute Instance`` or ``Compute Instance (bare metal)``, ``capacitystatus=Used``, ``preInstalledSw=NA``,
``marketoption=OnDemand``, attributes named as in the real price list. Filters: ``TERM_MATCH``/``EQUALS`` (exact),
``CONTAINS``, ``ANY_OF``, ``NONE_OF`` (comma-separated values) on any attribute and on ``productFamily``,
``serviceCode``, ``sku``. Errors as the API models them: ``NotFoundException`` (unknown service code),
``InvalidParameterException`` (bad filter type, MaxResults outside 1-100), ``InvalidNextTokenException``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass

REGION_NAMES = {
    "us-east-1": "US East (N. Virginia)", "us-east-2": "US East (Ohio)", "us-west-1": "US West (N. California)",
    "us-west-2": "US West (Oregon)", "eu-west-1": "EU (Ireland)", "eu-central-1": "EU (Frankfurt)",
    "ap-south-1": "Asia Pacific (Mumbai)", "ap-northeast-1": "Asia Pacific (Tokyo)",
    "ap-southeast-1": "Asia Pacific (Singapore)", "ap-southeast-2": "Asia Pacific (Sydney)",
}

ACCELERATOR_PRICE = {
    "t4": 0.33, "t4g": 0.30, "a10g": 0.77, "l4": 0.50, "l40s": 1.30, "v100": 2.20, "a100": 2.70, "h100": 4.90,
    "h200": 5.50, "b200": 7.00, "inferentia": 0.14, "inferentia2": 0.38, "trainium": 1.10, "trainium2": 2.40,
}

PAGE_MAX = 100
FILTER_TYPES = ("TERM_MATCH", "EQUALS", "CONTAINS", "ANY_OF", "NONE_OF")
PUBLICATION = "2026-11-01T00:00:00Z"


class PricingError(Exception):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


# ---------------------------------------------------------------------------------------------- the price model


def _instance_types() -> dict:
    from moto.ec2.models.instance_types import INSTANCE_TYPES

    return INSTANCE_TYPES


def region_instance_types(region: str) -> list[str]:
    """The instance types moto offers in `region` (sorted)."""
    from moto.ec2.models.instance_types import INSTANCE_TYPE_OFFERINGS

    offered = {o["InstanceType"] for o in INSTANCE_TYPE_OFFERINGS.get("region", {}).get(region, [])}
    known = _instance_types()
    return sorted(t for t in offered if t in known)


def zone_offerings(region: str) -> list[tuple[str, str]]:
    """(instance type, availability zone) pairs moto offers in `region`, sorted."""
    from moto.ec2.models.instance_types import INSTANCE_TYPE_OFFERINGS

    known = _instance_types()
    pairs = {(o["InstanceType"], o["Location"]) for o in INSTANCE_TYPE_OFFERINGS.get("availability-zone", {}).get(region, [])}
    return sorted(p for p in pairs if p[0] in known)


def _accelerators(info: dict) -> float:
    total = 0.0
    for gpu in (info.get("GpuInfo") or {}).get("Gpus") or []:
        total += gpu.get("Count", 1) * ACCELERATOR_PRICE.get(str(gpu.get("Name", "")).lower().replace(" ", ""), 1.00)
    neuron = (info.get("NeuronInfo") or {}).get("NeuronDevices") or []
    inference = (info.get("InferenceAcceleratorInfo") or {}).get("Accelerators") or []
    for acc in neuron or inference:
        total += acc.get("Count", 1) * ACCELERATOR_PRICE.get(str(acc.get("Name", "")).lower().replace(" ", ""), 0.50)
    return total


def on_demand_price(instance_type: str, operating_system: str = "Linux", tenancy: str = "Shared") -> float | None:
    """Hourly USD price of `instance_type` (None when moto does not know the type)."""
    info = _instance_types().get(instance_type)
    if info is None:
        return None
    vcpu = (info.get("VCpuInfo") or {}).get("DefaultVCpus", 1)
    gib = (info.get("MemoryInfo") or {}).get("SizeInMiB", 1024) / 1024
    price = 0.0204 * vcpu + 0.0069 * gib
    proc = info.get("ProcessorInfo") or {}
    family = instance_type.split(".", 1)[0]
    suffix = family.lstrip("abcdefghijklmnopqrstuvwxyz-").lstrip("0123456789")
    if "arm64" in (proc.get("SupportedArchitectures") or []) and "x86_64" not in (proc.get("SupportedArchitectures") or []):
        price *= 0.80
    elif str(proc.get("Manufacturer", "")).upper() == "AMD":
        price *= 0.90
    if re.match(r"t\d", family):
        price *= 0.45
    if "d" in suffix:
        price *= 1.10
    price += _accelerators(info)
    if operating_system == "Windows":
        price += 0.046 * vcpu
    if tenancy == "Dedicated":
        price *= 1.10
    return round(price, 4)


def spot_price(instance_type: str, zone: str, operating_system: str = "Linux") -> float | None:
    od = on_demand_price(instance_type, operating_system)
    if od is None:
        return None
    digest = hashlib.sha256(f"{instance_type}|{zone}".encode()).digest()
    fraction = 0.25 + 0.45 * int.from_bytes(digest[:4], "big") / 2**32
    return round(max(od * fraction, 0.0001), 4)


# ---------------------------------------------------------------------------------------------- products


def _sku(*parts: str) -> str:
    alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
    n = int.from_bytes(hashlib.sha256("|".join(parts).encode()).digest()[:10], "big")
    out = ""
    for _ in range(16):
        n, r = divmod(n, len(alphabet))
        out += alphabet[r]
    return out


def _product(region: str, instance_type: str, tenancy: str, operating_system: str) -> dict:
    info = _instance_types()[instance_type]
    vcpu = (info.get("VCpuInfo") or {}).get("DefaultVCpus", 1)
    gib = (info.get("MemoryInfo") or {}).get("SizeInMiB", 1024) / 1024
    metal = bool(info.get("BareMetal"))
    family = "Compute Instance (bare metal)" if metal else "Compute Instance"
    sku = _sku(region, instance_type, tenancy, operating_system)
    price = on_demand_price(instance_type, operating_system, tenancy)
    gpus = sum(g.get("Count", 1) for g in (info.get("GpuInfo") or {}).get("Gpus") or [])
    attributes = {
        "servicecode": "AmazonEC2", "servicename": "Amazon Elastic Compute Cloud",
        "location": REGION_NAMES.get(region, region), "locationType": "AWS Region", "regionCode": region,
        "instanceType": instance_type, "instanceFamily": _family_name(instance_type),
        "currentGeneration": "Yes" if info.get("CurrentGeneration", True) else "No",
        "vcpu": str(vcpu), "memory": f"{gib:g} GiB",
        "physicalProcessor": str((info.get("ProcessorInfo") or {}).get("Manufacturer", "Intel")),
        "processorArchitecture": "64-bit", "tenancy": tenancy, "operatingSystem": operating_system,
        "licenseModel": "No License required", "usagetype": f"{_usage_prefix(region)}BoxUsage:{instance_type}",
        "operation": "RunInstances" if operating_system == "Linux" else "RunInstances:0002",
        "capacitystatus": "Used", "preInstalledSw": "NA", "marketoption": "OnDemand",
        "normalizationSizeFactor": "1",
    }
    if gpus:
        attributes["gpu"] = str(gpus)
    term = f"{sku}.JRTCKXETXF"
    return {
        "product": {"productFamily": family, "attributes": attributes, "sku": sku},
        "serviceCode": "AmazonEC2",
        "terms": {"OnDemand": {term: {
            "priceDimensions": {f"{term}.6YS6EN2CT7": {
                "unit": "Hrs", "endRange": "Inf", "beginRange": "0", "appliesTo": [], "rateCode": f"{term}.6YS6EN2CT7",
                "description": f"${price:.4f} per On Demand {operating_system} {instance_type} Instance Hour",
                "pricePerUnit": {"USD": f"{price:.10f}"},
            }},
            "sku": sku, "effectiveDate": PUBLICATION, "offerTermCode": "JRTCKXETXF", "termAttributes": {},
        }}},
        "version": "20261101000000", "publicationDate": PUBLICATION,
    }


def _family_name(instance_type: str) -> str:
    c = instance_type[0]
    return {"c": "Compute optimized", "m": "General purpose", "t": "General purpose", "r": "Memory optimized",
            "x": "Memory optimized", "u": "Memory optimized", "z": "Memory optimized", "i": "Storage optimized",
            "d": "Storage optimized", "h": "Storage optimized", "g": "GPU instance", "p": "GPU instance"}.get(
        c, "Machine Learning ASIC Instances" if instance_type.startswith(("inf", "trn")) else "General purpose")


def _usage_prefix(region: str) -> str:
    return {"us-east-1": "", "us-west-2": "USW2-", "us-east-2": "USE2-", "us-west-1": "USW1-", "eu-west-1": "EU-"}.get(
        region, region.upper().replace("-", "") + "-")


@dataclass
class _Cache:
    lock: threading.Lock
    by_region: dict


_CACHE = _Cache(threading.Lock(), {})


def products(region: str) -> list[dict]:
    """Every EC2 compute product of `region` (built once per region; prices never change)."""
    with _CACHE.lock:
        found = _CACHE.by_region.get(region)
        if found is None:
            found = [
                _product(region, it, tenancy, os_)
                for it in region_instance_types(region)
                for tenancy in ("Shared", "Dedicated")
                for os_ in ("Linux", "Windows")
            ]
            _CACHE.by_region[region] = found
        return found


def _field(product: dict, name: str) -> str | None:
    if name == "productFamily":
        return product["product"]["productFamily"]
    if name == "serviceCode":
        return product["serviceCode"]
    if name == "sku":
        return product["product"]["sku"]
    attrs = product["product"]["attributes"]
    if name in attrs:
        return attrs[name]
    lowered = {k.lower(): v for k, v in attrs.items()}
    return lowered.get(name.lower())


def _matches(product: dict, flt: dict) -> bool:
    value = _field(product, flt["Field"])
    want = flt["Value"]
    kind = flt.get("Type", "TERM_MATCH")
    if kind in ("TERM_MATCH", "EQUALS"):
        return value == want
    if kind == "CONTAINS":
        return value is not None and want in value
    options = [v.strip() for v in want.split(",")]
    if kind == "ANY_OF":
        return value in options
    return value not in options  # NONE_OF


# ---------------------------------------------------------------------------------------------- the API


def _token(offset: int, fingerprint: str) -> str:
    return base64.urlsafe_b64encode(json.dumps({"o": offset, "f": fingerprint}).encode()).decode()


def _untoken(token: str, fingerprint: str) -> int:
    try:
        data = json.loads(base64.urlsafe_b64decode(token.encode()))
        offset = int(data["o"])
        same = data["f"] == fingerprint
    except Exception:
        raise PricingError(400, "InvalidNextTokenException", "The next token is invalid.") from None
    if not same or offset < 0:
        raise PricingError(400, "InvalidNextTokenException", "The next token does not belong to this request.")
    return offset


def get_products(req: dict) -> dict:
    service = req.get("ServiceCode")
    if not service:
        raise PricingError(400, "InvalidParameterException", "ServiceCode is required.")
    if service != "AmazonEC2":
        raise PricingError(404, "NotFoundException", f"Service code {service} is not supported by the testbed "
                                                     "(it prices AmazonEC2 only).")
    max_results = req.get("MaxResults", PAGE_MAX)
    if not isinstance(max_results, int) or isinstance(max_results, bool) or not 1 <= max_results <= PAGE_MAX:
        raise PricingError(400, "InvalidParameterException", f"MaxResults must be between 1 and {PAGE_MAX}.")
    filters = req.get("Filters") or []
    for f in filters:
        if not isinstance(f, dict) or not f.get("Field") or "Value" not in f:
            raise PricingError(400, "InvalidParameterException", "Each filter needs a Field and a Value.")
        if f.get("Type", "TERM_MATCH") not in FILTER_TYPES:
            raise PricingError(400, "InvalidParameterException", f"Filter type {f.get('Type')} is invalid; "
                                                                 f"valid types: {', '.join(FILTER_TYPES)}.")
    regions = [f["Value"] for f in filters if f["Field"] == "regionCode" and f.get("Type", "TERM_MATCH") in
               ("TERM_MATCH", "EQUALS")]
    from moto.ec2.models.instance_types import INSTANCE_TYPE_OFFERINGS

    candidates = regions[:1] if regions else sorted(INSTANCE_TYPE_OFFERINGS.get("region", {}))
    matched = [p for region in candidates for p in products(region) if all(_matches(p, f) for f in filters)]
    fingerprint = hashlib.sha256(json.dumps([service, filters, max_results], sort_keys=True).encode()).hexdigest()[:16]
    offset = _untoken(req["NextToken"], fingerprint) if req.get("NextToken") else 0
    page = matched[offset:offset + max_results]
    out = {"FormatVersion": req.get("FormatVersion") or "aws_v1", "PriceList": [json.dumps(p) for p in page]}
    if offset + max_results < len(matched):
        out["NextToken"] = _token(offset + max_results, fingerprint)
    return out


OPERATIONS = {"GetProducts": get_products}


def dispatch(operation: str, body: bytes) -> tuple[int, dict | PricingError]:
    """(status, payload) or (status, PricingError) for one pricing request."""
    handler = OPERATIONS.get(operation)
    if handler is None:
        err = PricingError(400, "UnknownOperationException",
                           f"The testbed serves pricing:{', '.join(OPERATIONS)} only, not {operation}.")
        return err.status, err
    try:
        req = json.loads(body or b"{}")
        if not isinstance(req, dict):
            raise ValueError
    except ValueError:
        err = PricingError(400, "SerializationException", "The request body is not a JSON object.")
        return err.status, err
    try:
        return 200, handler(req)
    except PricingError as err:
        return err.status, err
