//! One CreateFleet call for many NodeClaims. Launches whose calls would be the same but for the
//! NodeClaim (capacity type, overrides, launch templates and tags) and that arrive within a short
//! window go out as one call for as many instances, as Karpenter batches them: a burst makes one
//! call per launch configuration instead of one per NodeClaim, far under EC2's request limits.
//! A launch says whether others decided with it are still to come ([`Followers`]); once the
//! last has joined, the calls go out at once instead of waiting out the window.
//!
//! Who gets which instance is decided by the call alone, so it can be decided again after a
//! restart: the members sorted by name take the launched instances sorted by ID; when EC2 launched
//! fewer, the last members get the call's errors and try again. The call tags every instance
//! with the members' names (`stoker.dev/launch-batch`, continued in numbered tags when long), and
//! each instance then with its own NodeClaim ([`claim_tags`]). A launch that may have been made
//! before (a restart, another leader) looks for instances naming its NodeClaim in either tag and
//! takes its share ([`adopted`]), so an instance whose own tag was never written (the controller
//! died in between) is found and never launched again.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::{sync::oneshot, time::Instant};

use super::{
    aws_error,
    createfleet::{self, Outcome, Reply, Template},
    fleet::{LaunchPlan, TemplateKey},
    instances::is_live,
    tags::{claim_tags, ec2_tags},
};
use crate::cloudprovider::{CloudError, Followers, Instance};

/// The tag holding the names of the NodeClaims a call launched for; `-2`, `-3`, ... continue it.
pub const BATCH_TAG: &str = "stoker.dev/launch-batch";
/// EC2's longest tag value.
const TAG_VALUE_LIMIT: usize = 256;
/// At most this many tags name a batch's members (EC2 allows 50 tags on a resource, and the node
/// class's own tags need room too): about 120 of stoker's generated names.
const MAX_BATCH_TAGS: usize = 8;

/// How long a batch stays open: it goes out once no launch joined it for `idle`, and at the
/// latest `max` after it opened.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchWindow {
    pub idle: Duration,
    pub max: Duration,
}

impl Default for BatchWindow {
    /// Karpenter's CreateFleet batcher waits as long: a burst's launches arrive within
    /// milliseconds of each other, and a lone launch waits a moment against a call of ~1 s.
    fn default() -> Self {
        Self { idle: Duration::from_millis(35), max: Duration::from_secs(1) }
    }
}

/// Everything a CreateFleet call sends but its NodeClaims.
#[derive(Debug, Clone)]
pub struct Call {
    pub plan: LaunchPlan,
    pub templates: BTreeMap<TemplateKey, Template>,
    /// The tags every instance of the call gets ([`super::tags::launch_tags`]).
    pub tags: BTreeMap<String, String>,
}

impl Call {
    /// Equal for calls that can be one.
    fn key(&self) -> String {
        let mut key = self.plan.capacity_type.clone();
        for entry in &self.plan.overrides {
            key.push_str(&format!("|{}|{}|{}|{}", entry.instance_type, entry.subnet_id, entry.image, entry.priority));
        }
        for (key_of, template) in &self.templates {
            key.push_str(&format!("|{key_of:?}={}", template.name));
        }
        for (name, value) in &self.tags {
            key.push_str(&format!("|{name}={value}"));
        }
        key
    }
}

/// A NodeClaim asking for an instance.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    pub name: String,
    pub uid: String,
}

type Answer = oneshot::Sender<Result<Outcome, CloudError>>;

struct Open {
    id: u64,
    call: Call,
    members: Vec<(Member, Answer)>,
    opened: Instant,
    last_joined: Instant,
}

impl Open {
    fn due(&self, window: BatchWindow) -> Instant {
        (self.last_joined + window.idle).min(self.opened + window.max)
    }

    fn has_room_for(&self, member: &Member) -> bool {
        let mut names: Vec<&str> = self.members.iter().map(|(m, _)| m.name.as_str()).collect();
        names.push(&member.name);
        batch_tag_values(&names).len() <= MAX_BATCH_TAGS
    }
}

/// The open batches, by what their calls send, and the launches on their way to them.
#[derive(Default)]
struct State {
    open: HashMap<String, Open>,
    /// Launches that will ask to join (or give up) soon: between the start of a launch attempt
    /// and its joining.
    on_their_way: usize,
    /// The last launch to start said launches decided with it are still to come.
    followers_expected: bool,
}

