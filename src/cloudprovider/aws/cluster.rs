//! The cluster nodes join: what the settings give, the rest from EKS's DescribeCluster, so the
//! cluster name is the only setting an EKS install needs.

use aws_config::SdkConfig;

use super::{ClusterInfo, aws_error};
use crate::cloudprovider::CloudError;

/// What the settings say about the cluster; each field unset is asked of EKS.
#[derive(Debug, Clone, Default)]
pub struct KnownCluster {
    pub name: String,
    pub endpoint: Option<String>,
    pub ca_bundle: Option<String>,
    pub service_cidr: Option<String>,
}

/// The cluster's facts: the settings', completed from EKS when one is missing. The Kubernetes
/// minor (for AMI aliases) comes from the API server, which the caller asked.
pub async fn discover(
    config: &SdkConfig,
    known: KnownCluster,
    kubernetes_minor: String,
) -> Result<ClusterInfo, CloudError> {
    let KnownCluster { name, endpoint, ca_bundle, service_cidr } = known;
    if let (Some(endpoint), Some(ca_bundle), Some(service_cidr)) = (&endpoint, &ca_bundle, &service_cidr) {
        return Ok(ClusterInfo {
            name,
            endpoint: endpoint.clone(),
            ca_bundle: ca_bundle.clone(),
            service_cidr: service_cidr.clone(),
            kubernetes_minor,
        });
    }
    let eks = aws_sdk_eks::Client::new(&super::stoker_config(config));
    let described = eks.describe_cluster().name(&name).send().await.map_err(aws_error("DescribeCluster"))?;
    let missing = |field: &str| {
        CloudError::InvalidConfiguration(format!(
            "EKS cluster {name} has no {field} in DescribeCluster; set it in the settings instead"
        ))
    };
    let cluster = described.cluster().ok_or_else(|| missing("cluster"))?;
    let endpoint = endpoint.or_else(|| cluster.endpoint().map(str::to_owned)).ok_or_else(|| missing("endpoint"))?;
    let ca_bundle = ca_bundle
        .or_else(|| cluster.certificate_authority().and_then(|c| c.data()).map(str::to_owned))
        .ok_or_else(|| missing("certificateAuthority.data"))?;
    let service_cidr = service_cidr
        .or_else(|| cluster.kubernetes_network_config().and_then(|n| n.service_ipv4_cidr()).map(str::to_owned))
        .ok_or_else(|| missing("kubernetesNetworkConfig.serviceIpv4Cidr"))?;
    Ok(ClusterInfo { name, endpoint, ca_bundle, service_cidr, kubernetes_minor })
}
