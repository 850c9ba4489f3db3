"""Smoke tests for the karpctl AWS emulator (run: scripts/testbed-aws.sh test)."""

from __future__ import annotations

import base64
import json
import re
import threading

import pytest
from botocore.exceptions import ClientError, WaiterError

CLUSTER = "karpctl-sandbox"
ACCOUNT = "123456789012"


def err(exc_info) -> tuple[int, str]:
    resp = exc_info.value.response
    return resp["ResponseMetadata"]["HTTPStatusCode"], resp["Error"]["Code"]


def trust(service: str) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"Service": service}, "Action": ["sts:AssumeRole", "sts:TagSession"]}]})


# ------------------------------------------------------------------------------------------------- handle & cluster


def test_handle_describes_the_running_emulator(testbed):
    h = testbed.handle
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", h["endpoint"])
    assert h["port"] == int(h["endpoint"].rsplit(":", 1)[1])
    assert h["pid"] == testbed.proc.pid
    assert h["region"] == "us-west-2"
    assert h["env"] == {
        "AWS_ENDPOINT_URL": h["endpoint"], "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-west-2", "AWS_DEFAULT_REGION": "us-west-2",
    }
    seed = h["seed"]
    assert seed["vpc_id"].startswith("vpc-")
    assert sorted(seed["subnets_by_az"]) == ["us-west-2a", "us-west-2b", "us-west-2c"]
    assert seed["cluster_security_group_id"].startswith("sg-")
    assert seed["nodegroup"]["name"] == "system" and len(seed["nodegroup"]["instance_ids"]) == 2
    assert seed["k8s_versions_seeded"] == ["1.30", "1.31"]


def test_seeded_cluster_is_active_with_real_fields(testbed):
    eks, ec2 = testbed.client("eks"), testbed.client("ec2")
    c = eks.describe_cluster(name=CLUSTER)["cluster"]
    seed = testbed.seed
    assert c["status"] == "ACTIVE"
    assert c["version"] == "1.31"
    assert c["arn"] == f"arn:aws:eks:us-west-2:{ACCOUNT}:cluster/{CLUSTER}"
    assert re.fullmatch(r"https://oidc\.eks\.us-west-2\.amazonaws\.com/id/[0-9A-F]{32}", c["identity"]["oidc"]["issuer"])
    assert re.fullmatch(r"https://[0-9A-F]{32}\.gr7\.us-west-2\.eks\.amazonaws\.com", c["endpoint"])
    assert c["accessConfig"]["authenticationMode"] == "API_AND_CONFIG_MAP"
    assert base64.b64decode(c["certificateAuthority"]["data"]).startswith(b"-----BEGIN CERTIFICATE-----")
    assert c["kubernetesNetworkConfig"]["serviceIpv4Cidr"] == "172.20.0.0/16"
    vpc = c["resourcesVpcConfig"]
    assert vpc["vpcId"] == seed["vpc_id"]
    assert vpc["clusterSecurityGroupId"] == seed["cluster_security_group_id"]
    assert sorted(vpc["subnetIds"]) == sorted(seed["subnet_ids"])
    subnets = ec2.describe_subnets(SubnetIds=vpc["subnetIds"])["Subnets"]
    assert sorted(s["AvailabilityZone"] for s in subnets) == ["us-west-2a", "us-west-2b", "us-west-2c"]
    assert all(s["VpcId"] == seed["vpc_id"] for s in subnets)
    sg = ec2.describe_security_groups(GroupIds=[vpc["clusterSecurityGroupId"]])["SecurityGroups"][0]
    assert sg["VpcId"] == seed["vpc_id"] and sg["GroupName"].startswith(f"eks-cluster-sg-{CLUSTER}-")
    ng = eks.describe_nodegroup(clusterName=CLUSTER, nodegroupName="system")["nodegroup"]
    assert ng["status"] == "ACTIVE" and ng["version"] == "1.31"
    assert ng["scalingConfig"] == {"minSize": 1, "desiredSize": 2, "maxSize": 3}
    assert "remoteAccess" not in ng
    assert testbed.client("sts").get_caller_identity()["Arn"] == f"arn:aws:iam::{ACCOUNT}:user/testbed-admin"


# ------------------------------------------------------------------------------------------------- SSM and AMIs


def test_a_published_release_moves_the_recommended_and_latest_parameters_to_new_amis(testbed):
    ssm, ec2 = testbed.client("ssm"), testbed.client("ec2")
    al = "/aws/service/eks/optimized-ami/1.31/amazon-linux-2023/x86_64/standard"
    br = "/aws/service/bottlerocket/aws-k8s-1.31-nvidia/x86_64"
    before = {p["Name"]: p["Value"] for p in ssm.get_parameters(Names=[f"{al}/recommended/image_id", f"{br}/latest/image_id"])["Parameters"]}
    status, body = testbed.control("POST", "/amis", {"kubernetesVersion": "1.31", "release": "v20251001", "bottlerocket": "1.47.0-5c1d2e3f"})
    assert status == 200, body
    out = ssm.get_parameters(Names=[f"{al}/recommended/image_id", f"{al}/recommended/release_version", f"{br}/latest/image_id",
                                    f"{br}/latest/image_version", f"{al}/amazon-eks-node-al2023-x86_64-standard-1.31-v20250915/image_id"])
    after = {p["Name"]: p["Value"] for p in out["Parameters"]}
    assert after[f"{al}/recommended/release_version"] == "1.31.13-20251001"
    assert after[f"{br}/latest/image_version"] == "1.47.0-5c1d2e3f"
    for name in (f"{al}/recommended/image_id", f"{br}/latest/image_id"):
        assert after[name] != before[name], name
    # The older release stays published, and every id names a real image.
    assert after[f"{al}/amazon-eks-node-al2023-x86_64-standard-1.31-v20250915/image_id"] == before[f"{al}/recommended/image_id"]
    images = ec2.describe_images(ImageIds=[after[f"{al}/recommended/image_id"], after[f"{br}/latest/image_id"]])["Images"]
    assert sorted(i["Name"] for i in images) == ["amazon-eks-node-al2023-x86_64-standard-1.31-v20251001",
                                                  "bottlerocket-aws-k8s-1.31-nvidia-x86_64-v1.47.0-5c1d2e3f"]
    assert testbed.control("GET", "/handle")[1]["seed"]["ssm_parameters"][f"{al}/recommended/image_id"] == after[f"{al}/recommended/image_id"]
    status, body = testbed.control("POST", "/amis", {"kubernetesVersion": "1.31", "release": "October"})
    assert status == 400 and "release like v20251001" in body["error"], body


