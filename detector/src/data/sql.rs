//! The SQL of every read in [`super`], one function per read, named after the row type it fills.
//!
//! The rows are read as RowBinary, which maps columns to fields by position only: each SELECT
//! lists its columns in the order of the row type's fields, and names each `AS` the field it
//! fills (a bare column already named like its field is left as it is), so that a reader sees
//! which column fills which field. The names are only that: a wrong one reads the same rows,
//! which is why the tests below check them against the row types. Where an alias would change
//! the query, there is none:
//!
//! - A rollup's `toUInt32(minute)` fills `minute` unaliased: `minute` is the rollup's DateTime
//!   column, which WHERE and GROUP BY use, and a ClickHouse alias holds in the whole SELECT, so
//!   `AS minute` would put the UInt32 there. (The raw tables have no `minute` column: there,
//!   `toUInt32(toStartOfMinute(ts)) AS minute` is grouped by as `minute`.)
//! - A query over a subquery keeps the subquery's short aliases (`m`, `a`, `f`, `k`, `n`,
//!   `first`, `last`, `chain`, …), which its GROUP BY, HAVING, JOIN and outer SELECT refer to;
//!   only the outermost SELECT is named after the fields.
//!
//! An alias may repeat the name of the column its own expression reads
//! (`sumMerge(cost_usd) AS cost_usd`): inside that expression, ClickHouse reads the column. Such
//! a column must then be used nowhere else in that SELECT, where its name would mean the alias.

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
    /// The minutes read, on a raw table's `ts`: the raw half of a rollup read (`with_cut`
    /// adds the cut).
    ts_range: String,
    /// `ts_range`, and nothing after the cut: the reads of raw tables alone. Rollups have whole
    /// minutes only: with a cut, `with_cut` reads the whole minutes before it from the rollup
    /// and the rest from the raw table.
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
            "SELECT api_key_id, toUInt32(minute), \
               anyLastMerge(project) AS project, \
               countMerge(requests) AS requests, \
               sumMerge(errors_auth) + sumMerge(errors_rate_limited) + sumMerge(errors_client) + sumMerge(errors_server) AS failures, \
               sumMerge(errors_rate_limited) + sumMerge(errors_server) AS throttled, \
               sumMerge(errors_auth) AS auth_failures, \
               sumMerge(retries) AS retries, \
               sumMerge(cost_usd) AS cost_usd, \
               sumMerge(prompt_tokens) + sumMerge(completion_tokens) AS tokens, \
               uniqIfMerge(distinct_ips) AS distinct_ips \
             FROM {KEY_ROLLUP_TABLE} WHERE {range} AND {keys_filter}"
        ),
        "GROUP BY api_key_id, minute",
        &format!(
            "SELECT api_key_id, toUInt32(toStartOfMinute(ts)) AS minute, \
               anyLast(project) AS project, \
               count() AS requests, \
               countIf(status >= 400) AS failures, \
               countIf(status = 429 OR status >= 500) AS throttled, \
               countIf(status IN (401, 403)) AS auth_failures, \
               countIf(attempt > 1) AS retries, \
               sum(cost_usd) AS cost_usd, \
               sum(prompt_tokens) + sum(completion_tokens) AS tokens, \
               uniqIf(client_ip, client_ip != '') AS distinct_ips \
             FROM {GATEWAY_TABLE} WHERE {ts_range} AND {keys_filter}"
        ),
        "GROUP BY api_key_id, minute",
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
        "SELECT api_key_id, toUInt32(toStartOfMinute(ts)) AS minute, \
           client_country AS country, client_asn AS asn, client_as_org AS as_org, model, user_agent, \
           count() AS requests, min(ts_ms) AS first_ms, max(ts_ms) AS last_ms \
         FROM {GATEWAY_TABLE} WHERE {raw_ts_range} AND {keys_filter} \
         AND status NOT IN (401, 403) \
         GROUP BY api_key_id, minute, client_country, client_asn, client_as_org, model, user_agent"
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
        "SELECT api_key_id, m AS minute, sum(attempts) AS provider_attempts, sum(successes) AS provider_successes, \
           sum(chains) AS chains, sum(fast) AS fast_chains FROM ( \
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
            "SELECT project AS entity, toUInt32(minute), sumMerge(cost_usd) AS cost_usd \
             FROM {PROJECT_ROLLUP_TABLE} WHERE {range} AND project != ''"
        ),
        "GROUP BY project, minute",
        &format!(
            "SELECT project AS entity, toUInt32(toStartOfMinute(ts)) AS minute, sum(cost_usd) AS cost_usd \
             FROM {GATEWAY_TABLE} WHERE {ts_range} AND project != ''"
        ),
        "GROUP BY project, minute",
    )
}

