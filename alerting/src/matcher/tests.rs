use proptest::prelude::*;

use super::*;
use crate::lifecycle::test_support::labels;

#[test]
fn operators_and_missing_labels() {
    let l = labels(&[("severity", "critical"), ("model", "gpt-4o")]);
    let m = |text: &str| Matcher::parse(text).unwrap().matches(&l);
    assert!(m(r#"severity="critical""#));
    assert!(!m(r#"severity!="critical""#));
    assert!(m(r#"severity=~"warning|critical""#));
    assert!(!m(r#"severity!~"warning|critical""#));
    // Anchored: a regex must match the whole value.
    assert!(!m(r#"model=~"gpt""#));
    assert!(m(r#"model=~"gpt.*""#));
    assert!(!m(r#"model=~"4o""#));
    // A missing label reads as "".
    assert!(m(r#"team="""#));
    assert!(!m(r#"team!="""#));
    assert!(m(r#"team!="core""#));
    assert!(m(r#"team=~".*""#));
    assert!(!m(r#"team=~".+""#));
    assert!(Matcher::parse(r#"team!="x""#).unwrap().matches_empty());
    assert!(!Matcher::parse(r#"team="x""#).unwrap().matches_empty());
}

#[test]
fn errors_are_clear() {
    let err = Matcher::parse(r#"model=~"gpt-(4""#).unwrap_err();
    assert!(
        err.to_string()
            .starts_with(r#"invalid matcher "model=~\"gpt-(4\"": invalid regex"#),
        "{err}"
    );
    assert!(!err.to_string().contains('\n'));
    let err = Matcher::new("bad-name", MatchOp::Equal, "x").unwrap_err();
    assert!(err.message.contains("not a label name"), "{err}");
    assert!(Matcher::new("ok", MatchOp::Regex, "(").is_err());
    assert!(parse_list("{a=b, c=~\"[\"}").is_err());
}

#[test]
fn serde_as_text_and_lists() {
    let list = parse_list(r#"{detector="leaked_key", severity=~"warning|critical"}"#).unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(
        list_to_string(&list),
        r#"{detector="leaked_key", severity=~"warning|critical"}"#
    );
    let json = serde_json::to_string(&list).unwrap();
    assert_eq!(
        json,
        r#"["detector=\"leaked_key\"","severity=~\"warning|critical\""]"#
    );
    let back: Vec<Matcher> = serde_json::from_str(&json).unwrap();
    assert_eq!(back, list);
    assert!(serde_json::from_str::<Matcher>(r#""a=~\"(\"""#).is_err());
    assert!(all_match(&[], &labels(&[])));
    assert_eq!(parse_each(&["a=b".to_owned()]).unwrap()[0].value(), "b");
}

proptest! {
    #[test]
    fn text_round_trips(name in "[a-z_][a-z0-9_]{0,8}", value in any::<String>(), op in 0..4usize) {
        let op = [MatchOp::Equal, MatchOp::NotEqual, MatchOp::Regex, MatchOp::NotRegex][op];
        let value = if op.is_regex() { regex::escape(&value) } else { value };
        let m = Matcher::new(&name, op, &value).unwrap();
        let back = Matcher::parse(&m.to_string()).unwrap();
        prop_assert_eq!(back, m);
    }

    #[test]
    fn an_escaped_regex_matches_like_equality(value in "[ -~]{0,12}", probe in "[ -~]{0,12}") {
        let eq = Matcher::new("l", MatchOp::Equal, &value).unwrap();
        let re = Matcher::new("l", MatchOp::Regex, &regex::escape(&value)).unwrap();
        for v in [value.as_str(), probe.as_str()] {
            prop_assert_eq!(eq.matches_value(Some(v)), re.matches_value(Some(v)));
        }
    }
}
