//! The controller's IAM policy, generated from the same constants the provider tags with, so the
//! policy and the requests cannot drift apart. `stoker iam-policy` prints it; the CloudFormation
//! template and the install guide embed it; `tests/iam_policy.rs` evaluates it with a real IAM
//! policy evaluator against every AWS call the end-to-end tests recorded, and against calls stoker
//! must never be able to make.
//!
//! The shape follows Karpenter's: reads are unscoped (EC2 Describe calls support no resource
//! scoping), everything stoker creates must carry both of its ownership tags in the request,
//! tags may only be written while creating (and, once, the NodeClaim's name on an instance of
//! this cluster launched for several), and terminate, delete and instance-profile changes need
//! both ownership tags on the resource. Only the node role can be passed, only to EC2, and only
//! AWS's public AMI parameters and those named for `ssmParameter` terms can be read.

use serde_json::{Value, json};

use super::tags::ownership_tags;
use crate::apis::labels;

/// Where the policy applies. Each field is either a value or a placeholder the caller
/// substitutes (the CloudFormation template passes `${AWS::Region}` and friends).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyScope {
    /// `aws`, `aws-cn`, `aws-us-gov`, ...
    pub partition: String,
    /// The account the controller runs in.
    pub account: String,
    /// The region, or `*` for any (reads are then not pinned to a region).
    pub region: String,
    /// The DNS suffix of the partition's service principals (`amazonaws.com`, `amazonaws.com.cn`).
    pub url_suffix: String,
    pub cluster: String,
    pub node_role_arn: String,
    /// The interruption queue, when one is used.
    pub interruption_queue_arn: Option<String>,
    /// The SSM parameters `amiSelectorTerms[].ssmParameter` may name, besides AWS's public
    /// ones: names in this account (`*` wildcards allowed) or ARNs (parameters shared by
    /// another account).
    pub ami_parameters: Vec<String>,
}

/// The parameters a policy lets stoker read for `ssmParameter` terms unless told otherwise:
/// the account's own under `/stoker/`.
pub const DEFAULT_AMI_PARAMETERS: &str = "/stoker/*";

/// Why a scope cannot be built from the command line.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScopeError {
    #[error("--node-role-arn must be an IAM role ARN (arn:PARTITION:iam::ACCOUNT:role/NAME), got {0:?}")]
    NodeRoleArn(String),
    #[error("--cluster-name must not be empty")]
    Cluster,
}

impl PolicyScope {
    /// A scope for a real account: partition and account come from the node role's ARN.
    pub fn for_role(
        cluster: &str,
        node_role_arn: &str,
        region: Option<&str>,
        interruption_queue: Option<&str>,
    ) -> Result<Self, ScopeError> {
        if cluster.is_empty() {
            return Err(ScopeError::Cluster);
        }
        let invalid = || ScopeError::NodeRoleArn(node_role_arn.to_owned());
        let mut parts = node_role_arn.splitn(6, ':');
        let (Some("arn"), Some(partition), Some("iam"), Some(""), Some(account), Some(resource)) =
            (parts.next(), parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(invalid());
        };
        if partition.is_empty() || account.is_empty() || !resource.starts_with("role/") || resource.len() == 5 {
            return Err(invalid());
        }
        let region = region.unwrap_or("*").to_owned();
        let interruption_queue_arn = interruption_queue.map(|queue| match queue.starts_with("arn:") {
            true => queue.to_owned(),
            false => format!("arn:{partition}:sqs:{region}:{account}:{queue}"),
        });
        Ok(Self {
            url_suffix: if partition == "aws-cn" { "amazonaws.com.cn" } else { "amazonaws.com" }.to_owned(),
            partition: partition.to_owned(),
            account: account.to_owned(),
            region,
            cluster: cluster.to_owned(),
            node_role_arn: node_role_arn.to_owned(),
            interruption_queue_arn,
            ami_parameters: vec![DEFAULT_AMI_PARAMETERS.to_owned()],
        })
    }

    fn ec2(&self, resource: &str) -> String {
        let Self { partition, region, account, .. } = self;
        // Images and snapshots belong to no account in their ARN (AWS's and other accounts'
        // AMIs are used as well as the caller's).
        match resource.starts_with("image/") || resource.starts_with("snapshot/") {
            true => format!("arn:{partition}:ec2:{region}::{resource}"),
            false => format!("arn:{partition}:ec2:{region}:{account}:{resource}"),
        }
    }

