//! Offerings and subnets that recently failed to launch, remembered for a while (3 minutes by
//! default, as Karpenter does) so the next attempt and the next simulation skip them.
//!
//! Pure: the caller passes the clock in. Entries expire lazily.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

/// What a failure marks unavailable.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Offering {
        instance_type: String,
        zone: String,
        capacity_type: String,
    },
    /// Every offering of a capacity type (for example, the account's spot instance limit).
    CapacityType(String),
    Subnet(String),
}

#[derive(Debug, Clone)]
pub struct UnavailableOfferings {
    ttl: Duration,
    until: HashMap<Key, Instant>,
}

impl UnavailableOfferings {
    pub fn new(ttl: Duration) -> Self {
        Self { ttl, until: HashMap::new() }
    }

    pub fn mark_offering(&mut self, instance_type: &str, zone: &str, capacity_type: &str, now: Instant) {
        let key = Key::Offering {
            instance_type: instance_type.into(),
            zone: zone.into(),
            capacity_type: capacity_type.into(),
        };
        self.until.insert(key, now + self.ttl);
    }

    pub fn mark_capacity_type(&mut self, capacity_type: &str, now: Instant) {
        self.until.insert(Key::CapacityType(capacity_type.into()), now + self.ttl);
    }

    pub fn mark_subnet(&mut self, subnet: &str, now: Instant) {
        self.until.insert(Key::Subnet(subnet.into()), now + self.ttl);
    }

    pub fn is_unavailable(&self, instance_type: &str, zone: &str, capacity_type: &str, now: Instant) -> bool {
        let offering = Key::Offering {
            instance_type: instance_type.into(),
            zone: zone.into(),
            capacity_type: capacity_type.into(),
        };
        self.active(&offering, now) || self.active(&Key::CapacityType(capacity_type.into()), now)
    }

    pub fn subnet_unavailable(&self, subnet: &str, now: Instant) -> bool {
        self.active(&Key::Subnet(subnet.into()), now)
    }

    /// Live entries (the `stoker_unavailable_offerings` gauge); drops expired ones.
    pub fn len(&mut self, now: Instant) -> usize {
        self.until.retain(|_, until| *until > now);
        self.until.len()
    }

    pub fn is_empty(&mut self, now: Instant) -> bool {
        self.len(now) == 0
    }

    /// When the next live entry expires: until then, answers about offerings stay the same.
    pub fn next_expiry(&self, now: Instant) -> Option<Instant> {
        self.until.values().copied().filter(|until| *until > now).min()
    }

    fn active(&self, key: &Key, now: Instant) -> bool {
        self.until.get(key).is_some_and(|until| *until > now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_expire_after_the_ttl() {
        let start = Instant::now();
        let mut cache = UnavailableOfferings::new(Duration::from_secs(180));
        cache.mark_offering("m5.large", "us-east-1a", "spot", start);
        assert!(cache.is_unavailable("m5.large", "us-east-1a", "spot", start));
        assert!(!cache.is_unavailable("m5.large", "us-east-1a", "on-demand", start));
        assert!(!cache.is_unavailable("m5.large", "us-east-1b", "spot", start));
        assert!(cache.is_unavailable("m5.large", "us-east-1a", "spot", start + Duration::from_secs(179)));
        assert!(!cache.is_unavailable("m5.large", "us-east-1a", "spot", start + Duration::from_secs(180)));
        assert_eq!(cache.len(start + Duration::from_secs(180)), 0);
    }

    #[test]
    fn the_next_expiry_is_the_earliest_live_mark() {
        let start = Instant::now();
        let mut cache = UnavailableOfferings::new(Duration::from_secs(180));
        assert_eq!(cache.next_expiry(start), None);
        cache.mark_offering("m5.large", "us-east-1a", "spot", start);
        cache.mark_subnet("subnet-1", start + Duration::from_secs(60));
        assert_eq!(cache.next_expiry(start), Some(start + Duration::from_secs(180)));
        assert_eq!(cache.next_expiry(start + Duration::from_secs(200)), Some(start + Duration::from_secs(240)));
        assert_eq!(cache.next_expiry(start + Duration::from_secs(240)), None);
    }

    #[test]
    fn a_capacity_type_mark_covers_every_offering_of_it() {
        let now = Instant::now();
        let mut cache = UnavailableOfferings::new(Duration::from_secs(180));
        cache.mark_capacity_type("spot", now);
        assert!(cache.is_unavailable("c7g.large", "us-east-1c", "spot", now));
        assert!(!cache.is_unavailable("c7g.large", "us-east-1c", "on-demand", now));
        cache.mark_subnet("subnet-1", now);
        assert!(cache.subnet_unavailable("subnet-1", now));
        assert!(!cache.subnet_unavailable("subnet-2", now));
        assert_eq!(cache.len(now), 2);
    }
}
