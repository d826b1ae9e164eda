//! The SQL of every read in [`super`], one function per read, named after the row type it fills.
//! The rows are read as RowBinary, which maps columns to fields by position only: each SELECT
//! lists its columns in the order of the row type's fields.

use tripline_store::{
    GATEWAY_TABLE, KEY_ROLLUP_TABLE, PROJECT_ROLLUP_TABLE, PROVIDER_ROLLUP_TABLE, PROVIDER_TABLE,
};

use super::{CycleQuery, PROVIDER_BUCKET_S, PROVIDER_TOP_KEYS};

/// What the reads of one cycle share, worked out once from its [`CycleQuery`].
pub(super) struct Reads<'a> {
    query: CycleQuery<'a>,
    /// The shard's keys, on `api_key_id`.
    keys_filter: String,
    /// The minutes read, on a rollup's `minute`.
    range: String,
    /// The minutes read, on a raw table's `ts`.
    ts_range: String,
    /// `ts_range`, and nothing after the cut. Rollups have whole minutes only: before the cut,
    /// they are read whole minutes before it and the rest from the raw table (`with_cut`).
    raw_ts_range: String,
    /// From the minute before the first one read (already folded), and nothing after the cut:
    /// provider storms, and the keys caught in them, are judged over the last 60 s, which reach
    /// into it.
    recent_ts_range: String,
    cut: Option<Cut>,
}

impl<'a> Reads<'a> {
    pub(super) fn new(query: &CycleQuery<'a>) -> Self {
        let &CycleQuery {
            shard,
            from_minute,
            to_minute,
            as_of_ms,
            ..
        } = query;
        let range =
            format!("minute >= toDateTime({from_minute}) AND minute <= toDateTime({to_minute})");
        let ts_range = format!(
            "ts >= toDateTime({from_minute}) AND ts < toDateTime({})",
            to_minute + 60
        );
        let cut = as_of_ms.map(Cut::at);
        let raw_ts_range = match &cut {
            Some(cut) => format!("{ts_range} AND ts_ms < {}", cut.ms),
            None => ts_range.clone(),
        };
        let recent_ts_range = {
            let range = format!(
                "ts >= toDateTime({}) AND ts < toDateTime({})",
                from_minute.saturating_sub(60),
                to_minute + 60
            );
            match &cut {
                Some(cut) => format!("{range} AND ts_ms < {}", cut.ms),
                None => range,
            }
        };
        Self {
            query: *query,
            keys_filter: shard.key_filter(),
            range,
            ts_range,
            raw_ts_range,
            recent_ts_range,
            cut,
        }
    }

    /// A rollup read, and with a cut, whole minutes before it from the rollup and the rest
    /// from the raw table. `rollup_where` and `raw` end in a WHERE clause, each group clause
    /// follows it.
    fn with_cut(
        &self,
        rollup_where: &str,
        rollup_group: &str,
        raw: &str,
        raw_group: &str,
    ) -> String {
        match &self.cut {
            None => format!("{rollup_where} {rollup_group}"),
            Some(cut) => format!(
                "{rollup_where} AND minute < toDateTime({m}) {rollup_group} \
                 UNION ALL {raw} AND ts >= toDateTime({m}) AND ts_ms < {ms} {raw_group}",
                m = cut.minute,
                ms = cut.ms,
            ),
        }
    }
}

/// Where a replay stops reading: the instant, and the start of its (open) minute.
struct Cut {
    ms: i64,
    minute: u32,
}

impl Cut {
    fn at(ms: i64) -> Self {
        Self {
            ms,
            minute: (ms.div_euclid(60_000) * 60) as u32,
        }
    }
}

/// Answers 429 or 5xx.
const THROTTLED: &str = "status = 429 OR status >= 500";

