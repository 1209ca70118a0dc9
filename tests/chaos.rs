//! The chaos soak: two `stoker controller` processes on the local control plane, their EC2 traffic
//! through the fault proxy, and cycles of bursts and scale-downs while things go wrong: the leader
//! killed with SIGKILL at a random moment (and started again), capacity errors, throttling,
//! server errors and a CreateFleet whose instance is made but whose answer is lost, and once the
//! apiserver restarted. At the end it prints, and requires to be zero: instances leaked, instances
//! duplicated, pods lost, pods not Running, PodDisruptionBudget violations, and controller
//! restarts stoker caused itself.
//!
//! `STOKER_CHAOS_CYCLES` sets the cycles (2 in the test suite; `hack/chaos-soak.sh` runs 30) and
//! `STOKER_CHAOS_SEED` the random choices (printed, so a run can be repeated).

mod support;

use std::{
    collections::{BTreeMap, HashMap},
    time::{Duration, Instant},
};

use k8s_openapi::api::{apps::v1::Deployment, coordination::v1::Lease, core::v1::Pod};
use kube::{
    Api, Client,
    api::{DeleteParams, ListParams},
};
use serde_json::json;
use stoker::{
    apis::NodeClaim,
    cloudprovider::{
        CloudProvider,
        aws::{AwsCloudProvider, AwsOptions, aws_config},
    },
};
use support::{
    apply, controller, env,
    fault_proxy::{CapacityRule, FaultProxy},
    log_of, wait_until,
};

const POOL: &str = "chaos";
const STEADY: i32 = 4;
const STEADY_MIN: i32 = 3;
const REPLICAS: [&str; 2] = ["stoker-chaos-a", "stoker-chaos-b"];

/// What went wrong over the soak; all must stay zero.
#[derive(Debug, Default)]
struct Tally {
    instances_leaked: usize,
    instances_duplicated: usize,
    pods_lost: usize,
    pods_not_running: usize,
    pdb_violations: usize,
    unexpected_restarts: usize,
}

/// The controller processes, restarted when killed (on purpose) or when they exit (not).
struct Replicas {
    children: HashMap<&'static str, tokio::process::Child>,
    env: Vec<(String, String)>,
    unexpected: usize,
}

impl Replicas {
    fn start(env: Vec<(String, String)>) -> Self {
        let mut replicas = Self { children: HashMap::new(), env, unexpected: 0 };
        for name in REPLICAS {
            replicas.spawn(name);
        }
        replicas
    }

    fn spawn(&mut self, name: &'static str) {
        let env: Vec<(&str, &str)> = self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        // Each start keeps the previous log, for a look after a failure.
        let previous = log_of(name);
        if !previous.is_empty() {
            let _ = std::fs::write(std::env::temp_dir().join(format!("{name}.previous.log")), previous);
        }
        self.children.insert(name, controller(name, &env));
    }

    /// SIGKILL, as a node failure or an OOM kill would; started again after `pause`.
    async fn kill(&mut self, name: &'static str, pause: Duration) {
        if let Some(mut child) = self.children.remove(name) {
            let _ = child.kill().await;
        }
        tokio::time::sleep(pause).await;
        self.spawn(name);
    }

    /// Restarts any process that exited without being killed, counting it.
    fn check(&mut self) {
        let exited: Vec<&'static str> = self
            .children
            .iter_mut()
            .filter_map(|(name, child)| child.try_wait().ok().flatten().map(|_| *name))
            .collect();
        for name in exited {
            println!("{name} exited on its own; log:\n{}", log_of(name));
            self.unexpected += 1;
            self.spawn(name);
        }
    }
}

async fn holder(client: &Client) -> Option<String> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "default");
    leases.get_opt("stoker-leader-election").await.ok()??.spec?.holder_identity
}

/// The live pods of a Deployment; `None` while the apiserver does not answer (it restarts once).
async fn try_pods_of(client: &Client, app: &str) -> Option<Vec<Pod>> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let listed = pods.list(&ListParams::default().labels(&format!("app={app}"))).await.ok()?;
    Some(listed.items.into_iter().filter(|p| p.metadata.deletion_timestamp.is_none()).collect())
}

async fn pods_of(client: &Client, app: &str) -> Vec<Pod> {
    try_pods_of(client, app).await.unwrap_or_default()
}

fn running(pods: &[Pod]) -> usize {
    pods.iter().filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")).count()
}