    /// The ARN of an SSM parameter given by name (in this account) or by ARN.
    fn ssm_parameter(&self, parameter: &str) -> String {
        match parameter.starts_with("arn:") {
            true => parameter.to_owned(),
            false => format!(
                "arn:{}:ssm:{}:{}:parameter/{}",
                self.partition,
                self.region,
                self.account,
                parameter.trim_start_matches('/')
            ),
        }
    }

    fn instance_profiles(&self) -> String {
        format!("arn:{}:iam::{}:instance-profile/*", self.partition, self.account)
    }
}

/// The EC2 reads stoker makes; none of them supports resource-level permissions.
pub const DESCRIBE_ACTIONS: [&str; 9] = [
    "ec2:DescribeCapacityReservations",
    "ec2:DescribeImages",
    "ec2:DescribeInstanceTypeOfferings",
    "ec2:DescribeInstanceTypes",
    "ec2:DescribeInstances",
    "ec2:DescribeLaunchTemplates",
    "ec2:DescribeSecurityGroups",
    "ec2:DescribeSpotPriceHistory",
    "ec2:DescribeSubnets",
];

/// What stoker creates in EC2, each tagged with its ownership tags in the request: instances,
/// volumes and the fleet by CreateFleet, network interfaces by the launch template, launch
/// templates by CreateLaunchTemplate.
const CREATED: [&str; 5] = ["fleet/*", "instance/*", "volume/*", "network-interface/*", "launch-template/*"];

/// What a launch uses without creating or owning it. Spot requests are here because EC2 creates
/// them for a spot fleet without taking tags for them from CreateFleet; capacity reservations
/// because a reserved launch names the one it goes into.
const SHARED: [&str; 6] =
    ["image/*", "snapshot/*", "security-group/*", "subnet/*", "spot-instances-request/*", "capacity-reservation/*"];

/// `{"aws:RequestTag/K": V}` or `{"aws:ResourceTag/K": V}` for both ownership tags.
fn ownership(cluster: &str, kind: &str) -> Value {
    let tags = ownership_tags(cluster);
    Value::Object(tags.into_iter().map(|(key, value)| (format!("aws:{kind}/{key}"), Value::String(value))).collect())
}

