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

/// A quantity in whole units, rounded up as Kubernetes' `Value()` does (bytes for memory and storage).
pub fn value(q: &str) -> Option<i128> {
    milli(q).map(|m| (m + 999).div_euclid(1000))
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
}
