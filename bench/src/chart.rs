//! The PNG charts. `chart.png`: one panel per fio job and `direct` value, bars per numjobs
//! and target (medians, with min–max whiskers), in the job's own unit. `chart-meta.png`: a
//! row per metadata job, its rate (thousand ops/s) and its p99 latency (µs), a bar per target.
//!
//! Text needs a TrueType font, loaded at run time: `$PFNFS_BENCH_FONT`, else DejaVu Sans or
//! Liberation Sans in the usual places, else the first `.ttf` under /usr/share/fonts. With no
//! font at all the chart is still drawn, without labels, and [`draw`] says so.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::jobs::JobId;
use crate::meta_report::{MetaCell, MetaSummaryRow};
use crate::report::{Report, SummaryRow};
use crate::targets::TargetKind;

const FONT: &str = "sans-serif";
const PANEL_W: u32 = 720;
const PANEL_H: u32 = 340;
const HEADER_H: u32 = 96;
const COLUMNS: u32 = 2;

fn color(t: TargetKind) -> RGBColor {
    match t {
        TargetKind::PfnfsDirect => RGBColor(31, 119, 180),
        TargetKind::PfnfsBuffered => RGBColor(44, 160, 44),
        TargetKind::Tmpfs => RGBColor(140, 140, 140),
        TargetKind::Bindfs => RGBColor(255, 127, 14),
    }
}

fn font_candidates() -> Vec<PathBuf> {
    let mut list: Vec<PathBuf> = std::env::var_os("PFNFS_BENCH_FONT")
        .map(PathBuf::from)
        .into_iter()
        .collect();
    for p in [
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/TTF/DejaVuSans.ttf",
        "/usr/share/fonts/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",
        "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
        "/usr/share/fonts/liberation-sans/LiberationSans-Regular.ttf",
    ] {
        list.push(PathBuf::from(p));
    }
    for root in ["/usr/share/fonts", "/usr/local/share/fonts"] {
        find_ttf(Path::new(root), 4, &mut list);
    }
    list
}

fn find_ttf(dir: &Path, depth: u32, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    paths.sort();
    for p in paths {
        if p.is_dir() && depth > 0 {
            find_ttf(&p, depth - 1, out);
        } else if p.extension().is_some_and(|e| e.eq_ignore_ascii_case("ttf")) {
            out.push(p);
        }
    }
}

/// Registers a font once; the path it came from, or None.
fn load_font() -> Option<&'static Path> {
    static LOADED: OnceLock<Option<PathBuf>> = OnceLock::new();
    LOADED
        .get_or_init(|| {
            for path in font_candidates() {
                let Ok(bytes) = std::fs::read(&path) else {
                    continue;
                };
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font(FONT, FontStyle::Normal, bytes).is_ok() {
                    return Some(path);
                }
            }
            None
        })
        .as_deref()
}

/// A panel: one job with one `direct` value.
struct Panel<'a> {
    job: JobId,
    direct: bool,
    rows: Vec<&'a SummaryRow>,
}

fn panels(report: &Report) -> Vec<Panel<'_>> {
    let mut out: Vec<Panel<'_>> = Vec::new();
    for row in &report.summary {
        let key = (row.case.job, row.case.direct);
        match out.iter_mut().find(|p| (p.job, p.direct) == key) {
            Some(p) => p.rows.push(row),
            None => out.push(Panel {
                job: key.0,
                direct: key.1,
                rows: vec![row],
            }),
        }
    }
    out
}

/// A round axis maximum and step for values up to `max`: 1, 2 or 5 × 10^k, 4–8 steps.
fn axis(max: f64) -> (f64, f64) {
    if max <= 0.0 || !max.is_finite() {
        return (1.0, 0.25);
    }
    let raw = max / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| max / s <= 6.0)
        .unwrap_or(10.0 * mag);
    ((max / step).ceil() * step, step)
}

