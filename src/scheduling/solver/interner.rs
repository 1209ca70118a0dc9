//! Requirement sets interned to small integers, and the merges of two sets remembered: the inner
//! loop compares the same few sets many times.

use std::{collections::HashMap, sync::Arc};

use crate::scheduling::{catalog::defined_at_launch, requirements::Requirements};

pub(super) type ReqId = usize;

#[derive(Default)]
pub(super) struct Interner {
    /// Each set once, shared by its id and its index entry.
    sets: Vec<Arc<Requirements>>,
    index: HashMap<Arc<Requirements>, ReqId>,
    merges: HashMap<(ReqId, ReqId, bool), Result<ReqId, String>>,
}

impl Interner {
    pub(super) fn get(&self, id: ReqId) -> &Requirements {
        &self.sets[id]
    }

    /// Interns a set the caller keeps, cloning it only the first time it is seen.
    pub(super) fn intern_ref(&mut self, requirements: &Requirements) -> ReqId {
        match self.index.get(requirements) {
            Some(id) => *id,
            None => self.intern(requirements.clone()),
        }
    }

    pub(super) fn intern(&mut self, requirements: Requirements) -> ReqId {
        if let Some(id) = self.index.get(&requirements) {
            return *id;
        }
        let id = self.sets.len();
        let set = Arc::new(requirements);
        self.index.insert(set.clone(), id);
        self.sets.push(set);
        id
    }

    /// The intersection of two interned sets, or why they conflict. `registered` says whether
    /// `ours` describes a node with known labels (a key it lacks is absent) rather than a node
    /// still to be launched (well-known keys get their values from the instance type).
    pub(super) fn merge(&mut self, ours: ReqId, theirs: ReqId, registered: bool) -> Result<ReqId, String> {
        if let Some(result) = self.merges.get(&(ours, theirs, registered)) {
            return result.clone();
        }
        let (a, b) = (&self.sets[ours], &self.sets[theirs]);
        let result = match a.conflict_with(b, defined_at_launch(registered)) {
            Some(conflict) => Err(conflict),
            None => {
                let merged = a.intersect(b);
                Ok(self.intern(merged))
            }
        };
        self.merges.insert((ours, theirs, registered), result.clone());
        result
    }
}