/// The policy document.
pub fn policy(scope: &PolicyScope) -> Value {
    let arns = |resources: &[&str]| -> Vec<String> { resources.iter().map(|r| scope.ec2(r)).collect() };
    let mut describe = json!({
        "Sid": "DescribeEc2",
        "Effect": "Allow",
        "Action": DESCRIBE_ACTIONS,
        "Resource": "*",
    });
    if scope.region != "*" {
        describe["Condition"] = json!({"StringEquals": {"aws:RequestedRegion": scope.region}});
    }
    let mut tagging_while_creating = ownership(&scope.cluster, "RequestTag");
    tagging_while_creating["ec2:CreateAction"] = json!(["CreateFleet", "CreateLaunchTemplate", "RunInstances"]);
    let mut statements = vec![
        describe,
        json!({
            "Sid": "LaunchWithSharedResources",
            "Effect": "Allow",
            "Action": ["ec2:CreateFleet", "ec2:RunInstances"],
            "Resource": arns(&SHARED),
        }),
        json!({
            "Sid": "LaunchFromThisClustersTemplates",
            "Effect": "Allow",
            "Action": ["ec2:CreateFleet", "ec2:RunInstances"],
            "Resource": scope.ec2("launch-template/*"),
            "Condition": {"StringEquals": ownership(&scope.cluster, "ResourceTag")},
        }),
        json!({
            "Sid": "CreateOnlyWithThisClustersTags",
            "Effect": "Allow",
            "Action": ["ec2:CreateFleet", "ec2:CreateLaunchTemplate", "ec2:RunInstances"],
            "Resource": arns(&CREATED),
            "Condition": {"StringEquals": ownership(&scope.cluster, "RequestTag")},
        }),
        json!({
            "Sid": "TagOnlyWhileCreating",
            "Effect": "Allow",
            "Action": "ec2:CreateTags",
            "Resource": arns(&CREATED),
            "Condition": {"StringEquals": tagging_while_creating},
        }),
        json!({
            "Sid": "NameThisClustersInstancesOnce",
            "Effect": "Allow",
            "Action": "ec2:CreateTags",
            "Resource": scope.ec2("instance/*"),
            "Condition": {
                "StringEquals": ownership(&scope.cluster, "ResourceTag"),
                "ForAllValues:StringEquals": {"aws:TagKeys": [labels::EC2_NODECLAIM_TAG, "Name"]},
                "Null": {format!("aws:ResourceTag/{}", labels::EC2_NODECLAIM_TAG): "true"},
            },
        }),
        json!({
            "Sid": "TerminateAndDeleteOnlyThisClusters",
            "Effect": "Allow",
            "Action": ["ec2:DeleteLaunchTemplate", "ec2:TerminateInstances"],
            "Resource": arns(&["instance/*", "launch-template/*"]),
            "Condition": {"StringEquals": ownership(&scope.cluster, "ResourceTag")},
        }),
        json!({
            "Sid": "ReadAmiParameters",
            "Effect": "Allow",
            "Action": "ssm:GetParameter",
            "Resource": std::iter::once(format!("arn:{}:ssm:{}::parameter/aws/service/*", scope.partition, scope.region))
                .chain(scope.ami_parameters.iter().map(|parameter| scope.ssm_parameter(parameter)))
                .collect::<Vec<_>>(),
        }),
        json!({
            "Sid": "ReadPrices",
            "Effect": "Allow",
            "Action": "pricing:GetProducts",
            "Resource": "*",
        }),
        json!({
            "Sid": "DescribeThisCluster",
            "Effect": "Allow",
            "Action": "eks:DescribeCluster",
            "Resource": format!("arn:{}:eks:{}:{}:cluster/{}", scope.partition, scope.region, scope.account, scope.cluster),
        }),
        json!({
            "Sid": "PassOnlyTheNodeRoleToEc2",
            "Effect": "Allow",
            "Action": "iam:PassRole",
            "Resource": scope.node_role_arn,
            "Condition": {"StringEquals": {"iam:PassedToService": format!("ec2.{}", scope.url_suffix)}},
        }),
        json!({
            "Sid": "ReadInstanceProfiles",
            "Effect": "Allow",
            "Action": "iam:GetInstanceProfile",
            "Resource": scope.instance_profiles(),
        }),
        json!({
            "Sid": "CreateInstanceProfilesWithThisClustersTags",
            "Effect": "Allow",
            "Action": ["iam:CreateInstanceProfile", "iam:TagInstanceProfile"],
            "Resource": scope.instance_profiles(),
            "Condition": {"StringEquals": ownership(&scope.cluster, "RequestTag")},
        }),
        json!({
            "Sid": "ChangeOnlyThisClustersInstanceProfiles",
            "Effect": "Allow",
            "Action": ["iam:AddRoleToInstanceProfile", "iam:DeleteInstanceProfile", "iam:RemoveRoleFromInstanceProfile"],
            "Resource": scope.instance_profiles(),
            "Condition": {"StringEquals": ownership(&scope.cluster, "ResourceTag")},
        }),
        json!({
            "Sid": "CreateSpotServiceLinkedRole",
            "Effect": "Allow",
            "Action": "iam:CreateServiceLinkedRole",
            "Resource": format!("arn:{}:iam::{}:role/aws-service-role/spot.amazonaws.com/*", scope.partition, scope.account),
            "Condition": {"StringEquals": {"iam:AWSServiceName": "spot.amazonaws.com"}},
        }),
    ];
    if let Some(queue) = &scope.interruption_queue_arn {
        statements.push(json!({
            "Sid": "ReadTheInterruptionQueue",
            "Effect": "Allow",
            "Action": ["sqs:DeleteMessage", "sqs:GetQueueUrl", "sqs:ReceiveMessage"],
            "Resource": queue,
        }));
    }
    json!({"Version": "2012-10-17", "Statement": statements})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope() -> PolicyScope {
        PolicyScope::for_role("prod", "arn:aws:iam::111122223333:role/StokerNode-prod", Some("eu-west-1"), Some("prod"))
            .unwrap()
    }

    #[test]
    fn partition_and_account_come_from_the_node_role() {
        let china = PolicyScope::for_role("c", "arn:aws-cn:iam::210987654321:role/n", None, None).unwrap();
        assert_eq!((china.partition.as_str(), china.account.as_str()), ("aws-cn", "210987654321"));
        assert_eq!(china.url_suffix, "amazonaws.com.cn");
        assert_eq!(china.region, "*");
        assert_eq!(scope().interruption_queue_arn.as_deref(), Some("arn:aws:sqs:eu-west-1:111122223333:prod"));
    }

    #[test]
    fn malformed_node_roles_are_refused() {
        for arn in [
            "",
            "role/x",
            "arn:aws:iam::111122223333:user/x",
            "arn:aws:iam::111122223333:role/",
            "arn:aws:iam:::role/x",
        ] {
            assert_eq!(PolicyScope::for_role("c", arn, None, None), Err(ScopeError::NodeRoleArn(arn.into())), "{arn}");
        }
        assert_eq!(PolicyScope::for_role("", "arn:aws:iam::1:role/x", None, None), Err(ScopeError::Cluster));
    }

    #[test]
    fn every_statement_is_named_and_allows() {
        let document = policy(&scope());
        let statements = document["Statement"].as_array().unwrap();
        let mut sids: Vec<&str> = statements.iter().map(|s| s["Sid"].as_str().unwrap()).collect();
        assert!(statements.iter().all(|s| s["Effect"] == "Allow"));
        sids.sort();
        sids.dedup();
        assert_eq!(sids.len(), statements.len(), "Sids are unique");
    }

    #[test]
    fn creating_and_destroying_require_both_ownership_tags() {
        let document = policy(&scope());
        let statement = |sid: &str| document["Statement"].as_array().unwrap().iter().find(|s| s["Sid"] == sid).unwrap();
        assert_eq!(
            statement("CreateOnlyWithThisClustersTags")["Condition"]["StringEquals"],
            json!({"aws:RequestTag/kubernetes.io/cluster/prod": "owned", "aws:RequestTag/stoker.dev/cluster": "prod"})
        );
        assert_eq!(
            statement("TerminateAndDeleteOnlyThisClusters")["Condition"]["StringEquals"],
            json!({"aws:ResourceTag/kubernetes.io/cluster/prod": "owned", "aws:ResourceTag/stoker.dev/cluster": "prod"})
        );
        assert_eq!(statement("DescribeEc2")["Condition"]["StringEquals"]["aws:RequestedRegion"], "eu-west-1");
        assert_eq!(
            statement("LaunchWithSharedResources")["Resource"][0],
            "arn:aws:ec2:eu-west-1::image/*",
            "images belong to no account"
        );
    }

    #[test]
    fn ami_parameters_are_aws_public_ones_and_those_named() {
        let read = |scope: &PolicyScope| {
            let document = policy(scope);
            let statement = document["Statement"].as_array().unwrap().iter().find(|s| s["Sid"] == "ReadAmiParameters");
            statement.unwrap()["Resource"].clone()
        };
        assert_eq!(
            read(&scope()),
            json!([
                "arn:aws:ssm:eu-west-1::parameter/aws/service/*",
                "arn:aws:ssm:eu-west-1:111122223333:parameter/stoker/*"
            ])
        );
        let named = PolicyScope {
            ami_parameters: vec![
                "golden-ami/*".into(),
                "arn:aws:ssm:eu-west-1:444455556666:parameter/shared/ami".into(),
            ],
            ..scope()
        };
        assert_eq!(
            read(&named),
            json!([
                "arn:aws:ssm:eu-west-1::parameter/aws/service/*",
                "arn:aws:ssm:eu-west-1:111122223333:parameter/golden-ami/*",
                "arn:aws:ssm:eu-west-1:444455556666:parameter/shared/ami"
            ])
        );
        let none = PolicyScope { ami_parameters: Vec::new(), ..scope() };
        assert_eq!(read(&none), json!(["arn:aws:ssm:eu-west-1::parameter/aws/service/*"]));
    }

    #[test]
    fn the_queue_statement_is_there_only_with_a_queue() {
        let without = PolicyScope { interruption_queue_arn: None, ..scope() };
        let has_queue = |s: &PolicyScope| policy(s).to_string().contains("sqs:ReceiveMessage");
        assert!(has_queue(&scope()));
        assert!(!has_queue(&without));
    }
}