/// [`super::SpendMinute`]s of everyone (the entity is empty).
pub(super) fn overall_spend_minutes(r: &Reads) -> String {
    let Reads {
        range, ts_range, ..
    } = r;
    r.with_cut(
        &format!(
            "SELECT '' AS entity, toUInt32(minute), sumMerge(cost_usd) AS cost_usd \
             FROM {PROJECT_ROLLUP_TABLE} WHERE {range}"
        ),
        "GROUP BY minute",
        &format!(
            "SELECT '' AS entity, toUInt32(toStartOfMinute(ts)) AS minute, sum(cost_usd) AS cost_usd \
             FROM {GATEWAY_TABLE} WHERE {ts_range}"
        ),
        "GROUP BY minute",
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
        "SELECT api_key_id, toUInt32(toStartOfMinute(ts)) AS minute, provider, model, \
           count() AS attempts, countIf({THROTTLED}) AS failures, \
           toInt64(minIf(ts_ms, {THROTTLED})) AS first_ms, toInt64(maxIf(ts_ms, {THROTTLED})) AS last_ms \
         FROM {PROVIDER_TABLE} WHERE {recent_ts_range} AND {keys_filter} \
         GROUP BY api_key_id, minute, provider, model HAVING countIf({THROTTLED}) > 0"
    )
}

/// [`super::ProviderBucket`]s: every key's attempts.
pub(super) fn provider_buckets(r: &Reads) -> String {
    let recent_ts_range = &r.recent_ts_range;
    format!(
        "SELECT provider, model, toUInt32(toStartOfMinute(ts)) AS minute, \
           toUInt32(intDiv(ts_ms, {ms}) * {PROVIDER_BUCKET_S}) AS bucket, \
           count() AS attempts, countIf({THROTTLED}) AS failures, countIf(attempt <= 1) AS first_attempts \
         FROM {PROVIDER_TABLE} WHERE {recent_ts_range} GROUP BY provider, model, minute, bucket",
        ms = PROVIDER_BUCKET_S * 1000
    )
}

/// [`super::ProviderKeyFailures`]: the keys failing most on each provider/model and minute,
/// joined to how many keys failed there. The joined subqueries are named (`failing`, `keys`):
/// ClickHouse from 20.x refuses unnamed ones (`joined_subquery_requires_alias`).
pub(super) fn provider_key_failures(r: &Reads) -> String {
    let recent_ts_range = &r.recent_ts_range;
    format!(
        "SELECT provider, model, m AS minute, api_key_id, a AS attempts, f AS failures, k AS failing_keys, c AS calling_keys FROM ( \
           SELECT provider, model, toUInt32(toStartOfMinute(ts)) AS m, api_key_id, count() AS a, countIf({THROTTLED}) AS f \
           FROM {PROVIDER_TABLE} WHERE {recent_ts_range} GROUP BY provider, model, m, api_key_id HAVING f > 0) AS failing \
         ANY LEFT JOIN ( \
           SELECT provider, model, toUInt32(toStartOfMinute(ts)) AS m, uniqExactIf(api_key_id, {THROTTLED}) AS k, uniqExact(api_key_id) AS c \
           FROM {PROVIDER_TABLE} WHERE {recent_ts_range} GROUP BY provider, model, m) AS keys \
         USING (provider, model, m) \
         ORDER BY provider, model, m, f DESC, api_key_id LIMIT {PROVIDER_TOP_KEYS} BY provider, model, m"
    )
}

