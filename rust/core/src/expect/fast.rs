//! Error-controlled nested quadrature for smooth activations (no kink: tanh, sigmoid, swish,
//! softplus, sin, custom callables), the default rule of `method="auto"` where no closed form
//! exists.  The same whitened nested scheme as [`super::nested`] (pivoted Cholesky, level k
//! integrates u_k), with these changes, each measured in `benches/bench_fastexp.py`:
//!
//! 1. **Per-level rules and orders.**  Level k sees the activation through the slopes
//!    `L_jk` (j ≥ k) of the samples it moves; its scale is `σ_k = max_j |L_jk|`.  Above
//!    [`SPLIT_SCALE`] the line is split at the activation's centre into two half-range
//!    Gauss–Hermite pieces (the poles of tanh & co. at `Im z = ±π/2` then sit at the piece
//!    endpoints, where they hurt least: at K ≈ 2 the split rule converges ~10⁴× faster than
//!    plain Gauss–Hermite of equal node count); below it, plain Gauss–Hermite (better for the
//!    nearly polynomial integrands of small variance).  The order per piece grows linearly
//!    with the number of digits asked for and with `σ_k` ([`level_order`]); inner levels
//!    (smaller conditional variances) get fewer nodes.
//! 2. **Innermost level by interpolation.**  For d ≥ 3 the innermost integral
//!    `G(c) = E[h(c + L_{d-1,d-1} u)]` depends on the outer nodes only through the scalar c;
//!    it is tabulated lazily per block on a grid of cells (anchored at 0, width w) by
//!    Chebyshev interpolation of degree [`CHEB_DEG`] from a direct rule with
//!    [`CELL_EXTRA_DIGITS`] more digits (so that the cells see the smooth function, not the
//!    direct rule's own error).  A cell is accepted when its last two Chebyshev coefficients
//!    are below the tolerance; a cell that is not is replaced by its two halves (down to
//!    [`CELL_DEPTH`] halvings, then direct quadrature for the points in it): a hard cell costs
//!    its own refinement, never a rerun of the block.  The level above the innermost one
//!    inlines the lookups (the last cell used is cached).
//! 3. **Pruning.**  Outer nodes whose weight product (over their level and the levels above)
//!    is below [`PRUNE_REL`]·tol are skipped.
//! 4. **Symmetry.**  A zero-mean block whose specs are all even or odd under z → −z (tanh,
//!    sin, odd or even custom callables: checked numerically at seven points) and whose
//!    level-0 rule is symmetric integrates level 0 over u ≥ 0 only, each suffix class weighted
//!    by 1 + its parity (odd integrands are exactly 0): half the work.
//! 5. **Centre anchor.**  A split level whose cuts all lie further than [`ANCHOR`] from the
//!    Gaussian's centre also cuts at the centre (half-range pieces starting away from it fit
//!    the shifted Gaussian poorly: a nearly singular tanh block lost ~1e-9).
//!
//! Everything is sequential within a block: results do not depend on the thread count.

use std::sync::Arc;

use super::nested::{has_ladder, level_cuts, push_split_rule, Permuted};
use super::terms::{term_value, Spec};
use crate::activations::{ActivationFn, Side};
use crate::linalg::pivoted_cholesky;
use crate::quadrature::Rule;
use crate::RgError;

/// Default target accuracy (relative to the integrand's scale) of the fast rule.
pub const DEFAULT_TOL: f64 = 2e-11;

/// The default tolerance of blocks of three samples, relative to [`DEFAULT_TOL`]: they cost a
/// small fraction of the four-sample ones, and their products of factors at a repeated sample
/// enter A and D with factors Θ² (at 2e-11 a layer-1 tanh block was off by 7e-11, A by 1.7e-9).
pub const SMALL_BLOCK_TOL: f64 = 0.1;

/// Levels whose scale σ_k exceeds this are split at the activation's centre.
pub const SPLIT_SCALE: f64 = 0.45;

/// The scale whose [`level_order`] a level with ladder cuts uses per piece.
pub const LADDER_PIECE_SCALE: f64 = 1.0;

