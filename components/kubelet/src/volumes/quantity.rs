//! Just enough of `resource.Quantity` for the downward API and tmpfs sizes: a quantity's `Value()` and
//! `MilliValue()` (both rounded up, as Kubernetes rounds them).

/// A quantity in billionths of its unit: exact for every suffix (`n` is the finest); finer decimal fractions round
/// up. `None` for text that is not a quantity or does not fit.
pub(crate) fn nanos(quantity: &str) -> Option<i128> {
    let text = quantity.trim();
    let (sign, rest) = match text.strip_prefix('-') {
        Some(rest) => (-1, rest),
        None => (1, text.strip_prefix('+').unwrap_or(text)),
    };
    let end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
    let (number, suffix) = rest.split_at(end);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() {
        return None;
    }
    let mut value: i128 = format!("{whole}{fraction}").parse().ok()?;
    let mut exponent = 9 - i32::try_from(fraction.len()).ok()?;
    let mut multiplier = 1i128;
    let binary = |power: u32| 1i128 << (10 * power);
    match suffix {
        "" => {}
        "Ki" => multiplier = binary(1),
        "Mi" => multiplier = binary(2),
        "Gi" => multiplier = binary(3),
        "Ti" => multiplier = binary(4),
        "Pi" => multiplier = binary(5),
        "Ei" => multiplier = binary(6),
        "n" => exponent -= 9,
        "u" => exponent -= 6,
        "m" => exponent -= 3,
        "k" => exponent += 3,
        "M" => exponent += 6,
        "G" => exponent += 9,
        "T" => exponent += 12,
        "P" => exponent += 15,
        "E" => exponent += 18,
        other if other.starts_with(['e', 'E']) => exponent += other[1..].parse::<i32>().ok()?,
        _ => return None,
    }
    value = value.checked_mul(multiplier)?;
    if exponent >= 0 {
        value = value.checked_mul(10i128.checked_pow(u32::try_from(exponent).ok()?)?)?;
    } else {
        let divisor = 10i128.checked_pow(u32::try_from(-exponent).ok()?)?;
        value = (value + divisor - 1).div_euclid(divisor);
    }
    Some(sign * value)
}

/// `Quantity.Value()`: whole units, rounded up.
pub(crate) fn value(quantity: &str) -> Option<i128> {
    nanos(quantity).map(|n| ceil_div(n, 1_000_000_000))
}

/// `Quantity.MilliValue()`: thousandths, rounded up.
pub(crate) fn milli_value(quantity: &str) -> Option<i128> {
    nanos(quantity).map(|n| ceil_div(n, 1_000_000))
}

/// `ceil(a / b)` for a positive `b`.
pub(crate) fn ceil_div(a: i128, b: i128) -> i128 {
    let quotient = a.div_euclid(b);
    if a.rem_euclid(b) == 0 { quotient } else { quotient + 1 }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn values_and_milli_values_round_up() {
        assert_eq!(value("128Mi"), Some(134_217_728));
        assert_eq!(value("1G"), Some(1_000_000_000));
        assert_eq!(value("1.5"), Some(2));
        assert_eq!(value("100m"), Some(1));
        assert_eq!(milli_value("100m"), Some(100));
        assert_eq!(milli_value("2"), Some(2000));
        assert_eq!(milli_value("1n"), Some(1));
        assert_eq!(value("1e3"), Some(1000));
        assert_eq!(value("0"), Some(0));
        assert_eq!(value("x"), None);
        assert_eq!(value("1Qi"), None);
    }
}
