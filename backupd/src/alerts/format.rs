//! Request bodies for alert targets. Pure: an [`Alert`] in, JSON out.

use serde_json::{Value, json};

use super::policy::Alert;
use crate::config::AlertEvent;

/// Discord's documented limits, in characters.
pub const DISCORD_CONTENT_MAX: usize = 2000;
pub const DISCORD_TITLE_MAX: usize = 256;
pub const DISCORD_DESCRIPTION_MAX: usize = 4096;
pub const DISCORD_FIELD_NAME_MAX: usize = 256;
pub const DISCORD_FIELD_VALUE_MAX: usize = 1024;
/// Sum of title, description, field names and values over all embeds of a message.
pub const DISCORD_EMBED_TOTAL_MAX: usize = 6000;

const RED: u32 = 0xE7_4C_3C;
const ORANGE: u32 = 0xE6_7E_22;
const GREEN: u32 = 0x2E_CC_71;
const BLUE: u32 = 0x34_98_DB;

pub fn event_name(event: AlertEvent) -> &'static str {
    match event {
        AlertEvent::Failure => "failure",
        AlertEvent::Stale => "stale",
        AlertEvent::Recovery => "recovery",
        AlertEvent::Attention => "attention",
    }
}

/// `s` cut to at most `max` characters, ending in "…" when cut (never splits a character).
pub fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    if max == 0 {
        return String::new();
    }
    let mut out: String = s.chars().take(max - 1).collect();
    out.push('…');
    out
}

/// The body for a Discord channel webhook.
pub fn discord_body(alert: &Alert, host: &str) -> Value {
    let (color, icon) = match alert.event {
        AlertEvent::Failure => (RED, "🔴"),
        AlertEvent::Stale => (ORANGE, "🟠"),
        AlertEvent::Recovery => (GREEN, "🟢"),
        AlertEvent::Attention => (BLUE, "🔵"),
    };
    let content = truncate(
        &format!("{icon} {}: {}", host, alert.title),
        DISCORD_CONTENT_MAX,
    );
    let title = truncate(&alert.title, DISCORD_TITLE_MAX);

    let mut fields: Vec<(String, String, bool)> = vec![
        ("Job".into(), alert.job.clone(), true),
        ("Host".into(), host.to_string(), true),
    ];
    if let Some(id) = alert.run_id {
        fields.push(("Run".into(), format!("#{id}"), true));
    }
    fields.push((
        "Last success".into(),
        alert
            .last_success
            .map(super::policy::show_time)
            .unwrap_or_else(|| "never".into()),
        true,
    ));
    if let Some(e) = &alert.error {
        // Fenced so paths and stars are not read as markdown; a fence inside would end it early.
        let e = e.trim().replace("```", "`\u{200b}``");
        let inner = truncate(&e, DISCORD_FIELD_VALUE_MAX - 8);
        fields.push(("Error".into(), format!("```\n{inner}\n```"), false));
    }
    let fields: Vec<(String, String, bool)> = fields
        .into_iter()
        .map(|(n, v, inline)| {
            (
                truncate(&n, DISCORD_FIELD_NAME_MAX),
                truncate(if v.is_empty() { "-" } else { &v }, DISCORD_FIELD_VALUE_MAX),
                inline,
            )
        })
        .collect();

    // The description gets whatever the 6000-character embed budget leaves.
    let used: usize = title.chars().count()
        + fields
            .iter()
            .map(|(n, v, _)| n.chars().count() + v.chars().count())
            .sum::<usize>();
    let budget = DISCORD_EMBED_TOTAL_MAX
        .saturating_sub(used)
        .min(DISCORD_DESCRIPTION_MAX);
    let description = truncate(&alert.message, budget);

    json!({
        "content": content,
        "embeds": [{
            "title": title,
            "description": description,
            "color": color,
            "timestamp": alert.at.to_string(),
            "fields": fields
                .into_iter()
                .map(|(name, value, inline)| json!({"name": name, "value": value, "inline": inline}))
                .collect::<Vec<_>>(),
        }],
        // Error text is untrusted: never let it ping @everyone or roles.
        "allowed_mentions": {"parse": []},
    })
}

