//! Expectation tables at one kernel K, shared by every layer recursion ([`crate::mlp`],
//! [`crate::resmlp`], [`crate::preresnet`]):
//!
//! * [`PairTable`]: two-sample values `⟨σ^{(i)}_a σ^{(j)}_b⟩` for every pair a < b and
//!   single-sample values `⟨D^m(σ^{(p)}σ^{(q)})⟩` on the diagonal, with the accessors the
//!   recursions use (`⟨∂_{g₁}…∂_{gₘ}(σ_aσ_b)⟩` over the distinct samples of a pair);
//! * [`FourPoint`]: dense four-point tables `⟨σ^{(o₀)}σ^{(o₁)}σ^{(o₂)}σ^{(o₃)}⟩` per derivative
//!   pattern: `⟨σσσσ⟩`, `⟨σσσ'σ'⟩`, `⟨σ'σ'σ'σ'⟩` and for the dNTK family `⟨σ''σ'σ'σ⟩`,
//!   `⟨σ'''σ'σ'σ'⟩`, `⟨σ''σ''σ'σ'⟩`, all from one pass over the unique sample multisets;
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

/// Dense four-point expectations of one layer (N⁴ each, row-major), one table per
/// [`Pattern`] of the requested [`FourPointSet`] (in the order of [`FourPointSet::patterns`]).
pub(crate) struct FourPoint {
    n: usize,
    tables: Vec<Vec<f64>>,
}

impl FourPoint {
    #[inline]
    fn at(&self, t: usize, a: usize, b: usize, c: usize, d: usize) -> f64 {
        self.tables[t][((a * self.n + b) * self.n + c) * self.n + d]
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

/// ⟨Π σ^{(p_i)}(z_{s_i})⟩ for every [`Pattern`] of `set`, over all multisets of 4 samples:
/// one pass over the unique sample multisets (in parallel), each evaluating the distinct
/// integrands of all patterns and orderings in one [`expect_block`] call (shared nodes),
/// scattered into the dense [`FourPoint`] tables.
pub(crate) fn four_point_expectations(
    act: &dyn ActivationFn,
    k: &[f64],
    n: usize,
    set: FourPointSet,
    opts: &QuadOpts,
) -> Result<FourPoint, RgError> {
    let mut sets = multisets4(n);
    if act.kink().is_some() {
        // Kinked activations: the samples of a block in decreasing order of variance (ties by
        // index; equal samples stay adjacent), so that a block's values do not depend on the
        // order of the inputs: near coinciding inputs the recursions amplify their rounding.
        for s in &mut sets {
            s.sort_by(|&p, &q| k[q * n + q].total_cmp(&k[p * n + p]).then(p.cmp(&q)));
        }
    }
    let patterns = set.patterns();
    let perms = perms4();
    let first_singular = first_singular_order(act)?;
    // The integrands of a multiset depend only on which of its four samples coincide (its
    // shape, e.g. [0, 0, 1, 2] for {a, a, b, c}): one plan per shape, built once per layer.
    let mut plans: FxHashMap<[u8; 4], ShapePlan> = FxHashMap::default();
    for s in &sets {
        let shape = shape4(s);
        if let std::collections::hash_map::Entry::Vacant(e) = plans.entry(shape) {
            e.insert(ShapePlan::new(shape, patterns, &perms, first_singular)?);
        }
    }
    // per multiset: the unique values (the plan's slots say which value goes where)
    let values: Vec<Vec<f64>> = sets
        .par_iter()
        .map(|s| -> Result<Vec<f64>, RgError> {
            cancel::check()?;
            let plan = &plans[&shape4(s)];
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
    let n4 = n * n * n * n;
    let idx = |p: [usize; 4]| ((p[0] * n + p[1]) * n + p[2]) * n + p[3];
    let mut tables = Vec::with_capacity(patterns.len());
    for _ in patterns {
        tables.push(cancel::zeros(n4, "a four-point expectation table (N⁴)")?);
    }
    // scatter, one table per task (every write of an entry carries the same value)
    let slots: Vec<&[u8]> = sets.iter().map(|s| &plans[&shape4(s)].slot[..]).collect();
    tables.par_iter_mut().enumerate().for_each(|(t, table)| {
        for ((s, vals), slot) in sets.iter().zip(&values).zip(&slots) {
            for (j, p) in perms.iter().enumerate() {
                table[idx(p.map(|i| s[i]))] = vals[slot[t * perms.len() + j] as usize];
            }
        }
    });
    Ok(FourPoint { n, tables })
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
