"""Stateful EKS operations that moto lacks or gets wrong, served from the testbed middleware.

Request/response shapes follow the EKS API reference (botocore model ``eks/2017-11-01``); errors use the modeled
codes and HTTP statuses: ResourceNotFoundException 404, ResourceInUseException 409, InvalidParameterException 400,
InvalidRequestException 400.

State lives on moto's own ``Cluster`` objects (attribute ``_tb``), so it disappears with the cluster and with a moto
reset. Long-running changes (nodegroup/cluster/add-on updates) follow a deterministic poll model instead of wall-clock
time: a change stays in progress (``UPDATING`` / ``CREATING`` / ``DELETING``, update status ``InProgress``) for
``CONFIG.transition_polls`` describe calls of the affected resource, then completes. The describe call that observes
the in-progress state is the one that advances it, so with the default of 1 the first describe after a change shows it
in progress and the next one shows it done; 0 makes every change complete immediately.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

ADMIN_POLICY = "arn:aws:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy"
AUTH_MODES = ("CONFIG_MAP", "API_AND_CONFIG_MAP", "API")
ACCESS_ENTRY_TYPES = ("STANDARD", "EC2_LINUX", "EC2_WINDOWS", "FARGATE_LINUX", "EC2", "HYBRID_LINUX", "HYPERPOD_LINUX")
NODE_TYPES = ("EC2_LINUX", "EC2_WINDOWS", "FARGATE_LINUX", "HYBRID_LINUX", "HYPERPOD_LINUX", "EC2")


@dataclass
class Config:
    transition_polls: int = 1
    loopback: Any = None  # tbaws.loopback.Loopback, set by the app
    node_amis: dict = field(default_factory=dict)  # k8s version -> AL2023 x86_64 standard AMI id (set by the seeder)
    release_versions: dict = field(default_factory=dict)  # k8s version -> AL2023 release_version
    on_version_change: Callable[[str, str, str], None] | None = None  # (account, region, new version)
    lock: threading.RLock = field(default_factory=threading.RLock)


CONFIG = Config()


def default_release_version(version: str) -> str:
    return CONFIG.release_versions.get(version, f"{version}.0-20250915")


def addon_versions(k8s: str) -> dict[str, str]:
    return {
        "eks-pod-identity-agent": "v1.3.8-eksbuild.2",
        "vpc-cni": "v1.20.1-eksbuild.3",
        "coredns": "v1.11.4-eksbuild.14",
        "kube-proxy": f"v{k8s}.3-eksbuild.5",
        "aws-ebs-csi-driver": "v1.48.0-eksbuild.2",
    }


class EksError(Exception):
    def __init__(self, status: int, code: str, message: str, **extra: Any):
        super().__init__(message)
        self.status, self.code, self.message, self.extra = status, code, message, extra


def not_found(msg: str, **extra) -> EksError:
    return EksError(404, "ResourceNotFoundException", msg, **extra)


def in_use(msg: str, **extra) -> EksError:
    return EksError(409, "ResourceInUseException", msg, **extra)


def invalid_param(msg: str, **extra) -> EksError:
    return EksError(400, "InvalidParameterException", msg, **extra)


def invalid_request(msg: str, **extra) -> EksError:
    return EksError(400, "InvalidRequestException", msg, **extra)


@dataclass
class _Pending:
    scope: tuple  # ("cluster", name) | ("nodegroup", name) | ("addon", name)
    remaining: int
    complete: Callable[[], None]
    update_id: str | None = None


@dataclass
class ClusterExt:
    access_entries: dict = field(default_factory=dict)  # principalArn -> dict
    policies: dict = field(default_factory=dict)  # principalArn -> {policyArn: associated policy dict}
    pod_identity: dict = field(default_factory=dict)  # associationId -> dict
    addons: dict = field(default_factory=dict)  # name -> dict
    updates: dict = field(default_factory=dict)  # id -> (scope, update dict)
    pending: list = field(default_factory=list)


def ext(cluster) -> ClusterExt:
    state = getattr(cluster, "_tb", None)
    if state is None:
        state = ClusterExt()
        cluster._tb = state
    return state


def _now() -> float:
    return round(time.time(), 3)


def _rand_id(prefix: str, n: int = 17) -> str:
    return prefix + uuid.uuid4().hex[:n]


# ---------------------------------------------------------------------------------------------- cluster life cycle


def init_cluster(cluster, access_config: dict, creator_arn: str | None) -> None:
    mode = access_config.get("authenticationMode") or "CONFIG_MAP"
    if mode not in AUTH_MODES:
        raise ValueError(f"invalid authenticationMode {mode}")
    bootstrap = access_config.get("bootstrapClusterCreatorAdminPermissions")
    bootstrap = True if bootstrap is None else bool(bootstrap)
    cluster.access_config = {"bootstrapClusterCreatorAdminPermissions": bootstrap, "authenticationMode": mode}
    cluster.upgrade_policy = {"supportType": "EXTENDED"}
    cluster.health = {"issues": []}
    state = ext(cluster)
    if mode != "CONFIG_MAP" and bootstrap and creator_arn:
        principal = _principal_from_caller(creator_arn)
        account = _account_of(cluster)
        entry = _new_entry(cluster, principal, "STANDARD", [], None, {}, account)
        state.access_entries[principal] = entry
        state.policies[principal] = {
            ADMIN_POLICY: {
                "policyArn": ADMIN_POLICY,
                "accessScope": {"type": "cluster", "namespaces": []},
                "associatedAt": _now(),
                "modifiedAt": _now(),
            }
        }


def _principal_from_caller(arn: str) -> str:
    m = re.match(r"arn:([^:]+):sts::(\d{12}):assumed-role/([^/]+)/", arn)
    if m:
        return f"arn:{m.group(1)}:iam::{m.group(2)}:role/{m.group(3)}"
    return arn


def _account_of(cluster) -> str:
    return cluster.arn.split(":")[4]


def _region_of(cluster) -> str:
    return cluster.arn.split(":")[3]


def _partition_of(cluster) -> str:
    return cluster.arn.split(":")[1]


def on_nodegroup_created(backend, cluster, nodegroup) -> None:
    if cluster is None:
        return
    mode = getattr(cluster, "access_config", {}).get("authenticationMode", "CONFIG_MAP")
    state = ext(cluster)
    if mode != "CONFIG_MAP" and nodegroup.node_role not in state.access_entries:
        # EKS creates the EC2_LINUX access entry for a managed node group's role itself.
        state.access_entries[nodegroup.node_role] = _new_entry(
            cluster, nodegroup.node_role, "EC2_LINUX", [], None, {}, _account_of(cluster)
        )
    sync_nodegroup_instances(cluster, nodegroup)


def sync_nodegroup_instances(cluster, nodegroup) -> None:
    """Make the running EC2 instances tagged for this nodegroup match its desired size."""
    if CONFIG.loopback is None:
        return
    ec2 = CONFIG.loopback.client("ec2", _region_of(cluster))
    filters = [
        {"Name": "tag:eks:cluster-name", "Values": [cluster.name]},
        {"Name": "tag:eks:nodegroup-name", "Values": [nodegroup.nodegroup_name]},
        {"Name": "instance-state-name", "Values": ["pending", "running"]},
    ]
    running = [i["InstanceId"] for r in ec2.describe_instances(Filters=filters)["Reservations"] for i in r["Instances"]]
    desired = int(nodegroup.scaling_config.get("desiredSize", 0))
    if len(running) > desired:
        ec2.terminate_instances(InstanceIds=sorted(running)[desired:])
    for i in range(len(running), desired):
        subnet = nodegroup.subnets[i % len(nodegroup.subnets)] if nodegroup.subnets else None
        tags = [
            {"Key": "eks:cluster-name", "Value": cluster.name},
            {"Key": "eks:nodegroup-name", "Value": nodegroup.nodegroup_name},
            {"Key": f"kubernetes.io/cluster/{cluster.name}", "Value": "owned"},
            {"Key": "Name", "Value": f"{cluster.name}-{nodegroup.nodegroup_name}-node"},
        ]
        kwargs: dict[str, Any] = {
            "ImageId": CONFIG.node_amis.get(nodegroup.version, "ami-0000000000000000a"),
            "MinCount": 1,
            "MaxCount": 1,
            "InstanceType": (nodegroup.instance_types or ["m5.large"])[0],
            "TagSpecifications": [{"ResourceType": "instance", "Tags": tags}],
        }
        if subnet:
            kwargs["SubnetId"] = subnet
        ec2.run_instances(**kwargs)


def _advance(state: ClusterExt, scope: tuple) -> None:
    for pending in list(state.pending):
        if pending.scope != scope:
            continue
        pending.remaining -= 1
        if pending.remaining <= 0:
            state.pending.remove(pending)
            pending.complete()
            if pending.update_id and pending.update_id in state.updates:
                state.updates[pending.update_id][1]["status"] = "Successful"


def _start(state: ClusterExt, scope: tuple, complete: Callable[[], None], update: dict | None = None) -> None:
    if update is not None:
        state.updates[update["id"]] = (scope, update)
    pending = _Pending(scope, CONFIG.transition_polls, complete, update["id"] if update else None)
    if pending.remaining <= 0:
        complete()
        if update is not None:
            update["status"] = "Successful"
    else:
        state.pending.append(pending)


def _new_update(kind: str, params: list) -> dict:
    return {"id": str(uuid.uuid4()), "status": "InProgress", "type": kind, "params": params, "createdAt": _now(), "errors": []}


# ---------------------------------------------------------------------------------------------- request dispatch


class Ctx:
    def __init__(self, backend, account: str, region: str, params: dict, query: dict, body: dict):
        self.backend, self.account, self.region = backend, account, region
        self.params, self.query, self.body = params, query, body

    def cluster(self):
        name = self.params.get("name", "")
        cluster = self.backend.clusters.get(name)
        if cluster is None:
            raise not_found(f"No cluster found for name: {name}.")
        return cluster

    def nodegroup(self, cluster):
        name = self.params.get("nodegroupName", "")
        ng = cluster.nodegroups.get(name)
        if ng is None:
            raise not_found(f"No node group found for name: {name}.", clusterName=cluster.name, nodegroupName=name)
        return ng


def _page(items: list, query: dict) -> tuple[list, str | None]:
    try:
        max_results = int(query.get("maxResults", 100))
    except ValueError:
        raise invalid_param("maxResults must be an integer between 1 and 100")
    if not 1 <= max_results <= 100:
        raise invalid_param("maxResults must be between 1 and 100")
    start = 0
    if query.get("nextToken"):
        try:
            start = int(query["nextToken"])
        except ValueError:
            raise invalid_param("The nextToken is invalid.")
    end = start + max_results
    return items[start:end], (str(end) if end < len(items) else None)


def dispatch(operation: str, backend, account: str, region: str, params: dict, query: dict, raw_body: bytes):
    """Handle an EKS operation. Returns (status, payload) for handled operations, a callable to run after moto
    answered for operations moto serves (describe hooks), or None to pass the request through untouched."""
    handler = _HANDLERS.get(operation)
    hook = _AFTER_HOOKS.get(operation)
    if handler is None and hook is None:
        return None
    try:
        body = json.loads(raw_body) if raw_body else {}
    except ValueError:
        return 400, {"__error__": invalid_param("Request body is not valid JSON")}
    ctx = Ctx(backend, account, region, params, query, body if isinstance(body, dict) else {})
    with CONFIG.lock:
        if hook is not None:
            return lambda: _safe_hook(hook, ctx)
        try:
            return 200, handler(ctx)
        except EksError as err:
            return err.status, {"__error__": err}


def _safe_hook(hook, ctx) -> None:
    with CONFIG.lock:
        try:
            hook(ctx)
        except EksError:
            pass


# ---------------------------------------------------------------------------------------------- access entries


def _parse_principal(arn: str) -> tuple[str, str, str] | None:
    """(account, kind, name) for an IAM role/user ARN."""
    m = re.fullmatch(r"arn:aws[a-zA-Z-]*:iam::(\d{12}):(role|user)/(?:[\w+=,.@/-]*/)?([\w+=,.@-]+)", arn or "")
    if not m:
        return None
    return m.group(1), m.group(2), m.group(3)


def _iam_backend(account: str):
    from moto.iam.models import iam_backends

    return iam_backends[account]["aws"]


def _principal_exists(account: str, kind: str, name: str, arn: str) -> bool:
    iam = _iam_backend(account)
    if kind == "role":
        return any(r.name == name and r.arn == arn for r in iam.roles.values())
    return any(u.name == name and u.arn == arn for u in iam.users.values())


def _new_entry(cluster, principal: str, etype: str, groups: list, username: str | None, tags: dict, account: str) -> dict:
    parsed = _parse_principal(principal)
    kind, name = (parsed[1], parsed[2]) if parsed else ("role", principal.rsplit("/", 1)[-1])
    if username is None:
        if etype in ("EC2_LINUX", "EC2_WINDOWS", "EC2", "HYBRID_LINUX", "HYPERPOD_LINUX"):
            username = "system:node:{{EC2PrivateDNSName}}"
        elif etype == "FARGATE_LINUX":
            username = "system:node:{{SessionName}}"
        elif kind == "role":
            username = f"arn:{_partition_of(cluster)}:sts::{account}:assumed-role/{name}/{{{{SessionName}}}}"
        else:
            username = principal
    if etype in ("EC2_LINUX", "EC2_WINDOWS", "HYBRID_LINUX", "HYPERPOD_LINUX", "EC2"):
        groups = ["system:nodes"]
    elif etype == "FARGATE_LINUX":
        groups = ["system:node-proxier", "system:nodes"]
    now = _now()
    return {
        "clusterName": cluster.name,
        "principalArn": principal,
        "kubernetesGroups": list(groups),
        "accessEntryArn": f"arn:{_partition_of(cluster)}:eks:{_region_of(cluster)}:{account}:access-entry/"
        f"{cluster.name}/{kind}/{account}/{name}/{uuid.uuid4()}",
        "createdAt": now,
        "modifiedAt": now,
        "tags": dict(tags or {}),
        "username": username,
        "type": etype,
    }


def _require_api_mode(cluster) -> None:
    mode = getattr(cluster, "access_config", {}).get("authenticationMode", "CONFIG_MAP")
    if mode not in ("API", "API_AND_CONFIG_MAP"):
        raise invalid_request(
            "The cluster's authentication mode must be set to one of [API, API_AND_CONFIG_MAP] to perform this operation.",
            clusterName=cluster.name,
        )


def _entry(state: ClusterExt, principal: str) -> dict:
    entry = state.access_entries.get(principal)
    if entry is None:
        raise not_found(
            "The specified principalArn could not be found. You can view your available access entries with "
            "'list-access-entries'."
        )
    return entry


def create_access_entry(ctx: Ctx) -> dict:
    cluster = ctx.cluster()
    _require_api_mode(cluster)
    b = ctx.body
    principal = b.get("principalArn")
    if not principal:
        raise invalid_param("principalArn is required")
    etype = b.get("type") or "STANDARD"
    if etype not in ACCESS_ENTRY_TYPES:
        raise invalid_param(f"The type {etype} is not supported. Supported types: {', '.join(ACCESS_ENTRY_TYPES)}")
    parsed = _parse_principal(principal)
    if parsed is None or parsed[0] != ctx.account or not _principal_exists(ctx.account, parsed[1], parsed[2], principal):
        raise invalid_param("The specified principalArn is invalid: invalid principal.")
    if "/aws-service-role/" in principal:
        raise invalid_param(
            "The caller is not allowed to modify access entries with a principalArn value of a Service Linked Role"
        )
    groups = b.get("kubernetesGroups") or []
    username = b.get("username")
    if etype in NODE_TYPES:
        if parsed[1] != "role":
            raise invalid_param(f"The principalArn must be an IAM role for access entries of type {etype}.")
        if groups:
            raise invalid_param(f"kubernetesGroups cannot be specified for access entries of type {etype}.")
        if username:
            raise invalid_param(f"username cannot be specified for access entries of type {etype}.")
    for g in groups:
        if g.startswith("system:"):
            raise invalid_param(f"The kubernetes group name {g} is invalid, it cannot start with system:")
    if username and (username.startswith("system:") or username.startswith("eks:") or username.startswith("aws:")):
        raise invalid_param(f"The username {username} is invalid, it cannot start with system:, eks: or aws:")
    state = ext(cluster)
    if principal in state.access_entries:
        raise in_use("The specified access entry resource is already in use on this cluster.", clusterName=cluster.name)
    entry = _new_entry(cluster, principal, etype, groups, username, b.get("tags") or {}, ctx.account)
    state.access_entries[principal] = entry
    return {"accessEntry": entry}


def describe_access_entry(ctx: Ctx) -> dict:
    cluster = ctx.cluster()
    return {"accessEntry": _entry(ext(cluster), ctx.params["principalArn"])}


def list_access_entries(ctx: Ctx) -> dict:
    cluster = ctx.cluster()
    state = ext(cluster)
    arns = sorted(state.access_entries)
    policy = ctx.query.get("associatedPolicyArn")
    if policy:
        arns = [a for a in arns if policy in state.policies.get(a, {})]
    page, token = _page(arns, ctx.query)
    out: dict = {"accessEntries": page}
    if token:
        out["nextToken"] = token
    return out


def update_access_entry(ctx: Ctx) -> dict:
    cluster = ctx.cluster()
    state = ext(cluster)
    entry = _entry(state, ctx.params["principalArn"])
    b = ctx.body
    if entry["type"] != "STANDARD" and ("kubernetesGroups" in b or "username" in b):
        raise invalid_param(f"kubernetesGroups and username cannot be updated for access entries of type {entry['type']}.")
    if "kubernetesGroups" in b:
        entry["kubernetesGroups"] = list(b["kubernetesGroups"] or [])
    if b.get("username"):
        entry["username"] = b["username"]
    entry["modifiedAt"] = _now()
    return {"accessEntry": entry}


def delete_access_entry(ctx: Ctx) -> dict:
    cluster = ctx.cluster()
    state = ext(cluster)
    principal = ctx.params["principalArn"]
    _entry(state, principal)
    del state.access_entries[principal]
    state.policies.pop(principal, None)
    return {}


def associate_access_policy(ctx: Ctx) -> dict:
    cluster = ctx.cluster()
    state = ext(cluster)
    principal = ctx.params["principalArn"]
    entry = _entry(state, principal)
    policy = ctx.body.get("policyArn", "")
    scope = ctx.body.get("accessScope") or {}
    if entry["type"] != "STANDARD":
        raise invalid_param(f"Access policies can't be associated with access entries of type {entry['type']}.")
    if not re.fullmatch(r"arn:aws[a-zA-Z-]*:eks::aws:cluster-access-policy/[A-Za-z0-9]+", policy):
        raise invalid_param(f"The policyArn {policy} is invalid.")
    if scope.get("type") not in ("cluster", "namespace"):
        raise invalid_param("accessScope.type must be one of [cluster, namespace]")
    if scope["type"] == "namespace" and not scope.get("namespaces"):
        raise invalid_param("accessScope.namespaces must be specified when accessScope.type is namespace")
    now = _now()
    existing = state.policies.setdefault(principal, {}).get(policy)
    assoc = {
        "policyArn": policy,
        "accessScope": {"type": scope["type"], "namespaces": list(scope.get("namespaces") or [])},
        "associatedAt": existing["associatedAt"] if existing else now,
        "modifiedAt": now,
    }
    state.policies[principal][policy] = assoc
    return {"clusterName": cluster.name, "principalArn": principal, "associatedAccessPolicy": assoc}


def list_associated_access_policies(ctx: Ctx) -> dict:
    cluster = ctx.cluster()
    state = ext(cluster)
    principal = ctx.params["principalArn"]
    _entry(state, principal)
    items = [state.policies.get(principal, {})[k] for k in sorted(state.policies.get(principal, {}))]
    page, token = _page(items, ctx.query)
    out = {"clusterName": cluster.name, "principalArn": principal, "associatedAccessPolicies": page}
    if token:
        out["nextToken"] = token
    return out


def disassociate_access_policy(ctx: Ctx) -> dict:
    cluster = ctx.cluster()
    state = ext(cluster)
    principal = ctx.params["principalArn"]
    _entry(state, principal)
    if ctx.params.get("policyArn") not in state.policies.get(principal, {}):
        raise not_found(f"The specified policyArn {ctx.params.get('policyArn')} is not associated with the access entry.")
    del state.policies[principal][ctx.params["policyArn"]]
    return {}


# ---------------------------------------------------------------------------------------------- pod identity


def _validate_role_arn(ctx: Ctx, arn: str, field_name: str) -> None:
    parsed = _parse_principal(arn)
    if parsed is None or parsed[1] != "role":
        raise invalid_param(f"The {field_name} {arn} is not a valid IAM role ARN.")
    if parsed[0] == ctx.account and not _principal_exists(ctx.account, "role", parsed[2], arn):
        raise invalid_param(f"The {field_name} {arn} does not exist.")


def _association(state: ClusterExt, cluster, assoc_id: str) -> dict:
    assoc = state.pod_identity.get(assoc_id)
    if assoc is None:
        raise not_found(f"Pod Identity Association {assoc_id} not found on cluster {cluster.name}.", clusterName=cluster.name)
    return assoc


def create_pod_identity_association(ctx: Ctx) -> dict:
    cluster = ctx.cluster()
    b = ctx.body
    for required in ("namespace", "serviceAccount", "roleArn"):
        if not b.get(required):
            raise invalid_param(f"{required} is required")
    _validate_role_arn(ctx, b["roleArn"], "roleArn")
    if b.get("targetRoleArn"):
        _validate_role_arn(ctx, b["targetRoleArn"], "targetRoleArn")
    state = ext(cluster)
    for existing in state.pod_identity.values():
        if existing["namespace"] == b["namespace"] and existing["serviceAccount"] == b["serviceAccount"]:
            raise in_use(f"Association already exists: {existing['associationId']}", clusterName=cluster.name)
    assoc_id = "a-" + uuid.uuid4().hex[:17]
    now = _now()
    assoc = {
        "clusterName": cluster.name,
        "namespace": b["namespace"],
        "serviceAccount": b["serviceAccount"],
        "roleArn": b["roleArn"],
        "associationArn": f"arn:{_partition_of(cluster)}:eks:{ctx.region}:{ctx.account}:podidentityassociation/"
        f"{cluster.name}/{assoc_id}",
        "associationId": assoc_id,
        "tags": dict(b.get("tags") or {}),
        "createdAt": now,
        "modifiedAt": now,
        "disableSessionTags": bool(b.get("disableSessionTags", False)),
    }
    if b.get("targetRoleArn"):
        assoc["targetRoleArn"] = b["targetRoleArn"]
        assoc["externalId"] = str(uuid.uuid4())
    if b.get("policy"):
        assoc["policy"] = b["policy"]
    state.pod_identity[assoc_id] = assoc
    return {"association": assoc}


def describe_pod_identity_association(ctx: Ctx) -> dict:
    cluster = ctx.cluster()
    return {"association": _association(ext(cluster), cluster, ctx.params["associationId"])}


def list_pod_identity_associations(ctx: Ctx) -> dict:
    cluster = ctx.cluster()
    items = sorted(ext(cluster).pod_identity.values(), key=lambda a: a["createdAt"])
    ns, sa = ctx.query.get("namespace"), ctx.query.get("serviceAccount")
    items = [a for a in items if (not ns or a["namespace"] == ns) and (not sa or a["serviceAccount"] == sa)]
    keys = ("clusterName", "namespace", "serviceAccount", "associationArn", "associationId", "ownerArn")
    summaries = [{k: a[k] for k in keys if k in a} for a in items]
    page, token = _page(summaries, ctx.query)
    out: dict = {"associations": page}
    if token:
        out["nextToken"] = token
    return out


def update_pod_identity_association(ctx: Ctx) -> dict:
    cluster = ctx.cluster()
    assoc = _association(ext(cluster), cluster, ctx.params["associationId"])
    b = ctx.body
    if b.get("roleArn"):
        _validate_role_arn(ctx, b["roleArn"], "roleArn")
        assoc["roleArn"] = b["roleArn"]
    if "targetRoleArn" in b:
        if b["targetRoleArn"]:
            _validate_role_arn(ctx, b["targetRoleArn"], "targetRoleArn")
            assoc["targetRoleArn"] = b["targetRoleArn"]
            assoc.setdefault("externalId", str(uuid.uuid4()))
        else:
            assoc.pop("targetRoleArn", None)
            assoc.pop("externalId", None)
    if "disableSessionTags" in b:
        assoc["disableSessionTags"] = bool(b["disableSessionTags"])
    if "policy" in b:
        if b["policy"]:
            assoc["policy"] = b["policy"]
        else:
            assoc.pop("policy", None)
    assoc["modifiedAt"] = _now()
    return {"association": assoc}


def delete_pod_identity_association(ctx: Ctx) -> dict:
    cluster = ctx.cluster()
    state = ext(cluster)
    assoc = _association(state, cluster, ctx.params["associationId"])
    del state.pod_identity[assoc["associationId"]]
    return {"association": assoc}


# ---------------------------------------------------------------------------------------------- add-ons


def seed_addon(cluster, name: str, version: str | None = None) -> dict:
    now = _now()
    addon = {
        "addonName": name,
        "clusterName": cluster.name,
        "status": "ACTIVE",
        "addonVersion": version or addon_versions(cluster.version).get(name, "v1.0.0-eksbuild.1"),
        "health": {"issues": []},
        "addonArn": f"arn:{_partition_of(cluster)}:eks:{_region_of(cluster)}:{_account_of(cluster)}:addon/"
        f"{cluster.name}/{name}/{uuid.uuid4()}",
        "createdAt": now,
        "modifiedAt": now,
        "tags": {},
        "podIdentityAssociations": [],
    }
    ext(cluster).addons[name] = addon
    return addon


def _addon(state: ClusterExt, cluster, name: str) -> dict:
    addon = state.addons.get(name)
    if addon is None:
        raise not_found(f"No addon: {name} found in cluster: {cluster.name}", clusterName=cluster.name, addonName=name)
    return addon


def list_addons(ctx: Ctx) -> dict:
    cluster = ctx.cluster()
    page, token = _page(sorted(ext(cluster).addons), ctx.query)
    out: dict = {"addons": page}
    if token:
        out["nextToken"] = token
    return out


def describe_addon(ctx: Ctx) -> dict:
    cluster = ctx.cluster()
    state = ext(cluster)
    name = ctx.params["addonName"]
    addon = dict(_addon(state, cluster, name))
    _advance(state, ("addon", name))  # render the state first, then let the pending change progress
    return {"addon": addon}


def create_addon(ctx: Ctx) -> dict:
    cluster = ctx.cluster()
    state = ext(cluster)
    name = ctx.body.get("addonName", "")
    catalog = addon_versions(cluster.version)
    if name not in catalog:
        raise invalid_param(f"Addon {name} specified is not supported in {cluster.version} cluster version",
                            clusterName=cluster.name, addonName=name)
    if name in state.addons:
        raise in_use("Addon already exists.", clusterName=cluster.name, addonName=name)
    version = ctx.body.get("addonVersion") or catalog[name]
    if version != catalog[name]:
        raise invalid_param(f"Addon version {version} specified is not supported", clusterName=cluster.name, addonName=name)
    addon = seed_addon(cluster, name, version)
    addon["status"] = "CREATING"
    if ctx.body.get("serviceAccountRoleArn"):
        addon["serviceAccountRoleArn"] = ctx.body["serviceAccountRoleArn"]
    if ctx.body.get("configurationValues"):
        addon["configurationValues"] = ctx.body["configurationValues"]
    addon["tags"] = dict(ctx.body.get("tags") or {})

    def done():
        addon["status"] = "ACTIVE"
        addon["modifiedAt"] = _now()

    _start(state, ("addon", name), done)
    return {"addon": dict(addon)}


def delete_addon(ctx: Ctx) -> dict:
    cluster = ctx.cluster()
    state = ext(cluster)
    name = ctx.params["addonName"]
    addon = _addon(state, cluster, name)
    if addon["status"] == "DELETING":
        raise in_use(f"Addon {name} is already being deleted", clusterName=cluster.name, addonName=name)
    addon["status"] = "DELETING"

    def done():
        state.addons.pop(name, None)

    _start(state, ("addon", name), done)
    return {"addon": dict(addon)}


def describe_addon_versions(ctx: Ctx) -> dict:
    k8s = ctx.query.get("kubernetesVersion")
    name = ctx.query.get("addonName")
    versions = addon_versions(k8s or "1.31")
    out = []
    for addon, version in sorted(versions.items()):
        if name and addon != name:
            continue
        out.append(
            {
                "addonName": addon,
                "type": "networking" if addon in ("vpc-cni", "kube-proxy", "coredns") else "security" if addon == "eks-pod-identity-agent" else "storage",
                "addonVersions": [
                    {
                        "addonVersion": version,
                        "architecture": ["amd64", "arm64"],
                        "compatibilities": [
                            {"clusterVersion": k8s or "1.31", "platformVersions": ["*"], "defaultVersion": True}
                        ],
                        "requiresConfiguration": False,
                        "requiresIamPermissions": addon in ("vpc-cni", "aws-ebs-csi-driver"),
                    }
                ],
                "publisher": "eks",
                "owner": "aws",
            }
        )
    return {"addons": out}


# ---------------------------------------------------------------------------------------------- updates


def describe_update(ctx: Ctx) -> dict:
    cluster = ctx.cluster()
    state = ext(cluster)
    uid = ctx.params.get("updateId", "")
    found = state.updates.get(uid)
    if ctx.query.get("nodegroupName"):
        want = ("nodegroup", ctx.query["nodegroupName"])
    elif ctx.query.get("addonName"):
        want = ("addon", ctx.query["addonName"])
    else:
        want = ("cluster", cluster.name)
    if found is None or found[0] != want:
        raise not_found(f"No update found for ID: {uid}", clusterName=cluster.name)
    update = dict(found[1])
    _advance(state, want)
    return {"update": update}


def list_updates(ctx: Ctx) -> dict:
    cluster = ctx.cluster()
    state = ext(cluster)
    if ctx.query.get("nodegroupName"):
        ctx.params["nodegroupName"] = ctx.query["nodegroupName"]
        ctx.nodegroup(cluster)
        want = ("nodegroup", ctx.query["nodegroupName"])
    elif ctx.query.get("addonName"):
        _addon(state, cluster, ctx.query["addonName"])
        want = ("addon", ctx.query["addonName"])
    else:
        want = ("cluster", cluster.name)
    ids = [uid for uid, (scope, _u) in state.updates.items() if scope == want]
    page, token = _page(ids, ctx.query)
    out: dict = {"updateIds": page}
    if token:
        out["nextToken"] = token
    return out


def update_nodegroup_config(ctx: Ctx) -> dict:
    cluster = ctx.cluster()
    ng = ctx.nodegroup(cluster)
    state = ext(cluster)
    b = ctx.body
    if ng.status != "ACTIVE":
        raise in_use("Nodegroup cannot be updated as it is currently not in Active State",
                     clusterName=cluster.name, nodegroupName=ng.nodegroup_name)
    changes = [k for k in ("scalingConfig", "labels", "taints", "updateConfig", "nodeRepairConfig") if b.get(k)]
    if not changes:
        raise invalid_param("No changes needed", clusterName=cluster.name, nodegroupName=ng.nodegroup_name)
    params = []
    scaling = None
    if b.get("scalingConfig"):
        scaling = dict(ng.scaling_config)
        scaling.update({k: v for k, v in b["scalingConfig"].items() if v is not None})
        lo, want, hi = scaling.get("minSize", 0), scaling.get("desiredSize", 0), scaling.get("maxSize", 1)
        if lo < 0 or want < 0:
            raise invalid_param("Minimum and desired size must be greater than or equal to 0",
                                clusterName=cluster.name, nodegroupName=ng.nodegroup_name)
        if hi < 1:
            raise invalid_param("Maximum size must be greater than or equal to 1",
                                clusterName=cluster.name, nodegroupName=ng.nodegroup_name)
        if lo > hi:
            raise invalid_param(f"Minimum capacity {lo} can't be greater than max size {hi}",
                                clusterName=cluster.name, nodegroupName=ng.nodegroup_name)
        if want > hi:
            raise invalid_param(f"Desired capacity:{want} can't be greater than max size {hi}",
                                clusterName=cluster.name, nodegroupName=ng.nodegroup_name)
        if want < lo:
            raise invalid_param(f"Minimum capacity {lo} can't be greater than desired size {want}",
                                clusterName=cluster.name, nodegroupName=ng.nodegroup_name)
        for key, ptype in (("desiredSize", "DesiredSize"), ("minSize", "MinSize"), ("maxSize", "MaxSize")):
            if key in b["scalingConfig"]:
                params.append({"type": ptype, "value": str(b["scalingConfig"][key])})
    labels, taints = b.get("labels"), b.get("taints")
    if labels:
        if labels.get("addOrUpdateLabels"):
            params.append({"type": "LabelsToAdd", "value": json.dumps(labels["addOrUpdateLabels"])})
        if labels.get("removeLabels"):
            params.append({"type": "LabelsToRemove", "value": json.dumps(labels["removeLabels"])})
    if taints:
        if taints.get("addOrUpdateTaints"):
            params.append({"type": "TaintsToAdd", "value": json.dumps(taints["addOrUpdateTaints"])})
        if taints.get("removeTaints"):
            params.append({"type": "TaintsToRemove", "value": json.dumps(taints["removeTaints"])})
    if b.get("updateConfig"):
        for key, ptype in (("maxUnavailable", "MaxUnavailable"), ("maxUnavailablePercentage", "MaxUnavailablePercentage")):
            if key in b["updateConfig"]:
                params.append({"type": ptype, "value": str(b["updateConfig"][key])})
    ctx.backend.update_nodegroup_config(
        cluster.name,
        ng.nodegroup_name,
        labels=labels,
        taints=taints,
        scaling_config=scaling,
        update_config=b.get("updateConfig"),
        node_repair_config=b.get("nodeRepairConfig"),
    )
    ng.status = "UPDATING"
    update = _new_update("ConfigUpdate", params)

    def done():
        ng.status = "ACTIVE"
        from moto.core.utils import utcnow

        ng.modified_at = utcnow()
        sync_nodegroup_instances(cluster, ng)

    _start(state, ("nodegroup", ng.nodegroup_name), done, update)
    return {"update": dict(update)}


def _after_describe_nodegroup(ctx: Ctx) -> None:
    cluster = ctx.cluster()
    _advance(ext(cluster), ("nodegroup", ctx.params.get("nodegroupName", "")))


def _after_describe_cluster(ctx: Ctx) -> None:
    cluster = ctx.cluster()
    _advance(ext(cluster), ("cluster", cluster.name))


def update_cluster_config(ctx: Ctx) -> dict:
    cluster = ctx.cluster()
    state = ext(cluster)
    b = ctx.body
    if cluster.status != "ACTIVE":
        raise in_use("Cluster has an update in progress", clusterName=cluster.name)
    kinds = [k for k in ("accessConfig", "resourcesVpcConfig", "logging", "upgradePolicy", "kubernetesNetworkConfig",
                         "zonalShiftConfig", "computeConfig", "storageConfig", "remoteNetworkConfig") if b.get(k)]
    if not kinds:
        raise invalid_param("No changes needed", clusterName=cluster.name)
    if len(kinds) > 1:
        raise invalid_param("Only one type of update can be allowed.", clusterName=cluster.name)
    kind = kinds[0]
    if kind == "accessConfig":
        current = cluster.access_config["authenticationMode"]
        wanted = b["accessConfig"].get("authenticationMode")
        if wanted not in AUTH_MODES:
            raise invalid_param(f"Unsupported authentication mode {wanted}", clusterName=cluster.name)
        if AUTH_MODES.index(wanted) <= AUTH_MODES.index(current):
            raise invalid_param(f"Unsupported authentication mode update from {current} to {wanted}",
                                clusterName=cluster.name)
        update = _new_update("AccessConfigUpdate", [{"type": "AuthenticationMode", "value": wanted}])

        def done():
            cluster.access_config["authenticationMode"] = wanted
            cluster.status = "ACTIVE"
    elif kind == "resourcesVpcConfig":
        req = b["resourcesVpcConfig"]
        merged = dict(cluster.resources_vpc_config)
        merged.update(req)
        endpoint_keys = {"endpointPublicAccess", "endpointPrivateAccess", "publicAccessCidrs"}
        utype = "EndpointAccessUpdate" if set(req) <= endpoint_keys else "VpcConfigUpdate"
        names = {"endpointPublicAccess": "EndpointPublicAccess", "endpointPrivateAccess": "EndpointPrivateAccess",
                 "publicAccessCidrs": "PublicAccessCidrs", "subnetIds": "Subnets", "securityGroupIds": "SecurityGroups"}
        params = [{"type": names[k], "value": json.dumps(v) if isinstance(v, list) else str(v).lower() if isinstance(v, bool) else str(v)}
                  for k, v in req.items() if k in names]
        update = _new_update(utype, params)

        def done():
            cluster.resources_vpc_config = merged
            cluster.status = "ACTIVE"
    else:
        value = b[kind]
        utype = {"logging": "LoggingUpdate", "upgradePolicy": "UpgradePolicyUpdate",
                 "zonalShiftConfig": "ZonalShiftConfigUpdate", "kubernetesNetworkConfig": "AutoModeUpdate",
                 "computeConfig": "AutoModeUpdate", "storageConfig": "AutoModeUpdate",
                 "remoteNetworkConfig": "RemoteNetworkConfigUpdate"}[kind]
        ptype = {"logging": "ClusterLogging", "upgradePolicy": "UpgradePolicy", "zonalShiftConfig": "ZonalShiftConfig",
                 "kubernetesNetworkConfig": "KubernetesNetworkConfig", "computeConfig": "ComputeConfig",
                 "storageConfig": "StorageConfig", "remoteNetworkConfig": "RemoteNetworkConfig"}[kind]
        update = _new_update(utype, [{"type": ptype, "value": json.dumps(value)}])
        attr = re.sub(r"(?<!^)(?=[A-Z])", "_", kind).lower()

        def done():
            if kind == "kubernetesNetworkConfig":
                merged_net = dict(cluster.kubernetes_network_config or {})
                merged_net.update(value)
                cluster.kubernetes_network_config = merged_net
            else:
                setattr(cluster, attr, value)
            cluster.status = "ACTIVE"

    cluster.status = "UPDATING"
    _start(state, ("cluster", cluster.name), done, update)
    return {"update": dict(update)}


def update_cluster_version(ctx: Ctx) -> dict:
    cluster = ctx.cluster()
    state = ext(cluster)
    if cluster.status != "ACTIVE":
        raise in_use("Cluster has an update in progress", clusterName=cluster.name)
    wanted = str(ctx.body.get("version", ""))
    try:
        cur_major, cur_minor = (int(x) for x in cluster.version.split("."))
        new_major, new_minor = (int(x) for x in wanted.split("."))
    except ValueError:
        raise invalid_param(f"Unsupported Kubernetes minor version update from {cluster.version} to {wanted}",
                            clusterName=cluster.name)
    if (new_major, new_minor) != (cur_major, cur_minor + 1):
        raise invalid_param(f"Unsupported Kubernetes minor version update from {cluster.version} to {wanted}",
                            clusterName=cluster.name)
    update = _new_update("VersionUpdate", [{"type": "Version", "value": wanted}, {"type": "PlatformVersion", "value": "eks.1"}])
    cluster.status = "UPDATING"

    def done():
        cluster.version = wanted
        cluster.platformVersion = "eks.1"
        cluster.status = "ACTIVE"
        if CONFIG.on_version_change:
            CONFIG.on_version_change(ctx.account, ctx.region, wanted)

    _start(state, ("cluster", cluster.name), done, update)
    return {"update": dict(update)}


_HANDLERS: dict[str, Callable[[Ctx], dict]] = {
    "CreateAccessEntry": create_access_entry,
    "DescribeAccessEntry": describe_access_entry,
    "ListAccessEntries": list_access_entries,
    "UpdateAccessEntry": update_access_entry,
    "DeleteAccessEntry": delete_access_entry,
    "AssociateAccessPolicy": associate_access_policy,
    "ListAssociatedAccessPolicies": list_associated_access_policies,
    "DisassociateAccessPolicy": disassociate_access_policy,
    "CreatePodIdentityAssociation": create_pod_identity_association,
    "DescribePodIdentityAssociation": describe_pod_identity_association,
    "ListPodIdentityAssociations": list_pod_identity_associations,
    "UpdatePodIdentityAssociation": update_pod_identity_association,
    "DeletePodIdentityAssociation": delete_pod_identity_association,
    "ListAddons": list_addons,
    "DescribeAddon": describe_addon,
    "CreateAddon": create_addon,
    "DeleteAddon": delete_addon,
    "DescribeAddonVersions": describe_addon_versions,
    "DescribeUpdate": describe_update,
    "ListUpdates": list_updates,
    "UpdateNodegroupConfig": update_nodegroup_config,
    "UpdateClusterConfig": update_cluster_config,
    "UpdateClusterVersion": update_cluster_version,
}

_AFTER_HOOKS: dict[str, Callable[[Ctx], None]] = {
    "DescribeNodegroup": _after_describe_nodegroup,
    "DescribeCluster": _after_describe_cluster,
}
