//! What solver runs over the same catalog share. Consolidation asks the solver one question per
//! candidate (the cluster without that node), and every run would otherwise scan the whole
//! catalog again for the same answers: the instance types a requirement set allows, each type's
//! cheapest offering under a zone and capacity-type requirement, the catalog as resource
//! vectors, and the domains the pools can launch into for each topology term. A [`Memo`] keeps
//! those across runs, and an index of the catalog's types by name for what callers look up
//! about a plan; handed another catalog, it starts afresh.

use std::{
    collections::{BTreeSet, HashMap},
    hash::{DefaultHasher, Hash, Hasher},
    rc::Rc,
    sync::Arc,
};

use super::{NodePoolTemplate, sizing::OfferingKey, vectors::Dims};
use crate::scheduling::{bitset::BitSet, catalog::InstanceType, pod::NodeFilter, requirements::Requirements};

/// Answers about one catalog, kept across solver runs (see [`super::solve_with`]).
#[derive(Default)]
pub struct Memo {
    /// The catalog the answers are about.
    catalog: Option<Arc<[InstanceType]>>,
    /// The instance types each requirement set allows.
    pub(super) type_sets: HashMap<Requirements, BitSet>,
    pub(super) prices: HashMap<OfferingKey, Rc<[f64]>>,
    vectors: Option<CatalogVectors>,
    /// Per pools (their [`pools_digest`]), topology key and node filter: the domains the pools
    /// can launch into.
    pub(super) pool_domains: HashMap<(u64, String, NodeFilter), Rc<BTreeSet<String>>>,
    /// Each type name's first position in the catalog, built on first use.
    by_name: HashMap<String, usize>,
}

/// What decides the domains pools can launch into: each pool's requirements, taints and types.
pub(super) fn pools_digest(pools: &[NodePoolTemplate]) -> u64 {
    let mut digest = DefaultHasher::new();
    for pool in pools {
        pool.requirements.hash(&mut digest);
        pool.instance_types.hash(&mut digest);
        for taint in &pool.taints {
            (&taint.key, &taint.value, &taint.effect).hash(&mut digest);
        }
    }
    digest.finish()
}

/// Each type's allocatable and capacity as vectors over `dims`.
#[derive(Clone)]
pub(super) struct CatalogVectors {
    pub(super) dims: Vec<String>,
    pub(super) allocatable: Rc<[Vec<i64>]>,
    pub(super) capacity: Rc<[Vec<i64>]>,
}

impl Memo {
    /// Forgets everything unless the answers are about `catalog`.
    pub(super) fn for_catalog(&mut self, catalog: &Arc<[InstanceType]>) {
        if !self.catalog.as_ref().is_some_and(|known| Arc::ptr_eq(known, catalog)) {
            *self = Memo { catalog: Some(catalog.clone()), ..Memo::default() };
        }
    }

    /// The first type of `catalog` named `name`. Consolidation prices every replacement's
    /// types (up to 60) after each of its questions: found by scanning, those name compares were
    /// a tenth of a 1,000-node decision.
    pub fn instance_type<'c>(&mut self, catalog: &'c Arc<[InstanceType]>, name: &str) -> Option<&'c InstanceType> {
        self.for_catalog(catalog);
        if self.by_name.is_empty() {
            for (position, instance) in catalog.iter().enumerate() {
                self.by_name.entry(instance.name.clone()).or_insert(position);
            }
        }
        catalog.get(*self.by_name.get(name)?)
    }

    /// The catalog as vectors over `dims`; every node counts once against a `nodes` limit.
    pub(super) fn vectors(&mut self, dims: &Dims, catalog: &[InstanceType], nodes: Option<usize>) -> CatalogVectors {
        if let Some(vectors) = self.vectors.as_ref().filter(|v| v.dims == dims.0) {
            return vectors.clone();
        }
        let vectors = CatalogVectors {
            dims: dims.0.clone(),
            allocatable: catalog.iter().map(|t| dims.vector(&t.allocatable)).collect(),
            capacity: catalog
                .iter()
                .map(|t| {
                    let mut capacity = dims.vector(&t.capacity);
                    if let Some(nodes) = nodes {
                        capacity[nodes] = 1;
                    }
                    capacity
                })
                .collect(),
        };
        self.vectors = Some(vectors.clone());
        vectors
    }
}