/// Degree of the Chebyshev interpolant of the innermost level per cell.
pub const CHEB_DEG: usize = 14;

/// Outer nodes whose weight product (over the levels above and their own) is below
/// `PRUNE_REL · tol` are skipped: the integrands are bounded by a low-degree polynomial in z
/// and the skipped weights sum to far less than the tolerance.
pub const PRUNE_REL: f64 = 1e-10;

/// A split level whose cuts all lie further than this from the Gaussian's centre (in its
/// standardised coordinate) gets one more cut at the centre: a half-range Gauss–Hermite piece
/// that starts away from 0 integrates a shifted Gaussian (its weight times e^{±c v}), which
/// costs accuracy (a nearly singular tanh block lost 1e-9 with the nested rule's anchor at 1.5).
pub const ANCHOR: f64 = 0.3;

/// Extra digits of the direct rule that builds the interpolation cells: the cells' Chebyshev
/// tails must see the smooth function, not the direct rule's own error.
pub const CELL_EXTRA_DIGITS: f64 = 3.0;

/// Halvings of an interpolation cell whose tail is above the tolerance before the points in
/// it are integrated directly.
pub const CELL_DEPTH: u8 = 5;

/// Nodes per piece of a level with scale `sigma` (the largest slope of a sample along the
/// level's direction) for `digits` = -log10(tol): split levels (two half-range pieces) and
/// plain Gauss–Hermite levels (`n` nodes in all).
/// cos(π q (j + ½)/(D+1)) for the Chebyshev coefficients of a cell (D = [`CHEB_DEG`]),
/// row-major in q.
fn dct_matrix() -> &'static [f64] {
    static DCT: std::sync::OnceLock<Vec<f64>> = std::sync::OnceLock::new();
    DCT.get_or_init(|| {
        let p1 = CHEB_DEG + 1;
        (0..p1 * p1)
            .map(|i| {
                let (q, j) = (i / p1, i % p1);
                (std::f64::consts::PI * q as f64 * (j as f64 + 0.5) / p1 as f64).cos()
            })
            .collect()
    })
}

pub fn level_order(sigma: f64, digits: f64, split: bool) -> usize {
    let n = if split {
        digits * (0.8 + 1.1 * sigma)
    } else {
        digits * (0.4 + 5.0 * sigma)
    };
    (n.ceil() as usize).clamp(3, 120)
}

struct Level {
    split: bool,
    gh: Arc<Rule>,
    hr: Arc<Rule>,
    gl: Arc<Rule>,
}

struct Fast<'a> {
    act: &'a dyn ActivationFn,
    d: usize,
    l: Vec<f64>,
    specs: Vec<Vec<Spec>>,
    /// classes[k][q] = (spec index at level k, class index at level k+1) of the distinct
    /// suffixes (spec_k, …, spec_{d-1}) of the integrands.
    classes: Vec<Vec<(usize, usize)>>,
    jet_order: Vec<usize>,
    uses_act: Vec<bool>,
    splits: Vec<f64>,
    sharp: Vec<Vec<(usize, f64, f64)>>,
    levels: Vec<Level>,
    /// Whether large slopes get ladder cuts (the activation is not piecewise linear).
    ladder: bool,
    /// Absolute tolerance of the interpolation cells (times max(1, |G|)).
    cell_tol: f64,
    /// Outer nodes with a weight product below this are skipped.
    prune: f64,
    /// Parity (±1) of each level-0 class when the block is symmetric under z → -z (zero
    /// mean, every spec even or odd, a level-0 rule symmetric about 0): level 0 then integrates
    /// u ≥ 0 only.
    fold: Option<Vec<f64>>,
}

struct Buf {
    u: Vec<f64>,
    w: Vec<f64>,
    z: Vec<f64>,
    jets: Vec<f64>,
    vals: Vec<f64>,
    inner: Vec<f64>,
    c: Vec<f64>,
}

impl Buf {
    fn new(d: usize) -> Buf {
        Buf {
            u: vec![],
            w: vec![],
            z: vec![],
            jets: vec![],
            vals: vec![],
            inner: vec![],
            c: vec![0.0; d],
        }
    }
}

