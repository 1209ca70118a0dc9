use serde_json::json;

use super::*;

fn event(source: &str, detail_type: &str, detail: serde_json::Value) -> String {
    json!({
        "version": "0", "id": "7bf73129-1428-4cd3-a780-95db273d1602", "detail-type": detail_type,
        "source": source, "account": "123456789012", "time": "2026-12-02T10:00:00Z",
        "region": "us-east-1", "resources": ["arn:aws:ec2:us-east-1:123456789012:instance/i-0abc"],
        "detail": detail
    })
    .to_string()
}

fn owned() -> HashMap<String, String> {
    HashMap::from([("i-0abc".to_owned(), "default-x1".to_owned())])
}

#[test]
fn the_four_kinds_of_event_are_read() {
    let spot = parse(&event(
        "aws.ec2",
        "EC2 Spot Instance Interruption Warning",
        json!({"instance-id": "i-0abc", "instance-action": "terminate"}),
    ));
    assert_eq!(spot.notice, Notice::SpotInterruption { instance: "i-0abc".into() });
    assert_eq!(spot.time, Some("2026-12-02T10:00:00Z".parse().unwrap()));
    let rebalance = parse(&event("aws.ec2", "EC2 Instance Rebalance Recommendation", json!({"instance-id": "i-0abc"})));
    assert_eq!(rebalance.notice, Notice::Rebalance { instance: "i-0abc".into() });
    let stopping = parse(&event(
        "aws.ec2",
        "EC2 Instance State-change Notification",
        json!({"instance-id": "i-0abc", "state": "stopping"}),
    ));
    assert_eq!(stopping.notice, Notice::StateChange { instance: "i-0abc".into(), state: "stopping".into() });
    let health = parse(&event(
        "aws.health",
        "AWS Health Event",
        json!({"service": "EC2", "eventTypeCategory": "scheduledChange", "eventTypeCode": "AWS_EC2_INSTANCE_RETIREMENT_SCHEDULED",
               "affectedEntities": [{"entityValue": "i-0abc"}, {"entityValue": "i-0def"}, {"entityValue": "vol-1"}]}),
    ));
    assert_eq!(health.notice, Notice::ScheduledChange { instances: vec!["i-0abc".into(), "i-0def".into()] });
}

#[test]
fn garbage_is_ignored_with_a_reason_never_an_error() {
    for body in ["", "not json", "[1, 2]", "{\"source\": 7}", "{}", "\u{0}"] {
        let parsed = parse(body);
        assert!(matches!(parsed.notice, Notice::Ignored(Ignored::Malformed(_))), "{body:?}: {parsed:?}");
        assert_eq!(parsed.notice.kind(), "malformed");
        assert!(actions(&parsed.notice, &owned(), true).is_empty());
    }
    let other = parse(&event("aws.s3", "Object Created", json!({"bucket": {"name": "b"}})));
    assert_eq!(other.notice.kind(), "unknown");
    // A known kind without its instance ID is not something to act on.
    let headless = parse(&event("aws.ec2", "EC2 Spot Instance Interruption Warning", json!({})));
    assert_eq!(headless.notice.kind(), "unknown");
    let other_service = parse(&event(
        "aws.health",
        "AWS Health Event",
        json!({"service": "RDS", "eventTypeCategory": "scheduledChange", "affectedEntities": [{"entityValue": "i-0abc"}]}),
    ));
    assert_eq!(other_service.notice.kind(), "unknown");
}

#[test]
fn each_notice_leads_to_its_action_and_only_for_instances_a_claim_owns() {
    let claim = "default-x1".to_owned();
    let on = |notice: Notice, rebalance: bool| actions(&notice, &owned(), rebalance);
    let interrupt =
        |mark_unavailable| vec![("i-0abc".to_owned(), Action::Interrupt { claim: claim.clone(), mark_unavailable })];
    assert_eq!(on(Notice::SpotInterruption { instance: "i-0abc".into() }, false), interrupt(true));
    assert_eq!(on(Notice::ScheduledChange { instances: vec!["i-0abc".into()] }, false), interrupt(false));
    for state in ["stopping", "stopped", "shutting-down"] {
        let notice = Notice::StateChange { instance: "i-0abc".into(), state: state.into() };
        assert_eq!(on(notice, false), interrupt(false), "{state}");
    }
    let terminated = Notice::StateChange { instance: "i-0abc".into(), state: "terminated".into() };
    assert_eq!(on(terminated, false), vec![("i-0abc".to_owned(), Action::Remove { claim: claim.clone() })]);
    let running = Notice::StateChange { instance: "i-0abc".into(), state: "running".into() };
    assert_eq!(on(running, false), vec![("i-0abc".to_owned(), Action::Nothing)]);
    let rebalance = Notice::Rebalance { instance: "i-0abc".into() };
    assert_eq!(on(rebalance.clone(), false), vec![("i-0abc".to_owned(), Action::Record { claim: claim.clone() })]);
    assert_eq!(on(rebalance, true), interrupt(false));
    // Another cluster's instance, or one stoker never launched: nothing, whatever the message.
    let stranger = Notice::SpotInterruption { instance: "i-0zzz".into() };
    assert_eq!(on(stranger, true), vec![("i-0zzz".to_owned(), Action::Nothing)]);
}
