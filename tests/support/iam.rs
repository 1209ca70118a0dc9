//! What IAM authorizes for each AWS call stoker makes, and a real policy evaluator to decide it.
//!
//! The emulator records every call stoker's clients make (`hack/emulator.py`, by the `app/stoker`
//! user agent) with what IAM looks at besides the request: the tags of the instances, launch
//! templates and instance profiles it names, the launch template's content. [`requests_for`]
//! turns one recorded call into the authorization requests AWS makes for it, following the
//! Service Authorization Reference: a CreateFleet is authorized as CreateFleet on the fleet,
//! instance, volume, image, launch template and subnets, as RunInstances on those and the network
//! interface and security groups, as CreateTags (with `ec2:CreateAction`) on everything it tags,
//! and as PassRole on the instance profile's role. [`evaluate`] runs requests through
//! `@cloud-copilot/iam-simulate` (`hack/iam-evaluate.cjs`).

use std::{
    collections::BTreeMap,
    io::Write,
    process::{Command, Stdio},
};

use serde::Serialize;
use serde_json::{Value, json};

/// One authorization request: an action on one resource, with its condition context.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IamRequest {
    pub action: String,
    pub resource: String,
    pub context: BTreeMap<String, Value>,
    /// False for ARNs the evaluator's resource patterns do not know (AWS's public SSM
    /// parameters have no account in their ARN).
    pub validate: bool,
}

impl IamRequest {
    pub fn new(action: &str, resource: impl Into<String>) -> Self {
        Self { action: action.into(), resource: resource.into(), context: BTreeMap::new(), validate: true }
    }

    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.context.insert(key.into(), value.into());
        self
    }

    /// `aws:RequestTag/K` for each tag and `aws:TagKeys`.
    pub fn request_tags(mut self, tags: &BTreeMap<String, String>) -> Self {
        for (key, value) in tags {
            self.context.insert(format!("aws:RequestTag/{key}"), json!(value));
        }
        if !tags.is_empty() {
            self.context.insert("aws:TagKeys".into(), json!(tags.keys().collect::<Vec<_>>()));
        }
        self
    }

    /// `aws:ResourceTag/K` for each tag.
    pub fn resource_tags(mut self, tags: &BTreeMap<String, String>) -> Self {
        for (key, value) in tags {
            self.context.insert(format!("aws:ResourceTag/{key}"), json!(value));
        }
        self
    }
}

pub const ACCOUNT: &str = "123456789012";
pub const PRINCIPAL: &str = "arn:aws:iam::123456789012:role/stoker";

fn text(value: &Value) -> String {
    value.as_str().unwrap_or_default().to_owned()
}

fn tags(value: &Value) -> BTreeMap<String, String> {
    value.as_object().map(|tags| tags.iter().map(|(k, v)| (k.clone(), text(v))).collect()).unwrap_or_default()
}

/// Values of flattened query parameters named `prefix` + a number + `suffix`, in order.
fn numbered<'a>(params: &'a Value, prefix: &str, suffix: &str) -> Vec<&'a str> {
    let mut found: Vec<(u32, &str)> = params
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(key, value)| {
            let number = key.strip_prefix(prefix)?.strip_suffix(suffix)?.parse().ok()?;
            Some((number, value.as_str()?))
        })
        .collect();
    found.sort();
    found.into_iter().map(|(_, value)| value).collect()
}

/// Tags of one resource type in a query request's `TagSpecification.N`.
fn tag_specification(params: &Value, resource_type: &str) -> BTreeMap<String, String> {
    let mut found = BTreeMap::new();
    for index in 1.. {
        let prefix = format!("TagSpecification.{index}.");
        let Some(kind) = params.get(format!("{prefix}ResourceType")) else { break };
        if kind != resource_type {
            continue;
        }
        for (key, value) in numbered(params, &format!("{prefix}Tag."), ".Key").into_iter().zip(numbered(
            params,
            &format!("{prefix}Tag."),
            ".Value",
        )) {
            found.insert(key.to_owned(), value.to_owned());
        }
    }
    found
}