/// [`super::KeyMinute`]s: the shard's keys.
pub(super) fn key_minutes(r: &Reads) -> String {
    let Reads {
        range,
        ts_range,
        keys_filter,
        ..
    } = r;
    r.with_cut(
        &format!(
            "SELECT api_key_id, toUInt32(minute), anyLastMerge(project), countMerge(requests), \
             sumMerge(errors_auth) + sumMerge(errors_rate_limited) + sumMerge(errors_client) + sumMerge(errors_server), \
             sumMerge(errors_rate_limited) + sumMerge(errors_server), sumMerge(errors_auth), sumMerge(retries), sumMerge(cost_usd), \
             sumMerge(prompt_tokens) + sumMerge(completion_tokens), uniqIfMerge(distinct_ips) \
             FROM {KEY_ROLLUP_TABLE} WHERE {range} AND {keys_filter}"
        ),
        "GROUP BY api_key_id, minute",
        &format!(
            "SELECT api_key_id, toUInt32(toStartOfMinute(ts)) AS m, anyLast(project), count(), \
             countIf(status >= 400), countIf(status = 429 OR status >= 500), countIf(status IN (401, 403)), countIf(attempt > 1), sum(cost_usd), \
             sum(prompt_tokens) + sum(completion_tokens), uniqIf(client_ip, client_ip != '') \
             FROM {GATEWAY_TABLE} WHERE {ts_range} AND {keys_filter}"
        ),
        "GROUP BY api_key_id, m",
    )
}

/// [`super::Usage`]: the shard's keys' requests that were not refused.
pub(super) fn usage(r: &Reads) -> String {
    let Reads {
        raw_ts_range,
        keys_filter,
        ..
    } = r;
    format!(
        "SELECT api_key_id, toUInt32(toStartOfMinute(ts)) AS m, client_country, client_asn, client_as_org, model, user_agent, \
         count(), min(ts_ms), max(ts_ms) FROM {GATEWAY_TABLE} WHERE {raw_ts_range} AND {keys_filter} \
         AND status NOT IN (401, 403) \
         GROUP BY api_key_id, m, client_country, client_asn, client_as_org, model, user_agent"
    )
}

/// [`super::KeyRetries`]: the shard's keys' provider attempts, and their repeated idempotency
/// keys.
pub(super) fn key_retries(r: &Reads) -> String {
    let Reads {
        raw_ts_range,
        keys_filter,
        ..
    } = r;
    format!(
        "SELECT api_key_id, m, sum(attempts), sum(successes), sum(chains), sum(fast) FROM ( \
           SELECT api_key_id, toUInt32(toStartOfMinute(ts)) AS m, count() AS attempts, countIf(status < 400) AS successes, \
                  toUInt64(0) AS chains, toUInt64(0) AS fast \
           FROM {PROVIDER_TABLE} WHERE {raw_ts_range} AND {keys_filter} GROUP BY api_key_id, m \
           UNION ALL \
           SELECT api_key_id, m, toUInt64(0), toUInt64(0), count(), countIf((last - first) / (n - 1) < {nb}) FROM ( \
             SELECT api_key_id, idempotency_key, toUInt32(toStartOfMinute(ts)) AS m, count() AS n, min(ts_ms) AS first, max(ts_ms) AS last \
             FROM {GATEWAY_TABLE} WHERE {raw_ts_range} AND {keys_filter} AND idempotency_key != '' \
             GROUP BY api_key_id, idempotency_key, m HAVING n > 1) \
           GROUP BY api_key_id, m) \
         GROUP BY api_key_id, m",
        nb = r.query.thresholds.no_backoff_ms
    )
}

/// [`super::SpendMinute`]s of each named project.
pub(super) fn project_spend_minutes(r: &Reads) -> String {
    let Reads {
        range, ts_range, ..
    } = r;
    r.with_cut(
        &format!(
            "SELECT project, toUInt32(minute), sumMerge(cost_usd) FROM {PROJECT_ROLLUP_TABLE} \
             WHERE {range} AND project != ''"
        ),
        "GROUP BY project, minute",
        &format!(
            "SELECT project, toUInt32(toStartOfMinute(ts)) AS m, sum(cost_usd) FROM {GATEWAY_TABLE} \
             WHERE {ts_range} AND project != ''"
        ),
        "GROUP BY project, m",
    )
}

/// [`super::SpendMinute`]s of everyone (the entity is empty).
pub(super) fn overall_spend_minutes(r: &Reads) -> String {
    let Reads {
        range, ts_range, ..
    } = r;
    r.with_cut(
        &format!(
            "SELECT '', toUInt32(minute), sumMerge(cost_usd) FROM {PROJECT_ROLLUP_TABLE} WHERE {range}"
        ),
        "GROUP BY minute",
        &format!(
            "SELECT '', toUInt32(toStartOfMinute(ts)) AS m, sum(cost_usd) FROM {GATEWAY_TABLE} WHERE {ts_range}"
        ),
        "GROUP BY m",
    )
}

