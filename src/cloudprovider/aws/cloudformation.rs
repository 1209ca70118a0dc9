//! The CloudFormation template that prepares an AWS account for stoker, generated so that its
//! controller policy is the one `stoker iam-policy` prints (the same `iam_policy::policy`, with
//! CloudFormation's own placeholders substituted at deploy time). `stoker cloudformation` prints
//! it; `deploy/cloudformation.yaml` is the committed copy, checked against this code.
//!
//! It makes what Karpenter's getting-started template makes, plus the two EKS resources that
//! otherwise take extra commands: the node role (with its access entry, so nodes may join), the
//! controller policy and role (trusted by EKS Pod Identity, and by the cluster's OIDC provider for
//! IRSA when one is given, with the Pod Identity association when not), and the interruption
//! queue with its EventBridge rules.

use serde_json::{Value, json};

use super::iam_policy::{PolicyScope, policy};

/// A string CloudFormation substitutes (`Fn::Sub`) at deploy time.
fn sub(text: &str) -> Value {
    json!({"Fn::Sub": text})
}

fn get_att(resource: &str, attribute: &str) -> Value {
    json!({"Fn::GetAtt": [resource, attribute]})
}

/// The controller's policy, as one JSON string: its condition keys name the cluster, and
/// CloudFormation substitutes inside strings only, never inside keys.
fn controller_policy() -> Value {
    let scope = PolicyScope {
        partition: "${AWS::Partition}".into(),
        account: "${AWS::AccountId}".into(),
        region: "${AWS::Region}".into(),
        url_suffix: "${AWS::URLSuffix}".into(),
        cluster: "${ClusterName}".into(),
        node_role_arn: "${NodeRole.Arn}".into(),
        interruption_queue_arn: Some("${InterruptionQueue.Arn}".into()),
        ami_parameters: vec!["${AmiParameters}".into()],
    };
    sub(&serde_json::to_string_pretty(&policy(&scope)).unwrap_or_default())
}

/// Who may assume the controller role: EKS Pod Identity always; the cluster's OIDC provider for
/// the controller's service account when IRSA is chosen (a substituted string then, since the
/// provider is part of its condition keys).
fn controller_trust(irsa: bool) -> Value {
    let mut statements = vec![json!({
        "Effect": "Allow",
        "Principal": {"Service": "pods.eks.amazonaws.com"},
        "Action": ["sts:AssumeRole", "sts:TagSession"],
    })];
    if irsa {
        statements.push(json!({
            "Effect": "Allow",
            "Principal": {"Federated": "arn:${AWS::Partition}:iam::${AWS::AccountId}:oidc-provider/${OidcProvider}"},
            "Action": "sts:AssumeRoleWithWebIdentity",
            "Condition": {"StringEquals": {
                "${OidcProvider}:aud": "sts.amazonaws.com",
                "${OidcProvider}:sub": "system:serviceaccount:${Namespace}:${ServiceAccount}",
            }},
        }));
    }
    let document = json!({"Version": "2012-10-17", "Statement": statements});
    match irsa {
        true => sub(&serde_json::to_string_pretty(&document).unwrap_or_default()),
        false => document,
    }
}

fn rule(detail_type: &str, source: &str) -> Value {
    json!({
        "Type": "AWS::Events::Rule",
        "Properties": {
            "Description": sub(&format!("stoker ${{ClusterName}}: {detail_type}")),
            "EventPattern": {"source": [source], "detail-type": [detail_type]},
            "Targets": [{"Id": "InterruptionQueue", "Arn": get_att("InterruptionQueue", "Arn")}],
        },
    })
}