/// The authorization requests one recorded call makes.
pub fn requests_for(call: &Value) -> Vec<IamRequest> {
    let (service, action, region) = (text(&call["service"]), text(&call["action"]), text(&call["region"]));
    let params = &call["params"];
    let observed = &call["observed"];
    let ec2 = |resource: &str| format!("arn:aws:ec2:{region}:{ACCOUNT}:{resource}");
    let in_region = |request: IamRequest| request.with("aws:RequestedRegion", region.clone());
    match (service.as_str(), action.as_str()) {
        ("ec2", describe) if describe.starts_with("Describe") => {
            vec![in_region(IamRequest::new(&format!("ec2:{describe}"), "*"))]
        }
        ("ec2", "CreateLaunchTemplate") => {
            let tags = tag_specification(params, "launch-template");
            let template = ec2("launch-template/lt-0new");
            vec![
                in_region(IamRequest::new("ec2:CreateLaunchTemplate", &template).request_tags(&tags)),
                in_region(
                    IamRequest::new("ec2:CreateTags", &template)
                        .request_tags(&tags)
                        .with("ec2:CreateAction", "CreateLaunchTemplate"),
                ),
            ]
        }
        ("ec2", "CreateFleet") => create_fleet(params, observed, &region, &ec2),
        ("ec2", "TerminateInstances") => numbered(params, "InstanceId.", "")
            .into_iter()
            .map(|id| {
                let tags = tags(&observed["instances"][id]);
                in_region(
                    IamRequest::new("ec2:TerminateInstances", ec2(&format!("instance/{id}"))).resource_tags(&tags),
                )
            })
            .collect(),
        ("ec2", "CreateTags") => {
            let requested: BTreeMap<String, String> = numbered(params, "Tag.", ".Key")
                .into_iter()
                .zip(numbered(params, "Tag.", ".Value"))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
            numbered(params, "ResourceId.", "")
                .into_iter()
                .map(|id| {
                    let existing = tags(&observed["instances"][id]);
                    in_region(
                        IamRequest::new("ec2:CreateTags", ec2(&format!("instance/{id}")))
                            .request_tags(&requested)
                            .resource_tags(&existing),
                    )
                })
                .collect()
        }
        ("ec2", "DeleteLaunchTemplate") => observed["launch_templates"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(_, template)| {
                let id = template["id"].as_str().unwrap_or("lt-0gone");
                in_region(
                    IamRequest::new("ec2:DeleteLaunchTemplate", ec2(&format!("launch-template/{id}")))
                        .resource_tags(&tags(&template["tags"])),
                )
            })
            .collect(),
        ("ssm", "GetParameter") => {
            let name = text(&params["Name"]);
            let public = name.starts_with("/aws/service/");
            let account = if public { "" } else { ACCOUNT };
            let resource = format!("arn:aws:ssm:{region}:{account}:parameter/{}", name.trim_start_matches('/'));
            vec![IamRequest { validate: !public, ..in_region(IamRequest::new("ssm:GetParameter", resource)) }]
        }
        ("iam", action) => {
            let profile = format!("arn:aws:iam::{ACCOUNT}:instance-profile/{}", text(&params["InstanceProfileName"]));
            let existing = tags(&observed["instance_profile"]["tags"]);
            let request = IamRequest::new(&format!("iam:{action}"), &profile);
            let pass_role = |role: &Value| {
                IamRequest::new("iam:PassRole", text(role)).with("iam:PassedToService", "ec2.amazonaws.com")
            };
            match action {
                "CreateInstanceProfile" => {
                    let requested: BTreeMap<String, String> = numbered(params, "Tags.member.", ".Key")
                        .into_iter()
                        .zip(numbered(params, "Tags.member.", ".Value"))
                        .map(|(k, v)| (k.to_owned(), v.to_owned()))
                        .collect();
                    vec![
                        request.request_tags(&requested),
                        IamRequest::new("iam:TagInstanceProfile", &profile).request_tags(&requested),
                    ]
                }
                "AddRoleToInstanceProfile" => vec![request.resource_tags(&existing), pass_role(&observed["role_arn"])],
                "GetInstanceProfile" => vec![request],
                _ => vec![request.resource_tags(&existing)],
            }
        }
        ("sqs", action) => {
            let queue = params["QueueName"]
                .as_str()
                .or_else(|| params["QueueUrl"].as_str().and_then(|url| url.rsplit('/').next()))
                .unwrap_or_default();
            vec![in_region(IamRequest::new(
                &format!("sqs:{action}"),
                format!("arn:aws:sqs:{region}:{ACCOUNT}:{queue}"),
            ))]
        }
        ("pricing", "GetProducts") => vec![IamRequest::new("pricing:GetProducts", "*")],
        ("eks", "DescribeCluster") => vec![in_region(IamRequest::new(
            "eks:DescribeCluster",
            format!("arn:aws:eks:{region}:{ACCOUNT}:cluster/{}", text(&params["name"])),
        ))],
        // Anything else is a call this mapping does not know yet: asked as is, so the test fails
        // until it is described here and granted by the policy.
        (service, action) => vec![IamRequest::new(&format!("{service}:{action}"), "*")],
    }
}

