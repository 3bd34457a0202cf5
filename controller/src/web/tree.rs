//! The prefix-group tree as a picture: inline SVG laid out here from the data (no script draws
//! it). Leaves stand side by side in document order; a parent is centred over its children;
//! each box says the group's name, its CIDRs, its hosts and how much of it is used, and the
//! fabric route that stands for it, if one does.

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// One group as drawn.
#[derive(Debug, Clone)]
pub struct Box {
    /// `zone-a/rack-1`: the parent is the path without its last part.
    pub path: String,
    pub name: String,
    pub cidrs: Vec<String>,
    pub hosts: usize,
    /// 0 to 1.
    pub utilization: f64,
    /// The fabric route announced for this group, if the plan has one.
    pub route: Option<String>,
}

const WIDTH: f64 = 184.0;
const HEIGHT: f64 = 78.0;
const GAP_X: f64 = 16.0;
const GAP_Y: f64 = 44.0;

/// The SVG of `groups` (in the layout's order: parents before children).
pub fn svg(groups: &[Box]) -> String {
    let children =
        |path: &str| -> Vec<usize> { groups.iter().enumerate().filter(|(_, g)| parent(&g.path) == Some(path)).map(|(i, _)| i).collect() };
    let roots: Vec<usize> = groups.iter().enumerate().filter(|(_, g)| parent(&g.path).is_none()).map(|(i, _)| i).collect();
    // x of each box's left edge, from its leaves; depth from its path.
    let mut x: BTreeMap<usize, f64> = BTreeMap::new();
    let mut next_leaf = 0.0;
    fn place(i: usize, children: &dyn Fn(&str) -> Vec<usize>, groups: &[Box], x: &mut BTreeMap<usize, f64>, next: &mut f64) -> f64 {
        let kids = children(&groups[i].path);
        let left = if kids.is_empty() {
            let at = *next;
            *next += WIDTH + GAP_X;
            at
        } else {
            let placed: Vec<f64> = kids.iter().map(|k| place(*k, children, groups, x, next)).collect();
            (placed[0] + placed[placed.len() - 1]) / 2.0
        };
        x.insert(i, left);
        left
    }
    for r in &roots {
        place(*r, &children, groups, &mut x, &mut next_leaf);
    }
    let depth = |g: &Box| g.path.matches('/').count();
    let levels = groups.iter().map(|g| depth(g) + 1).max().unwrap_or(1);
    let (w, h) = ((next_leaf - GAP_X).max(WIDTH), levels as f64 * (HEIGHT + GAP_Y) - GAP_Y);
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<svg class="tree" viewBox="-2 -2 {} {}" width="{}" height="{}" role="img" aria-labelledby="tree-title"><title id="tree-title">Prefix groups: {} groups</title>"#,
        w + 4.0,
        h + 4.0,
        w + 4.0,
        h + 4.0,
        groups.len()
    );
    let top = |g: &Box| depth(g) as f64 * (HEIGHT + GAP_Y);
    for (i, g) in groups.iter().enumerate() {
        if let Some(p) = parent(&g.path).and_then(|p| groups.iter().position(|o| o.path == p)) {
            let (x1, y1) = (x[&p] + WIDTH / 2.0, top(&groups[p]) + HEIGHT);
            let (x2, y2) = (x[&i] + WIDTH / 2.0, top(g));
            let _ = write!(out, r#"<path class="edge" d="M{x1} {y1} C{x1} {} {x2} {} {x2} {y2}"/>"#, y1 + GAP_Y / 2.0, y2 - GAP_Y / 2.0);
        }
    }
    for (i, g) in groups.iter().enumerate() {
        let (bx, by) = (x[&i], top(g));
        let used = (g.utilization.clamp(0.0, 1.0) * (WIDTH - 16.0) * 10.0).round() / 10.0;
        let routed = if g.route.is_some() { " routed" } else { "" };
        let _ = write!(
            out,
            r#"<g class="group{routed}" transform="translate({bx} {by})"><title>{}</title><rect width="{WIDTH}" height="{HEIGHT}" rx="6"/>"#,
            escape(&describe(g))
        );
        let _ = write!(out, r#"<text x="8" y="17" class="name">{}</text>"#, escape(&g.name));
        let _ = write!(out, r#"<text x="8" y="34" class="cidr">{}</text>"#, escape(&g.cidrs.join(" ")));
        let _ = write!(
            out,
            r#"<text x="8" y="51" class="figures">{} host{} · {:.1}% used</text>"#,
            g.hosts,
            if g.hosts == 1 { "" } else { "s" },
            g.utilization * 100.0
        );
        let _ = write!(out, r#"<rect class="gauge" x="8" y="60" width="{}" height="6" rx="3"/>"#, WIDTH - 16.0);
        let _ = write!(out, r#"<rect class="used" x="8" y="60" width="{used}" height="6" rx="3"/>"#);
        if let Some(route) = &g.route {
            let _ = write!(out, r#"<text x="{}" y="17" class="route" text-anchor="end">↗ {}</text>"#, WIDTH - 8.0, escape(route));
        }
        out.push_str("</g>");
    }
    out.push_str("</svg>");
    out
}

fn parent(path: &str) -> Option<&str> {
    path.rsplit_once('/').map(|(p, _)| p)
}

fn describe(g: &Box) -> String {
    let route = g.route.as_deref().map(|r| format!("; announced as {r}")).unwrap_or_default();
    format!("{}: {}; {} hosts; {:.1}% used{route}", g.path, g.cidrs.join(", "), g.hosts, g.utilization * 100.0)
}

/// Text for SVG and HTML.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&#39;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(path: &str, hosts: usize) -> Box {
        Box {
            path: path.into(),
            name: path.rsplit('/').next().unwrap_or(path).into(),
            cidrs: vec!["10.0.0.0/16".into()],
            hosts,
            utilization: 0.25,
            route: None,
        }
    }

    #[test]
    fn parents_are_centred_over_their_children_and_names_are_escaped() {
        let mut groups = vec![group("z", 2), group("z/r1", 1), group("z/r2", 1), group("y<script>", 0)];
        groups[1].route = Some("10.0.0.0/24".into());
        let svg = svg(&groups);
        assert!(svg.contains("translate(0 0)") || svg.contains("translate(100 0)"), "{svg}");
        // r1 at 0, r2 at 200: z centred at 100, y after them at 400.
        assert!(svg.contains(r#"translate(100 0)"#) && svg.contains("translate(0 122)") && svg.contains("translate(200 122)"), "{svg}");
        assert!(svg.contains("translate(400 0)"), "{svg}");
        assert!(svg.contains("y&lt;script&gt;") && !svg.contains("<script>"), "{svg}");
        assert!(svg.contains("↗ 10.0.0.0/24") && svg.contains(r#"class="group routed""#));
    }
}
