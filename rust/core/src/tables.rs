//! Expectation tables at one kernel K, shared by every layer recursion ([`crate::mlp`],
//! [`crate::resmlp`], [`crate::preresnet`]):
//!
//! * [`PairTable`]: two-sample values `⟨σ^{(i)}_a σ^{(j)}_b⟩` for every pair a < b and
//!   single-sample values `⟨D^m(σ^{(p)}σ^{(q)})⟩` on the diagonal, with the accessors the
//!   recursions use (`⟨∂_{g₁}…∂_{gₘ}(σ_aσ_b)⟩` over the distinct samples of a pair);
//! * [`FourPoint`]: four-point expectations `⟨σ^{(o₀)}σ^{(o₁)}σ^{(o₂)}σ^{(o₃)}⟩` per derivative
//!   pattern: `⟨σσσσ⟩`, `⟨σσσ'σ'⟩`, `⟨σ'σ'σ'σ'⟩` and for the dNTK family `⟨σ''σ'σ'σ⟩`,
//!   `⟨σ'''σ'σ'σ'⟩`, `⟨σ''σ''σ'σ'⟩`, from one pass over the sample multisets (all, or those a
//!   tuple closure needs), packed per multiset (no dense N⁴ table);
//! * the sample bookkeeping: [`distinct`] samples of a pair, [`multisets4`], [`key4`], and
//!   [`fill4`] for N⁴ tensors in parallel.
//!
//! Uses only [`crate::expect`] (below it) and is used by the recursions (above it).

use std::ops::Deref;

use rayon::prelude::*;
use rustc_hash::FxHashMap;

use crate::activations::ActivationFn;
use crate::cancel;
use crate::expect::collinear::CollinearPair;
use crate::expect::{expect_block, first_singular_order, pair_values, PairValues, QuadOpts, Term};
use crate::RgError;

/// The distinct samples of a pair (a, b): `[a]` when a = b, else `[a, b]` (no allocation).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Distinct {
    g: [usize; 2],
    len: usize,
}

impl Deref for Distinct {
    type Target = [usize];
    #[inline]
    fn deref(&self) -> &[usize] {
        &self.g[..self.len]
    }
}

impl<'a> IntoIterator for &'a Distinct {
    type Item = &'a usize;
    type IntoIter = std::slice::Iter<'a, usize>;
    #[inline]
    fn into_iter(self) -> Self::IntoIter {
        self.g[..self.len].iter()
    }
}

/// The distinct samples of the pair (a, b).
#[inline]
pub(crate) fn distinct(a: usize, b: usize) -> Distinct {
    if a == b {
        Distinct { g: [a, a], len: 1 }
    } else {
        Distinct { g: [a, b], len: 2 }
    }
}

/// No collinear values for this pair.
const NO_COL: u32 = u32::MAX;

/// Highest σ derivative order per sample in the off-diagonal entries.
const MAX_OFF: usize = 5;
/// Highest total derivative D^m in the diagonal entries.
const MAX_DIAG: usize = 4;

/// Pair expectations at one kernel (N×N), flat: one row of `stride` values per pair a ≤ b
/// (rows a > b unused); a row holds the requested off-diagonal values (a < b) or diagonal
/// values (a = b) in request order, and a final 0 that every entry not requested points at.
/// A (nearly) collinear pair of a kinked activation ([`crate::expect::collinear`]) keeps its
/// range-restricted values instead, which every accessor uses.
#[derive(Clone, Debug)]
pub(crate) struct PairTable {
    n: usize,
    /// Per pair a < b (row-major N×N): index into `cols`, or `NO_COL`.
    col: Vec<u32>,
    cols: Vec<CollinearPair>,
    /// Per pair: a collinear pair whose block is not singular keeps its values of total
    /// derivative order ≤ 3 (bounded as ρ → ±1, and exact) in `vals`; the orders ≥ 4, whose
    /// delta-function products diverge, come from the range-restricted values.
    exact_low: Vec<bool>,
    stride: usize,
    /// Slot of `⟨σ^{(i)}_a σ^{(j)}_b⟩` (a < b) in a row.
    off: [[u16; MAX_OFF + 1]; MAX_OFF + 1],
    /// Slot of `⟨D^m(σ^{(p)}σ^{(q)})⟩` (p, q ∈ {0, 1}) in a diagonal row, at `[m][p + q]`.
    diag: [[u16; 3]; MAX_DIAG + 1],
    vals: Vec<f64>,
}

