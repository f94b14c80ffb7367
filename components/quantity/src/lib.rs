//! Kubernetes resource quantities, as Kubernetes writes them (`100m`, `1.5`, `512Mi`, `1G`, `1e3`), as exact
//! integers: one parser for every component that reads requests, limits, capacities and sizes.

/// A quantity in thousandths of its unit (millicores for cpu, millibytes otherwise), so that every quantity
/// Kubernetes accepts is an exact integer. `None` for text that is not a quantity.
pub fn milli(q: &str) -> Option<i128> {
    let q = q.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(q.len());
    let (number, suffix) = q.split_at(split);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let negative = whole.starts_with('-');
    let whole = whole.trim_start_matches(['+', '-']);
    if (whole.is_empty() && fraction.is_empty())
        || !whole.chars().chain(fraction.chars()).all(|c| c.is_ascii_digit())
    {
        return None;
    }
    // The number scaled by 10^9, to keep fractions exact before the suffix multiplies them.
    let mut nanos: i128 = whole.parse::<i128>().unwrap_or(0) * 1_000_000_000;
    let digits: String = fraction.chars().take(9).collect();
    if !digits.is_empty() {
        nanos += digits.parse::<i128>().ok()? * 10i128.pow(9 - digits.len() as u32);
    }
    let (num, den): (i128, i128) = match suffix {
        "" => (1, 1),
        "n" => (1, 1_000_000_000),
        "u" => (1, 1_000_000),
        "m" => (1, 1_000),
        "k" => (1_000, 1),
        "M" => (1_000_000, 1),
        "G" => (1_000_000_000, 1),
        "T" => (1_000_000_000_000, 1),
        "P" => (1_000_000_000_000_000, 1),
        "E" => (1_000_000_000_000_000_000, 1),
        "Ki" => (1 << 10, 1),
        "Mi" => (1 << 20, 1),
        "Gi" => (1 << 30, 1),
        "Ti" => (1 << 40, 1),
        "Pi" => (1 << 50, 1),
        "Ei" => (1 << 60, 1),
        e if e.starts_with(['e', 'E']) => {
            let exp: i32 = e[1..].parse().ok()?;
            if exp >= 0 {
                (10i128.checked_pow(exp as u32)?, 1)
            } else {
                (1, 10i128.checked_pow((-exp) as u32)?)
            }
        }
        _ => return None,
    };
    // milli = number * num / den * 1000 = nanos * num * 1000 / (den * 10^9), rounded up as Kubernetes does.
    let top = nanos.checked_mul(num)?.checked_mul(1000)?;
    let bottom = den * 1_000_000_000;
    let value = (top + bottom - 1).div_euclid(bottom);
    Some(if negative { -value } else { value })
}

/// A quantity in billionths of its unit: exact for every suffix (`n` is the finest); finer decimal fractions round
/// up. `None` for text that is not a quantity or does not fit.
pub fn nanos(quantity: &str) -> Option<i128> {
    let text = quantity.trim();
    let (sign, rest) = match text.strip_prefix('-') {
        Some(rest) => (-1, rest),
        None => (1, text.strip_prefix('+').unwrap_or(text)),
    };
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
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

/// `Quantity.Value()`: whole units, rounded up (bytes for memory and storage).
pub fn value(quantity: &str) -> Option<i128> {
    nanos(quantity).map(|n| ceil_div(n, 1_000_000_000))
}

/// `Quantity.MilliValue()`: thousandths, rounded up.
pub fn milli_value(quantity: &str) -> Option<i128> {
    nanos(quantity).map(|n| ceil_div(n, 1_000_000))
}

/// `ceil(a / b)` for a positive `b`.
pub fn ceil_div(a: i128, b: i128) -> i128 {
    let quotient = a.div_euclid(b);
    if a.rem_euclid(b) == 0 {
        quotient
    } else {
        quotient + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_parse_exactly() {
        assert_eq!(milli("100m"), Some(100));
        assert_eq!(milli("1.5"), Some(1500));
        assert_eq!(milli("2"), Some(2000));
        assert_eq!(value("512Mi"), Some(512 << 20));
        assert_eq!(value("1G"), Some(1_000_000_000));
        assert_eq!(value("1e3"), Some(1000));
        assert_eq!(value("0.5"), Some(1), "rounded up");
        assert_eq!(milli("-1"), Some(-1000));
        assert_eq!(milli("abc"), None);
        assert_eq!(milli("1Zi"), None);
    }

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