/// Lazily built Chebyshev cells of the innermost level: cell (r, m) covers
/// [m w/2^r, (m+1) w/2^r); a cell whose coefficient tail is above the tolerance is stored
/// empty and its points go to its two halves (depth r + 1), down to [`CELL_DEPTH`], below
/// which they are integrated directly.
struct Interp {
    w: f64,
    ns: usize,
    /// Cell key → index into `coefs` (None: the cell failed, see its halves).
    cells: rustc_hash::FxHashMap<(u8, i64), Option<u32>>,
    coefs: Vec<Box<[f64]>>,
    /// The last depth-0 cell used (m, index): consecutive lookups mostly hit it.
    last: (i64, u32),
}

impl<'a> Fast<'a> {
    /// Nodes and weights of level k at conditional mean ck (as in [`super::nested`]).
    fn nodes(&self, k: usize, ck: f64, c: &[f64], u: &mut Vec<f64>, w: &mut Vec<f64>) {
        u.clear();
        w.clear();
        let s = self.l[k * self.d + k];
        if s <= 0.0 {
            u.push(0.0);
            w.push(1.0);
            return;
        }
        let lv = &self.levels[k];
        if !lv.split {
            u.extend_from_slice(&lv.gh.nodes);
            w.extend_from_slice(&lv.gh.weights);
            return;
        }
        let (cuts, nc) = level_cuts(
            &self.splits,
            self.uses_act[k],
            ck,
            s,
            &self.sharp[k],
            c,
            self.ladder,
        );
        if nc == 0 {
            u.extend_from_slice(&lv.gh.nodes);
            w.extend_from_slice(&lv.gh.weights);
            return;
        }
        let mut cuts = cuts;
        let mut nc = nc;
        if nc < cuts.len() && !cuts[..nc].iter().any(|c| c.abs() <= ANCHOR) {
            cuts[nc] = 0.0;
            nc += 1;
            cuts[..nc].sort_by(|a, b| a.total_cmp(b));
        }
        push_split_rule(&cuts[..nc], &lv.hr, &lv.gl, u, w);
    }

    /// Values of the specs of level k at the points z: vals[i * ns + si].
    fn eval_specs(&self, k: usize, buf: &mut Buf) -> Result<(), RgError> {
        let specs = &self.specs[k];
        let ns = specs.len();
        let nn = buf.z.len();
        buf.vals.resize(nn * ns, 0.0);
        let jo = self.jet_order[k];
        if self.uses_act[k] {
            buf.jets.resize(nn * (jo + 1), 0.0);
            self.act.jets(&buf.z, jo, Side::Auto, &mut buf.jets)?;
        }
        for i in 0..nn {
            let jets: &[f64] = if self.uses_act[k] {
                &buf.jets[i * (jo + 1)..(i + 1) * (jo + 1)]
            } else {
                &[]
            };
            let z = buf.z[i];
            for (si, sp) in specs.iter().enumerate() {
                let t = &sp.term;
                if t.deriv == 0 && t.zpow == 0 && sp.mulpow == 0 && t.sig.len() == 1 {
                    // σ^{(j)} itself (the common factor of the four-point tables)
                    buf.vals[i * ns + si] = jets[t.sig[0] as usize];
                    continue;
                }
                let mut v = term_value(t, z, jets);
                if sp.mulpow > 0 {
                    v *= z.powi(sp.mulpow as i32);
                }
                buf.vals[i * ns + si] = v;
            }
        }
        Ok(())
    }

