//! Garbage collection between Kubernetes and the cloud.
//!
//! - An instance tagged for this cluster whose NodeClaim does not exist, older than a grace
//!   period (a launch whose NodeClaim create was lost, a claim deleted behind stoker's back), is
//!   terminated.
//! - A launched NodeClaim whose instance is gone (terminated by hand, reclaimed spot) is deleted,
//!   so its pods are planned again.

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use std::collections::HashSet;

use kube::{
    Api, ResourceExt,
    api::{ApiResource, DeleteParams, DynamicObject, ListParams},
};
use tracing::{info, warn};

use crate::apis::{condition, time::utc};
use crate::controllers::Provider;
use crate::{
    apis::NodeClaim,
    cloudprovider::{CloudError, Instance},
    controllers::{Shared, isolation::isolate},
};

/// How old an unclaimed instance or an instance-less claim must be before it is collected.
pub const GRACE: chrono::TimeDelta = chrono::TimeDelta::minutes(2);

/// Instances no NodeClaim's provider ID names, launched more than `GRACE` ago. A tag naming a
/// claim is not enough: a second instance launched for one claim is an orphan too.
pub fn orphaned_instances<'a>(
    instances: &'a [Instance],
    claimed: &HashSet<String>,
    now: DateTime<Utc>,
) -> Vec<&'a Instance> {
    instances
        .iter()
        .filter(|instance| {
            !claimed.contains(&instance.provider_id) && instance.launch_time.is_some_and(|at| now - at > GRACE)
        })
        .collect()
}

/// The provider IDs the cached NodeClaims name.
fn cached_provider_ids(claims: &[Arc<NodeClaim>]) -> HashSet<String> {
    claims.iter().filter_map(|claim| claim.status.as_ref()?.provider_id.clone()).collect()
}

/// The provider IDs every NodeClaim names, read from the apiserver itself, and read raw so that
/// a claim this version cannot decode still protects its instance.
async fn listed_provider_ids(client: &kube::Client) -> Result<HashSet<String>, kube::Error> {
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &ApiResource::erase::<NodeClaim>(&()));
    let claims = api.list(&ListParams::default()).await?;
    Ok(claims.items.iter().filter_map(|claim| claim.data["status"]["providerID"].as_str().map(str::to_owned)).collect())
}

/// Launched NodeClaims whose instance is not among the live ones, launched more than `GRACE` ago.
pub fn claims_without_instances(instances: &[Instance], claims: &[Arc<NodeClaim>], now: DateTime<Utc>) -> Vec<String> {
    claims
        .iter()
        .filter(|claim| claim.metadata.deletion_timestamp.is_none())
        .filter(|claim| {
            let Some(id) = claim.status.as_ref().and_then(|s| s.provider_id.as_deref()) else { return false };
            let launched = claim
                .status
                .iter()
                .flat_map(|s| &s.conditions)
                .find(|c| c.type_ == condition::LAUNCHED && c.status == condition::TRUE);
            let old = launched.and_then(|c| utc(&c.last_transition_time)).is_some_and(|at| now - at > GRACE);
            old && !instances.iter().any(|i| i.provider_id == id)
        })
        .map(|claim| claim.name_any())
        .collect()
}

/// Collects every minute.
pub async fn run<P: Provider>(ctx: Arc<Shared<P>>) {
    let mut ticks = tokio::time::interval(Duration::from_secs(60));
    loop {
        ticks.tick().await;
        if let Err(error) = isolate("garbage", &ctx.metrics, async {
            collect(&ctx).await;
            Ok(())
        })
        .await
        {
            warn!(%error, "garbage collection failed");
            ctx.metrics.reconcile_failed("garbage", &error);
        }
    }
}

