//! The stoker API (`stoker.dev/v1alpha1`): the custom resources users edit (`NodePool`,
//! `EC2NodeClass`, `NodeOverlay`, `WarmPool`) and the one stoker writes (`NodeClaim`), with the schema and CEL
//! rules the apiserver enforces; and SIG Autoscaling's `CapacityBuffer`, which stoker honours.
//! Rustdoc on each field becomes its description in the CRD.

pub mod capacitybuffer;
pub mod condition;
pub mod duration;
pub mod ec2nodeclass;
pub mod labels;
pub mod nodeclaim;
pub mod nodeoverlay;
pub mod nodepool;
pub mod requirements;
pub mod time;
pub mod validation;
pub mod warmpool;
pub mod window;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

pub use capacitybuffer::CapacityBuffer;
pub use duration::{Duration, NillableDuration};
pub use ec2nodeclass::EC2NodeClass;
pub use nodeclaim::NodeClaim;
pub use nodeoverlay::NodeOverlay;
pub use nodepool::NodePool;
pub use requirements::{NodeSelectorRequirementWithMinValues, Operator};
pub use warmpool::WarmPool;

/// Every CRD stoker defines, in a stable order. Each asks Helm to keep it on uninstall:
/// deleting a CRD deletes every object of its kind, and a NodeClaim's finalizer needs the
/// controller that the uninstall just removed.
pub fn crds() -> Vec<CustomResourceDefinition> {
    let mut crds = vec![
        capacitybuffer::crd(),
        EC2NodeClass::crd(),
        NodeClaim::crd(),
        NodeOverlay::crd(),
        NodePool::crd(),
        WarmPool::crd(),
    ];
    for crd in &mut crds {
        crd.metadata.annotations.get_or_insert_default().insert("helm.sh/resource-policy".into(), "keep".into());
    }
    crds
}