    /// Innermost level by direct quadrature: per-spec sums into `out` (length ns).
    fn innermost_direct(
        &self,
        k: usize,
        ck: f64,
        buf: &mut Buf,
        out: &mut [f64],
    ) -> Result<(), RgError> {
        let mut u = std::mem::take(&mut buf.u);
        let mut w = std::mem::take(&mut buf.w);
        self.nodes(k, ck, &buf.c, &mut u, &mut w);
        let s = self.l[k * self.d + k];
        buf.z.clear();
        buf.z.extend(u.iter().map(|x| ck + s * x));
        self.eval_specs(k, buf)?;
        let ns = self.specs[k].len();
        out[..ns].iter_mut().for_each(|v| *v = 0.0);
        for (i, wi) in w.iter().enumerate() {
            for (o, v) in out[..ns].iter_mut().zip(&buf.vals[i * ns..(i + 1) * ns]) {
                *o += wi * v;
            }
        }
        buf.u = u;
        buf.w = w;
        Ok(())
    }

    /// Innermost level by the lazily built Chebyshev cells.
    #[inline]
    fn innermost_interp(
        &self,
        k: usize,
        ck: f64,
        buf: &mut Buf,
        ip: &mut Interp,
        out: &mut [f64],
    ) -> Result<(), RgError> {
        let ns = ip.ns;
        let p1 = CHEB_DEG + 1;
        let mut w = ip.w;
        let m0 = (ck / w).floor();
        let mut found = None;
        if m0 as i64 == ip.last.0 {
            found = Some((ip.last.1, m0, w));
        } else {
            for r in 0..=CELL_DEPTH {
                let m = (ck / w).floor();
                let key = (r, m as i64);
                let idx = match ip.cells.get(&key) {
                    Some(&v) => v,
                    None => {
                        let cell = self.build_cell(k, m * w, w, buf, ns)?;
                        let v = cell.map(|c| {
                            ip.coefs.push(c);
                            (ip.coefs.len() - 1) as u32
                        });
                        ip.cells.insert(key, v);
                        v
                    }
                };
                if let Some(i) = idx {
                    if r == 0 {
                        ip.last = (m as i64, i);
                    }
                    found = Some((i, m, w));
                    break;
                }
                w *= 0.5;
            }
        }
        let Some((i, m, w)) = found else {
            return self.innermost_direct(k, ck, buf, out);
        };
        let coef = &ip.coefs[i as usize];
        let x = 2.0 * (ck - m * w) / w - 1.0;
        let x2 = 2.0 * x;
        for (si, o) in out[..ns].iter_mut().enumerate() {
            let a = &coef[si * p1..(si + 1) * p1];
            let (mut b1, mut b2) = (0.0, 0.0);
            for q in (1..p1).rev() {
                let b0 = a[q] + x2 * b1 - b2;
                b2 = b1;
                b1 = b0;
            }
            *o = a[0] + x * b1 - b2;
        }
        Ok(())
    }

    /// Chebyshev coefficients of the innermost level's per-spec sums on [lo, lo + w], or None
    /// when their tail is above the tolerance.
    fn build_cell(
        &self,
        k: usize,
        lo: f64,
        w: f64,
        buf: &mut Buf,
        ns: usize,
    ) -> Result<Option<Box<[f64]>>, RgError> {
        let p1 = CHEB_DEG + 1;
        let mut g = vec![0.0; p1 * ns];
        let mut tmp = vec![0.0; ns];
        for j in 0..p1 {
            let x = (std::f64::consts::PI * (j as f64 + 0.5) / p1 as f64).cos();
            let c = lo + 0.5 * w * (1.0 + x);
            self.innermost_direct(k, c, buf, &mut tmp)?;
            for si in 0..ns {
                g[si * p1 + j] = tmp[si];
            }
        }
        let mut coef = vec![0.0; p1 * ns].into_boxed_slice();
        let dct = dct_matrix();
        for si in 0..ns {
            let gs = &g[si * p1..(si + 1) * p1];
            let scale = gs.iter().fold(1.0f64, |a, v| a.max(v.abs()));
            for q in 0..p1 {
                let row = &dct[q * p1..(q + 1) * p1];
                let acc: f64 = gs.iter().zip(row).map(|(gj, c)| gj * c).sum();
                coef[si * p1 + q] = acc * 2.0 / p1 as f64;
            }
            coef[si * p1] *= 0.5;
            let tail = coef[si * p1 + p1 - 1].abs() + coef[si * p1 + p1 - 2].abs();
            if tail.is_nan() || tail > self.cell_tol * scale {
                return Ok(None);
            }
        }
        Ok(Some(coef))
    }

