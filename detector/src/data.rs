//! What the detectors read each cycle, as plain rows: per-minute aggregates per key, per
//! project, per provider/model, per key and usage profile, and key-scanning candidates.
//! `fetch` issues the queries (their SQL is in `data/sql.rs`, one function per row type);
//! everything downstream is pure.

mod sql;

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
    /// Answers 429 or 5xx (among `failures`).
    pub throttled: u64,
    /// Answers 401 or 403 (among `failures`): the key was refused.
    pub auth_failures: u64,
    pub retries: u64,
    pub cost_usd: f64,
    /// Prompt plus completion tokens.
    pub tokens: u64,
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

/// One (end user, minute, country) seen in raw requests that name a `user`.
#[derive(Debug, Clone, Default, PartialEq, clickhouse::Row, Deserialize)]
pub struct UserUse {
    pub user: String,
    pub minute: u32,
    pub country: String,
    /// One of the keys the user came through in that minute and country.
    pub api_key_id: String,
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
    /// Idempotency keys seen more than once within the minute (so that a replay reading an hour
    /// at once counts what the live worker, reading a minute, counts), and those whose attempts
    /// came faster than the no-backoff threshold on average.
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

/// A key's upstream attempts to one provider/model in one minute, for key-minutes where some were
/// answered 429 or 5xx (what retry storms are made of; a 400 is the caller's own doing).
#[derive(Debug, Clone, Default, PartialEq, clickhouse::Row, Deserialize)]
pub struct KeyProviderFailures {
    pub api_key_id: String,
    pub minute: u32,
    pub provider: String,
    pub model: String,
    pub attempts: u64,
    /// Attempts answered 429 or 5xx.
    pub failures: u64,
    /// The first and last of those, epoch ms.
    pub first_ms: i64,
    pub last_ms: i64,
}

/// Upstream attempts to one provider/model in 10 s of one minute, from the raw attempts: what
/// the other keys went through while one key was failing, and what a provider storm is judged
/// on. Read by every shard, from the minute before the first one read (the last 60 s reach
/// back into it).
#[derive(Debug, Clone, Default, PartialEq, clickhouse::Row, Deserialize)]
pub struct ProviderBucket {
    pub provider: String,
    pub model: String,
    pub minute: u32,
    /// Start of the 10 s, epoch seconds.
    pub bucket: u32,
    pub attempts: u64,
    /// Attempts answered 429 or 5xx.
    pub failures: u64,
    /// The gateway's first attempt of a request (`attempt = 1`): attempts per first attempt is
    /// how often the gateway retried upstream.
    pub first_attempts: u64,
}

/// One of the keys failing most on a provider/model in one minute (at most 10 per
/// provider/model and minute, the most failures first), with how many keys failed there at all
/// and how many called it.
/// Read by every shard: a provider storm's keys are every shard's.
#[derive(Debug, Clone, Default, PartialEq, clickhouse::Row, Deserialize)]
pub struct ProviderKeyFailures {
    pub provider: String,
    pub model: String,
    pub minute: u32,
    pub api_key_id: String,
    pub attempts: u64,
    /// Attempts answered 429 or 5xx.
    pub failures: u64,
    /// Keys with any attempt answered 429 or 5xx on the provider/model in the minute.
    pub failing_keys: u64,
    /// Keys with any attempt on the provider/model in the minute.
    pub calling_keys: u64,
}

/// Retry chains on a provider/model in one minute: requests the gateway sent upstream more than
/// once (same `request_id`) and client requests sent more than once (same `idempotency_key`),
/// and those whose attempts started faster than the no-backoff threshold on average (an
/// upstream attempt's `ts` is when it ended: its start is `ts - latency`, or a fast failure
/// followed by a long generation would look like backoff). Shard 0 only.
#[derive(Debug, Clone, Default, PartialEq, clickhouse::Row, Deserialize)]
pub struct ProviderChains {
    pub provider: String,
    pub model: String,
    pub minute: u32,
    pub chains: u64,
    pub fast_chains: u64,
    /// Client requests that repeated an idempotency key already sent in the minute: each
    /// is a first attempt upstream, but not a new request of the client's.
    pub client_retries: u64,
}

/// Length of a [`ProviderBucket`], in seconds.
pub const PROVIDER_BUCKET_S: u32 = 10;

/// Keys read per provider/model and minute in [`ProviderKeyFailures`].
pub const PROVIDER_TOP_KEYS: u32 = 10;

/// A client IP failing authentication on several keys.
#[derive(Debug, Clone, Default, PartialEq, clickhouse::Row, Deserialize)]
pub struct ScanCandidate {
    pub client_ip: String,
    pub keys: u64,
    pub requests: u64,
    pub first_ms: i64,
    pub last_ms: i64,
}

/// One client IP's failed authentications (401/403) on one key in one minute: what a replay
/// rebuilds each minute's key-scanning candidates from.
#[derive(Debug, Clone, Default, PartialEq, clickhouse::Row, Deserialize)]
pub struct AuthFailures {
    pub client_ip: String,
    pub minute: u32,
    pub api_key_id: String,
    pub requests: u64,
    pub first_ms: i64,
    pub last_ms: i64,
}

/// Failed authentications per (IP, minute, key) in minutes `[from_minute, to_minute]`.
pub async fn fetch_auth_failures(
    client: &Client,
    from_minute: u32,
    to_minute: u32,
) -> Result<Vec<AuthFailures>, clickhouse::error::Error> {
    client
        .query_raw(&sql::auth_failures(from_minute, to_minute))
        .fetch_all()
        .await
}

/// Each key's (id, project, minute, spend) in `[from_minute, to_minute)`: what budgets add up.
pub async fn fetch_key_spend(
    client: &Client,
    from_minute: u32,
    to_minute: u32,
) -> Result<Vec<(String, String, u32, f64)>, clickhouse::error::Error> {
    client
        .query_raw(&sql::key_spend(from_minute, to_minute))
        .fetch_all()
        .await
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
    /// End users' places (shard 0 only: users are not sharded by key).
    pub users: Vec<UserUse>,
    pub retries: Vec<KeyRetries>,
    pub projects: Vec<SpendMinute>,
    pub overall: Vec<SpendMinute>,
    pub providers: Vec<ProviderMinute>,
    /// A key's failures on each provider, judged against the other keys' on that provider at
    /// the same time (which every worker reads).
    pub key_failures: Vec<KeyProviderFailures>,
    pub provider_buckets: Vec<ProviderBucket>,
    /// The keys failing most on each provider/model (every shard reads them).
    pub provider_keys: Vec<ProviderKeyFailures>,
    /// Retry chains per provider/model (every shard reads them: whether a provider storm's
    /// clients back off, and which first attempts are their repeats, decides when a key caught
    /// in it is folded, whatever the shard).
    pub provider_chains: Vec<ProviderChains>,
    pub scans: Vec<ScanCandidate>,
    pub budgets: Vec<BudgetUse>,
    /// The minute (start, epoch seconds) `budgets` were summed up to: its hour and day are the
    /// budgets' hour and day.
    pub budget_minute: u32,
}

/// Which keys this worker owns: `cityHash64(api_key_id) % count = index`.
#[derive(Debug, Clone, Copy)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl Shard {
    pub(crate) fn key_filter(&self) -> String {
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

    /// SQL condition on `alerts` rows: those this worker decided (an alert on a key belongs to
    /// the key's shard, any other to shard 0).
    pub fn alerts_filter(&self) -> String {
        if self.count <= 1 {
            "1".into()
        } else {
            format!(
                "if(api_key_id = '', {} = 0, cityHash64(api_key_id) % {} = {})",
                self.index, self.count, self.index
            )
        }
    }
}

pub struct Thresholds {
    pub no_backoff_ms: f64,
    pub scan_min_keys: u64,
    /// Whether end users' places are read (`cross_region.per_user`).
    pub users: bool,
    /// Whether key-scanning candidates are read (a minute-by-minute replay rebuilds them per
    /// minute, and a warm-up flags nothing).
    pub scans: bool,
}

/// What one cycle reads: whose rows, which minutes, up to which instant, and the thresholds
/// the reads filter on. Minutes are epoch seconds of minute starts.
#[derive(Clone, Copy)]
pub struct CycleQuery<'a> {
    /// The keys read are this worker's; so are projects, providers, end users and scanning IPs
    /// when it is shard 0 (they are not sharded by key).
    pub shard: Shard,
    /// The first minute read: in the live worker, the first one its engine has not folded yet
    /// (`Engine::folded_through`, at most three hours back).
    pub from_minute: u32,
    /// The last minute read, included: the live worker's current (still open) minute, the
    /// last of a chunk of history in a warm-up or replay.
    pub to_minute: u32,
    /// The no-backoff and scanning thresholds some reads count against, and whether end users
    /// and scanning candidates are read at all.
    pub thresholds: &'a Thresholds,
    /// Whether keys' spend in the hour and day of `to_minute` is read (only when a budget is
    /// configured: the query costs a little).
    pub with_budgets: bool,
    /// Only what had happened before this instant (epoch ms): whole minutes before it from the
    /// rollups, its own minute from the raw events up to it. That is what a replay needs to
    /// judge a minute while it is still open, as the live detector does every few seconds.
    /// None reads everything stored.
    pub as_of_ms: Option<i64>,
}

