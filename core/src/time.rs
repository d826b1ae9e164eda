//! Timestamps in the event contract: RFC 3339 strings or epoch milliseconds.

use chrono::DateTime;

/// Parses an RFC 3339 timestamp (any offset, any sub-second precision) into epoch milliseconds.
pub fn parse_rfc3339_ms(text: &str) -> Option<i64> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.timestamp_millis())
}

/// The wall clock in epoch milliseconds: the one place the workspace reads it. Pure code takes
/// `now` as an argument instead, so that it can be tested with any clock.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// [`now_ms`] in whole seconds, as ClickHouse `DateTime` columns store it.
pub fn now_s() -> u32 {
    (now_ms() / 1000) as u32
}

/// Formats epoch milliseconds as RFC 3339 UTC with milliseconds, the contract's canonical form.
pub fn format_ms(ms: i64) -> String {
    DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_else(|| ms.to_string())
}

/// Serde for epoch-millisecond fields written as RFC 3339 (`#[serde(with = "time::rfc3339")]`):
/// times are integers inside Tripline and text only in the JSON it publishes.
pub mod rfc3339 {
    use serde::{de, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(ms: &i64, out: S) -> Result<S::Ok, S::Error> {
        out.serialize_str(&super::format_ms(*ms))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(input: D) -> Result<i64, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(input)?;
        super::parse_rfc3339_ms(&text)
            .ok_or_else(|| de::Error::custom(format!("{text:?} is not an RFC 3339 time")))
    }

    /// The same for an optional time (`null` when absent).
    pub mod option {
        use serde::{Deserialize, Deserializer, Serializer};

        pub fn serialize<S: Serializer>(ms: &Option<i64>, out: S) -> Result<S::Ok, S::Error> {
            match ms {
                Some(ms) => super::serialize(ms, out),
                None => out.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(input: D) -> Result<Option<i64>, D::Error> {
            #[derive(Deserialize)]
            struct Time(#[serde(with = "super")] i64);
            Ok(Option::<Time>::deserialize(input)?.map(|Time(ms)| ms))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_offsets_and_precision() {
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:01.500Z"), Some(1500));
        assert_eq!(parse_rfc3339_ms("1970-01-01T01:00:01+01:00"), Some(1000));
        assert_eq!(
            parse_rfc3339_ms("2026-11-26T10:00:00.123456Z"),
            Some(1_795_687_200_123)
        );
        assert_eq!(parse_rfc3339_ms("yesterday"), None);
    }

    #[test]
    fn formats_round_trip() {
        let ms = 1_795_687_200_123;
        assert_eq!(parse_rfc3339_ms(&format_ms(ms)), Some(ms));
        assert_eq!(format_ms(1500), "1970-01-01T00:00:01.500Z");
    }
}