/// [`super::ProviderChains`]: repeated request ids upstream and repeated idempotency keys, and
/// how many client requests were repeats.
pub(super) fn provider_chains(r: &Reads) -> String {
    let recent_ts_range = &r.recent_ts_range;
    format!(
        "SELECT provider, model, m AS minute, count() AS chains, countIf((last - first) / (n - 1) < {nb}) AS fast_chains, \
           sum(repeats) AS client_retries FROM ( \
           SELECT provider, model, toUInt32(toStartOfMinute(ts)) AS m, request_id AS chain, count() AS n, \
                  min(ts_ms - latency_ms) AS first, max(ts_ms - latency_ms) AS last, toUInt64(0) AS repeats \
           FROM {PROVIDER_TABLE} WHERE {recent_ts_range} AND request_id != '' \
           GROUP BY provider, model, m, chain HAVING n > 1 \
           UNION ALL \
           SELECT provider, model, toUInt32(toStartOfMinute(ts)) AS m, idempotency_key AS chain, count() AS n, \
                  min(ts_ms) AS first, max(ts_ms) AS last, toUInt64(count() - 1) AS repeats \
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
            "SELECT provider, model, toUInt32(minute), countMerge(attempts) AS attempts, sumMerge(successes) AS successes \
             FROM {PROVIDER_ROLLUP_TABLE} WHERE {range}"
        ),
        "GROUP BY provider, model, minute",
        &format!(
            "SELECT provider, model, toUInt32(toStartOfMinute(ts)) AS minute, count() AS attempts, countIf(status < 400) AS successes \
             FROM {PROVIDER_TABLE} WHERE {ts_range}"
        ),
        "GROUP BY provider, model, minute",
    )
}

/// [`super::UserUse`]s: end users' requests that were not refused, where their country is
/// known.
pub(super) fn user_uses(r: &Reads) -> String {
    let raw_ts_range = &r.raw_ts_range;
    format!(
        "SELECT user, toUInt32(toStartOfMinute(ts)) AS minute, client_country AS country, any(api_key_id) AS api_key_id, \
           count() AS requests, min(ts_ms) AS first_ms, max(ts_ms) AS last_ms \
         FROM {GATEWAY_TABLE} \
         WHERE {raw_ts_range} AND user != '' AND client_country != '' AND status NOT IN (401, 403) \
         GROUP BY user, minute, client_country"
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
        "SELECT client_ip, uniqExact(api_key_id) AS keys, count() AS requests, min(ts_ms) AS first_ms, max(ts_ms) AS last_ms \
         FROM {GATEWAY_TABLE} \
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
            "SELECT api_key_id, anyLast(project) AS project, sum(hour_usd) AS hour_usd, sum(day_usd) AS day_usd, \
               sum(last_hour_usd) AS last_hour_usd \
             FROM ({}) GROUP BY api_key_id",
            r.with_cut(
                &rollup,
                "GROUP BY api_key_id",
                &format!(
                    "SELECT api_key_id, anyLast(project) AS project, sumIf(cost_usd, ts >= {hour}) AS hour_usd, \
                       sum(cost_usd) AS day_usd, sumIf(cost_usd, ts > {last_hour}) AS last_hour_usd \
                     FROM {GATEWAY_TABLE} WHERE ts >= {day} AND {keys_filter}"
                ),
                "GROUP BY api_key_id",
            )
        ),
    }
}

/// [`super::AuthFailures`] in minutes `[from_minute, to_minute]`.
pub(super) fn auth_failures(from_minute: u32, to_minute: u32) -> String {
    format!(
        "SELECT client_ip, toUInt32(toStartOfMinute(ts)) AS minute, api_key_id, \
           count() AS requests, min(ts_ms) AS first_ms, max(ts_ms) AS last_ms \
         FROM {GATEWAY_TABLE} WHERE ts >= toDateTime({from_minute}) AND ts < toDateTime({}) \
         AND status IN (401, 403) AND client_ip != '' GROUP BY client_ip, minute, api_key_id",
        to_minute + 60
    )
}

