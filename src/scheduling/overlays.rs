//! NodeOverlays applied to instance types: the user's own prices (Savings Plans, reserved
//! instances, negotiated discounts, licence fees) and extended resources the catalog cannot know.
//! Every simulation and every launch reads instance types through them, so the cost model the
//! solver minimizes and the priorities CreateFleet gets are the user's.
//!
//! An overlay's requirements select offerings: the zone, zone ID and capacity type keys are read
//! from the offering, every other key from the instance type's labels (a key the type does not
//! carry is absent). Among the overlays that select an offering, the one of highest weight (then
//! first by name) that sets a price sets it; capacity is merged resource by resource in the same
//! order, for a type any of whose offerings an overlay selects. Pure.

use kube::ResourceExt;

use super::{
    catalog::{InstanceType, OFFERING_KEYS, Offering, offering_allowed},
    requirements::Requirements,
    resources::{CPU, EPHEMERAL_STORAGE, MEMORY, PODS, Resources},
};
use crate::apis::{NodeOverlay, validation::FieldError};

/// How an overlay changes a price (dollars per hour).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PriceChange {
    /// `price`: this price, whatever the provider's.
    Set(f64),
    /// `priceAdjustment: "+0.5"` or `"-0.25"`: added to the provider's.
    Add(f64),
    /// `priceAdjustment: "-10%"`: the provider's scaled by this percentage.
    Percent(f64),
}

impl PriceChange {
    /// `price`: a non-negative decimal.
    pub fn parse_price(text: &str) -> Result<Self, String> {
        match text.trim().parse::<f64>() {
            Ok(price) if price.is_finite() && price >= 0.0 => Ok(Self::Set(price)),
            _ => Err(format!("price {text:?} is not a non-negative decimal")),
        }
    }

    /// `priceAdjustment`: a signed decimal, or a signed percentage.
    pub fn parse_adjustment(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let invalid = || format!("priceAdjustment {text:?} is not a signed decimal or percentage such as -0.5 or +10%");
        let (number, percent) = match text.strip_suffix('%') {
            Some(number) => (number, true),
            None => (text, false),
        };
        if !number.starts_with(['+', '-']) {
            return Err(invalid());
        }
        let value = number.parse::<f64>().map_err(|_| invalid())?;
        if !value.is_finite() {
            return Err(invalid());
        }
        Ok(if percent { Self::Percent(value) } else { Self::Add(value) })
    }

    /// The changed price; never below zero (a discount larger than the price makes it free).
    pub fn apply(self, price: f64) -> f64 {
        let changed = match self {
            Self::Set(price) => price,
            Self::Add(delta) => price + delta,
            Self::Percent(percent) => price * (1.0 + percent / 100.0),
        };
        changed.max(0.0)
    }
}

/// One NodeOverlay, parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct Overlay {
    pub name: String,
    pub weight: i32,
    pub requirements: Requirements,
    pub price: Option<PriceChange>,
    /// Extended resources added to a selected type's capacity and allocatable.
    pub capacity: Resources,
}

impl Overlay {
    /// The overlay a NodeOverlay describes, or what is wrong with it (what the schema cannot
    /// check: the numbers themselves, and quantities).
    pub fn from_api(overlay: &NodeOverlay) -> Result<Self, FieldError> {
        let spec = &overlay.spec;
        let invalid = |field: &'static str| move |message: String| FieldError { field: field.into(), message };
        let price = match (&spec.price, &spec.price_adjustment) {
            (Some(_), Some(_)) => {
                return Err(invalid("spec.priceAdjustment")("price and priceAdjustment are mutually exclusive".into()));
            }
            (Some(price), None) => Some(PriceChange::parse_price(price).map_err(invalid("spec.price"))?),
            (None, Some(adjustment)) => {
                Some(PriceChange::parse_adjustment(adjustment).map_err(invalid("spec.priceAdjustment"))?)
            }
            (None, None) => None,
        };
        let capacity = Resources::from_quantities(spec.capacity.iter().flatten())
            .map_err(|e| invalid("spec.capacity")(e.to_string()))?;
        if let Some((resource, _)) =
            capacity.iter().find(|(name, _)| [CPU, MEMORY, PODS, EPHEMERAL_STORAGE].contains(name))
        {
            return Err(invalid("spec.capacity")(format!(
                "{resource} comes from the instance type; an overlay adds extended resources only"
            )));
        }
        Ok(Self {
            name: overlay.name_any(),
            weight: spec.weight.unwrap_or(0),
            requirements: Requirements::from_api(&spec.requirements),
            price,
            capacity,
        })
    }