impl PairTable {
    /// Tabulate `offd` = (i, j) orders for a < b and `diag` = (m, p, q) for
    /// `⟨D^m(σ^{(p)}σ^{(q)})⟩` at a = b (p, q ≤ 1), all pairs in parallel.
    pub(crate) fn new(
        act: &dyn ActivationFn,
        k: &[f64],
        n: usize,
        offd: &[(u8, u8)],
        diag: &[(u8, u8, u8)],
        opts: &QuadOpts,
    ) -> Result<PairTable, RgError> {
        let diag_terms: Vec<Term> = diag
            .iter()
            .map(|&(m, p, q)| Term::deriv_of(m, &[p, q]))
            .collect();
        let values = pair_values(act, k, n, offd, &diag_terms, opts)?;
        let stride = offd.len().max(diag.len()) + 1;
        let zero = (stride - 1) as u16;
        let mut off = [[zero; MAX_OFF + 1]; MAX_OFF + 1];
        for (s, &(i, j)) in offd.iter().enumerate() {
            off[i as usize][j as usize] = s as u16;
        }
        let mut dg = [[zero; 3]; MAX_DIAG + 1];
        for (s, &(m, p, q)) in diag.iter().enumerate() {
            dg[m as usize][(p + q) as usize] = s as u16;
        }
        let mut vals = vec![0.0; n * n * stride];
        let mut col = vec![NO_COL; n * n];
        let mut cols = vec![];
        let mut exact_low = vec![false; n * n];
        for a in 0..n {
            for b in a..n {
                let row = (a * n + b) * stride;
                match &values[a * n + b] {
                    PairValues::Values(v) => vals[row..row + v.len()].copy_from_slice(v),
                    PairValues::Collinear(c, exact) => {
                        col[a * n + b] = cols.len() as u32;
                        col[b * n + a] = cols.len() as u32 + 1;
                        cols.push((**c).clone());
                        cols.push(c.swapped());
                        if let Some(v) = exact {
                            vals[row..row + v.len()].copy_from_slice(v);
                            exact_low[a * n + b] = true;
                            exact_low[b * n + a] = true;
                        }
                    }
                }
            }
        }
        Ok(PairTable {
            n,
            col,
            cols,
            exact_low,
            stride,
            off,
            diag: dg,
            vals,
        })
    }

    /// Derivatives of σ_aσ_b up to total order `top`: `⟨σ^{(i)}_a σ^{(j)}_b⟩` for i + j ≤ top
    /// and `⟨(σ²)^{(m)}⟩` for m ≤ top (the residual recursions).
    pub(crate) fn sigma_sigma(
        act: &dyn ActivationFn,
        k: &[f64],
        n: usize,
        top: u8,
        opts: &QuadOpts,
    ) -> Result<PairTable, RgError> {
        let offd: Vec<(u8, u8)> = (0..=top)
            .flat_map(|i| (0..=top - i).map(move |j| (i, j)))
            .collect();
        let diag: Vec<(u8, u8, u8)> = (0..=top).map(|m| (m, 0, 0)).collect();
        PairTable::new(act, k, n, &offd, &diag, opts)
    }

    /// The range-restricted values of a collinear pair (a ≠ b), seen from a.
    /// (`order` = total σ-derivative order of the entry: entries of order ≤ 3 of a
    /// non-singular block are taken as they are.)
    #[inline]
    fn collinear(&self, a: usize, b: usize, order: usize) -> Option<&CollinearPair> {
        let c = self.col[a * self.n + b];
        if c == NO_COL || (order <= 3 && self.exact_low[a * self.n + b]) {
            return None;
        }
        Some(&self.cols[c as usize])
    }