def test_ssm_parameters_point_at_existing_amis(testbed):
    ssm, ec2 = testbed.client("ssm"), testbed.client("ec2")
    base = "/aws/service/eks/optimized-ami/1.31"
    names = [
        f"{base}/amazon-linux-2023/x86_64/standard/recommended/image_id",
        f"{base}/amazon-linux-2023/x86_64/nvidia/recommended/image_id",
        f"{base}/amazon-linux-2023/x86_64/neuron/recommended/image_id",
        f"{base}/amazon-linux-2023/arm64/standard/recommended/image_id",
        f"{base}/amazon-linux-2023/arm64/nvidia/recommended/image_id",
        f"{base}/amazon-linux-2023/x86_64/standard/amazon-eks-node-al2023-x86_64-standard-1.31-v20250820/image_id",
        "/aws/service/bottlerocket/aws-k8s-1.31/x86_64/latest/image_id",
        "/aws/service/bottlerocket/aws-k8s-1.31-nvidia/arm64/latest/image_id",
        f"{base}/amazon-linux-2/recommended/image_id",
        f"{base}/amazon-linux-2023/arm64/neuron/recommended/image_id",  # does not exist in AWS either
    ]
    out = ssm.get_parameters(Names=names)
    assert out["InvalidParameters"] == [names[-1]]
    values = {p["Name"]: p["Value"] for p in out["Parameters"]}
    assert len(values) == 9
    images = {i["ImageId"]: i for i in ec2.describe_images(ImageIds=list(values.values()))["Images"]}
    expected_names = {
        names[0]: "amazon-eks-node-al2023-x86_64-standard-1.31-v20250915",
        names[1]: "amazon-eks-node-al2023-x86_64-nvidia-1.31-v20250915",
        names[2]: "amazon-eks-node-al2023-x86_64-neuron-1.31-v20250915",
        names[3]: "amazon-eks-node-al2023-arm64-standard-1.31-v20250915",
        names[4]: "amazon-eks-node-al2023-arm64-nvidia-1.31-v20250915",
        names[5]: "amazon-eks-node-al2023-x86_64-standard-1.31-v20250820",
        names[6]: "bottlerocket-aws-k8s-1.31-x86_64-v1.46.0-431fe75a",
        names[7]: "bottlerocket-aws-k8s-1.31-nvidia-arm64-v1.46.0-431fe75a",
        names[8]: "amazon-eks-node-1.31-v20250915",
    }
    for param, name in expected_names.items():
        image = images[values[param]]
        assert image["Name"] == name
        assert image["ImageOwnerAlias"] == "amazon" and image["State"] == "available"
        assert image["Architecture"] == ("arm64" if "/arm64/" in param else "x86_64")

    rec = json.loads(ssm.get_parameter(Name=f"{base}/amazon-linux-2023/x86_64/standard/recommended")["Parameter"]["Value"])
    assert rec["image_id"] == values[names[0]]
    assert rec["image_name"] == expected_names[names[0]]
    assert rec["release_version"] == "1.31.13-20250915"
    assert ssm.get_parameter(Name=f"{base}/amazon-linux-2023/x86_64/standard/recommended/release_version")[
        "Parameter"]["Value"] == "1.31.13-20250915"
    br = "/aws/service/bottlerocket/aws-k8s-1.31/x86_64"
    assert ssm.get_parameter(Name=f"{br}/latest/image_version")["Parameter"]["Value"] == "1.46.0-431fe75a"
    assert ssm.get_parameter(Name=f"{br}/1.46.0/image_id")["Parameter"]["Value"] == values[names[6]]
    # the previous minor is seeded too
    prev = ssm.get_parameter(Name="/aws/service/eks/optimized-ami/1.30/amazon-linux-2023/x86_64/standard/recommended/image_id")
    assert ec2.describe_images(ImageIds=[prev["Parameter"]["Value"]])["Images"][0]["Name"].endswith("-1.30-v20250915")
    with pytest.raises(ClientError) as exc:
        ssm.get_parameters(Names=[f"/n{i}" for i in range(11)])
    assert err(exc) == (400, "ValidationException")


def test_al2_parameters_only_up_to_1_32(testbed):
    testbed.reset(k8s_version="1.33")
    ssm = testbed.client("ssm")
    assert testbed.client("eks").describe_cluster(name=CLUSTER)["cluster"]["version"] == "1.33"
    out = ssm.get_parameters(Names=[
        "/aws/service/eks/optimized-ami/1.33/amazon-linux-2/recommended/image_id",
        "/aws/service/eks/optimized-ami/1.32/amazon-linux-2-gpu/recommended/image_id",
        "/aws/service/eks/optimized-ami/1.33/amazon-linux-2023/x86_64/standard/recommended/image_id",
    ])
    assert out["InvalidParameters"] == ["/aws/service/eks/optimized-ami/1.33/amazon-linux-2/recommended/image_id"]
    assert len(out["Parameters"]) == 2


# ------------------------------------------------------------------------------------------------- EKS gaps


def test_access_entries_round_trip(testbed):
    eks, iam = testbed.client("eks"), testbed.client("iam")
    role = iam.create_role(RoleName=f"KarpenterNodeRole-{CLUSTER}", AssumeRolePolicyDocument=trust("ec2.amazonaws.com"))["Role"]["Arn"]
    entry = eks.create_access_entry(clusterName=CLUSTER, principalArn=role, type="EC2_LINUX")["accessEntry"]
    assert entry["type"] == "EC2_LINUX"
    assert entry["kubernetesGroups"] == ["system:nodes"]
    assert entry["username"] == "system:node:{{EC2PrivateDNSName}}"
    assert entry["accessEntryArn"].startswith(f"arn:aws:eks:us-west-2:{ACCOUNT}:access-entry/{CLUSTER}/role/{ACCOUNT}/")
    assert eks.describe_access_entry(clusterName=CLUSTER, principalArn=role)["accessEntry"] == entry
    listed = eks.list_access_entries(clusterName=CLUSTER)["accessEntries"]
    assert role in listed and testbed.seed["nodegroup"]["node_role_arn"] in listed  # EKS made the MNG role's entry

    with pytest.raises(ClientError) as exc:
        eks.create_access_entry(clusterName=CLUSTER, principalArn=role, type="EC2_LINUX")
    assert err(exc) == (409, "ResourceInUseException")
    other = iam.create_role(RoleName="other", AssumeRolePolicyDocument=trust("ec2.amazonaws.com"))["Role"]["Arn"]
    with pytest.raises(ClientError) as exc:
        eks.create_access_entry(clusterName=CLUSTER, principalArn=other, type="EC2_LINUX", kubernetesGroups=["admins"])
    assert err(exc) == (400, "InvalidParameterException")
    with pytest.raises(ClientError) as exc:
        eks.create_access_entry(clusterName=CLUSTER, principalArn=f"arn:aws:iam::{ACCOUNT}:role/missing", type="EC2_LINUX")
    assert err(exc) == (400, "InvalidParameterException")
    with pytest.raises(ClientError) as exc:
        eks.create_access_entry(clusterName="nope", principalArn=role, type="EC2_LINUX")
    assert err(exc) == (404, "ResourceNotFoundException")
    with pytest.raises(ClientError) as exc:
        eks.associate_access_policy(clusterName=CLUSTER, principalArn=role, accessScope={"type": "cluster"},
                                    policyArn="arn:aws:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy")
    assert err(exc) == (400, "InvalidParameterException")

    assert eks.delete_access_entry(clusterName=CLUSTER, principalArn=role)["ResponseMetadata"]["HTTPStatusCode"] == 200
    for call in (eks.describe_access_entry, eks.delete_access_entry):
        with pytest.raises(ClientError) as exc:
            call(clusterName=CLUSTER, principalArn=role)
        assert err(exc) == (404, "ResourceNotFoundException")


