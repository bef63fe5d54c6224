//! A self-contained SVG of a run: pending and running pods (top panel) and live nodes
//! per group (bottom panel) over time, drawn from the report's timeline, with a marker
//! on the pods panel's time axis at each spot interruption warning. Hand-written SVG,
//! no dependencies; output is deterministic like the report.

use crate::report::Report;
use std::fmt::Write as _;

const WIDTH: f64 = 960.0;
const HEIGHT: f64 = 620.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 230.0;
const TOP: f64 = 75.0;
const PANEL: f64 = 200.0;
const GAP: f64 = 70.0;
/// Spot interruption markers: darker than the pending-pods line they sit under.
const INTERRUPTION_COLOR: &str = "#8b0000";
const PALETTE: [&str; 10] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
    "#17becf", "#d62728",
];

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A "nice" tick step so that about `ticks` steps cover `max`.
fn nice_step(max: f64, ticks: f64) -> f64 {
    if max <= 0.0 {
        return 1.0;
    }
    let raw = max / ticks;
    let magnitude = 10f64.powf(raw.log10().floor());
    for m in [1.0, 2.0, 5.0, 10.0] {
        if m * magnitude >= raw {
            return m * magnitude;
        }
    }
    10.0 * magnitude
}

struct Axes {
    top: f64,
    t_max: f64,
    y_max: f64,
    time_unit: f64,
}

impl Axes {
    fn x(&self, t: f64) -> f64 {
        LEFT + (WIDTH - LEFT - RIGHT) * (t / self.t_max)
    }
    fn y(&self, v: f64) -> f64 {
        self.top + PANEL - PANEL * (v / self.y_max)
    }
}

fn draw_axes(out: &mut String, axes: &Axes, title: &str, y_label: &str, time_label: &str) {
    let (x0, x1) = (LEFT, WIDTH - RIGHT);
    let (y0, y1) = (axes.top + PANEL, axes.top);
    let _ = writeln!(
        out,
        r#"<text x="{x0}" y="{}" font-size="14" font-weight="bold">{}</text>"#,
        y1 - 10.0,
        escape(title)
    );
    let y_step = nice_step(axes.y_max, 4.0);
    let mut v = 0.0;
    while v <= axes.y_max + 1e-9 {
        let y = axes.y(v);
        let _ = writeln!(
            out,
            r##"<line x1="{x0}" y1="{y:.1}" x2="{x1}" y2="{y:.1}" stroke="#e5e5e5"/>"##
        );
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{:.1}" font-size="11" text-anchor="end">{}</text>"#,
            x0 - 6.0,
            y + 4.0,
            v
        );
        v += y_step;
    }
    let t_step = nice_step(axes.t_max / axes.time_unit, 8.0);
    let mut t = 0.0;
    while t <= axes.t_max / axes.time_unit + 1e-9 {
        let x = axes.x(t * axes.time_unit);
        let _ = writeln!(
            out,
            r##"<line x1="{x:.1}" y1="{y0}" x2="{x:.1}" y2="{}" stroke="#333"/>"##,
            y0 + 4.0
        );
        let _ = writeln!(
            out,
            r#"<text x="{x:.1}" y="{}" font-size="11" text-anchor="middle">{}</text>"#,
            y0 + 16.0,
            t
        );
        t += t_step;
    }
    let _ = writeln!(
        out,
        r##"<line x1="{x0}" y1="{y0}" x2="{x1}" y2="{y0}" stroke="#333"/>"##
    );
    let _ = writeln!(
        out,
        r##"<line x1="{x0}" y1="{y0}" x2="{x0}" y2="{y1}" stroke="#333"/>"##
    );
    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="{}" font-size="12" text-anchor="middle">{time_label}</text>"#,
        (x0 + x1) / 2.0,
        y0 + 32.0
    );
    let cy = (y0 + y1) / 2.0;
    let _ = writeln!(
        out,
        r#"<text x="18" y="{cy:.1}" font-size="12" text-anchor="middle" transform="rotate(-90 18 {cy:.1})">{}</text>"#,
        escape(y_label)
    );
}

fn step_line(out: &mut String, axes: &Axes, points: &[(f64, f64)], color: &str) {
    if points.is_empty() {
        return;
    }
    let mut path = String::new();
    for (i, (t, v)) in points.iter().enumerate() {
        let (x, y) = (axes.x(*t), axes.y(*v));
        if i == 0 {
            let _ = write!(path, "{x:.1},{y:.1}");
        } else {
            let prev_y = axes.y(points[i - 1].1);
            let _ = write!(path, " {x:.1},{prev_y:.1} {x:.1},{y:.1}");
        }
    }
    let _ = writeln!(
        out,
        r#"<polyline fill="none" stroke="{color}" stroke-width="1.8" points="{path}"/>"#
    );
}

fn legend(out: &mut String, top: f64, entries: &[(String, &str)]) {
    let x = WIDTH - RIGHT + 20.0;
    for (i, (label, color)) in entries.iter().enumerate() {
        let y = top + 10.0 + 18.0 * i as f64;
        let _ = writeln!(
            out,
            r#"<line x1="{x}" y1="{y}" x2="{}" y2="{y}" stroke="{color}" stroke-width="3"/>"#,
            x + 20.0
        );
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{}" font-size="12">{}</text>"#,
            x + 26.0,
            y + 4.0,
            escape(label)
        );
    }
}

