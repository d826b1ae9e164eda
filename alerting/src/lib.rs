//! Alerting (routing, grouping, silences, email/webhook/Slack delivery): see issue 4.
