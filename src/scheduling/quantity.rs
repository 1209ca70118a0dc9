//! Exact parsing of Kubernetes quantities (`500m`, `1.5Gi`, `2e3`, `128974848`) into integers of a
//! chosen scale: millicores for CPU, bytes for memory and storage, plain counts otherwise.
//!
//! Floats never touch these numbers: `0.1 + 0.2` CPUs must be exactly `300m`. A quantity is read
//! as an integer mantissa over a power of ten, times its suffix's multiplier, and divided with
//! rounding up, as Kubernetes does when it converts a quantity to a smaller scale.

/// Why a quantity string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid quantity {0:?}: expected a number with an optional suffix such as 500m, 2, 1.5Gi or 1e3")]
pub struct QuantityError(pub String);

/// Parses `text` and returns its value times `scale` (1000 for millicores), rounded up.
pub fn parse_scaled(text: &str, scale: i128) -> Result<i64, QuantityError> {
    let error = || QuantityError(text.to_owned());
    let text = text.trim();
    let (negative, unsigned) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let number_end = unsigned.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(unsigned.len());
    let (number, suffix) = unsigned.split_at(number_end);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() || fraction.contains('.') || whole.len() + fraction.len() > 30 {
        return Err(error());
    }
    let mantissa: i128 = format!("{whole}{fraction}").parse().map_err(|_| error())?;
    // value = mantissa * numerator / denominator
    let mut numerator: i128 = scale;
    let mut denominator: i128 =
        10i128.checked_pow(u32::try_from(fraction.len()).map_err(|_| error())?).ok_or_else(error)?;
    let mut power_of_ten = |exponent: i32| -> Option<()> {
        let factor = 10i128.checked_pow(exponent.unsigned_abs())?;
        if exponent >= 0 {
            numerator = numerator.checked_mul(factor)?;
        } else {
            denominator = denominator.checked_mul(factor)?;
        }
        Some(())
    };
    let binary = |power: u32| 1024i128.pow(power);
    match suffix {
        "" => {}
        "n" => power_of_ten(-9).ok_or_else(error)?,
        "u" => power_of_ten(-6).ok_or_else(error)?,
        "m" => power_of_ten(-3).ok_or_else(error)?,
        "k" => power_of_ten(3).ok_or_else(error)?,
        "M" => power_of_ten(6).ok_or_else(error)?,
        "G" => power_of_ten(9).ok_or_else(error)?,
        "T" => power_of_ten(12).ok_or_else(error)?,
        "P" => power_of_ten(15).ok_or_else(error)?,
        "E" => power_of_ten(18).ok_or_else(error)?,
        "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei" => {
            let power = "KMGTPE".find(&suffix[..1]).map(|i| i as u32 + 1).ok_or_else(error)?;
            numerator = numerator.checked_mul(binary(power)).ok_or_else(error)?;
        }
        exponent if exponent.starts_with(['e', 'E']) => {
            let exponent: i32 = exponent[1..].parse().map_err(|_| error())?;
            if exponent.abs() > 30 {
                return Err(error());
            }
            power_of_ten(exponent).ok_or_else(error)?;
        }
        _ => return Err(error()),
    }
    let product = mantissa.checked_mul(numerator).ok_or_else(error)?;
    // Round away from zero, as Kubernetes does when a quantity loses precision.
    let magnitude = product / denominator + i128::from(product % denominator != 0);
    let value = if negative { -magnitude } else { magnitude };
    i64::try_from(value).map_err(|_| error())
}

/// The integer scale of a resource: millicores for `cpu`, base units for everything else.
pub fn scale_of(resource: &str) -> i128 {
    if resource == "cpu" { 1000 } else { 1 }
}

/// Parses the quantity of `resource` in its integer scale (see [`scale_of`]).
pub fn parse_resource(resource: &str, text: &str) -> Result<i64, QuantityError> {
    parse_scaled(text, scale_of(resource))
}

/// Formats an integer amount of `resource` back into a quantity string.
pub fn format_resource(resource: &str, amount: i64) -> String {
    if resource == "cpu" {
        if amount % 1000 == 0 { (amount / 1000).to_string() } else { format!("{amount}m") }
    } else if amount != 0 && amount % (1 << 30) == 0 {
        format!("{}Gi", amount >> 30)
    } else if amount != 0 && amount % (1 << 20) == 0 {
        format!("{}Mi", amount >> 20)
    } else if amount != 0 && amount % (1 << 10) == 0 {
        format!("{}Ki", amount >> 10)
    } else {
        amount.to_string()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn cpu_in_millicores() {
        for (text, millis) in [
            ("1", 1000),
            ("500m", 500),
            ("0.5", 500),
            ("1.5", 1500),
            (".1", 100),
            ("2.", 2000),
            ("100u", 1),
            ("1n", 1),
            ("1e3", 1_000_000),
            ("1E-3", 1),
            ("0.0001", 1),
            ("+2", 2000),
            ("-250m", -250),
        ] {
            assert_eq!(parse_resource("cpu", text), Ok(millis), "{text}");
        }
    }

    #[test]
    fn memory_in_bytes() {
        for (text, bytes) in [
            ("128974848", 128_974_848),
            ("129e6", 129_000_000),
            ("129M", 129_000_000),
            ("123Mi", 123 * 1024 * 1024),
            ("1.5Gi", 3 * 512 * 1024 * 1024),
            ("1Ki", 1024),
            ("1k", 1000),
            ("4Ti", 4 << 40),
            ("2Ei", 2 << 60),
            ("1500m", 2),
        ] {
            assert_eq!(parse_resource("memory", text), Ok(bytes), "{text}");
        }
    }

    #[test]
    fn rejects_what_kubernetes_rejects() {
        for text in ["", "abc", "1.2.3", "1Gb", "1 Gi", "Gi", "1ki", "1e", "--1", "1e400", "9Ei"] {
            assert!(parse_resource("memory", text).is_err(), "{text}");
        }
    }

    #[test]
    fn formats_back() {
        assert_eq!(format_resource("cpu", 1500), "1500m");
        assert_eq!(format_resource("cpu", 2000), "2");
        assert_eq!(format_resource("memory", 3 << 29), "1536Mi");
        assert_eq!(format_resource("memory", 1000), "1000");
        assert_eq!(format_resource("pods", 110), "110");
    }

    proptest! {
        #[test]
        fn formatted_amounts_parse_to_themselves(amount in 0i64..(1 << 50), cpu in any::<bool>()) {
            let resource = if cpu { "cpu" } else { "memory" };
            prop_assert_eq!(parse_resource(resource, &format_resource(resource, amount)), Ok(amount));
        }

        #[test]
        fn decimal_fractions_are_exact(whole in 0u32..10_000, tenths in 0u32..10) {
            // n.d CPUs is exactly n*1000 + d*100 millicores, with no float drift.
            let text = format!("{whole}.{tenths}");
            prop_assert_eq!(parse_resource("cpu", &text), Ok(i64::from(whole) * 1000 + i64::from(tenths) * 100));
        }
    }
}
