//! The Grafana dashboard (`docs/grafana-dashboard.json`, shipped in the chart too) against
//! what a running provisioner exports: every metric a query names must be one `/metrics`
//! declares, with the suffix its type allows.

use std::collections::{BTreeMap, BTreeSet};

/// PromQL words that are not metric names.
const PROMQL: &[&str] = &[
    "sum",
    "max",
    "min",
    "avg",
    "count",
    "by",
    "without",
    "rate",
    "irate",
    "increase",
    "histogram_quantile",
    "label_values",
    "topk",
    "bottomk",
    "and",
    "or",
    "unless",
    "on",
    "ignoring",
    "offset",
];

/// Every query of the dashboard `json`: panel targets and query variables.
pub fn dashboard_queries(json: &serde_json::Value) -> Vec<String> {
    let mut out = Vec::new();
    let panels = json["panels"].as_array().cloned().unwrap_or_default();
    for p in &panels {
        for t in p["targets"].as_array().into_iter().flatten() {
            if let Some(e) = t["expr"].as_str() {
                out.push(e.to_string());
            }
        }
    }
    for v in json["templating"]["list"].as_array().into_iter().flatten() {
        if v["type"] == "query"
            && let Some(q) = v["query"]["query"].as_str().or(v["query"].as_str())
        {
            out.push(q.to_string());
        }
    }
    out
}

/// The metric names `expr` reads: identifiers outside label matchers, `by (...)` lists,
/// ranges and strings, that are not PromQL's own words or Grafana variables.
pub fn metrics_of_query(expr: &str) -> BTreeSet<String> {
    // Grafana's label_values(SERIES, LABEL): the label is no metric.
    let expr = match expr.trim().strip_prefix("label_values(") {
        Some(args) => args.split(',').next().unwrap_or_default(),
        None => expr,
    };
    let mut names = BTreeSet::new();
    let chars: Vec<char> = expr.chars().collect();
    let (mut i, mut depth_braces, mut depth_brackets) = (0, 0, 0);
    let mut skip_group = false;
    let mut paren_skip: Option<usize> = None;
    let mut parens = 0usize;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '{' => depth_braces += 1,
            '}' => depth_braces -= 1,
            '[' => depth_brackets += 1,
            ']' => depth_brackets -= 1,
            '"' => {
                i += 1;
                while i < chars.len() && chars[i] != '"' {
                    i += 1;
                }
            }
            '(' => {
                parens += 1;
                if skip_group {
                    paren_skip = Some(parens);
                    skip_group = false;
                }
            }
            ')' => {
                if paren_skip == Some(parens) {
                    paren_skip = None;
                }
                parens -= 1;
            }
            '$' => {
                while i + 1 < chars.len() && (chars[i + 1].is_alphanumeric() || chars[i + 1] == '_')
                {
                    i += 1;
                }
            }
            c if c.is_ascii_alphabetic() || c == '_' => {
                let start = i;
                while i + 1 < chars.len()
                    && (chars[i + 1].is_ascii_alphanumeric()
                        || chars[i + 1] == '_'
                        || chars[i + 1] == ':')
                {
                    i += 1;
                }
                let word: String = chars[start..=i].iter().collect();
                if word == "by" || word == "without" || word == "on" || word == "ignoring" {
                    skip_group = true;
                } else if depth_braces == 0
                    && depth_brackets == 0
                    && paren_skip.is_none()
                    && !PROMQL.contains(&word.as_str())
                {
                    names.insert(word);
                }
            }
            _ => {}
        }
        i += 1;
    }
    names
}

/// The metric families `/metrics` text declares, by name, with their type.
pub fn declared_metrics(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            Some((w.next()?.to_string(), w.next()?.to_string()))
        })
        .collect()
}

