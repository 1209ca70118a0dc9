//! stoker's finalizers, one way for every kind: added before anything is created for an object,
//! released only when cleanup says it is done. Cleanup that takes several passes (a drain, a node
//! class waiting for its NodeClaims) reports progress as [`Cleanup::InProgress`], not as an error,
//! so waiting is neither logged nor counted as a failure.
//!
//! Both writes are JSON patches that test the exact list or entry they change, so they need no
//! resourceVersion (a Node's heartbeat changes it every few seconds) and never drop a finalizer
//! another controller added in between: a stale test fails the patch and the next pass reads again.

use std::future::Future;

use json_patch::{
    AddOperation, Patch as JsonPatch, PatchOperation, RemoveOperation, TestOperation, jsonptr::PointerBuf,
};
use kube::{
    Api, Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::controller::Action,
};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::Result;

/// What one pass of cleanup achieved.
#[derive(Debug)]
pub enum Cleanup {
    /// Nothing is left to clean up: the finalizer may go.
    Done,
    /// Still in progress; look again as the action says.
    InProgress(Action),
}

/// Reconciles an object that holds `finalizer`: `apply` while it lives (after the finalizer is
/// in place), `cleanup` once it is being deleted, then the finalizer released.
pub async fn reconcile<K, Apply, Clean>(
    api: &Api<K>,
    finalizer: &str,
    object: &K,
    apply: impl FnOnce() -> Apply,
    cleanup: impl FnOnce() -> Clean,
) -> Result<Action>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
    Apply: Future<Output = Result<Action>>,
    Clean: Future<Output = Result<Cleanup>>,
{
    let held = object.finalizers().iter().any(|f| f == finalizer);
    if object.meta().deletion_timestamp.is_some() {
        if !held {
            return Ok(Action::await_change());
        }
        return match cleanup().await? {
            Cleanup::InProgress(action) => Ok(action),
            Cleanup::Done => {
                release(api, object, finalizer).await?;
                Ok(Action::await_change())
            }
        };
    }
    if !held {
        // The write wakes the controller again, with the finalizer in place.
        add(api, object, finalizer).await?;
        return Ok(Action::await_change());
    }
    apply().await
}

/// Adds `finalizer` to the object (nothing when it is already there).
pub async fn add<K>(api: &Api<K>, object: &K, finalizer: &str) -> kube::Result<()>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    if object.finalizers().iter().any(|f| f == finalizer) {
        return Ok(());
    }
    let path = PointerBuf::from_tokens(["metadata", "finalizers"]);
    let operations = match &object.meta().finalizers {
        None => vec![
            PatchOperation::Test(TestOperation { path: path.clone(), value: Value::Null }),
            PatchOperation::Add(AddOperation { path, value: vec![finalizer].into() }),
        ],
        Some(list) => vec![
            PatchOperation::Test(TestOperation { path: path.clone(), value: list.clone().into() }),
            PatchOperation::Add(AddOperation { path: path.with_trailing_token("-"), value: finalizer.into() }),
        ],
    };
    patch(api, object, operations).await
}

/// Removes `finalizer` from the object (nothing when it is not there or the object is gone).
pub async fn release<K>(api: &Api<K>, object: &K, finalizer: &str) -> kube::Result<()>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let Some(index) = object.finalizers().iter().position(|f| f == finalizer) else { return Ok(()) };
    let path = PointerBuf::from_tokens(["metadata".to_owned(), "finalizers".to_owned(), index.to_string()]);
    let operations = vec![
        PatchOperation::Test(TestOperation { path: path.clone(), value: finalizer.into() }),
        PatchOperation::Remove(RemoveOperation { path }),
    ];
    match patch(api, object, operations).await {
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        result => result,
    }
}

async fn patch<K>(api: &Api<K>, object: &K, operations: Vec<PatchOperation>) -> kube::Result<()>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    api.patch(&object.name_any(), &PatchParams::default(), &Patch::<()>::Json(JsonPatch(operations))).await?;
    Ok(())
}
