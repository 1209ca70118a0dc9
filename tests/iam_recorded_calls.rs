//! Every AWS call stoker made during the end-to-end tests is allowed by its IAM policy. The
//! emulator records each call stoker's clients make (`hack/emulator.py`); this turns each into the
//! authorization requests AWS makes for it (`support::iam::requests_for`) and runs them through a
//! real IAM policy evaluator. It also checks the other way: every action the policy grants was
//! needed by some call, except those listed in `NEVER_CALLED_HERE` with the reason.
//!
//! It has to run after every other test, so it is not part of `cargo test --all-targets`
//! (`test = false` in Cargo.toml); `hack/test.sh` runs it last.

mod support;

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;
use support::iam::{IamRequest, evaluate, local_cluster, local_policy, requests_for};

/// Granted actions the local tests never need, and why they are granted anyway.
const NEVER_CALLED_HERE: [(&str, &str); 2] = [
    ("iam:CreateServiceLinkedRole", "EC2 creates the spot service-linked role on an account's first spot launch"),
    (
        "eks:DescribeCluster",
        "the local environment sets the cluster endpoint, CA and service CIDR, so nothing is discovered",
    ),
];

fn granted_actions(policy: &Value) -> BTreeSet<String> {
    let mut actions = BTreeSet::new();
    for statement in policy["Statement"].as_array().expect("statements") {
        match &statement["Action"] {
            Value::String(action) => {
                actions.insert(action.clone());
            }
            Value::Array(list) => actions.extend(list.iter().filter_map(|a| a.as_str().map(str::to_owned))),
            other => panic!("unexpected Action {other}"),
        }
    }
    actions
}

#[test]
#[ignore = "reads the calls recorded by every other end-to-end test (hack/test.sh runs it last)"]
fn every_call_stoker_made_is_allowed() {
    let path = std::env::var("STOKER_AWS_CALL_LOG").expect("STOKER_AWS_CALL_LOG (source the local environment)");
    let log = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let calls: Vec<Value> = log.lines().map(|line| serde_json::from_str(line).expect("a JSON line")).collect();
    assert!(calls.len() > 100, "only {} calls recorded in {path}: run the end-to-end tests first", calls.len());
    let broken: Vec<&Value> = calls.iter().filter(|c| c.get("observed_error").is_some()).collect();
    assert!(broken.is_empty(), "the emulator could not record what IAM sees for: {broken:?}");

    // Many calls ask the same thing (thousands of DescribeInstances): each distinct request once,
    // with the first call that made it.
    let mut distinct: BTreeMap<String, (IamRequest, String)> = BTreeMap::new();
    for call in &calls {
        for request in requests_for(call) {
            let key = serde_json::to_string(&request).expect("serializable");
            distinct.entry(key).or_insert_with(|| (request, format!("{} {}", call["service"], call["action"])));
        }
    }
    // A policy names one cluster and one interruption queue; the tests run controllers for more
    // than one cluster (each with its own ownership tags) and use several queues. Each request is
    // evaluated against the policy of the cluster whose `stoker.dev/cluster` tag it carries (in
    // the request or on the resource; the local cluster when it carries none) and of its queue.
    let mut by_queue: BTreeMap<(String, Option<String>), Vec<(IamRequest, String)>> = BTreeMap::new();
    for (request, call) in distinct.into_values() {
        let queue =
            request.action.starts_with("sqs:").then(|| request.resource.rsplit(':').next().unwrap_or("").to_owned());
        let cluster = ["aws:RequestTag/stoker.dev/cluster", "aws:ResourceTag/stoker.dev/cluster"]
            .iter()
            .find_map(|key| request.context.get(*key).and_then(Value::as_str).map(str::to_owned))
            .unwrap_or_else(local_cluster);
        by_queue.entry((cluster, queue)).or_default().push((request, call));
    }
    let mut denied = Vec::new();
    let mut exercised = BTreeSet::new();
    for ((cluster, queue), group) in &by_queue {
        let requests: Vec<IamRequest> = group.iter().map(|(r, _)| r.clone()).collect();
        for ((request, call), decision) in
            group.iter().zip(evaluate(&local_policy(cluster, queue.as_deref()), &requests))
        {
            exercised.insert(request.action.clone());
            if decision != "Allowed" {
                denied.push(format!(
                    "{decision}: {} on {} {:?} (from {call})",
                    request.action, request.resource, request.context
                ));
            }
        }
    }
    println!(
        "{} recorded calls, {} distinct authorization requests, actions: {exercised:?}",
        calls.len(),
        by_queue.values().map(Vec::len).sum::<usize>()
    );
    assert!(denied.is_empty(), "the policy denies calls stoker makes:\n{}", denied.join("\n"));

    let exempt: BTreeSet<String> = NEVER_CALLED_HERE.iter().map(|(action, _)| action.to_string()).collect();
    let unused: Vec<String> = granted_actions(&local_policy(&local_cluster(), Some("queue")))
        .into_iter()
        .filter(|a| !exercised.contains(a) && !exempt.contains(a))
        .collect();
    assert!(unused.is_empty(), "the policy grants actions no recorded call needed: {unused:?}");
}
