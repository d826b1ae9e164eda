use super::*;
use crate::receivers::fixtures::{alert, counted, message as notification};

const HOSTILE: &str = "<!channel> <!here|x> <@U123> <#C42> <http://evil.example|click me> @here \
                       @channel *bold* _it_ ~strike~ `code` ```block``` &amp; > quote\nline2\u{7}";

/// Every mrkdwn text object in the message, and the top-level `text`.
fn mrkdwn_texts(v: &Value) -> Vec<String> {
    let mut out = Vec::new();
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(o) => {
                if o.get("type").and_then(Value::as_str) == Some("mrkdwn") {
                    assert_eq!(o.get("verbatim"), Some(&Value::Bool(true)), "{v}");
                    out.push(o["text"].as_str().unwrap().to_owned());
                }
                o.values().for_each(|c| walk(c, out));
            }
            Value::Array(a) => a.iter().for_each(|c| walk(c, out)),
            _ => {}
        }
    }
    walk(v, &mut out);
    out.push(v["text"].as_str().unwrap().to_owned());
    out
}

fn hostile_message() -> Message {
    let mut a = alert("leaked_key", "key-7", AlertStatus::Firing);
    a.labels.insert("model".into(), HOSTILE.into());
    a.summary = format!("new model {HOSTILE}");
    a.description = HOSTILE.into();
    a.evidence.models = counted(&[(HOSTILE, 3)]);
    a.evidence.user_agents = counted(&[(HOSTILE, 5), ("curl/8.5.0", 1)]);
    a.evidence.top_ips = counted(&[("<@U999>", 1)]);
    a.evidence
        .facts
        .insert("<!everyone>".into(), serde_json::json!("<http://x|y>"));
    let mut m = notification(vec![a]);
    m.group_labels
        .insert("api_key_id".into(), "<!channel>".into());
    m.common_labels
        .insert("api_key_id".into(), "@here <!here>".into());
    m
}

#[test]
fn escape_mrkdwn_defuses_mentions_links_and_formatting() {
    assert_eq!(escape_mrkdwn("a & b"), "a &amp; b");
    assert_eq!(escape_mrkdwn("<!channel>"), "&lt;!channel&gt;");
    assert_eq!(escape_mrkdwn("<@U123>"), "&lt;@\u{2060}U123&gt;");
    assert_eq!(
        escape_mrkdwn("<http://x|y>"),
        "&lt;http://x|y&gt;",
        "no link without a literal <"
    );
    assert_eq!(escape_mrkdwn("@here"), "@\u{2060}here");
    assert_eq!(escape_mrkdwn("*b* _i_ ~s~ `c`"), "∗b∗ ˍiˍ ∼s∼ ˋcˋ");
    assert_eq!(escape_mrkdwn("spend_spike gpt_4o"), "spend_spike gpt_4o");
    assert_eq!(escape_mrkdwn("_a_b_ x_ _"), "ˍa_bˍ xˍ ˍ");
    assert_eq!(escape_mrkdwn("a*b*c a~b~c"), "a∗b∗c a∼b∼c");
    assert_eq!(escape_mrkdwn("a\nb\tc\u{0}"), "a\nb c ");
    assert_eq!(
        code("gpt_4o*"),
        "`gpt_4o*`",
        "formatting is inert in code spans"
    );
    assert_eq!(code("a`b\nc<d>"), "`aˋb c&lt;d&gt;`");
    assert_eq!(code(""), "_(empty)_");
}

