//! The one error type of the controllers, with a label for metrics and logs.

/// What can go wrong while reconciling.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("cannot serialize {what}: {source}")]
    Serialize { what: &'static str, source: serde_json::Error },
    #[error("{object} is missing {field}")]
    MissingField { object: String, field: &'static str },
    #[error("cloud provider: {0}")]
    Cloud(#[from] crate::cloudprovider::CloudError),
    /// A reconcile or a controller pass panicked; isolated so the others go on.
    #[error("panicked: {0}")]
    Panicked(String),
}

impl Error {
    /// A short, stable label for the `error` metric label and log field.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Serialize { .. } => "serialize",
            Error::MissingField { .. } => "missing_field",
            Error::Cloud(_) => "cloud",
            Error::Panicked(_) => "panic",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
