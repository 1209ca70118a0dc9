//! What an EC2 instance type offers pods, computed as EKS's AMIs do (and Karpenter reproduces):
//! max pods from the ENI limits, kube-reserved CPU stepped by core, kube-reserved memory from max
//! pods, the kubelet's default hard eviction threshold, and a share of memory the hypervisor
//! keeps. From DescribeInstanceTypes' facts to the simulation's `InstanceType`.

use std::collections::BTreeMap;

use crate::{
    apis::{ec2nodeclass::KubeletConfiguration, labels},
    scheduling::{
        catalog::{InstanceType, Offering},
        quantity::QuantityError,
        resources::{CPU, EPHEMERAL_STORAGE, MEMORY, PODS, Resources},
    },
};

const MIB: i64 = 1 << 20;
const GIB: i64 = 1 << 30;

/// Share of reported memory that is not visible to the OS on EC2 (Karpenter's default).
pub const VM_MEMORY_OVERHEAD_PERCENT: f64 = 0.075;
/// Root volume size assumed when the node class does not say.
pub const DEFAULT_EPHEMERAL_STORAGE: i64 = 20 * GIB;
/// EBS attachments assumed when DescribeInstanceTypes does not report them: what it reports for
/// most Nitro types, whose 28 attachments the primary network interface shares.
const DEFAULT_EBS_ATTACHMENTS: i64 = 27;

/// Facts about an instance type, as DescribeInstanceTypes reports them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InstanceFacts {
    pub name: String,
    pub vcpus: i64,
    pub memory_mib: i64,
    /// `amd64` or `arm64`.
    pub arch: String,
    pub gpus: i64,
    pub max_network_interfaces: i64,
    pub ipv4_per_interface: i64,
    /// Who makes the CPU, as EC2 says (`Intel`, `AMD`, `AWS`); empty when not reported.
    pub cpu_manufacturer: String,
    /// Sustained all-core clock speed, MHz; 0 when not reported.
    pub cpu_clock_mhz: i64,
    /// `nitro` or `xen`; empty on bare metal.
    pub hypervisor: String,
    pub encryption_in_transit: bool,
    /// Local NVMe instance storage, GiB; 0 when none.
    pub local_nvme_gib: i64,
    /// Maximum EBS bandwidth, Mbps.
    pub ebs_bandwidth_mbps: i64,
    /// Baseline bandwidth of the primary network card, Mbps.
    pub network_bandwidth_mbps: i64,
    /// The GPUs' model and maker (when `gpus` > 0), and each GPU's memory in MiB.
    pub gpu_name: String,
    pub gpu_manufacturer: String,
    pub gpu_memory_mib: i64,
    /// Neuron devices (Inferentia, Trainium): the model, and how many.
    pub accelerator_name: String,
    pub accelerators: i64,
    /// Elastic Fabric Adapter interfaces it supports.
    pub efa_interfaces: i64,
    /// EBS volumes it can attach, the root volume included; 0 when not reported.
    pub max_ebs_attachments: i64,
}

/// What a node class sets that shapes every instance type's capacity.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct NodeSettings {
    pub kubelet: Option<KubeletConfiguration>,
    /// The root volume's size in bytes; [`DEFAULT_EPHEMERAL_STORAGE`] when unknown.
    pub root_volume: Option<i64>,
    /// `instanceStorePolicy: RAID0`: a type with local NVMe has that as ephemeral storage.
    pub instance_store_raid0: bool,
}

impl NodeSettings {
    /// The ephemeral storage a node of this type offers: its RAID0 array of local NVMe when the
    /// class asks for one and the type has disks, else the root volume.
    pub fn ephemeral_storage(&self, facts: &InstanceFacts) -> i64 {
        if self.instance_store_raid0 && facts.local_nvme_gib > 0 {
            return facts.local_nvme_gib.saturating_mul(GIB);
        }
        self.root_volume.unwrap_or(DEFAULT_EPHEMERAL_STORAGE)
    }
}

