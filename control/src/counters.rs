//! The counter model: one declaration per counter set, from which every output is generated.
//!
//! A set is a plain struct of `u64`s (and arrays of them per label value) declared once with
//! [`counters!`](crate::counters!). The declaration gives each counter its name (the field),
//! its help text (the doc comment), its kind (`counter`: only grows; `gauge`: goes up and down)
//! and, for a family, its label (an enum declared with [`labels!`](crate::labels!)). From that,
//! [`CounterSet`] generates the flat names of the summary and the JSON (`drop_tx_ring_full`),
//! the Prometheus families (`xdpcopy_drop_total{reason="tx_ring_full"}`), the aggregation over
//! workers ([`CounterSet::add`]) and the per-worker publication ([`Published`]). Code reads a
//! counter by its field (`totals.session.conns`), never by its name, so a rename is a compile
//! error, not a silent 0.
//!
//! # Design
//!
//! Workers count into their private struct (plain integers, no atomics, no sharing) and copy it
//! into a [`Published`] array of cache-line-aligned atomics a few times per millisecond at most;
//! the stats thread reads snapshots and sums them. Nothing here runs per packet but the field
//! increments themselves.
//!
//! A program composes its sets into one declaration with `group` and `prefixed` members (the
//! latter put a prefix such as `xdp_` in front of the member's names), so the whole program's
//! counters are visited in one pass by every output.

use std::{
    marker::PhantomData,
    ops::{Index, IndexMut},
    sync::atomic::{AtomicU64, Ordering},
};

/// Whether a value only grows or may also fall.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Monotonic: events since start.
    Counter,
    /// A level: how many now.
    Gauge,
}

/// The values of a label (an enum declared with [`labels!`](crate::labels!)).
pub trait Label: Copy + 'static {
    /// The label's name in Prometheus (`reason`, `error`).
    const NAME: &'static str;
    /// How many values there are.
    const COUNT: usize;
    /// Return every value, in index order.
    fn all() -> &'static [Self];
    /// Return the value as outputs spell it (snake_case).
    fn as_str(self) -> &'static str;
    /// Return the value's position in [`Label::all`].
    fn index(self) -> usize;
}

/// The parse errors of the wire layer label the `malformed` families (`malformed_truncated`).
impl Label for wire::Error {
    const NAME: &'static str = "error";
    const COUNT: usize = wire::Error::ALL.len();

    fn all() -> &'static [Self] {
        &wire::Error::ALL
    }

    fn as_str(self) -> &'static str {
        self.name()
    }

    fn index(self) -> usize {
        wire::Error::index(self)
    }
}

/// One counter per value of label `L` (`N` must be `L::COUNT`; the declaration macro writes it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PerLabel<L: Label, const N: usize> {
    values: [u64; N],
    _label: PhantomData<L>,
}

impl<L: Label, const N: usize> Default for PerLabel<L, N> {
    fn default() -> Self {
        Self { values: [0; N], _label: PhantomData }
    }
}

impl<L: Label, const N: usize> PerLabel<L, N> {
    /// Return the sum over every label value.
    pub fn total(&self) -> u64 {
        self.values.iter().sum()
    }

    /// Return `(label value, count)` pairs in label order.
    pub fn iter(&self) -> impl Iterator<Item = (L, u64)> + '_ {
        L::all().iter().copied().zip(self.values.iter().copied())
    }

    /// Return the raw values, in label order.
    pub fn values(&self) -> &[u64; N] {
        &self.values
    }

    /// Return the raw values mutably, in label order.
    pub fn values_mut(&mut self) -> &mut [u64; N] {
        &mut self.values
    }
}

impl<L: Label, const N: usize> Index<L> for PerLabel<L, N> {
    type Output = u64;

    fn index(&self, l: L) -> &u64 {
        &self.values[l.index()]
    }
}

impl<L: Label, const N: usize> IndexMut<L> for PerLabel<L, N> {
    fn index_mut(&mut self, l: L) -> &mut u64 {
        &mut self.values[l.index()]
    }
}

/// One value as every output sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field<'a> {
    /// The group prefix (`xdp_`, `channel_`; empty for most).
    pub prefix: &'a str,
    /// The declared name (the struct field).
    pub name: &'static str,
    /// `(label name, label value)` for a member of a family.
    pub label: Option<(&'static str, &'static str)>,
    /// Counter or gauge.
    pub kind: Kind,
    /// The declaration's doc comment.
    pub help: &'static str,
    /// The value.
    pub value: u64,
}

