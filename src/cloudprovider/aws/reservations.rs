//! On-Demand Capacity Reservations as offerings. Pure.
//!
//! A node class's resolved reservations become `reserved` offerings of their instance type in
//! their zone, priced at a ten-millionth of on-demand: the instances are already paid for, so
//! the simulation takes them before anything else while still preferring the smaller of two
//! reserved types. How many instances each reservation can still take is kept in
//! [`ReservationRoom`]: EC2's count when the node class was last resolved, less the launches
//! stoker made into it since, plus the instances it terminated; a reservation EC2 reported full
//! (`ReservationCapacityExceeded`) has none until the next resolution. A reserved offering is
//! available while its reservation has room.

use std::collections::HashMap;

use crate::{
    apis::{ec2nodeclass::ResolvedCapacityReservation, labels},
    scheduling::catalog::{InstanceType, Offering},
};

/// A reserved offering's price as a fraction of the type's on-demand price in its zone.
pub const RESERVED_PRICE_FACTOR: f64 = 1e-7;

/// How many more instances each reservation can take, by reservation ID.
#[derive(Debug, Clone, Default)]
pub struct ReservationRoom {
    available: HashMap<String, i64>,
}

impl ReservationRoom {
    /// Whether the reservation can take another instance. One stoker has not heard of yet (its
    /// class resolved before this process started) is taken to have room: a launch into a full
    /// one fails cleanly and marks it.
    pub fn has_room(&self, id: &str) -> bool {
        self.available.get(id).is_none_or(|left| *left > 0)
    }

    /// Takes the counts EC2 reported. Returns whether any reservation's room came or went.
    pub fn record(&mut self, counts: impl IntoIterator<Item = (String, i64)>) -> bool {
        let mut changed = false;
        for (id, available) in counts {
            let before = self.has_room(&id);
            self.available.insert(id.clone(), available.max(0));
            changed |= before != self.has_room(&id);
        }
        changed
    }

    /// An instance launched into the reservation. Returns whether its room ran out.
    pub fn launched(&mut self, id: &str) -> bool {
        self.adjust(id, |left| left.saturating_sub(1).max(0))
    }

    /// EC2 refused a launch into the reservation: full until the next count says otherwise.
    pub fn full(&mut self, id: &str) -> bool {
        self.adjust(id, |_| 0)
    }

    /// An instance in the reservation was terminated. Returns whether room came back.
    pub fn released(&mut self, id: &str) -> bool {
        // Unknown stays unknown (it already counts as having room).
        if !self.available.contains_key(id) {
            return false;
        }
        self.adjust(id, |left| left.saturating_add(1))
    }

    fn adjust(&mut self, id: &str, change: impl FnOnce(i64) -> i64) -> bool {
        let before = self.has_room(id);
        let left = self.available.get(id).copied().unwrap_or(1);
        self.available.insert(id.to_owned(), change(left));
        before != self.has_room(id)
    }
}