    /// `⟨σ^{(i)}_a σ^{(j)}_b⟩` for a ≠ b (0 when not tabulated; a = b is not an entry).  For
    /// a collinear pair, `σ^{(i)} = ∂^{i−1}σ'` projected on the range of the pair block.
    #[inline]
    pub(crate) fn m(&self, a: usize, i: usize, b: usize, j: usize) -> f64 {
        if let Some(c) = self.collinear(a, b, i + j) {
            let (p, q) = (i.min(1), j.min(1));
            return c.dn(p, q, i - p, j - q);
        }
        if a <= b {
            self.vals[(a * self.n + b) * self.stride + self.off[i][j] as usize]
        } else {
            self.vals[(b * self.n + a) * self.stride + self.off[j][i] as usize]
        }
    }

    /// `⟨D^m(σ^{(p)}σ^{(q)})⟩` at sample a (p, q ≤ 1; 0 when not tabulated).
    #[inline]
    pub(crate) fn diag(&self, a: usize, m: usize, p: usize, q: usize) -> f64 {
        self.vals[(a * self.n + a) * self.stride + self.diag[m][p + q] as usize]
    }

    /// `⟨∂_a^{na} ∂_b^{nb}(σ^{(p)}_a σ^{(q)}_b)⟩` (for a = b: `⟨D^{na+nb}(σ^{(p)}σ^{(q)})⟩`).
    #[inline]
    pub(crate) fn dn(&self, a: usize, p: usize, b: usize, q: usize, na: usize, nb: usize) -> f64 {
        if a == b {
            self.diag(a, na + nb, p, q)
        } else if let Some(c) = self.collinear(a, b, p + q + na + nb) {
            c.dn(p, q, na, nb)
        } else {
            self.m(a, p + na, b, q + nb)
        }
    }

    /// `⟨∂_{g₁}…∂_{gₘ}(σ_a σ_b)⟩` with every g ∈ {a, b}.
    #[inline]
    pub(crate) fn d(&self, a: usize, b: usize, gs: &[usize]) -> f64 {
        if a == b {
            return self.diag(a, gs.len(), 0, 0);
        }
        let na = gs.iter().filter(|&&g| g == a).count();
        self.dn(a, 0, b, 0, na, gs.len() - na)
    }

    /// `⟨σ_a σ_b⟩`.
    #[inline]
    pub(crate) fn s(&self, a: usize, b: usize) -> f64 {
        self.dn(a, 0, b, 0, 0, 0)
    }

    /// `⟨σ'_a σ'_b⟩`.
    #[inline]
    pub(crate) fn p(&self, a: usize, b: usize) -> f64 {
        self.dn(a, 1, b, 1, 0, 0)
    }

    /// `⟨∂_{g₁}∂_{g₂}(σ_aσ_b)⟩` (`prime`: of `σ'_aσ'_b`), g₁, g₂ ∈ {a, b}.
    #[inline]
    pub(crate) fn c2(&self, a: usize, b: usize, g1: usize, g2: usize, prime: bool) -> f64 {
        let o = prime as usize;
        let na = (g1 == a) as usize + (g2 == a) as usize;
        self.dn(a, o, b, o, na, 2 - na)
    }

    /// `⟨∂⁴(σ_aσ_b)⟩` (`prime`: of `σ'_aσ'_b`) with `na` of the four derivatives on a.
    #[inline]
    pub(crate) fn c4(&self, a: usize, b: usize, na: usize, prime: bool) -> f64 {
        let o = prime as usize;
        self.dn(a, o, b, o, na, 4 - na)
    }

    /// `⟨∂_g(σ_p σ'_t)⟩`, g ∈ {p, t}.
    #[inline]
    pub(crate) fn e1(&self, p: usize, t: usize, g: usize) -> f64 {
        let na = (g == p) as usize;
        self.dn(p, 0, t, 1, na, 1 - na)
    }
}

/// Key of a multiset of four factor codes.
#[inline]
pub(crate) fn key4(mut codes: [u16; 4]) -> u64 {
    codes.sort_unstable();
    codes[0] as u64 | (codes[1] as u64) << 16 | (codes[2] as u64) << 32 | (codes[3] as u64) << 48
}

/// Factor code: σ^{(order)} at `sample` (order ≤ 3).
#[inline]
fn code(sample: usize, order: u8) -> u16 {
    ((sample << 2) | order as usize) as u16
}

