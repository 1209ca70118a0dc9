//! `NodeOverlay`: the user's own figures for instance types, laid over the catalog's. A price (or
//! a change to the provider's price) for the offerings an overlay selects, and extended resources
//! for the types it selects. Field names and meanings follow Karpenter's `karpenter.sh/v1alpha1`
//! NodeOverlay; how overlays combine is in [`crate::scheduling::overlays`].

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::{api::resource::Quantity, apis::meta::v1::Condition};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::requirements::NodeSelectorRequirementWithMinValues;

/// A NodeOverlay changes what stoker believes of the instance types it selects: their price
/// (Savings Plans, reserved instances, discounts, licence fees) or extended resources.
#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "stoker.dev",
    doc = "A NodeOverlay sets the price of the instance type offerings it selects, or adds extended resources to them, in every decision stoker makes.",
    version = "v1alpha1",
    kind = "NodeOverlay",
    plural = "nodeoverlays",
    shortname = "snov",
    category = "stoker",
    status = "NodeOverlayStatus",
    printcolumn = r#"{"name":"Weight","type":"integer","jsonPath":".spec.weight"}"#,
    printcolumn = r#"{"name":"Price","type":"string","jsonPath":".spec.price"}"#,
    printcolumn = r#"{"name":"Adjustment","type":"string","jsonPath":".spec.priceAdjustment"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("!(has(self.price) && has(self.priceAdjustment))").message("'price' and 'priceAdjustment' are mutually exclusive").field_path(".priceAdjustment"),
    validation = Rule::new("has(self.price) || has(self.priceAdjustment) || has(self.capacity)").message("an overlay sets 'price', 'priceAdjustment' or 'capacity'"),
)]
pub struct NodeOverlaySpec {
    /// Which instance types and offerings the overlay applies to, on their labels: instance type,
    /// family, size, CPU, ..., and per offering `topology.kubernetes.io/zone`,
    /// `topology.k8s.aws/zone-id` and `karpenter.sh/capacity-type`. Empty selects every one.
    #[serde(default)]
    #[schemars(length(max = 100))]
    #[x_kube(validation = Rule::new("self.all(r, !has(r.minValues))").message("minValues has no meaning on an overlay"))]
    pub requirements: Vec<NodeSelectorRequirementWithMinValues>,
    /// The price, in dollars per hour, of every selected offering, in place of the provider's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]+(\.[0-9]+)?$"), length(max = 20))]
    pub price: Option<String>,
    /// A change to the provider's price of every selected offering: a signed amount in dollars
    /// per hour (`-0.25`, `+1.5`) or a signed percentage (`-30%`). A price never goes below zero.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[+-][0-9]+(\.[0-9]+)?%?$"), length(max = 20))]
    pub price_adjustment: Option<String>,
    /// Extended resources every selected instance type offers (for example `hugepages-2Mi`,
    /// `example.com/device`), added to what it has; CPU, memory, pods and ephemeral storage come
    /// from the instance type alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.all(k, !(k in ['cpu', 'memory', 'pods', 'ephemeral-storage']))").message("capacity may only add extended resources, not cpu, memory, pods or ephemeral-storage"))]
    #[schemars(extend("maxProperties" = 100))]
    pub capacity: Option<BTreeMap<String, Quantity>>,
    /// Precedence among overlays that select the same offering: the highest weight sets its
    /// price and each resource, then the first by name. Unset counts as 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000))]
    pub weight: Option<i32>,
}

/// What stoker observed of a NodeOverlay.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeOverlayStatus {
    /// Conditions: Ready (the overlay is in effect) or why it is not.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
