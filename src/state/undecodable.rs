//! Custom resources this version of stoker cannot decode, and how the shared caches treat them.
//!
//! A typed watch fails its whole list when one object does not deserialize, and then retries
//! forever: one NodePool written under an older schema (a duration past `u64` seconds, a field of
//! the wrong type) would stop every NodePool from being seen again. So the caches of stoker's own
//! kinds watch through kube's [`DeserializeGuard`], and [`Decoder::decode`] turns each event into
//! one for the typed store:
//!
//! - an object that decodes is stored, without its server-side-apply bookkeeping;
//! - one that does not is left out, and the version stored before it (if any) is removed, so no
//!   controller acts on a spec its owner has since changed; it is logged once per version;
//! - deleting an undecodable object removes whatever was stored under its name.
//!
//! Reporting to the object's owner (a Warning Event, a status condition) is a write, so only the
//! leader's controllers do it (`controllers::isolation`); every replica's cache does this part.

use std::collections::HashMap;

use kube::{
    Resource,
    core::DeserializeGuard,
    runtime::{
        reflector::{ObjectRef, Store},
        watcher::Event,
    },
};
use tracing::warn;

use super::cache::without_managed_fields;

/// Turns guarded watch events into typed ones; remembers which undecodable versions it logged.
pub struct Decoder<K: Resource<DynamicType = ()> + 'static> {
    /// What the store holds now, to find the version an undecodable object replaces.
    stored: Store<K>,
    /// Undecodable objects by reference, with the resourceVersion last logged.
    logged: HashMap<ObjectRef<K>, Option<String>>,
}

impl<K> Decoder<K>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    pub fn new(stored: Store<K>) -> Self {
        Self { stored, logged: HashMap::new() }
    }

    /// The event for the typed store, or `None` when there is nothing to store or remove.
    pub fn decode(&mut self, event: Event<DeserializeGuard<K>>) -> Option<Event<K>> {
        match event {
            Event::Apply(DeserializeGuard(Ok(object))) => {
                self.logged.remove(&ObjectRef::from_obj(&object));
                Some(Event::Apply(without_managed_fields(object)))
            }
            Event::InitApply(DeserializeGuard(Ok(object))) => {
                self.logged.remove(&ObjectRef::from_obj(&object));
                Some(Event::InitApply(without_managed_fields(object)))
            }
            Event::Delete(DeserializeGuard(Ok(object))) => {
                self.logged.remove(&ObjectRef::from_obj(&object));
                Some(Event::Delete(object))
            }
            Event::Apply(guarded @ DeserializeGuard(Err(_))) => {
                let reference = self.note(&guarded);
                self.stored.get(&reference).map(|previous| Event::Delete((*previous).clone()))
            }
            // The initial list replaces the whole store when it is done: leaving it out is enough.
            Event::InitApply(guarded @ DeserializeGuard(Err(_))) => {
                self.note(&guarded);
                None
            }
            Event::Delete(guarded @ DeserializeGuard(Err(_))) => {
                let reference = reference(&guarded);
                self.logged.remove(&reference);
                self.stored.get(&reference).map(|previous| Event::Delete((*previous).clone()))
            }
            Event::Init => Some(Event::Init),
            Event::InitDone => Some(Event::InitDone),
        }
    }

    /// Logs an undecodable object once per version and returns its reference in the store.
    fn note(&mut self, guarded: &DeserializeGuard<K>) -> ObjectRef<K> {
        let reference = reference(guarded);
        let version = guarded.meta().resource_version.clone();
        if self.logged.get(&reference) != Some(&version) {
            let error = guarded.0.as_ref().err().map(ToString::to_string).unwrap_or_default();
            warn!(
                kind = %K::kind(&()),
                name = %reference.name,
                namespace = reference.namespace.as_deref().unwrap_or_default(),
                %error,
                "cannot decode object: left out of the cache until it is fixed"
            );
            self.logged.insert(reference.clone(), version);
        }
        reference
    }
}

/// The store key of a guarded object, decoded or not.
fn reference<K: Resource<DynamicType = ()>>(guarded: &DeserializeGuard<K>) -> ObjectRef<K> {
    let meta = guarded.meta();
    let name = ObjectRef::new(meta.name.as_deref().unwrap_or_default());
    match meta.namespace.as_deref() {
        Some(namespace) => name.within(namespace),
        None => name,
    }
}

#[cfg(test)]
mod tests {
    use kube::runtime::reflector;
    use serde_json::json;

    use super::*;
    use crate::apis::NodePool;

    fn guarded(name: &str, version: &str, expire_after: &str) -> DeserializeGuard<NodePool> {
        serde_json::from_value(json!({
            "apiVersion": "stoker.dev/v1alpha1", "kind": "NodePool",
            "metadata": {"name": name, "resourceVersion": version, "managedFields": [{"manager": "kubectl"}]},
            "spec": {"template": {"spec": {
                "nodeClassRef": {"group": "stoker.dev", "kind": "EC2NodeClass", "name": "default"},
                "expireAfter": expire_after,
            }}},
        }))
        .expect("a guarded NodePool")
    }

    /// What a store fed through the decoder holds, by name.
    fn names(store: &Store<NodePool>) -> Vec<String> {
        let mut names: Vec<String> = store.state().iter().filter_map(|p| p.metadata.name.clone()).collect();
        names.sort();
        names
    }

    #[test]
    fn undecodable_objects_are_left_out_and_replace_what_was_stored() {
        let (store, mut writer) = reflector::store();
        let mut decoder = Decoder::new(store.clone());
        // A value past u64 seconds: the typed decode fails, the watch does not.
        let too_long = "99999999999999999999h";
        let mut feed = |event| {
            if let Some(event) = decoder.decode(event) {
                writer.apply_watcher_event(&event);
            }
        };
        feed(Event::Init);
        feed(Event::InitApply(guarded("good", "1", "720h")));
        feed(Event::InitApply(guarded("bad", "2", too_long)));
        feed(Event::InitApply(guarded("changing", "3", "720h")));
        feed(Event::InitDone);
        assert_eq!(names(&store), ["changing", "good"]);
        assert!(store.state().iter().all(|p| p.metadata.managed_fields.is_none()));

        // A stored object that turns undecodable is removed, not kept at its old spec.
        feed(Event::Apply(guarded("changing", "4", too_long)));
        assert_eq!(names(&store), ["good"]);
        // Fixed again: stored again.
        feed(Event::Apply(guarded("bad", "5", "24h")));
        assert_eq!(names(&store), ["bad", "good"]);
        // Deleting an undecodable object removes what was stored under its name.
        feed(Event::Apply(guarded("good", "6", too_long)));
        feed(Event::Delete(guarded("good", "7", too_long)));
        assert_eq!(names(&store), ["bad"]);
    }
}
