//! `xdpcopy report PREFIX`: the latency percentile plot, as PNG and SVG.
//!
//! Reads the `PREFIX_<metric>.percentiles.csv` files of a run and draws latency (ms) against
//! percentile on HdrHistogram's usual log scale (x = log10(1/(1-p)): 0 %, 90 %, 99 %, 99.9 %, …),
//! one line per metric present, all on one pair of axes so test and production compare directly.
//!
//! No system fonts are needed: the SVG leaves text to the viewer (`<text>` elements), and the
//! PNG draws its labels with the public-domain 8×8 bitmap font of the `font8x8` crate through
//! [`GlyphText`], a backend wrapper (plotters without its `ttf` feature cannot rasterize text).

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use plotters::prelude::{
    BitMapBackend, ChartBuilder, Color, IntoDrawingArea as _, IntoTextStyle as _, LineSeries, PathElement, RGBColor,
    Rectangle, SVGBackend, Text, BLACK, WHITE,
};
use plotters_backend::{
    text_anchor::{HPos, Pos, VPos},
    BackendColor, BackendCoord, BackendStyle, BackendTextStyle, DrawingBackend, DrawingErrorKind,
};

use super::{file, resolve_prefix, Metric};

/// The plot size in pixels.
const SIZE: (u32, u32) = (1200, 720);

/// What can go wrong rendering a report.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// No percentile CSV was found for the prefix.
    #[error(
        "no latency data: none of {prefix}_<metric>.percentiles.csv exists; run with --latency-csv {prefix} first"
    )]
    NoData {
        /// The prefix looked at.
        prefix: String,
    },
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// A percentile CSV is malformed.
    #[error("{path}:{line}: {reason} (expected an HdrHistogram percentile CSV)")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// Drawing failed.
    #[error("cannot draw {path}: {reason}")]
    Draw {
        /// The output file.
        path: PathBuf,
        /// The drawing error.
        reason: String,
    },
}

/// One metric's percentile line.
#[derive(Debug, Clone)]
struct Series {
    metric: Metric,
    /// (log10(1/(1-p)), latency ms), rows with p < 1 only.
    points: Vec<(f64, f64)>,
    samples: u64,
    max_ms: f64,
}

/// Renders `PREFIX_report.png` and `PREFIX_report.svg` from the run's percentile CSVs; returns
/// the two paths. PREFIX is resolved like `--latency-csv` (a directory means `<dir>/latency`).
/// Test and production come first, in contrasting colours, on the same axes.
///
/// # Errors
/// [`ReportError::NoData`] without any percentile CSV, else a read, parse or draw error.
pub fn render_report(prefix: &Path) -> Result<Vec<PathBuf>, ReportError> {
    let prefix = &resolve_prefix(prefix);
    let mut series = Vec::new();
    for m in [Metric::TestResponse, Metric::Production, Metric::Handshake, Metric::ReplayRtt, Metric::Dataplane] {
        let path = file(prefix, &format!("_{m}.percentiles.csv"));
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(source) => return Err(ReportError::Io { path, source }),
        };
        if let Some(s) = parse_percentiles(&path, m, &text)? {
            series.push(s);
        }
    }
    if series.is_empty() {
        return Err(ReportError::NoData { prefix: prefix.display().to_string() });
    }
    let title = match prefix.file_name() {
        Some(name) => format!("Latency by percentile - {}", name.to_string_lossy()),
        None => "Latency by percentile".to_string(),
    };

    let png = file(prefix, "_report.png");
    let backend = GlyphText(BitMapBackend::new(&png, SIZE));
    draw(backend, &title, &series).map_err(|reason| ReportError::Draw { path: png.clone(), reason })?;

    let svg = file(prefix, "_report.svg");
    let mut text = String::new();
    draw(SVGBackend::with_string(&mut text, SIZE), &title, &series)
        .map_err(|reason| ReportError::Draw { path: svg.clone(), reason })?;
    fs::write(&svg, text).map_err(|source| ReportError::Io { path: svg.clone(), source })?;
    Ok(vec![png, svg])
}

