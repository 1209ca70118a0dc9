//! The account template (`deploy/cloudformation.yaml`): committed as the code generates it, its
//! controller policy the very one `stoker iam-policy` prints (which the IAM tests evaluate), and
//! accepted by cfn-lint, which checks resource types, properties and intrinsic functions against
//! CloudFormation's own specification.

use std::process::Command;

use serde_json::Value;
use stoker::cloudprovider::aws::iam_policy::{PolicyScope, policy};

const COMMITTED: &str = include_str!("../deploy/cloudformation.yaml");

#[test]
fn the_committed_template_is_what_the_code_generates() {
    let generated = stoker::cli::cloudformation::render().expect("renders");
    assert!(
        COMMITTED == generated,
        "deploy/cloudformation.yaml is stale: run `cargo run -- cloudformation > deploy/cloudformation.yaml`"
    );
}

#[test]
fn the_template_carries_the_policy_stoker_iam_policy_prints() {
    let template: Value = serde_saphyr::from_str(COMMITTED).expect("YAML");
    let document = template["Resources"]["ControllerPolicy"]["Properties"]["PolicyDocument"]["Fn::Sub"]
        .as_str()
        .expect("the policy is one substituted string");
    let role = "arn:aws:iam::111122223333:role/StokerNodeRole-prod";
    let deployed = [
        ("${AWS::Partition}", "aws"),
        ("${AWS::AccountId}", "111122223333"),
        ("${AWS::Region}", "eu-west-1"),
        ("${AWS::URLSuffix}", "amazonaws.com"),
        ("${ClusterName}", "prod"),
        ("${NodeRole.Arn}", role),
        ("${InterruptionQueue.Arn}", "arn:aws:sqs:eu-west-1:111122223333:prod-stoker-interruptions"),
        // The template's default, which is the command's.
        ("${AmiParameters}", "stoker/*"),
    ]
    .iter()
    .fold(document.to_owned(), |text, (placeholder, value)| text.replace(placeholder, value));
    assert!(!deployed.contains("${"), "every placeholder is one CloudFormation substitutes: {deployed}");
    let deployed: Value = serde_json::from_str(&deployed).expect("the substituted policy is JSON");
    let scope =
        PolicyScope::for_role("prod", role, Some("eu-west-1"), Some("prod-stoker-interruptions")).expect("scope");
    assert_eq!(deployed, policy(&scope));
}

#[test]
#[ignore = "needs cfn-lint (hack/install-aws-checkers.sh; hack/test.sh runs it)"]
fn the_template_passes_cfn_lint() {
    let cfn_lint = std::env::var("STOKER_CFN_LINT").expect("STOKER_CFN_LINT (source the local environment)");
    let template = "deploy/cloudformation.yaml";
    let output = Command::new(&cfn_lint).arg(template).output().unwrap_or_else(|e| panic!("{cfn_lint}: {e}"));
    assert!(
        output.status.success(),
        "cfn-lint found problems:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
