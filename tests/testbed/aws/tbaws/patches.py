"""In-process fixes for gaps in moto that cannot be closed from the WSGI layer.

Every function here fixes one behaviour that was observed to differ from AWS when driving moto with boto3 (see the
gap list in tests/testbed/README.md). They are applied once, at start-up, before the first request, and are written
against the moto version pinned in requirements.txt; ``apply_all`` refuses to run against another version unless
``KARPCTL_TESTBED_ALLOW_MOTO_DRIFT=1`` is set, because the patched internals may have moved.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

import moto

PINNED_MOTO = "5.2.5"

_applied = False


def _doc(value: Any) -> Any:
    """CloudFormation allows policy documents as JSON strings (the Karpenter template builds them with Fn::Sub)."""
    if isinstance(value, str):
        return json.loads(value)
    return value


def _partition(region: str) -> str:
    from moto.utilities.utils import get_partition

    return get_partition(region)


# --------------------------------------------------------------------------------------------- CloudFormation: IAM


def _patch_cfn_managed_policy() -> None:
    from moto.iam import models as iam_models

    cls = iam_models.ManagedPolicy
    orig_create = cls.create_from_cloudformation_json.__func__

    def create(klass, resource_name, cloudformation_json, account_id, region_name, **kwargs):
        props = cloudformation_json.setdefault("Properties", {})
        if "PolicyDocument" in props:
            props["PolicyDocument"] = _doc(props["PolicyDocument"])
        return orig_create(klass, resource_name, cloudformation_json, account_id, region_name, **kwargs)

    def update(klass, original_resource, new_resource_name, cloudformation_json, account_id, region_name):
        backend = iam_models.iam_backends[account_id][_partition(region_name)]
        props = cloudformation_json.get("Properties", {})
        new_name = props.get("ManagedPolicyName", original_resource.name)
        new_path = props.get("Path") or "/"
        if new_name != original_resource.name or new_path != (original_resource.path or "/"):
            # Replacement: CloudFormation creates the new policy, then deletes the old one.
            replacement = create(klass, new_resource_name, cloudformation_json, account_id, region_name)
            delete(klass, original_resource.arn, {}, account_id, region_name)
            return replacement
        policy = original_resource
        document = json.dumps(_doc(props.get("PolicyDocument", {})))
        current = backend.get_policy_version(policy.arn, policy.default_version_id)
        if json.loads(current.document) != json.loads(document):
            if len(policy.versions) >= 5:
                oldest = next(v for v in policy.versions if v.version_id != policy.default_version_id)
                backend.delete_policy_version(policy.arn, oldest.version_id)
            backend.create_policy_version(policy.arn, document, set_as_default=True)
        # attachments declared on the policy itself
        for prop, attached, attach, detach in (
            ("Roles", "roles", backend.attach_role_policy, backend.detach_role_policy),
            ("Users", "users", backend.attach_user_policy, backend.detach_user_policy),
            ("Groups", "groups", backend.attach_group_policy, backend.detach_group_policy),
        ):
            wanted = set(props.get(prop, []) or [])
            have = {o.name for o in getattr(backend, attached).values() if policy.arn in o.managed_policies}
            for name in wanted - have:
                attach(policy.arn, name)
            for name in have - wanted:
                detach(policy.arn, name)
        return policy

    def delete(klass, resource_name, cloudformation_json, account_id, region_name):
        backend = iam_models.iam_backends[account_id][_partition(region_name)]
        arn = resource_name
        if arn not in backend.managed_policies:
            return
        for role in list(backend.roles.values()):
            if arn in role.managed_policies:
                backend.detach_role_policy(arn, role.name)
        for user in list(backend.users.values()):
            if arn in user.managed_policies:
                backend.detach_user_policy(arn, user.name)
        for group in list(backend.groups.values()):
            if arn in group.managed_policies:
                backend.detach_group_policy(arn, group.name)
        backend.delete_policy(arn)

    cls.create_from_cloudformation_json = classmethod(create)
    cls.update_from_cloudformation_json = classmethod(update)
    cls.delete_from_cloudformation_json = classmethod(delete)


def _patch_cfn_role() -> None:
    from moto.iam import models as iam_models

    cls = iam_models.Role
    orig_create = cls.create_from_cloudformation_json.__func__
    orig_delete = cls.delete_from_cloudformation_json.__func__

    def create(klass, resource_name, cloudformation_json, account_id, region_name, **kwargs):
        props = cloudformation_json.setdefault("Properties", {})
        for policy in props.get("Policies", []) or []:
            policy["PolicyDocument"] = json.dumps(_doc(policy["PolicyDocument"]))
        role = orig_create(klass, resource_name, cloudformation_json, account_id, region_name, **kwargs)
        backend = iam_models.iam_backends[account_id][_partition(region_name)]
        for arn in props.get("ManagedPolicyArns", []) or []:
            backend.attach_role_policy(arn, role.name)
        return role

    def update(klass, original_resource, new_resource_name, cloudformation_json, account_id, region_name):
        backend = iam_models.iam_backends[account_id][_partition(region_name)]
        props = cloudformation_json.get("Properties", {})
        role = original_resource
        new_name = props.get("RoleName", role.name)
        if new_name != role.name or (props.get("Path") or "/") != (role.path or "/"):
            replacement = create(klass, new_resource_name, cloudformation_json, account_id, region_name)
            delete(klass, role.name, {}, account_id, region_name)
            return replacement
        if "AssumeRolePolicyDocument" in props:
            backend.update_assume_role_policy(role.name, json.dumps(_doc(props["AssumeRolePolicyDocument"])))
        backend.update_role(role.name, props.get("Description", ""), props.get("MaxSessionDuration", 3600))
        wanted = list(props.get("ManagedPolicyArns", []) or [])
        for arn in list(role.managed_policies):
            if arn not in wanted:
                backend.detach_role_policy(arn, role.name)
        for arn in wanted:
            if arn not in role.managed_policies:
                backend.attach_role_policy(arn, role.name)
        inline = {p["PolicyName"]: json.dumps(_doc(p["PolicyDocument"])) for p in props.get("Policies", []) or []}
        for name in list(role.policies):
            if name not in inline:
                backend.delete_role_policy(role.name, name)
        for name, doc in inline.items():
            backend.put_role_policy(role.name, name, doc)
        return role

    def delete(klass, resource_name, cloudformation_json, account_id, region_name):
        backend = iam_models.iam_backends[account_id][_partition(region_name)]
        role = next((r for r in backend.roles.values() if r.name == resource_name), None)
        if role is None:
            return
        for arn in list(role.managed_policies):
            backend.detach_role_policy(arn, role.name)
        orig_delete(klass, resource_name, cloudformation_json, account_id, region_name)

    cls.create_from_cloudformation_json = classmethod(create)
    cls.update_from_cloudformation_json = classmethod(update)
    cls.delete_from_cloudformation_json = classmethod(delete)


# --------------------------------------------------------------------------------------------- CloudFormation: SQS


_QUEUE_PROPS = {
    "DelaySeconds": "DelaySeconds",
    "MaximumMessageSize": "MaximumMessageSize",
    "MessageRetentionPeriod": "MessageRetentionPeriod",
    "ReceiveMessageWaitTimeSeconds": "ReceiveMessageWaitTimeSeconds",
    "VisibilityTimeout": "VisibilityTimeout",
    "SqsManagedSseEnabled": "SqsManagedSseEnabled",
    "KmsMasterKeyId": "KmsMasterKeyId",
    "KmsDataKeyReusePeriodSeconds": "KmsDataKeyReusePeriodSeconds",
    "RedrivePolicy": "RedrivePolicy",
}


def _queue_attr_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)


def _patch_cfn_sqs() -> None:
    from moto.cloudformation import parsing
    from moto.core.common_models import CloudFormationModel
    from moto.sqs import models as sqs_models

    qcls = sqs_models.Queue
    orig_update = qcls.update_from_cloudformation_json.__func__

    def queue_update(klass, original_resource, new_resource_name, cloudformation_json, account_id, region_name):
        queue = orig_update(klass, original_resource, new_resource_name, cloudformation_json, account_id, region_name)
        props = cloudformation_json.get("Properties", {})
        attrs = {attr: _queue_attr_value(props[prop]) for prop, attr in _QUEUE_PROPS.items() if prop in props}
        if attrs:
            sqs_models.sqs_backends[account_id][region_name].set_queue_attributes(queue.name, attrs)
        return queue

    qcls.update_from_cloudformation_json = classmethod(queue_update)

    class QueuePolicy(CloudFormationModel):
        """AWS::SQS::QueuePolicy (moto ignores this resource type)."""

        def __init__(self, name: str, queue_urls: list, document: Any, account_id: str, region_name: str):
            self.name = name
            self.queue_urls = list(queue_urls)
            self.document = document
            self.account_id = account_id
            self.region_name = region_name

        @staticmethod
        def cloudformation_name_type() -> str:
            return ""

        @staticmethod
        def cloudformation_type() -> str:
            return "AWS::SQS::QueuePolicy"

        @classmethod
        def has_cfn_attr(cls, attr: str) -> bool:
            return attr == "Id"

        def get_cfn_attribute(self, attribute_name: str) -> Any:
            if attribute_name == "Id":
                return self.name
            from moto.cloudformation.exceptions import UnformattedGetAttTemplateException

            raise UnformattedGetAttTemplateException()

        @property
        def physical_resource_id(self) -> str:
            return self.name

        def is_created(self) -> bool:
            return True

        def _backend(self):
            return sqs_models.sqs_backends[self.account_id][self.region_name]

        def _apply(self) -> None:
            policy = json.dumps(_doc(self.document))
            for url in self.queue_urls:
                self._backend().set_queue_attributes(url.rstrip("/").rsplit("/", 1)[-1], {"Policy": policy})

        def _remove(self, urls: list) -> None:
            for url in urls:
                name = url.rstrip("/").rsplit("/", 1)[-1]
                try:
                    self._backend().set_queue_attributes(name, {"Policy": ""})
                except Exception:
                    pass  # the queue is already gone

        @classmethod
        def create_from_cloudformation_json(cls, resource_name, cloudformation_json, account_id, region_name, **kwargs):
            props = cloudformation_json.get("Properties", {})
            if not props.get("Queues") or "PolicyDocument" not in props:
                raise ValueError("AWS::SQS::QueuePolicy requires Queues and PolicyDocument")
            policy = cls(resource_name, props["Queues"], props["PolicyDocument"], account_id, region_name)
            policy._apply()
            return policy

        @classmethod
        def update_from_cloudformation_json(
            cls, original_resource, new_resource_name, cloudformation_json, account_id, region_name
        ):
            props = cloudformation_json.get("Properties", {})
            removed = [u for u in original_resource.queue_urls if u not in props.get("Queues", [])]
            original_resource._remove(removed)
            original_resource.queue_urls = list(props.get("Queues", []))
            original_resource.document = props.get("PolicyDocument")
            original_resource._apply()
            return original_resource

        @classmethod
        def delete_from_cloudformation_json(cls, resource_name, cloudformation_json, account_id, region_name):
            return None

        def delete(self, account_id: str, region_name: str) -> None:
            self._remove(self.queue_urls)

    parsing.get_model_list.cache_clear()
    parsing.get_model_map.cache_clear()
    parsing.get_name_type_map.cache_clear()


# ------------------------------------------------------------------ CloudFormation: events, failures, capabilities


def _patch_cfn_stack_lifecycle() -> None:
    from moto.cloudformation import models as cfn_models
    from moto.cloudformation import parsing

    def stack_for(resources_map):
        try:
            backend = cfn_models.cloudformation_backends[resources_map._account_id][resources_map._region_name]
        except Exception:
            return None
        return backend.stacks.get(resources_map.stack_id)

    def add_event(stack, logical_id, physical_id, rtype, status, reason=None):
        if stack is None:
            return
        stack.events.append(
            cfn_models.Event(
                stack_id=stack.stack_id,
                stack_name=stack.name,
                logical_resource_id=logical_id,
                physical_resource_id=physical_id or "",
                resource_type=rtype,
                resource_status=status,
                resource_status_reason=reason,
                resource_properties=None,
            )
        )

    def physical_id(resource) -> str:
        try:
            return str(resource.physical_resource_id)
        except Exception:
            return ""

    orig_create = parsing.parse_and_create_resource
    orig_update = parsing.parse_and_update_resource

    def create_resource(logical_id, resource_json, resources_map, account_id, region_name):
        stack = stack_for(resources_map)
        rtype = resource_json.get("Type", "")
        condition = resource_json.get("Condition")
        if condition and not resources_map.lazy_condition_map[condition]:
            return orig_create(logical_id, resource_json, resources_map, account_id, region_name)
        add_event(stack, logical_id, "", rtype, "CREATE_IN_PROGRESS")
        try:
            resource = orig_create(logical_id, resource_json, resources_map, account_id, region_name)
        except Exception as exc:
            add_event(stack, logical_id, "", rtype, "CREATE_FAILED", f"Resource handler returned message: {exc}")
            if stack is not None and not getattr(stack, "_tb_failed", None):
                stack._tb_failed = logical_id
            raise
        add_event(stack, logical_id, physical_id(resource) if resource is not None else "", rtype, "CREATE_COMPLETE")
        return resource

    def update_resource(logical_id, resource_json, resources_map, account_id, region_name):
        stack = stack_for(resources_map)
        rtype = resource_json.get("Type", "")
        add_event(stack, logical_id, "", rtype, "UPDATE_IN_PROGRESS")
        try:
            resource = orig_update(logical_id, resource_json, resources_map, account_id, region_name)
        except Exception as exc:
            add_event(stack, logical_id, "", rtype, "UPDATE_FAILED", f"Resource handler returned message: {exc}")
            raise
        add_event(stack, logical_id, physical_id(resource) if resource is not None else "", rtype, "UPDATE_COMPLETE")
        return resource

    parsing.parse_and_create_resource = create_resource
    parsing.parse_and_update_resource = update_resource

    orig_delete_resource = parsing.ResourceMap._delete_resource

    def delete_resource(self, parsed_resource, resource_json):
        orig_delete_resource(self, parsed_resource, resource_json)
        stack = stack_for(self)
        logical = getattr(parsed_resource, "logical_resource_id", "")
        rtype = resource_json.get("Type", "")
        add_event(stack, logical, physical_id(parsed_resource), rtype, "DELETE_IN_PROGRESS")
        add_event(stack, logical, physical_id(parsed_resource), rtype, "DELETE_COMPLETE")

    parsing.ResourceMap._delete_resource = delete_resource

    Stack = cfn_models.Stack
    orig_create_resources = Stack.create_resources
    orig_stack_update = Stack.update
    orig_stack_delete = Stack.delete

    def create_resources(self):
        try:
            orig_create_resources(self)
        except Exception as exc:
            failed = getattr(self, "_tb_failed", None) or "unknown"
            self._add_stack_event(
                "ROLLBACK_IN_PROGRESS",
                resource_status_reason=f"The following resource(s) failed to create: [{failed}]. "
                "Rollback requested by user.",
            )
            self.status = "ROLLBACK_IN_PROGRESS"
            try:
                self.resource_map.delete()
                self.status = "ROLLBACK_COMPLETE"
                self._add_stack_event("ROLLBACK_COMPLETE")
            except Exception as rollback_exc:  # pragma: no cover - depends on moto internals
                self.status = "ROLLBACK_FAILED"
                self._add_stack_event("ROLLBACK_FAILED", resource_status_reason=str(rollback_exc))
            self._tb_create_error = str(exc)

    def update(self, template, role_arn=None, parameters=None, tags=None):
        old_template, old_template_dict = self.template, self.template_dict
        old_params = dict(self.resource_map.input_parameters or {})
        try:
            orig_stack_update(self, template, role_arn=role_arn, parameters=parameters, tags=tags)
        except Exception as exc:
            self._add_stack_event("UPDATE_ROLLBACK_IN_PROGRESS", resource_status_reason=str(exc))
            try:
                self.template = old_template
                self.template_dict = old_template_dict
                self.resource_map.update(old_template_dict, old_params)
                self.output_map = self._create_output_map()
                self.status = "UPDATE_ROLLBACK_COMPLETE"
                self._add_stack_event("UPDATE_ROLLBACK_COMPLETE")
            except Exception as rollback_exc:  # pragma: no cover
                self.status = "UPDATE_ROLLBACK_FAILED"
                self._add_stack_event("UPDATE_ROLLBACK_FAILED", resource_status_reason=str(rollback_exc))

    def delete(self):
        try:
            orig_stack_delete(self)
        except Exception as exc:
            self.status = "DELETE_FAILED"
            self._add_stack_event("DELETE_FAILED", resource_status_reason=str(exc))
            raise _StackDeleteFailed() from exc

    Stack.create_resources = create_resources
    Stack.update = update
    Stack.delete = delete

    # moto builds resources lazily: reading the outputs (or resources) of a rolled-back stack would try to create
    # the failed resource again. AWS reports no outputs and no live resources for such stacks.
    dead = ("ROLLBACK_IN_PROGRESS", "ROLLBACK_COMPLETE", "ROLLBACK_FAILED", "CREATE_FAILED", "DELETE_COMPLETE")
    orig_outputs = Stack.outputs.fget
    orig_resources = Stack.stack_resources.fget
    Stack.outputs = property(lambda self: None if self.status in dead else orig_outputs(self))
    Stack.stack_resources = property(lambda self: [] if self.status in dead else orig_resources(self))

    Backend = cfn_models.CloudFormationBackend
    orig_delete_stack = Backend.delete_stack

    def delete_stack(self, name_or_stack_id):
        # A stack whose deletion failed stays visible as DELETE_FAILED, as in AWS.
        target = self.stacks.get(name_or_stack_id) or next(
            (s for s in self.stacks.values() if s.name == name_or_stack_id), None
        )
        try:
            orig_delete_stack(self, name_or_stack_id)
        except _StackDeleteFailed:
            if target is not None:
                self.stacks[target.stack_id] = target
                self.deleted_stacks.pop(target.stack_id, None)

    Backend.delete_stack = delete_stack


class _StackDeleteFailed(Exception):
    pass


_NAMED_IAM_PROPS = {
    "AWS::IAM::Role": "RoleName",
    "AWS::IAM::ManagedPolicy": "ManagedPolicyName",
    "AWS::IAM::InstanceProfile": "InstanceProfileName",
    "AWS::IAM::User": "UserName",
    "AWS::IAM::Group": "GroupName",
}


def required_capability(template: dict) -> str | None:
    """The IAM capability CloudFormation requires for this template, if any."""
    needed = None
    for resource in (template.get("Resources") or {}).values():
        rtype = resource.get("Type", "") if isinstance(resource, dict) else ""
        if not rtype.startswith("AWS::IAM::"):
            continue
        needed = needed or "CAPABILITY_IAM"
        prop = _NAMED_IAM_PROPS.get(rtype)
        if prop and prop in (resource.get("Properties") or {}):
            return "CAPABILITY_NAMED_IAM"
    return needed


def _patch_cfn_capabilities() -> None:
    from moto.cloudformation import models as cfn_models
    from moto.cloudformation import responses as cfn_responses
    from moto.cloudformation.exceptions import CloudFormationError

    class InsufficientCapabilities(CloudFormationError):
        code = "InsufficientCapabilitiesException"

    def check(self) -> None:
        body = self._get_param("TemplateBody")
        if body is None and str(self._get_param("UsePreviousTemplate", "")).lower() == "true":
            backend = self.cloudformation_backend
            stack = backend.get_stack(self._get_param("StackName"))
            body = stack.template
        if not isinstance(body, str):
            return  # TemplateURL: moto fetches it later; not checked here
        try:
            template = cfn_models.Stack.parse_template(body)
        except Exception:
            return  # let moto produce its own validation error
        if not isinstance(template, dict):
            return
        needed = required_capability(template)
        if needed is None:
            return
        caps = set(self._get_param("Capabilities", []) or [])
        if needed in caps or (needed == "CAPABILITY_IAM" and "CAPABILITY_NAMED_IAM" in caps):
            return
        raise InsufficientCapabilities(f"Requires capabilities : [{needed}]")

    for name in ("create_stack", "update_stack"):
        orig = getattr(cfn_responses.CloudFormationResponse, name)

        def wrapper(self, _orig=orig):
            check(self)
            return _orig(self)

        setattr(cfn_responses.CloudFormationResponse, name, wrapper)


# --------------------------------------------------------------------------------------------------------- IAM

SERVICE_LINKED_ROLE_NAMES = {
    "spot.amazonaws.com": ("AWSServiceRoleForEC2Spot", False, "AWSEC2SpotServiceRolePolicy"),
    "spotfleet.amazonaws.com": ("AWSServiceRoleForEC2SpotFleet", False, "AWSEC2SpotFleetServiceRolePolicy"),
    "eks.amazonaws.com": ("AWSServiceRoleForAmazonEKS", False, "AmazonEKSServiceRolePolicy"),
    "eks-nodegroup.amazonaws.com": ("AWSServiceRoleForAmazonEKSNodegroup", False, "AWSServiceRoleForAmazonEKSNodegroup"),
    "autoscaling.amazonaws.com": ("AWSServiceRoleForAutoScaling", True, "AutoScalingServiceRolePolicy"),
    "elasticloadbalancing.amazonaws.com": ("AWSServiceRoleForElasticLoadBalancing", False, "AWSElasticLoadBalancingServiceRolePolicy"),
}


def _patch_iam_service_linked_roles() -> None:
    from moto.iam import models as iam_models
    from moto.iam.exceptions import InvalidInput

    orig = iam_models.IAMBackend.create_service_linked_role

    def create_service_linked_role(self, service_name, description, suffix):
        known = SERVICE_LINKED_ROLE_NAMES.get(service_name)
        if known is None:
            return orig(self, service_name, description, suffix)
        base, suffix_allowed, policy_name = known
        if suffix and not suffix_allowed:
            raise InvalidInput(f"Custom suffix is not allowed for {service_name}")
        role_name = f"{base}_{suffix}" if suffix else base
        if any(r.name == role_name for r in self.roles.values()):
            raise InvalidInput(
                f"Service role name {role_name} has been taken in this account, please try a different suffix."
            )
        trust = {
            "Version": "2012-10-17",
            "Statement": [{"Action": ["sts:AssumeRole"], "Effect": "Allow", "Principal": {"Service": [service_name]}}],
        }
        role = self.create_role(
            role_name,
            json.dumps(trust),
            f"/aws-service-role/{service_name}/",
            permissions_boundary=None,
            description=description,
            tags=[],
            max_session_duration="3600",
            linked_service=service_name,
        )
        policy_arn = f"arn:{self.partition}:iam::aws:policy/aws-service-role/{policy_name}"
        if policy_arn in self.managed_policies:
            self.attach_role_policy(policy_arn, role_name)
        return role

    iam_models.IAMBackend.create_service_linked_role = create_service_linked_role


_MANAGED_POLICY_DATA: dict | None = None


def _patch_iam_managed_policy_loading() -> None:
    """moto re-parses its 1,500 AWS managed policies (~0.3 s) for every IAM backend (one per partition, rebuilt on
    every reset). Parse once, and only populate the commercial partition the testbed uses."""
    from moto.iam import models as iam_models
    from moto.iam.aws_managed_policies import aws_managed_policies_data
    from moto.settings import load_iam_aws_managed_policies

    def _init_aws_policies(self):
        global _MANAGED_POLICY_DATA
        if not load_iam_aws_managed_policies() or self.region_name != "aws":
            return []
        if _MANAGED_POLICY_DATA is None:
            _MANAGED_POLICY_DATA = json.loads(aws_managed_policies_data)
        return [
            iam_models.AWSManagedPolicy.from_data(name, self.account_id, self.region_name, data)
            for name, data in _MANAGED_POLICY_DATA.items()
        ]

    iam_models.IAMBackend._init_aws_policies = _init_aws_policies


# --------------------------------------------------------------------------------------------------------- EC2


def _patch_ec2_delete_launch_template() -> None:
    from moto.ec2.exceptions import EC2ClientError
    from moto.ec2.models import launch_templates

    orig = launch_templates.LaunchTemplateBackend.delete_launch_template

    def delete_launch_template(self, name, tid):
        if name and name not in self.launch_template_name_to_ids:
            raise EC2ClientError(
                "InvalidLaunchTemplateName.NotFoundException",
                f"The specified launch template, with template name {name}, does not exist.",
            )
        if not name and tid and tid not in self.launch_templates:
            raise EC2ClientError(
                "InvalidLaunchTemplateId.NotFound",
                f"The specified launch template, with template ID {tid}, does not exist.",
            )
        return orig(self, name, tid)

    launch_templates.LaunchTemplateBackend.delete_launch_template = delete_launch_template


# --------------------------------------------------------------------------------------------------------- EKS


def _patch_eks() -> None:
    from moto.eks import models as eks_models
    from moto.eks import responses as eks_responses

    from . import eks_ext

    # moto builds a new boto3 Session (~0.5 s) on every role ARN check; the partition list never changes
    import boto3

    partitions = frozenset(boto3.session.Session().get_available_partitions())
    orig_validate = eks_models.validate_role_arn

    def validate_role_arn(arn: str) -> None:
        match = re.match(r"arn:(?P<partition>[^:]+):iam::[0-9]{12}:role/.+", arn or "")
        if not match or match.group("partition") not in partitions:
            orig_validate(arn)  # raises moto's InvalidParameterException with its message

    eks_models.validate_role_arn = validate_role_arn

    orig_create_cluster = eks_responses.EKSResponse.create_cluster

    def create_cluster(self):
        result = orig_create_cluster(self)
        cluster = self.eks_backend.clusters[self._get_param("name")]
        creator = None
        try:
            from moto.sts.models import sts_backends

            sts = sts_backends[self.current_account][_partition(self.region)]
            creator = sts.get_caller_identity(self.get_access_key(), self.region)[1]
        except Exception:
            creator = None
        eks_ext.init_cluster(cluster, self._get_param("accessConfig") or {}, creator)
        return result

    eks_responses.EKSResponse.create_cluster = create_cluster

    orig_create_nodegroup = eks_models.EKSBackend.create_nodegroup

    def create_nodegroup(self, cluster_name, node_role, nodegroup_name, subnets, scaling_config=None, **kwargs):
        cluster = self.clusters.get(cluster_name)
        if cluster is not None:
            kwargs["version"] = kwargs.get("version") or cluster.version
        kwargs["ami_type"] = kwargs.get("ami_type") or "AL2023_x86_64_STANDARD"
        if not kwargs.get("release_version") and kwargs.get("version"):
            kwargs["release_version"] = eks_ext.default_release_version(kwargs["version"])
        # moto shares one default dict between nodegroups and mutates it on update: always pass a private copy
        scaling_config = dict(scaling_config or {"minSize": 1, "maxSize": 2, "desiredSize": 2})
        nodegroup = orig_create_nodegroup(
            self, cluster_name, node_role, nodegroup_name, subnets, scaling_config=scaling_config, **kwargs
        )
        nodegroup.health = {"issues": []}
        if not kwargs.get("remote_access"):
            # moto invents an SSH key and a remote-access security group; EKS reports neither unless asked
            nodegroup.remote_access = None
            nodegroup.resources = {"autoScalingGroups": [{"name": f"eks-{nodegroup_name}-{nodegroup.uuid}"}]}
        eks_ext.on_nodegroup_created(self, cluster, nodegroup)
        return nodegroup

    eks_models.EKSBackend.create_nodegroup = create_nodegroup


def apply_all() -> None:
    global _applied
    if _applied:
        return
    if moto.__version__ != PINNED_MOTO and os.environ.get("KARPCTL_TESTBED_ALLOW_MOTO_DRIFT") != "1":
        raise RuntimeError(
            f"tbaws patches target moto {PINNED_MOTO} but {moto.__version__} is installed; "
            "run scripts/testbed-aws.sh install (or set KARPCTL_TESTBED_ALLOW_MOTO_DRIFT=1 to try anyway)"
        )
    _patch_cfn_managed_policy()
    _patch_cfn_role()
    _patch_cfn_sqs()
    _patch_cfn_stack_lifecycle()
    _patch_cfn_capabilities()
    _patch_iam_service_linked_roles()
    _patch_iam_managed_policy_loading()
    _patch_ec2_delete_launch_template()
    _patch_eks()
    _applied = True
