//! The interruption queue: an SQS queue that EventBridge rules feed with spot interruption
//! warnings, rebalance recommendations, instance state changes and AWS Health events. Long-polls
//! it and deletes what was handled; what the messages mean is decided elsewhere.

use aws_config::SdkConfig;
use aws_sdk_sqs::types::MessageSystemAttributeName;
use chrono::{DateTime, Utc};

use super::aws_error;
use crate::cloudprovider::CloudError;

/// How long one receive waits for messages (SQS's maximum).
const WAIT_SECONDS: i32 = 20;
/// Messages per receive (SQS's maximum).
const BATCH: i32 = 10;

/// A queue found by name.
pub struct InterruptionQueue {
    client: aws_sdk_sqs::Client,
    url: String,
}

/// One message as received.
#[derive(Debug, Clone)]
pub struct Received {
    /// What deleting it takes.
    pub receipt: String,
    pub body: String,
    /// When SQS received it.
    pub sent: Option<DateTime<Utc>>,
}

impl InterruptionQueue {
    /// Finds the queue named `name` (GetQueueUrl).
    pub async fn connect(config: &SdkConfig, name: &str) -> Result<Self, CloudError> {
        let client = aws_sdk_sqs::Client::new(&super::stoker_config(config));
        let found = client.get_queue_url().queue_name(name).send().await.map_err(aws_error("GetQueueUrl"))?;
        let url = found.queue_url().ok_or_else(|| CloudError::Aws {
            operation: "GetQueueUrl",
            code: "UnexpectedResponse".into(),
            message: format!("no URL for queue {name}"),
        })?;
        Ok(Self { client, url: url.to_owned() })
    }

    /// Waits up to 20 seconds for messages and returns up to ten.
    pub async fn receive(&self) -> Result<Vec<Received>, CloudError> {
        let reply = self
            .client
            .receive_message()
            .queue_url(&self.url)
            .wait_time_seconds(WAIT_SECONDS)
            .max_number_of_messages(BATCH)
            .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
            .send()
            .await
            .map_err(aws_error("ReceiveMessage"))?;
        Ok(reply
            .messages()
            .iter()
            .filter_map(|message| {
                let sent = message
                    .attributes()
                    .and_then(|a| a.get(&MessageSystemAttributeName::SentTimestamp))
                    .and_then(|millis| millis.parse::<i64>().ok())
                    .and_then(DateTime::from_timestamp_millis);
                Some(Received {
                    receipt: message.receipt_handle()?.to_owned(),
                    body: message.body().unwrap_or_default().to_owned(),
                    sent,
                })
            })
            .collect())
    }

    /// Deletes a handled message.
    pub async fn delete(&self, receipt: &str) -> Result<(), CloudError> {
        self.client
            .delete_message()
            .queue_url(&self.url)
            .receipt_handle(receipt)
            .send()
            .await
            .map_err(aws_error("DeleteMessage"))?;
        Ok(())
    }
}
