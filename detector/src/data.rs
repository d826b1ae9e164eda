//! What the detectors read each cycle, as plain rows: per-minute aggregates per key, per
//! project, per provider/model, per key and usage profile, and key-scanning candidates.
//! `fetch` issues the queries; everything downstream is pure.

use clickhouse::Client;
use serde::Deserialize;

/// One key's minute, from `rollup_key_1m` (plus provider attempts for that key).
#[derive(Debug, Clone, Default, PartialEq, clickhouse::Row, Deserialize)]
pub struct KeyMinute {
    pub api_key_id: String,
    pub minute: u32,
    pub project: String,
    pub requests: u64,
    pub failures: u64,
    pub retries: u64,
    pub cost_usd: f64,
    pub distinct_ips: u64,
}

/// One (key, minute, country, network, model, user agent) combination seen in raw requests.
#[derive(Debug, Clone, Default, PartialEq, clickhouse::Row, Deserialize)]
pub struct Usage {
    pub api_key_id: String,
    pub minute: u32,
    pub country: String,
    pub asn: u32,
    pub as_org: String,
    pub model: String,
    pub user_agent: String,
    pub requests: u64,
    pub first_ms: i64,
    pub last_ms: i64,
}

/// Retry behaviour of one key in a minute: provider attempts and retry chains.
#[derive(Debug, Clone, Default, PartialEq, clickhouse::Row, Deserialize)]
pub struct KeyRetries {
    pub api_key_id: String,
    pub minute: u32,
    pub provider_attempts: u64,
    pub provider_successes: u64,
    /// Idempotency keys seen more than once, and those whose attempts came faster than the
    /// no-backoff threshold on average.
    pub chains: u64,
    pub fast_chains: u64,
}

/// One minute of a project's (or, with an empty name, everyone's) spend.
#[derive(Debug, Clone, Default, PartialEq, clickhouse::Row, Deserialize)]
pub struct SpendMinute {
    pub entity: String,
    pub minute: u32,
    pub cost_usd: f64,
}

/// One provider/model minute, from the upstream attempts.
#[derive(Debug, Clone, Default, PartialEq, clickhouse::Row, Deserialize)]
pub struct ProviderMinute {
    pub provider: String,
    pub model: String,
    pub minute: u32,
    pub attempts: u64,
    pub successes: u64,
}

/// A client IP failing authentication on several keys.
#[derive(Debug, Clone, Default, PartialEq, clickhouse::Row, Deserialize)]
pub struct ScanCandidate {
    pub client_ip: String,
    pub keys: u64,
    pub requests: u64,
    pub first_ms: i64,
    pub last_ms: i64,
}

/// Spend so far in the current hour and day, per key.
#[derive(Debug, Clone, Default, PartialEq, clickhouse::Row, Deserialize)]
pub struct BudgetUse {
    pub api_key_id: String,
    pub project: String,
    pub hour_usd: f64,
    pub day_usd: f64,
    pub last_hour_usd: f64,
}

/// Everything one cycle reads, for minutes from `from_minute` on.
#[derive(Debug, Clone, Default)]
pub struct CycleData {
    pub keys: Vec<KeyMinute>,
    pub usage: Vec<Usage>,
    pub retries: Vec<KeyRetries>,
    pub projects: Vec<SpendMinute>,
    pub overall: Vec<SpendMinute>,
    pub providers: Vec<ProviderMinute>,
    pub scans: Vec<ScanCandidate>,
    pub budgets: Vec<BudgetUse>,
}

/// Which keys this worker owns: `cityHash64(api_key_id) % count = index`.
#[derive(Debug, Clone, Copy)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl Shard {
    fn key_filter(&self) -> String {
        if self.count <= 1 {
            "1".into()
        } else {
            format!("cityHash64(api_key_id) % {} = {}", self.count, self.index)
        }
    }

    /// Entities that are not keys (projects, providers, scanning IPs) belong to shard 0.
    pub fn owns_shared(&self) -> bool {
        self.index == 0
    }
}

pub struct Thresholds {
    pub no_backoff_ms: f64,
    pub scan_min_keys: u64,
}