fn create_fleet(params: &Value, observed: &Value, region: &str, ec2: &dyn Fn(&str) -> String) -> Vec<IamRequest> {
    let in_region = |request: IamRequest| request.with("aws:RequestedRegion", region.to_owned());
    let mut requests = Vec::new();
    let mut created = vec![
        ("fleet", ec2("fleet/fleet-0new"), tag_specification(params, "fleet")),
        ("instance", ec2("instance/i-0new"), tag_specification(params, "instance")),
        ("volume", ec2("volume/vol-0new"), tag_specification(params, "volume")),
    ];
    let mut existing: Vec<(String, BTreeMap<String, String>)> = Vec::new();
    let mut run_instances_only: Vec<String> = Vec::new();
    for template in observed["launch_templates"].as_object().into_iter().flatten().map(|(_, t)| t) {
        let data = &template["data"];
        existing.push((ec2(&format!("launch-template/{}", text(&template["id"]))), tags(&template["tags"])));
        existing.push((format!("arn:aws:ec2:{region}::image/{}", text(&data["ImageId"])), BTreeMap::new()));
        // A template targeting a capacity reservation makes the launch name it.
        let reservation =
            &data["CapacityReservationSpecification"]["CapacityReservationTarget"]["CapacityReservationId"];
        if let Some(id) = reservation.as_str() {
            existing.push((ec2(&format!("capacity-reservation/{id}")), BTreeMap::new()));
        }
        let interface_tags = data["TagSpecifications"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|spec| spec["ResourceType"] == "network-interface")
            .flat_map(|spec| spec["Tags"].as_array().into_iter().flatten())
            .map(|tag| (text(&tag["Key"]), text(&tag["Value"])))
            .collect();
        created.push(("network-interface", ec2("network-interface/eni-0new"), interface_tags));
        let groups = data["SecurityGroupIds"].as_array().into_iter().flatten().chain(
            data["NetworkInterfaces"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|i| i["Groups"].as_array().into_iter().flatten()),
        );
        run_instances_only.extend(groups.map(|group| ec2(&format!("security-group/{}", text(group)))));
        for role in template["roles"].as_array().into_iter().flatten() {
            requests.push(IamRequest::new("iam:PassRole", text(role)).with("iam:PassedToService", "ec2.amazonaws.com"));
        }
    }
    let mut subnets: Vec<&str> = numbered(params, "LaunchTemplateConfigs.1.Overrides.", ".SubnetId");
    for index in 2.. {
        let more = numbered(params, &format!("LaunchTemplateConfigs.{index}.Overrides."), ".SubnetId");
        if more.is_empty() {
            break;
        }
        subnets.extend(more);
    }
    subnets.sort();
    subnets.dedup();
    existing.extend(subnets.into_iter().map(|subnet| (ec2(&format!("subnet/{subnet}")), BTreeMap::new())));
    for (kind, arn, tags) in &created {
        // The Service Authorization Reference lists no fleet for RunInstances and no network
        // interface for CreateFleet.
        if *kind != "network-interface" {
            requests.push(in_region(IamRequest::new("ec2:CreateFleet", arn).request_tags(tags)));
        }
        if *kind != "fleet" {
            requests.push(in_region(IamRequest::new("ec2:RunInstances", arn).request_tags(tags)));
        }
        if !tags.is_empty() {
            requests.push(in_region(
                IamRequest::new("ec2:CreateTags", arn).request_tags(tags).with("ec2:CreateAction", "CreateFleet"),
            ));
        }
    }
    for (arn, tags) in &existing {
        for action in ["ec2:CreateFleet", "ec2:RunInstances"] {
            requests.push(in_region(IamRequest::new(action, arn).resource_tags(tags)));
        }
    }
    requests.extend(run_instances_only.iter().map(|arn| in_region(IamRequest::new("ec2:RunInstances", arn))));
    requests
}

/// The evaluator's decision for each request, in order: `Allowed`, `ImplicitlyDenied`,
/// `ExplicitlyDenied`, or `Invalid` (the evaluator refused the request as malformed).
pub fn evaluate(policy: &Value, requests: &[IamRequest]) -> Vec<String> {
    let script = "hack/iam-evaluate.cjs";
    assert!(
        std::env::var_os("STOKER_IAM_SIMULATOR").is_some(),
        "STOKER_IAM_SIMULATOR is not set: run hack/install-aws-checkers.sh and source the local environment (hack/test.sh does both)"
    );
    let mut child = Command::new("node")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("node runs (Node.js is needed for the IAM evaluator)");
    let input = json!({"policy": policy, "account": ACCOUNT, "principal": PRINCIPAL, "requests": requests});
    child.stdin.take().expect("stdin").write_all(input.to_string().as_bytes()).expect("write the requests");
    let output = child.wait_with_output().expect("the evaluator finishes");
    assert!(output.status.success(), "the IAM evaluator failed: {}", String::from_utf8_lossy(&output.stderr));
    let decisions: Vec<Value> = serde_json::from_slice(&output.stdout).expect("decisions as JSON");
    assert_eq!(decisions.len(), requests.len(), "one decision per request");
    decisions
        .iter()
        .map(|d| match d["detail"].is_null() {
            true => text(&d["decision"]),
            false => format!("{} ({})", text(&d["decision"]), d["detail"]),
        })
        .collect()
}

/// The local environment's cluster (`CLUSTER_NAME`).
pub fn local_cluster() -> String {
    std::env::var("CLUSTER_NAME").unwrap_or_else(|_| "stoker-local".into())
}

/// The policy for `cluster` with the local environment's node role and the given queue.
pub fn local_policy(cluster: &str, queue: Option<&str>) -> Value {
    use stoker::cloudprovider::aws::iam_policy::{PolicyScope, policy};
    let role = std::env::var("NODE_ROLE").unwrap_or_else(|_| format!("KarpenterNodeRole-{}", local_cluster()));
    let scope =
        PolicyScope::for_role(cluster, &format!("arn:aws:iam::{ACCOUNT}:role/{role}"), Some("us-east-1"), queue)
            .expect("a valid scope");
    policy(&scope)
}
