"""Seed moto with an account that looks like a real one with an EKS cluster in it.

Everything with a public API is created through boto3 clients wired to the moto dispatcher in-process
(``tbaws.loopback``), so moto's own validation applies. Two things cannot go through the API: public SSM parameters
under ``/aws/`` (PutParameter refuses that prefix) and Amazon-owned AMIs (RegisterImage cannot set the owner), so those
are written into moto's backends directly.

Seeding is deterministic: moto's id generator is seeded first, so a reset with the same options reproduces the same ids.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import re
from dataclasses import asdict, dataclass

from . import eks_ext

ACCOUNT_ID = "123456789012"
CALLER_USER = "testbed-admin"
EKS_AMI_OWNER = "602401143452"
BOTTLEROCKET_AMI_OWNER = "092701018921"
RANDOM_SEED = 20250915
MOTO_FALLBACK_KEY = "AKIAEXAMPLE"  # what moto's BaseResponse.get_access_key() returns for keys like "testing"

# Two AL2023 / AL2 releases are published per Kubernetes minor; the newest is "recommended".
AMI_RELEASES = ("v20250820", "v20250915")
BOTTLEROCKET_RELEASES = ("1.45.0-0f6e6d1c", "1.46.0-431fe75a")
K8S_PATCH = {"1.28": 15, "1.29": 15, "1.30": 14, "1.31": 13, "1.32": 9, "1.33": 5, "1.34": 1, "1.35": 0}
AL2023_VARIANTS = {"x86_64": ("standard", "nvidia", "neuron"), "arm64": ("standard", "nvidia")}
AL2_FLAVOURS = {  # path component -> (AMI name prefix, architecture)
    "amazon-linux-2": ("amazon-eks-node", "x86_64"),
    "amazon-linux-2-arm64": ("amazon-eks-arm64-node", "arm64"),
    "amazon-linux-2-gpu": ("amazon-eks-gpu-node", "x86_64"),
}
AZ_SUFFIXES = ("a", "b", "c")
SUBNET_CIDRS = ("10.0.0.0/19", "10.0.32.0/19", "10.0.64.0/19")


@dataclass
class SeedOptions:
    cluster: str = "karpctl-sandbox"
    region: str = "us-west-2"
    k8s_version: str = "1.31"
    auth_mode: str = "API_AND_CONFIG_MAP"
    pod_identity_agent: bool = True
    cluster_endpoint: str | None = None
    cluster_ca_data: str | None = None  # base64 PEM, as DescribeCluster returns it

    def validate(self) -> None:
        try:
            major, minor = (int(x) for x in self.k8s_version.split("."))
        except ValueError:
            raise ValueError(f"--k8s-version must look like 1.31, got {self.k8s_version!r}")
        if major != 1 or not 23 <= minor <= 40:
            raise ValueError(f"--k8s-version {self.k8s_version} is outside the range the testbed seeds (1.23-1.40)")
        if self.auth_mode not in eks_ext.AUTH_MODES:
            raise ValueError(f"--auth-mode must be one of {', '.join(eks_ext.AUTH_MODES)}")

    def to_json(self) -> dict:
        return asdict(self)


def previous_minor(version: str) -> str:
    major, minor = (int(x) for x in version.split("."))
    return f"{major}.{minor - 1}"


def _minor(version: str) -> int:
    return int(version.split(".")[1])


def _digest(*parts: str) -> str:
    return hashlib.sha256("/".join(parts).encode()).hexdigest()


def ami_id_for(name: str) -> str:
    return "ami-" + _digest("ami", name)[:17]


def release_version(k8s: str, release: str) -> str:
    return f"{k8s}.{K8S_PATCH.get(k8s, 0)}-{release.lstrip('v')}"


def _date_of(release: str) -> dt.datetime:
    return dt.datetime.strptime(release.lstrip("v"), "%Y%m%d").replace(tzinfo=dt.timezone.utc)


# ---------------------------------------------------------------------------------------------- CA / identity


def make_ca_data(cluster: str, region: str) -> str:
    """A syntactically valid, deterministic self-signed CA (Ed25519, CN=kubernetes), base64-encoded PEM."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519
    from cryptography.x509.oid import NameOID

    key = ed25519.Ed25519PrivateKey.from_private_bytes(hashlib.sha256(f"ca/{cluster}/{region}".encode()).digest())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kubernetes")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(int(_digest("serial", cluster)[:15], 16))
        .not_valid_before(dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc))
        .not_valid_after(dt.datetime(2035, 1, 1, tzinfo=dt.timezone.utc))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, None)
    )
    return base64.b64encode(cert.public_bytes(serialization.Encoding.PEM)).decode()


