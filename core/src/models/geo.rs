//! Great-circle distances and the travel speed two sightings of one API key imply.
//!
//! The cross-region detector asks "could one client have been in country A at t1 and in
//! country B at t2?". Country-level geolocation is all the event contract carries
//! (`client_country`, or the IP lookup), so each country is reduced to one representative
//! point (`data/geo/country_centroids.csv`, MIT, sources in `data/geo/LICENSE.md`). Distances
//! between such points are good to a few hundred km for large countries: enough to tell "Paris
//! then New York within 10 minutes" from "Paris then Brussels", which is the question.
//!
//! The haversine formula on a sphere of the mean Earth radius (6,371.0088 km, IUGG) is within
//! 0.5 % of the ellipsoidal (Vincenty) distance everywhere; its `asin` form is well conditioned
//! for small distances, and clamping the argument keeps antipodal points from producing NaN.

use std::collections::HashMap;
use std::sync::OnceLock;

/// Mean Earth radius in km (IUGG mean radius R1).
pub const EARTH_RADIUS_KM: f64 = 6_371.008_8;

/// The embedded table: `iso2,lat,lon,name`, one representative point per country.
pub const COUNTRY_CENTROIDS_CSV: &str = include_str!("../../../data/geo/country_centroids.csv");

/// Great-circle distance in km between two points given in degrees.
pub fn haversine_km(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let dp = p2 - p1;
    let dl = (lon2 - lon1).to_radians();
    let h = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_KM * h.clamp(0.0, 1.0).sqrt().asin()
}

/// One parsed row of the table.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Centroid {
    pub lat: f64,
    pub lon: f64,
    pub name: &'static str,
}

fn table() -> &'static HashMap<[u8; 2], Centroid> {
    static TABLE: OnceLock<HashMap<[u8; 2], Centroid>> = OnceLock::new();
    TABLE.get_or_init(|| parse_table(COUNTRY_CENTROIDS_CSV))
}