impl State {
    /// Every open batch, once no launch is on its way and none is expected: waiting longer
    /// cannot make a call share more.
    fn take_if_complete(&mut self) -> Vec<Open> {
        if self.on_their_way > 0 || self.followers_expected {
            return Vec::new();
        }
        self.open.drain().map(|(_, batch)| batch).collect()
    }
}

/// Shares CreateFleet calls among launches alike.
#[derive(Clone, Default)]
pub struct FleetBatcher {
    window: BatchWindow,
    state: Arc<Mutex<State>>,
    next_id: Arc<AtomicU64>,
}

/// A launch attempt on its way to a batch: joins one with [`FleetBatcher::launch`], or, dropped,
/// no longer holds the batches back.
pub struct OnTheWay {
    batcher: FleetBatcher,
    ec2: aws_sdk_ec2::Client,
    joined: bool,
}

impl Drop for OnTheWay {
    fn drop(&mut self) {
        if self.joined {
            return;
        }
        let complete = {
            let mut state = self.batcher.state();
            state.on_their_way = state.on_their_way.saturating_sub(1);
            state.take_if_complete()
        };
        for batch in complete {
            tokio::spawn(send(self.ec2.clone(), batch));
        }
    }
}

impl FleetBatcher {
    pub fn new(window: BatchWindow) -> Self {
        Self { window, ..Self::default() }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Notes a launch attempt starting, before it plans: batches wait for it to join.
    pub fn on_the_way(&self, ec2: &aws_sdk_ec2::Client, followers: Followers) -> OnTheWay {
        let mut state = self.state();
        state.on_their_way += 1;
        state.followers_expected = followers == Followers::Expected;
        OnTheWay { batcher: self.clone(), ec2: ec2.clone(), joined: false }
    }

    /// Launches one instance for `member` in a call shared with the launches like it: its share
    /// of what the call launched, or the call's errors. The call goes out when every launch on
    /// its way has joined and none is expected, else once the batch has been quiet for the idle
    /// window (or open for the longest). It is sent by a task of its own, so a launch that stops
    /// waiting still gets its instance (tagged with its NodeClaim).
    pub async fn launch(&self, mut on_the_way: OnTheWay, call: Call, member: Member) -> Result<Outcome, CloudError> {
        let ec2 = on_the_way.ec2.clone();
        on_the_way.joined = true;
        let (answer, answered) = oneshot::channel();
        let key = call.key();
        let now = Instant::now();
        let (ready, opened) = {
            let mut state = self.state();
            state.on_their_way = state.on_their_way.saturating_sub(1);
            let mut ready = Vec::new();
            let mut opened = None;
            match state.open.get_mut(&key) {
                Some(batch) if batch.has_room_for(&member) => {
                    batch.members.push((member, answer));
                    batch.last_joined = now;
                }
                _ => {
                    // A full batch goes out now; this launch opens the next one.
                    ready.extend(state.open.remove(&key));
                    let id = self.next_id.fetch_add(1, Ordering::Relaxed);
                    let batch = Open { id, call, members: vec![(member, answer)], opened: now, last_joined: now };
                    state.open.insert(key.clone(), batch);
                    opened = Some(id);
                }
            }
            ready.extend(state.take_if_complete());
            (ready, opened)
        };
        for batch in ready {
            tokio::spawn(send(ec2.clone(), batch));
        }
        if let Some(id) = opened {
            tokio::spawn(self.clone().send_when_due(ec2, key, id));
        }
        answered.await.unwrap_or_else(|_| {
            Err(CloudError::Aws {
                operation: "CreateFleet",
                code: "BatchDropped".into(),
                message: "the shared CreateFleet call was dropped before it answered".into(),
            })
        })
    }

    /// Waits until batch `id` is due and sends it, unless it went out before.
    async fn send_when_due(self, ec2: aws_sdk_ec2::Client, key: String, id: u64) {
        loop {
            let due = match self.take_if_due(&key, id) {
                Ok(batch) => return send(ec2, batch).await,
                Err(Some(due)) => due,
                Err(None) => return,
            };
            tokio::time::sleep_until(due).await;
        }
    }

    /// Batch `id` when it is due; else when it will be, or `None` once it went out.
    fn take_if_due(&self, key: &str, id: u64) -> Result<Open, Option<Instant>> {
        let mut state = self.state();
        let due = state.open.get(key).filter(|batch| batch.id == id).ok_or(None)?.due(self.window);
        if due > Instant::now() {
            return Err(Some(due));
        }
        state.open.remove(key).ok_or(None)
    }
}

/// Sends one batch's call, names each instance after its NodeClaim and answers every member.
async fn send(ec2: aws_sdk_ec2::Client, batch: Open) {
    let Open { call, mut members, .. } = batch;
    members.sort_by(|a, b| a.0.name.cmp(&b.0.name));
    let names: Vec<&str> = members.iter().map(|(m, _)| m.name.as_str()).collect();
    let mut tags = call.tags.clone();
    match names.as_slice() {
        [only] => tags.extend(claim_tags(only)),
        _ => tags.extend(batch_tags(&names)),
    }
    let uids: Vec<&str> = members.iter().map(|(m, _)| m.uid.as_str()).collect();
    let token = createfleet::client_token(&uids, &call.plan);
    let request = createfleet::request(&call.plan, &call.templates, token, &tags, names.len());
    tracing::info!(
        nodeclaims = %names.join(" "), count = names.len(), capacity_type = %call.plan.capacity_type,
        overrides = call.plan.overrides.len(), "calling CreateFleet"
    );
    let reply = match request.send_with(&ec2).await {
        Ok(output) => createfleet::reply(&output, &call.plan, &call.templates, &tags, chrono::Utc::now()),
        Err(error) => Err(aws_error("CreateFleet")(error)),
    };
    let outcomes = match reply {
        Ok(reply) => share(&names, reply),
        Err(error) => names.iter().map(|_| Err(error.clone())).collect(),
    };
    if names.len() > 1 {
        let naming = outcomes.iter().filter_map(|outcome| match outcome {
            Ok(Outcome::Launched(instance, _)) => Some(name_instance(&ec2, instance)),
            _ => None,
        });
        futures::future::join_all(naming).await;
    }
    for ((_, answer), outcome) in members.into_iter().zip(outcomes) {
        // A member that stopped waiting finds its instance by its tags.
        let _ = answer.send(outcome);
    }
}

/// Tags an instance of a shared call with its NodeClaim. A failure only costs the shortcut:
/// adoption finds the instance by its batch tag.
pub(super) async fn name_instance(ec2: &aws_sdk_ec2::Client, instance: &Instance) {
    let Some(nodeclaim) = instance.nodeclaim() else { return };
    let result = ec2
        .create_tags()
        .resources(&instance.id)
        .set_tags(Some(ec2_tags(&claim_tags(nodeclaim))))
        .send()
        .await
        .map_err(aws_error("CreateTags"));
    if let Err(error) = result {
        tracing::warn!(instance = %instance.id, %nodeclaim, %error, "could not tag the instance with its NodeClaim");
    }
}

/// Each member's part of a reply, members in name order (`names` is sorted): the instances by
/// ID, each tagged with its NodeClaim; the reply's errors for the members left without one.
pub fn share(names: &[&str], reply: Reply) -> Vec<Result<Outcome, CloudError>> {
    let Reply { mut launched, failures } = reply;
    launched.sort_by(|a, b| a.id.cmp(&b.id));
    let mut launched = launched.into_iter();
    names
        .iter()
        .map(|name| match launched.next() {
            Some(mut instance) => {
                instance.tags.extend(claim_tags(name));
                Ok(Outcome::Launched(Box::new(instance), failures.clone()))
            }
            None => Ok(Outcome::Failed(failures.clone())),
        })
        .collect()
}

/// The names, sorted and space-separated, over as many tag values as they need: `stoker.dev/launch-batch`, then `-2`, `-3`, ...
pub fn batch_tags(names: &[&str]) -> BTreeMap<String, String> {
    batch_tag_values(names)
        .into_iter()
        .enumerate()
        .map(|(index, value)| match index {
            0 => (BATCH_TAG.to_owned(), value),
            _ => (format!("{BATCH_TAG}-{}", index + 1), value),
        })
        .collect()
}

fn batch_tag_values(names: &[&str]) -> Vec<String> {
    let mut sorted = names.to_vec();
    sorted.sort_unstable();
    let mut values: Vec<String> = Vec::new();
    for name in sorted {
        match values.last_mut() {
            Some(value) if value.len() + 1 + name.len() <= TAG_VALUE_LIMIT => {
                value.push(' ');
                value.push_str(name);
            }
            _ => values.push(name.to_owned()),
        }
    }
    values
}

/// The names a batch tagged its instances with, or none for an instance of a one-claim call.
fn batch_members(instance: &Instance) -> Vec<&str> {
    instance
        .tags
        .iter()
        .filter(|(key, _)| {
            key.strip_prefix(BATCH_TAG)
                .is_some_and(|rest| rest.is_empty() || rest.strip_prefix('-').is_some_and(|n| n.parse::<u8>().is_ok()))
        })
        .flat_map(|(_, value)| value.split(' '))
        .collect()
}

/// `tag-value` filter values that match the NodeClaim tag of `nodeclaim` and every batch tag
/// naming it (EC2 filters take `*` as a wildcard; names cannot contain one).
pub fn tag_value_patterns(nodeclaim: &str) -> Vec<String> {
    vec![nodeclaim.to_owned(), format!("{nodeclaim} *"), format!("* {nodeclaim}"), format!("* {nodeclaim} *")]
}

/// The live instance launched for `nodeclaim` among `found` (every instance, in any state, that
/// names it in a tag): one tagged with it, else its share of a batch naming it. Within a batch,
/// members and instances already tagged with a NodeClaim are paired; the rest pair in order, as
/// [`share`] paired them. (An instance terminated long enough ago to be gone from EC2's answers
/// would shift the pairing; by then every member has recorded its instance.)
pub fn adopted(nodeclaim: &str, found: &[Instance]) -> Option<Instance> {
    let tagged = found
        .iter()
        .filter(|instance| instance.nodeclaim() == Some(nodeclaim) && is_live(instance))
        .min_by_key(|instance| instance.launch_time);
    if let Some(instance) = tagged {
        return Some(instance.clone());
    }
    let mut batches: BTreeMap<Vec<&str>, Vec<&Instance>> = BTreeMap::new();
    for instance in found {
        let mut members = batch_members(instance);
        members.sort_unstable();
        if members.contains(&nodeclaim) {
            batches.entry(members).or_default().push(instance);
        }
    }
    batches.into_iter().find_map(|(members, mut instances)| {
        let named: BTreeSet<&str> = instances.iter().filter_map(|i| i.nodeclaim()).collect();
        let waiting: Vec<&str> = members.into_iter().filter(|m| !named.contains(m)).collect();
        instances.retain(|i| i.nodeclaim().is_none());
        instances.sort_by(|a, b| a.id.cmp(&b.id));
        let position = waiting.iter().position(|m| *m == nodeclaim)?;
        instances.get(position).filter(|instance| is_live(instance)).map(|instance| {
            let mut instance = (*instance).clone();
            instance.tags.extend(claim_tags(nodeclaim));
            instance
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{apis::labels, cloudprovider::aws::createfleet::Failure};

    fn instance(id: &str, tags: &[(&str, &str)], state: &str) -> Instance {
        Instance {
            subnet_id: "subnet-a".into(),
            state: state.into(),
            tags: tags.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            ..Instance::example(id)
        }
    }

    fn failure() -> Failure {
        Failure {
            code: "InsufficientInstanceCapacity".into(),
            message: "none left".into(),
            instance_type: Some("m5.large".into()),
            zone: Some("us-east-1a".into()),
            subnet_id: None,
        }
    }

    fn launched(outcome: &Result<Outcome, CloudError>) -> Option<(&str, &str)> {
        match outcome {
            Ok(Outcome::Launched(instance, _)) => Some((instance.id.as_str(), instance.nodeclaim()?)),
            _ => None,
        }
    }

    #[test]
    fn members_in_name_order_take_instances_in_id_order_and_the_rest_get_the_errors() {
        let reply = Reply {
            launched: vec![instance("i-2", &[], "pending"), instance("i-1", &[], "pending")],
            failures: vec![failure()],
        };
        let outcomes = share(&["a", "b", "c"], reply);
        assert_eq!(launched(&outcomes[0]), Some(("i-1", "a")));
        assert_eq!(launched(&outcomes[1]), Some(("i-2", "b")));
        assert_eq!(outcomes[2], Ok(Outcome::Failed(vec![failure()])));
        assert!(
            matches!(&outcomes[0], Ok(Outcome::Launched(_, failures)) if *failures == [failure()]),
            "a launched member also learns which pools failed"
        );
    }

    #[test]
    fn batch_tags_hold_every_name_within_ec2s_value_limit() {
        assert_eq!(batch_tags(&["b", "a"]), BTreeMap::from([(BATCH_TAG.to_owned(), "a b".to_owned())]));
        let names: Vec<String> = (0..40).map(|i| format!("general-{i:02}-{}", "x".repeat(20))).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let tags = batch_tags(&refs);
        assert!(tags.len() > 1 && tags.len() <= MAX_BATCH_TAGS, "{tags:?}");
        assert!(tags.values().all(|v| v.len() <= TAG_VALUE_LIMIT));
        assert!(tags.contains_key(&format!("{BATCH_TAG}-2")));
        let tagged =
            instance("i-1", &tags.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect::<Vec<_>>(), "running");
        let mut back = batch_members(&tagged);
        back.sort_unstable();
        assert_eq!(back, refs, "every name, once");
    }

    #[test]
    fn adoption_pairs_a_batch_as_the_launch_did_whatever_was_tagged_in_between() {
        let batch = [(BATCH_TAG, "a b c")];
        // The launch paired a–i-1, b–i-2, c–i-3; only b's own tag was written before the crash.
        let found = [
            instance("i-3", &batch, "running"),
            instance("i-1", &batch, "running"),
            instance("i-2", &[(BATCH_TAG, "a b c"), (labels::EC2_NODECLAIM_TAG, "b")], "running"),
        ];
        let id = |name: &str| adopted(name, &found).map(|i| i.id);
        assert_eq!(id("a").as_deref(), Some("i-1"));
        assert_eq!(id("b").as_deref(), Some("i-2"));
        assert_eq!(id("c").as_deref(), Some("i-3"));
        assert!(adopted("a", &found).is_some_and(|i| i.nodeclaim() == Some("a")), "adopted with its NodeClaim tag");
        assert_eq!(id("d"), None, "not a member");
        // EC2 launched two for three: the last member got errors and launched again on its own.
        let short = [
            instance("i-1", &batch, "running"),
            instance("i-2", &batch, "running"),
            instance("i-9", &[(labels::EC2_NODECLAIM_TAG, "c")], "running"),
        ];
        assert_eq!(adopted("c", &short).map(|i| i.id).as_deref(), Some("i-9"));
        assert_eq!(adopted("b", &short[..2]).map(|i| i.id).as_deref(), Some("i-2"));
        assert_eq!(adopted("c", &short[..2]), None, "no share: launch");
        // A share that was terminated is not adopted (the claim launches again, as for a
        // one-claim instance gone), and does not shift the others.
        let gone = [instance("i-1", &batch, "terminated"), instance("i-2", &batch, "running")];
        assert_eq!(adopted("a", &gone), None);
        assert_eq!(adopted("b", &gone).map(|i| i.id).as_deref(), Some("i-2"));
    }

    #[test]
    fn calls_that_differ_only_in_their_nodeclaims_share_a_key() {
        let plan = LaunchPlan { capacity_type: "spot".into(), overrides: Vec::new(), follow_priorities: false };
        let call = |tags: &[(&str, &str)]| Call {
            plan: plan.clone(),
            templates: BTreeMap::new(),
            tags: tags.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        };
        assert_eq!(call(&[("team", "a")]).key(), call(&[("team", "a")]).key());
        assert_ne!(call(&[("team", "a")]).key(), call(&[("team", "b")]).key());
    }

    #[test]
    fn a_batch_is_due_when_quiet_or_at_its_longest() {
        let window = BatchWindow { idle: Duration::from_millis(35), max: Duration::from_secs(1) };
        let opened = Instant::now();
        let (answer, _answered) = oneshot::channel();
        let mut batch = Open {
            id: 0,
            call: Call {
                plan: LaunchPlan { capacity_type: "spot".into(), overrides: Vec::new(), follow_priorities: false },
                templates: BTreeMap::new(),
                tags: BTreeMap::new(),
            },
            members: vec![(Member { name: "a".into(), uid: "u".into() }, answer)],
            opened,
            last_joined: opened,
        };
        assert_eq!(batch.due(window), opened + window.idle);
        batch.last_joined = opened + Duration::from_millis(990);
        assert_eq!(batch.due(window), opened + window.max);
        let long = |i: usize| Member { name: format!("{i}{}", "n".repeat(250)), uid: "u".into() };
        assert!(batch.has_room_for(&long(0)));
        // Each long name needs a tag of its own (the short one shares the first): eight fill it.
        for i in 1..=MAX_BATCH_TAGS {
            let (answer, _) = oneshot::channel();
            batch.members.push((long(i), answer));
        }
        assert!(!batch.has_room_for(&long(99)), "no ninth tag");
    }
}
