use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::PROTOCOL_VERSION;

/// A wire message that carries its major version in `v`.
pub trait Versioned {
    fn version(&self) -> u32;
}

/// Why a message was refused. [`DecodeError::kind`] gives a short, stable label for
/// rejection counters.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("message of {size} bytes exceeds the limit of {max} bytes")]
    TooLarge { size: usize, max: usize },
    #[error("malformed message: {0}")]
    Malformed(#[from] serde_json::Error),
    #[error("unsupported protocol major version {found} (this build speaks {supported})")]
    UnsupportedVersion { found: u64, supported: u32 },
}

impl DecodeError {
    pub fn kind(&self) -> &'static str {
        match self {
            DecodeError::TooLarge { .. } => "oversize",
            DecodeError::Malformed(_) => "malformed",
            DecodeError::UnsupportedVersion { .. } => "version",
        }
    }
}

#[derive(Deserialize)]
struct VersionProbe {
    v: Option<u64>,
}

/// Decode a versioned message: size first, then the major version (so a future
/// version with a different shape is reported as a version problem, not as
/// malformed), then the full shape. Unknown fields are ignored.
pub fn decode<T: DeserializeOwned + Versioned>(bytes: &[u8], max: usize) -> Result<T, DecodeError> {
    if bytes.len() > max {
        return Err(DecodeError::TooLarge { size: bytes.len(), max });
    }
    let probe: VersionProbe = serde_json::from_slice(bytes)?;
    match probe.v {
        Some(v) if v == u64::from(PROTOCOL_VERSION) => {}
        Some(found) => {
            return Err(DecodeError::UnsupportedVersion { found, supported: PROTOCOL_VERSION });
        }
        None => {
            return Err(DecodeError::Malformed(serde::de::Error::missing_field("v")));
        }
    }
    Ok(serde_json::from_slice(bytes)?)
}
