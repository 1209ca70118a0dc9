//! The controller's IAM policy (`stoker iam-policy`) evaluated by a real IAM policy evaluator
//! (`@cloud-copilot/iam-simulate`, installed by `hack/install-aws-checkers.sh`): what stoker must
//! never be able to do is denied, each beside a twin that differs only in what makes it safe and
//! is allowed, so the test cannot pass because the evaluator refuses everything. The calls stoker
//! really makes are checked by `tests/iam_recorded_calls.rs` once every other test has run.

mod support;

use std::collections::BTreeMap;

use support::iam::{ACCOUNT, IamRequest, evaluate, local_policy};

const CLUSTER: &str = "stoker-local";
const QUEUE: &str = "stoker-local-interruption";

fn tags(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn owned_by(cluster: &str) -> BTreeMap<String, String> {
    tags(&[(&format!("kubernetes.io/cluster/{cluster}"), "owned"), ("stoker.dev/cluster", cluster)])
}

fn with(tags: &BTreeMap<String, String>, key: &str, value: &str) -> BTreeMap<String, String> {
    let mut more = tags.clone();
    more.insert(key.into(), value.into());
    more
}

fn ec2(resource: &str) -> String {
    format!("arn:aws:ec2:us-east-1:{ACCOUNT}:{resource}")
}

fn in_region(request: IamRequest, region: &str) -> IamRequest {
    request.with("aws:RequestedRegion", region)
}

#[test]
#[ignore = "needs the IAM evaluator (hack/install-aws-checkers.sh; hack/test.sh runs it)"]
fn stoker_can_never_touch_what_is_not_its_own() {
    let node_role = format!("arn:aws:iam::{ACCOUNT}:role/KarpenterNodeRole-{CLUSTER}");
    let instance = || IamRequest::new("ec2:TerminateInstances", ec2("instance/i-0abc"));
    let profile = format!("arn:aws:iam::{ACCOUNT}:instance-profile/stoker_{CLUSTER}_0123");
    let ours = owned_by(CLUSTER);
    // What a launch for several NodeClaims writes on each instance afterwards.
    let name_instance = || {
        IamRequest::new("ec2:CreateTags", ec2("instance/i-0abc"))
            .request_tags(&tags(&[("stoker.dev/nodeclaim", "general-fghij"), ("Name", "general-fghij")]))
    };
    // (what must be denied, its allowed twin)
    let cases: Vec<(&str, IamRequest, IamRequest)> = vec![
        (
            "terminate an instance with only the kubernetes.io ownership tag",
            instance().resource_tags(&tags(&[(&format!("kubernetes.io/cluster/{CLUSTER}"), "owned")])),
            instance().resource_tags(&ours),
        ),
        (
            "terminate an instance with only the stoker.dev ownership tag",
            instance().resource_tags(&tags(&[("stoker.dev/cluster", CLUSTER)])),
            instance().resource_tags(&ours),
        ),
        (
            "terminate another cluster's instance",
            instance().resource_tags(&owned_by("other")),
            instance().resource_tags(&ours),
        ),
        ("terminate an untagged instance", instance(), instance().resource_tags(&ours)),
        (
            "delete another cluster's launch template",
            IamRequest::new("ec2:DeleteLaunchTemplate", ec2("launch-template/lt-0abc"))
                .resource_tags(&owned_by("other")),
            IamRequest::new("ec2:DeleteLaunchTemplate", ec2("launch-template/lt-0abc")).resource_tags(&ours),
        ),
        (
            "launch an instance without the ownership tags",
            IamRequest::new("ec2:CreateFleet", ec2("instance/i-0new")).request_tags(&tags(&[("team", "web")])),
            IamRequest::new("ec2:CreateFleet", ec2("instance/i-0new")).request_tags(&ours),
        ),
        (
            "launch from another cluster's launch template",
            IamRequest::new("ec2:CreateFleet", ec2("launch-template/lt-0abc")).resource_tags(&owned_by("other")),
            IamRequest::new("ec2:CreateFleet", ec2("launch-template/lt-0abc")).resource_tags(&ours),
        ),
        (
            "tag an existing instance (which would adopt it)",
            IamRequest::new("ec2:CreateTags", ec2("instance/i-0abc")).request_tags(&ours),
            IamRequest::new("ec2:CreateTags", ec2("instance/i-0abc"))
                .request_tags(&ours)
                .with("ec2:CreateAction", "CreateFleet"),
        ),
        (
            "name another cluster's instance",
            name_instance().resource_tags(&owned_by("other")),
            name_instance().resource_tags(&ours),
        ),
        (
            "rename an instance already launched for a NodeClaim (which would hand it to another)",
            name_instance().resource_tags(&with(&ours, "stoker.dev/nodeclaim", "general-abcde")),
            name_instance().resource_tags(&ours),
        ),
        (
            "tag one of this cluster's instances with anything but its NodeClaim",
            IamRequest::new("ec2:CreateTags", ec2("instance/i-0abc"))
                .request_tags(&owned_by("other"))
                .resource_tags(&ours),
            name_instance().resource_tags(&ours),
        ),
        (
            "pass another role",
            IamRequest::new("iam:PassRole", format!("arn:aws:iam::{ACCOUNT}:role/Admin"))
                .with("iam:PassedToService", "ec2.amazonaws.com"),
            IamRequest::new("iam:PassRole", &node_role).with("iam:PassedToService", "ec2.amazonaws.com"),
        ),
        (
            "pass the node role to another service",
            IamRequest::new("iam:PassRole", &node_role).with("iam:PassedToService", "lambda.amazonaws.com"),
            IamRequest::new("iam:PassRole", &node_role).with("iam:PassedToService", "ec2.amazonaws.com"),
        ),
        (
            "read an arbitrary SSM parameter",
            IamRequest::new("ssm:GetParameter", format!("arn:aws:ssm:us-east-1:{ACCOUNT}:parameter/prod/db/password")),
            IamRequest {
                validate: false,
                ..IamRequest::new(
                    "ssm:GetParameter",
                    "arn:aws:ssm:us-east-1::parameter/aws/service/eks/optimized-ami/1.37/amazon-linux-2023/x86_64/standard/recommended/image_id",
                )
            },
        ),
        (
            "read a parameter of this account outside the AMI parameters named",
            IamRequest::new("ssm:GetParameter", format!("arn:aws:ssm:us-east-1:{ACCOUNT}:parameter/golden-ami")),
            IamRequest::new("ssm:GetParameter", format!("arn:aws:ssm:us-east-1:{ACCOUNT}:parameter/stoker/golden-ami")),
        ),
        (
            "delete another instance profile",
            IamRequest::new("iam:DeleteInstanceProfile", &profile).resource_tags(&owned_by("other")),
            IamRequest::new("iam:DeleteInstanceProfile", &profile).resource_tags(&ours),
        ),
        (
            "put a role into another instance profile",
            IamRequest::new("iam:AddRoleToInstanceProfile", &profile),
            IamRequest::new("iam:AddRoleToInstanceProfile", &profile).resource_tags(&ours),
        ),
        (
            "create an instance profile without the ownership tags",
            IamRequest::new("iam:CreateInstanceProfile", &profile),
            IamRequest::new("iam:CreateInstanceProfile", &profile).request_tags(&ours),
        ),
        (
            "read another queue",
            IamRequest::new("sqs:ReceiveMessage", format!("arn:aws:sqs:us-east-1:{ACCOUNT}:orders")),
            IamRequest::new("sqs:ReceiveMessage", format!("arn:aws:sqs:us-east-1:{ACCOUNT}:{QUEUE}")),
        ),
        (
            "describe another EKS cluster",
            IamRequest::new("eks:DescribeCluster", format!("arn:aws:eks:us-east-1:{ACCOUNT}:cluster/other")),
            IamRequest::new("eks:DescribeCluster", format!("arn:aws:eks:us-east-1:{ACCOUNT}:cluster/{CLUSTER}")),
        ),
        (
            "describe instances in another region",
            in_region(IamRequest::new("ec2:DescribeInstances", "*"), "eu-west-1"),
            in_region(IamRequest::new("ec2:DescribeInstances", "*"), "us-east-1"),
        ),
    ];
    let requests: Vec<IamRequest> =
        cases.iter().flat_map(|(_, denied, allowed)| [denied.clone(), allowed.clone()]).collect();
    let decisions = evaluate(&local_policy(CLUSTER, Some(QUEUE)), &requests);
    let mut wrong = Vec::new();
    for ((what, _, _), pair) in cases.iter().zip(decisions.chunks(2)) {
        if pair[0] != "ImplicitlyDenied" {
            wrong.push(format!("{what}: {} (must be denied)", pair[0]));
        }
        if pair[1] != "Allowed" {
            wrong.push(format!("{what}, its safe twin: {} (must be allowed)", pair[1]));
        }
    }
    assert!(wrong.is_empty(), "the policy decides wrongly:\n{}", wrong.join("\n"));
}