impl Field<'_> {
    /// Return the flat name used by the summary and the JSON: prefix, name and, for a family
    /// member, `_` and the label value (`drop_tx_ring_full`).
    pub fn flat_name(&self) -> String {
        match self.label {
            Some((_, v)) => format!("{}{}_{v}", self.prefix, self.name),
            None => format!("{}{}", self.prefix, self.name),
        }
    }

    /// Return the Prometheus family name: `PROGRAM_` + prefix + name (no `_total`).
    pub fn family_name(&self, program: &str) -> String {
        format!("{program}_{}{}", self.prefix, self.name)
    }

    /// Return the name of the family's samples in the text format: the family name, with
    /// `_total` for counters.
    pub fn prometheus_name(&self, program: &str) -> String {
        let suffix = if self.kind == Kind::Counter { "_total" } else { "" };
        format!("{}{suffix}", self.family_name(program))
    }

    /// Return the help text, trimmed, on one line.
    pub fn help_text(&self) -> String {
        self.help.split_whitespace().collect::<Vec<_>>().join(" ")
    }
}

/// A set of counters, declared with [`counters!`](crate::counters!) or composed of groups.
pub trait CounterSet: Default + Clone + Send + 'static {
    /// How many values the set holds (a family counts once per label value).
    const LEN: usize;

    /// Call `f` with every value, in declaration order, names prefixed with `prefix`.
    fn visit(&self, prefix: &str, f: &mut dyn FnMut(Field<'_>));

    /// Call `f` with every value mutably, in the same order as [`CounterSet::visit`].
    fn visit_mut(&mut self, f: &mut dyn FnMut(&mut u64));

    /// Add `other` into `self`, value by value (gauges too: summing workers' levels).
    fn add(&mut self, other: &Self) {
        let mut theirs = Vec::with_capacity(Self::LEN);
        other.visit("", &mut |f| theirs.push(f.value));
        let mut it = theirs.into_iter();
        self.visit_mut(&mut |v| *v += it.next().unwrap_or(0));
    }

    /// Return every value as `(flat name, value)`, in declaration order.
    fn named(&self) -> Vec<(String, u64)> {
        let mut out = Vec::with_capacity(Self::LEN);
        self.visit("", &mut |f| out.push((f.flat_name(), f.value)));
        out
    }
}

/// The published copy of one owner's counters, on its own cache lines: the owner stores, any
/// thread loads. No read-modify-write, so no cache line bounces between cores.
#[repr(align(128))]
pub struct Published<C: CounterSet> {
    words: Box<[AtomicU64]>,
    _set: PhantomData<fn() -> C>,
}

impl<C: CounterSet> Default for Published<C> {
    fn default() -> Self {
        Self { words: (0..C::LEN).map(|_| AtomicU64::new(0)).collect(), _set: PhantomData }
    }
}

impl<C: CounterSet> Published<C> {
    /// Store `c` (the owning thread only).
    pub fn publish(&self, c: &C) {
        let mut i = 0;
        c.visit("", &mut |f| {
            self.words[i].store(f.value, Ordering::Relaxed);
            i += 1;
        });
    }

    /// Return the last published values (any thread).
    pub fn snapshot(&self) -> C {
        let mut c = C::default();
        let mut i = 0;
        c.visit_mut(&mut |v| {
            *v = self.words[i].load(Ordering::Relaxed);
            i += 1;
        });
        c
    }
}

/// Return the sum of the snapshots of `published`.
pub fn sum<'a, C: CounterSet>(published: impl IntoIterator<Item = &'a Published<C>>) -> C {
    let mut total = C::default();
    for p in published {
        total.add(&p.snapshot());
    }
    total
}

