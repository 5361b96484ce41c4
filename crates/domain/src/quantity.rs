//! Kubernetes resource quantities ("500Mi", "1G", "1.5Gi", "1e9") to bytes. Pure.

/// Why a quantity could not be turned into a byte count.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    #[error("{0:?} is not a Kubernetes quantity (examples: 500Mi, 1Gi, 10G)")]
    Malformed(String),
    #[error("{0:?} is too large")]
    TooLarge(String),
    #[error("{0:?} is negative")]
    Negative(String),
}

/// Suffixes of the powers of 1024, from 1024^0 on.
const BINARY_SUFFIXES: [&str; 7] = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];
/// Suffixes of the powers of 1000, from 1000^-3 on ("" is matched as binary first).
const DECIMAL_SUFFIXES: [&str; 10] = ["n", "u", "m", "", "k", "M", "G", "T", "P", "E"];

/// Parses a quantity into bytes, rounding a fractional byte up.
pub fn to_bytes(q: &str) -> Result<u128, QuantityError> {
    let s = q.trim();
    let malformed = || QuantityError::Malformed(q.to_string());
    let too_large = || QuantityError::TooLarge(q.to_string());
    let (negative, s) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(split);
    let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
    if (int_part.is_empty() && frac_part.is_empty()) || frac_part.contains('.') {
        return Err(malformed());
    }
    // value = mantissa / 10^frac_digits * 2^bin_exp * 10^dec_exp
    let digits = format!("{int_part}{frac_part}");
    if digits.len() > 30 {
        return Err(too_large());
    }
    let mantissa: u128 = digits.parse().map_err(|_| malformed())?;
    let (bin_exp, mut dec_exp): (u32, i32) =
        if let Some(i) = BINARY_SUFFIXES.iter().position(|b| *b == suffix) {
            (10 * i as u32, 0)
        } else if let Some(i) = DECIMAL_SUFFIXES.iter().position(|d| *d == suffix) {
            (0, 3 * i as i32 - 9)
        } else if let Some(e) = suffix.strip_prefix(['e', 'E']) {
            let exp: i32 = e.parse().map_err(|_| malformed())?;
            if !(-30..=30).contains(&exp) {
                return Err(too_large());
            }
            (0, exp)
        } else {
            return Err(malformed());
        };
    dec_exp -= frac_part.len() as i32;
    if negative && mantissa != 0 {
        return Err(QuantityError::Negative(q.to_string()));
    }
    let mut value = mantissa.checked_shl(bin_exp).ok_or_else(too_large)?;
    if value >> bin_exp != mantissa {
        return Err(too_large());
    }
    if dec_exp >= 0 {
        value = value
            .checked_mul(10u128.checked_pow(dec_exp as u32).ok_or_else(too_large)?)
            .ok_or_else(too_large)?;
    } else {
        let div = 10u128
            .checked_pow((-dec_exp) as u32)
            .ok_or_else(too_large)?;
        value = value.div_ceil(div);
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_and_decimal_suffixes() {
        assert_eq!(to_bytes("500Mi"), Ok(500 << 20));
        assert_eq!(to_bytes("1Gi"), Ok(1 << 30));
        assert_eq!(to_bytes("2Ti"), Ok(2 << 40));
        assert_eq!(to_bytes("1Ki"), Ok(1024));
        assert_eq!(to_bytes("1k"), Ok(1000));
        assert_eq!(to_bytes("1G"), Ok(1_000_000_000));
        assert_eq!(to_bytes("3M"), Ok(3_000_000));
        assert_eq!(to_bytes("1048576"), Ok(1 << 20));
        assert_eq!(to_bytes("1E"), Ok(10u128.pow(18)));
    }

    #[test]
    fn fractions_and_exponents() {
        assert_eq!(to_bytes("1.5Gi"), Ok(3 << 29));
        assert_eq!(to_bytes("0.5Ki"), Ok(512));
        assert_eq!(to_bytes("1e9"), Ok(1_000_000_000));
        assert_eq!(to_bytes("2E3"), Ok(2000));
        assert_eq!(to_bytes(".5k"), Ok(500));
        assert_eq!(to_bytes("1500m"), Ok(2), "fractional bytes round up");
        assert_eq!(to_bytes("1n"), Ok(1));
        assert_eq!(to_bytes("0"), Ok(0));
        assert_eq!(to_bytes("+1Mi"), Ok(1 << 20));
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "", "Mi", "1MB", "1 Gi", "1..2", "abc", "1Gi1", "1e", "0x10", "1.2.3",
        ] {
            assert!(
                matches!(to_bytes(bad), Err(QuantityError::Malformed(_))),
                "{bad}"
            );
        }
        assert!(matches!(to_bytes("-1Gi"), Err(QuantityError::Negative(_))));
        assert!(matches!(
            to_bytes("999999999999999999999Ei"),
            Err(QuantityError::TooLarge(_))
        ));
        assert!(matches!(to_bytes("1e99"), Err(QuantityError::TooLarge(_))));
    }
}
