//! AMI selection, the pure part: which public SSM parameters an alias names (one per architecture
//! and variant: AL2023's standard, NVIDIA and Neuron builds), what an `ssmParameter` term's value
//! must look like, which of the images a selector found is used for each architecture and
//! variant (the newest), and which image an instance type launches with (the first whose
//! requirements its labels meet).

use std::collections::BTreeMap;

use crate::{
    apis::{
        ec2nodeclass::AmiFamily,
        ec2nodeclass::ResolvedAmi,
        labels,
        requirements::{NodeSelectorRequirementWithMinValues, Operator},
    },
    cloudprovider::CloudError,
    scheduling::{
        catalog::{InstanceType, type_admits},
        requirements::Requirement,
    },
};

/// The architectures stoker launches, with EC2's and SSM's name for each.
pub const ARCHES: [(&str, &str); 2] = [("amd64", "x86_64"), ("arm64", "arm64")];

/// Which build of a family's image: AL2023 has NVIDIA and Neuron builds for accelerated types,
/// each used only for the types it serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Variant {
    Standard,
    Nvidia,
    Neuron,
}

impl Variant {
    fn path(self) -> &'static str {
        match self {
            Variant::Standard => "standard",
            Variant::Nvidia => "nvidia",
            Variant::Neuron => "neuron",
        }
    }

    /// The instance types an image of this variant serves, beyond its architecture: the standard
    /// image those without GPUs or Neuron devices, each accelerated one those with its devices.
    pub fn requirements(self) -> Vec<NodeSelectorRequirementWithMinValues> {
        let exists = |key: &str| NodeSelectorRequirementWithMinValues::new(key, Operator::Exists, Vec::<String>::new());
        let absent =
            |key: &str| NodeSelectorRequirementWithMinValues::new(key, Operator::DoesNotExist, Vec::<String>::new());
        match self {
            Variant::Standard => vec![absent(labels::INSTANCE_GPU_COUNT), absent(labels::INSTANCE_ACCELERATOR_COUNT)],
            Variant::Nvidia => vec![exists(labels::INSTANCE_GPU_COUNT)],
            Variant::Neuron => vec![exists(labels::INSTANCE_ACCELERATOR_COUNT)],
        }
    }
}

/// An `amiSelectorTerms[].alias`: a family and `latest` or a version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alias {
    pub family: AmiFamily,
    pub version: String,
}

impl Alias {
    pub fn parse(alias: &str) -> Result<Self, CloudError> {
        let invalid =
            || CloudError::InvalidConfiguration(format!("amiSelectorTerms alias {alias:?} is not family@version"));
        let (family, version) = alias.split_once('@').ok_or_else(invalid)?;
        let family = match family {
            "al2023" => AmiFamily::AL2023,
            "bottlerocket" => AmiFamily::Bottlerocket,
            _ => return Err(invalid()),
        };
        if version.is_empty() {
            return Err(invalid());
        }
        Ok(Self { family, version: version.to_owned() })
    }

    /// The variants the family publishes, told apart by requirements; `None` for an image that
    /// serves every type of its architecture: Bottlerocket's accelerated builds are variants of
    /// their own (`aws-k8s-<minor>-nvidia`) that this alias does not name.
    pub fn variants(&self) -> &'static [Option<Variant>] {
        match self.family {
            AmiFamily::Bottlerocket => &[None],
            _ => &[Some(Variant::Standard), Some(Variant::Nvidia), Some(Variant::Neuron)],
        }
    }

    /// The public SSM parameter holding the image ID for a Kubernetes minor (`1.37`), an EC2
    /// architecture (`x86_64`, `arm64`) and a variant.
    pub fn ssm_parameter(&self, kubernetes_minor: &str, ec2_arch: &str, variant: Option<Variant>) -> String {
        let latest = self.version == "latest";
        let variant = variant.unwrap_or(Variant::Standard).path();
        match self.family {
            AmiFamily::Bottlerocket => {
                let version = if latest { "latest" } else { self.version.trim_start_matches('v') };
                format!("/aws/service/bottlerocket/aws-k8s-{kubernetes_minor}/{ec2_arch}/{version}/image_id")
            }
            _ if latest => format!(
                "/aws/service/eks/optimized-ami/{kubernetes_minor}/amazon-linux-2023/{ec2_arch}/{variant}/recommended/image_id"
            ),
            _ => format!(
                "/aws/service/eks/optimized-ami/{kubernetes_minor}/amazon-linux-2023/{ec2_arch}/{variant}/amazon-eks-node-al2023-{ec2_arch}-{variant}-{kubernetes_minor}-{}/image_id",
                self.version
            ),
        }
    }
}

