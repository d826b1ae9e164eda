//! Evidence for a new alert: the top client IPs, countries, networks, models and user agents of
//! the flagged entity around the flagged window, and a few example request ids.

use clickhouse::Client;
use tripline_core::alert::{Alert, Counted};
use tripline_store::{sql_string as quote, GATEWAY_TABLE};

#[derive(clickhouse::Row, serde::Deserialize)]
struct Top {
    value: String,
    count: u64,
}

/// Fills `alert.evidence` from raw requests; facts set by the detector are kept.
pub async fn attach(client: &Client, alert: &mut Alert) -> Result<(), clickhouse::error::Error> {
    let Some(filter) = entity_filter(alert) else {
        return Ok(());
    };
    let start = alert.window_start / 1000;
    let end = alert.window_end / 1000;
    // At least the last five minutes, so that an early (partial-window) alert has something.
    let window = format!(
        "ts >= toDateTime({}) AND ts <= toDateTime({})",
        start.min(end - 300),
        end.max(start + 60)
    );
    let top = |expr: &str| {
        format!(
            "SELECT {expr} AS value, count() AS count FROM {GATEWAY_TABLE} WHERE {window} AND {filter} \
             AND value != '' AND value != '0' GROUP BY value ORDER BY count DESC, value LIMIT 5"
        )
    };
    let e = &mut alert.evidence;
    e.top_ips = fetch(client, &top("client_ip")).await?;
    e.countries = fetch(client, &top("client_country")).await?;
    e.asns = fetch(
        client,
        &top("concat('AS', toString(client_asn), ' ', client_as_org)"),
    )
    .await?;
    e.models = fetch(client, &top("model")).await?;
    e.user_agents = fetch(client, &top("user_agent")).await?;
    e.request_ids = client
        .query_raw(&format!(
            "SELECT if(request_id != '', request_id, event_id) FROM {GATEWAY_TABLE} WHERE {window} AND {filter} \
             ORDER BY ts DESC LIMIT 5"
        ))
        .fetch_all()
        .await?;
    Ok(())
}

async fn fetch(client: &Client, sql: &str) -> Result<Vec<Counted>, clickhouse::error::Error> {
    let rows: Vec<Top> = client.query_raw(sql).fetch_all().await?;
    Ok(rows
        .into_iter()
        .map(|t| Counted {
            value: t.value,
            count: t.count,
        })
        .collect())
}

/// The SQL condition selecting the alert's entity, with values quoted safely.
fn entity_filter(alert: &Alert) -> Option<String> {
    let l = &alert.labels;
    let eq = |column: &str, value: &String| format!("{column} = {}", quote(value));
    if let Some(key) = l.get("api_key_id") {
        return Some(eq("api_key_id", key));
    }
    if let Some(ip) = l.get("client_ip") {
        return Some(eq("client_ip", ip));
    }
    if let Some(user) = l.get("user") {
        return Some(eq("user", user));
    }
    if let (Some(provider), Some(model)) = (l.get("provider"), l.get("model")) {
        return Some(format!(
            "{} AND {}",
            eq("provider", provider),
            eq("model", model)
        ));
    }
    if let Some(project) = l.get("project") {
        return Some(eq("project", project));
    }
    l.get("scope").map(|_| "1".to_owned())
}

#[cfg(test)]
mod tests {
    use super::quote;

    #[test]
    fn quoting_escapes_quotes_and_backslashes() {
        assert_eq!(quote("k'1\\"), r"'k\'1\\'");
    }
}
