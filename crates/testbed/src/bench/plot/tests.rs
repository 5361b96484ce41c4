use super::*;

/// The SVG parses as XML; its text (legend, captions) and its drawn elements.
fn parsed(svg: &str) -> (String, usize, usize) {
    let doc = roxmltree::Document::parse(svg).expect("the SVG parses as XML");
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    let text: Vec<&str> = doc.descendants().filter_map(|n| n.text()).collect();
    let count = |tag: &str| {
        doc.descendants()
            .filter(|n| n.tag_name().name() == tag)
            .count()
    };
    (text.join("|"), count("polyline"), count("rect"))
}

#[test]
fn memory_chart_has_each_series_on_a_log_axis() {
    let counts = [1.0, 10.0, 100.0, 1000.0, 2500.0, 5000.0, 10000.0];
    let series = vec![
        Series {
            name: "VmRSS".into(),
            points: counts.iter().map(|n| (*n, 30.0 + n * 0.004)).collect(),
        },
        Series {
            name: "RssAnon".into(),
            points: counts.iter().map(|n| (*n, 6.0 + n * 0.004)).collect(),
        },
    ];
    let axes = Axes {
        title: "Memory against volumes",
        x: "pairs",
        y: "MiB",
        log_x: true,
    };
    let svg = lines(&axes, &series).unwrap();
    let (text, polylines, _) = parsed(&svg);
    for want in [
        "Memory against volumes",
        "VmRSS",
        "RssAnon",
        "pairs",
        "MiB",
        "10000",
    ] {
        assert!(text.contains(want), "{want:?} missing from {text:?}");
    }
    // One line per series (the legend's samples are paths of their own).
    assert!(polylines >= 2, "{polylines} lines");
    // Each point marked.
    assert!(svg.matches("<circle").count() >= 2 * counts.len());
}

#[test]
fn line_chart_refuses_what_it_cannot_draw() {
    let axes = Axes {
        title: "t",
        x: "x",
        y: "y",
        log_x: true,
    };
    assert!(matches!(lines(&axes, &[]), Err(PlotError::Data { .. })));
    let zero = [Series {
        name: "s".into(),
        points: vec![(0.0, 1.0), (1.0, 2.0)],
    }];
    assert!(matches!(lines(&axes, &zero), Err(PlotError::Data { .. })));
    let linear = Axes {
        log_x: false,
        ..axes
    };
    let (text, polylines, _) = parsed(&lines(&linear, &zero).unwrap());
    assert!(text.contains('s') && polylines >= 1);
}

#[test]
fn histogram_has_a_bar_set_per_peer() {
    let ours: Vec<f64> = (0..20).map(|i| 100.0 + f64::from(i)).collect();
    let theirs: Vec<f64> = (0..20).map(|i| 900.0 + 10.0 * f64::from(i)).collect();
    let svg = latency_histogram("claim → PV", &[("ours", &ours), ("csi", &theirs)]).unwrap();
    let (text, _, rects) = parsed(&svg);
    assert!(text.contains("ours (20 samples)"), "{text}");
    assert!(text.contains("csi (20 samples)"), "{text}");
    // Background, legend boxes and at least one bar per peer.
    assert!(rects >= 5, "{rects} rects");
    let fill = |c: RGBColor| format!("#{:02X}{:02X}{:02X}", c.0, c.1, c.2);
    for p in 0..2 {
        // A bar and a legend box in the peer's colour.
        assert!(svg.matches(&fill(colour(p))).count() >= 2, "peer {p}");
    }
    assert!(matches!(
        latency_histogram("x", &[("a", &[])]),
        Err(PlotError::Data { .. })
    ));
}

#[test]
fn bins_cover_the_samples_and_shares_add_up() {
    let edges = log_bins(12.0, 4000.0, 5);
    assert!(edges[0] <= 12.0 && *edges.last().unwrap() > 4000.0);
    assert!(edges.windows(2).all(|w| w[1] > w[0]));
    let v = [12.0, 13.0, 500.0, 4000.0];
    let s = shares(&v, &edges);
    assert!((s.iter().sum::<f64>() - 100.0).abs() < 1e-9, "{s:?}");
    assert_eq!(s.iter().filter(|x| **x > 0.0).count(), 3);
}

#[test]
fn panels_stack_their_charts_and_long_series_go_unmarked() {
    let long = |name: &str, k: f64| Series {
        name: name.into(),
        points: (0..1000)
            .map(|i| (f64::from(i), k * f64::from(i)))
            .collect(),
    };
    let axes = |title| Axes {
        title,
        x: "seconds",
        y: "count",
        log_x: false,
    };
    let (a, b) = (axes("backlog"), axes("left"));
    let top = [long("purge backlog", 0.1), long("in flight", 0.01)];
    let bottom = [long("PVs left", 10.0)];
    let svg = panels(&[(&a, &top), (&a, &[]), (&b, &bottom)]);
    assert!(matches!(svg, Err(PlotError::Data { .. })), "an empty panel");
    let svg = panels(&[(&a, &top), (&b, &bottom)]).unwrap();
    let (text, polylines, _) = parsed(&svg);
    for want in ["backlog", "left", "purge backlog", "in flight", "PVs left"] {
        assert!(text.contains(want), "{want:?} missing from {text:?}");
    }
    assert!(polylines >= 3, "{polylines} lines");
    assert_eq!(svg.matches("<circle").count(), 0, "1,000 points unmarked");
}
