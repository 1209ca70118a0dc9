//! AMI selection, the pure part: which public SSM parameter an alias names, and which of the
//! images a selector found is used for each architecture (the newest).

use std::collections::BTreeMap;

use crate::{
    apis::{
        ec2nodeclass::AmiFamily, ec2nodeclass::ResolvedAmi, labels, requirements::NodeSelectorRequirementWithMinValues,
    },
    cloudprovider::CloudError,
};

/// The architectures stoker launches, with EC2's and SSM's name for each.
pub const ARCHES: [(&str, &str); 2] = [("amd64", "x86_64"), ("arm64", "arm64")];

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

    /// The public SSM parameter holding the image ID for a Kubernetes minor (`1.37`) and an
    /// EC2 architecture (`x86_64`, `arm64`).
    pub fn ssm_parameter(&self, kubernetes_minor: &str, ec2_arch: &str) -> String {
        let latest = self.version == "latest";
        match self.family {
            AmiFamily::Bottlerocket => {
                let version = if latest { "latest" } else { self.version.trim_start_matches('v') };
                format!("/aws/service/bottlerocket/aws-k8s-{kubernetes_minor}/{ec2_arch}/{version}/image_id")
            }
            _ if latest => format!(
                "/aws/service/eks/optimized-ami/{kubernetes_minor}/amazon-linux-2023/{ec2_arch}/standard/recommended/image_id"
            ),
            _ => format!(
                "/aws/service/eks/optimized-ami/{kubernetes_minor}/amazon-linux-2023/{ec2_arch}/standard/amazon-eks-node-al2023-{ec2_arch}-standard-{kubernetes_minor}-{}/image_id",
                self.version
            ),
        }
    }
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
}

/// The newest image per supported architecture, each with its `kubernetes.io/arch` requirement.
pub fn newest_per_arch(images: &[Image]) -> Vec<ResolvedAmi> {
    let mut newest: BTreeMap<&str, &Image> = BTreeMap::new();
    for image in images {
        let Some((arch, _)) = ARCHES.iter().find(|(_, ec2)| *ec2 == image.architecture) else { continue };
        let newer = |current: &&Image| (&image.creation_date, &image.id) > (&current.creation_date, &current.id);
        if newest.get(arch).is_none_or(newer) {
            newest.insert(arch, image);
        }
    }
    newest
        .into_iter()
        .map(|(arch, image)| ResolvedAmi {
            id: image.id.clone(),
            name: image.name.clone(),
            requirements: vec![NodeSelectorRequirementWithMinValues {
                key: labels::ARCH.to_owned(),
                operator: crate::apis::requirements::Operator::In,
                values: vec![arch.to_owned()],
                min_values: None,
            }],
        })
        .collect()
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
            latest.ssm_parameter("1.37", "x86_64"),
            "/aws/service/eks/optimized-ami/1.37/amazon-linux-2023/x86_64/standard/recommended/image_id"
        );
        let pinned = Alias::parse("al2023@v20250101").expect("valid");
        assert_eq!(
            pinned.ssm_parameter("1.37", "arm64"),
            "/aws/service/eks/optimized-ami/1.37/amazon-linux-2023/arm64/standard/amazon-eks-node-al2023-arm64-standard-1.37-v20250101/image_id"
        );
        let bottlerocket = Alias::parse("bottlerocket@v1.30.0").expect("valid");
        assert_eq!(bottlerocket.family, AmiFamily::Bottlerocket);
        assert_eq!(
            bottlerocket.ssm_parameter("1.37", "arm64"),
            "/aws/service/bottlerocket/aws-k8s-1.37/arm64/1.30.0/image_id"
        );
        assert!(Alias::parse("windows@latest").is_err());
        assert!(Alias::parse("al2023").is_err());
    }

    #[test]
    fn newest_image_per_architecture_wins() {
        let image = |id: &str, architecture: &str, creation_date: &str| Image {
            id: id.into(),
            name: None,
            architecture: architecture.into(),
            creation_date: creation_date.into(),
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
}