def test_access_entries_need_api_authentication_mode(testbed):
    testbed.reset(auth_mode="CONFIG_MAP")
    eks, iam = testbed.client("eks"), testbed.client("iam")
    role = iam.create_role(RoleName="node", AssumeRolePolicyDocument=trust("ec2.amazonaws.com"))["Role"]["Arn"]
    with pytest.raises(ClientError) as exc:
        eks.create_access_entry(clusterName=CLUSTER, principalArn=role, type="EC2_LINUX")
    assert err(exc) == (400, "InvalidRequestException")
    update = eks.update_cluster_config(name=CLUSTER, accessConfig={"authenticationMode": "API_AND_CONFIG_MAP"})["update"]
    assert update["type"] == "AccessConfigUpdate" and update["status"] == "InProgress"
    assert eks.describe_cluster(name=CLUSTER)["cluster"]["status"] == "UPDATING"
    eks.get_waiter("cluster_active").wait(name=CLUSTER, WaiterConfig={"Delay": 0, "MaxAttempts": 3})
    assert eks.describe_update(name=CLUSTER, updateId=update["id"])["update"]["status"] == "Successful"
    assert eks.describe_cluster(name=CLUSTER)["cluster"]["accessConfig"]["authenticationMode"] == "API_AND_CONFIG_MAP"
    eks.create_access_entry(clusterName=CLUSTER, principalArn=role, type="EC2_LINUX")
    with pytest.raises(ClientError) as exc:  # authentication mode only moves towards API
        eks.update_cluster_config(name=CLUSTER, accessConfig={"authenticationMode": "CONFIG_MAP"})
    assert err(exc) == (400, "InvalidParameterException")


def test_pod_identity_associations_round_trip(testbed):
    eks, iam = testbed.client("eks"), testbed.client("iam")
    role = iam.create_role(RoleName=f"{CLUSTER}-karpenter", AssumeRolePolicyDocument=trust("pods.eks.amazonaws.com"))["Role"]["Arn"]
    role2 = iam.create_role(RoleName=f"{CLUSTER}-karpenter-2", AssumeRolePolicyDocument=trust("pods.eks.amazonaws.com"))["Role"]["Arn"]
    a = eks.create_pod_identity_association(clusterName=CLUSTER, namespace="kube-system", serviceAccount="karpenter",
                                            roleArn=role, tags={"owner": "karpctl"})["association"]
    assert re.fullmatch(r"a-[0-9a-z]{17}", a["associationId"])
    assert a["associationArn"] == f"arn:aws:eks:us-west-2:{ACCOUNT}:podidentityassociation/{CLUSTER}/{a['associationId']}"
    assert eks.describe_pod_identity_association(clusterName=CLUSTER, associationId=a["associationId"])["association"] == a
    listed = eks.list_pod_identity_associations(clusterName=CLUSTER, namespace="kube-system", serviceAccount="karpenter")
    assert [s["associationId"] for s in listed["associations"]] == [a["associationId"]]
    assert eks.list_pod_identity_associations(clusterName=CLUSTER, namespace="default")["associations"] == []
    with pytest.raises(ClientError) as exc:
        eks.create_pod_identity_association(clusterName=CLUSTER, namespace="kube-system", serviceAccount="karpenter", roleArn=role)
    assert err(exc) == (409, "ResourceInUseException")
    with pytest.raises(ClientError) as exc:
        eks.create_pod_identity_association(clusterName=CLUSTER, namespace="x", serviceAccount="y",
                                            roleArn=f"arn:aws:iam::{ACCOUNT}:role/missing")
    assert err(exc) == (400, "InvalidParameterException")
    updated = eks.update_pod_identity_association(clusterName=CLUSTER, associationId=a["associationId"], roleArn=role2)["association"]
    assert updated["roleArn"] == role2
    deleted = eks.delete_pod_identity_association(clusterName=CLUSTER, associationId=a["associationId"])["association"]
    assert deleted["associationId"] == a["associationId"]
    with pytest.raises(ClientError) as exc:
        eks.describe_pod_identity_association(clusterName=CLUSTER, associationId=a["associationId"])
    assert err(exc) == (404, "ResourceNotFoundException")


def test_pod_identity_agent_addon_follows_the_flag(testbed):
    eks = testbed.client("eks")
    addon = eks.describe_addon(clusterName=CLUSTER, addonName="eks-pod-identity-agent")["addon"]
    assert addon["status"] == "ACTIVE" and addon["addonVersion"].startswith("v")
    testbed.reset(pod_identity_agent=False)
    assert "eks-pod-identity-agent" not in eks.list_addons(clusterName=CLUSTER)["addons"]
    with pytest.raises(ClientError) as exc:
        eks.describe_addon(clusterName=CLUSTER, addonName="eks-pod-identity-agent")
    assert err(exc) == (404, "ResourceNotFoundException")
    created = eks.create_addon(clusterName=CLUSTER, addonName="eks-pod-identity-agent")["addon"]
    assert created["status"] == "CREATING"
    eks.get_waiter("addon_active").wait(clusterName=CLUSTER, addonName="eks-pod-identity-agent",
                                        WaiterConfig={"Delay": 0, "MaxAttempts": 3})
    with pytest.raises(ClientError) as exc:
        eks.create_addon(clusterName=CLUSTER, addonName="eks-pod-identity-agent")
    assert err(exc) == (409, "ResourceInUseException")


