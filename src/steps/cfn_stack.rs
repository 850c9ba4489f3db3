/*!
Step `cfn-stack/<name>`: the Karpenter CloudFormation stack (node role,
controller policies, interruption queue and rules) from karpctl's own template.
(Being implemented.)
*/

use std::collections::BTreeMap;

use serde_json::Value;

pub struct CfnStack {
    pub stack_name: String,
    /// The rendered template (render::cfn::template), as JSON.
    pub template: Value,
    /// Stack tags; always includes `karpctl.io/cluster`.
    pub tags: BTreeMap<String, String>,
    /// Replacing a stack in ROLLBACK_COMPLETE needs `--yes`.
    pub cfn: aws_sdk_cloudformation::Client,
}

pub fn id(stack_name: &str) -> String {
    format!("cfn-stack/{stack_name}")
}