/// An instance type from its facts, offerings and the node class's settings.
pub fn instance_type(
    facts: &InstanceFacts,
    offerings: Vec<Offering>,
    node: &NodeSettings,
) -> Result<InstanceType, QuantityError> {
    let kubelet = node.kubelet.as_ref();
    let labels = instance_labels(facts);
    let max_pods = max_pods(facts, kubelet);
    let ephemeral_storage = node.ephemeral_storage(facts);
    let mut capacity = Resources::new();
    capacity.set(CPU, facts.vcpus * 1000);
    let hidden_mib = (facts.memory_mib as f64 * VM_MEMORY_OVERHEAD_PERCENT).ceil() as i64;
    capacity.set(MEMORY, (facts.memory_mib - hidden_mib) * MIB);
    capacity.set(PODS, max_pods);
    capacity.set(EPHEMERAL_STORAGE, ephemeral_storage);
    capacity.set(labels::EBS_VOLUMES, ebs_volume_limit(facts));
    for (resource, count) in device_resources(facts) {
        capacity.set(resource, count);
    }
    // Explicit kube-reserved amounts replace the defaults for the resources they name;
    // system-reserved comes on top.
    let mut reserved = kube_reserved(facts.vcpus, max_pods);
    if let Some(explicit) = kubelet.and_then(|k| k.kube_reserved.as_ref()) {
        for (name, amount) in Resources::from_quantities(explicit)?.iter() {
            reserved.set(name, amount);
        }
    }
    if let Some(system) = kubelet.and_then(|k| k.system_reserved.as_ref()) {
        reserved.add(&Resources::from_quantities(system)?);
    }
    let mut allocatable = capacity.clone();
    allocatable.subtract(&reserved);
    allocatable.subtract(&eviction_threshold(ephemeral_storage));
    let mut instance = InstanceType::new(facts.name.clone(), labels, capacity, allocatable, offerings);
    instance.exotic = is_exotic(facts);
    Ok(instance)
}

/// Types Karpenter also keeps out of launches unless the pods need them: bare metal, the
/// high-memory `u-*`/`u7*` families, GPU, Inferentia, Trainium, FPGA and media accelerators, and
/// Mac hosts. They cost the same or more per unit than ordinary types, and a plan that needs
/// nothing of theirs should not land on them because they happen to be the largest.
pub fn is_exotic(facts: &InstanceFacts) -> bool {
    let (family, size) = facts.name.split_once('.').unwrap_or((&facts.name, ""));
    // A class letter followed by its generation: p5, g6e, inf2, trn1, dl1, f2, vt1, mac2.
    let class: String = family.chars().take_while(|c| c.is_ascii_alphabetic()).collect();
    let accelerated = ["inf", "trn", "dl", "f", "vt", "mac", "p", "g"].contains(&class.as_str());
    size.contains("metal") || family.starts_with("u-") || family.starts_with("u7") || facts.gpus > 0 || accelerated
}

/// The EBS volumes pods can attach: the type's attachments less the root volume. On types whose
/// limit is shared, network interfaces the CNI attaches later take attachments too, which the EBS
/// CSI driver counts when it starts; the figure here is the one at launch.
fn ebs_volume_limit(facts: &InstanceFacts) -> i64 {
    let attachments = if facts.max_ebs_attachments > 0 { facts.max_ebs_attachments } else { DEFAULT_EBS_ATTACHMENTS };
    attachments.saturating_sub(1).max(0)
}

/// The extended resources its devices offer, as their device plugins advertise them: GPUs by
/// maker (NVIDIA's unless AMD's), Neuron devices, EFA interfaces.
fn device_resources(facts: &InstanceFacts) -> Vec<(&'static str, i64)> {
    let gpu = if facts.gpu_manufacturer.eq_ignore_ascii_case("amd") { labels::AMD_GPU } else { labels::NVIDIA_GPU };
    [(gpu, facts.gpus), (labels::NEURON, facts.accelerators), (labels::EFA, facts.efa_interfaces)]
        .into_iter()
        .filter(|(_, count)| *count > 0)
        .collect()
}

/// A label value from a name EC2 reports: lowercase, spaces as dashes (`RTX PRO 4500` →
/// `rtx-pro-4500`), as Karpenter writes them.
fn label_value(name: &str) -> String {
    name.trim().to_lowercase().replace(' ', "-")
}