def test_nodegroup_scaling_updates_config_status_and_instances(testbed):
    eks, ec2 = testbed.client("eks"), testbed.client("ec2")

    def running():
        res = ec2.describe_instances(Filters=[{"Name": "tag:eks:nodegroup-name", "Values": ["system"]},
                                              {"Name": "instance-state-name", "Values": ["running"]}])
        return sorted(i["InstanceId"] for r in res["Reservations"] for i in r["Instances"])

    assert running() == testbed.seed["nodegroup"]["instance_ids"]
    update = eks.update_nodegroup_config(clusterName=CLUSTER, nodegroupName="system",
                                         scalingConfig={"minSize": 0, "desiredSize": 0, "maxSize": 3})["update"]
    assert update["status"] == "InProgress" and update["type"] == "ConfigUpdate"
    assert {p["type"]: p["value"] for p in update["params"]} == {"MinSize": "0", "DesiredSize": "0", "MaxSize": "3"}
    with pytest.raises(ClientError) as exc:  # one update at a time
        eks.update_nodegroup_config(clusterName=CLUSTER, nodegroupName="system", scalingConfig={"desiredSize": 1})
    assert err(exc) == (409, "ResourceInUseException")
    ng = eks.describe_nodegroup(clusterName=CLUSTER, nodegroupName="system")["nodegroup"]
    assert ng["status"] == "UPDATING"
    assert ng["scalingConfig"] == {"minSize": 0, "desiredSize": 0, "maxSize": 3}
    eks.get_waiter("nodegroup_active").wait(clusterName=CLUSTER, nodegroupName="system",
                                            WaiterConfig={"Delay": 0, "MaxAttempts": 3})
    done = eks.describe_update(name=CLUSTER, nodegroupName="system", updateId=update["id"])["update"]
    assert done["status"] == "Successful"
    assert update["id"] in eks.list_updates(name=CLUSTER, nodegroupName="system")["updateIds"]
    assert running() == []
    with pytest.raises(ClientError) as exc:
        eks.update_nodegroup_config(clusterName=CLUSTER, nodegroupName="system", scalingConfig={"desiredSize": 4})
    assert err(exc) == (400, "InvalidParameterException")
    eks.update_nodegroup_config(clusterName=CLUSTER, nodegroupName="system",
                                scalingConfig={"minSize": 1, "desiredSize": 2, "maxSize": 3})
    eks.get_waiter("nodegroup_active").wait(clusterName=CLUSTER, nodegroupName="system",
                                            WaiterConfig={"Delay": 0, "MaxAttempts": 3})
    assert len(running()) == 2


# ------------------------------------------------------------------------------------------------- CloudFormation

STACK_TEMPLATE = """
AWSTemplateFormatVersion: "2010-09-09"
Description: karpctl testbed stack shaped like the Karpenter getting-started stack
Parameters:
  ClusterName:
    Type: String
  Retention:
    Type: Number
    Default: 300
Resources:
  NodeRole:
    Type: AWS::IAM::Role
    Properties:
      RoleName: !Sub "KarpenterNodeRole-${ClusterName}"
      Path: /
      AssumeRolePolicyDocument:
        Version: "2012-10-17"
        Statement:
          - Effect: Allow
            Principal:
              Service: !Sub "ec2.${AWS::URLSuffix}"
            Action: sts:AssumeRole
      ManagedPolicyArns:
        - !Sub "arn:${AWS::Partition}:iam::aws:policy/AmazonEKS_CNI_Policy"
        - !Sub "arn:${AWS::Partition}:iam::aws:policy/AmazonEKSWorkerNodePolicy"
        - !Sub "arn:${AWS::Partition}:iam::aws:policy/AmazonEC2ContainerRegistryPullOnly"
        - !Sub "arn:${AWS::Partition}:iam::aws:policy/AmazonSSMManagedInstanceCore"
  ControllerPolicy:
    Type: AWS::IAM::ManagedPolicy
    Properties:
      ManagedPolicyName: !Sub "KarpenterControllerPolicy-${ClusterName}"
      PolicyDocument: !Sub |
        {
          "Version": "2012-10-17",
          "Statement": [
            {"Sid": "Describe", "Effect": "Allow", "Action": "eks:DescribeCluster",
             "Resource": "arn:${AWS::Partition}:eks:${AWS::Region}:${AWS::AccountId}:cluster/${ClusterName}"},
            {"Sid": "PassNodeRole", "Effect": "Allow", "Action": "iam:PassRole", "Resource": "${NodeRole.Arn}"},
            {"Sid": "Queue", "Effect": "Allow", "Action": ["sqs:ReceiveMessage", "sqs:DeleteMessage"],
             "Resource": "${InterruptionQueue.Arn}"}
          ]
        }
  InterruptionQueue:
    Type: AWS::SQS::Queue
    Properties:
      QueueName: !Ref ClusterName
      MessageRetentionPeriod: !Ref Retention
      SqsManagedSseEnabled: true
  InterruptionQueuePolicy:
    Type: AWS::SQS::QueuePolicy
    Properties:
      Queues:
        - !Ref InterruptionQueue
      PolicyDocument:
        Id: EC2InterruptionPolicy
        Statement:
          - Effect: Allow
            Principal:
              Service: [events.amazonaws.com, sqs.amazonaws.com]
            Action: sqs:SendMessage
            Resource: !GetAtt InterruptionQueue.Arn
  SpotInterruptionRule:
    Type: AWS::Events::Rule
    Properties:
      EventPattern:
        source: [aws.ec2]
        detail-type: [EC2 Spot Instance Interruption Warning]
      Targets:
        - Id: KarpenterInterruptionQueueTarget
          Arn: !GetAtt InterruptionQueue.Arn
Outputs:
  NodeRoleArn:
    Value: !GetAtt NodeRole.Arn
  QueueName:
    Value: !GetAtt InterruptionQueue.QueueName
  PolicyArn:
    Value: !Ref ControllerPolicy
  RuleArn:
    Value: !GetAtt SpotInterruptionRule.Arn
"""


