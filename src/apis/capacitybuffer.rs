//! `CapacityBuffer` (`autoscaling.x-k8s.io`): spare capacity as SIG Autoscaling standardized it,
//! honoured by Cluster Autoscaler and Karpenter. stoker's own types generate a CRD compatible
//! with theirs, serving the versions the API's current release serves (`v1beta1`, stored, and the
//! deprecated `v1alpha1`, which has the same schema), so a cluster that already carries buffers
//! keeps them and a cluster without the CRD gets it from stoker's chart.
//!
//! A buffer names the shape of one chunk (a PodTemplate, or the pod template of a workload with
//! a scale subresource) and how many chunks to keep (`replicas`, a `percentage` of the workload's
//! replicas, or as many as fit in `limits`). stoker keeps that room as virtual pods: they take
//! part in every simulation, never exist as Pods, and no disruption removes the room they hold.

use std::collections::BTreeMap;

use k8s_openapi::{
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    apimachinery::pkg::{api::resource::Quantity, apis::meta::v1::Condition},
};
use kube::{CustomResource, CustomResourceExt, KubeSchema};
use serde::{Deserialize, Serialize};

/// The API group, as SIG Autoscaling defines it.
pub const GROUP: &str = "autoscaling.x-k8s.io";
/// The version stoker reads and writes (the stored one).
pub const VERSION: &str = "v1beta1";
/// The earlier version the current release still serves, deprecated, with the same schema.
pub const DEPRECATED_VERSION: &str = "v1alpha1";
/// The one provisioning strategy defined so far, and the default: keep the room as running
/// capacity. A buffer with another strategy belongs to another controller; stoker leaves it
/// alone.
pub const ACTIVE_CAPACITY: &str = "buffer.x-k8s.io/active-capacity";

/// Condition: the buffer's chunk shape and count are resolved.
pub const READY_FOR_PROVISIONING: &str = "ReadyForProvisioning";
/// Condition: whether the buffer's room is held by existing capacity or being launched.
pub const PROVISIONING: &str = "Provisioning";

/// Spare capacity to keep, in chunks of one pod's shape.
#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "autoscaling.x-k8s.io",
    doc = "CapacityBuffer is the configuration that an autoscaler can use to provision buffer capacity within a cluster.",
    version = "v1beta1",
    kind = "CapacityBuffer",
    plural = "capacitybuffers",
    shortname = "cb",
    category = "autoscaling",
    namespaced,
    status = "CapacityBufferStatus",
    printcolumn = r#"{"name":"Strategy","type":"string","jsonPath":".spec.provisioningStrategy","description":"The strategy used for provisioning buffer capacity."}"#,
    printcolumn = r#"{"name":"Replicas","type":"integer","jsonPath":".spec.replicas","description":"The desired number of buffer chunks, if specified."}"#,
    printcolumn = r#"{"name":"Status","type":"string","jsonPath":".status.conditions[?(@.type=='Ready')].reason","description":"The readiness status of the CapacityBuffer."}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp","description":"The age of the CapacityBuffer."}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("!has(self.podTemplateRef) || has(self.replicas) || has(self.limits)").message("If podTemplateRef is set, replicas or limits must also be set"),
    validation = Rule::new("!(has(self.podTemplateRef) && has(self.scalableRef))").message("You must define either podTemplateRef or scalableRef, but not both"),
)]
pub struct CapacityBufferSpec {
    /// How the buffer is used. `buffer.x-k8s.io/active-capacity` (the default) keeps the room
    /// as running capacity; stoker leaves buffers with any other strategy to other controllers.
    #[serde(default = "default_strategy", skip_serializing_if = "Option::is_none")]
    pub provisioning_strategy: Option<String>,
    /// A PodTemplate in the buffer's namespace whose pod is the shape of one chunk. Exactly one
    /// of `podTemplateRef` and `scalableRef`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_template_ref: Option<LocalObjectRef>,
    /// A workload with a scale subresource in the buffer's namespace (a Deployment, StatefulSet
    /// or ReplicaSet) whose pod template is the shape of one chunk, and whose replicas
    /// `percentage` is taken of. Exactly one of `podTemplateRef` and `scalableRef`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scalable_ref: Option<ScalableRef>,
    /// Chunks to keep. With `percentage` too, the larger of the two; without either, as many
    /// as fit in `limits`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub replicas: Option<i32>,
    /// Chunks to keep as a percentage of the `scalableRef` workload's replicas, rounded up, at
    /// least one while both are above zero.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub percentage: Option<i32>,
    /// The most the buffer's chunks may request together (for example `cpu: 16`): caps the
    /// count, or sets it when neither `replicas` nor `percentage` is given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<BTreeMap<String, Quantity>>,
}

