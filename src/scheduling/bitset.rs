//! A fixed-size set of small integers (instance type indices), for the solver's inner loop.

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BitSet(Vec<u64>);

impl BitSet {
    pub fn empty(len: usize) -> Self {
        Self(vec![0; len.div_ceil(64)])
    }

    pub fn insert(&mut self, index: usize) {
        self.0[index / 64] |= 1 << (index % 64);
    }

    pub fn remove(&mut self, index: usize) {
        self.0[index / 64] &= !(1 << (index % 64));
    }

    pub fn intersect_with(&mut self, other: &Self) {
        for (word, theirs) in self.0.iter_mut().zip(&other.0) {
            *word &= theirs;
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|word| *word == 0)
    }

    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.0.iter().enumerate().flat_map(|(index, word)| {
            let mut bits = *word;
            std::iter::from_fn(move || {
                (bits != 0).then(|| {
                    let bit = bits.trailing_zeros() as usize;
                    bits &= bits - 1;
                    index * 64 + bit
                })
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_operations() {
        let mut a = BitSet::empty(130);
        for i in [0, 63, 64, 129] {
            a.insert(i);
        }
        assert_eq!(a.iter().collect::<Vec<_>>(), [0, 63, 64, 129]);
        let mut b = BitSet::empty(130);
        (0..130).filter(|i| *i != 63).for_each(|i| b.insert(i));
        a.intersect_with(&b);
        assert_eq!(a.iter().collect::<Vec<_>>(), [0, 64, 129]);
        assert!(BitSet::empty(10).is_empty());
        assert_eq!(b.iter().count(), 129);
    }
}
