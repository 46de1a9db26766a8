//! HdrHistogram's percentile distribution, byte for byte: the CSV and the `.hgrm` text form.
//!
//! This mirrors Java's `AbstractHistogram.outputPercentileDistribution` and its
//! `PercentileIterator`, including the floating-point arithmetic that decides which rows exist:
//! the iteration level is kept in percent (0..100) and advanced by `100 / ticks`, where
//! `ticks = ticks_per_half * 2^(floor(log2(100 / (100 - level))) + 1)`; a row is emitted at a
//! recorded bucket while `100 * count_to_here / total >= level`; the bucket holding the last
//! recorded value emits one row at the current level and then the final 100 % row. (The Rust
//! crate's `iter_quantiles` iterates in quantiles 0..1, whose rounding differs, e.g. it skips the
//! 30 % row of 1..=10000 at count 3000.)
//!
//! Numbers are formatted like `java.util.Formatter`'s `%.Nf`: the shortest decimal digits that
//! round-trip the double, rounded half up (Rust's `{:.N}` rounds the exact binary value instead,
//! which differs at ties such as 1.0005).

use std::{fmt::Write as _, io};

use hdrhistogram::Histogram;

/// The CSV header line of HdrHistogram's percentile distribution.
const CSV_HEADER: &str = "\"Value\",\"Percentile\",\"TotalCount\",\"1/(1-Percentile)\"\n";

/// One row of the percentile distribution.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct PercentileRow {
    /// The highest value equivalent to the bucket reached (histogram units).
    pub value: u64,
    /// The percentile level iterated to, in percent (0..=100).
    pub level: f64,
    /// The number of samples at or below `value`.
    pub total_count: u64,
}

/// Returns the rows `outputPercentileDistribution` prints, in order (none for an empty histogram).
///
/// `ticks_per_half` below 1 is taken as 1.
pub(crate) fn percentile_rows(h: &Histogram<u64>, ticks_per_half: u32) -> Vec<PercentileRow> {
    let ticks_per_half = i64::from(ticks_per_half.max(1));
    let total = h.len();
    let mut rows = Vec::new();
    if total == 0 {
        return rows;
    }
    let mut level = 0.0_f64;
    let mut count_to_here = 0_u64;
    for v in h.iter_recorded() {
        count_to_here += v.count_at_value();
        let value = v.value_iterated_to();
        let reached = |level: f64| (100.0 * count_to_here as f64) / total as f64 >= level;
        if count_to_here < total {
            while reached(level) {
                rows.push(PercentileRow { value, level, total_count: count_to_here });
                level = next_level(level, ticks_per_half);
            }
        } else {
            // The last recorded bucket: one row at the level reached, then the final step to 100 %.
            if reached(level) {
                rows.push(PercentileRow { value, level, total_count: count_to_here });
            }
            rows.push(PercentileRow { value, level: 100.0, total_count: count_to_here });
            break;
        }
    }
    rows
}

/// Java's `PercentileIterator.incrementIterationLevel`.
fn next_level(level: f64, ticks_per_half: i64) -> f64 {
    let halvings = ((100.0 / (100.0 - level)).ln() / 2.0_f64.ln()) as i64;
    let reporting_ticks = ticks_per_half.wrapping_mul(2.0_f64.powf((halvings + 1) as f64) as i64);
    level + 100.0 / reporting_ticks as f64
}

/// Writes the HdrHistogram percentile distribution CSV (`outputPercentileDistribution(out,
/// ticks_per_half, unit_ratio, true)`): values divided by `unit_ratio` with the histogram's
/// significant digits as decimals (1000.0 turns ns into µs).
///
/// # Errors
/// Returns the error of `out`.
pub fn write_percentiles_csv(
    h: &Histogram<u64>,
    unit_ratio: f64,
    ticks_per_half: u32,
    out: &mut impl io::Write,
) -> io::Result<()> {
    let decimals = usize::from(h.sigfig());
    let mut text = String::from(CSV_HEADER);
    for row in percentile_rows(h, ticks_per_half) {
        let value = java_fixed(row.value as f64 / unit_ratio, decimals);
        let percentile = java_fixed(row.level / 100.0, 12);
        if row.level != 100.0 {
            let inverse = java_fixed(1.0 / (1.0 - row.level / 100.0), 2);
            let _ = writeln!(text, "{value},{percentile},{},{inverse}", row.total_count);
        } else {
            let _ = writeln!(text, "{value},{percentile},{},Infinity", row.total_count);
        }
    }
    out.write_all(text.as_bytes())
}