    /// Level k: `out[q]` for every suffix class q of level k.
    fn level(
        &self,
        k: usize,
        bufs: &mut [Buf],
        ip: &mut Option<Interp>,
        wprod: f64,
        out: &mut [f64],
    ) -> Result<(), RgError> {
        let (buf, rest) = bufs.split_first_mut().unwrap();
        let ck = buf.c[k];
        let cls = &self.classes[k];
        if k + 1 == self.d {
            let ns = self.specs[k].len();
            let mut sums = std::mem::take(&mut buf.inner);
            sums.resize(ns, 0.0);
            match ip {
                Some(ipv) if self.l[k * self.d + k] > 0.0 => {
                    self.innermost_interp(k, ck, buf, ipv, &mut sums)?
                }
                _ => self.innermost_direct(k, ck, buf, &mut sums)?,
            }
            for (o, &(si, _)) in out.iter_mut().zip(cls) {
                *o = sums[si];
            }
            buf.inner = sums;
            return Ok(());
        }
        let mut u = std::mem::take(&mut buf.u);
        let mut w = std::mem::take(&mut buf.w);
        self.nodes(k, ck, &buf.c, &mut u, &mut w);
        let s = self.l[k * self.d + k];
        buf.z.clear();
        buf.z.extend(u.iter().map(|x| ck + s * x));
        self.eval_specs(k, buf)?;
        let ns = self.specs[k].len();
        out.iter_mut().for_each(|v| *v = 0.0);
        let mut inner = std::mem::take(&mut buf.inner);
        inner.resize(self.classes[k + 1].len(), 0.0);
        // level 0 of a symmetric block: the nodes u > 0 count for u and -u (parity ε of each
        // class: (1 + ε) times), u = 0 once, u < 0 not at all
        let fold = k == 0 && self.fold.is_some();
        let last = self.d - 1;
        if k + 1 == last && self.l[last * self.d + last] > 0.0 {
            if let Some(ipv) = ip.as_mut() {
                // the next level is the interpolated innermost one: inline its lookups
                let lk = self.l[last * self.d + k];
                let c_last = buf.c[last];
                let cls_last = &self.classes[last];
                inner.resize(self.specs[last].len().max(inner.len()), 0.0);
                crate::cancel::check()?;
                for (i, (&ui, &wi)) in u.iter().zip(&w).enumerate() {
                    if (fold && ui < 0.0) || wprod * wi < self.prune {
                        continue;
                    }
                    self.innermost_interp(last, c_last + lk * ui, &mut rest[0], ipv, &mut inner)?;
                    let vals = &buf.vals[i * ns..(i + 1) * ns];
                    let par = self.fold.as_deref().filter(|_| fold && ui > 0.0);
                    accumulate(out, cls, par, wi, vals, |q| inner[cls_last[q].0]);
                }
                buf.inner = inner;
                buf.u = u;
                buf.w = w;
                return Ok(());
            }
        }
        for (i, (&ui, &wi)) in u.iter().zip(&w).enumerate() {
            if fold && ui < 0.0 {
                continue;
            }
            let wi_prod = wprod * wi;
            if wi_prod < self.prune {
                continue;
            }
            let next = &mut rest[0];
            for j in (k + 1)..self.d {
                next.c[j] = buf.c[j] + self.l[j * self.d + k] * ui;
            }
            crate::cancel::check()?;
            self.level(k + 1, rest, ip, wi_prod, &mut inner)?;
            let vals = &buf.vals[i * ns..(i + 1) * ns];
            let par = self.fold.as_deref().filter(|_| fold && ui > 0.0);
            accumulate(out, cls, par, wi, vals, |q| inner[q]);
        }
        buf.inner = inner;
        buf.u = u;
        buf.w = w;
        Ok(())
    }
}

