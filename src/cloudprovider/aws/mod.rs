//! AWS: clients configured the standard way, so IRSA, EKS Pod Identity, environment credentials
//! and endpoint overrides (`AWS_ENDPOINT_URL_EC2`, `AWS_ENDPOINT_URL`) all work without stoker
//! knowing about them.

use aws_config::{BehaviorVersion, Region};

/// An EC2 client from the standard AWS configuration chain; `region` overrides the chain's region.
pub async fn ec2_client(region: Option<String>) -> aws_sdk_ec2::Client {
    let mut loader = aws_config::defaults(BehaviorVersion::latest());
    if let Some(region) = region {
        loader = loader.region(Region::new(region));
    }
    aws_sdk_ec2::Client::new(&loader.load().await)
}
