//! The canonical JSON form that signatures cover (agent event signatures in
//! [`crate::signing`], the Wazuh bridge's HMACs): one writer, so every signer and
//! verifier agrees byte for byte.
//!
//! 1. One named top-level member (the signature itself) is left out; members of that
//!    name deeper down stay.
//! 2. Object members sorted by key, comparing the keys' UTF-8 bytes, at every depth;
//!    array order kept.
//! 3. No whitespace outside strings.
//! 4. Strings as JavaScript's `JSON.stringify` writes them: `"` `\\` and U+0008,
//!    U+000C, U+000A, U+000D, U+0009 as two-character escapes, other characters below
//!    U+0020 as `\u00xx` (lowercase hex), everything else as its UTF-8 bytes.
//! 5. `null`, `true`, `false`; integers in exact decimal; other numbers as
//!    ECMAScript's `Number.prototype.toString` (shortest round-trip digits; plain
//!    notation for decimal exponents from -6 to 21, else `d.ddde±x`; `-0` as `0`).
//!
//! Rules 4 and 5 are `JSON.stringify`'s, so for ASCII member names this is RFC 8785
//! (JCS). Numbers are not left to `serde_json`'s float text, which has changed between
//! its releases: a signature must not depend on the library version at either end.
//! A verifier must read numbers exactly (`serde_json`'s `float_roundtrip` feature).

use serde_json::Value;

/// The canonical bytes of `v`, leaving out the top-level member `omit`.
pub fn canonical_json(v: &Value, omit: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    write_canonical(v, &mut out, Some(omit));
    out
}

fn write_canonical(v: &Value, out: &mut Vec<u8>, omit: Option<&str>) {
    match v {
        Value::Object(m) => {
            let mut members: Vec<(&String, &Value)> =
                m.iter().filter(|(k, _)| omit != Some(k.as_str())).collect();
            // String's Ord is byte order of the UTF-8 encoding.
            members.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.push(b'{');
            for (i, (k, v)) in members.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                // A &str is escaped exactly as a Value::String, without cloning the key.
                serde_json::to_writer(&mut *out, k.as_str())
                    .expect("writing a JSON string to a Vec cannot fail");
                out.push(b':');
                write_canonical(v, out, None);
            }
            out.push(b'}');
        }
        Value::Array(a) => {
            out.push(b'[');
            for (i, v) in a.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(v, out, None);
            }
            out.push(b']');
        }
        Value::Number(n) if n.is_f64() => write_f64(n.as_f64().unwrap_or_default(), out),
        scalar => write_scalar(scalar, out),
    }
}

fn write_scalar(v: &Value, out: &mut Vec<u8>) {
    // serde_json's compact writer for strings, integers and literals: its rules are
    // JSON.stringify's.
    serde_json::to_writer(out, v).expect("writing a JSON scalar to a Vec cannot fail");
}

/// ECMAScript Number::toString (ECMA-262, 6.1.6.1.20) of a finite double.
fn write_f64(f: f64, out: &mut Vec<u8>) {
    use std::io::Write;
    if f == 0.0 || !f.is_finite() {
        // -0 is 0; a Value cannot hold NaN or infinities (they become null).
        out.push(b'0');
        return;
    }
    if f < 0.0 {
        out.push(b'-');
    }
    // Rust's `{:e}` gives the shortest round-trip digits: `d[.ddd]e<exp>`.
    let sci = format!("{:e}", f.abs());
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let digits: Vec<u8> = mantissa.bytes().filter(u8::is_ascii_digit).collect();
    let k = digits.len() as i64;
    let n = exp.parse::<i64>().unwrap_or(0) + 1;
    if k <= n && n <= 21 {
        out.extend_from_slice(&digits);
        out.extend(std::iter::repeat_n(b'0', (n - k) as usize));
    } else if 0 < n && n <= 21 {
        out.extend_from_slice(&digits[..n as usize]);
        out.push(b'.');
        out.extend_from_slice(&digits[n as usize..]);
    } else if -6 < n && n <= 0 {
        out.extend_from_slice(b"0.");
        out.extend(std::iter::repeat_n(b'0', (-n) as usize));
        out.extend_from_slice(&digits);
    } else {
        out.push(digits[0]);
        if k > 1 {
            out.push(b'.');
            out.extend_from_slice(&digits[1..]);
        }
        let _ = write!(out, "e{}{}", if n >= 1 { '+' } else { '-' }, (n - 1).abs());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn numbers_are_written_as_javascript_does() {
        for (n, text) in [
            (1.0, "1"),
            (12.5, "12.5"),
            (1e20, "100000000000000000000"),
            (1e21, "1e+21"),
            (0.0001, "0.0001"),
            (1.5e-7, "1.5e-7"),
            (-2.5e30, "-2.5e+30"),
            (-0.0, "0"),
        ] {
            assert_eq!(
                String::from_utf8(canonical_json(&json!({"x": n}), "sig")).unwrap(),
                format!("{{\"x\":{text}}}")
            );
        }
    }
}
