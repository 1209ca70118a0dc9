//! The instance-type and pod files of the identical-input comparison with Karpenter
//! (`benches/support/interchange.rs`): stoker's catalog survives the round trip unchanged, and a
//! type and pod in the form Karpenter's side writes them read as Karpenter means them.

#[path = "../benches/support/interchange.rs"]
mod interchange;
#[path = "../benches/support/karpenter_shape.rs"]
mod karpenter_shape;
#[path = "../benches/support/real_catalog.rs"]
mod real_catalog;

use stoker::scheduling::{resources::Resources, solver::solve};

#[test]
fn the_real_catalog_reads_back_as_it_was_written() {
    let catalog = real_catalog::instance_types();
    let json = serde_json::to_vec(&interchange::export(&catalog)).unwrap();
    let read = interchange::import(serde_json::from_slice(&json).unwrap()).unwrap();
    assert_eq!(read.len(), catalog.len());
    for (read, written) in read.iter().zip(&catalog) {
        assert_eq!(read.name, written.name);
        assert_eq!(read.requirements, written.requirements, "{}", written.name);
        assert_eq!(read.labels, written.labels, "{}", written.name);
        assert_eq!(read.capacity, written.capacity, "{}", written.name);
        assert_eq!(read.allocatable, written.allocatable, "{}", written.name);
        assert_eq!(read.offerings, written.offerings, "{}", written.name);
    }
}

/// Karpenter's first fake type as its side exports it: overhead 100m / 10Mi taken off capacity,
/// three operating systems, memory priced per 10^9 bytes.
const KARPENTER_TYPE: &str = r#"[{"name":"fake-it-0",
  "requirements":[
    {"key":"node.kubernetes.io/instance-type","operator":"In","values":["fake-it-0"]},
    {"key":"kubernetes.io/os","operator":"In","values":["darwin","linux","windows"]},
    {"key":"topology.kubernetes.io/zone","operator":"In","values":["test-zone-1","test-zone-2","test-zone-3"]},
    {"key":"karpenter.sh/capacity-type","operator":"In","values":["on-demand","spot"]},
    {"key":"size","operator":"In","values":["small"]}],
  "capacity":{"cpu":"1","memory":"2Gi","pods":"10"},
  "allocatable":{"cpu":"900m","memory":"2038Mi","pods":"10"},
  "offerings":[
    {"zone":"test-zone-1","capacityType":"spot","price":0.31474836480000005,"available":true},
    {"zone":"test-zone-3","capacityType":"on-demand","price":0.31474836480000005,"available":true},
    {"zone":"test-zone-2","capacityType":"spot","price":0.2,"available":false}]}]"#;

const KARPENTER_POD: &str = r#"[{"metadata":{"name":"qdpvfmkzxp","namespace":"default","uid":"0d1b","labels":{"my-label":"c"}},
  "spec":{"containers":[{"name":"qdpvfmkzxp","image":"public.ecr.aws/eks-distro/kubernetes/pause:3.2",
    "resources":{"requests":{"cpu":"500m","memory":"1Gi"}}}]},
  "status":{"phase":"Pending","conditions":[{"type":"PodScheduled","status":"False","reason":"Unschedulable"}]}}]"#;

#[test]
fn a_karpenter_type_and_pod_read_as_karpenter_means_them() {
    let types = interchange::import(serde_json::from_str(KARPENTER_TYPE).unwrap()).unwrap();
    let fake = &types[0];
    let mut allocatable = Resources::new();
    allocatable.set("cpu", 900);
    allocatable.set("memory", 2038 << 20);
    allocatable.set("pods", 10);
    assert_eq!(fake.allocatable, allocatable);
    // One value: a node label; several: a requirement only.
    assert_eq!(fake.labels.get("size").map(String::as_str), Some("small"));
    assert!(!fake.labels.contains_key("kubernetes.io/os"));
    assert!(fake.requirements.get("kubernetes.io/os").unwrap().admits(Some("windows")));
    assert!(!fake.offerings[2].available);

    let dir = std::env::temp_dir().join(format!("stoker-interchange-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("pods.json"), KARPENTER_POD).unwrap();
    let pods = interchange::read_pods(&dir.join("pods.json"));
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(pods[0].key, "default/qdpvfmkzxp");

    let plan = solve(&karpenter_shape::input(pods, types));
    assert!(plan.unschedulable.is_empty(), "{:?}", plan.unschedulable);
    assert_eq!(plan.new_claims.len(), 1);
    assert_eq!(plan.new_claims[0].price, 0.31474836480000005, "the cheapest available offering");
}