/// Expectations of products of regular specs of a smooth activation over N(mean, cov) by the
/// error-controlled rule, to about `tol` relative to the integrands' scale.
pub(crate) fn nested_fast(
    act: &dyn ActivationFn,
    mean: &[f64],
    cov: &[f64],
    d: usize,
    per_sample: &[Vec<Spec>],
    integ: &[Vec<usize>],
    tol: f64,
) -> Result<Vec<f64>, RgError> {
    let ni = integ.len();
    if d == 0 {
        return Ok(vec![1.0; ni]);
    }
    let tol = if tol > 0.0 {
        tol.max(1e-15)
    } else if d <= 3 {
        DEFAULT_TOL * SMALL_BLOCK_TOL
    } else {
        DEFAULT_TOL
    };
    let digits = -tol.log10();
    let pc = pivoted_cholesky(cov, d);
    let perm = &pc.perm;
    let Permuted {
        specs,
        integ_p,
        jet_order,
        uses_act,
    } = Permuted::new(act, per_sample, integ, perm)?;
    // suffix classes, innermost first
    let mut classes: Vec<Vec<(usize, usize)>> = vec![vec![]; d];
    let mut cur: Vec<usize> = vec![0; ni]; // class index of each integrand at level k+1
    for k in (0..d).rev() {
        let mut keys: Vec<(usize, usize)> = vec![];
        let mut next = vec![0; ni];
        for (ii, row) in integ_p.iter().enumerate() {
            let key = (row[k], if k + 1 < d { cur[ii] } else { 0 });
            next[ii] = match keys.iter().position(|x| *x == key) {
                Some(p) => p,
                None => {
                    keys.push(key);
                    keys.len() - 1
                }
            };
        }
        classes[k] = keys;
        cur = next;
    }
    let top = cur;
    let splits = act.split_points();
    let ladder = act.piecewise_linear().is_none();
    let l = &pc.l;
    let mut sharp: Vec<Vec<(usize, f64, f64)>> = vec![vec![]; d];
    let mut levels = Vec::with_capacity(d);
    for k in 0..d {
        let sigma = (k..d)
            .filter(|&j| uses_act[j])
            .map(|j| l[j * d + k].abs())
            .fold(0.0, f64::max);
        let split = !splits.is_empty() && sigma > SPLIT_SCALE;
        // the innermost level of d ≥ 3 builds interpolation cells: more digits
        let dg = if k + 1 == d && d >= 3 {
            digits + CELL_EXTRA_DIGITS
        } else {
            digits
        };
        let mut n = level_order(sigma, dg, split);
        if split {
            for (j, &uses) in uses_act.iter().enumerate().skip(k + 1) {
                let ljk = l[j * d + k];
                if !uses || ljk == 0.0 {
                    continue;
                }
                let rest: f64 = ((k + 1)..=j)
                    .map(|i| l[j * d + i].powi(2))
                    .sum::<f64>()
                    .sqrt();
                let r = rest / ljk.abs();
                if r < 0.5 {
                    sharp[k].push((j, ljk, r));
                }
            }
        }
        if split && has_ladder(ladder, uses_act[k], l[k * d + k], &sharp[k]) {
            // every piece between ladder cuts is narrow in z: the order of a unit-scale level
            n = n.min(level_order(LADDER_PIECE_SCALE, dg, true));
        }
        levels.push(Level {
            split,
            gh: crate::quadrature::hermite(if split { 2 * n } else { n }),
            hr: crate::quadrature::half_hermite(n),
            gl: crate::quadrature::legendre(n),
        });
    }
    let mean_p: Vec<f64> = perm.iter().map(|&p| mean[p]).collect();
    let mut fast = Fast {
        act,
        d,
        l: pc.l.clone(),
        specs,
        classes,
        jet_order,
        uses_act,
        splits,
        sharp,
        levels,
        ladder,
        cell_tol: tol * 0.1,
        prune: PRUNE_REL * tol,
        fold: None,
    };
    if mean_p.iter().all(|&m| m == 0.0) {
        fast.fold = fast.parities()?;
    }
    let run = |ip: &mut Option<Interp>| -> Result<Vec<f64>, RgError> {
        let mut bufs: Vec<Buf> = (0..d).map(|_| Buf::new(d)).collect();
        bufs[0].c.copy_from_slice(&mean_p);
        let mut out = vec![0.0; fast.classes[0].len()];
        fast.level(0, &mut bufs, ip, 1.0, &mut out)?;
        Ok(top.iter().map(|&q| out[q]).collect())
    };
    if d >= 3 && fast.uses_act[d - 1] && fast.l[(d - 1) * d + d - 1] > 0.0 {
        let s = fast.l[(d - 1) * d + d - 1];
        let mut ip = Some(Interp {
            w: 0.5 + s,
            ns: fast.specs[d - 1].len(),
            cells: Default::default(),
            coefs: vec![],
            last: (i64::MIN, 0),
        });
        return run(&mut ip);
    }
    run(&mut None)
}

