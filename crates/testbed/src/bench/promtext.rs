//! Reading Prometheus' text format: the API server's `/metrics` and the provisioner's.

/// The labels of a sample line (`name{a="x",b="y"} 1`), as (key, value) pairs.
fn labels(line: &str) -> Vec<(&str, &str)> {
    let Some((_, rest)) = line.split_once('{') else {
        return Vec::new();
    };
    let Some((inner, _)) = rest.rsplit_once('}') else {
        return Vec::new();
    };
    // Label values here hold no `",` sequence (resources, verbs, codes, bucket bounds).
    inner
        .split("\",")
        .filter_map(|kv| {
            let (k, v) = kv.split_once("=\"")?;
            Some((k.trim(), v.trim_end_matches('"')))
        })
        .collect()
}

/// The samples of metric `name` (exactly: `name{` or `name `) whose labels include every pair
/// of `want`: (their labels, value).
pub fn samples<'a>(
    text: &'a str,
    name: &str,
    want: &[(&str, &str)],
) -> Vec<(Vec<(&'a str, &'a str)>, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|r| r.starts_with('{') || r.starts_with(' '))
        })
        .filter_map(|l| {
            let value = l.rsplit(' ').next()?.parse::<f64>().ok()?;
            let ls = labels(l);
            want.iter().all(|w| ls.contains(w)).then_some((ls, value))
        })
        .collect()
}

/// The sum of the samples of `name` matching `want` (0 when there is none).
pub fn sum(text: &str, name: &str, want: &[(&str, &str)]) -> f64 {
    samples(text, name, want).iter().map(|(_, v)| v).sum()
}

/// A histogram's cumulative buckets (`<name>_bucket`) matching `want`, summed over other
/// labels: (upper bound, count), by bound.
pub fn buckets(text: &str, name: &str, want: &[(&str, &str)]) -> Vec<(f64, f64)> {
    let mut by_le: Vec<(f64, f64)> = Vec::new();
    for (ls, v) in samples(text, &format!("{name}_bucket"), want) {
        let Some(le) = ls.iter().find(|(k, _)| *k == "le").map(|(_, v)| *v) else {
            continue;
        };
        let le = if le == "+Inf" {
            f64::INFINITY
        } else {
            le.parse().unwrap_or(f64::NAN)
        };
        match by_le.iter_mut().find(|(b, _)| *b == le) {
            Some(e) => e.1 += v,
            None => by_le.push((le, v)),
        }
    }
    by_le.sort_by(|a, b| a.0.total_cmp(&b.0));
    by_le
}

/// From two readings of a histogram's buckets, the smallest upper bound that holds every
/// observation made between them: what the largest one was at most. `None` when nothing was
/// observed in between.
pub fn largest_between(before: &[(f64, f64)], after: &[(f64, f64)]) -> Option<f64> {
    let was = |le: f64| {
        before
            .iter()
            .find(|(b, _)| *b == le)
            .map(|(_, c)| *c)
            .unwrap_or(0.0)
    };
    let total = after.last().map(|(le, c)| c - was(*le))?;
    if total <= 0.0 {
        return None;
    }
    after
        .iter()
        .find(|(le, c)| c - was(*le) >= total)
        .map(|(le, _)| *le)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP apiserver_request_total x
apiserver_request_total{code="200",resource="persistentvolumes",verb="LIST"} 3
apiserver_request_total{code="410",resource="persistentvolumes",verb="LIST"} 1
apiserver_request_total{code="200",resource="persistentvolumeclaims",verb="LIST"} 7
apiserver_request_total{code="200",resource="persistentvolumes",verb="WATCH"} 2
apiserver_request_total_other{resource="persistentvolumes",verb="LIST"} 100
apiserver_response_sizes_bucket{resource="persistentvolumes",verb="LIST",le="1000"} 0
apiserver_response_sizes_bucket{resource="persistentvolumes",verb="LIST",le="10000"} 1
apiserver_response_sizes_bucket{resource="persistentvolumes",verb="LIST",le="100000"} 3
apiserver_response_sizes_bucket{resource="persistentvolumes",verb="LIST",le="+Inf"} 3
rbd_provisioner_purge_backlog 42
"#;

    #[test]
    fn sums_the_matching_samples_only() {
        let lists = [("verb", "LIST"), ("resource", "persistentvolumes")];
        assert_eq!(sum(TEXT, "apiserver_request_total", &lists), 4.0);
        assert_eq!(
            sum(TEXT, "apiserver_request_total", &[("verb", "LIST")]),
            11.0
        );
        assert_eq!(sum(TEXT, "rbd_provisioner_purge_backlog", &[]), 42.0);
        assert_eq!(sum(TEXT, "absent", &[]), 0.0);
    }

    #[test]
    fn the_largest_observation_is_bounded_by_its_bucket() {
        let want = [("verb", "LIST"), ("resource", "persistentvolumes")];
        let after = buckets(TEXT, "apiserver_response_sizes", &want);
        assert_eq!(after.len(), 4);
        // Before: one response under 10 kB; since then two more, both under 100 kB.
        let before = vec![
            (1000.0, 0.0),
            (10000.0, 1.0),
            (100000.0, 1.0),
            (f64::INFINITY, 1.0),
        ];
        assert_eq!(largest_between(&before, &after), Some(100000.0));
        // Nothing before: the first response fits 10 kB, the others 100 kB.
        assert_eq!(largest_between(&[], &after), Some(100000.0));
        assert_eq!(largest_between(&after, &after), None);
    }
}