fn tick_text(v: f64, step: f64) -> String {
    if step >= 1.0 {
        format!("{v:.0}")
    } else if step >= 0.1 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

type Area<'a> = DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>;

fn err<E: std::fmt::Debug>(e: E) -> String {
    format!("drawing the chart: {e:?}")
}

fn text(
    area: &Area<'_>,
    fonts: bool,
    s: &str,
    size: f64,
    pos: (i32, i32),
    anchor: (HPos, VPos),
    color: &RGBColor,
) -> Result<(), String> {
    if !fonts {
        return Ok(());
    }
    let style = TextStyle::from((FONT, size).into_font())
        .color(color)
        .pos(Pos::new(anchor.0, anchor.1));
    area.draw_text(s, &style, pos).map_err(err)
}

/// One bar: a median with its min–max whisker, in the panel's unit (NaN median: failed).
struct Bar {
    median: f64,
    min: f64,
    max: f64,
}

/// A group of bars under one label, one slot per shown target (None: no bar there).
struct Group {
    label: String,
    bars: Vec<Option<Bar>>,
}

/// A bar panel: `title` on top, one group of bars per entry of `groups`, one colour per
/// target of `shown`, labelled with their medians.
fn bar_panel(
    area: &Area<'_>,
    fonts: bool,
    title: &str,
    shown: &[TargetKind],
    groups: &[Group],
) -> Result<(), String> {
    let (w, h) = area.dim_in_pixel();
    let (w, h) = (w as i32, h as i32);
    text(
        area,
        fonts,
        title,
        17.0,
        (w / 2, 8),
        (HPos::Center, VPos::Top),
        &BLACK,
    )?;
    let max = groups
        .iter()
        .flat_map(|g| g.bars.iter().flatten())
        .map(|b| b.max.max(b.median))
        .filter(|v| v.is_finite())
        .fold(0.0, f64::max);
    let (top, step) = axis(max);
    let (left, right, y_top, y_bottom) = (64, w - 16, 40, h - 34);
    let y_of = |v: f64| y_bottom - ((v / top) * f64::from(y_bottom - y_top)) as i32;

    let grid = RGBColor(225, 225, 225);
    let mut v = 0.0;
    while v <= top + step / 2.0 {
        let y = y_of(v);
        area.draw(&PathElement::new(vec![(left, y), (right, y)], grid))
            .map_err(err)?;
        text(
            area,
            fonts,
            &tick_text(v, step),
            13.0,
            (left - 6, y),
            (HPos::Right, VPos::Center),
            &BLACK,
        )?;
        v += step;
    }
    area.draw(&PathElement::new(
        vec![(left, y_top), (left, y_bottom)],
        BLACK,
    ))
    .map_err(err)?;
    area.draw(&PathElement::new(
        vec![(left, y_bottom), (right, y_bottom)],
        BLACK,
    ))
    .map_err(err)?;

    let n_groups = groups.len().max(1) as i32;
    let group_w = (right - left) / n_groups;
    for (g, group) in groups.iter().enumerate() {
        let gx = left + g as i32 * group_w;
        text(
            area,
            fonts,
            &group.label,
            14.0,
            (gx + group_w / 2, y_bottom + 8),
            (HPos::Center, VPos::Top),
            &BLACK,
        )?;
        let n = shown.len().max(1) as i32;
        let bar_w = (group_w * 8 / 10) / n;
        let x0 = gx + group_w / 10;
        for (i, (&t, bar)) in shown.iter().zip(&group.bars).enumerate() {
            let Some(bar) = bar else { continue };
            let bx = x0 + i as i32 * bar_w;
            if !bar.median.is_finite() {
                text(
                    area,
                    fonts,
                    "failed",
                    11.0,
                    (bx + bar_w / 2, y_bottom - 4),
                    (HPos::Center, VPos::Bottom),
                    &RED,
                )?;
                continue;
            }
            let y = y_of(bar.median);
            area.draw(&Rectangle::new(
                [(bx + 2, y), (bx + bar_w - 2, y_bottom)],
                color(t).filled(),
            ))
            .map_err(err)?;
            let (lo, hi) = (y_of(bar.min), y_of(bar.max));
            let cx = bx + bar_w / 2;
            if hi < lo {
                for seg in [
                    vec![(cx, lo), (cx, hi)],
                    vec![(cx - 4, lo), (cx + 4, lo)],
                    vec![(cx - 4, hi), (cx + 4, hi)],
                ] {
                    area.draw(&PathElement::new(seg, BLACK)).map_err(err)?;
                }
            }
            text(
                area,
                fonts,
                &crate::report::sig3(bar.median),
                11.0,
                (cx, hi.min(y) - 3),
                (HPos::Center, VPos::Bottom),
                &BLACK,
            )?;
        }
    }
    Ok(())
}

/// A fio panel: one group per numjobs value, in the job's unit.
fn draw_panel(
    area: &Area<'_>,
    panel: &Panel<'_>,
    fonts: bool,
    targets: &[TargetKind],
) -> Result<(), String> {
    let metric = panel.job.metric();
    let title = format!(
        "{}, direct={} ({})",
        panel.job.name(),
        u8::from(panel.direct),
        metric.unit()
    );
    let shown: Vec<TargetKind> = targets
        .iter()
        .copied()
        .filter(|&t| panel.rows.iter().any(|r| r.cell(t).is_some()))
        .collect();
    let groups: Vec<Group> = panel
        .rows
        .iter()
        .map(|row| Group {
            label: format!("numjobs={}", row.case.numjobs),
            bars: shown
                .iter()
                .map(|&t| {
                    row.cell(t).map(|c| Bar {
                        median: metric.scaled(c.median),
                        min: metric.scaled(c.min),
                        max: metric.scaled(c.max),
                    })
                })
                .collect(),
        })
        .collect();
    bar_panel(area, fonts, &title, &shown, &groups)
}

/// The metadata panels of one job: thousands of operations per second (whiskers: min–max
/// over rounds), and the 99th-percentile latency in µs.
fn draw_meta_panels(
    rate_area: &Area<'_>,
    latency_area: &Area<'_>,
    row: &MetaSummaryRow,
    fonts: bool,
    targets: &[TargetKind],
) -> Result<(), String> {
    let shown: Vec<TargetKind> = targets
        .iter()
        .copied()
        .filter(|&t| row.cell(t).is_some())
        .collect();
    let one = |f: &dyn Fn(&MetaCell) -> Bar| Group {
        label: row.job.name().to_string(),
        bars: shown.iter().map(|&t| row.cell(t).map(f)).collect(),
    };
    let rates = one(&|c| Bar {
        median: c.ops_per_s / 1e3,
        min: c.ops_per_s_min / 1e3,
        max: c.ops_per_s_max / 1e3,
    });
    bar_panel(
        rate_area,
        fonts,
        &format!("{}: thousand ops/s", row.job.name()),
        &shown,
        &[rates],
    )?;
    let p99 = one(&|c| Bar {
        median: c.p99_us,
        min: c.p99_us,
        max: c.p99_us,
    });
    bar_panel(
        latency_area,
        fonts,
        &format!("{}: p99 latency (µs)", row.job.name()),
        &shown,
        &[p99],
    )
}

/// Which chart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Chart {
    /// The fio jobs: a panel per job and `direct` value.
    Fio,
    /// The metadata jobs: a row per job, its rate and its p99 latency.
    Meta,
}