impl Fast<'_> {
    /// The parity (±1) of every level-0 class under z → -z, when every spec of every level is
    /// even or odd (checked numerically at seven points from 0.17 to 13.7) and level 0's rule is symmetric about
    /// 0; else None.
    fn parities(&self) -> Result<Option<Vec<f64>>, RgError> {
        // points spread over the range the rules reach (a custom callable may change shape
        // away from the origin)
        const P: [f64; 7] = [0.17, 0.6, 1.3, 2.9, 5.1, 8.3, 13.7];
        let pts: Vec<f64> = P
            .iter()
            .chain(P.iter())
            .enumerate()
            .map(|(i, &x)| if i < 7 { x } else { -x })
            .collect();
        let jo = self.jet_order.iter().copied().max().unwrap_or(0);
        let mut jets = vec![0.0; pts.len() * (jo + 1)];
        if self.uses_act.iter().any(|&u| u) {
            self.act.jets(&pts, jo, Side::Auto, &mut jets)?;
        }
        let mut par: Vec<Vec<f64>> = Vec::with_capacity(self.d);
        for k in 0..self.d {
            let mut pk = Vec::with_capacity(self.specs[k].len());
            for sp in &self.specs[k] {
                let v: Vec<f64> = (0..pts.len())
                    .map(|i| {
                        let jet = &jets[i * (jo + 1)..i * (jo + 1) + sp.term.jet_order() + 1];
                        let mut v = term_value(&sp.term, pts[i], jet);
                        if sp.mulpow > 0 {
                            v *= pts[i].powi(sp.mulpow as i32);
                        }
                        v
                    })
                    .collect();
                let close = |a: f64, b: f64| (a - b).abs() <= 1e-13 * a.abs().max(1.0);
                let p = if (0..7).all(|i| close(v[i + 7], v[i])) {
                    1.0
                } else if (0..7).all(|i| close(v[i + 7], -v[i])) {
                    -1.0
                } else {
                    return Ok(None);
                };
                pk.push(p);
            }
            par.push(pk);
        }
        // class parities, innermost first
        let mut cls_par: Vec<f64> = vec![];
        for k in (0..self.d).rev() {
            cls_par = self.classes[k]
                .iter()
                .map(|&(si, q)| par[k][si] * if k + 1 < self.d { cls_par[q] } else { 1.0 })
                .collect();
        }
        // level 0's rule: symmetric about 0
        let (mut u, mut w) = (vec![], vec![]);
        let c0 = vec![0.0; self.d];
        self.nodes(0, 0.0, &c0, &mut u, &mut w);
        let mut uw: Vec<(f64, f64)> = u.into_iter().zip(w).collect();
        uw.sort_by(|a, b| a.0.total_cmp(&b.0));
        let n = uw.len();
        let sym = (0..n).all(|i| {
            let (a, b) = (uw[i], uw[n - 1 - i]);
            (a.0 + b.0).abs() <= 1e-13 * a.0.abs().max(1.0) && (a.1 - b.1).abs() <= 1e-13 * a.1
        });
        Ok(if sym { Some(cls_par) } else { None })
    }
}