/// Derivative-order pattern of a dense four-point table: entry `[a, b, c, d]` of the table of
/// pattern `o` is `⟨σ^{(o₀)}_a σ^{(o₁)}_b σ^{(o₂)}_c σ^{(o₃)}_d⟩`.
pub(crate) type Pattern = [u8; 4];

/// ⟨σσσσ⟩ (V, D, A).
pub(crate) const P0000: Pattern = [0, 0, 0, 0];
/// ⟨σσσ'σ'⟩ (D, F, A; Q and T as `⟨σ'σσ'σ⟩`).
pub(crate) const P0011: Pattern = [0, 0, 1, 1];
/// ⟨σ'σ'σ'σ'⟩ (A, B, S).
pub(crate) const P1111: Pattern = [1, 1, 1, 1];
/// ⟨σ''σ'σ'σ⟩ (P, Q, R, T).
pub(crate) const P2110: Pattern = [2, 1, 1, 0];
/// ⟨σ'''σ'σ'σ'⟩ (R).
pub(crate) const P3111: Pattern = [3, 1, 1, 1];
/// ⟨σ''σ''σ'σ'⟩ (S, T, U).
pub(crate) const P2211: Pattern = [2, 2, 1, 1];

/// Which four-point tables a layer needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FourPointSet {
    /// ⟨σσσσ⟩ only (V).
    Kernel,
    /// and ⟨σσσ'σ'⟩, ⟨σ'σ'σ'σ'⟩ (D, F, A, B).
    Ntk,
    /// and ⟨σ''σ'σ'σ⟩ (P, Q).
    Dntk,
    /// and ⟨σ'''σ'σ'σ'⟩, ⟨σ''σ''σ'σ'⟩ (R, S, T, U).
    Ddntk,
}

impl FourPointSet {
    fn patterns(self) -> &'static [Pattern] {
        const ALL: [Pattern; 6] = [P0000, P0011, P1111, P2110, P3111, P2211];
        match self {
            FourPointSet::Kernel => &ALL[..1],
            FourPointSet::Ntk => &ALL[..3],
            FourPointSet::Dntk => &ALL[..4],
            FourPointSet::Ddntk => &ALL,
        }
    }
}

/// Four-point expectations of one layer, one packed row of unique values per sample multiset
/// (no dense N⁴ table per pattern): the entry `⟨σ^{(o₀)}_a σ^{(o₁)}_b σ^{(o₂)}_c σ^{(o₃)}_d⟩` of
/// pattern `o` is found from the multiset {a, b, c, d} ([`FourPoint::locate`]) and the
/// ordering of (a, b, c, d) relative to the order the block was evaluated in.
pub(crate) struct FourPoint {
    /// The kernel diagonal when blocks are evaluated in decreasing order of variance (kinked
    /// activations), else None (increasing sample index).
    kdiag: Option<Vec<f64>>,
    index: MsIndex,
    /// Per shape plan: the value slot of each (pattern, permutation).
    slots: Vec<Vec<u8>>,
    /// Shape code ([`shape_code`]) → index into `slots`.
    plan_of: [u8; 64],
    vals: Vec<f64>,
}

/// Offsets of the multisets' rows of values: by colex rank over every multiset of the n
/// samples (`usize::MAX`: not evaluated), or a hash map for a few multisets of many samples.
enum MsIndex {
    Colex(Vec<usize>),
    Hash(FxHashMap<u64, usize>),
}

/// Position of an entry among a [`FourPoint`]'s values: the multiset's row, its shape plan and
/// the position in the evaluated order of each of the four tuple slots.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Loc {
    base: usize,
    plan: u8,
    perm: [u8; 4],
}

/// Identity order of the four tuple slots.
pub(crate) const ID4: [usize; 4] = [0, 1, 2, 3];

/// Lexicographic rank of a permutation of 0..4 packed two bits per position (the index in
/// [`perms4`]); 255 for codes that are not permutations.
const PERM_RANK: [u8; 256] = {
    let mut t = [255u8; 256];
    let mut r = 0u8;
    let mut a = 0;
    while a < 4 {
        let mut b = 0;
        while b < 4 {
            let mut c = 0;
            while c < 4 {
                let mut d = 0;
                while d < 4 {
                    if a != b && a != c && a != d && b != c && b != d && c != d {
                        t[a | b << 2 | c << 4 | d << 6] = r;
                        r += 1;
                    }
                    d += 1;
                }
                c += 1;
            }
            b += 1;
        }
        a += 1;
    }
    t
};