/// Parses an HdrHistogram percentile CSV; `None` if it has no rows.
fn parse_percentiles(path: &Path, metric: Metric, text: &str) -> Result<Option<Series>, ReportError> {
    let err = |line: usize, reason: &str| ReportError::Parse { path: path.to_owned(), line, reason: reason.into() };
    let mut lines = text.lines().enumerate();
    match lines.next() {
        Some((_, h)) if h.starts_with("\"Value\",\"Percentile\"") => {}
        _ => return Err(err(1, "missing the \"Value\",\"Percentile\",... header")),
    }
    let mut points = Vec::new();
    let (mut samples, mut max_ms) = (0, 0.0_f64);
    for (i, line) in lines {
        if line.is_empty() {
            continue;
        }
        let cols: Vec<&str> = line.split(',').collect();
        if cols.len() != 4 {
            return Err(err(i + 1, "expected 4 columns"));
        }
        let value_us: f64 = cols[0].parse().map_err(|_| err(i + 1, "bad value"))?;
        let p: f64 = cols[1].parse().map_err(|_| err(i + 1, "bad percentile"))?;
        samples = cols[2].parse().map_err(|_| err(i + 1, "bad count"))?;
        let ms = value_us / 1000.0;
        max_ms = max_ms.max(ms);
        if p < 1.0 {
            points.push(((1.0 / (1.0 - p)).log10(), ms));
        }
    }
    if points.is_empty() {
        return Ok(None);
    }
    Ok(Some(Series { metric, points, samples, max_ms }))
}

/// The line colour of a metric (test and production in contrasting colours).
fn color(m: Metric) -> RGBColor {
    match m {
        Metric::TestResponse => RGBColor(31, 119, 180),
        Metric::Production => RGBColor(255, 127, 14),
        Metric::Handshake => RGBColor(44, 160, 44),
        Metric::Dataplane => RGBColor(214, 39, 40),
        Metric::ReplayRtt => RGBColor(148, 103, 189),
    }
}

/// The label of x = log10(1/(1-p)) = k: 0 %, 90 %, 99 %, 99.9 %, …
fn percentile_label(x: f64) -> String {
    let k = x.round() as i64;
    match k {
        i64::MIN..=0 => "0%".into(),
        1 => "90%".into(),
        2 => "99%".into(),
        _ => format!("99.{}%", "9".repeat((k - 2) as usize)),
    }
}