/// Instances no claim names, and claims with more than one live instance.
async fn cloud_accounting(client: &Client, provider: &AwsCloudProvider) -> (Vec<String>, Vec<String>) {
    let claims: Api<NodeClaim> = Api::all(client.clone());
    let claims = claims.list(&ListParams::default()).await.map(|l| l.items).unwrap_or_default();
    let named: Vec<String> = claims.iter().filter_map(|c| c.status.as_ref()?.provider_id.clone()).collect();
    let instances = provider.list().await.unwrap_or_default();
    let leaked = instances.iter().filter(|i| !named.contains(&i.provider_id)).map(|i| i.id.clone()).collect();
    let mut per_claim: BTreeMap<&str, usize> = BTreeMap::new();
    for instance in &instances {
        if let Some(claim) = instance.nodeclaim() {
            *per_claim.entry(claim).or_default() += 1;
        }
    }
    let duplicated = per_claim.into_iter().filter(|(_, n)| *n > 1).map(|(claim, _)| claim.to_owned()).collect();
    (leaked, duplicated)
}

fn restart_apiserver() {
    let script = "hack/restart-apiserver.sh";
    let status = std::process::Command::new(script).status().expect("run hack/restart-apiserver.sh");
    assert!(status.success(), "the apiserver restarted");
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the local environment: run hack/test.sh"]
async fn chaos_soak_loses_nothing() {
    let cycles: usize = std::env::var("STOKER_CHAOS_CYCLES").ok().and_then(|c| c.parse().ok()).unwrap_or(2);
    let seed: u64 =
        std::env::var("STOKER_CHAOS_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| fastrand::u64(..));
    println!("chaos soak: {cycles} cycles, seed {seed}");
    let mut rng = fastrand::Rng::with_seed(seed);
    let client = support::client().await;
    support::install_crds(&client).await;
    tokio::spawn(stoker::cli::simulator::run(env("CLUSTER_NAME"), Duration::from_secs(1)));
    let proxy = FaultProxy::start(&env("AWS_ENDPOINT_URL_EC2")).await;
    let mut replicas = Replicas::start(vec![("AWS_ENDPOINT_URL_EC2".into(), proxy.endpoint.clone())]);

    let mut class = support::example("ec2nodeclass.yaml");
    class["metadata"]["name"] = json!(POOL);
    apply(&client, class).await;
    let types = ["c6a.xlarge", "c6a.2xlarge", "m6a.xlarge", "m6a.2xlarge"];
    let requirements = json!([
        support::one_of("node.kubernetes.io/instance-type", &types),
        support::one_of("karpenter.sh/capacity-type", &["spot", "on-demand"])
    ]);
    let disruption = json!({"consolidationPolicy": "WhenEmpty", "consolidateAfter": "10s"});
    apply(&client, support::nodepool(POOL, POOL, requirements, disruption)).await;
    let selector = json!({"stoker.dev/nodepool": POOL});
    apply(&client, support::deployment("chaos-steady", STEADY, "250m", selector.clone())).await;
    apply(
        &client,
        json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "chaos-steady", "namespace": "default"},
               "spec": {"minAvailable": STEADY_MIN, "selector": {"matchLabels": {"app": "chaos-steady"}}}}),
    )
    .await;
    let steady = wait_until(Duration::from_secs(180), || async {
        (running(&pods_of(&client, "chaos-steady").await) == STEADY as usize).then_some(())
    })
    .await;
    assert!(steady.is_some(), "the steady pods run; leader log:\n{}", log_of(REPLICAS[0]));

    // The PodDisruptionBudget is watched all along. A violation is a steady pod going (deleted
    // or evicted) while the budget allowed no disruption at the sample before: only a delete
    // that bypasses the Eviction API can do that. (Readiness alone is no measure: during the
    // apiserver restart the nodes miss heartbeats and their pods turn NotReady for a while.)
    let (violations_to, violations) = tokio::sync::watch::channel(0usize);
    let watcher = client.clone();
    let budget_watch = tokio::spawn(async move {
        let budgets: Api<k8s_openapi::api::policy::v1::PodDisruptionBudget> =
            Api::namespaced(watcher.clone(), "default");
        let mut previous: Option<(Vec<String>, i32)> = None;
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let (Some(pods), Ok(budget)) =
                (try_pods_of(&watcher, "chaos-steady").await, budgets.get("chaos-steady").await)
            else {
                continue;
            };
            let live: Vec<String> = pods.iter().filter_map(|p| p.metadata.uid.clone()).collect();
            if let Some((before, allowed)) = &previous {
                let gone = before.iter().filter(|uid| !live.contains(uid)).count();
                if gone > 0 && *allowed == 0 {
                    println!("PDB violation: {gone} steady pod(s) went while the budget allowed none");
                    violations_to.send_modify(|count| *count += gone);
                }
            }
            let allowed = budget.status.and_then(|s| s.disruptions_allowed).unwrap_or(0);
            previous = Some((live, allowed));
        }
    });

    let mut tally = Tally::default();
    for cycle in 0..cycles {
        let burst = 100 + rng.usize(..150) as i32;
        let spot_type = types[rng.usize(..types.len())];
        println!("cycle {cycle}: burst of {burst}, no spot {spot_type}");
        proxy.refuse_capacity(CapacityRule {
            instance_type: Some(spot_type.into()),
            capacity_type: Some("spot".into()),
            code: "InsufficientInstanceCapacity".into(),
        });
        proxy.throttle("CreateFleet", rng.usize(1..4));
        proxy.fail("CreateFleet", rng.usize(..2));
        proxy.lose_responses("CreateFleet", 1);
        apply(&client, support::deployment("chaos-burst", burst, "250m", selector.clone())).await;
        let started = Instant::now();
        // The leader dies at a random point of the burst.
        tokio::time::sleep(Duration::from_millis(rng.u64(..15_000))).await;
        if let Some(leader) = holder(&client).await.and_then(|h| REPLICAS.into_iter().find(|r| *r == h)) {
            println!("cycle {cycle}: SIGKILL {leader} {:.1}s into the burst", started.elapsed().as_secs_f64());
            replicas.kill(leader, Duration::from_millis(rng.u64(500..3_000))).await;
        }
        if cycle == cycles / 2 {
            println!("cycle {cycle}: restarting the apiserver");
            restart_apiserver();
        }
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            replicas.check();
            let up = running(&pods_of(&client, "chaos-burst").await);
            if up >= burst as usize || Instant::now() > deadline {
                tally.pods_not_running += (burst as usize).saturating_sub(up);
                println!("cycle {cycle}: {up} of {burst} running after {:.1}s", started.elapsed().as_secs_f64());
                break;
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        proxy.clear_capacity_rules();
        let down = rng.usize(..40) as i32;
        apply(&client, support::deployment("chaos-burst", down, "250m", selector.clone())).await;
        for _ in 0..10 {
            replicas.check();
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }

    // The end: the burst gone, the empty nodes removed, duplicates and orphans collected (the
    // garbage collector waits two minutes before it calls an instance orphaned).
    apply(&client, support::deployment("chaos-burst", 0, "250m", selector.clone())).await;
    let provider = AwsCloudProvider::new(&aws_config(None).await, AwsOptions::new(support::cluster_info()));
    let settled = wait_until(Duration::from_secs(300), || async {
        let (leaked, duplicated) = cloud_accounting(&client, &provider).await;
        (leaked.is_empty() && duplicated.is_empty()).then_some(())
    })
    .await;
    replicas.check();
    let (leaked, duplicated) = cloud_accounting(&client, &provider).await;
    if settled.is_none() {
        println!("leaked: {leaked:?}; duplicated: {duplicated:?}");
    }
    tally.instances_leaked = leaked.len();
    tally.instances_duplicated = duplicated.len();
    tally.pods_lost = (STEADY as usize).saturating_sub(running(&pods_of(&client, "chaos-steady").await));
    tally.pdb_violations = *violations.borrow();
    budget_watch.abort();
    tally.unexpected_restarts = replicas.unexpected;
    println!(
        "chaos soak, {cycles} cycles (seed {seed}): instances leaked {}, instances duplicated {}, pods lost {}, pods not Running {}, PDB violations {}, restarts stoker caused itself {}",
        tally.instances_leaked,
        tally.instances_duplicated,
        tally.pods_lost,
        tally.pods_not_running,
        tally.pdb_violations,
        tally.unexpected_restarts
    );
    println!("CreateFleet calls through the proxy: {}", proxy.seen("CreateFleet").len());

    // Clean up: everything of the soak goes, under whichever replica leads.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    for name in ["chaos-burst", "chaos-steady"] {
        let _ = deployments.delete(name, &DeleteParams::default()).await;
    }
    let claims: Api<NodeClaim> = Api::all(client.clone());
    let emptied = wait_until(Duration::from_secs(180), || async {
        let left = claims.list(&ListParams::default().labels(&format!("stoker.dev/nodepool={POOL}"))).await.ok()?;
        left.items.is_empty().then_some(())
    })
    .await;
    assert!(
        tally.instances_leaked == 0
            && tally.instances_duplicated == 0
            && tally.pods_lost == 0
            && tally.pods_not_running == 0
            && tally.pdb_violations == 0
            && tally.unexpected_restarts == 0,
        "the soak lost something: {tally:?}"
    );
    assert!(emptied.is_some(), "the soak's nodes are removed at the end");
}