/// Whether `text` has the shape of an AMI ID (`ami-` and lowercase hex), as an SSM parameter
/// named by `amiSelectorTerms[].ssmParameter` must hold.
pub fn is_image_id(text: &str) -> bool {
    text.strip_prefix("ami-")
        .is_some_and(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit() || b.is_ascii_lowercase()))
}

/// An image as DescribeImages reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    pub id: String,
    pub name: Option<String>,
    /// EC2's architecture name (`x86_64`, `arm64`).
    pub architecture: String,
    /// ISO 8601, which sorts chronologically.
    pub creation_date: String,
    /// The variant of an alias it was resolved for; `None` for an image selected by ID, name or
    /// tags, which serves every type of its architecture.
    pub variant: Option<Variant>,
}

/// The newest image per supported architecture and variant, each with its `kubernetes.io/arch`
/// requirement and its variant's.
pub fn newest_per_arch(images: &[Image]) -> Vec<ResolvedAmi> {
    let mut newest: BTreeMap<(&str, Option<Variant>), &Image> = BTreeMap::new();
    for image in images {
        let Some((arch, _)) = ARCHES.iter().find(|(_, ec2)| *ec2 == image.architecture) else { continue };
        let newer = |current: &&Image| (&image.creation_date, &image.id) > (&current.creation_date, &current.id);
        let key = (*arch, image.variant);
        if newest.get(&key).is_none_or(newer) {
            newest.insert(key, image);
        }
    }
    newest
        .into_iter()
        .map(|((arch, variant), image)| {
            let mut requirements = vec![NodeSelectorRequirementWithMinValues::new(labels::ARCH, Operator::In, [arch])];
            requirements.extend(variant.map(Variant::requirements).unwrap_or_default());
            ResolvedAmi { id: image.id.clone(), name: image.name.clone(), requirements }
        })
        .collect()
}

/// The first of `amis` whose requirements an instance type's labels meet.
pub fn image_for<'a>(amis: &'a [ResolvedAmi], instance: &InstanceType) -> Option<&'a ResolvedAmi> {
    amis.iter().find(|ami| ami.requirements.iter().all(|r| type_admits(instance, &r.key, &Requirement::from_api(r))))
}