/// Each key's (id, project, minute, spend) in `[from_minute, to_minute)`. A tuple, not a row
/// type: its columns are not named after fields (and `toUInt32(minute)` could not be, see
/// above).
pub(super) fn key_spend(from_minute: u32, to_minute: u32) -> String {
    format!(
        "SELECT api_key_id, anyLastMerge(project), toUInt32(minute), sumMerge(cost_usd) FROM {KEY_ROLLUP_TABLE} \
         WHERE minute >= toDateTime({from_minute}) AND minute < toDateTime({to_minute}) \
         GROUP BY api_key_id, minute ORDER BY api_key_id, minute"
    )
}

#[cfg(test)]
mod tests {
    use serde::de::{self, Deserialize, Deserializer, Visitor};

    use super::*;
    use crate::data::{
        AuthFailures, BudgetUse, KeyMinute, KeyProviderFailures, KeyRetries, ProviderBucket,
        ProviderChains, ProviderKeyFailures, ProviderMinute, ScanCandidate, Shard, SpendMinute,
        Thresholds, Usage, UserUse,
    };

    /// The fields of `T`, in order, as serde (and so RowBinary) reads them.
    fn fields<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
        struct Fields(&'static [&'static str]);
        impl<'de> Deserializer<'de> for &mut Fields {
            type Error = de::value::Error;
            fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
                Err(de::Error::custom("not a struct"))
            }
            fn deserialize_struct<V: Visitor<'de>>(
                self,
                _: &'static str,
                fields: &'static [&'static str],
                _: V,
            ) -> Result<V::Value, Self::Error> {
                self.0 = fields;
                Err(de::Error::custom("fields read"))
            }
            serde::forward_to_deserialize_any! {
                bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
                byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
                identifier ignored_any
            }
        }
        let mut fields = Fields(&[]);
        let _ = T::deserialize(&mut fields);
        fields.0
    }

    /// `sql` cut at the commas, UNION ALLs, … that are outside parentheses and quotes.
    fn split_top<'s>(sql: &'s str, separator: &str) -> Vec<&'s str> {
        let (mut parts, mut depth, mut quoted, mut start) = (Vec::new(), 0, false, 0);
        let mut chars = sql.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' if quoted => {
                    chars.next();
                }
                '\'' => quoted = !quoted,
                '(' if !quoted => depth += 1,
                ')' if !quoted => depth -= 1,
                _ if !quoted && depth == 0 && sql[i..].starts_with(separator) => {
                    parts.push(&sql[start..i]);
                    start = i + separator.len();
                }
                _ => {}
            }
        }
        parts.push(&sql[start..]);
        parts
    }

    /// Each column of a SELECT: its expression, and its name (its alias, or a bare column's
    /// own name) if it has one.
    fn columns(select: &str) -> Vec<(&str, Option<&str>)> {
        let bare = |name: &str| name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        let list = select.trim().strip_prefix("SELECT ").expect(select);
        let list = split_top(list, " FROM ")[0];
        split_top(list, ",")
            .into_iter()
            .map(|item| match split_top(item.trim(), " AS ")[..] {
                [expression, alias] if bare(alias) => (expression, Some(alias)),
                [column] if bare(column) => (column, Some(column)),
                [expression, ..] => (expression, None),
                [] => unreachable!(),
            })
            .collect()
    }

    /// What is wrong with the names of `sql`'s columns, if anything: every UNION ALL branch
    /// must name them after `T`'s fields, in order (bar a rollup's `toUInt32(minute)`).
    fn misnamed<'de, T: Deserialize<'de>>(sql: &str) -> Option<String> {
        let fields = fields::<T>();
        for branch in split_top(sql, " UNION ALL ") {
            let columns = columns(branch);
            if columns.len() != fields.len() {
                return Some(format!(
                    "{} columns for {fields:?}: {branch}",
                    columns.len()
                ));
            }
            for ((expression, name), field) in columns.into_iter().zip(fields) {
                let fine = match name {
                    Some(name) => name == *field,
                    None => (expression, *field) == ("toUInt32(minute)", "minute"),
                };
                if !fine {
                    return Some(format!("{expression} AS {name:?} fills {field}: {branch}"));
                }
            }
        }
        None
    }

    fn assert_named<'de, T: Deserialize<'de>>(sql: &str) {
        assert_eq!(misnamed::<T>(sql), None);
    }

    /// The SQL inside the outermost `FROM ( … )` of `sql`.
    fn subquery(sql: &str) -> &str {
        let from = split_top(sql, " FROM ")[1].trim_start();
        let inner = from.strip_prefix('(').expect(sql);
        split_top(inner, ")")[0]
    }

    #[test]
    fn every_read_names_its_columns_after_the_fields_they_fill() {
        for users in [false, true] {
            let thresholds = Thresholds {
                no_backoff_ms: 500.0,
                scan_min_keys: 5,
                users,
                scans: true,
            };
            for (shard, as_of_ms) in [
                (Shard { index: 0, count: 1 }, None),
                (Shard { index: 1, count: 3 }, Some(1_700_000_030_500)),
            ] {
                let query = CycleQuery {
                    shard,
                    from_minute: 1_699_999_800,
                    to_minute: 1_700_000_040,
                    thresholds: &thresholds,
                    with_budgets: true,
                    as_of_ms,
                };
                let r = Reads::new(&query);
                assert_named::<KeyMinute>(&key_minutes(&r));
                assert_named::<Usage>(&usage(&r));
                assert_named::<KeyRetries>(&key_retries(&r));
                assert_named::<SpendMinute>(&project_spend_minutes(&r));
                assert_named::<SpendMinute>(&overall_spend_minutes(&r));
                assert_named::<KeyProviderFailures>(&key_provider_failures(&r));
                assert_named::<ProviderBucket>(&provider_buckets(&r));
                assert_named::<ProviderKeyFailures>(&provider_key_failures(&r));
                assert_named::<ProviderChains>(&provider_chains(&r));
                assert_named::<ProviderMinute>(&provider_minutes(&r));
                assert_named::<UserUse>(&user_uses(&r));
                assert_named::<ScanCandidate>(&scan_candidates(&r));
                let budgets = budget_uses(&r);
                assert_named::<BudgetUse>(&budgets);
                if as_of_ms.is_some() {
                    // The rollup and raw branches under the sum, too.
                    assert_named::<BudgetUse>(subquery(&budgets));
                }
            }
        }
        assert_named::<AuthFailures>(&auth_failures(1_699_999_800, 1_700_000_040));
    }

    /// The check does catch a column out of place, a missing one and a wrong name.
    #[test]
    fn the_name_check_catches_misnamed_columns() {
        let fine = |sql: &str| misnamed::<SpendMinute>(sql).is_none();
        assert!(fine(
            "SELECT '' AS entity, toUInt32(minute), sum(x) AS cost_usd FROM t"
        ));
        assert!(fine(
            "SELECT project AS entity, m AS minute, cost_usd FROM (SELECT a, b) GROUP BY m"
        ));
        assert!(!fine(
            "SELECT '' AS entity, sum(x) AS cost_usd, toUInt32(minute) FROM t"
        ));
        assert!(!fine("SELECT '' AS entity, toUInt32(minute) FROM t"));
        assert!(!fine(
            "SELECT project, toUInt32(minute), sum(x) AS cost_usd FROM t"
        ));
        assert!(!fine("SELECT '' AS entity, m, sum(x) AS cost_usd FROM t"));
        assert!(!fine(
            "SELECT '' AS entity, toUInt32(minute), sum(x) AS cost_usd FROM t \
             UNION ALL SELECT '' AS entity, m AS minute, sum(x) AS usd FROM u"
        ));
    }
}