/// Writes the HdrHistogram percentile distribution text (`.hgrm`, `outputPercentileDistribution(
/// out, ticks_per_half, unit_ratio)`), with the Mean/StdDeviation, Max/Total count and
/// Buckets/SubBuckets footer.
///
/// # Errors
/// Returns the error of `out`.
pub fn write_hgrm(
    h: &Histogram<u64>,
    unit_ratio: f64,
    ticks_per_half: u32,
    out: &mut impl io::Write,
) -> io::Result<()> {
    let decimals = usize::from(h.sigfig());
    let mut text = format!("{:>12} {:>14} {:>10} {:>14}\n\n", "Value", "Percentile", "TotalCount", "1/(1-Percentile)");
    for row in percentile_rows(h, ticks_per_half) {
        let value = java_fixed(row.value as f64 / unit_ratio, decimals);
        let percentile = java_fixed(row.level / 100.0, 12);
        if row.level != 100.0 {
            let inverse = java_fixed(1.0 / (1.0 - row.level / 100.0), 2);
            let _ = writeln!(text, "{value:>12} {percentile:>2} {:>10} {inverse:>14}", row.total_count);
        } else {
            let _ = writeln!(text, "{value:>12} {percentile:>2} {:>10}", row.total_count);
        }
    }
    let mean = java_fixed(java_mean(h) / unit_ratio, decimals);
    let stddev = java_fixed(java_stddev(h) / unit_ratio, decimals);
    let max = java_fixed(h.max() as f64 / unit_ratio, decimals);
    let _ = writeln!(text, "#[Mean    = {mean:>12}, StdDeviation   = {stddev:>12}]");
    let _ = writeln!(text, "#[Max     = {max:>12}, Total count    = {:>12}]", h.len());
    let _ = writeln!(text, "#[Buckets = {:>12}, SubBuckets     = {:>12}]", h.buckets(), sub_bucket_count(h));
    out.write_all(text.as_bytes())
}

/// Java's `getMean`: the count-weighted sum of bucket medians, divided once by the total.
pub(crate) fn java_mean(h: &Histogram<u64>) -> f64 {
    if h.is_empty() {
        return 0.0;
    }
    let total: f64 =
        h.iter_recorded().map(|v| h.median_equivalent(v.value_iterated_to()) as f64 * v.count_at_value() as f64).sum();
    total / h.len() as f64
}

/// Java's `getStdDeviation` (population standard deviation over bucket medians).
pub(crate) fn java_stddev(h: &Histogram<u64>) -> f64 {
    if h.is_empty() {
        return 0.0;
    }
    let mean = java_mean(h);
    let total: f64 = h
        .iter_recorded()
        .map(|v| {
            let dev = h.median_equivalent(v.value_iterated_to()) as f64 - mean;
            (dev * dev) * v.count_at_value() as f64
        })
        .sum();
    (total / h.len() as f64).sqrt()
}

/// The number of sub-buckets per bucket: 2^ceil(log2(2 * 10^sigfig)), as Java computes it.
fn sub_bucket_count(h: &Histogram<u64>) -> u64 {
    (2 * 10_u64.pow(u32::from(h.sigfig()))).next_power_of_two()
}