/// Draws the chart into `path`. Ok(Some(warning)) if it had to be drawn without text.
pub fn draw(report: &Report, path: &Path, chart: Chart) -> Result<Option<String>, String> {
    let fonts = load_font().is_some();
    draw_with(report, path, fonts, chart)?;
    Ok((!fonts).then(|| {
        "no TrueType font found, so the chart has no text; install one \
         (apt-get install fonts-dejavu-core) or set PFNFS_BENCH_FONT=/path/to/font.ttf"
            .to_string()
    }))
}

/// Draws the chart, with text only if `fonts` (a font is registered).
fn draw_with(report: &Report, path: &Path, fonts: bool, chart: Chart) -> Result<(), String> {
    let panels = panels(report);
    let count = match chart {
        Chart::Fio => panels.len(),
        Chart::Meta => 2 * report.meta_summary.len(),
    };
    let rows = (count as u32).div_ceil(COLUMNS).max(1);
    let width = PANEL_W * COLUMNS;
    let height = HEADER_H + rows * PANEL_H;
    let root = BitMapBackend::new(path, (width, height)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let (header, body) = root.split_vertically(HEADER_H);

    let s = &report.settings;
    let title = match chart {
        Chart::Fio => format!(
            "pfnfs bench: medians of {} round{} × {} s (whiskers: min–max){}",
            s.rounds,
            if s.rounds == 1 { "" } else { "s" },
            s.runtime_s,
            if s.quick { ", quick smoke run" } else { "" }
        ),
        Chart::Meta => format!(
            "pfnfs bench, metadata: {} files, 1,000 per directory; medians of {} round{} \
             (whiskers: min–max){}",
            s.files,
            s.rounds,
            if s.rounds == 1 { "" } else { "s" },
            if s.quick { ", quick smoke run" } else { "" }
        ),
    };
    text(
        &header,
        fonts,
        &title,
        22.0,
        (16, 10),
        (HPos::Left, VPos::Top),
        &BLACK,
    )?;
    let machine = match chart {
        Chart::Fio => format!(
            "{}; {}; {}",
            report.finished,
            report.machine.summary(),
            report.tools.fio
        ),
        Chart::Meta => format!("{}; {}", report.finished, report.machine.summary()),
    };
    text(
        &header,
        fonts,
        &machine,
        14.0,
        (16, 40),
        (HPos::Left, VPos::Top),
        &RGBColor(80, 80, 80),
    )?;
    let mut x = 16;
    for &t in &s.targets {
        header
            .draw(&Rectangle::new([(x, 66), (x + 18, 84)], color(t).filled()))
            .map_err(err)?;
        text(
            &header,
            fonts,
            t.name(),
            15.0,
            (x + 24, 75),
            (HPos::Left, VPos::Center),
            &BLACK,
        )?;
        x += 40 + 9 * t.name().len() as i32;
    }

    let areas = body.split_evenly((rows as usize, COLUMNS as usize));
    match chart {
        Chart::Fio => {
            for (area, panel) in areas.iter().zip(&panels) {
                draw_panel(area, panel, fonts, &s.targets)?;
            }
        }
        Chart::Meta => {
            for (pair, row) in areas.chunks(2).zip(&report.meta_summary) {
                if let [rate, latency] = pair {
                    draw_meta_panels(rate, latency, row, fonts, &s.targets)?;
                }
            }
        }
    }
    root.present().map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_report() -> Report {
        use crate::jobs::{Case, JobId};
        use crate::report::{RunRecord, summarize};
        let jobs = [JobId::Randread4k, JobId::Seqwrite1m, JobId::Randrw4kMmapbuf];
        let mut runs = Vec::new();
        for (i, &target) in crate::targets::ALL_TARGETS.iter().enumerate() {
            for &job in &jobs {
                for numjobs in [1, 2] {
                    for direct in [true, false] {
                        let case = Case {
                            job,
                            numjobs,
                            direct,
                        };
                        if !job.runs_on(target) || (!direct && !target.has_page_cache()) {
                            continue;
                        }
                        for round in 1..=3 {
                            let value = (1e5 + 3e4 * i as f64) * f64::from(round + numjobs);
                            runs.push(RunRecord {
                                round,
                                target,
                                case,
                                metric: job.metric(),
                                // A failed run leaves a NaN median in one cell.
                                value: (target != TargetKind::Bindfs || job != JobId::Seqwrite1m)
                                    .then_some(value),
                                result: None,
                                error: None,
                                daemon_mem_after: None,
                                raw_output: String::new(),
                            });
                        }
                    }
                }
            }
        }
        let summary = summarize(&runs, &jobs, &[1, 2]);
        Report::sample(
            summary,
            runs,
            crate::targets::ALL_TARGETS.to_vec(),
            jobs.to_vec(),
            vec![1, 2],
        )
    }

    #[test]
    fn draws_with_and_without_text() {
        let report = sample_report();
        let dir = std::env::temp_dir().join(format!("pfnfs-chart-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut sizes = Vec::new();
        for fonts in [false, load_font().is_some()] {
            let path = dir.join(format!("chart-{fonts}.png"));
            draw_with(&report, &path, fonts, Chart::Fio).unwrap();
            let bytes = std::fs::read(&path).unwrap();
            assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"));
            sizes.push(bytes.len());
        }
        std::fs::remove_dir_all(&dir).unwrap();
        if load_font().is_some() {
            assert!(sizes[1] > sizes[0], "text adds pixels: {sizes:?}");
        }
    }

    #[test]
    fn draws_the_metadata_chart() {
        let mut report = sample_report();
        let runs = crate::meta_report::tests::sample_runs();
        report.meta_summary = crate::meta_report::summarize(
            &runs,
            &[crate::meta::MetaJob::Create, crate::meta::MetaJob::Stat],
        );
        let dir = std::env::temp_dir().join(format!("pfnfs-meta-chart-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("chart-meta.png");
        draw_with(&report, &path, load_font().is_some(), Chart::Meta).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"));
        let height = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
        assert_eq!(height, HEADER_H + 2 * PANEL_H, "a row per job");
    }

    #[test]
    fn round_axes() {
        assert_eq!(axis(96.0), (100.0, 20.0));
        assert_eq!(axis(569.0), (600.0, 100.0));
        assert_eq!(axis(4.6), (5.0, 1.0));
        assert_eq!(axis(0.0), (1.0, 0.25));
    }
}