/// Declares an enum whose variants are the values of a counter label.
///
/// ```
/// control::labels! {
///     /// Why a frame was dropped.
///     pub enum Why: "reason" {
///         /// No room.
///         Full = "full",
///         /// Not ours.
///         Foreign = "foreign",
///     }
/// }
/// use control::counters::Label;
/// assert_eq!(Why::Foreign.as_str(), "foreign");
/// assert_eq!(Why::COUNT, 2);
/// ```
#[macro_export]
macro_rules! labels {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident : $label:literal {
            $( $(#[doc = $doc:literal])* $variant:ident = $text:literal, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr(usize)]
        $vis enum $name {
            $( $(#[doc = $doc])* $variant, )*
        }

        impl $name {
            /// Every value, in index order.
            pub const ALL: &'static [$name] = &[$( $name::$variant, )*];

            /// Return the value's name in the outputs.
            pub fn name(self) -> &'static str {
                match self { $( $name::$variant => $text, )* }
            }
        }

        impl $crate::counters::Label for $name {
            const NAME: &'static str = $label;
            const COUNT: usize = [$( $text, )*].len();
            fn all() -> &'static [Self] {
                Self::ALL
            }
            fn as_str(self) -> &'static str {
                self.name()
            }
            fn index(self) -> usize {
                self as usize
            }
        }
    };
}

/// Declares a counter set: a struct of counters and gauges (optionally one per label value)
/// and its [`CounterSet`] implementation. Each field's doc comment is its help text.
///
/// Field forms: `counter NAME`, `gauge NAME`, `counter NAME[Label]` (a family, one value per
/// label value), `group NAME: Set` (another set whose names are taken as they are) and
/// `prefixed NAME: Set` (another set whose names take `NAME_` in front). A member may be an
/// `Option<Set>`: absent, it shows nothing.
///
/// ```
/// control::labels! {
///     /// Why.
///     pub enum Why: "reason" {
///         /// No room.
///         Full = "full",
///     }
/// }
/// control::counters! {
///     /// A worker's counters.
///     pub struct Demo {
///         /// Frames received.
///         counter rx_frames,
///         /// Sessions now.
///         gauge active,
///         /// Frames dropped, by reason.
///         counter drop[Why],
///     }
/// }
/// use control::counters::CounterSet;
/// let mut d = Demo::default();
/// d.drop[Why::Full] += 2;
/// assert_eq!(d.named()[2], ("drop_full".to_string(), 2));
/// ```
#[macro_export]
macro_rules! counters {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident {
            $( $(#[doc = $doc:literal])* $kind:ident $field:ident $([$label:ty])? $(: $member:ty)?, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Debug, Default, PartialEq, Eq)]
        $vis struct $name {
            $( $(#[doc = $doc])* pub $field: $crate::__counter_type!($kind $([$label])? $(: $member)?), )*
        }

        impl $crate::counters::CounterSet for $name {
            const LEN: usize = 0 $( + $crate::__counter_len!($kind $([$label])? $(: $member)?) )*;

            fn visit(&self, prefix: &str, f: &mut dyn FnMut($crate::counters::Field<'_>)) {
                $(
                    $crate::__counter_visit!(
                        $kind $([$label])? $(: $member)?;
                        self.$field, prefix, f, stringify!($field), concat!($($doc, " ",)* "")
                    );
                )*
            }

            fn visit_mut(&mut self, f: &mut dyn FnMut(&mut u64)) {
                $( $crate::__counter_visit_mut!($kind $([$label])? $(: $member)?; self.$field, f); )*
            }
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __counter_type {
    (counter) => { u64 };
    (gauge) => { u64 };
    ($kind:ident [$label:ty]) => { $crate::counters::PerLabel<$label, { <$label as $crate::counters::Label>::COUNT }> };
    ($kind:ident : $member:ty) => { $member };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __counter_len {
    ($kind:ident) => {
        1
    };
    ($kind:ident [$label:ty]) => {
        <$label as $crate::counters::Label>::COUNT
    };
    ($kind:ident : $member:ty) => {
        <$member as $crate::counters::CounterSet>::LEN
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __counter_kind {
    (counter) => {
        $crate::counters::Kind::Counter
    };
    (gauge) => {
        $crate::counters::Kind::Gauge
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __counter_visit {
    (group : $member:ty; $value:expr, $prefix:expr, $f:expr, $name:expr, $help:expr) => {
        $crate::counters::CounterSet::visit(&$value, $prefix, $f)
    };
    (prefixed : $member:ty; $value:expr, $prefix:expr, $f:expr, $name:expr, $help:expr) => {
        $crate::counters::CounterSet::visit(&$value, &format!("{}{}_", $prefix, $name), $f)
    };
    ($kind:ident; $value:expr, $prefix:expr, $f:expr, $name:expr, $help:expr) => {
        $f($crate::counters::Field {
            prefix: $prefix,
            name: $name,
            label: None,
            kind: $crate::__counter_kind!($kind),
            help: $help,
            value: $value,
        })
    };
    ($kind:ident [$label:ty]; $value:expr, $prefix:expr, $f:expr, $name:expr, $help:expr) => {
        for (l, v) in $value.iter() {
            $f($crate::counters::Field {
                prefix: $prefix,
                name: $name,
                label: Some((<$label as $crate::counters::Label>::NAME, $crate::counters::Label::as_str(l))),
                kind: $crate::__counter_kind!($kind),
                help: $help,
                value: v,
            })
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __counter_visit_mut {
    ($kind:ident : $member:ty; $value:expr, $f:expr) => {
        $crate::counters::CounterSet::visit_mut(&mut $value, $f)
    };
    ($kind:ident; $value:expr, $f:expr) => {
        $f(&mut $value)
    };
    ($kind:ident [$label:ty]; $value:expr, $f:expr) => {
        for v in $value.values_mut().iter_mut() {
            $f(v)
        }
    };
}

/// An absent member shows nothing; present, it is its set.
impl<C: CounterSet> CounterSet for Option<C> {
    const LEN: usize = C::LEN;

    fn visit(&self, prefix: &str, f: &mut dyn FnMut(Field<'_>)) {
        if let Some(c) = self {
            c.visit(prefix, f);
        }
    }

    fn visit_mut(&mut self, f: &mut dyn FnMut(&mut u64)) {
        if let Some(c) = self {
            c.visit_mut(f);
        }
    }
}

/// A small counter set for the tests of the model and of its outputs.
#[cfg(test)]
pub(crate) mod fixtures {
    crate::labels! {
        /// Test reasons.
        pub enum Reason: "reason" {
            /// First.
            One = "one",
            /// Second.
            Two = "two",
        }
    }

    crate::counters! {
        /// A test set.
        pub struct Set {
            /// Things seen.
            counter seen,
            /// Things now.
            gauge now,
            /// Dropped, by reason.
            counter drop[Reason],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::{Reason, Set};
    use super::*;

    #[test]
    fn every_value_is_visited_in_order_with_its_name_kind_and_help() {
        let mut s = Set { seen: 1, now: 2, ..Set::default() };
        s.drop[Reason::Two] = 3;
        assert_eq!(Set::LEN, 4);
        let mut fields = Vec::new();
        s.visit("p_", &mut |f| fields.push((f.flat_name(), f.kind, f.help_text(), f.label, f.value)));
        assert_eq!(
            fields,
            vec![
                ("p_seen".into(), Kind::Counter, "Things seen.".into(), None, 1),
                ("p_now".into(), Kind::Gauge, "Things now.".into(), None, 2),
                ("p_drop_one".into(), Kind::Counter, "Dropped, by reason.".into(), Some(("reason", "one")), 0),
                ("p_drop_two".into(), Kind::Counter, "Dropped, by reason.".into(), Some(("reason", "two")), 3),
            ]
        );
        let mut n = 0;
        s.visit("", &mut |f| {
            if f.name == "drop" {
                assert_eq!(f.prometheus_name("x"), "x_drop_total");
            }
            if f.name == "now" {
                assert_eq!(f.prometheus_name("x"), "x_now");
            }
            n += 1;
        });
        assert_eq!(n, Set::LEN);
    }

    crate::counters! {
        /// A composite.
        pub struct Program {
            /// Members named as they are.
            group base: Set,
            /// Members named `extra_*`.
            prefixed extra: Set,
            /// Absent unless configured.
            prefixed maybe: Option<Set>,
        }
    }

    #[test]
    fn composites_prefix_their_members_and_skip_absent_ones() {
        let mut p = Program::default();
        p.extra.seen = 4;
        let names: Vec<String> = p.named().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names.len(), 2 * Set::LEN);
        assert_eq!(names[0], "seen");
        assert_eq!(names[Set::LEN], "extra_seen");
        assert!(!names.iter().any(|n| n.starts_with("maybe_")));
        p.maybe = Some(Set::default());
        assert_eq!(p.named().len(), 3 * Set::LEN);
        assert_eq!(p.named()[Set::LEN], ("extra_seen".to_string(), 4));
    }

    #[test]
    fn publish_snapshot_and_sum_round_trip_every_value() {
        let mut s = Set { seen: 5, now: 6, ..Set::default() };
        s.drop[Reason::One] = 7;
        s.drop[Reason::Two] = 8;
        let p = Published::<Set>::default();
        p.publish(&s);
        assert_eq!(p.snapshot(), s);
        let q = Published::<Set>::default();
        q.publish(&s);
        let total = sum([&p, &q]);
        assert_eq!(total.seen, 10);
        assert_eq!(total.drop[Reason::Two], 16);
        assert_eq!(total.drop.total(), 30);
    }
}