/// Why `name` (as a query names it) is not a sample the declared families give, if it is not.
pub fn undeclared(name: &str, declared: &BTreeMap<String, String>) -> Option<String> {
    let is = |base: &str, kind: &str| declared.get(base).is_some_and(|k| k == kind);
    for (suffix, kind) in [
        ("_total", "counter"),
        ("_bucket", "histogram"),
        ("_sum", "histogram"),
        ("_count", "histogram"),
    ] {
        if let Some(base) = name.strip_suffix(suffix)
            && is(base, kind)
        {
            return None;
        }
    }
    if is(name, "gauge") {
        return None;
    }
    Some(match declared.get(name) {
        Some(kind) => format!("{name} is a {kind}: query it with that type's suffix"),
        None => format!("{name} is not exported"),
    })
}

/// Every way the dashboard `json` names a metric that the `/metrics` text does not export.
pub fn dashboard_gaps(json: &serde_json::Value, metrics_text: &str) -> Vec<String> {
    let declared = declared_metrics(metrics_text);
    let mut gaps = Vec::new();
    for q in dashboard_queries(json) {
        let names = metrics_of_query(&q);
        if names.is_empty() {
            gaps.push(format!("no metric found in query {q}"));
        }
        for n in names {
            if let Some(why) = undeclared(&n, &declared) {
                gaps.push(format!("{why} (query {q})"));
            }
        }
    }
    gaps
}

/// The dashboard of `docs/` and the chart's copy are the same file, and name only metrics the
/// `/metrics` text exports, but for families named by a prefix in `unsampled` (labelled
/// families the caller gave no sample).
pub fn assert_dashboard_exported(metrics: &str, unsampled: &[&str]) {
    let docs = crate::repo_file("docs/grafana-dashboard.json");
    assert_eq!(
        docs,
        crate::repo_file("charts/rbd-provisioner/dashboards/rbd-provisioner.json"),
        "the chart ships docs/grafana-dashboard.json as it is"
    );
    let dash: serde_json::Value = serde_json::from_str(&docs).unwrap();
    assert!(dashboard_queries(&dash).len() >= 15, "too few queries");
    let gaps: Vec<String> = dashboard_gaps(&dash, metrics)
        .into_iter()
        .filter(|g| {
            !unsampled
                .iter()
                .any(|u| g.starts_with(u) && g.contains(" is not exported"))
        })
        .collect();
    assert!(gaps.is_empty(), "{}\n/metrics:\n{metrics}", gaps.join("\n"));
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# TYPE foo counter\nfoo_total 1\n# TYPE lat_seconds histogram\n# TYPE up gauge\nup 1\n# EOF\n";

    #[test]
    fn names_outside_matchers_groups_and_ranges() {
        let q = r#"histogram_quantile(0.9, sum by (le, class) (rate(lat_seconds_bucket{class=~"$class"}[$__rate_interval])))"#;
        assert_eq!(
            metrics_of_query(q),
            BTreeSet::from(["lat_seconds_bucket".to_string()])
        );
        assert_eq!(
            metrics_of_query("label_values(foo_total, class)"),
            BTreeSet::from(["foo_total".to_string()])
        );
    }

    #[test]
    fn a_query_of_an_unknown_or_mistyped_metric_is_a_gap() {
        let d = declared_metrics(TEXT);
        assert_eq!(undeclared("foo_total", &d), None);
        assert_eq!(undeclared("lat_seconds_bucket", &d), None);
        assert_eq!(undeclared("up", &d), None);
        assert!(undeclared("foo", &d).is_some(), "a counter needs _total");
        assert!(
            undeclared("up_total", &d).is_some(),
            "a gauge has no _total"
        );
        assert!(undeclared("nothing_total", &d).is_some());
        let dash = serde_json::json!({"panels": [{"targets": [
            {"expr": "rate(foo_total[5m])"}, {"expr": "sum(bar_total)"}]}]});
        let gaps = dashboard_gaps(&dash, TEXT);
        assert_eq!(gaps.len(), 1, "{gaps:?}");
        assert!(gaps[0].contains("bar_total is not exported"), "{gaps:?}");
    }
}