/// Reads what `query` describes: minutes `[from_minute, to_minute]`, as of `as_of_ms`.
pub async fn fetch(
    client: &Client,
    query: &CycleQuery<'_>,
) -> Result<CycleData, clickhouse::error::Error> {
    let reads = sql::Reads::new(query);
    // Entities that are not keys are shard 0's; end users and scans only when asked for.
    let shared = query.shard.owns_shared();
    let read_users = shared && query.thresholds.users;
    let read_scans = shared && query.thresholds.scans;
    // Independent reads: concurrently, so a cycle waits for the slowest, not for their sum.
    let (
        keys,
        usage,
        retries,
        projects,
        overall,
        providers,
        key_failures,
        provider_buckets,
        provider_keys,
        provider_chains,
        users,
        scans,
        budgets,
    ) = tokio::try_join!(
        rows(client, Some(sql::key_minutes(&reads))),
        rows(client, Some(sql::usage(&reads))),
        rows(client, Some(sql::key_retries(&reads))),
        rows(client, shared.then(|| sql::project_spend_minutes(&reads))),
        rows(client, shared.then(|| sql::overall_spend_minutes(&reads))),
        rows(client, shared.then(|| sql::provider_minutes(&reads))),
        rows(client, Some(sql::key_provider_failures(&reads))),
        rows(client, Some(sql::provider_buckets(&reads))),
        rows(client, Some(sql::provider_key_failures(&reads))),
        rows(client, Some(sql::provider_chains(&reads))),
        rows(client, read_users.then(|| sql::user_uses(&reads))),
        rows(client, read_scans.then(|| sql::scan_candidates(&reads))),
        rows(client, query.with_budgets.then(|| sql::budget_uses(&reads))),
    )?;
    Ok(CycleData {
        keys,
        usage,
        users,
        retries,
        projects,
        overall,
        providers,
        key_failures,
        provider_buckets,
        provider_keys,
        provider_chains,
        scans,
        budgets,
        budget_minute: query.to_minute,
    })
}