/// The template.
pub fn template() -> Value {
    let managed = |name: &str| sub(&format!("arn:${{AWS::Partition}}:iam::aws:policy/{name}"));
    json!({
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": "stoker: node role and access entry, controller role and policy, interruption queue and rules",
        "Parameters": {
            "ClusterName": {"Type": "String", "Description": "The EKS cluster (settings.clusterName)", "MinLength": 1},
            "ControllerIdentity": {
                "Type": "String",
                "Default": "PodIdentity",
                "AllowedValues": ["PodIdentity", "IRSA"],
                "Description": "How the controller gets its role: an EKS Pod Identity association (needs the eks-pod-identity-agent add-on), or IRSA (needs OidcProvider)",
            },
            "OidcProvider": {
                "Type": "String",
                "Default": "",
                "Description": "For IRSA: the cluster's OIDC issuer without https:// (aws eks describe-cluster --query cluster.identity.oidc.issuer)",
            },
            "Namespace": {"Type": "String", "Default": "stoker", "Description": "The namespace stoker is installed in"},
            "ServiceAccount": {"Type": "String", "Default": "stoker", "Description": "The controller's service account"},
            "AmiParameters": {
                "Type": "String",
                "Default": "stoker/*",
                "MinLength": 1,
                "Description": "The SSM parameters (the name after parameter/, wildcards allowed) that EC2NodeClasses' amiSelectorTerms[].ssmParameter may name, besides AWS's public ones",
            },
        },
        "Conditions": {
            "UseIrsa": {"Fn::Equals": [{"Ref": "ControllerIdentity"}, "IRSA"]},
            "UsePodIdentity": {"Fn::Equals": [{"Ref": "ControllerIdentity"}, "PodIdentity"]},
        },
        "Rules": {
            "IrsaNeedsTheOidcProvider": {
                "RuleCondition": {"Fn::Equals": [{"Ref": "ControllerIdentity"}, "IRSA"]},
                "Assertions": [{
                    "Assert": {"Fn::Not": [{"Fn::Equals": [{"Ref": "OidcProvider"}, ""]}]},
                    "AssertDescription": "ControllerIdentity IRSA needs OidcProvider",
                }],
            },
        },
        "Resources": {
            "NodeRole": {
                "Type": "AWS::IAM::Role",
                "Properties": {
                    "RoleName": sub("StokerNodeRole-${ClusterName}"),
                    "AssumeRolePolicyDocument": {
                        "Version": "2012-10-17",
                        "Statement": [{
                            "Effect": "Allow",
                            "Principal": {"Service": sub("ec2.${AWS::URLSuffix}")},
                            "Action": "sts:AssumeRole",
                        }],
                    },
                    "ManagedPolicyArns": [
                        managed("AmazonEKSWorkerNodePolicy"),
                        managed("AmazonEKS_CNI_Policy"),
                        managed("AmazonEC2ContainerRegistryReadOnly"),
                        managed("AmazonSSMManagedInstanceCore"),
                    ],
                },
            },
            "NodeAccessEntry": {
                "Type": "AWS::EKS::AccessEntry",
                "Properties": {
                    "ClusterName": {"Ref": "ClusterName"},
                    "PrincipalArn": get_att("NodeRole", "Arn"),
                    "Type": "EC2_LINUX",
                },
            },
            "ControllerPolicy": {
                "Type": "AWS::IAM::ManagedPolicy",
                "Properties": {
                    "ManagedPolicyName": sub("StokerControllerPolicy-${ClusterName}"),
                    "PolicyDocument": controller_policy(),
                },
            },
            "ControllerRole": {
                "Type": "AWS::IAM::Role",
                "Properties": {
                    "RoleName": sub("StokerController-${ClusterName}"),
                    "AssumeRolePolicyDocument": {"Fn::If": ["UseIrsa", controller_trust(true), controller_trust(false)]},
                    "ManagedPolicyArns": [{"Ref": "ControllerPolicy"}],
                },
            },
            "ControllerPodIdentity": {
                "Type": "AWS::EKS::PodIdentityAssociation",
                "Condition": "UsePodIdentity",
                "Properties": {
                    "ClusterName": {"Ref": "ClusterName"},
                    "Namespace": {"Ref": "Namespace"},
                    "ServiceAccount": {"Ref": "ServiceAccount"},
                    "RoleArn": get_att("ControllerRole", "Arn"),
                },
            },
            "InterruptionQueue": {
                "Type": "AWS::SQS::Queue",
                "Properties": {
                    "QueueName": sub("${ClusterName}-stoker-interruptions"),
                    // A warning older than five minutes is of no use: the instance is gone.
                    "MessageRetentionPeriod": 300,
                    "SqsManagedSseEnabled": true,
                },
            },
            "InterruptionQueuePolicy": {
                "Type": "AWS::SQS::QueuePolicy",
                "Properties": {
                    "Queues": [{"Ref": "InterruptionQueue"}],
                    "PolicyDocument": {
                        "Version": "2012-10-17",
                        "Statement": [{
                            "Effect": "Allow",
                            "Principal": {"Service": ["events.amazonaws.com", "sqs.amazonaws.com"]},
                            "Action": "sqs:SendMessage",
                            "Resource": get_att("InterruptionQueue", "Arn"),
                        }],
                    },
                },
            },
            "SpotInterruptionRule": rule("EC2 Spot Instance Interruption Warning", "aws.ec2"),
            "RebalanceRule": rule("EC2 Instance Rebalance Recommendation", "aws.ec2"),
            "StateChangeRule": rule("EC2 Instance State-change Notification", "aws.ec2"),
            "ScheduledChangeRule": rule("AWS Health Event", "aws.health"),
        },
        "Outputs": {
            "ControllerRoleArn": {"Value": get_att("ControllerRole", "Arn")},
            "NodeRoleName": {"Value": {"Ref": "NodeRole"}},
            "InterruptionQueueName": {"Value": get_att("InterruptionQueue", "QueueName")},
        },
    })
}
