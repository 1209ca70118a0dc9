//! stoker's EC2 client against the EC2 emulator of the local environment, configured only through
//! the standard AWS settings (`AWS_ENDPOINT_URL_EC2`, `AWS_REGION`, credentials).

use aws_sdk_ec2::types::Filter;

#[tokio::test]
#[ignore = "needs the local environment: run hack/test.sh"]
async fn describes_instance_types_and_discovers_subnets_by_tag() {
    let cluster = std::env::var("CLUSTER_NAME").expect("CLUSTER_NAME from hack/test.sh");
    let ec2 = stoker::cloudprovider::aws::ec2_client(None).await;

    let types = ec2.describe_instance_types().send().await.expect("DescribeInstanceTypes");
    let names: Vec<String> =
        types.instance_types().iter().filter_map(|t| t.instance_type().map(|t| t.as_str().to_owned())).collect();
    assert!(names.len() > 100, "expected the emulator's catalog, found {} types", names.len());
    assert!(names.iter().any(|n| n == "m5.large"), "m5.large missing from {names:?}");

    let discovery = Filter::builder().name("tag:karpenter.sh/discovery").values(&cluster).build();
    let subnets = ec2.describe_subnets().filters(discovery).send().await.expect("DescribeSubnets");
    let mut zones: Vec<&str> = subnets.subnets().iter().filter_map(|s| s.availability_zone()).collect();
    zones.sort();
    assert_eq!(zones, ["us-east-1a", "us-east-1b", "us-east-1c"]);
}
