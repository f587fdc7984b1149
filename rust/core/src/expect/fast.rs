//! Error-controlled nested quadrature for smooth activations (no kink: tanh, sigmoid, swish,
//! softplus, sin, custom callables), the default rule of `method="auto"` where no closed form
//! exists.  The same whitened nested scheme as [`super::nested`] (pivoted Cholesky, level k
//! integrates u_k), with three changes, each measured in `benches/bench_fastexp.py`:
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
//!    it is tabulated lazily per block on a fixed grid of cells (anchored at 0, width w)
//!    by Chebyshev interpolation of degree [`CHEB_DEG`], each cell accepted only when its
//!    last two Chebyshev coefficients are below the tolerance (else the whole block is redone
//!    with cells of half the width).  This replaces n_{d-1} activation evaluations per outer
//!    node by one Clenshaw sum.
//! 3. **Pruning.**  Outer nodes whose weight product is below [`PRUNE`] are skipped (their
//!    contribution is below double precision for integrands of polynomial growth).
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

/// Levels whose scale σ_k exceeds this are split at the activation's centre.
pub const SPLIT_SCALE: f64 = 0.45;

/// The scale whose [`level_order`] a level with ladder cuts uses per piece.
pub const LADDER_PIECE_SCALE: f64 = 1.0;

/// Degree of the Chebyshev interpolant of the innermost level per cell.
pub const CHEB_DEG: usize = 14;

/// Outer nodes with a weight product below this are skipped.
pub const PRUNE: f64 = 1e-32;

/// Nodes per piece of a level with scale `sigma` (the largest slope of a sample along the
/// level's direction) for `digits` = -log10(tol): split levels (two half-range pieces) and
/// plain Gauss–Hermite levels (`n` nodes in all).
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

/// Lazily built Chebyshev cells of the innermost level: cell m covers [m w, (m+1) w).
struct Interp {
    w: f64,
    ns: usize,
    cells: rustc_hash::FxHashMap<i64, Box<[f64]>>,
    failed: bool,
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
                let mut v = term_value(&sp.term, z, jets);
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
    fn innermost_interp(
        &self,
        k: usize,
        ck: f64,
        buf: &mut Buf,
        ip: &mut Interp,
        out: &mut [f64],
    ) -> Result<(), RgError> {
        let ns = ip.ns;
        let m = (ck / ip.w).floor();
        let key = m as i64;
        if !ip.cells.contains_key(&key) {
            let p1 = CHEB_DEG + 1;
            let lo = m * ip.w;
            let mut g = vec![0.0; p1 * ns];
            let mut tmp = vec![0.0; ns];
            for j in 0..p1 {
                let x = (std::f64::consts::PI * (j as f64 + 0.5) / p1 as f64).cos();
                let c = lo + 0.5 * ip.w * (1.0 + x);
                self.innermost_direct(k, c, buf, &mut tmp)?;
                for si in 0..ns {
                    g[si * p1 + j] = tmp[si];
                }
            }
            let mut coef = vec![0.0; p1 * ns].into_boxed_slice();
            for si in 0..ns {
                let gs = &g[si * p1..(si + 1) * p1];
                let scale = gs.iter().fold(1.0f64, |a, v| a.max(v.abs()));
                for q in 0..p1 {
                    let mut acc = 0.0;
                    for (j, gj) in gs.iter().enumerate() {
                        acc += gj
                            * (std::f64::consts::PI * q as f64 * (j as f64 + 0.5) / p1 as f64)
                                .cos();
                    }
                    coef[si * p1 + q] = acc * 2.0 / p1 as f64;
                }
                coef[si * p1] *= 0.5;
                let tail = coef[si * p1 + p1 - 1].abs() + coef[si * p1 + p1 - 2].abs();
                if tail.is_nan() || tail > self.cell_tol * scale {
                    ip.failed = true;
                }
            }
            ip.cells.insert(key, coef);
        }
        let coef = &ip.cells[&key];
        let p1 = CHEB_DEG + 1;
        let x = 2.0 * (ck - m * ip.w) / ip.w - 1.0;
        for (si, o) in out[..ns].iter_mut().enumerate() {
            let a = &coef[si * p1..(si + 1) * p1];
            let (mut b1, mut b2) = (0.0, 0.0);
            for q in (1..p1).rev() {
                let b0 = a[q] + 2.0 * x * b1 - b2;
                b2 = b1;
                b1 = b0;
            }
            *o = a[0] + x * b1 - b2;
        }
        Ok(())
    }

    /// Level k: `out[q]` for every suffix class q of level k.
    fn level(
        &self,
        k: usize,
        bufs: &mut [Buf],
        ip: &mut Option<Interp>,
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
        let wmax = w.iter().fold(0.0f64, |a, &b| a.max(b));
        let mut inner = std::mem::take(&mut buf.inner);
        inner.resize(self.classes[k + 1].len(), 0.0);
        for (i, (&ui, &wi)) in u.iter().zip(&w).enumerate() {
            if wi < PRUNE * wmax {
                continue;
            }
            let next = &mut rest[0];
            for j in (k + 1)..self.d {
                next.c[j] = buf.c[j] + self.l[j * self.d + k] * ui;
            }
            crate::cancel::check()?;
            self.level(k + 1, rest, ip, &mut inner)?;
            let vals = &buf.vals[i * ns..(i + 1) * ns];
            for (o, &(si, q)) in out.iter_mut().zip(cls) {
                *o += wi * vals[si] * inner[q];
            }
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
        let mut n = level_order(sigma, digits, split);
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
            n = n.min(level_order(LADDER_PIECE_SCALE, digits, true));
        }
        levels.push(Level {
            split,
            gh: crate::quadrature::hermite(if split { 2 * n } else { n }),
            hr: crate::quadrature::half_hermite(n),
            gl: crate::quadrature::legendre(n),
        });
    }
    let fast = Fast {
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
    };
    let mean_p: Vec<f64> = perm.iter().map(|&p| mean[p]).collect();
    let run = |ip: &mut Option<Interp>| -> Result<Vec<f64>, RgError> {
        let mut bufs: Vec<Buf> = (0..d).map(|_| Buf::new(d)).collect();
        bufs[0].c.copy_from_slice(&mean_p);
        let mut out = vec![0.0; fast.classes[0].len()];
        fast.level(0, &mut bufs, ip, &mut out)?;
        Ok(top.iter().map(|&q| out[q]).collect())
    };
    if d >= 3 && fast.uses_act[d - 1] && fast.l[(d - 1) * d + d - 1] > 0.0 {
        let s = fast.l[(d - 1) * d + d - 1];
        let mut w = 0.5 + s;
        for _ in 0..6 {
            let mut ip = Some(Interp {
                w,
                ns: fast.specs[d - 1].len(),
                cells: Default::default(),
                failed: false,
            });
            let v = run(&mut ip)?;
            if !ip.as_ref().unwrap().failed {
                return Ok(v);
            }
            w *= 0.5;
        }
    }
    run(&mut None)
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