/// One outer node's contribution: `out[c] += w·vals[s_c]·inner(q_c)` per class c = (s_c, q_c),
/// times (1 + ε_c) on a folded level (`par` = the classes' parities ε, the node standing for ±u).
#[inline]
fn accumulate(
    out: &mut [f64],
    cls: &[(usize, usize)],
    par: Option<&[f64]>,
    wi: f64,
    vals: &[f64],
    inner: impl Fn(usize) -> f64,
) {
    match par {
        Some(par) => {
            for ((o, &(si, q)), &e) in out.iter_mut().zip(cls).zip(par) {
                *o += (1.0 + e) * wi * vals[si] * inner(q);
            }
        }
        None => {
            for (o, &(si, q)) in out.iter_mut().zip(cls) {
                *o += wi * vals[si] * inner(q);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{expect_block, QuadOpts, Term};
    use crate::activations::Builtin;

    const COV4: [f64; 16] = [
        1.3, 0.5, -0.4, 0.2, //
        0.5, 0.9, 0.1, 0.3, //
        -0.4, 0.1, 1.1, -0.6, //
        0.2, 0.3, -0.6, 0.8,
    ];

    #[test]
    fn smooth_activations_match_converged_split_rule() {
        // A 3-sample block (the 4-sample ones are checked in tests/test_fastexp.py on release
        // builds): the first three samples of COV4, with σσσ and σσ'σ'.
        let cov3: Vec<f64> = (0..3)
            .flat_map(|a| (0..3).map(move |b| COV4[a * 4 + b]))
            .collect();
        let its: Vec<Vec<Term>> = [0u32, 0b011, 0b110]
            .iter()
            .map(|m| (0..3).map(|i| Term::sigma((m >> i & 1) as u8)).collect())
            .collect();
        for act in [
            Builtin::Tanh,
            Builtin::Swish,
            Builtin::Softplus,
            Builtin::Sigmoid,
            Builtin::Sin,
        ] {
            let fast = expect_block(&act, &cov3, 3, &its, &QuadOpts::default()).unwrap();
            let reference = expect_block(
                &act,
                &cov3,
                3,
                &its,
                &QuadOpts {
                    order: 40,
                    quadrature_only: true,
                    ..Default::default()
                },
            )
            .unwrap();
            for (f, r) in fast.iter().zip(&reference) {
                assert!(
                    (f - r).abs() <= 1e-9 * r.abs().max(1e-3),
                    "{act:?}: {f} vs {r}"
                );
            }
        }
    }

    #[test]
    fn exact_for_polynomials_and_degenerate_blocks() {
        // Isserlis: ⟨z0 z1 z2 z3⟩ (monomial p = 1 has a closed form: call the rule directly).
        let spec = |t: Term| super::Spec { term: t, mulpow: 0 };
        let per: Vec<Vec<super::Spec>> = (0..4).map(|_| vec![spec(Term::sigma(0))]).collect();
        let v = super::nested_fast(
            &Builtin::Monomial(1),
            &[0.0; 4],
            &COV4,
            4,
            &per,
            &[vec![0; 4]],
            0.0,
        )
        .unwrap();
        let k = |a: usize, b: usize| COV4[a * 4 + b];
        let exact = k(0, 1) * k(2, 3) + k(0, 2) * k(1, 3) + k(0, 3) * k(1, 2);
        assert!((v[0] - exact).abs() < 1e-12, "{} {exact}", v[0]);
        // a repeated sample: the 3-D degenerate block equals the 2-D one
        let cov3 = [1.2, 1.2, 0.3, 1.2, 1.2, 0.3, 0.3, 0.3, 0.9];
        let a = expect_block(
            &Builtin::Tanh,
            &cov3,
            3,
            &[vec![Term::sigma(0), Term::sigma(0), Term::prod(&[0, 0])]],
            &QuadOpts::default(),
        )
        .unwrap();
        let b = expect_block(
            &Builtin::Tanh,
            &[1.2, 0.3, 0.3, 0.9],
            2,
            &[vec![Term::prod(&[0, 0]), Term::prod(&[0, 0])]],
            &QuadOpts::default(),
        )
        .unwrap();
        assert!((a[0] - b[0]).abs() < 1e-11, "{} {}", a[0], b[0]);
    }
}