/// C(x, k) for k ≤ 4.
#[inline]
fn binom(x: usize, k: usize) -> usize {
    match k {
        1 => x,
        2 => x * x.saturating_sub(1) / 2,
        3 => x * x.saturating_sub(1) * x.saturating_sub(2) / 6,
        _ => x * x.saturating_sub(1) * x.saturating_sub(2) * x.saturating_sub(3) / 24,
    }
}

/// Colex rank of a sorted multiset a ≤ b ≤ c ≤ d (a bijection onto 0..C(n+3, 4)).
#[inline]
pub(crate) fn colex4(s: [usize; 4]) -> usize {
    s[0] + binom(s[1] + 1, 2) + binom(s[2] + 2, 3) + binom(s[3] + 3, 4)
}

/// Number of multisets of four of n samples, C(n + 3, 4).
pub(crate) fn n_multisets4(n: usize) -> usize {
    binom(n + 3, 4)
}

/// Packed key of a sorted multiset (samples < 2¹⁶).
#[inline]
pub(crate) fn ms_key(s: [usize; 4]) -> u64 {
    s[0] as u64 | (s[1] as u64) << 16 | (s[2] as u64) << 32 | (s[3] as u64) << 48
}

/// Code of a multiset shape (`shape4`) in 6 bits.
#[inline]
fn shape_code(sh: [u8; 4]) -> usize {
    sh[1] as usize | (sh[2] as usize) << 2 | (sh[3] as usize) << 4
}

/// The order a multiset's block is evaluated in: increasing sample index, or for kinked
/// activations decreasing variance (ties by index; equal samples stay adjacent), so that a
/// block's values do not depend on the order of the inputs (near coinciding inputs the
/// recursions amplify their rounding).
#[inline]
fn eval_order(mut s: [usize; 4], kdiag: Option<&[f64]>) -> [usize; 4] {
    s.sort_unstable();
    if let Some(kd) = kdiag {
        s.sort_by(|&p, &q| kd[q].total_cmp(&kd[p]).then(p.cmp(&q)));
    }
    s
}

impl FourPoint {
    /// Where the entries of the tuple (a, b, c, d) are (the multiset must have been evaluated).
    #[inline]
    pub(crate) fn locate(&self, t: [usize; 4]) -> Loc {
        // sorting network over (sample, slot): `ord[k]` = the slot of the k-th smallest sample
        let mut v = t;
        let mut ord = [0u8, 1, 2, 3];
        for (i, j) in [(0, 1), (2, 3), (0, 2), (1, 3), (1, 2)] {
            if v[j] < v[i] {
                v.swap(i, j);
                ord.swap(i, j);
            }
        }
        let base = match &self.index {
            MsIndex::Colex(off) => off[colex4(v)],
            MsIndex::Hash(h) => h[&ms_key(v)],
        };
        debug_assert!(base != usize::MAX, "multiset {v:?} not evaluated");
        let mut perm = [0u8; 4];
        let s = match self.kdiag.as_deref() {
            None => {
                for (k, &o) in ord.iter().enumerate() {
                    perm[o as usize] = k as u8;
                }
                v
            }
            Some(kd) => {
                let s = eval_order(v, Some(kd));
                let mut used = [false; 4];
                for i in 0..4 {
                    for k in 0..4 {
                        if !used[k] && s[k] == t[i] {
                            used[k] = true;
                            perm[i] = k as u8;
                            break;
                        }
                    }
                }
                s
            }
        };
        let plan = self.plan_of[shape_code(shape4(&s))];
        Loc { base, plan, perm }
    }

    /// The value of pattern number `pat` ([`FourPointSet::patterns`]) at the tuple located by
    /// `loc` with its slots taken in the order `ord` (entry `[t[ord[0]], …, t[ord[3]]]`).
    #[inline]
    pub(crate) fn get(&self, loc: &Loc, pat: usize, ord: [usize; 4]) -> f64 {
        let p = loc.perm;
        let code = p[ord[0]] as usize
            | (p[ord[1]] as usize) << 2
            | (p[ord[2]] as usize) << 4
            | (p[ord[3]] as usize) << 6;
        let j = PERM_RANK[code] as usize;
        self.vals[loc.base + self.slots[loc.plan as usize][pat * 24 + j] as usize]
    }