fn draw<DB: DrawingBackend>(backend: DB, title: &str, series: &[Series]) -> Result<(), String> {
    let root = backend.into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let x_max = series.iter().flat_map(|s| s.points.iter().map(|p| p.0)).fold(1.0_f64, f64::max).ceil();
    let y_top = series.iter().map(|s| s.max_ms).fold(0.0_f64, f64::max);
    let y_max = if y_top > 0.0 { y_top * 1.3 } else { 1.0 }; // headroom for the legend
    let y_decimals = match y_max {
        v if v < 0.05 => 4,
        v if v < 0.5 => 3,
        v if v < 5.0 => 2,
        v if v < 50.0 => 1,
        _ => 0,
    };

    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 24))
        .margin(20)
        .margin_right(70)
        .x_label_area_size(60)
        .y_label_area_size(90)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("Percentile")
        .y_desc("Latency (ms)")
        // One tick per decade of 1/(1-p); plotters' f64 ticks then fall on the integers, and any
        // other tick stays unlabelled rather than mislabelled.
        .x_labels(x_max as usize + 1)
        .x_label_formatter(&|x| if (x - x.round()).abs() < 1e-9 { percentile_label(*x) } else { String::new() })
        .y_label_formatter(&|y| format!("{y:.y_decimals$}"))
        .label_style(("sans-serif", 16))
        .axis_desc_style(("sans-serif", 16))
        .light_line_style(WHITE.mix(0.0))
        .bold_line_style(BLACK.mix(0.15))
        .draw()
        .map_err(|e| e.to_string())?;
    for s in series {
        chart
            .draw_series(LineSeries::new(s.points.iter().copied(), Color::stroke_width(&color(s.metric), 2)))
            .map_err(|e| e.to_string())?;
    }

    // The legend, drawn by hand: plotters sizes its own legend box with a font estimate that
    // does not know the PNG's bitmap glyphs.
    let (x_range, y_range) = chart.plotting_area().get_pixel_range();
    let style = ("sans-serif", 16).into_text_style(&root);
    let labels: Vec<String> =
        series.iter().map(|s| format!("{} ({} samples, max {:.3} ms)", s.metric, s.samples, s.max_ms)).collect();
    let mut text_w = 0;
    let mut line_h = 0;
    for l in &labels {
        let (w, h) = root.estimate_text_size(l, &style).map_err(|e| e.to_string())?;
        text_w = text_w.max(w as i32);
        line_h = line_h.max(h as i32 + 8);
    }
    let (x0, y0) = (x_range.start + 12, y_range.start + 12);
    let (box_w, box_h) = (44 + text_w + 12, line_h * labels.len() as i32 + 8);
    root.draw(&Rectangle::new([(x0, y0), (x0 + box_w, y0 + box_h)], WHITE.mix(0.9).filled()))
        .and_then(|()| root.draw(&Rectangle::new([(x0, y0), (x0 + box_w, y0 + box_h)], BLACK)))
        .map_err(|e| e.to_string())?;
    for (i, (s, label)) in series.iter().zip(&labels).enumerate() {
        let y = y0 + 4 + line_h * i as i32 + line_h / 2;
        let c = color(s.metric);
        root.draw(&PathElement::new(vec![(x0 + 8, y), (x0 + 36, y)], Color::stroke_width(&c, 3)))
            .and_then(|()| {
                let anchored = style.pos(Pos::new(HPos::Left, VPos::Center));
                root.draw(&Text::new(label.as_str(), (x0 + 44, y), anchored))
            })
            .map_err(|e| e.to_string())?;
    }
    root.present().map_err(|e| e.to_string())
}

/// A backend wrapper that draws text with the 8×8 bitmap font (scaled by whole pixels to the
/// requested size) and forwards everything else.
struct GlyphText<B>(B);

/// The pixel scale of the 8×8 font for a font size (at least 1).
fn glyph_scale(size: f64) -> i32 {
    ((size / 8.0).round() as i32).max(1)
}

/// The 8×8 bitmap of `c`: one byte per row, bit 0 the leftmost pixel.
fn glyph(c: char) -> [u8; 8] {
    let code = c as usize;
    match code {
        0..=127 => font8x8::legacy::BASIC_LEGACY[code],
        0xa0..=0xff => font8x8::legacy::LATIN_LEGACY[code - 0xa0],
        _ => font8x8::legacy::BASIC_LEGACY[usize::from(b'?')],
    }
}

impl<B: DrawingBackend> DrawingBackend for GlyphText<B> {
    type ErrorType = B::ErrorType;

    fn get_size(&self) -> (u32, u32) {
        self.0.get_size()
    }

