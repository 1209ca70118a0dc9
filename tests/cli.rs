//! The command line as a user runs it (the built `stoker` binary): every command reads files,
//! directories (`-R` for subdirectories), standard input and `kind: List` the same way, refuses
//! Karpenter's manifests with a pointer to `convert`, and exits with a code that says what went
//! wrong (`cli::exit`).

use std::{
    io::Write,
    process::{Command, Output, Stdio},
};

use stoker::cli::exit;

fn stoker(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_stoker"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("stoker runs");
    let mut input = child.stdin.take().expect("stdin");
    input.write_all(stdin.unwrap_or_default().as_bytes()).expect("write stdin");
    drop(input);
    child.wait_with_output().expect("stoker finishes")
}

fn code(output: &Output) -> i32 {
    output.status.code().expect("an exit code")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

const INVALID_POOL: &str = "apiVersion: stoker.dev/v1alpha1\nkind: NodePool\nmetadata: {name: x}\nspec:\n  weight: 500\n  template: {spec: {nodeClassRef: {group: stoker.dev, kind: EC2NodeClass, name: d}}}\n";

#[test]
fn a_directory_is_its_manifests_and_recursion_is_asked_for() {
    let flat = stoker(&["validate", "-f", "examples"], None);
    assert_eq!(code(&flat), 0, "{}{}", stdout(&flat), stderr(&flat));
    assert!(stdout(&flat).contains("examples/nodepool-spot.yaml#1: NodePool/spot: valid"), "{}", stdout(&flat));
    assert!(!stdout(&flat).contains("karpenter"), "not recursive without -R");

    // With -R the Karpenter manifests in examples/karpenter/ are read too, and refused.
    let deep = stoker(&["validate", "-R", "-f", "examples"], None);
    assert_eq!(code(&deep), i32::from(exit::INVALID), "{}", stdout(&deep));
    let text = stdout(&deep);
    assert!(text.contains("examples/karpenter/karpenter.yaml#1: NodePool/"), "{text}");
    assert!(text.contains("stoker convert"), "Karpenter's manifests point to convert: {text}");
}

#[test]
fn standard_input_and_lists_are_read_like_files() {
    let list = format!(
        "apiVersion: v1\nkind: List\nitems:\n- {}\n",
        serde_json::to_string(&serde_saphyr::from_str::<serde_json::Value>(INVALID_POOL).unwrap()).unwrap()
    );
    let output = stoker(&["validate", "-f", "-"], Some(&list));
    assert_eq!(code(&output), i32::from(exit::INVALID));
    assert!(stdout(&output).contains("-#1.0: NodePool/x: invalid"), "{}", stdout(&output));
    assert!(stdout(&output).contains("spec.weight"), "{}", stdout(&output));

    let examples: String = ["nodepool-spot.yaml", "ec2nodeclass.yaml", "inflate.yaml"]
        .iter()
        .map(|f| std::fs::read_to_string(format!("examples/{f}")).unwrap())
        .collect::<Vec<_>>()
        .join("\n---\n");
    let plan = stoker(&["plan", "-f", "-", "-o", "json"], Some(&examples));
    assert_eq!(code(&plan), 0, "{}", stderr(&plan));
    let report: serde_json::Value = serde_json::from_slice(&plan.stdout).expect("JSON");
    assert!(report["nodeClaims"].as_array().is_some_and(|claims| !claims.is_empty()), "{report}");

    let preview = stoker(&["warmpool", "preview", "-f", "examples", "--days", "1"], None);
    assert_eq!(code(&preview), 0, "{}", stderr(&preview));
    assert!(stdout(&preview).contains("WarmPool "), "{}", stdout(&preview));
    let preview = stoker(&["nodepool", "preview", "-f", "examples", "--days", "2"], None);
    assert_eq!(code(&preview), 0, "{}", stderr(&preview));
    assert!(stdout(&preview).contains("NodePool batch "), "{}", stdout(&preview));
    let none = stoker(&["nodepool", "preview", "-f", "examples/nodepool-spot.yaml"], None);
    assert_eq!(code(&none), i32::from(exit::INVALID), "no NodePool with schedules: {}", stderr(&none));
}

#[test]
fn karpenter_manifests_are_refused_by_plan_and_converted_by_convert() {
    let plan = stoker(&["plan", "-f", "examples/karpenter"], None);
    assert_eq!(code(&plan), i32::from(exit::INVALID));
    assert!(stderr(&plan).contains("stoker convert"), "{}", stderr(&plan));
    let converted = stoker(&["convert", "-f", "examples/karpenter"], None);
    assert_eq!(code(&converted), 0, "{}", stderr(&converted));
    let text = stdout(&converted);
    let valid = stoker(&["validate", "-f", "-"], Some(&text));
    assert_eq!(code(&valid), 0, "the converted manifests are valid: {}", stdout(&valid));
}

#[test]
fn iam_policy_reads_the_ami_parameters_asked_for_instead_of_the_default() {
    let role = ["iam-policy", "--cluster-name", "c", "--node-role-arn", "arn:aws:iam::111122223333:role/n"];
    let readable = |extra: &[&str]| -> Vec<String> {
        let output = stoker(&[&role[..], extra].concat(), None);
        assert_eq!(code(&output), 0, "{}", stderr(&output));
        let policy: serde_json::Value = serde_json::from_str(&stdout(&output)).expect("JSON");
        let statements = policy["Statement"].as_array().expect("statements");
        let read = statements.iter().find(|s| s["Sid"] == "ReadAmiParameters").expect("the SSM statement");
        serde_json::from_value(read["Resource"].clone()).expect("resources")
    };
    assert_eq!(
        readable(&[]),
        ["arn:aws:ssm:*::parameter/aws/service/*", "arn:aws:ssm:*:111122223333:parameter/stoker/*"]
    );
    assert_eq!(
        readable(&[
            "--ami-parameter",
            "/golden-ami/*",
            "--ami-parameter",
            "arn:aws:ssm:us-east-1:444455556666:parameter/ami"
        ]),
        [
            "arn:aws:ssm:*::parameter/aws/service/*",
            "arn:aws:ssm:*:111122223333:parameter/golden-ami/*",
            "arn:aws:ssm:us-east-1:444455556666:parameter/ami"
        ]
    );
}

#[test]
fn exit_codes_say_what_went_wrong() {
    assert_eq!(code(&stoker(&["validate", "-f", "examples/ec2nodeclass.yaml"], None)), 0);
    assert_eq!(code(&stoker(&["validate", "-f", "-"], Some(INVALID_POOL))), i32::from(exit::INVALID));
    assert_eq!(code(&stoker(&["validate", "-f", "-"], Some("kind: [unclosed\n"))), i32::from(exit::INVALID));
    assert_eq!(code(&stoker(&["validate", "-f", "no/such/file.yaml"], None)), i32::from(exit::ERROR));
    assert_eq!(code(&stoker(&["validate"], None)), i32::from(exit::USAGE), "no -f");
    let bad_role = stoker(&["iam-policy", "--cluster-name", "c", "--node-role-arn", "role/x"], None);
    assert_eq!(code(&bad_role), i32::from(exit::USAGE), "{}", stderr(&bad_role));
    let huge = "apiVersion: v1\nkind: Pod\nmetadata: {name: huge, namespace: shop}\nspec: {containers: [{name: c, image: i, resources: {requests: {cpu: '5000'}}}]}\n";
    let pools = std::fs::read_to_string("examples/nodepool-spot.yaml").unwrap();
    let class = std::fs::read_to_string("examples/ec2nodeclass.yaml").unwrap();
    let plan = stoker(&["plan", "-f", "-"], Some(&format!("{pools}\n---\n{class}\n---\n{huge}")));
    assert_eq!(code(&plan), i32::from(exit::UNSCHEDULABLE), "{}{}", stdout(&plan), stderr(&plan));
}

#[test]
fn shells_get_completions() {
    for shell in ["bash", "zsh", "fish"] {
        let output = stoker(&["completion", shell], None);
        assert_eq!(code(&output), 0, "{shell}");
        let script = stdout(&output);
        assert!(script.contains("stoker") && script.contains("validate") && script.contains("iam-policy"), "{shell}");
    }
}
