//! Resources as dense integer vectors, one position per resource name of the batch: the inner
//! loop compares and adds these instead of maps of quantities. Sums saturate, since requests are
//! user input and a wrapped sum would look like room.

use crate::scheduling::resources::Resources;

/// Resource names mapped to positions in dense vectors.
pub(super) struct Dims(pub(super) Vec<String>);

impl Dims {
    pub(super) fn vector(&self, resources: &Resources) -> Vec<i64> {
        self.0.iter().map(|name| resources.get(name)).collect()
    }
}

pub(super) fn fits(needed: &[i64], available: &[i64]) -> bool {
    needed.iter().zip(available).all(|(n, a)| n <= a)
}

/// `target += times × amount`, componentwise.
pub(super) fn accumulate(target: &mut [i64], amount: &[i64], times: i64) {
    for (sum, value) in target.iter_mut().zip(amount) {
        *sum = sum.saturating_add(times.saturating_mul(*value));
    }
}

/// How many times `amount` fits in `room` (unbounded when it asks for nothing).
pub(super) fn times_within(amount: &[i64], room: &[i64]) -> usize {
    amount
        .iter()
        .zip(room)
        .filter(|(a, _)| **a > 0)
        .map(|(a, r)| usize::try_from(r / a).unwrap_or(0))
        .min()
        .unwrap_or(usize::MAX)
}

pub(super) fn plus(a: &[i64], b: &[i64]) -> Vec<i64> {
    a.iter().zip(b).map(|(x, y)| x.saturating_add(*y)).collect()
}