    /// Whether the overlay selects the type on its own labels (the offering keys aside). Unlike
    /// a NodePool's requirements, a key the type does not carry is absent, never assumed: an
    /// overlay describes types, not the nodes a pool labels.
    fn selects_type(&self, instance: &InstanceType) -> bool {
        self.requirements
            .iter()
            .filter(|(key, _)| !OFFERING_KEYS.contains(&key.as_str()))
            .all(|(key, requirement)| requirement.admits(instance.labels.get(key).map(String::as_str)))
    }

    /// Whether the overlay selects one offering of a type it selects.
    fn selects_offering(&self, offering: &Offering) -> bool {
        offering_allowed(offering, &self.requirements)
    }
}

/// The overlays in effect: every one that parses, in precedence order (an invalid one is left
/// out, and said so by its status).
pub fn in_effect<'a>(overlays: impl IntoIterator<Item = &'a NodeOverlay>) -> Vec<Overlay> {
    by_precedence(overlays.into_iter().filter_map(|overlay| Overlay::from_api(overlay).ok()).collect())
}

/// The overlays in the order they take precedence: highest weight first, then by name.
pub fn by_precedence(mut overlays: Vec<Overlay>) -> Vec<Overlay> {
    overlays.sort_by(|a, b| b.weight.cmp(&a.weight).then_with(|| a.name.cmp(&b.name)));
    overlays
}

