//! Enrichment: country and ASN from the client IP, and cost from the price table.

use std::collections::HashSet;
use std::net::IpAddr;
use std::path::Path;

use maxminddb::Reader;
use serde::Deserialize;
use tracing::warn;
use tripline_core::price::PriceTable;
use tripline_store::CostSource;

/// What the IP databases say about a client address.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GeoInfo {
    pub country: String,
    pub asn: u32,
    pub as_org: String,
}

/// MaxMind-format country and ASN databases; either may be absent.
pub struct GeoIp {
    country: Option<Reader<Vec<u8>>>,
    asn: Option<Reader<Vec<u8>>>,
}

#[derive(Deserialize)]
struct CountryRecord<'a> {
    /// ip-location-db's layout (`country_code`).
    country_code: Option<&'a str>,
    /// GeoIP2 layout (`country.iso_code`), for operators who bring their own database.
    country: Option<IsoCode<'a>>,
}

#[derive(Deserialize)]
struct IsoCode<'a> {
    iso_code: Option<&'a str>,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot open ip database {path}: {source}")]
pub struct GeoIpError {
    path: String,
    #[source]
    source: maxminddb::MaxMindDbError,
}

impl GeoIp {
    pub fn empty() -> Self {
        Self {
            country: None,
            asn: None,
        }
    }

    pub fn open(country_db: Option<&Path>, asn_db: Option<&Path>) -> Result<Self, GeoIpError> {
        let open = |path: &Path| {
            Reader::open_readfile(path).map_err(|source| GeoIpError {
                path: path.display().to_string(),
                source,
            })
        };
        Ok(Self {
            country: country_db.map(open).transpose()?,
            asn: asn_db.map(open).transpose()?,
        })
    }

    pub fn lookup(&self, ip: IpAddr) -> GeoInfo {
        // The databases hold IPv4 under ::/96, not under IPv4-mapped addresses.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        let mut info = GeoInfo::default();
        if let Some(reader) = &self.country {
            if let Ok(Some(record)) = reader
                .lookup(ip)
                .and_then(|r| r.decode::<CountryRecord<'_>>())
            {
                let code = record
                    .country_code
                    .or(record.country.and_then(|c| c.iso_code));
                info.country = code.unwrap_or_default().to_owned();
            }
        }
        if let Some(reader) = &self.asn {
            if let Ok(Some(record)) = reader
                .lookup(ip)
                .and_then(|r| r.decode::<maxminddb::geoip2::Asn<'_>>())
            {
                info.asn = record.autonomous_system_number.unwrap_or(0);
                info.as_org = record
                    .autonomous_system_organization
                    .unwrap_or_default()
                    .to_owned();
            }
        }
        info
    }
}

/// Costs events that did not say what they cost, and remembers which models it could not price.
pub struct Coster {
    prices: PriceTable,
    warned: HashSet<String>,
}

/// Stop remembering (and warning about) new unpriced models past this many.
const MAX_WARNED_MODELS: usize = 1_000;

impl Coster {
    pub fn new(prices: PriceTable) -> Self {
        Self {
            prices,
            warned: HashSet::new(),
        }
    }

    /// The cost to record and where it came from. Unknown models cost 0, are counted in
    /// `tripline_ingest_unpriced_events_total` and logged once each.
    pub fn cost(
        &mut self,
        stated: Option<f64>,
        provider: &str,
        model: &str,
        prompt_tokens: u32,
        completion_tokens: u32,
    ) -> (f64, CostSource) {
        if let Some(cost) = stated {
            return (cost, CostSource::Event);
        }
        if let Some(price) = self.prices.lookup(provider, model) {
            return (
                price.cost_usd(prompt_tokens, completion_tokens),
                CostSource::PriceTable,
            );
        }
        metrics::counter!(crate::metrics::UNPRICED).increment(1);
        if self.warned.len() < MAX_WARNED_MODELS && self.warned.insert(model.to_owned()) {
            warn!(model, provider, "unpriced model: cost recorded as 0");
        }
        (0.0, CostSource::Unpriced)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped() -> GeoIp {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/geo");
        GeoIp::open(
            Some(&root.join("country.mmdb")),
            Some(&root.join("asn.mmdb")),
        )
        .unwrap()
    }

    #[test]
    fn shipped_databases_answer() {
        let geo = shipped();
        let google = geo.lookup("8.8.8.8".parse().unwrap());
        assert_eq!(google.country, "US");
        assert_eq!(google.asn, 15169);
        assert!(google.as_org.contains("Google"), "{google:?}");
        let v6 = geo.lookup("2a00:1450:4001:81c::200e".parse().unwrap());
        assert_eq!(v6.asn, 15169);
        let mapped = geo.lookup("::ffff:1.1.1.1".parse().unwrap());
        assert_eq!(mapped.asn, 13335);
        assert_eq!(geo.lookup("10.1.2.3".parse().unwrap()), GeoInfo::default());
    }

    #[test]
    fn stated_cost_wins_and_unknown_models_cost_nothing() {
        let mut coster = Coster::new(PriceTable::builtin());
        assert_eq!(
            coster.cost(Some(1.5), "openai", "gpt-4o", 10, 10),
            (1.5, CostSource::Event)
        );
        let (cost, source) = coster.cost(None, "openai", "gpt-4o", 1000, 100);
        assert!(cost > 0.0);
        assert_eq!(source, CostSource::PriceTable);
        assert_eq!(
            coster.cost(None, "", "model-nobody-knows", 10, 10),
            (0.0, CostSource::Unpriced)
        );
    }
}