/// [`super::KeyProviderFailures`]: the shard's keys' attempts on provider/models that answered
/// some of them 429 or 5xx.
pub(super) fn key_provider_failures(r: &Reads) -> String {
    let Reads {
        recent_ts_range,
        keys_filter,
        ..
    } = r;
    format!(
        "SELECT api_key_id, toUInt32(toStartOfMinute(ts)) AS m, provider, model, count(), countIf({THROTTLED}), \
         toInt64(minIf(ts_ms, {THROTTLED})), toInt64(maxIf(ts_ms, {THROTTLED})) \
         FROM {PROVIDER_TABLE} WHERE {recent_ts_range} AND {keys_filter} \
         GROUP BY api_key_id, m, provider, model HAVING countIf({THROTTLED}) > 0"
    )
}

/// [`super::ProviderBucket`]s: every key's attempts.
pub(super) fn provider_buckets(r: &Reads) -> String {
    let recent_ts_range = &r.recent_ts_range;
    format!(
        "SELECT provider, model, toUInt32(toStartOfMinute(ts)) AS m, \
         toUInt32(intDiv(ts_ms, {ms}) * {PROVIDER_BUCKET_S}) AS b, count(), countIf({THROTTLED}), \
         countIf(attempt <= 1) \
         FROM {PROVIDER_TABLE} WHERE {recent_ts_range} GROUP BY provider, model, m, b",
        ms = PROVIDER_BUCKET_S * 1000
    )
}

/// [`super::ProviderKeyFailures`]: the keys failing most on each provider/model and minute,
/// joined to how many keys failed there.
pub(super) fn provider_key_failures(r: &Reads) -> String {
    let recent_ts_range = &r.recent_ts_range;
    format!(
        "SELECT provider, model, m, api_key_id, a, f, k FROM ( \
           SELECT provider, model, toUInt32(toStartOfMinute(ts)) AS m, api_key_id, count() AS a, countIf({THROTTLED}) AS f \
           FROM {PROVIDER_TABLE} WHERE {recent_ts_range} GROUP BY provider, model, m, api_key_id HAVING f > 0) \
         ANY LEFT JOIN ( \
           SELECT provider, model, toUInt32(toStartOfMinute(ts)) AS m, uniqExactIf(api_key_id, {THROTTLED}) AS k \
           FROM {PROVIDER_TABLE} WHERE {recent_ts_range} GROUP BY provider, model, m) \
         USING (provider, model, m) \
         ORDER BY provider, model, m, f DESC, api_key_id LIMIT {PROVIDER_TOP_KEYS} BY provider, model, m"
    )
}

/// [`super::ProviderChains`]: repeated request ids upstream and repeated idempotency keys.
pub(super) fn provider_chains(r: &Reads) -> String {
    let recent_ts_range = &r.recent_ts_range;
    format!(
        "SELECT provider, model, m, count(), countIf((last - first) / (n - 1) < {nb}) FROM ( \
           SELECT provider, model, toUInt32(toStartOfMinute(ts)) AS m, request_id AS chain, count() AS n, \
                  min(ts_ms - latency_ms) AS first, max(ts_ms - latency_ms) AS last \
           FROM {PROVIDER_TABLE} WHERE {recent_ts_range} AND request_id != '' \
           GROUP BY provider, model, m, chain HAVING n > 1 \
           UNION ALL \
           SELECT provider, model, toUInt32(toStartOfMinute(ts)) AS m, idempotency_key AS chain, count() AS n, \
                  min(ts_ms) AS first, max(ts_ms) AS last \
           FROM {GATEWAY_TABLE} WHERE {recent_ts_range} AND idempotency_key != '' \
           GROUP BY provider, model, m, chain HAVING n > 1) \
         GROUP BY provider, model, m",
        nb = r.query.thresholds.no_backoff_ms
    )
}

/// [`super::ProviderMinute`]s.
pub(super) fn provider_minutes(r: &Reads) -> String {
    let Reads {
        range, ts_range, ..
    } = r;
    r.with_cut(
        &format!(
            "SELECT provider, model, toUInt32(minute), countMerge(attempts), sumMerge(successes) \
             FROM {PROVIDER_ROLLUP_TABLE} WHERE {range}"
        ),
        "GROUP BY provider, model, minute",
        &format!(
            "SELECT provider, model, toUInt32(toStartOfMinute(ts)) AS m, count(), countIf(status < 400) \
             FROM {PROVIDER_TABLE} WHERE {ts_range}"
        ),
        "GROUP BY provider, model, m",
    )
}

