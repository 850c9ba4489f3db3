/*!
Typed shapes of everything karpctl produces: Karpenter v1 objects, Helm values,
the CloudFormation template, and the table of what each Karpenter version adds.
*/

pub mod cfn;
pub mod helm;
pub mod karpenter;
pub mod version;