# ---------------------------------------------------------------------------------------------- AMIs + SSM


class PublicCatalog:
    """Creates Amazon-owned AMIs in moto's EC2 backend and the public SSM parameters pointing at them."""

    def __init__(self, account: str, region: str):
        from moto.ec2.models import ec2_backends
        from moto.ssm.models import ssm_backends

        self.region = region
        self.account = account
        self.ec2 = ec2_backends[account][region]
        self.ssm = ssm_backends[account][region]
        self.params: dict[str, str] = {}
        self.amis: dict[str, str] = {}  # AMI name -> id

    def ami(self, name: str, arch: str, description: str, owner: str, created: dt.datetime) -> str:
        from moto.ec2.models.amis import Ami

        ami_id = ami_id_for(name)
        if ami_id not in self.ec2.amis:
            self.ec2.amis[ami_id] = Ami(
                self.ec2,
                ami_id,
                name=name,
                description=description,
                owner_id=owner,
                owner_alias="amazon",
                public=True,
                virtualization_type="hvm",
                architecture=arch,
                creation_date=created,
                hypervisor="xen",
                root_device_type="ebs",
                root_device_name="/dev/xvda",
                sriov="simple",
                region_name=self.region,
                boot_mode="uefi-preferred",
            )
            self.ec2.amis[ami_id].ena_support = True
        self.amis[name] = ami_id
        return ami_id

    def recommended(self, prefix: str, name: str, k8s: str, release: str, schema_version: str) -> tuple:
        """The `<prefix>/recommended` parameters (and their JSON parent) for AMI `name`."""
        ami, rel, when = self.amis[name], release_version(k8s, release), _date_of(release)
        self.param(f"{prefix}/recommended/image_id", ami, when)
        self.param(f"{prefix}/recommended/image_name", name, when)
        self.param(f"{prefix}/recommended/release_version", rel, when)
        doc = {"schema_version": schema_version, "image_id": ami, "image_name": name, "release_version": rel}
        self.param(f"{prefix}/recommended", json.dumps(doc, separators=(",", ":")), when)
        return ami, rel

    def param(self, name: str, value: str, when: dt.datetime) -> None:
        from moto.ssm.models import Parameter

        self.ssm._parameters[name] = [
            Parameter(
                account_id=self.account,
                name=name,
                value=value,
                parameter_type="String",
                description=None,
                allowed_pattern=None,
                keyid=None,
                last_modified_date=when,
                version=1,
                data_type="text",
            )
        ]
        self.params[name] = value

    def seed_version(self, k8s: str, releases: tuple = AMI_RELEASES, bottlerocket: tuple = BOTTLEROCKET_RELEASES) -> dict:
        """All public AMI parameters karpctl reads for one Kubernetes minor. Returns {"al2023": {...}, ...}.
        `releases` (AL2023/AL2, dated) and `bottlerocket` pair up by position; the last of each is the newest."""
        summary: dict = {"al2023": {}, "bottlerocket": {}, "al2": {}}
        base = f"/aws/service/eks/optimized-ami/{k8s}"
        # Amazon Linux 2023
        for arch, variants in AL2023_VARIANTS.items():
            for variant in variants:
                prefix = f"{base}/amazon-linux-2023/{arch}/{variant}"
                for release in releases:
                    name = f"amazon-eks-node-al2023-{arch}-{variant}-{k8s}-{release}"
                    ami = self.ami(
                        name,
                        arch,
                        f"EKS-optimized Kubernetes node based on Amazon Linux 2023, (k8s: {k8s}, variant: {variant})",
                        EKS_AMI_OWNER,
                        _date_of(release),
                    )
                    self.param(f"{prefix}/{name}/image_id", ami, _date_of(release))
                release = releases[-1]
                name = f"amazon-eks-node-al2023-{arch}-{variant}-{k8s}-{release}"
                ami, rel = self.recommended(prefix, name, k8s, release, schema_version="3")
                summary["al2023"][f"{arch}/{variant}"] = {
                    "recommended": ami,
                    "recommended_name": name,
                    "release_version": rel,
                    "pinned": {r: self.amis[f"amazon-eks-node-al2023-{arch}-{variant}-{k8s}-{r}"] for r in releases},
                }
        # Bottlerocket
        for flavour in ("", "-nvidia"):
            for arch in ("x86_64", "arm64"):
                prefix = f"/aws/service/bottlerocket/aws-k8s-{k8s}{flavour}/{arch}"
                for version in bottlerocket:
                    semver = version.split("-")[0]
                    name = f"bottlerocket-aws-k8s-{k8s}{flavour}-{arch}-v{version}"
                    when = _date_of(releases[bottlerocket.index(version)])
                    ami = self.ami(
                        name,
                        arch,
                        f"bottlerocket-aws-k8s-{k8s}{flavour}-{arch}-v{version}",
                        BOTTLEROCKET_AMI_OWNER,
                        when,
                    )
                    self.param(f"{prefix}/{semver}/image_id", ami, when)
                    self.param(f"{prefix}/{semver}/image_version", version, when)
                latest = bottlerocket[-1]
                name = f"bottlerocket-aws-k8s-{k8s}{flavour}-{arch}-v{latest}"
                when = _date_of(releases[-1])
                self.param(f"{prefix}/latest/image_id", self.amis[name], when)
                self.param(f"{prefix}/latest/image_version", latest, when)
                summary["bottlerocket"][f"aws-k8s-{k8s}{flavour}/{arch}"] = {
                    "latest": self.amis[name],
                    "latest_version": latest,
                    "pinned": {v.split("-")[0]: self.amis[f"bottlerocket-aws-k8s-{k8s}{flavour}-{arch}-v{v}"]
                               for v in bottlerocket},
                }
        # Amazon Linux 2: EKS published AL2 AMIs up to Kubernetes 1.32 only
        if _minor(k8s) <= 32:
            for path, (prefix_name, arch) in AL2_FLAVOURS.items():
                prefix = f"{base}/{path}"
                for release in releases:
                    name = f"{prefix_name}-{k8s}-{release}"
                    ami = self.ami(name, arch, f"EKS Kubernetes Worker AMI with AmazonLinux2 image, (k8s: {k8s})",
                                   EKS_AMI_OWNER, _date_of(release))
                    self.param(f"{prefix}/{name}/image_id", ami, _date_of(release))
                release = releases[-1]
                name = f"{prefix_name}-{k8s}-{release}"
                ami, rel = self.recommended(prefix, name, k8s, release, schema_version="2")
                summary["al2"][path] = {"recommended": ami, "recommended_name": name, "release_version": rel}
        return summary