fn default_strategy() -> Option<String> {
    Some(ACTIVE_CAPACITY.to_owned())
}

/// A reference to an object in the same namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
pub struct LocalObjectRef {
    /// Name of the object.
    #[schemars(length(min = 1))]
    pub name: String,
}

/// A reference to an object with a scale subresource, in the same namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScalableRef {
    /// API group of the object; empty for the core group. `apps` when left out.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub api_group: String,
    /// Kind of the object, for example `Deployment`.
    #[schemars(length(min = 1))]
    pub kind: String,
    /// Name of the object.
    #[schemars(length(min = 1))]
    pub name: String,
}

/// What the buffer keeps now, and why.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct CapacityBufferStatus {
    /// The PodTemplate the chunks were shaped by, when the buffer names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_template_ref: Option<LocalObjectRef>,
    /// Chunks kept now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// The generation of the PodTemplate the chunks were shaped by.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_template_generation: Option<i64>,
    /// `ReadyForProvisioning` (the shape and count are resolved, or why not) and
    /// `Provisioning` (whether existing capacity holds the room or more is being launched).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The strategy the status was written under.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioning_strategy: Option<String>,
}

/// The CRD: the stored `v1beta1` and, with the same schema, the deprecated `v1alpha1` the
/// current release still serves. Equal schemas need no conversion: the apiserver only changes
/// `apiVersion`.
pub fn crd() -> CustomResourceDefinition {
    let mut crd = CapacityBuffer::crd();
    if let Some(stored) = crd.spec.versions.first().cloned() {
        let mut deprecated = stored;
        deprecated.name = DEPRECATED_VERSION.to_owned();
        deprecated.storage = false;
        deprecated.deprecated = Some(true);
        crd.spec.versions.insert(0, deprecated);
    }
    crd
}

/// `percentage` of a workload's `replicas` as the API counts it: rounded up, and at least one
/// while both are above zero. Never overflows: the product of two `i32`s fits an `i64`.
pub fn percent_of_replicas(replicas: i32, percentage: i32) -> i64 {
    if replicas <= 0 || percentage <= 0 {
        return 0;
    }
    ((i64::from(replicas) * i64::from(percentage) + 99) / 100).max(1)
}

impl CapacityBuffer {
    /// The strategy in effect (the default when left out).
    pub fn strategy(&self) -> &str {
        self.spec.provisioning_strategy.as_deref().unwrap_or(ACTIVE_CAPACITY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serves_both_versions_and_stores_v1beta1() {
        let crd = crd();
        let versions: Vec<(&str, bool, Option<bool>)> =
            crd.spec.versions.iter().map(|v| (v.name.as_str(), v.storage, v.deprecated)).collect();
        assert_eq!(versions, [(DEPRECATED_VERSION, false, Some(true)), (VERSION, true, None)]);
        assert_eq!(crd.spec.versions[0].schema, crd.spec.versions[1].schema);
        assert_eq!(crd.spec.group, GROUP);
    }

    #[test]
    fn the_strategy_defaults_to_active_capacity() {
        let buffer: CapacityBuffer = serde_json::from_value(serde_json::json!({
            "apiVersion": "autoscaling.x-k8s.io/v1beta1", "kind": "CapacityBuffer",
            "metadata": {"name": "b", "namespace": "n"},
            "spec": {"podTemplateRef": {"name": "t"}, "replicas": 2}
        }))
        .unwrap();
        assert_eq!(buffer.strategy(), ACTIVE_CAPACITY);
    }
}
