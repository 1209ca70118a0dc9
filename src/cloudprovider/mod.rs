//! The cloud side of stoker. `aws` talks to EC2 through aws-sdk-ec2.

pub mod aws;