/// A small triangle pointing down at the time axis at each warning time (several at
/// one time overlap into one).
fn interruption_markers(out: &mut String, axes: &Axes, times: &[f64]) {
    let y = axes.top + PANEL;
    for &t in times {
        let x = axes.x(t);
        let _ = writeln!(
            out,
            r#"<path d="M{:.1},{:.1} L{:.1},{:.1} L{x:.1},{y:.1} Z" fill="{INTERRUPTION_COLOR}"><title>spot interruption at {}</title></path>"#,
            x - 4.0,
            y - 8.0,
            x + 4.0,
            y - 8.0,
            model::format_duration(std::time::Duration::from_secs_f64(t.max(0.0)))
        );
    }
}

/// The legend entry of the interruption markers, below `entries` legend lines.
fn interruption_legend(out: &mut String, top: f64, entries: usize, count: u32) {
    let x = WIDTH - RIGHT + 20.0;
    let y = top + 10.0 + 18.0 * entries as f64;
    let _ = writeln!(
        out,
        r#"<path d="M{:.1},{:.1} L{:.1},{:.1} L{:.1},{:.1} Z" fill="{INTERRUPTION_COLOR}"/>"#,
        x + 6.0,
        y - 5.0,
        x + 14.0,
        y - 5.0,
        x + 10.0,
        y + 3.0
    );
    let _ = writeln!(
        out,
        r#"<text x="{}" y="{}" font-size="12">spot interruption ({count})</text>"#,
        x + 26.0,
        y + 4.0
    );
}

/// The SVG document for a report.
pub fn svg(report: &Report) -> String {
    let timeline = &report.timeline;
    let t_max = timeline.last().map_or(60.0, |s| s.t).max(60.0);
    let (time_unit, time_label) = if t_max > 3.0 * 3600.0 {
        (3600.0, "time (hours)")
    } else {
        (60.0, "time (minutes)")
    };
    let pods_max = timeline
        .iter()
        .map(|s| s.pending.max(s.running))
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let groups: Vec<&String> = report.groups.iter().map(|g| &g.name).collect();
    let nodes_max = timeline
        .iter()
        .flat_map(|s| s.nodes.values().copied())
        .max()
        .unwrap_or(0)
        .max(1) as f64;

    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="{LEFT}" y="24" font-size="16" font-weight="bold">{} (seed {})</text>"#,
        escape(&report.scenario),
        report.seed
    );
    let _ = writeln!(
        out,
        r#"<text x="{LEFT}" y="44" font-size="12">{:.2} node-hours (lower bound {:.2}), ${:.2}; time to start p95 {:.0}s; {} pods killed by scale-in</text>"#,
        report.node_hours,
        report.lower_bound_node_hours,
        report.cost_usd,
        report.time_to_start_seconds.p95,
        report.pods.killed_by_scale_in
    );
    if report.interruptions > 0 {
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{}" font-size="12" text-anchor="end" fill="{INTERRUPTION_COLOR}">{} spot interruptions: {} pods killed, {:.2} pod-hours of work lost, restart p95 {:.0}s</text>"#,
            WIDTH - RIGHT,
            TOP - 10.0,
            report.interruptions,
            report.pods.killed_by_interruption,
            report.work_lost_pod_hours,
            report.time_to_restart_seconds.p95
        );
    }

    let pods_axes = Axes {
        top: TOP,
        t_max,
        y_max: nice_ceil(pods_max),
        time_unit,
    };
    draw_axes(&mut out, &pods_axes, "Pods", "pods", time_label);
    let pending: Vec<(f64, f64)> = timeline
        .iter()
        .map(|s| (s.t, f64::from(s.pending)))
        .collect();
    let running: Vec<(f64, f64)> = timeline
        .iter()
        .map(|s| (s.t, f64::from(s.running)))
        .collect();
    step_line(&mut out, &pods_axes, &running, "#2ca02c");
    step_line(&mut out, &pods_axes, &pending, "#d62728");
    legend(
        &mut out,
        TOP,
        &[
            ("pending pods".to_owned(), "#d62728"),
            ("running pods".to_owned(), "#2ca02c"),
        ],
    );
    if !report.interrupted_instances.is_empty() {
        let times: Vec<f64> = report
            .interrupted_instances
            .iter()
            .map(|i| i.at_seconds)
            .collect();
        interruption_markers(&mut out, &pods_axes, &times);
        interruption_legend(&mut out, TOP, 2, report.interruptions);
    }

    let nodes_top = TOP + PANEL + GAP;
    let nodes_axes = Axes {
        top: nodes_top,
        t_max,
        y_max: nice_ceil(nodes_max),
        time_unit,
    };
    draw_axes(
        &mut out,
        &nodes_axes,
        "Nodes per group (booting or ready)",
        "nodes",
        time_label,
    );
    let mut entries = Vec::new();
    for (i, g) in groups.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let points: Vec<(f64, f64)> = timeline
            .iter()
            .map(|s| (s.t, f64::from(s.nodes.get(*g).copied().unwrap_or(0))))
            .collect();
        step_line(&mut out, &nodes_axes, &points, color);
        entries.push(((*g).clone(), color));
    }
    legend(&mut out, nodes_top, &entries);
    let _ = writeln!(out, "</svg>");
    out
}

/// Rounds an axis maximum up to a multiple of its tick step.
fn nice_ceil(max: f64) -> f64 {
    let step = nice_step(max, 4.0);
    (max / step).ceil() * step
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_steps() {
        assert_eq!(nice_step(100.0, 4.0), 50.0);
        assert_eq!(nice_step(7.0, 4.0), 2.0);
        assert_eq!(nice_step(1.0, 4.0), 0.5);
        assert_eq!(nice_ceil(7.0), 8.0);
    }

    #[test]
    fn escapes_markup() {
        assert_eq!(escape("a<b&\"c\">"), "a&lt;b&amp;&quot;c&quot;&gt;");
    }
}
