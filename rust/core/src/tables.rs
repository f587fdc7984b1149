//! Expectation tables at one kernel K, shared by every layer recursion ([`crate::mlp`],
//! [`crate::resmlp`], [`crate::preresnet`]):
//!
//! * [`PairTable`]: two-sample values `⟨σ^{(i)}_a σ^{(j)}_b⟩` for every pair a < b and
//!   single-sample values `⟨D^m(σ^{(p)}σ^{(q)})⟩` on the diagonal, with the accessors the
//!   recursions use (`⟨∂_{g₁}…∂_{gₘ}(σ_aσ_b)⟩` over the distinct samples of a pair);
//! * [`FourPoint`]: dense four-point tables `⟨σσσσ⟩`, `⟨σσσ'σ'⟩`, `⟨σ'σ'σ'σ'⟩`;
//! * the sample bookkeeping: [`distinct`] samples of a pair, [`multisets4`], [`key4`], and
//!   [`fill4`] for N⁴ tensors in parallel.
//!
//! Uses only [`crate::expect`] (below it) and is used by the recursions (above it).

use std::ops::Deref;

use rayon::prelude::*;

use crate::activations::ActivationFn;
use crate::expect::{expect_block, pair_values, QuadOpts, Term};
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

/// Highest σ derivative order per sample in the off-diagonal entries.
const MAX_OFF: usize = 5;
/// Highest total derivative D^m in the diagonal entries.
const MAX_DIAG: usize = 4;