/// The body for a generic JSON webhook: the alert as flat fields, times in RFC 3339.
pub fn webhook_body(alert: &Alert, host: &str) -> Value {
    json!({
        "event": event_name(alert.event),
        "job": alert.job,
        "at": alert.at.to_string(),
        "title": alert.title,
        "message": alert.message,
        "run_id": alert.run_id,
        "error": alert.error,
        "last_success": alert.last_success.map(|t| t.to_string()),
        "host": host,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::Timestamp;

    fn alert(event: AlertEvent, message: String, error: Option<String>) -> Alert {
        Alert {
            job: "photos".into(),
            event,
            at: Timestamp::from_second(1_800_000_000).unwrap(),
            title: "job photos failed".into(),
            message,
            run_id: Some(7),
            error,
            last_success: None,
        }
    }

    fn embed_total(body: &Value) -> usize {
        let e = &body["embeds"][0];
        let len = |v: &Value| v.as_str().unwrap().chars().count();
        len(&e["title"])
            + len(&e["description"])
            + e["fields"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| len(&f["name"]) + len(&f["value"]))
                .sum::<usize>()
    }

    #[test]
    fn truncate_on_char_boundaries() {
        assert_eq!(truncate("abc", 3), "abc");
        assert_eq!(truncate("abcd", 3), "ab…");
        assert_eq!(truncate("ééééé", 3), "éé…");
        assert_eq!(truncate("🦀🦀🦀🦀", 2), "🦀…");
        assert_eq!(truncate("x", 0), "");
        assert_eq!(truncate("", 0), "");
    }

    #[test]
    fn discord_shape_and_colors() {
        let b = discord_body(
            &alert(AlertEvent::Failure, "m".into(), Some("boom".into())),
            "h1",
        );
        assert_eq!(b["content"], "🔴 h1: job photos failed");
        let e = &b["embeds"][0];
        assert_eq!(e["title"], "job photos failed");
        assert_eq!(e["description"], "m");
        assert_eq!(e["color"], RED);
        assert_eq!(e["timestamp"], "2027-01-15T08:00:00Z");
        assert_eq!(b["allowed_mentions"]["parse"], json!([]));
        let names: Vec<&str> = e["fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["Job", "Host", "Run", "Last success", "Error"]);
        assert_eq!(e["fields"][4]["value"], "```\nboom\n```");
        let stale = discord_body(&alert(AlertEvent::Stale, "m".into(), None), "h");
        assert_eq!(stale["embeds"][0]["color"], ORANGE);
        let rec = discord_body(&alert(AlertEvent::Recovery, "m".into(), None), "h");
        assert_eq!(rec["embeds"][0]["color"], GREEN);
    }

    #[test]
    fn discord_limits_with_long_multibyte_text() {
        let long = "ошибка диска 💥 ".repeat(1000); // ~15k chars, multi-byte
        let mut a = alert(AlertEvent::Failure, long.clone(), Some(long.clone()));
        a.title = "заголовок ".repeat(100);
        a.job = "j".repeat(300);
        let b = discord_body(&a, &"h".repeat(3000));
        let len = |v: &Value| v.as_str().unwrap().chars().count();
        assert!(len(&b["content"]) <= DISCORD_CONTENT_MAX);
        let e = &b["embeds"][0];
        assert_eq!(len(&e["title"]), DISCORD_TITLE_MAX);
        assert!(e["title"].as_str().unwrap().ends_with('…'));
        assert!(len(&e["description"]) <= DISCORD_DESCRIPTION_MAX);
        assert!(e["description"].as_str().unwrap().ends_with('…'));
        for f in e["fields"].as_array().unwrap() {
            assert!(len(&f["name"]) <= DISCORD_FIELD_NAME_MAX);
            assert!(
                len(&f["value"]) <= DISCORD_FIELD_VALUE_MAX,
                "{}",
                len(&f["value"])
            );
        }
        let err = e["fields"].as_array().unwrap().last().unwrap()["value"]
            .as_str()
            .unwrap();
        assert!(err.starts_with("```\n") && err.ends_with("…\n```"), "{err}");
        assert!(
            embed_total(&b) <= DISCORD_EMBED_TOTAL_MAX,
            "{}",
            embed_total(&b)
        );
    }

    #[test]
    fn error_cannot_close_the_code_fence() {
        let b = discord_body(
            &alert(AlertEvent::Failure, "m".into(), Some("a```b".into())),
            "h",
        );
        let v = b["embeds"][0]["fields"][4]["value"].as_str().unwrap();
        assert_eq!(v.matches("```").count(), 2, "{v}");
    }

    #[test]
    fn webhook_shape() {
        let mut a = alert(AlertEvent::Stale, "msg".into(), None);
        a.run_id = None;
        a.last_success = Some(Timestamp::from_second(1_799_990_000).unwrap());
        let b = webhook_body(&a, "nas");
        assert_eq!(
            b,
            json!({
                "event": "stale",
                "job": "photos",
                "at": "2027-01-15T08:00:00Z",
                "title": "job photos failed",
                "message": "msg",
                "run_id": null,
                "error": null,
                "last_success": "2027-01-15T05:13:20Z",
                "host": "nas",
            })
        );
    }
}