async fn collect<P: Provider>(ctx: &Shared<P>) {
    // What the provider made and nothing uses any more (idle launch templates): a write, so here
    // in the leader and not in every replica's catalog refresh.
    if let Err(error) = ctx.provider.prune().await {
        warn!(%error, "cannot prune idle cloud resources");
    }
    let instances = match ctx.provider.list().await {
        Ok(instances) => instances,
        Err(error) => return warn!(%error, "cannot list instances for garbage collection"),
    };
    let claims = ctx.state.claims.state();
    let now = Utc::now();
    let suspects = orphaned_instances(&instances, &cached_provider_ids(&claims), now);
    if !suspects.is_empty() {
        // The cache may be behind (or frozen, on a replica cut off from its watch): the
        // apiserver itself decides, and nothing is terminated when it cannot be asked.
        match listed_provider_ids(&ctx.client).await {
            Ok(claimed) => {
                for instance in suspects.into_iter().filter(|i| !claimed.contains(&i.provider_id)) {
                    info!(instance = %instance.id, nodeclaim = ?instance.nodeclaim(), "terminating an instance no NodeClaim names");
                    match ctx.provider.delete(&instance.provider_id).await {
                        // Terminated in between, by the deletion of the claim that had it: the
                        // list was taken before the claim went.
                        Ok(()) | Err(CloudError::NotFound(_)) => {}
                        Err(error) => warn!(%error, instance = %instance.id, "cannot terminate orphaned instance"),
                    }
                }
            }
            Err(error) => warn!(%error, "cannot list NodeClaims; terminating no instance this time"),
        }
    }
    let api: Api<NodeClaim> = Api::all(ctx.client.clone());
    for name in claims_without_instances(&instances, &claims, now) {
        info!(nodeclaim = %name, "deleting a NodeClaim whose instance is gone");
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => {
                if let Some(claim) = claims.iter().find(|c| c.name_any() == name) {
                    ctx.metrics.disrupted(claim, "InstanceGone");
                }
            }
            Err(error) => warn!(%error, nodeclaim = %name, "cannot delete NodeClaim"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::apis::labels;

    fn claim(name: &str, provider_id: Option<&str>, launched_minutes_ago: i64) -> Arc<NodeClaim> {
        let at = (Utc::now() - chrono::TimeDelta::minutes(launched_minutes_ago)).to_rfc3339();
        let status = match provider_id {
            Some(id) => format!(
                "status:\n  providerID: '{id}'\n  capacity: {{cpu: '2', memory: 8Gi}}\n  conditions: [{{type: Launched, status: 'True', reason: Launched, message: '', lastTransitionTime: '{at}'}}]"
            ),
            None => String::new(),
        };
        Arc::new(
            serde_saphyr::from_str(&format!(
                "apiVersion: stoker.dev/v1alpha1\nkind: NodeClaim\nmetadata: {{name: {name}, labels: {{stoker.dev/nodepool: general}}}}\nspec:\n  nodeClassRef: {{group: stoker.dev, kind: EC2NodeClass, name: default}}\n  resources: {{requests: {{cpu: '1'}}}}\n{status}"
            ))
            .expect("a NodeClaim"),
        )
    }

    fn instance(id: &str, claim: &str, minutes_ago: i64) -> Instance {
        Instance {
            provider_id: format!("aws:///a/{id}"),
            zone: "a".into(),
            launch_time: Some(Utc::now() - chrono::TimeDelta::minutes(minutes_ago)),
            tags: BTreeMap::from([(labels::EC2_NODECLAIM_TAG.to_owned(), claim.to_owned())]),
            ..Instance::example(id)
        }
    }

    #[test]
    fn instances_no_provider_id_names_are_orphans_once_old() {
        let claims = [claim("general-a", Some("aws:///a/i-a"), 10), claim("general-b", None, 0)];
        let instances = [
            instance("i-a", "general-a", 10),
            // A second instance for general-a: its tag names a claim, no provider ID names it.
            instance("i-dup", "general-a", 10),
            // Launched for general-b ten minutes ago, and general-b never recorded it.
            instance("i-b", "general-b", 10),
            instance("i-lost", "general-gone", 10),
            instance("i-new", "general-racing", 0),
        ];
        let claimed = cached_provider_ids(&claims);
        let orphans: Vec<&str> =
            orphaned_instances(&instances, &claimed, Utc::now()).iter().map(|i| i.id.as_str()).collect();
        assert_eq!(orphans, ["i-dup", "i-b", "i-lost"]);
    }

    #[test]
    fn claims_whose_instance_is_gone_are_collected_after_the_grace() {
        let claims = [
            claim("general-a", Some("aws:///a/i-a"), 10),
            claim("general-b", Some("aws:///a/i-b"), 10),
            claim("general-c", Some("aws:///a/i-c"), 0),
        ];
        let instances = [instance("i-a", "general-a", 10)];
        assert_eq!(claims_without_instances(&instances, &claims, Utc::now()), ["general-b"]);
    }
}