/// Adds a `reserved` offering for each reservation to its instance type, in its zone, priced
/// from the type's on-demand offering there (a reservation for a type or zone the node class
/// cannot launch adds nothing, nor does one that is `scheduled`, not started yet, or a Capacity
/// Block its class resolved as `expiring`: its nodes are being drained).
pub fn add_reserved_offerings(
    types: &mut [InstanceType],
    reservations: &[ResolvedCapacityReservation],
    room: &ReservationRoom,
) {
    for reservation in reservations.iter().filter(|r| r.launchable()) {
        let Some(instance) = types.iter_mut().find(|t| t.name == reservation.instance_type) else { continue };
        let on_demand = instance
            .offerings
            .iter()
            .find(|o| o.capacity_type == labels::CAPACITY_TYPE_ON_DEMAND && o.zone == reservation.availability_zone);
        let Some(on_demand) = on_demand else { continue };
        let reserved = Offering {
            zone: on_demand.zone.clone(),
            zone_id: on_demand.zone_id.clone(),
            capacity_type: labels::CAPACITY_TYPE_RESERVED.to_owned(),
            price: on_demand.price * RESERVED_PRICE_FACTOR,
            available: room.has_room(&reservation.id),
            reservation_id: Some(reservation.id.clone()),
            capacity_block: reservation.is_capacity_block(),
        };
        instance.offerings.push(reserved);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apis::ec2nodeclass::{RESERVATION_EXPIRING, RESERVATION_SCHEDULED};
    use crate::scheduling::{
        catalog::offering_allowed,
        requirements::{Requirement, Requirements},
    };

    fn types() -> Vec<InstanceType> {
        let offering = |zone: &str, capacity_type: &str, price: f64| Offering {
            zone: zone.into(),
            zone_id: format!("use1-{zone}"),
            capacity_type: capacity_type.into(),
            price,
            available: true,
            reservation_id: None,
            capacity_block: false,
        };
        ["m5.large", "m5.xlarge"]
            .iter()
            .zip([0.096, 0.192])
            .map(|(name, price)| {
                let mut instance = InstanceType::new(
                    (*name).to_owned(),
                    Default::default(),
                    crate::scheduling::resources::Resources::default(),
                    crate::scheduling::resources::Resources::default(),
                    vec![offering("a", "on-demand", price), offering("a", "spot", price / 3.0)],
                );
                instance.offerings.push(offering("b", "on-demand", price));
                instance
            })
            .collect()
    }

    #[test]
    fn a_reservation_is_the_cheapest_offering_of_its_type_and_zone() {
        let mut types = types();
        let reservations = [
            ResolvedCapacityReservation::of("cr-1", "m5.large", "a"),
            ResolvedCapacityReservation::of("cr-2", "m5.xlarge", "a"),
        ];
        add_reserved_offerings(&mut types, &reservations, &ReservationRoom::default());
        let reserved = types[0].cheapest_offering(&Requirements::default()).expect("an offering");
        assert_eq!(reserved.capacity_type, "reserved");
        assert_eq!(reserved.reservation_id.as_deref(), Some("cr-1"));
        assert_eq!((reserved.zone.as_str(), reserved.zone_id.as_str()), ("a", "use1-a"));
        // The smaller reserved type stays the cheaper one.
        let xlarge = types[1].cheapest_offering(&Requirements::default()).expect("an offering");
        assert!(reserved.price < xlarge.price && xlarge.price < 0.096 / 3.0);
        // A pool that allows only on-demand and spot never sees it.
        let mut on_demand_only = Requirements::default();
        on_demand_only.add(labels::CAPACITY_TYPE, Requirement::one_of(["on-demand", "spot"]));
        assert!(!offering_allowed(reserved, &on_demand_only));
        // Nor does a requirement on another reservation.
        let mut other = Requirements::default();
        other.add(labels::CAPACITY_RESERVATION_ID, Requirement::one_of(["cr-9"]));
        assert!(!offering_allowed(reserved, &other));
        assert_eq!(types[0].cheapest_offering(&other), None);
    }

    #[test]
    fn a_capacity_block_is_a_reserved_offering_of_its_own_type_until_it_drains() {
        let mut types = types();
        let block = ResolvedCapacityReservation {
            reservation_type: "capacity-block".into(),
            ..ResolvedCapacityReservation::of("cr-1", "m5.large", "a")
        };
        let ordinary = ResolvedCapacityReservation::of("cr-2", "m5.large", "b");
        add_reserved_offerings(&mut types, &[block.clone(), ordinary], &ReservationRoom::default());
        let reserved: Vec<&Offering> = types[0].offerings.iter().filter(|o| o.reservation_id.is_some()).collect();
        assert_eq!(reserved.len(), 2);
        assert_eq!(reserved[0].reservation_type(), Some("capacity-block"));
        assert_eq!(reserved[1].reservation_type(), Some("default"));
        assert_eq!(types[0].offerings[0].reservation_type(), None, "only a reserved offering has a type");
        let mut blocks_only = Requirements::default();
        blocks_only.add(labels::CAPACITY_RESERVATION_TYPE, Requirement::one_of(["capacity-block"]));
        let chosen = types[0].cheapest_offering(&blocks_only).expect("the block");
        assert_eq!(chosen.reservation_id.as_deref(), Some("cr-1"));
        let mut no_blocks = Requirements::default();
        no_blocks.add(labels::CAPACITY_RESERVATION_TYPE, Requirement::one_of(["default"]));
        assert_eq!(types[0].cheapest_offering(&no_blocks).and_then(|o| o.reservation_id.as_deref()), Some("cr-2"));

        // Draining: nothing more launches into it.
        let mut types = self::types();
        let before = types.clone();
        let expiring = ResolvedCapacityReservation { state: RESERVATION_EXPIRING.into(), ..block.clone() };
        add_reserved_offerings(&mut types, &[expiring], &ReservationRoom::default());
        assert_eq!(types, before);
        // Not started: nothing launches into it yet.
        let scheduled = ResolvedCapacityReservation {
            state: RESERVATION_SCHEDULED.into(),
            start_time: Some("2026-12-08T11:30:00Z".into()),
            ..block
        };
        add_reserved_offerings(&mut types, &[scheduled], &ReservationRoom::default());
        assert_eq!(types, before);
    }

    #[test]
    fn a_reservation_for_a_type_or_zone_the_class_lacks_adds_nothing() {
        let mut types = types();
        let before = types.clone();
        add_reserved_offerings(
            &mut types,
            &[
                ResolvedCapacityReservation::of("cr-1", "p5.48xlarge", "a"),
                ResolvedCapacityReservation::of("cr-2", "m5.large", "z"),
            ],
            &ReservationRoom::default(),
        );
        assert_eq!(types, before);
    }

    #[test]
    fn room_follows_counts_launches_refusals_and_terminations() {
        let mut room = ReservationRoom::default();
        assert!(room.has_room("cr-1"), "unknown reservations are tried");
        assert!(!room.record([("cr-1".to_owned(), 2)]));
        assert!(!room.launched("cr-1"));
        assert!(room.launched("cr-1"), "the second launch takes the last place");
        assert!(!room.has_room("cr-1"));
        assert!(!room.launched("cr-1"), "never below zero");
        assert!(room.released("cr-1"));
        assert!(room.has_room("cr-1"));
        assert!(room.full("cr-1"), "EC2's refusal wins over the count");
        assert!(room.record([("cr-1".to_owned(), 3)]), "a new count brings room back");
        assert!(!room.released("cr-unknown"));
        assert!(room.record([("cr-2".to_owned(), -4)]));
        assert!(!room.has_room("cr-2"));
    }

    #[test]
    fn a_full_reservation_offers_nothing_available() {
        let mut types = types();
        let mut room = ReservationRoom::default();
        room.record([("cr-1".to_owned(), 0)]);
        add_reserved_offerings(&mut types, &[ResolvedCapacityReservation::of("cr-1", "m5.large", "a")], &room);
        let reserved = types[0].offerings.iter().find(|o| o.capacity_type == "reserved").expect("reserved");
        assert!(!reserved.available);
        assert_eq!(
            types[0].cheapest_offering(&Requirements::default()).map(|o| o.capacity_type.as_str()),
            Some("spot")
        );
    }
}