    #[inline]
    fn at(&self, t: usize, a: usize, b: usize, c: usize, d: usize) -> f64 {
        self.get(&self.locate([a, b, c, d]), t, ID4)
    }
    /// ⟨σ_aσ_bσ_cσ_d⟩.
    #[inline]
    pub(crate) fn ssss(&self, a: usize, b: usize, c: usize, d: usize) -> f64 {
        self.at(0, a, b, c, d)
    }
    /// ⟨σ_aσ_b σ'_cσ'_d⟩.
    #[inline]
    pub(crate) fn sspp(&self, a: usize, b: usize, c: usize, d: usize) -> f64 {
        self.at(1, a, b, c, d)
    }
    /// ⟨σ'_aσ'_bσ'_cσ'_d⟩.
    #[inline]
    pub(crate) fn pppp(&self, a: usize, b: usize, c: usize, d: usize) -> f64 {
        self.at(2, a, b, c, d)
    }
    /// ⟨σ''_a σ'_b σ'_c σ_d⟩.
    #[inline]
    pub(crate) fn g2110(&self, a: usize, b: usize, c: usize, d: usize) -> f64 {
        self.at(3, a, b, c, d)
    }
    /// ⟨σ'''_a σ'_b σ'_c σ'_d⟩.
    #[inline]
    pub(crate) fn g3111(&self, a: usize, b: usize, c: usize, d: usize) -> f64 {
        self.at(4, a, b, c, d)
    }
    /// ⟨σ''_a σ''_b σ'_c σ'_d⟩.
    #[inline]
    pub(crate) fn g2211(&self, a: usize, b: usize, c: usize, d: usize) -> f64 {
        self.at(5, a, b, c, d)
    }
}

/// The multisets of four of `n` samples, as sorted index quadruples a ≤ b ≤ c ≤ d.
pub(crate) fn multisets4(n: usize) -> Vec<[usize; 4]> {
    let mut sets = vec![];
    for a in 0..n {
        for b in a..n {
            for c in b..n {
                for d in c..n {
                    sets.push([a, b, c, d]);
                }
            }
        }
    }
    sets
}

/// All permutations of four positions.
fn perms4() -> Vec<[usize; 4]> {
    let mut out = vec![];
    for a in 0..4 {
        for b in 0..4 {
            for c in 0..4 {
                for d in 0..4 {
                    let p = [a, b, c, d];
                    if (0..4).all(|i| p.contains(&i)) {
                        out.push(p);
                    }
                }
            }
        }
    }
    out
}

/// The per-sample factor `Π_i σ^{(m_i)}(z)` of one sample as a linear combination of engine
/// terms.  Regular products are one [`Term::prod`], a lone distributional derivative one
/// [`Term::sigma`].  For an activation whose σ' jumps (relu, leaky relu: σ'' = jump·δ), a
/// σ'' times powers of σ' and σ at the *same* sample is the distribution
/// `σ''σ'^kσ^j = [D(σ'^{k+1}σ^j) − j σ'^{k+2}σ^{j−1}]/(k+1)` (the product rule, with
/// `σ''σ'^k = D(σ'^{k+1})/(k+1)`: δ times a step takes the step's mean value at the kink);
/// any other product of a distribution with factors at its own sample is refused.
pub(crate) fn sample_factor(
    orders: &[u8],
    first_singular: usize,
) -> Result<Vec<(f64, Term)>, RgError> {
    let singular = orders
        .iter()
        .filter(|&&m| m as usize >= first_singular)
        .count();
    if singular == 0 {
        return Ok(vec![(1.0, Term::prod(orders))]);
    }
    if orders.len() == 1 {
        return Ok(vec![(1.0, Term::sigma(orders[0]))]);
    }
    let twos = orders.iter().filter(|&&m| m == 2).count();
    if first_singular == 2 && singular == 1 && twos == 1 && orders.iter().all(|&m| m <= 2) {
        let k = orders.iter().filter(|&&m| m == 1).count();
        let j = orders.iter().filter(|&&m| m == 0).count();
        let mut d = vec![1u8; k + 1];
        d.extend(std::iter::repeat_n(0u8, j));
        let mut out = vec![(1.0 / (k + 1) as f64, Term::deriv_of(1, &d))];
        if j > 0 {
            let mut r = vec![1u8; k + 2];
            r.extend(std::iter::repeat_n(0u8, j - 1));
            out.push((-(j as f64) / (k + 1) as f64, Term::prod(&r)));
        }
        return Ok(out);
    }
    Err(RgError::value(format!(
        "the product of derivatives {orders:?} of a kinked activation at one sample is not defined \
         (products of its delta functions); use a smooth activation (gelu, swish, tanh, ...)"
    )))
}