#[test]
fn hostile_text_cannot_mention_link_or_format() {
    let v = message(&hostile_message());
    let our_link = "<https://tripline.example.com|Open Tripline>";
    for text in mrkdwn_texts(&v) {
        let text = text.replace(our_link, "");
        assert!(!text.contains('<') && !text.contains('>'), "{text}");
        assert!(
            !text.contains("@here") && !text.contains("@channel"),
            "{text}"
        );
        assert_eq!(
            text.matches('`').count() % 2,
            0,
            "code spans balanced: {text}"
        );
        // Outside code spans no mrkdwn marker survives.
        let outside: String = text.split('`').step_by(2).collect();
        for marker in ["*bold*", "_it_", "~strike~"] {
            assert!(!outside.contains(marker), "{text}");
        }
        assert!(!text.contains('\u{7}'));
        // Every `&` starts one of our entities.
        for (i, _) in text.match_indices('&') {
            let rest = &text[i..];
            assert!(
                rest.starts_with("&amp;") || rest.starts_with("&lt;") || rest.starts_with("&gt;"),
                "{text}"
            );
        }
    }
    // The header is plain text (never parsed by Slack) and one line.
    let header = &v["blocks"][0]["text"];
    assert_eq!(header["type"], "plain_text");
    assert!(!header["text"].as_str().unwrap().contains('\n'));
    assert_eq!(v["unfurl_links"], false);
    assert_eq!(v["unfurl_media"], false);
    // The hostile value is still readable.
    let all = mrkdwn_texts(&v).join("\n");
    assert!(all.contains("&lt;!channel&gt;") && all.contains("@\u{2060}here"));
}

#[test]
fn a_notification_shows_header_facts_evidence_and_links() {
    let m = notification(vec![alert("spend_spike", "key-7", AlertStatus::Firing)]);
    let v = message(&m);
    assert_eq!(
        v["blocks"][0]["text"]["text"],
        "🔴 [FIRING:1] spend_spike · critical"
    );
    let section = &v["blocks"][2];
    assert_eq!(section["type"], "section");
    let text = section["text"]["text"].as_str().unwrap();
    assert!(
        text.starts_with("🔴 *spend_spike on key-7: $42.10"),
        "{text}"
    );
    let fields: Vec<&str> = section["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["text"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        [
            "*Key*\n`key-7`",
            "*Project*\n`search`",
            "*Observed*\n42.1 (expected 3.2, limit 9)",
            "*Window*\n2026-11-26 10:00–10:05 UTC",
            "*Severity · score*\ncritical · 0.999",
        ]
    );
    let evidence = v["blocks"][3]["text"]["text"].as_str().unwrap();
    assert!(
        evidence.contains("*Top IPs*: `203.0.113.7` ×1200, `198.51.100.4` ×300"),
        "{evidence}"
    );
    assert!(evidence.contains("*Countries*: `US` ×1400"));
    assert!(evidence.contains("*Models*: `gpt-4o` ×1500"));
    assert!(evidence.contains("*User agents*: `openai-python/1.52.0` ×1500"));
    assert!(evidence.contains("*Facts*: `amplification=4.2`"));
    assert_eq!(v["blocks"][4]["type"], "context");
    let last = v["blocks"].as_array().unwrap().last().unwrap();
    assert_eq!(
        last["elements"][0]["text"],
        "<https://tripline.example.com|Open Tripline>"
    );
    assert_eq!(
        v["text"],
        "[FIRING:1] spend_spike api_key_id=key-7 project=search"
    );
}

#[test]
fn resolved_header_has_no_severity() {
    let m = notification(vec![alert("spend_spike", "key-7", AlertStatus::Resolved)]);
    assert_eq!(header_text(&m), "✅ [RESOLVED:1] spend_spike");
}

#[test]
fn many_alerts_fit_50_blocks_with_plus_n_more() {
    let alerts = (0..40)
        .map(|i| alert("spend_spike", &format!("key-{i}"), AlertStatus::Firing))
        .collect();
    let v = message(&notification(alerts));
    let blocks = v["blocks"].as_array().unwrap();
    assert!(blocks.len() <= MAX_BLOCKS, "{}", blocks.len());
    assert_eq!(blocks.len(), 2 + 15 * 3 + 1);
    let last = &blocks.last().unwrap()["elements"][0]["text"];
    assert_eq!(last, "*+25 more alerts* not shown");
    assert_eq!(
        v["blocks"][0]["text"]["text"],
        "🔴 [FIRING:40] spend_spike · critical"
    );
}

#[test]
fn resolved_alerts_come_after_firing_ones() {
    let v = message(&notification(vec![
        alert("spend_spike", "key-1", AlertStatus::Resolved),
        alert("spend_spike", "key-2", AlertStatus::Firing),
    ]));
    assert_eq!(v["blocks"][2]["fields"][0]["text"], "*Key*\n`key-2`");
}