/// The well-known labels of an instance type, derived from its name and facts.
pub fn instance_labels(facts: &InstanceFacts) -> BTreeMap<String, String> {
    let (family, size) = facts.name.split_once('.').unwrap_or((&facts.name, ""));
    let category: String = family.chars().take_while(|c| c.is_ascii_alphabetic()).collect();
    let generation: String = family[category.len()..].chars().take_while(|c| c.is_ascii_digit()).collect();
    let mut out = BTreeMap::new();
    let mut put = |key: &str, value: String| {
        if !value.is_empty() {
            out.insert(key.to_owned(), value);
        }
    };
    put(labels::INSTANCE_TYPE, facts.name.clone());
    put(labels::ARCH, facts.arch.clone());
    put(labels::OS, "linux".into());
    put(labels::INSTANCE_FAMILY, family.to_owned());
    put(labels::INSTANCE_CATEGORY, category);
    put(labels::INSTANCE_GENERATION, generation);
    put(labels::INSTANCE_SIZE, size.to_owned());
    put(labels::INSTANCE_CPU, facts.vcpus.to_string());
    put(labels::INSTANCE_MEMORY, facts.memory_mib.to_string());
    let positive = |n: i64| if n > 0 { n.to_string() } else { String::new() };
    put(labels::INSTANCE_CPU_MANUFACTURER, label_value(&facts.cpu_manufacturer));
    put(labels::INSTANCE_CPU_CLOCK, positive(facts.cpu_clock_mhz));
    put(labels::INSTANCE_HYPERVISOR, facts.hypervisor.clone());
    put(labels::INSTANCE_ENCRYPTION_IN_TRANSIT, facts.encryption_in_transit.to_string());
    put(labels::INSTANCE_LOCAL_NVME, positive(facts.local_nvme_gib));
    put(labels::INSTANCE_EBS_BANDWIDTH, positive(facts.ebs_bandwidth_mbps));
    put(labels::INSTANCE_NETWORK_BANDWIDTH, positive(facts.network_bandwidth_mbps));
    // Only types with the devices carry their labels, as in Karpenter: `DoesNotExist` tells the
    // others apart (the standard AMI serves them).
    if facts.gpus > 0 {
        put(labels::INSTANCE_GPU_COUNT, facts.gpus.to_string());
        put(labels::INSTANCE_GPU_NAME, label_value(&facts.gpu_name));
        put(labels::INSTANCE_GPU_MANUFACTURER, label_value(&facts.gpu_manufacturer));
        put(labels::INSTANCE_GPU_MEMORY, positive(facts.gpu_memory_mib));
    }
    if facts.accelerators > 0 {
        put(labels::INSTANCE_ACCELERATOR_NAME, label_value(&facts.accelerator_name));
        put(labels::INSTANCE_ACCELERATOR_MANUFACTURER, "aws".into());
        put(labels::INSTANCE_ACCELERATOR_COUNT, facts.accelerators.to_string());
    }
    out
}

/// Pods per node: EKS's ENI formula (each interface's addresses minus its own, plus two
/// host-network pods), capped by the kubelet's `maxPods` and `podsPerCore`.
pub fn max_pods(facts: &InstanceFacts, kubelet: Option<&KubeletConfiguration>) -> i64 {
    let eni_limited = facts.max_network_interfaces * (facts.ipv4_per_interface - 1) + 2;
    let mut pods = kubelet.and_then(|k| k.max_pods).map_or(eni_limited, i64::from);
    if let Some(per_core) = kubelet.and_then(|k| k.pods_per_core).filter(|p| *p > 0) {
        pods = pods.min(i64::from(per_core) * facts.vcpus);
    }
    pods.max(0)
}

/// EKS's default kube-reserved: 6% of the first core, 1% of the second, 0.5% of the next two,
/// 0.25% of the rest; memory 11 MiB per pod plus 255 MiB.
pub fn kube_reserved(vcpus: i64, max_pods: i64) -> Resources {
    let mut millis = 0;
    for core in 0..vcpus {
        millis += match core {
            0 => 60,
            1 => 10,
            2 | 3 => 5,
            _ => 0,
        };
    }
    // 0.25% of each core past the fourth, summed in hundredths of a millicore to stay exact.
    let quarter_percent_cores = (vcpus - 4).max(0);
    millis += (quarter_percent_cores * 250 + 99) / 100;
    let mut reserved = Resources::new();
    reserved.set(CPU, millis);
    reserved.set(MEMORY, (11 * max_pods + 255) * MIB);
    reserved.set(EPHEMERAL_STORAGE, GIB);
    reserved
}

/// The kubelet's default hard eviction threshold on memory (100Mi) and on the node's ephemeral
/// storage (10% of it).
pub fn eviction_threshold(ephemeral_storage: i64) -> Resources {
    let mut threshold = Resources::new();
    threshold.set(MEMORY, 100 * MIB);
    threshold.set(EPHEMERAL_STORAGE, ephemeral_storage / 10);
    threshold
}