/// The architecture (`amd64`, `arm64`) a resolved AMI serves.
pub fn arch_of(ami: &ResolvedAmi) -> Option<&str> {
    ami.requirements.iter().find(|r| r.key == labels::ARCH).and_then(|r| r.values.first()).map(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_name_the_public_parameters() {
        let latest = Alias::parse("al2023@latest").expect("valid");
        assert_eq!(
            latest.ssm_parameter("1.37", "x86_64", Some(Variant::Standard)),
            "/aws/service/eks/optimized-ami/1.37/amazon-linux-2023/x86_64/standard/recommended/image_id"
        );
        assert_eq!(
            latest.ssm_parameter("1.37", "x86_64", Some(Variant::Nvidia)),
            "/aws/service/eks/optimized-ami/1.37/amazon-linux-2023/x86_64/nvidia/recommended/image_id"
        );
        let pinned = Alias::parse("al2023@v20250101").expect("valid");
        assert_eq!(
            pinned.ssm_parameter("1.37", "arm64", Some(Variant::Standard)),
            "/aws/service/eks/optimized-ami/1.37/amazon-linux-2023/arm64/standard/amazon-eks-node-al2023-arm64-standard-1.37-v20250101/image_id"
        );
        let bottlerocket = Alias::parse("bottlerocket@v1.30.0").expect("valid");
        assert_eq!(bottlerocket.family, AmiFamily::Bottlerocket);
        assert_eq!(
            bottlerocket.ssm_parameter("1.37", "arm64", Some(Variant::Standard)),
            "/aws/service/bottlerocket/aws-k8s-1.37/arm64/1.30.0/image_id"
        );
        assert!(Alias::parse("windows@latest").is_err());
        assert!(Alias::parse("al2023").is_err());
    }

    #[test]
    fn only_ami_ids_are_images() {
        assert!(is_image_id("ami-0abc123"));
        for not_one in ["", "ami-", "ami-0ABC", "ami-0abc 1", "snap-0abc", "resolve:ssm:/x", "ami-0abc\n"] {
            assert!(!is_image_id(not_one), "{not_one:?}");
        }
    }

    #[test]
    fn newest_image_per_architecture_wins() {
        let image = |id: &str, architecture: &str, creation_date: &str| Image {
            id: id.into(),
            name: None,
            architecture: architecture.into(),
            creation_date: creation_date.into(),
            variant: None,
        };
        let amis = newest_per_arch(&[
            image("ami-old", "x86_64", "2025-01-01T00:00:00.000Z"),
            image("ami-new", "x86_64", "2025-06-01T00:00:00.000Z"),
            image("ami-arm", "arm64", "2024-01-01T00:00:00.000Z"),
            image("ami-i386", "i386", "2026-01-01T00:00:00.000Z"),
        ]);
        let found: Vec<(&str, Option<&str>)> = amis.iter().map(|a| (a.id.as_str(), arch_of(a))).collect();
        assert_eq!(found, [("ami-new", Some("amd64")), ("ami-arm", Some("arm64"))]);
    }

    #[test]
    fn each_type_launches_with_the_image_of_its_devices() {
        let image = |id: &str, architecture: &str, variant: Variant| Image {
            id: id.into(),
            name: None,
            architecture: architecture.into(),
            creation_date: "2026-11-01T00:00:00.000Z".into(),
            variant: Some(variant),
        };
        let amis = newest_per_arch(&[
            image("ami-standard", "x86_64", Variant::Standard),
            image("ami-nvidia", "x86_64", Variant::Nvidia),
            image("ami-neuron", "x86_64", Variant::Neuron),
            image("ami-arm", "arm64", Variant::Standard),
        ]);
        let facts = |name: &str, gpus: i64, accelerators: i64| crate::cloudprovider::aws::allocatable::InstanceFacts {
            name: name.into(),
            vcpus: 4,
            memory_mib: 16384,
            arch: "amd64".into(),
            gpus,
            accelerators,
            max_network_interfaces: 4,
            ipv4_per_interface: 15,
            ..Default::default()
        };
        let launched_with = |name: &str, gpus: i64, accelerators: i64| {
            let instance = crate::cloudprovider::aws::allocatable::instance_type(
                &facts(name, gpus, accelerators),
                vec![],
                &crate::cloudprovider::aws::allocatable::NodeSettings::default(),
            )
            .expect("valid");
            image_for(&amis, &instance).map(|ami| ami.id.clone())
        };
        assert_eq!(launched_with("m5.xlarge", 0, 0).as_deref(), Some("ami-standard"));
        assert_eq!(launched_with("g5.xlarge", 1, 0).as_deref(), Some("ami-nvidia"));
        assert_eq!(launched_with("inf2.xlarge", 0, 1).as_deref(), Some("ami-neuron"));
        // Without the accelerated images, an accelerated type has no image to launch with.
        assert_eq!(
            image_for(
                &amis[..1],
                &crate::cloudprovider::aws::allocatable::instance_type(
                    &facts("g5.xlarge", 1, 0),
                    vec![],
                    &crate::cloudprovider::aws::allocatable::NodeSettings::default()
                )
                .expect("valid")
            ),
            None
        );
    }
}