#[test]
fn long_texts_are_cut_within_slack_limits() {
    let mut a = alert("leaked_key", "key-7", AlertStatus::Firing);
    a.summary = "<".repeat(5000);
    a.description = "&".repeat(10_000);
    for i in 0..20 {
        a.labels.insert(format!("label_{i:02}"), "v".repeat(3000));
    }
    a.evidence.top_ips = (0..50)
        .map(|i| (format!("10.0.0.{i}"), 50 - i))
        .map(|(v, c)| Counted { value: v, count: c })
        .collect();
    a.evidence.user_agents = counted(&[(&"U".repeat(5000), 9)]);
    let mut m = notification(vec![a]);
    m.common_labels.insert("detector".into(), "d".repeat(400));
    let v = message(&m);
    let header = v["blocks"][0]["text"]["text"].as_str().unwrap();
    assert!(
        header.chars().count() <= MAX_HEADER_TEXT && header.ends_with('…'),
        "{header}"
    );
    let section = &v["blocks"][2];
    let text = section["text"]["text"].as_str().unwrap();
    assert!(
        text.chars().count() <= MAX_SECTION_TEXT,
        "{}",
        text.chars().count()
    );
    assert!(text.ends_with('…'));
    assert!(
        !text.ends_with("&…") && !text.contains("&a…"),
        "no half entity"
    );
    let fields = section["fields"].as_array().unwrap();
    assert_eq!(fields.len(), MAX_FIELDS);
    for f in fields {
        assert!(f["text"].as_str().unwrap().chars().count() <= MAX_FIELD_TEXT);
    }
    let more = fields
        .iter()
        .find(|f| f["text"].as_str().unwrap().starts_with("*+"))
        .expect("a +N more labels field");
    assert!(
        more["text"]
            .as_str()
            .unwrap()
            .starts_with("*+16 more labels*"),
        "{more}"
    );
    let evidence = v["blocks"][3]["text"]["text"].as_str().unwrap();
    assert!(evidence.chars().count() <= MAX_SECTION_TEXT);
    assert!(evidence.contains("_+45 more_"), "{evidence}");
    let ua = format!("`{}…`", "U".repeat(MAX_VALUE_CHARS - 1));
    assert!(evidence.contains(&ua), "{evidence}");
    for text in mrkdwn_texts(&v) {
        assert!(text.chars().count() <= MAX_SECTION_TEXT);
    }
}

#[test]
fn fit_lines_counts_what_it_leaves_out() {
    let lines: Vec<String> = (0..10)
        .map(|i| format!("line {i} {}", "x".repeat(20)))
        .collect();
    let out = fit_lines(&lines, 100);
    assert!(out.chars().count() <= 100, "{out}");
    assert!(out.ends_with("_+7 more_"), "{out}");
    assert_eq!(fit_lines(&lines[..1], 100), lines[0]);
    let cut = fit_lines(&["`abc &amp; def`".to_owned(), "x".into()], 12);
    assert!(cut.chars().count() <= 12, "{cut}");
    assert_eq!(cut.matches('`').count() % 2, 0, "{cut}");
    assert_eq!(safe_cut("ab &amp; cd", 6), "ab …");
    assert_eq!(safe_cut("ab `cd` ef", 6), "ab …");
    assert_eq!(safe_cut("short", 6), "short");
}

#[test]
fn request_posts_json_and_hides_the_url() {
    let r = SlackReceiver {
        url: "https://hooks.slack.com/services/T0/B0/XXXX".into(),
    };
    assert!(!format!("{r:?}").contains("XXXX"));
    let req = r.request(&notification(vec![alert(
        "spend_spike",
        "key-7",
        AlertStatus::Firing,
    )]));
    assert_eq!(
        req.header("content-type"),
        Some("application/json; charset=utf-8")
    );
    let v: Value = serde_json::from_slice(&req.body).unwrap();
    assert!(v["blocks"].is_array());
}