def test_cloudformation_stack_create_update_delete(testbed):
    cfn, iam, sqs, events = (testbed.client(s) for s in ("cloudformation", "iam", "sqs", "events"))
    params = [{"ParameterKey": "ClusterName", "ParameterValue": CLUSTER}]
    with pytest.raises(ClientError) as exc:
        cfn.create_stack(StackName=f"Karpenter-{CLUSTER}", TemplateBody=STACK_TEMPLATE, Parameters=params)
    assert err(exc) == (400, "InsufficientCapabilitiesException")

    cfn.create_stack(StackName=f"Karpenter-{CLUSTER}", TemplateBody=STACK_TEMPLATE, Parameters=params,
                     Capabilities=["CAPABILITY_NAMED_IAM"])
    cfn.get_waiter("stack_create_complete").wait(StackName=f"Karpenter-{CLUSTER}", WaiterConfig={"Delay": 0, "MaxAttempts": 5})
    stack = cfn.describe_stacks(StackName=f"Karpenter-{CLUSTER}")["Stacks"][0]
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack["Outputs"]}
    assert outputs["NodeRoleArn"] == f"arn:aws:iam::{ACCOUNT}:role/KarpenterNodeRole-{CLUSTER}"
    assert outputs["QueueName"] == CLUSTER
    assert outputs["PolicyArn"] == f"arn:aws:iam::{ACCOUNT}:policy/KarpenterControllerPolicy-{CLUSTER}"
    assert outputs["RuleArn"].startswith(f"arn:aws:events:us-west-2:{ACCOUNT}:rule/")

    attached = {p["PolicyName"] for p in iam.list_attached_role_policies(RoleName=f"KarpenterNodeRole-{CLUSTER}")["AttachedPolicies"]}
    assert attached == {"AmazonEKS_CNI_Policy", "AmazonEKSWorkerNodePolicy", "AmazonEC2ContainerRegistryPullOnly",
                        "AmazonSSMManagedInstanceCore"}
    doc = iam.get_policy_version(PolicyArn=outputs["PolicyArn"], VersionId="v1")["PolicyVersion"]["Document"]
    assert doc["Statement"][0]["Resource"] == f"arn:aws:eks:us-west-2:{ACCOUNT}:cluster/{CLUSTER}"
    assert doc["Statement"][1]["Resource"] == outputs["NodeRoleArn"]
    assert doc["Statement"][2]["Resource"] == f"arn:aws:sqs:us-west-2:{ACCOUNT}:{CLUSTER}"
    url = sqs.get_queue_url(QueueName=CLUSTER)["QueueUrl"]
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert attrs["MessageRetentionPeriod"] == "300"
    assert json.loads(attrs["Policy"])["Statement"][0]["Action"] == "sqs:SendMessage"
    rule = outputs["RuleArn"].rsplit("/", 1)[1]
    assert events.list_targets_by_rule(Rule=rule)["Targets"][0]["Arn"] == f"arn:aws:sqs:us-west-2:{ACCOUNT}:{CLUSTER}"
    evs = cfn.describe_stack_events(StackName=f"Karpenter-{CLUSTER}")["StackEvents"]
    done = {e["LogicalResourceId"] for e in evs if e["ResourceStatus"] == "CREATE_COMPLETE"}
    assert {"NodeRole", "ControllerPolicy", "InterruptionQueue", "InterruptionQueuePolicy", "SpotInterruptionRule",
            f"Karpenter-{CLUSTER}"} <= done

    new_template = STACK_TEMPLATE.replace('"sqs:ReceiveMessage", "sqs:DeleteMessage"',
                                          '"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueUrl"')
    cfn.update_stack(StackName=f"Karpenter-{CLUSTER}", TemplateBody=new_template,
                     Parameters=params + [{"ParameterKey": "Retention", "ParameterValue": "600"}],
                     Capabilities=["CAPABILITY_NAMED_IAM"])
    cfn.get_waiter("stack_update_complete").wait(StackName=f"Karpenter-{CLUSTER}", WaiterConfig={"Delay": 0, "MaxAttempts": 5})
    assert sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["MessageRetentionPeriod"])["Attributes"][
        "MessageRetentionPeriod"] == "600"
    policy = iam.get_policy(PolicyArn=outputs["PolicyArn"])["Policy"]
    assert policy["DefaultVersionId"] == "v2"
    v2 = iam.get_policy_version(PolicyArn=outputs["PolicyArn"], VersionId="v2")["PolicyVersion"]["Document"]
    assert "sqs:GetQueueUrl" in v2["Statement"][2]["Action"]

    cfn.delete_stack(StackName=f"Karpenter-{CLUSTER}")
    cfn.get_waiter("stack_delete_complete").wait(StackName=f"Karpenter-{CLUSTER}", WaiterConfig={"Delay": 0, "MaxAttempts": 5})
    with pytest.raises(ClientError) as exc:
        iam.get_role(RoleName=f"KarpenterNodeRole-{CLUSTER}")
    assert err(exc) == (404, "NoSuchEntity")
    with pytest.raises(ClientError) as exc:
        iam.get_policy(PolicyArn=outputs["PolicyArn"])
    assert err(exc)[1] == "NoSuchEntity"
    with pytest.raises(ClientError) as exc:
        sqs.get_queue_url(QueueName=CLUSTER)
    assert err(exc)[1] in ("AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist")


def test_cloudformation_failure_rolls_back(testbed):
    cfn, iam = testbed.client("cloudformation"), testbed.client("iam")
    broken = STACK_TEMPLATE.replace('"Version": "2012-10-17",', '"Version": "2012-10-17",,')
    cfn.create_stack(StackName="broken", TemplateBody=broken,
                     Parameters=[{"ParameterKey": "ClusterName", "ParameterValue": CLUSTER}],
                     Capabilities=["CAPABILITY_NAMED_IAM"])
    with pytest.raises(WaiterError):
        cfn.get_waiter("stack_create_complete").wait(StackName="broken", WaiterConfig={"Delay": 0, "MaxAttempts": 3})
    assert cfn.describe_stacks(StackName="broken")["Stacks"][0]["StackStatus"] == "ROLLBACK_COMPLETE"
    failed = [e for e in cfn.describe_stack_events(StackName="broken")["StackEvents"] if e["ResourceStatus"] == "CREATE_FAILED"]
    assert [e["LogicalResourceId"] for e in failed] == ["ControllerPolicy"]
    with pytest.raises(ClientError) as exc:  # resources created before the failure were rolled back
        iam.get_role(RoleName=f"KarpenterNodeRole-{CLUSTER}")
    assert err(exc) == (404, "NoSuchEntity")


# ------------------------------------------------------------------------------------------------- S3