    fn ensure_prepared(&mut self) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.0.ensure_prepared()
    }

    fn present(&mut self) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.0.present()
    }

    fn draw_pixel(
        &mut self,
        point: BackendCoord,
        color: BackendColor,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.0.draw_pixel(point, color)
    }

    fn draw_line<S: BackendStyle>(
        &mut self,
        from: BackendCoord,
        to: BackendCoord,
        style: &S,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.0.draw_line(from, to, style)
    }

    fn draw_rect<S: BackendStyle>(
        &mut self,
        upper_left: BackendCoord,
        bottom_right: BackendCoord,
        style: &S,
        fill: bool,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.0.draw_rect(upper_left, bottom_right, style, fill)
    }

    fn draw_path<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        path: I,
        style: &S,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.0.draw_path(path, style)
    }

    fn draw_circle<S: BackendStyle>(
        &mut self,
        center: BackendCoord,
        radius: u32,
        style: &S,
        fill: bool,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.0.draw_circle(center, radius, style, fill)
    }

    fn fill_polygon<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        vert: I,
        style: &S,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.0.fill_polygon(vert, style)
    }

    fn blit_bitmap(
        &mut self,
        pos: BackendCoord,
        size: (u32, u32),
        src: &[u8],
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.0.blit_bitmap(pos, size, src)
    }

    fn draw_text<S: BackendTextStyle>(
        &mut self,
        text: &str,
        style: &S,
        pos: BackendCoord,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        let color = style.color();
        if color.alpha == 0.0 {
            return Ok(());
        }
        let scale = glyph_scale(style.size());
        let (w, h) = (8 * scale * text.chars().count() as i32, 8 * scale);
        let dx = match style.anchor().h_pos {
            HPos::Left => 0,
            HPos::Right => -w,
            HPos::Center => -w / 2,
        };
        let dy = match style.anchor().v_pos {
            VPos::Top => 0,
            VPos::Center => -h / 2,
            VPos::Bottom => -h,
        };
        let transform = style.transform();
        let (width, height) = self.get_size();
        for (i, c) in text.chars().enumerate() {
            for (row, bits) in glyph(c).into_iter().enumerate() {
                for col in (0..8).filter(|col| bits >> col & 1 == 1) {
                    for sy in 0..scale {
                        for sx in 0..scale {
                            let x = (i as i32 * 8 + col) * scale + sx + dx;
                            let y = row as i32 * scale + sy + dy;
                            let (tx, ty) = transform.transform(x, y);
                            let (px, py) = (pos.0 + tx, pos.1 + ty);
                            if px >= 0 && py >= 0 && px < width as i32 && py < height as i32 {
                                self.0.draw_pixel((px, py), color)?;
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn estimate_text_size<S: BackendTextStyle>(
        &self,
        text: &str,
        style: &S,
    ) -> Result<(u32, u32), DrawingErrorKind<Self::ErrorType>> {
        let scale = glyph_scale(style.size()) as u32;
        Ok((8 * scale * text.chars().count() as u32, 8 * scale))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_labels() {
        assert_eq!(percentile_label(0.0), "0%");
        assert_eq!(percentile_label(1.0), "90%");
        assert_eq!(percentile_label(2.0), "99%");
        assert_eq!(percentile_label(5.0), "99.999%");
    }

    #[test]
    fn parse_rejects_garbage() {
        let p = Path::new("x.csv");
        assert!(matches!(parse_percentiles(p, Metric::Handshake, "hello\n"), Err(ReportError::Parse { line: 1, .. })));
        let bad = "\"Value\",\"Percentile\",\"TotalCount\",\"1/(1-Percentile)\"\n1.0,0.5\n";
        assert!(matches!(parse_percentiles(p, Metric::Handshake, bad), Err(ReportError::Parse { line: 2, .. })));
        let empty = "\"Value\",\"Percentile\",\"TotalCount\",\"1/(1-Percentile)\"\n";
        assert!(parse_percentiles(p, Metric::Handshake, empty).unwrap().is_none());
    }

    #[test]
    fn parse_reads_points() {
        let text = include_str!("testdata/skew.percentiles.csv");
        let s = parse_percentiles(Path::new("x"), Metric::Production, text).unwrap().unwrap();
        assert_eq!(s.samples, 1001);
        assert_eq!(s.points[0].0, 0.0);
        assert!((s.points[0].1 - 0.100031).abs() < 1e-12);
        assert!((s.max_ms - 50.003967).abs() < 1e-9);
        assert!(s.points.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1));
    }
}
