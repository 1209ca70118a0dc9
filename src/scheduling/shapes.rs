//! One copy of each pod shape in use. The replicas of one Deployment differ only in their names:
//! their namespace, labels, requests, node requirements, tolerations and topology terms are
//! equal, and at 10,000 pods those parsed constraints were a third of the controller's heap. The
//! pod cache passes every pod it keeps through [`Shapes::intern`], so equal shapes share one
//! allocation. Entries are weak: a shape no pod holds any more is freed, and its entry is swept
//! away on a later insert.

use std::{
    collections::HashMap,
    hash::{DefaultHasher, Hash, Hasher},
    sync::{Arc, Weak},
};

use super::pod::PodShape;

/// The shapes in use, by a fingerprint of their contents.
#[derive(Debug, Default)]
pub struct Shapes {
    by_fingerprint: HashMap<u64, Vec<Weak<PodShape>>>,
    /// New entries since the dead ones were last swept.
    since_sweep: usize,
    /// Entries left by that sweep.
    after_sweep: usize,
}

impl Shapes {
    /// The shape in use equal to `shape`, or `shape` itself, now kept.
    pub fn intern(&mut self, shape: Arc<PodShape>) -> Arc<PodShape> {
        let bucket = self.by_fingerprint.entry(fingerprint(&shape)).or_default();
        if let Some(kept) = bucket.iter().filter_map(Weak::upgrade).find(|kept| **kept == *shape) {
            return kept;
        }
        bucket.retain(|entry| entry.strong_count() > 0);
        bucket.push(Arc::downgrade(&shape));
        self.since_sweep += 1;
        // A sweep costs one pass over the entries; sweeping once the new entries outnumber those
        // the last sweep left keeps the cost per insert constant and the entries under twice
        // the live shapes (plus the ones added since).
        if self.since_sweep > self.after_sweep {
            self.by_fingerprint.retain(|_, bucket| {
                bucket.retain(|entry| entry.strong_count() > 0);
                !bucket.is_empty()
            });
            self.since_sweep = 0;
            self.after_sweep = self.len();
        }
        shape
    }

    /// Distinct shapes kept (live or not yet swept).
    pub fn len(&self) -> usize {
        self.by_fingerprint.values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.by_fingerprint.is_empty()
    }
}

/// A hash of everything a shape holds; equal shapes have equal fingerprints.
fn fingerprint(shape: &PodShape) -> u64 {
    let mut hasher = DefaultHasher::new();
    let PodShape { namespace, labels, requests, requirements, tolerations, host_ports, topology, preferences } = shape;
    (namespace, labels, requests, requirements, host_ports, topology, preferences).hash(&mut hasher);
    // The API's Toleration is not `Hash`.
    for toleration in tolerations {
        (&toleration.key, &toleration.operator, &toleration.value, &toleration.effect, toleration.toleration_seconds)
            .hash(&mut hasher);
    }
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduling::pod::PodInfo;

    fn replica(name: &str, cpu: &str) -> PodInfo {
        let yaml = format!(
            "metadata: {{name: {name}, namespace: web, labels: {{app: web, pod-template-hash: abc}}}}\nspec:\n  tolerations: [{{key: node.kubernetes.io/not-ready, operator: Exists, effect: NoExecute, tolerationSeconds: 300}}]\n  containers: [{{name: c, resources: {{requests: {{cpu: '{cpu}'}}}}}}]"
        );
        PodInfo::from_pod(&serde_saphyr::from_str(&yaml).expect("a Pod")).expect("valid requests")
    }

    #[test]
    fn equal_shapes_are_kept_once_and_different_ones_apart() {
        let mut shapes = Shapes::default();
        let first = shapes.intern(replica("web-1", "1").shape);
        let second = shapes.intern(replica("web-2", "1").shape);
        assert!(Arc::ptr_eq(&first, &second), "the replicas share one shape");
        let larger = shapes.intern(replica("web-3", "2").shape);
        assert!(!Arc::ptr_eq(&first, &larger));
        assert_eq!(*larger, *replica("web-3", "2").shape, "a shape is never changed by interning");
        assert_eq!(shapes.len(), 2);
    }

    #[test]
    fn shapes_no_pod_holds_are_freed_and_swept() {
        let mut shapes = Shapes::default();
        for round in 0..100 {
            // Each round's shape is dropped as soon as it is interned: its pod is gone.
            shapes.intern(replica("web-1", &format!("{}m", 100 + round)).shape);
        }
        let held = shapes.intern(replica("web-1", "1").shape);
        assert!(shapes.len() <= 3, "dead entries are swept: {} kept", shapes.len());
        assert!(Arc::ptr_eq(&held, &shapes.intern(replica("web-2", "1").shape)));
    }
}
