//! Node selector requirements as NodePools and NodeClaims carry them: a Kubernetes
//! `NodeSelectorRequirement` plus Karpenter's `minValues`, with the schema rules that make a
//! malformed requirement fail at the apiserver.

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// How a requirement's values constrain a label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema)]
pub enum Operator {
    /// The label's value is one of `values`.
    In,
    /// The label's value is none of `values`, or the label is absent.
    NotIn,
    /// The label is present, with any value.
    Exists,
    /// The label is absent.
    DoesNotExist,
    /// The label's value, an integer, is greater than the single value given.
    Gt,
    /// The label's value, an integer, is less than the single value given.
    Lt,
    /// The label's value, an integer, is at least the single value given.
    Gte,
    /// The label's value, an integer, is at most the single value given.
    Lte,
}

/// A requirement on a node label, with an optional minimum number of distinct values that must
/// remain possible (used for instance-type flexibility, as in Karpenter).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.operator in ['In', 'NotIn'] ? (has(self.values) && size(self.values) > 0) : true")
        .message("requirements with operator 'In' or 'NotIn' must have values").field_path(".values"),
    validation = Rule::new("self.operator in ['Exists', 'DoesNotExist'] ? (!has(self.values) || size(self.values) == 0) : true")
        .message("requirements with operator 'Exists' or 'DoesNotExist' must not have values").field_path(".values"),
    validation = Rule::new("self.operator in ['Gt', 'Lt', 'Gte', 'Lte'] ? (has(self.values) && size(self.values) == 1 && size(self.values[0]) <= 18 && self.values[0].matches('^[0-9]+$')) : true")
        .message("requirements with operator 'Gt', 'Lt', 'Gte' or 'Lte' must have a single non-negative integer value").field_path(".values"),
    validation = Rule::new("has(self.minValues) ? (self.operator == 'In' ? (has(self.values) && size(self.values) >= self.minValues) : self.operator in ['Exists', 'NotIn']) : true")
        .message("minValues needs operator 'In' with at least that many values, or 'Exists' or 'NotIn'").field_path(".minValues"),
    validation = Rule::new("!self.key.startsWith('stoker.dev/')")
        .message("label domain stoker.dev is restricted").field_path(".key"),
    validation = Rule::new("self.key != 'kubernetes.io/hostname'")
        .message("requirements on kubernetes.io/hostname are not allowed: every new node gets its own").field_path(".key"),
)]
pub struct NodeSelectorRequirementWithMinValues {
    /// The label key the requirement applies to, for example `karpenter.sh/capacity-type`.
    #[schemars(
        length(min = 1, max = 316),
        regex(
            pattern = r"^([a-zA-Z0-9]([-a-zA-Z0-9_.]*[a-zA-Z0-9])?(\.[a-zA-Z0-9]([-a-zA-Z0-9_.]*[a-zA-Z0-9])?)*/)?[a-zA-Z0-9]([-a-zA-Z0-9_.]{0,61}[a-zA-Z0-9])?$"
        )
    )]
    pub key: String,
    /// How `values` constrain the label: In, NotIn, Exists, DoesNotExist, Gt, Lt, Gte or Lte.
    pub operator: Operator,
    /// The values the operator applies to: a non-empty list for In and NotIn, exactly one integer
    /// for Gt, Lt, Gte and Lte, nothing for Exists and DoesNotExist.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1000), inner(length(max = 63)))]
    pub values: Vec<String>,
    /// The minimum number of distinct values of this key that the instance types considered for a
    /// node must span (for example at least 5 instance families, to keep spot launches flexible).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 50))]
    pub min_values: Option<i32>,
}

impl NodeSelectorRequirementWithMinValues {
    pub fn new(
        key: impl Into<String>,
        operator: Operator,
        values: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        Self { key: key.into(), operator, values: values.into_iter().map(Into::into).collect(), min_values: None }
    }
}