/// Reads minutes `[from_minute, to_minute]` (epoch seconds of minute starts).
pub async fn fetch(
    client: &Client,
    shard: Shard,
    from_minute: u32,
    to_minute: u32,
    thresholds: &Thresholds,
    with_budgets: bool,
) -> Result<CycleData, clickhouse::error::Error> {
    let keys_filter = shard.key_filter();
    let range =
        format!("minute >= toDateTime({from_minute}) AND minute <= toDateTime({to_minute})");
    let ts_range = format!(
        "ts >= toDateTime({from_minute}) AND ts < toDateTime({})",
        to_minute + 60
    );
    let mut data = CycleData {
        keys: client
            .query_raw(&format!(
                "SELECT api_key_id, toUInt32(minute), anyLastMerge(project), countMerge(requests), \
                 sumMerge(errors_auth) + sumMerge(errors_rate_limited) + sumMerge(errors_client) + sumMerge(errors_server), \
                 sumMerge(retries), sumMerge(cost_usd), uniqIfMerge(distinct_ips) \
                 FROM rollup_key_1m WHERE {range} AND {keys_filter} GROUP BY api_key_id, minute"
            ))
            .fetch_all()
            .await?,
        usage: client
            .query_raw(&format!(
                "SELECT api_key_id, toUInt32(toStartOfMinute(ts)) AS m, client_country, client_asn, client_as_org, model, user_agent, \
                 count(), min(ts_ms), max(ts_ms) FROM gateway_requests WHERE {ts_range} AND {keys_filter} \
                 AND status NOT IN (401, 403) \
                 GROUP BY api_key_id, m, client_country, client_asn, client_as_org, model, user_agent"
            ))
            .fetch_all()
            .await?,
        retries: client
            .query_raw(&format!(
                "SELECT api_key_id, m, sum(attempts), sum(successes), sum(chains), sum(fast) FROM ( \
                   SELECT api_key_id, toUInt32(toStartOfMinute(ts)) AS m, count() AS attempts, countIf(status < 400) AS successes, \
                          toUInt64(0) AS chains, toUInt64(0) AS fast \
                   FROM provider_attempts WHERE {ts_range} AND {keys_filter} GROUP BY api_key_id, m \
                   UNION ALL \
                   SELECT api_key_id, m, toUInt64(0), toUInt64(0), count(), countIf((last - first) / (n - 1) < {nb}) FROM ( \
                     SELECT api_key_id, idempotency_key, toUInt32(toStartOfMinute(max(ts))) AS m, count() AS n, min(ts_ms) AS first, max(ts_ms) AS last \
                     FROM gateway_requests WHERE {ts_range} AND {keys_filter} AND idempotency_key != '' \
                     GROUP BY api_key_id, idempotency_key HAVING n > 1) \
                   GROUP BY api_key_id, m) \
                 GROUP BY api_key_id, m",
                nb = thresholds.no_backoff_ms
            ))
            .fetch_all()
            .await?,
        ..CycleData::default()
    };
    if shard.owns_shared() {
        data.projects = client
            .query_raw(&format!(
                "SELECT project, toUInt32(minute), sumMerge(cost_usd) FROM rollup_project_1m \
                 WHERE {range} AND project != '' GROUP BY project, minute"
            ))
            .fetch_all()
            .await?;
        data.overall = client
            .query_raw(&format!(
                "SELECT '', toUInt32(minute), sumMerge(cost_usd) FROM rollup_project_1m WHERE {range} GROUP BY minute"
            ))
            .fetch_all()
            .await?;
        data.providers = client
            .query_raw(&format!(
                "SELECT provider, model, toUInt32(minute), countMerge(attempts), sumMerge(successes) \
                 FROM rollup_provider_1m WHERE {range} GROUP BY provider, model, minute"
            ))
            .fetch_all()
            .await?;
        data.scans = client
            .query_raw(&format!(
                "SELECT client_ip, uniqExact(api_key_id) AS keys, count(), min(ts_ms), max(ts_ms) FROM gateway_requests \
                 WHERE ts >= toDateTime({}) AND ts < toDateTime({}) AND status IN (401, 403) AND client_ip != '' \
                 GROUP BY client_ip HAVING keys >= {}",
                to_minute.saturating_sub(240),
                to_minute + 60,
                thresholds.scan_min_keys
            ))
            .fetch_all()
            .await?;
    }
    if with_budgets {
        data.budgets = client
            .query_raw(&format!(
                "SELECT api_key_id, anyLastMerge(project), \
                 sumMergeIf(cost_usd, minute >= toStartOfHour(toDateTime({to_minute}))), \
                 sumMerge(cost_usd), \
                 sumMergeIf(cost_usd, minute > toDateTime({to_minute}) - 3600) \
                 FROM rollup_key_1m WHERE minute >= toStartOfDay(toDateTime({to_minute})) AND {keys_filter} \
                 GROUP BY api_key_id"
            ))
            .fetch_all()
            .await?;
    }
    Ok(data)
}