/// Applies overlays, given in precedence order ([`by_precedence`]), to instance types. Returns
/// whether any price changed (launches then follow the overlaid prices rather than EC2's).
pub fn apply(types: &mut [InstanceType], overlays: &[Overlay]) -> bool {
    let mut repriced = false;
    for instance in types.iter_mut() {
        let selecting: Vec<&Overlay> = overlays.iter().filter(|o| o.selects_type(instance)).collect();
        if selecting.is_empty() {
            continue;
        }
        // Lowest precedence first, so the heaviest overlay's amount is the one left.
        let mut added = Resources::new();
        for overlay in selecting.iter().rev() {
            if instance.offerings.iter().any(|offering| overlay.selects_offering(offering)) {
                for (resource, amount) in overlay.capacity.iter() {
                    added.set(resource, amount);
                }
            }
        }
        for (resource, amount) in added.iter() {
            instance.capacity.set(resource, amount);
            instance.allocatable.set(resource, amount);
        }
        for offering in &mut instance.offerings {
            let change = selecting.iter().filter(|o| o.selects_offering(offering)).find_map(|o| o.price);
            if let Some(change) = change {
                offering.price = change.apply(offering.price);
                repriced = true;
            }
        }
    }
    repriced
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        apis::labels,
        scheduling::{requirements::Requirement, resources::CPU},
    };

    fn offering(zone: &str, capacity_type: &str, price: f64) -> Offering {
        Offering {
            zone: zone.into(),
            zone_id: String::new(),
            capacity_type: capacity_type.into(),
            price,
            available: true,
            reservation_id: None,
            capacity_block: false,
        }
    }

    fn instance(name: &str, family: &str) -> InstanceType {
        let labels = [
            (labels::INSTANCE_TYPE.to_owned(), name.to_owned()),
            (labels::INSTANCE_FAMILY.to_owned(), family.to_owned()),
        ]
        .into();
        let resources: Resources = [(CPU.to_owned(), 2000)].into_iter().collect();
        let offerings = vec![offering("us-east-1a", "on-demand", 0.1), offering("us-east-1a", "spot", 0.04)];
        InstanceType::new(name.into(), labels, resources.clone(), resources, offerings)
    }

    fn overlay(name: &str, weight: i32, requirements: &[(&str, Requirement)], price: Option<PriceChange>) -> Overlay {
        let mut selected = Requirements::new();
        for (key, requirement) in requirements {
            selected.add(key, requirement.clone());
        }
        Overlay { name: name.into(), weight, requirements: selected, price, capacity: Resources::new() }
    }

    fn prices(instance: &InstanceType) -> Vec<f64> {
        instance.offerings.iter().map(|o| (o.price * 1000.0).round() / 1000.0).collect()
    }

    #[test]
    fn prices_parse_as_the_api_documents_them() {
        assert_eq!(PriceChange::parse_price("0.05"), Ok(PriceChange::Set(0.05)));
        assert!(PriceChange::parse_price("-1").is_err());
        assert!(PriceChange::parse_price("cheap").is_err());
        assert_eq!(PriceChange::parse_adjustment("-10%"), Ok(PriceChange::Percent(-10.0)));
        assert_eq!(PriceChange::parse_adjustment("+0.5"), Ok(PriceChange::Add(0.5)));
        assert!(PriceChange::parse_adjustment("0.5").is_err(), "the sign says which way");
        assert!(PriceChange::parse_adjustment("+inf").is_err());
        assert_eq!(PriceChange::Add(-1.0).apply(0.1), 0.0, "never below zero");
        assert!((PriceChange::Percent(-20.0).apply(0.1) - 0.08).abs() < 1e-12);
    }

    #[test]
    fn the_heaviest_selecting_overlay_sets_each_offerings_price() {
        let mut types = vec![instance("m5.large", "m5"), instance("c5.large", "c5")];
        let overlays = by_precedence(vec![
            overlay("all-ten-percent-off", 1, &[], Some(PriceChange::Percent(-10.0))),
            overlay(
                "m5-savings-plan",
                10,
                &[
                    (labels::INSTANCE_FAMILY, Requirement::one_of(["m5"])),
                    (labels::CAPACITY_TYPE, Requirement::one_of(["on-demand"])),
                ],
                Some(PriceChange::Set(0.05)),
            ),
            // Same weight, later by name: loses to the savings plan where both select.
            overlay(
                "zz-fee",
                10,
                &[(labels::INSTANCE_FAMILY, Requirement::one_of(["m5"]))],
                Some(PriceChange::Add(0.5)),
            ),
        ]);
        assert!(apply(&mut types, &overlays));
        assert_eq!(prices(&types[0]), [0.05, 0.54], "on-demand from the plan, spot from the fee");
        assert_eq!(prices(&types[1]), [0.09, 0.036], "everything else ten percent off");
    }

    #[test]
    fn capacity_merges_by_precedence_and_unknown_labels_select_nothing() {
        let mut types = vec![instance("m5.large", "m5")];
        let mut hugepages = overlay("hugepages", 5, &[], None);
        hugepages.capacity =
            [("hugepages-2Mi".to_owned(), 100 << 20), ("example.com/slice".to_owned(), 2)].into_iter().collect();
        let mut slices = overlay("slices", 9, &[], None);
        slices.capacity = [("example.com/slice".to_owned(), 4)].into_iter().collect();
        let mut elsewhere = overlay("team-only", 20, &[("team", Requirement::one_of(["web"]))], None);
        elsewhere.capacity = [("example.com/slice".to_owned(), 99)].into_iter().collect();
        let mut other_zone = overlay("other-zone", 30, &[(labels::ZONE, Requirement::one_of(["us-east-1b"]))], None);
        other_zone.capacity = [("example.com/slice".to_owned(), 77)].into_iter().collect();
        let overlays = by_precedence(vec![hugepages, slices, elsewhere, other_zone]);
        assert!(!apply(&mut types, &overlays), "no price changed");
        assert_eq!(types[0].allocatable.get("example.com/slice"), 4);
        assert_eq!(types[0].capacity.get("hugepages-2Mi"), 100 << 20);
        assert_eq!(types[0].allocatable.get(CPU), 2000, "what the type had stays");
    }
}