/// Parses the embedded CSV. Rows that do not parse are skipped (the unit tests check that
/// none are); a name may be double-quoted and may then contain commas.
fn parse_table(csv: &'static str) -> HashMap<[u8; 2], Centroid> {
    let mut out = HashMap::new();
    for line in csv.lines().skip(1) {
        let mut parts = line.splitn(4, ',');
        let (Some(code), Some(lat), Some(lon), Some(name)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let (Ok(lat), Ok(lon), Some(key)) =
            (lat.parse::<f64>(), lon.parse::<f64>(), iso2_key(code))
        else {
            continue;
        };
        let name = name
            .strip_prefix('"')
            .and_then(|n| n.strip_suffix('"'))
            .unwrap_or(name);
        out.insert(key, Centroid { lat, lon, name });
    }
    out
}

/// Upper-cased two ASCII letters, or None.
fn iso2_key(code: &str) -> Option<[u8; 2]> {
    match code.trim().as_bytes() {
        &[a, b] if a.is_ascii_alphabetic() && b.is_ascii_alphabetic() => {
            Some([a.to_ascii_uppercase(), b.to_ascii_uppercase()])
        }
        _ => None,
    }
}

/// The representative point `(lat, lon)` in degrees of an ISO 3166-1 alpha-2 code
/// (case-insensitive), or None for an unknown code.
pub fn country_centroid(iso2: &str) -> Option<(f64, f64)> {
    country(iso2).map(|c| (c.lat, c.lon))
}

/// The full row (point and English short name) of an ISO 3166-1 alpha-2 code.
pub fn country(iso2: &str) -> Option<Centroid> {
    table().get(&iso2_key(iso2)?).copied()
}

/// Every code in the table, sorted.
pub fn country_codes() -> Vec<String> {
    let mut v: Vec<String> = table()
        .keys()
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .collect();
    v.sort();
    v
}

/// Distance in km between two countries' points; None if either code is unknown.
pub fn country_distance_km(a: &str, b: &str) -> Option<f64> {
    let (la, oa) = country_centroid(a)?;
    let (lb, ob) = country_centroid(b)?;
    Some(haversine_km(la, oa, lb, ob))
}

/// Speed in km/h needed to be in `country_a` at `ts_a_ms` and in `country_b` at `ts_b_ms`
/// (Unix milliseconds, either order). None if a code is unknown. Two sightings at the same
/// millisecond give 0 for the same country and `+inf` for two different ones (no travel time
/// at all). Compare the result with a plausible ceiling (an airliner: ~1,000 km/h) and keep
/// in mind that one point per country makes neighbours look closer or farther than they are.
pub fn implied_speed_kmh(
    country_a: &str,
    ts_a_ms: i64,
    country_b: &str,
    ts_b_ms: i64,
) -> Option<f64> {
    let km = country_distance_km(country_a, country_b)?;
    let hours = (ts_a_ms.abs_diff(ts_b_ms) as f64) / 3_600_000.0;
    Some(if km == 0.0 {
        0.0
    } else if hours == 0.0 {
        f64::INFINITY
    } else {
        km / hours
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const PARIS: (f64, f64) = (48.8566, 2.3522);
    const NEW_YORK: (f64, f64) = (40.7128, -74.0060);
    const SYDNEY: (f64, f64) = (-33.8688, 151.2093);
    const LONDON: (f64, f64) = (51.5074, -0.1278);

    fn close(actual: f64, expected: f64, rel: f64) -> bool {
        (actual - expected).abs() <= rel * expected
    }

    #[test]
    fn known_distances() {
        let d = |a: (f64, f64), b: (f64, f64)| haversine_km(a.0, a.1, b.0, b.1);
        assert!(
            close(d(PARIS, NEW_YORK), 5_837.0, 0.01),
            "{}",
            d(PARIS, NEW_YORK)
        );
        assert!(close(d(LONDON, PARIS), 344.0, 0.01), "{}", d(LONDON, PARIS));
        assert!(
            close(d(NEW_YORK, SYDNEY), 15_990.0, 0.01),
            "{}",
            d(NEW_YORK, SYDNEY)
        );
        // Half the circumference, without NaN.
        assert!(close(
            haversine_km(0.0, 0.0, 0.0, 180.0),
            std::f64::consts::PI * EARTH_RADIUS_KM,
            1e-12
        ));
        assert!(close(
            haversine_km(90.0, 0.0, -90.0, 0.0),
            std::f64::consts::PI * EARTH_RADIUS_KM,
            1e-12
        ));
    }

    #[test]
    fn table_parses_completely() {
        let rows = COUNTRY_CENTROIDS_CSV
            .lines()
            .skip(1)
            .filter(|l| !l.is_empty())
            .count();
        assert_eq!(table().len(), rows);
        assert_eq!(rows, 250, "249 ISO 3166-1 codes plus XK");
        for code in country_codes() {
            let (lat, lon) = country_centroid(&code).unwrap();
            assert!(
                (-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lon),
                "{code}"
            );
        }
        assert_eq!(
            country("bq").unwrap().name,
            "Bonaire, Sint Eustatius and Saba"
        );
        assert_eq!(country("FR").unwrap().name, "France");
    }

    #[test]
    fn lookups() {
        assert!(country_centroid("US").is_some());
        assert_eq!(country_centroid("us"), country_centroid("US"));
        assert!(country_centroid("XK").is_some());
        for bad in ["", "U", "USA", "ZZ", "1A", "é"] {
            assert_eq!(country_centroid(bad), None, "{bad}");
        }
        // France's and the United States' points are 7,000-8,000 km apart.
        let d = country_distance_km("FR", "US").unwrap();
        assert!((7_000.0..8_000.0).contains(&d), "{d}");
    }

    #[test]
    fn implied_speeds() {
        let hour = 3_600_000;
        let d = country_distance_km("FR", "DE").unwrap();
        assert!(close(
            implied_speed_kmh("FR", 0, "DE", hour).unwrap(),
            d,
            1e-12
        ));
        assert_eq!(
            implied_speed_kmh("FR", 5 * hour, "DE", 3 * hour),
            Some(d / 2.0)
        );
        assert_eq!(implied_speed_kmh("FR", 0, "fr", 0), Some(0.0));
        assert_eq!(implied_speed_kmh("FR", 0, "DE", 0), Some(f64::INFINITY));
        assert_eq!(implied_speed_kmh("FR", 0, "QQ", hour), None);
        // Paris to New York in 10 minutes is no flight.
        assert!(implied_speed_kmh("FR", 0, "US", 600_000).unwrap() > 30_000.0);
    }

    fn point() -> impl Strategy<Value = (f64, f64)> {
        (-90.0f64..=90.0, -180.0f64..=180.0)
    }

    proptest! {
        #[test]
        fn symmetric_and_zero_to_self(a in point(), b in point()) {
            let ab = haversine_km(a.0, a.1, b.0, b.1);
            prop_assert_eq!(ab, haversine_km(b.0, b.1, a.0, a.1));
            prop_assert_eq!(haversine_km(a.0, a.1, a.0, a.1), 0.0);
            prop_assert!((0.0..=std::f64::consts::PI * EARTH_RADIUS_KM + 1e-9).contains(&ab));
        }

        #[test]
        fn triangle_inequality(a in point(), b in point(), c in point()) {
            let d = |p: (f64, f64), q: (f64, f64)| haversine_km(p.0, p.1, q.0, q.1);
            prop_assert!(d(a, c) <= d(a, b) + d(b, c) + 1e-6);
        }

        #[test]
        fn longitude_wraps(a in point(), b in point()) {
            let d1 = haversine_km(a.0, a.1, b.0, b.1);
            let d2 = haversine_km(a.0, a.1 + 360.0, b.0, b.1);
            prop_assert!((d1 - d2).abs() < 1e-6);
        }

        #[test]
        fn speed_is_symmetric(i in 0usize..250, j in 0usize..250, t1 in 0i64..1 << 42, t2 in 0i64..1 << 42) {
            let codes = country_codes();
            let (a, b) = (&codes[i % codes.len()], &codes[j % codes.len()]);
            prop_assert_eq!(implied_speed_kmh(a, t1, b, t2), implied_speed_kmh(b, t2, a, t1));
            prop_assert_eq!(implied_speed_kmh(a, t1, a, t2), Some(0.0));
        }
    }
}