/// Which of the four (sorted) samples of a multiset coincide: the index of each among the
/// distinct samples, e.g. `[0, 0, 1, 2]` for `{a, a, b, c}`.
fn shape4(s: &[usize; 4]) -> [u8; 4] {
    let mut out = [0u8; 4];
    for i in 1..4 {
        out[i] = out[i - 1] + u8::from(s[i] != s[i - 1]);
    }
    out
}

/// The integrands of the four-point tables for one multiset shape: the engine terms `its` (one
/// expectation block), each unique table value as a combination of them (`combos`), and per
/// (pattern, permutation) the slot of its value.
struct ShapePlan {
    its: Vec<Vec<Term>>,
    combos: Vec<Vec<(f64, usize)>>,
    slot: Vec<u8>,
}

impl ShapePlan {
    fn new(
        shape: [u8; 4],
        patterns: &[Pattern],
        perms: &[[usize; 4]],
        first_singular: usize,
    ) -> Result<ShapePlan, RgError> {
        let dn = shape[3] as usize + 1;
        let mut keys: Vec<u64> = vec![];
        let mut slot: Vec<u8> = Vec::with_capacity(patterns.len() * perms.len());
        let mut combos: Vec<Vec<(f64, usize)>> = vec![];
        let mut its: Vec<Vec<Term>> = vec![];
        for pat in patterns {
            for p in perms {
                let key = key4([0, 1, 2, 3].map(|i| code(shape[p[i]] as usize, pat[i])));
                if let Some(q) = keys.iter().position(|&x| x == key) {
                    slot.push(q as u8);
                    continue;
                }
                slot.push(keys.len() as u8);
                keys.push(key);
                // each distinct sample's factor as a combination of terms, multiplied out
                let mut expansion: Vec<(f64, Vec<Term>)> = vec![(1.0, vec![])];
                for smp in 0..dn as u8 {
                    let orders: Vec<u8> = (0..4)
                        .filter(|&i| shape[p[i]] == smp)
                        .map(|i| pat[i])
                        .collect();
                    let factor = sample_factor(&orders, first_singular)?;
                    let mut next = Vec::with_capacity(expansion.len() * factor.len());
                    for (c, ts) in &expansion {
                        for (cf, t) in &factor {
                            let mut ts = ts.clone();
                            ts.push(t.clone());
                            next.push((c * cf, ts));
                        }
                    }
                    expansion = next;
                }
                let mut combo = vec![];
                for (c, ts) in expansion {
                    let i = match its.iter().position(|x| *x == ts) {
                        Some(i) => i,
                        None => {
                            its.push(ts);
                            its.len() - 1
                        }
                    };
                    combo.push((c, i));
                }
                combos.push(combo);
            }
        }
        Ok(ShapePlan { its, combos, slot })
    }
}

/// ⟨Π σ^{(p_i)}(z_{s_i})⟩ for every [`Pattern`] of `set`, over all multisets of 4 samples.
pub(crate) fn four_point_expectations(
    act: &dyn ActivationFn,
    k: &[f64],
    n: usize,
    set: FourPointSet,
    opts: &QuadOpts,
) -> Result<FourPoint, RgError> {
    four_point_at(act, k, n, set, None, opts)
}