/// Formats `x` like Java's `String.format(Locale.US, "%.<decimals>f", x)`.
pub(crate) fn java_fixed(x: f64, decimals: usize) -> String {
    if x.is_nan() {
        return "NaN".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "Infinity".into() } else { "-Infinity".into() };
    }
    // Shortest round-trip digits: "d.ddde<exp>" (or "de<exp>").
    let sci = format!("{:e}", x.abs());
    let (mantissa, exp) = sci.split_once('e').expect("`{:e}` always has an exponent");
    let exp: i64 = exp.parse().expect("`{:e}` exponent is an integer");
    let digits: Vec<u8> = mantissa.bytes().filter(u8::is_ascii_digit).map(|b| b - b'0').collect();
    // `digits` has the decimal point after `exp + 1` digits; keep the ones before 10^-decimals.
    let keep = exp + 1 + decimals as i64;
    let digit_at = |i: i64| if i >= 0 && (i as usize) < digits.len() { digits[i as usize] } else { 0 };
    let mut kept: Vec<u8> = (0..keep.max(0)).map(digit_at).collect();
    if digit_at(keep) >= 5 {
        // Round half up (Java's applyPrecision looks at the first dropped digit only).
        let mut i = kept.len();
        loop {
            if i == 0 {
                kept.insert(0, 1);
                break;
            }
            i -= 1;
            if kept[i] == 9 {
                kept[i] = 0;
            } else {
                kept[i] += 1;
                break;
            }
        }
    }
    // `kept` is round(|x| * 10^decimals); pad so there is at least one integer digit.
    while kept.len() < decimals + 1 {
        kept.insert(0, 0);
    }
    let split = kept.len() - decimals;
    let int_start = kept[..split - 1].iter().position(|&d| d != 0).unwrap_or(split - 1);
    let mut s = String::with_capacity(kept.len() + 2);
    if x.is_sign_negative() {
        s.push('-');
    }
    s.extend(kept[int_start..split].iter().map(|&d| char::from(b'0' + d)));
    if decimals > 0 {
        s.push('.');
        s.extend(kept[split..].iter().map(|&d| char::from(b'0' + d)));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::latency::new_histogram;

    fn csv(h: &Histogram<u64>, ratio: f64, ticks: u32) -> String {
        let mut out = Vec::new();
        write_percentiles_csv(h, ratio, ticks, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    fn hgrm(h: &Histogram<u64>, ratio: f64, ticks: u32) -> String {
        let mut out = Vec::new();
        write_hgrm(h, ratio, ticks, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    /// 1..=10000 µs recorded in ns.
    fn uniform() -> Histogram<u64> {
        let mut h = new_histogram();
        for us in 1..=10_000_u64 {
            h.record(us * 1000).unwrap();
        }
        h
    }

    /// 1000 × 100 µs and one 50 ms outlier.
    fn skewed() -> Histogram<u64> {
        let mut h = new_histogram();
        h.record_n(100_000, 1000).unwrap();
        h.record(50_000_000).unwrap();
        h
    }

    #[test]
    fn java_fixed_matches_java_formatter() {
        // Expected strings from Java 17: String.format(Locale.US, "%.Nf", x).
        assert_eq!(java_fixed(0.0, 3), "0.000");
        assert_eq!(java_fixed(1.0, 3), "1.000");
        assert_eq!(java_fixed(1.0005, 3), "1.001"); // Rust's {:.3} gives 1.000
        assert_eq!(java_fixed(0.0125, 3), "0.013");
        assert_eq!(java_fixed(9.9995, 3), "10.000");
        assert_eq!(java_fixed(0.0006, 3), "0.001");
        assert_eq!(java_fixed(0.00006, 3), "0.000");
        assert_eq!(java_fixed(2.5, 0), "3");
        assert_eq!(java_fixed(1462.857142857143, 2), "1462.86");
        assert_eq!(java_fixed(0.1 + 0.2, 12), "0.300000000000");
        assert_eq!(java_fixed(12345678.9, 2), "12345678.90");
        assert_eq!(java_fixed(1e-20, 12), "0.000000000000");
        assert_eq!(java_fixed(f64::INFINITY, 2), "Infinity");
    }

    #[test]
    fn uniform_csv_matches_java_reference() {
        // Generated by HdrHistogram 2.1.11 (Java), see testdata/Ref.java.
        let expected = include_str!("testdata/uniform.percentiles.csv");
        let got = csv(&uniform(), 1000.0, 5);
        assert_eq!(got, expected);
        // By hand: first row is the lowest bucket (1 µs, count 1), the last the highest
        // equivalent of 10 ms (bucket width 8192 ns: 9994240 + 8191 = 10002431 ns).
        assert!(got.starts_with(
            "\"Value\",\"Percentile\",\"TotalCount\",\"1/(1-Percentile)\"\n1.000,0.000000000000,1,1.00\n"
        ));
        assert!(got.ends_with("\n10002.431,1.000000000000,10000,Infinity\n"));
    }

    #[test]
    fn uniform_hgrm_matches_java_reference() {
        let expected = include_str!("testdata/uniform.hgrm");
        assert_eq!(hgrm(&uniform(), 1000.0, 5), expected);
    }

    #[test]
    fn skewed_matches_java_reference() {
        assert_eq!(csv(&skewed(), 1000.0, 5), include_str!("testdata/skew.percentiles.csv"));
        assert_eq!(hgrm(&skewed(), 1000.0, 5), include_str!("testdata/skew.hgrm"));
    }

    #[test]
    fn one_tick_unit_ratio_one_matches_java_reference() {
        assert_eq!(csv(&uniform(), 1.0, 1), include_str!("testdata/uniform.t1.csv"));
    }

    #[test]
    fn few_values_literal() {
        let mut h = new_histogram();
        for v in 1..=3 {
            h.record(v).unwrap();
        }
        let expected = "\"Value\",\"Percentile\",\"TotalCount\",\"1/(1-Percentile)\"
0.001,0.000000000000,1,1.00
0.001,0.100000000000,1,1.11
0.001,0.200000000000,1,1.25
0.001,0.300000000000,1,1.43
0.002,0.400000000000,2,1.67
0.002,0.500000000000,2,2.00
0.002,0.550000000000,2,2.22
0.002,0.600000000000,2,2.50
0.002,0.650000000000,2,2.86
0.003,0.700000000000,3,3.33
0.003,1.000000000000,3,Infinity
";
        assert_eq!(csv(&h, 1000.0, 5), expected);
        let expected_hgrm = "       Value     Percentile TotalCount 1/(1-Percentile)

       0.001 0.000000000000          1           1.00
       0.001 0.100000000000          1           1.11
       0.001 0.200000000000          1           1.25
       0.001 0.300000000000          1           1.43
       0.002 0.400000000000          2           1.67
       0.002 0.500000000000          2           2.00
       0.002 0.550000000000          2           2.22
       0.002 0.600000000000          2           2.50
       0.002 0.650000000000          2           2.86
       0.003 0.700000000000          3           3.33
       0.003 1.000000000000          3
#[Mean    =        0.002, StdDeviation   =        0.001]
#[Max     =        0.003, Total count    =            3]
#[Buckets =           26, SubBuckets     =         2048]
";
        assert_eq!(hgrm(&h, 1000.0, 5), expected_hgrm);
    }

    #[test]
    fn empty_histogram_literal() {
        let h = new_histogram();
        assert_eq!(csv(&h, 1000.0, 5), CSV_HEADER);
        let expected = "       Value     Percentile TotalCount 1/(1-Percentile)

#[Mean    =        0.000, StdDeviation   =        0.000]
#[Max     =        0.000, Total count    =            0]
#[Buckets =           26, SubBuckets     =         2048]
";
        assert_eq!(hgrm(&h, 1000.0, 5), expected);
    }

    #[test]
    fn single_value_has_two_rows() {
        let mut h = new_histogram();
        h.record_n(5000, 7).unwrap();
        let rows = percentile_rows(&h, 5);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].level, 0.0);
        assert_eq!(rows[1].level, 100.0);
        assert!(rows.iter().all(|r| r.total_count == 7 && r.value == h.highest_equivalent(5000)));
    }

    #[test]
    fn rows_are_monotone_and_end_at_total() {
        for h in [uniform(), skewed()] {
            let rows = percentile_rows(&h, 5);
            assert!(rows
                .windows(2)
                .all(|w| w[0].value <= w[1].value && w[0].level < w[1].level && w[0].total_count <= w[1].total_count));
            let last = rows.last().unwrap();
            assert_eq!(last.total_count, h.len());
            assert_eq!(last.value, h.max());
        }
    }
}
