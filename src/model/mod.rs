/*!
Typed shapes of everything karpctl produces: Karpenter v1 objects, Helm values,
the CloudFormation template and the controller's IAM policies, and the table of
what each Karpenter version adds.
*/

pub mod cfn;
pub mod helm;
pub mod iam;
pub mod karpenter;
pub mod ownership;
pub mod version;