/// Pair expectations at one kernel (N×N), flat: one row of `stride` values per pair a ≤ b
/// (rows a > b unused); a row holds the requested off-diagonal values (a < b) or diagonal
/// values (a = b) in request order, and a final 0 that every entry not requested points at.
#[derive(Clone, Debug)]
pub(crate) struct PairTable {
    n: usize,
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
        for a in 0..n {
            for b in a..n {
                let v = &values[a * n + b];
                let row = (a * n + b) * stride;
                vals[row..row + v.len()].copy_from_slice(v);
            }
        }
        Ok(PairTable {
            n,
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

    /// `⟨σ^{(i)}_a σ^{(j)}_b⟩` for a ≠ b (0 when not tabulated; a = b is not an entry).
    #[inline]
    pub(crate) fn m(&self, a: usize, i: usize, b: usize, j: usize) -> f64 {
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
        self.m(a, na, b, gs.len() - na)
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

/// Factor code: σ (`prime = false`) or σ' at `sample`.
#[inline]
fn code(sample: usize, prime: bool) -> u16 {
    ((sample << 1) | prime as usize) as u16
}

/// Dense four-point expectations of one layer (N⁴ each, row-major):
/// `s0[a,b,c,d] = ⟨σ_aσ_bσ_cσ_d⟩`, and with the NTK family `s2[a,b,c,d] = ⟨σ_aσ_b σ'_cσ'_d⟩`
/// and `s4[a,b,c,d] = ⟨σ'_aσ'_bσ'_cσ'_d⟩`.
pub(crate) struct FourPoint {
    n: usize,
    pub(crate) s0: Vec<f64>,
    pub(crate) s2: Vec<f64>,
    pub(crate) s4: Vec<f64>,
}

impl FourPoint {
    #[inline]
    fn at(&self, t: &[f64], a: usize, b: usize, c: usize, d: usize) -> f64 {
        t[((a * self.n + b) * self.n + c) * self.n + d]
    }
    /// ⟨σ_aσ_bσ_cσ_d⟩.
    #[inline]
    pub(crate) fn ssss(&self, a: usize, b: usize, c: usize, d: usize) -> f64 {
        self.at(&self.s0, a, b, c, d)
    }
    /// ⟨σ_aσ_b σ'_cσ'_d⟩.
    #[inline]
    pub(crate) fn sspp(&self, a: usize, b: usize, c: usize, d: usize) -> f64 {
        self.at(&self.s2, a, b, c, d)
    }
    /// ⟨σ'_aσ'_bσ'_cσ'_d⟩.
    #[inline]
    pub(crate) fn pppp(&self, a: usize, b: usize, c: usize, d: usize) -> f64 {
        self.at(&self.s4, a, b, c, d)
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

/// ⟨Π σ^{(p_i)}(z_{s_i})⟩ over all multisets of 4 samples and even prime patterns (each unique
/// multiset once, in parallel), scattered into the dense [`FourPoint`] tables.
pub(crate) fn four_point_expectations(
    act: &dyn ActivationFn,
    k: &[f64],
    n: usize,
    ntk: bool,
    opts: &QuadOpts,
) -> Result<FourPoint, RgError> {
    let sets = multisets4(n);
    let masks: Vec<u32> = (0u32..16)
        .filter(|m| m.count_ones() % 2 == 0 && (ntk || *m == 0))
        .collect();
    let values: Vec<Vec<f64>> = sets
        .par_iter()
        .map(|s| -> Result<Vec<f64>, RgError> {
            let mut ds: Vec<usize> = s.to_vec();
            ds.dedup();
            let dn = ds.len();
            let cov: Vec<f64> = ds
                .iter()
                .flat_map(|&p| ds.iter().map(move |&q| k[p * n + q]))
                .collect();
            let mut keys: Vec<u64> = vec![];
            let mut slot: Vec<usize> = vec![];
            let mut its: Vec<Vec<Term>> = vec![];
            for &mask in &masks {
                let key = key4([0, 1, 2, 3].map(|i| code(s[i], mask >> i & 1 == 1)));
                if let Some(p) = keys.iter().position(|&x| x == key) {
                    slot.push(p);
                    continue;
                }
                slot.push(keys.len());
                keys.push(key);
                let terms: Vec<Term> = ds
                    .iter()
                    .map(|&smp| {
                        let orders: Vec<u8> = (0..4)
                            .filter(|&i| s[i] == smp)
                            .map(|i| (mask >> i & 1) as u8)
                            .collect();
                        Term::prod(&orders)
                    })
                    .collect();
                its.push(terms);
            }
            let v = expect_block(act, &cov, dn, &its, opts)
                .map_err(|e| e.context(&format!("four-point expectations for inputs {s:?}")))?;
            Ok(slot.into_iter().map(|p| v[p]).collect())
        })
        .collect::<Result<_, _>>()?;
    let n4 = n * n * n * n;
    let idx = |p: [usize; 4]| ((p[0] * n + p[1]) * n + p[2]) * n + p[3];
    let mut fp = FourPoint {
        n,
        s0: vec![0.0; n4],
        s2: if ntk { vec![0.0; n4] } else { vec![] },
        s4: if ntk { vec![0.0; n4] } else { vec![] },
    };
    let perms = perms4();
    for (s, v) in sets.iter().zip(&values) {
        for (&mask, &val) in masks.iter().zip(v) {
            match mask.count_ones() {
                0 => perms.iter().for_each(|p| fp.s0[idx(p.map(|i| s[i]))] = val),
                4 => perms.iter().for_each(|p| fp.s4[idx(p.map(|i| s[i]))] = val),
                _ => {
                    let (pr, un): (Vec<usize>, Vec<usize>) =
                        (0..4).partition(|&i| mask >> i & 1 == 1);
                    for (u0, u1) in [(un[0], un[1]), (un[1], un[0])] {
                        for (p0, p1) in [(pr[0], pr[1]), (pr[1], pr[0])] {
                            fp.s2[idx([s[u0], s[u1], s[p0], s[p1]])] = val;
                        }
                    }
                }
            }
        }
    }
    Ok(fp)
}

/// Fill an N⁴ tensor in parallel over the first index.
pub(crate) fn fill4(n: usize, f: impl Fn(usize, usize, usize, usize) -> f64 + Sync) -> Vec<f64> {
    let mut out = vec![0.0; n * n * n * n];
    out.par_chunks_mut(n * n * n)
        .enumerate()
        .for_each(|(a, chunk)| {
            for b in 0..n {
                for c in 0..n {
                    for d in 0..n {
                        chunk[(b * n + c) * n + d] = f(a, b, c, d);
                    }
                }
            }
        });
    out
}