/// ⟨Π σ^{(p_i)}(z_{s_i})⟩ for every [`Pattern`] of `set`, over the sorted, distinct multisets
/// `only` (None: every multiset of the n samples): one pass over the multisets (in parallel),
/// each evaluating the distinct integrands of all patterns and orderings in one
/// [`expect_block`] call (shared nodes), kept packed per multiset.  A value depends only on
/// its multiset's samples, never on which other multisets are evaluated.
pub(crate) fn four_point_at(
    act: &dyn ActivationFn,
    k: &[f64],
    n: usize,
    set: FourPointSet,
    only: Option<&[[usize; 4]]>,
    opts: &QuadOpts,
) -> Result<FourPoint, RgError> {
    let all;
    let sets: &[[usize; 4]] = match only {
        Some(s) => s,
        None => {
            all = multisets4(n);
            &all
        }
    };
    let kdiag: Option<Vec<f64>> = act
        .kink()
        .is_some()
        .then(|| (0..n).map(|i| k[i * n + i]).collect());
    let patterns = set.patterns();
    let perms = perms4();
    let first_singular = first_singular_order(act)?;
    // The integrands of a multiset depend only on which of its four samples coincide (its
    // shape, e.g. [0, 0, 1, 2] for {a, a, b, c}): one plan per shape, built once per layer.
    let mut plans: Vec<ShapePlan> = vec![];
    let mut plan_of = [u8::MAX; 64];
    for s in sets {
        let sh = shape4(&eval_order(*s, kdiag.as_deref()));
        if plan_of[shape_code(sh)] == u8::MAX {
            plan_of[shape_code(sh)] = plans.len() as u8;
            plans.push(ShapePlan::new(sh, patterns, &perms, first_singular)?);
        }
    }
    // per multiset: the unique values (the plan's slots say which value goes where)
    let values: Vec<Vec<f64>> = sets
        .par_iter()
        .map(|s| -> Result<Vec<f64>, RgError> {
            cancel::check()?;
            let s = eval_order(*s, kdiag.as_deref());
            let plan = &plans[plan_of[shape_code(shape4(&s))] as usize];
            let mut ds: Vec<usize> = s.to_vec();
            ds.dedup();
            let dn = ds.len();
            let cov: Vec<f64> = ds
                .iter()
                .flat_map(|&p| ds.iter().map(move |&q| k[p * n + q]))
                .collect();
            let v = expect_block(act, &cov, dn, &plan.its, opts)
                .map_err(|e| e.context(&format!("four-point expectations for inputs {s:?}")))?;
            Ok(plan
                .combos
                .iter()
                .map(|c| c.iter().map(|&(cf, i)| cf * v[i]).sum())
                .collect())
        })
        .collect::<Result<_, _>>()?;
    let total: usize = values.iter().map(Vec::len).sum();
    let mut vals = Vec::new();
    cancel::reserve(&mut vals, total, "the four-point expectation values")?;
    let mut offsets = Vec::with_capacity(sets.len());
    for v in values {
        offsets.push(vals.len());
        vals.extend_from_slice(&v);
    }
    let n_all = n_multisets4(n);
    let index = if only.is_none() || n_all <= (1 << 24) || n_all <= 4 * sets.len() {
        let mut off = vec![usize::MAX; n_all];
        for (s, o) in sets.iter().zip(&offsets) {
            off[colex4(*s)] = *o;
        }
        MsIndex::Colex(off)
    } else {
        MsIndex::Hash(sets.iter().map(|s| ms_key(*s)).zip(offsets).collect())
    };
    Ok(FourPoint {
        kdiag,
        index,
        slots: plans.into_iter().map(|p| p.slot).collect(),
        plan_of,
        vals,
    })
}

/// Fill an N⁴ tensor in parallel over the first index (allocated fallibly; stops at an
/// interrupt, [`crate::cancel`]).
pub(crate) fn fill4(
    n: usize,
    f: impl Fn(usize, usize, usize, usize) -> f64 + Sync,
) -> Result<Vec<f64>, RgError> {
    let mut out = cancel::zeros(n * n * n * n, "an N⁴ tensor")?;
    out.par_chunks_mut((n * n * n).max(1))
        .enumerate()
        .try_for_each(|(a, chunk)| -> Result<(), RgError> {
            cancel::check()?;
            for b in 0..n {
                for c in 0..n {
                    for d in 0..n {
                        chunk[(b * n + c) * n + d] = f(a, b, c, d);
                    }
                }
            }
            Ok(())
        })?;
    Ok(out)
}