def publish_release(account: str, region: str, k8s: str, release: str, bottlerocket: str) -> dict:
    """A new AMI release for one Kubernetes minor, as AWS publishes it: new AL2023/AL2 and Bottlerocket AMIs, and the
    `recommended`/`latest` parameters moved to them (older releases stay). Returns the parameters written."""
    if not re.fullmatch(r"1\.\d+", k8s) or not re.fullmatch(r"v\d{8}", release) or not re.fullmatch(r"\d+\.\d+\.\d+-[0-9a-f]{8}", bottlerocket):
        raise ValueError("want kubernetesVersion like 1.31, release like v20251001, bottlerocket like 1.47.0-0a1b2c3d")
    _date_of(release)  # a real date
    catalog = PublicCatalog(account, region)
    catalog.seed_version(k8s, AMI_RELEASES + (release,), BOTTLEROCKET_RELEASES + (bottlerocket,))
    return catalog.params


# ---------------------------------------------------------------------------------------------- the account


def _trust(service: str) -> str:
    return json.dumps(
        {"Version": "2012-10-17",
         "Statement": [{"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}]}
    )


def seed(loopback, opts: SeedOptions) -> dict:
    """Create the account. Returns the identifiers that go into the handle file."""
    from moto.iam.models import iam_backends
    from moto.moto_api._internal import mock_random

    opts.validate()
    mock_random.seed(RANDOM_SEED)
    region, cluster_name, k8s = opts.region, opts.cluster, opts.k8s_version
    iam = loopback.client("iam", region)
    ec2 = loopback.client("ec2", region)
    eks = loopback.client("eks", region)

    # --- the caller: an IAM user that owns the access key clients use, so STS GetCallerIdentity (and the EKS cluster
    # creator) name a real principal. moto only parses 20-character key ids out of the SigV4 header and reports any
    # other key (such as "testing") as MOTO_FALLBACK_KEY, so that is the id this user's key gets.
    iam.create_user(UserName=CALLER_USER)
    iam_backend = iam_backends[ACCOUNT_ID]["aws"]
    user = iam_backend.get_user(CALLER_USER)
    user.id = "AIDA" + _digest("user", CALLER_USER)[:17].upper()
    key = iam_backend.create_access_key(CALLER_USER)
    iam_backend.access_keys.pop(key.physical_resource_id, None)
    key.access_key_id = MOTO_FALLBACK_KEY
    key.secret_access_key = "testing"
    iam_backend.access_keys[key.physical_resource_id] = key
    caller_arn = user.arn

    # --- IAM roles that exist before karpctl runs
    cluster_role = iam.create_role(RoleName=f"{cluster_name}-cluster-role", AssumeRolePolicyDocument=_trust("eks.amazonaws.com"))["Role"]
    iam.attach_role_policy(RoleName=cluster_role["RoleName"], PolicyArn="arn:aws:iam::aws:policy/AmazonEKSClusterPolicy")
    node_role = iam.create_role(RoleName=f"{cluster_name}-system-node-role", AssumeRolePolicyDocument=_trust("ec2.amazonaws.com"))["Role"]
    for policy in ("AmazonEKSWorkerNodePolicy", "AmazonEKS_CNI_Policy", "AmazonEC2ContainerRegistryPullOnly"):
        iam.attach_role_policy(RoleName=node_role["RoleName"], PolicyArn=f"arn:aws:iam::aws:policy/{policy}")

    # --- network: one VPC, three private subnets, the cluster security groups
    vpc_id = ec2.create_vpc(
        CidrBlock="10.0.0.0/16",
        TagSpecifications=[{"ResourceType": "vpc", "Tags": [{"Key": "Name", "Value": f"{cluster_name}-vpc"}]}],
    )["Vpc"]["VpcId"]
    ec2.modify_vpc_attribute(VpcId=vpc_id, EnableDnsHostnames={"Value": True})
    subnets: dict[str, str] = {}
    for suffix, cidr in zip(AZ_SUFFIXES, SUBNET_CIDRS):
        az = f"{region}{suffix}"
        subnets[az] = ec2.create_subnet(
            VpcId=vpc_id,
            CidrBlock=cidr,
            AvailabilityZone=az,
            TagSpecifications=[{
                "ResourceType": "subnet",
                "Tags": [
                    {"Key": "Name", "Value": f"{cluster_name}-private-{az}"},
                    {"Key": "kubernetes.io/role/internal-elb", "Value": "1"},
                    {"Key": f"kubernetes.io/cluster/{cluster_name}", "Value": "shared"},
                ],
            }],
        )["Subnet"]["SubnetId"]
    cluster_sg_name = f"eks-cluster-sg-{cluster_name}-{_digest('sg', cluster_name)[:10]}"
    cluster_sg = ec2.create_security_group(
        GroupName=cluster_sg_name,
        Description="EKS created security group applied to ENI that is attached to EKS Control Plane master nodes, "
        "as well as any managed workloads.",
        VpcId=vpc_id,
        TagSpecifications=[{
            "ResourceType": "security-group",
            "Tags": [
                {"Key": "Name", "Value": cluster_sg_name},
                {"Key": f"kubernetes.io/cluster/{cluster_name}", "Value": "owned"},
                {"Key": "eks:cluster-name", "Value": cluster_name},
            ],
        }],
    )["GroupId"]
    ec2.authorize_security_group_ingress(
        GroupId=cluster_sg, IpPermissions=[{"IpProtocol": "-1", "UserIdGroupPairs": [{"GroupId": cluster_sg}]}]
    )
    control_plane_sg = ec2.create_security_group(
        GroupName=f"{cluster_name}-control-plane",
        Description="Communication between the control plane and worker nodegroups",
        VpcId=vpc_id,
        TagSpecifications=[{"ResourceType": "security-group",
                            "Tags": [{"Key": "Name", "Value": f"{cluster_name}-control-plane"}]}],
    )["GroupId"]

    # --- public AMIs and SSM parameters for this Kubernetes minor and the previous one
    catalog = PublicCatalog(ACCOUNT_ID, region)
    versions = [previous_minor(k8s), k8s]
    ami_summary = {v: catalog.seed_version(v) for v in versions}
    for v in versions:
        eks_ext.CONFIG.node_amis[v] = ami_summary[v]["al2023"]["x86_64/standard"]["recommended"]
        eks_ext.CONFIG.release_versions[v] = ami_summary[v]["al2023"]["x86_64/standard"]["release_version"]

    def on_version_change(account: str, rgn: str, new_version: str) -> None:
        # After UpdateClusterVersion completes, the public parameters for the new minor exist as well (as in AWS).
        extra = PublicCatalog(account, rgn).seed_version(new_version)
        eks_ext.CONFIG.node_amis[new_version] = extra["al2023"]["x86_64/standard"]["recommended"]
        eks_ext.CONFIG.release_versions[new_version] = extra["al2023"]["x86_64/standard"]["release_version"]

    eks_ext.CONFIG.on_version_change = on_version_change

    # --- the EKS cluster
    eks.create_cluster(
        name=cluster_name,
        version=k8s,
        roleArn=cluster_role["Arn"],
        resourcesVpcConfig={
            "subnetIds": list(subnets.values()),
            "securityGroupIds": [control_plane_sg],
            "endpointPublicAccess": True,
            "endpointPrivateAccess": True,
        },
        kubernetesNetworkConfig={"serviceIpv4Cidr": "172.20.0.0/16", "ipFamily": "ipv4"},
        accessConfig={"authenticationMode": opts.auth_mode, "bootstrapClusterCreatorAdminPermissions": True},
        tags={"karpctl.testbed/seeded": "true"},
    )
    from moto.eks.models import eks_backends

    cluster = eks_backends[ACCOUNT_ID][region].clusters[cluster_name]
    oidc_id = _digest("oidc", cluster_name, region)[:32].upper()
    cluster.identity = {"oidc": {"issuer": f"https://oidc.eks.{region}.amazonaws.com/id/{oidc_id}"}}
    cluster.endpoint = opts.cluster_endpoint or (
        f"https://{_digest('endpoint', cluster_name, region)[:32].upper()}.gr7.{region}.eks.amazonaws.com"
    )
    cluster.certificate_authority = {"data": opts.cluster_ca_data or make_ca_data(cluster_name, region)}
    cluster.platformVersion = "eks.20"
    cluster.resources_vpc_config = {
        "subnetIds": list(subnets.values()),
        "securityGroupIds": [control_plane_sg],
        "clusterSecurityGroupId": cluster_sg,
        "vpcId": vpc_id,
        "endpointPublicAccess": True,
        "endpointPrivateAccess": True,
        "publicAccessCidrs": ["0.0.0.0/0"],
    }
    cluster.kubernetes_network_config = {"serviceIpv4Cidr": "172.20.0.0/16", "ipFamily": "ipv4",
                                         "elasticLoadBalancing": {"enabled": False}}

    # --- managed node group "system" (for migrate/rollback tests) and its instances
    nodegroup = eks.create_nodegroup(
        clusterName=cluster_name,
        nodegroupName="system",
        nodeRole=node_role["Arn"],
        subnets=list(subnets.values()),
        scalingConfig={"minSize": 1, "desiredSize": 2, "maxSize": 3},
        instanceTypes=["m5.large"],
        amiType="AL2023_x86_64_STANDARD",
        capacityType="ON_DEMAND",
        labels={"karpctl.testbed/pool": "system"},
        tags={"karpctl.testbed/seeded": "true"},
    )["nodegroup"]

    # --- add-ons
    for addon in ("vpc-cni", "kube-proxy", "coredns") + (("eks-pod-identity-agent",) if opts.pod_identity_agent else ()):
        eks_ext.seed_addon(cluster, addon)

    instances = [
        i["InstanceId"]
        for r in ec2.describe_instances(Filters=[{"Name": "tag:eks:nodegroup-name", "Values": ["system"]}])["Reservations"]
        for i in r["Instances"]
    ]
    return {
        "account_id": ACCOUNT_ID,
        "caller_arn": caller_arn,
        "vpc_id": vpc_id,
        "subnet_ids": list(subnets.values()),
        "subnets_by_az": subnets,
        "cluster_security_group_id": cluster_sg,
        "control_plane_security_group_id": control_plane_sg,
        "cluster": {
            "name": cluster_name,
            "arn": cluster.arn,
            "version": k8s,
            "endpoint": cluster.endpoint,
            "oidc_issuer": cluster.identity["oidc"]["issuer"],
            "certificate_authority_data": cluster.certificate_authority["data"],
            "service_ipv4_cidr": "172.20.0.0/16",
            "authentication_mode": opts.auth_mode,
            "role_arn": cluster_role["Arn"],
        },
        "nodegroup": {
            "name": "system",
            "arn": nodegroup["nodegroupArn"],
            "node_role_arn": node_role["Arn"],
            "scaling": {"minSize": 1, "desiredSize": 2, "maxSize": 3},
            "instance_ids": sorted(instances),
        },
        "addons": sorted(eks_ext.ext(cluster).addons),
        "k8s_versions_seeded": versions,
        "amis": ami_summary,
        "ssm_parameters": catalog.params,
    }