#[cfg(test)]
impl InstanceFacts {
    /// The facts of an m5.large: what tests change the rest from.
    pub(crate) fn m5_large() -> Self {
        InstanceFacts {
            name: "m5.large".into(),
            vcpus: 2,
            memory_mib: 8192,
            arch: "amd64".into(),
            gpus: 0,
            max_network_interfaces: 3,
            ipv4_per_interface: 10,
            ..InstanceFacts::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_metal_high_memory_and_accelerated_types_are_exotic() {
        let named = |name: &str, gpus: i64| InstanceFacts { name: name.into(), gpus, ..InstanceFacts::m5_large() };
        for name in [
            "c5.metal",
            "m7i.metal-24xl",
            "u-6tb1.112xlarge",
            "u7i-12tb.224xlarge",
            "inf2.xlarge",
            "trn1.32xlarge",
            "f2.48xlarge",
            "vt1.3xlarge",
            "dl1.24xlarge",
            "mac2.metal",
            "p6-b200.48xlarge",
        ] {
            assert!(is_exotic(&named(name, 0)), "{name}");
        }
        assert!(is_exotic(&named("gr6.4xlarge", 1)), "a GPU makes a type exotic");
        for name in ["m5.large", "c6a.48xlarge", "r8i.96xlarge", "x2idn.32xlarge", "t3a.nano", "hpc7g.16xlarge"] {
            assert!(!is_exotic(&named(name, 0)), "{name}");
        }
    }

    #[test]
    fn devices_and_processors_give_karpenters_labels_and_resources() {
        let g5 = InstanceFacts {
            name: "g5.xlarge".into(),
            gpus: 1,
            gpu_name: "A10G".into(),
            gpu_manufacturer: "NVIDIA".into(),
            gpu_memory_mib: 22888,
            cpu_manufacturer: "AMD".into(),
            cpu_clock_mhz: 3300,
            hypervisor: "nitro".into(),
            encryption_in_transit: true,
            local_nvme_gib: 250,
            ebs_bandwidth_mbps: 3500,
            network_bandwidth_mbps: 2500,
            ..InstanceFacts::m5_large()
        };
        let labels = instance_labels(&g5);
        for (key, value) in [
            (labels::INSTANCE_GPU_NAME, "a10g"),
            (labels::INSTANCE_GPU_MANUFACTURER, "nvidia"),
            (labels::INSTANCE_GPU_MEMORY, "22888"),
            (labels::INSTANCE_GPU_COUNT, "1"),
            (labels::INSTANCE_CPU_MANUFACTURER, "amd"),
            (labels::INSTANCE_CPU_CLOCK, "3300"),
            (labels::INSTANCE_HYPERVISOR, "nitro"),
            (labels::INSTANCE_ENCRYPTION_IN_TRANSIT, "true"),
            (labels::INSTANCE_LOCAL_NVME, "250"),
            (labels::INSTANCE_EBS_BANDWIDTH, "3500"),
            (labels::INSTANCE_NETWORK_BANDWIDTH, "2500"),
        ] {
            assert_eq!(labels.get(key).map(String::as_str), Some(value), "{key}");
        }
        assert!(!labels.contains_key(labels::INSTANCE_ACCELERATOR_NAME));
        let g5 = instance_type(&g5, vec![], &NodeSettings::default()).expect("valid");
        assert_eq!(g5.capacity.get(labels::NVIDIA_GPU), 1);

        let trn = InstanceFacts {
            name: "trn1.32xlarge".into(),
            accelerator_name: "Trainium".into(),
            accelerators: 16,
            efa_interfaces: 8,
            ..InstanceFacts::m5_large()
        };
        let labels = instance_labels(&trn);
        assert_eq!(labels.get(labels::INSTANCE_ACCELERATOR_NAME).map(String::as_str), Some("trainium"));
        assert_eq!(labels.get(labels::INSTANCE_ACCELERATOR_MANUFACTURER).map(String::as_str), Some("aws"));
        assert!(!labels.contains_key(labels::INSTANCE_GPU_NAME) && !labels.contains_key(labels::INSTANCE_LOCAL_NVME));
        let trn = instance_type(&trn, vec![], &NodeSettings::default()).expect("valid");
        assert_eq!((trn.capacity.get(labels::NEURON), trn.capacity.get(labels::EFA)), (16, 8));
        assert_eq!(trn.capacity.get(labels::NVIDIA_GPU), 0);
        let amd = InstanceFacts {
            gpus: 4,
            gpu_manufacturer: "AMD".into(),
            gpu_name: "Radeon Pro V520".into(),
            ..InstanceFacts::m5_large()
        };
        assert_eq!(instance_labels(&amd).get(labels::INSTANCE_GPU_NAME).map(String::as_str), Some("radeon-pro-v520"));
        assert_eq!(
            instance_type(&amd, vec![], &NodeSettings::default()).expect("valid").capacity.get(labels::AMD_GPU),
            4
        );
    }

    #[test]
    fn eks_max_pods_from_enis() {
        // The values in EKS's eni-max-pods.txt.
        assert_eq!(max_pods(&InstanceFacts::m5_large(), None), 29);
        let m5_4xlarge =
            InstanceFacts { vcpus: 16, max_network_interfaces: 8, ipv4_per_interface: 30, ..InstanceFacts::m5_large() };
        assert_eq!(max_pods(&m5_4xlarge, None), 234);
        let capped = KubeletConfiguration { max_pods: Some(110), pods_per_core: Some(10), ..Default::default() };
        assert_eq!(max_pods(&m5_4xlarge, Some(&capped)), 110);
        assert_eq!(max_pods(&InstanceFacts::m5_large(), Some(&capped)), 20);
    }

    #[test]
    fn kube_reserved_cpu_steps_by_core() {
        assert_eq!(kube_reserved(1, 10).get(CPU), 60);
        assert_eq!(kube_reserved(2, 10).get(CPU), 70);
        assert_eq!(kube_reserved(4, 10).get(CPU), 80);
        assert_eq!(kube_reserved(8, 10).get(CPU), 90);
        assert_eq!(kube_reserved(96, 10).get(CPU), 310);
        assert_eq!(kube_reserved(2, 29).get(MEMORY), (11 * 29 + 255) * MIB);
    }

    #[test]
    fn allocatable_of_an_m5_large() {
        let instance = instance_type(&InstanceFacts::m5_large(), vec![], &NodeSettings::default()).unwrap();
        assert_eq!(instance.allocatable.get(CPU), 1930);
        // 8192 MiB less 7.5% (615 MiB), kube-reserved 574 MiB and eviction 100 MiB.
        assert_eq!(instance.allocatable.get(MEMORY), (8192 - 615 - 574 - 100) * MIB);
        assert_eq!(instance.allocatable.get(PODS), 29);
        assert_eq!(instance.labels[labels::INSTANCE_FAMILY], "m5");
        assert_eq!(instance.labels[labels::INSTANCE_CATEGORY], "m");
        assert_eq!(instance.labels[labels::INSTANCE_GENERATION], "5");
        assert_eq!(instance.labels[labels::INSTANCE_SIZE], "large");
    }

    #[test]
    fn pods_attach_every_ebs_volume_but_the_root() {
        let limit = |max_ebs_attachments| {
            let facts = InstanceFacts { max_ebs_attachments, ..InstanceFacts::m5_large() };
            instance_type(&facts, vec![], &NodeSettings::default()).unwrap().allocatable.get(labels::EBS_VOLUMES)
        };
        assert_eq!(limit(27), 26, "shared with the primary interface, as EC2 reports for an m5.large");
        assert_eq!(limit(128), 127, "dedicated");
        assert_eq!(limit(0), 26, "not reported: most Nitro types' figure");
        assert_eq!(limit(1), 0, "the root volume takes the only one");
    }

    #[test]
    fn explicit_reservations_replace_the_defaults() {
        let kubelet = KubeletConfiguration {
            kube_reserved: Some(
                [("cpu".to_string(), k8s_openapi::apimachinery::pkg::api::resource::Quantity("500m".into()))].into(),
            ),
            ..Default::default()
        };
        let instance = instance_type(
            &InstanceFacts::m5_large(),
            vec![],
            &NodeSettings { kubelet: Some(kubelet), ..Default::default() },
        )
        .unwrap();
        assert_eq!(instance.allocatable.get(CPU), 1500);
    }

    #[test]
    fn ephemeral_storage_is_the_root_volume_or_the_raid0_array() {
        let with_disks = InstanceFacts { local_nvme_gib: 474, ..InstanceFacts::m5_large() };
        let storage = |node: &NodeSettings, facts: &InstanceFacts| {
            let instance = instance_type(facts, vec![], node).unwrap();
            (instance.capacity.get(EPHEMERAL_STORAGE) / GIB, instance.allocatable.get(EPHEMERAL_STORAGE))
        };
        // The 20 GiB default, less 1 GiB kube-reserved and the 10% eviction threshold.
        assert_eq!(storage(&NodeSettings::default(), &with_disks), (20, 20 * GIB - GIB - 2 * GIB));
        let root = NodeSettings { root_volume: Some(100 * GIB), ..Default::default() };
        assert_eq!(storage(&root, &with_disks), (100, 100 * GIB - GIB - 10 * GIB));
        let raid0 = NodeSettings { instance_store_raid0: true, ..root };
        assert_eq!(storage(&raid0, &with_disks).0, 474);
        assert_eq!(storage(&raid0, &InstanceFacts::m5_large()).0, 100, "no disks: the root volume");
    }
}