/// Every SQL statement `query` could run (each read as if it were wanted, whatever the shard
/// and thresholds say), named after the rows it fills, and the two reads a replay adds: for
/// checking the detector's SQL on another ClickHouse version (`examples/cycle_sql.rs`, run by
/// `scripts/test.sh` against the current engine).
pub fn every_read(query: &CycleQuery<'_>) -> Vec<(&'static str, String)> {
    let r = sql::Reads::new(query);
    vec![
        ("key_minutes", sql::key_minutes(&r)),
        ("usage", sql::usage(&r)),
        ("key_retries", sql::key_retries(&r)),
        ("project_spend_minutes", sql::project_spend_minutes(&r)),
        ("overall_spend_minutes", sql::overall_spend_minutes(&r)),
        ("provider_minutes", sql::provider_minutes(&r)),
        ("key_provider_failures", sql::key_provider_failures(&r)),
        ("provider_buckets", sql::provider_buckets(&r)),
        ("provider_key_failures", sql::provider_key_failures(&r)),
        ("provider_chains", sql::provider_chains(&r)),
        ("user_uses", sql::user_uses(&r)),
        ("scan_candidates", sql::scan_candidates(&r)),
        ("budget_uses", sql::budget_uses(&r)),
        (
            "auth_failures",
            sql::auth_failures(query.from_minute, query.to_minute),
        ),
        (
            "key_spend",
            sql::key_spend(query.from_minute, query.to_minute),
        ),
    ]
}

/// The rows of `sql`, or none without a query.
async fn rows<T>(client: &Client, sql: Option<String>) -> Result<Vec<T>, clickhouse::error::Error>
where
    T: clickhouse::RowOwned + clickhouse::RowRead,
{
    match sql {
        Some(sql) => client.query_raw(&sql).fetch_all().await,
        None => Ok(Vec::new()),
    }
}