/// [`super::UserUse`]s: end users' requests that were not refused, where their country is
/// known.
pub(super) fn user_uses(r: &Reads) -> String {
    let raw_ts_range = &r.raw_ts_range;
    format!(
        "SELECT user, toUInt32(toStartOfMinute(ts)) AS m, client_country, any(api_key_id), \
         count(), min(ts_ms), max(ts_ms) FROM {GATEWAY_TABLE} \
         WHERE {raw_ts_range} AND user != '' AND client_country != '' AND status NOT IN (401, 403) \
         GROUP BY user, m, client_country"
    )
}

/// [`super::ScanCandidate`]s: IPs refused on at least `scan_min_keys` keys in the last five
/// minutes read.
pub(super) fn scan_candidates(r: &Reads) -> String {
    let to_minute = r.query.to_minute;
    let scan_ts = match &r.cut {
        Some(cut) => format!("AND ts_ms < {}", cut.ms),
        None => String::new(),
    };
    format!(
        "SELECT client_ip, uniqExact(api_key_id) AS keys, count(), min(ts_ms), max(ts_ms) FROM {GATEWAY_TABLE} \
         WHERE ts >= toDateTime({}) AND ts < toDateTime({}) {scan_ts} AND status IN (401, 403) AND client_ip != '' \
         GROUP BY client_ip HAVING keys >= {}",
        to_minute.saturating_sub(240),
        to_minute + 60,
        r.query.thresholds.scan_min_keys
    )
}

/// [`super::BudgetUse`]s: the shard's keys' spend in the hour and day of `to_minute`.
pub(super) fn budget_uses(r: &Reads) -> String {
    let to_minute = r.query.to_minute;
    let keys_filter = &r.keys_filter;
    // Hours and days in UTC, whatever the server's timezone, as the replay sums them.
    let hour = format!("toDateTime({})", to_minute - to_minute % 3600);
    let day = format!("toDateTime({})", to_minute - to_minute % 86_400);
    let last_hour = format!("toDateTime({to_minute}) - 3600");
    let rollup = format!(
        "SELECT api_key_id, anyLastMerge(project) AS project, \
         sumMergeIf(cost_usd, minute >= {hour}) AS hour_usd, \
         sumMerge(cost_usd) AS day_usd, \
         sumMergeIf(cost_usd, minute > {last_hour}) AS last_hour_usd \
         FROM {KEY_ROLLUP_TABLE} WHERE minute >= {day} AND {keys_filter}"
    );
    match &r.cut {
        None => format!("{rollup} GROUP BY api_key_id"),
        Some(_) => format!(
            "SELECT api_key_id, anyLast(project), sum(hour_usd), sum(day_usd), sum(last_hour_usd) FROM ({}) \
             GROUP BY api_key_id",
            r.with_cut(
                &rollup,
                "GROUP BY api_key_id",
                &format!(
                    "SELECT api_key_id, anyLast(project), sumIf(cost_usd, ts >= {hour}), sum(cost_usd), \
                     sumIf(cost_usd, ts > {last_hour}) FROM {GATEWAY_TABLE} \
                     WHERE ts >= {day} AND {keys_filter}"
                ),
                "GROUP BY api_key_id",
            )
        ),
    }
}

/// [`super::AuthFailures`] in minutes `[from_minute, to_minute]`.
pub(super) fn auth_failures(from_minute: u32, to_minute: u32) -> String {
    format!(
        "SELECT client_ip, toUInt32(toStartOfMinute(ts)) AS m, api_key_id, count(), min(ts_ms), max(ts_ms) \
         FROM {GATEWAY_TABLE} WHERE ts >= toDateTime({from_minute}) AND ts < toDateTime({}) \
         AND status IN (401, 403) AND client_ip != '' GROUP BY client_ip, m, api_key_id",
        to_minute + 60
    )
}

/// Each key's (id, project, minute, spend) in `[from_minute, to_minute)`.
pub(super) fn key_spend(from_minute: u32, to_minute: u32) -> String {
    format!(
        "SELECT api_key_id, anyLastMerge(project), toUInt32(minute), sumMerge(cost_usd) FROM {KEY_ROLLUP_TABLE} \
         WHERE minute >= toDateTime({from_minute}) AND minute < toDateTime({to_minute}) \
         GROUP BY api_key_id, minute ORDER BY api_key_id, minute"
    )
}