def test_s3_conditional_writes(testbed):
    s3 = testbed.client("s3")
    s3.create_bucket(Bucket="karpctl-state", CreateBucketConfiguration={"LocationConstraint": "us-west-2"})
    first = s3.put_object(Bucket="karpctl-state", Key="state.json", Body=b"v1", IfNoneMatch="*")
    with pytest.raises(ClientError) as exc:
        s3.put_object(Bucket="karpctl-state", Key="state.json", Body=b"other", IfNoneMatch="*")
    assert err(exc) == (412, "PreconditionFailed")
    second = s3.put_object(Bucket="karpctl-state", Key="state.json", Body=b"v2", IfMatch=first["ETag"])
    with pytest.raises(ClientError) as exc:
        s3.put_object(Bucket="karpctl-state", Key="state.json", Body=b"v3", IfMatch=first["ETag"])  # stale etag
    assert err(exc) == (412, "PreconditionFailed")
    with pytest.raises(ClientError) as exc:
        s3.put_object(Bucket="karpctl-state", Key="absent.json", Body=b"x", IfMatch=first["ETag"])
    assert err(exc) == (404, "NoSuchKey")
    assert s3.get_object(Bucket="karpctl-state", Key="state.json")["Body"].read() == b"v2"
    assert s3.head_object(Bucket="karpctl-state", Key="state.json")["ETag"] == second["ETag"]
    s3.delete_object(Bucket="karpctl-state", Key="state.json")
    with pytest.raises(ClientError) as exc:
        s3.head_object(Bucket="karpctl-state", Key="state.json")
    assert err(exc)[0] == 404
    with pytest.raises(ClientError) as exc:
        s3.get_object(Bucket="karpctl-state", Key="state.json")
    assert err(exc) == (404, "NoSuchKey")

    # racing creators: exactly one wins
    results = []

    def create(i):
        try:
            testbed.client("s3").put_object(Bucket="karpctl-state", Key="lock", Body=str(i).encode(), IfNoneMatch="*")
            results.append("ok")
        except ClientError as e:
            results.append(e.response["Error"]["Code"])

    threads = [threading.Thread(target=create, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["PreconditionFailed"] * 7 + ["ok"]


# ------------------------------------------------------------------------------------------------- faults & counter


def test_throttling_is_retried_by_the_sdk_and_counted(testbed):
    rule = testbed.add_fault(operation="ssm:GetParameters", kind="throttle", rate=1.0, count=2, seed=1)
    assert rule["id"] >= 1
    ssm = testbed.client("ssm", retries=5)
    name = "/aws/service/eks/optimized-ami/1.31/amazon-linux-2023/x86_64/standard/recommended/image_id"
    out = ssm.get_parameters(Names=[name])
    assert out["Parameters"][0]["Value"] == testbed.seed["ssm_parameters"][name]
    assert out["ResponseMetadata"]["RetryAttempts"] == 2
    stats = testbed.requests()
    assert stats["counts"] == {"ssm:GetParameters": 3}
    assert stats["faults_injected"] == {"ssm:GetParameters": 2}
    assert [e["status"] for e in stats["log"]] == [400, 400, 200]
    assert testbed.control("GET", "/faults")[1]["faults"][0]["injected"] == 2


@pytest.mark.parametrize(
    "service,operation,call,status,code",
    [
        ("eks", "eks:DescribeCluster", lambda c: c.describe_cluster(name=CLUSTER), 429, "ThrottlingException"),
        ("ec2", "ec2:DescribeSubnets", lambda c: c.describe_subnets(), 503, "RequestLimitExceeded"),
        ("iam", "iam:GetRole", lambda c: c.get_role(RoleName="x"), 400, "Throttling"),
        ("sts", "sts:GetCallerIdentity", lambda c: c.get_caller_identity(), 400, "Throttling"),
        ("cloudformation", "cloudformation:DescribeStacks", lambda c: c.describe_stacks(), 400, "Throttling"),
        ("s3", "s3:HeadObject", lambda c: c.head_object(Bucket="b", Key="k"), 503, "503"),
        ("s3", "s3:GetObject", lambda c: c.get_object(Bucket="b", Key="k"), 503, "SlowDown"),
    ],
)
def test_throttle_shapes_per_protocol(testbed, service, operation, call, status, code):
    testbed.add_fault(operation=operation, kind="throttle", rate=1.0)
    with pytest.raises(ClientError) as exc:
        call(testbed.client(service))
    assert err(exc) == (status, code)


def test_5xx_faults_and_wildcards(testbed):
    testbed.add_fault(operation="eks:*", kind="5xx", rate=1.0, count=1)
    eks = testbed.client("eks", retries=3)
    assert eks.describe_cluster(name=CLUSTER)["ResponseMetadata"]["RetryAttempts"] == 1
    testbed.add_fault(operation="*", kind="5xx", rate=1.0, count=1)
    with pytest.raises(ClientError) as exc:
        testbed.client("iam").get_user(UserName="testbed-admin")
    assert err(exc) == (500, "InternalFailure")
    status, body = testbed.control("POST", "/faults", {"operation": "eks:X", "kind": "boom"})
    assert status == 400 and "kind" in body["error"]


def test_a_lost_response_is_carried_out_and_answered_with_a_5xx(testbed):
    testbed.add_fault(operation="iam:CreateRole", kind="lost-response", rate=1.0, count=1)
    iam = testbed.client("iam", retries=3)
    trust = '{"Version": "2012-10-17", "Statement": []}'
    with pytest.raises(ClientError) as exc:
        iam.create_role(RoleName="lost-once", AssumeRolePolicyDocument=trust)
    # The first attempt created the role; the SDK's retry meets it.
    assert err(exc) == (409, "EntityAlreadyExists")
    assert iam.get_role(RoleName="lost-once")["Role"]["RoleName"] == "lost-once"
    stats = testbed.requests()
    assert stats["counts"]["iam:CreateRole"] == 2 and stats["faults_injected"] == {"iam:CreateRole": 1}
    assert [(e["status"], e["fault"]) for e in stats["log"] if e["operation"] == "iam:CreateRole"] == [(500, "lost-response"), (409, None)]


def test_request_counter_counts_exactly_what_was_called(testbed):
    eks, ssm, ec2 = testbed.client("eks"), testbed.client("ssm"), testbed.client("ec2")
    assert testbed.requests()["total"] == 0
    eks.describe_cluster(name=CLUSTER)
    ssm.get_parameters(Names=["/a"])
    ssm.get_parameters(Names=["/b"])
    ec2.create_tags(Resources=[testbed.seed["subnet_ids"][0]], Tags=[{"Key": "karpenter.sh/discovery", "Value": CLUSTER}])
    eks.list_access_entries(clusterName=CLUSTER)
    testbed.client("s3").list_buckets()
    stats = testbed.requests()
    assert stats["counts"] == {
        "ec2:CreateTags": 1, "eks:DescribeCluster": 1, "eks:ListAccessEntries": 1,
        "s3:ListBuckets": 1, "ssm:GetParameters": 2,
    }
    assert stats["total"] == 6 and stats["mutating"] == 1 and stats["read_only"] == 5
    assert [e["operation"] for e in stats["log"]] == [
        "eks:DescribeCluster", "ssm:GetParameters", "ssm:GetParameters", "ec2:CreateTags", "eks:ListAccessEntries",
        "s3:ListBuckets"]
    assert testbed.control("DELETE", "/requests")[0] == 200
    assert testbed.requests()["counts"] == {}


def test_reset_restores_the_seeded_account(testbed):
    before = testbed.handle["seed"]
    eks, iam, s3 = testbed.client("eks"), testbed.client("iam"), testbed.client("s3")
    iam.create_role(RoleName="temp", AssumeRolePolicyDocument=trust("ec2.amazonaws.com"))
    s3.create_bucket(Bucket="scratch-bucket", CreateBucketConfiguration={"LocationConstraint": "us-west-2"})
    eks.delete_nodegroup(clusterName=CLUSTER, nodegroupName="system")
    testbed.add_fault(operation="*", kind="throttle", rate=0.5)
    after = testbed.reset()["seed"]
    assert after == before  # deterministic ids: the handle file stays valid across resets
    assert testbed.control("GET", "/faults")[1]["faults"] == []
    assert testbed.requests()["counts"] == {}
    assert eks.describe_nodegroup(clusterName=CLUSTER, nodegroupName="system")["nodegroup"]["status"] == "ACTIVE"
    assert [b["Name"] for b in s3.list_buckets()["Buckets"]] == []
    with pytest.raises(ClientError):
        iam.get_role(RoleName="temp")


# ------------------------------------------------------------------------------------------------- other gaps


def test_iam_ec2_and_sts_behave_like_aws(testbed):
    iam, ec2 = testbed.client("iam"), testbed.client("ec2")
    slr = iam.create_service_linked_role(AWSServiceName="spot.amazonaws.com")["Role"]
    assert slr["RoleName"] == "AWSServiceRoleForEC2Spot"
    assert slr["Path"] == "/aws-service-role/spot.amazonaws.com/"
    with pytest.raises(ClientError) as exc:
        iam.create_service_linked_role(AWSServiceName="spot.amazonaws.com")
    assert err(exc) == (400, "InvalidInput")
    assert iam.get_role(RoleName="AWSServiceRoleForEC2Spot")["Role"]["Arn"].endswith(
        "role/aws-service-role/spot.amazonaws.com/AWSServiceRoleForEC2Spot")
    issuer = testbed.seed["cluster"]["oidc_issuer"]
    arn = iam.create_open_id_connect_provider(Url=issuer, ClientIDList=["sts.amazonaws.com"])["OpenIDConnectProviderArn"]
    assert arn == f"arn:aws:iam::{ACCOUNT}:oidc-provider/{issuer[len('https://'):]}"
    profile = iam.create_instance_profile(InstanceProfileName="kp", Path=f"/karpenter/us-west-2/{CLUSTER}/uid/")
    assert profile["InstanceProfile"]["Arn"].endswith(f"instance-profile/karpenter/us-west-2/{CLUSTER}/uid/kp")

    lt = ec2.create_launch_template(
        LaunchTemplateName="karpenter.k8s.aws/123",
        LaunchTemplateData={"ImageId": testbed.seed["amis"]["1.31"]["al2023"]["x86_64/standard"]["recommended"]},
        TagSpecifications=[{"ResourceType": "launch-template", "Tags": [{"Key": "eks:eks-cluster-name", "Value": CLUSTER}]}],
    )["LaunchTemplate"]
    found = ec2.describe_launch_templates(Filters=[{"Name": "tag:eks:eks-cluster-name", "Values": [CLUSTER]}])["LaunchTemplates"]
    assert [t["LaunchTemplateId"] for t in found] == [lt["LaunchTemplateId"]]
    ec2.delete_launch_template(LaunchTemplateId=lt["LaunchTemplateId"])
    with pytest.raises(ClientError) as exc:
        ec2.delete_launch_template(LaunchTemplateName="karpenter.k8s.aws/123")
    assert err(exc) == (400, "InvalidLaunchTemplateName.NotFoundException")
    with pytest.raises(ClientError) as exc:
        ec2.delete_launch_template(LaunchTemplateId=lt["LaunchTemplateId"])
    assert err(exc) == (400, "InvalidLaunchTemplateId.NotFound")

    node = testbed.seed["nodegroup"]["instance_ids"][0]
    ec2.create_tags(Resources=[node], Tags=[{"Key": "karpenter.sh/nodepool", "Value": "default"}])
    ec2.delete_tags(Resources=[node], Tags=[{"Key": "karpenter.sh/nodepool"}])
    tags = ec2.describe_instances(InstanceIds=[node])["Reservations"][0]["Instances"][0]["Tags"]
    assert "karpenter.sh/nodepool" not in {t["Key"] for t in tags}
    assert ec2.terminate_instances(InstanceIds=[node])["TerminatingInstances"][0]["CurrentState"]["Name"] in (
        "shutting-down", "terminated")


# ------------------------------------------------------------------------------------------------- Karpenter's pricing


def _on_demand(pricing, region: str, **fields) -> dict[str, float]:
    filters = [{"Field": "regionCode", "Type": "TERM_MATCH", "Value": region}] + [
        {"Field": k, "Type": "TERM_MATCH", "Value": v} for k, v in fields.items()]
    out = {}
    for page in pricing.get_paginator("get_products").paginate(ServiceCode="AmazonEC2", Filters=filters, MaxResults=100):
        assert len(page["PriceList"]) <= 100
        for raw in page["PriceList"]:
            item = json.loads(raw)
            attrs = item["product"]["attributes"]
            top = {"productFamily": item["product"]["productFamily"], "serviceCode": item["serviceCode"]}
            for k, v in fields.items():
                assert top.get(k, attrs.get(k)) == v, (k, item)
            (term,) = item["terms"]["OnDemand"].values()
            (dim,) = term["priceDimensions"].values()
            out[attrs["instanceType"]] = float(dim["pricePerUnit"]["USD"])
    return out


def test_pricing_get_products_answers_karpenters_queries(testbed):
    # Karpenter's two on-demand queries (shared compute and dedicated bare metal), with its filters.
    pricing = testbed.client("pricing", region_name="us-east-1")
    common = {"serviceCode": "AmazonEC2", "preInstalledSw": "NA", "operatingSystem": "Linux",
              "capacitystatus": "Used", "marketoption": "OnDemand"}
    shared = _on_demand(pricing, "us-west-2", tenancy="Shared", productFamily="Compute Instance", **common)
    metal = _on_demand(pricing, "us-west-2", tenancy="Dedicated", productFamily="Compute Instance (bare metal)", **common)
    assert len(shared) > 1000 and len(metal) > 100
    assert all(t.endswith("metal") or "metal-" in t for t in metal)
    assert shared["m5.large"] == 0.096  # anchored on the real m5.large price
    # Every family Karpenter users pick exists, and bigger or accelerated costs more.
    for t in ("c5.large", "m5.large", "r5.large", "g4dn.xlarge", "g5.xlarge", "p4d.24xlarge", "p5.48xlarge",
              "inf2.xlarge", "trn1.2xlarge"):
        assert shared[t] > 0, t
    assert shared["c5.large"] < shared["m5.large"] < shared["r5.large"] < shared["m5.xlarge"]
    assert shared["m5.xlarge"] < shared["g4dn.xlarge"] < shared["g5.xlarge"] < shared["p4d.24xlarge"]
    assert shared["m6g.large"] < shared["m5.large"]  # Graviton is cheaper
    # Deterministic, and the same instance type costs more on Windows.
    assert _on_demand(pricing, "us-west-2", tenancy="Shared", productFamily="Compute Instance", **common) == shared
    win = _on_demand(pricing, "us-west-2", instanceType="m5.large", operatingSystem="Windows", tenancy="Shared")
    assert win["m5.large"] > shared["m5.large"]
    assert testbed.requests()["counts"]["pricing:GetProducts"] >= 20


def test_pricing_errors_have_the_api_shapes(testbed):
    pricing = testbed.client("pricing", region_name="us-east-1")
    with pytest.raises(ClientError) as exc:
        pricing.get_products(ServiceCode="AmazonS3")
    assert err(exc) == (404, "NotFoundException")
    with pytest.raises(ClientError) as exc:
        pricing.get_products(ServiceCode="AmazonEC2", MaxResults=101)
    assert err(exc) == (400, "InvalidParameterException")
    with pytest.raises(ClientError) as exc:
        pricing.get_products(ServiceCode="AmazonEC2", NextToken="bogus")
    assert err(exc) == (400, "InvalidNextTokenException")
    first = pricing.get_products(ServiceCode="AmazonEC2", MaxResults=5,
                                 Filters=[{"Field": "regionCode", "Type": "TERM_MATCH", "Value": "us-west-2"}])
    assert len(first["PriceList"]) == 5 and first["NextToken"]
    with pytest.raises(ClientError) as exc:  # a token only continues the query it came from
        pricing.get_products(ServiceCode="AmazonEC2", MaxResults=5, NextToken=first["NextToken"])
    assert err(exc) == (400, "InvalidNextTokenException")


def test_spot_prices_are_a_deterministic_fraction_of_on_demand_per_zone(testbed):
    ec2 = testbed.client("ec2")
    rows = [r for page in ec2.get_paginator("describe_spot_price_history").paginate(
        ProductDescriptions=["Linux/UNIX", "Linux/UNIX (Amazon VPC)"], MaxResults=2000) for r in page["SpotPriceHistory"]]
    assert len(rows) > 4000
    assert {r["ProductDescription"] for r in rows} == {"Linux/UNIX"}
    m5 = {r["AvailabilityZone"]: float(r["SpotPrice"]) for r in rows if r["InstanceType"] == "m5.large"}
    assert {"us-west-2a", "us-west-2b", "us-west-2c"} <= set(m5)
    assert all(0.25 * 0.096 <= p <= 0.70 * 0.096 for p in m5.values()), m5
    assert len(set(m5.values())) > 1  # zones differ
    again = ec2.describe_spot_price_history(InstanceTypes=["m5.large"], ProductDescriptions=["Linux/UNIX"],
                                            Filters=[{"Name": "availability-zone", "Values": ["us-west-2a"]}])
    assert [float(r["SpotPrice"]) for r in again["SpotPriceHistory"]] == [m5["us-west-2a"]]
    assert testbed.requests()["counts"]["ec2:DescribeSpotPriceHistory"] >= 4


def test_placement_groups_and_capacity_reservations_are_stateful(testbed):
    ec2 = testbed.client("ec2")
    # What Karpenter asks when nothing is selected: empty lists, not errors.
    assert ec2.describe_placement_groups(Filters=[{"Name": "state", "Values": ["available"]}])["PlacementGroups"] == []
    assert ec2.describe_capacity_reservations(Filters=[{"Name": "state", "Values": ["active"]}],
                                              MaxResults=1000)["CapacityReservations"] == []
    pg = ec2.create_placement_group(GroupName="efa", Strategy="cluster", TagSpecifications=[
        {"ResourceType": "placement-group", "Tags": [{"Key": "team", "Value": "ml"}]}])["PlacementGroup"]
    assert pg["GroupId"].startswith("pg-") and pg["State"] == "available"
    with pytest.raises(ClientError) as exc:
        ec2.create_placement_group(GroupName="efa", Strategy="cluster")
    assert err(exc) == (400, "InvalidPlacementGroup.Duplicate")
    found = ec2.describe_placement_groups(Filters=[{"Name": "tag:team", "Values": ["ml"]}])["PlacementGroups"]
    assert [g["GroupName"] for g in found] == ["efa"]
    assert ec2.describe_placement_groups(GroupIds=[pg["GroupId"]])["PlacementGroups"][0]["Strategy"] == "cluster"
    ec2.delete_placement_group(GroupName="efa")
    with pytest.raises(ClientError) as exc:
        ec2.describe_placement_groups(GroupNames=["efa"])
    assert err(exc) == (400, "InvalidPlacementGroup.Unknown")

    cr = ec2.create_capacity_reservation(InstanceType="g5.xlarge", InstancePlatform="Linux/UNIX",
                                         AvailabilityZone="us-west-2a", InstanceCount=2, InstanceMatchCriteria="targeted",
                                         TagSpecifications=[{"ResourceType": "capacity-reservation",
                                                             "Tags": [{"Key": "karpenter", "Value": "yes"}]}])["CapacityReservation"]
    assert cr["State"] == "active" and cr["AvailableInstanceCount"] == 2 and cr["OwnerId"] == ACCOUNT
    by_tag = ec2.describe_capacity_reservations(Filters=[{"Name": "state", "Values": ["active"]},
                                                         {"Name": "tag:karpenter", "Values": ["yes"]},
                                                         {"Name": "instance-match-criteria", "Values": ["targeted"]}])
    assert [c["CapacityReservationId"] for c in by_tag["CapacityReservations"]] == [cr["CapacityReservationId"]]
    ec2.cancel_capacity_reservation(CapacityReservationId=cr["CapacityReservationId"])
    assert ec2.describe_capacity_reservations(Filters=[{"Name": "state", "Values": ["active"]}])["CapacityReservations"] == []
    with pytest.raises(ClientError) as exc:
        ec2.describe_capacity_reservations(CapacityReservationIds=["cr-0123456789abcdef0"])
    assert err(exc) == (400, "InvalidCapacityReservationId.NotFound")
    with pytest.raises(ClientError) as exc:
        ec2.create_capacity_reservation(InstanceType="m5.large", InstancePlatform="Linux/UNIX",
                                        AvailabilityZone="us-west-2z", InstanceCount=1)
    assert err(exc) == (400, "InvalidParameterValue")
    # A reset forgets them, like the rest of moto's state.
    testbed.reset()
    assert ec2.describe_capacity_reservations()["CapacityReservations"] == []
