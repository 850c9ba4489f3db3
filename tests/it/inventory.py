"""Everything in the AWS emulator that `karpctl up` can create or `rollback` can
remove, listed with boto3 (the emulator's own SDK, independent of karpctl's),
one sorted list per kind, as JSON on stdout. Run with the emulator's venv
python; the endpoint and cluster come from the environment (see crash.rs).
"""

import json
import os

import boto3

endpoint = os.environ["INVENTORY_ENDPOINT"]
cluster = os.environ["INVENTORY_CLUSTER"]
region = os.environ.get("INVENTORY_REGION", "us-west-2")


def client(service):
    return boto3.client(service, endpoint_url=endpoint, region_name=region,
                        aws_access_key_id="testing", aws_secret_access_key="testing")


cfn, iam, sqs, events, ec2, eks = (client(s) for s in ("cloudformation", "iam", "sqs", "events", "ec2", "eks"))
out = {}

stacks = [s for s in cfn.list_stacks()["StackSummaries"] if s["StackStatus"] != "DELETE_COMPLETE"]
out["stacks"] = sorted(f'{s["StackName"]} {s["StackStatus"]}' for s in stacks)
# What each live stack holds, by type: an orphan is something of that type outside every stack.
owned = {}
for s in stacks:
    for r in cfn.describe_stack_resources(StackName=s["StackName"])["StackResources"]:
        owned.setdefault(r["ResourceType"], []).append(r.get("PhysicalResourceId", ""))
out["stack_resources"] = sorted(f"{t} {p}" for t, ps in owned.items() for p in ps)

out["roles"] = sorted(r["RoleName"] for r in iam.list_roles(MaxItems=1000)["Roles"])
out["instance_profiles"] = sorted(
    p["InstanceProfileName"] + " [" + ",".join(r["RoleName"] for r in p["Roles"]) + "]"
    for p in iam.list_instance_profiles(MaxItems=1000)["InstanceProfiles"])
out["policies"] = sorted(p["PolicyName"] for p in iam.list_policies(Scope="Local", MaxItems=1000)["Policies"])
out["oidc_providers"] = sorted(p["Arn"] for p in iam.list_open_id_connect_providers()["OpenIDConnectProviderList"])
out["sqs_queues"] = sorted(u.rsplit("/", 1)[-1] for u in sqs.list_queues().get("QueueUrls", []))
out["event_rules"] = sorted(r["Name"] for r in events.list_rules()["Rules"])
out["launch_templates"] = sorted(t["LaunchTemplateName"] for t in ec2.describe_launch_templates()["LaunchTemplates"])
live_lts = {t["LaunchTemplateId"] for t in ec2.describe_launch_templates()["LaunchTemplates"]}
for key in ("karpenter.sh/discovery", "karpctl.io/discovery-tagged", "karpctl.io/cluster"):
    tags = ec2.describe_tags(Filters=[{"Name": "key", "Values": [key]}])["Tags"]
    # moto keeps a deleted launch template's tags; only live ones count.
    out[f"ec2_tags {key}"] = sorted(f'{t["ResourceId"]}={t["Value"]}' for t in tags
                                    if not t["ResourceId"].startswith("lt-") or t["ResourceId"] in live_lts)
out["access_entries"] = sorted(eks.list_access_entries(clusterName=cluster)["accessEntries"])
assocs = []
for a in eks.list_pod_identity_associations(clusterName=cluster)["associations"]:
    d = eks.describe_pod_identity_association(clusterName=cluster, associationId=a["associationId"])["association"]
    assocs.append(f'{a["namespace"]}/{a["serviceAccount"]} -> {d["roleArn"].rsplit("/", 1)[-1]}')
out["pod_identity_associations"] = sorted(assocs)
instances = ec2.describe_instances(Filters=[{"Name": "instance-state-name", "Values": ["pending", "running"]}])
out["running_instances"] = [str(sum(len(r["Instances"]) for r in instances["Reservations"]))]

print(json.dumps(out))
