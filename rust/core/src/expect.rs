//! Gaussian expectations ⟨Π_k g_k(z_k)⟩ for z ~ N(μ, K) over a block of d correlated samples.
//!
//! Each per-sample factor is a [`Term`]: the m-th (distributional) derivative of a product
//! `z^q Π_i σ^{(j_i)}(z)`.  The engine
//!
//! 1. splits each term into its regular part and, for kinked activations, the delta-function
//!    parts `Σ_j [P^{(j)}]_t δ^{(m-1-j)}(z - t)` from the jumps of the one-sided derivatives;
//! 2. integrates the regular parts by nested 1-D quadrature in the whitened coordinates of a
//!    pivoted Cholesky factor (`z_k = μ_k + Σ_{j≤k} L_kj u_j`), splitting each level's line at
//!    the activation's kink (Gauss–Legendre pieces) and using Gauss–Hermite elsewhere;
//!    rank-deficient directions are deterministic functions of earlier ones (exact
//!    marginalisation, no jitter);
//! 3. integrates delta parts exactly: `⟨Π_Δ δ^{(r)}(z_Δ - t) G(z_R)⟩ =
//!    p_Δ(t) E[G(z_R) H_r(Pz) | z_Δ = t]` with `H_r` the Hermite polynomial of the block
//!    precision `P` (from `(-∂)^r p = p H_r`), expanded in monomials of `z_R`.

use std::sync::Arc;

use rayon::prelude::*;

use crate::activations::{ActivationFn, Side};
use crate::linalg::{invert, pivoted_cholesky, submatrix, validate_covariance};
use crate::quadrature::Rule;
use crate::RgError;

/// Split points further than this many standard deviations from the mean are ignored
/// (their effect is below double precision).
const CUTOFF: f64 = 9.0;

/// One per-sample factor: `D^deriv [ z^zpow Π_i σ^{(sig[i])}(z) ]`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct Term {
    pub deriv: u8,
    pub zpow: u8,
    pub sig: Vec<u8>,
}

impl Term {
    /// The constant 1 (sample absent).
    pub fn one() -> Term {
        Term::default()
    }
    /// σ^{(m)}(z), distributional for kinked activations.
    pub fn sigma(m: u8) -> Term {
        Term {
            deriv: m,
            zpow: 0,
            sig: vec![0],
        }
    }
    /// Regular product Π σ^{(j)}(z).
    pub fn prod(sig: &[u8]) -> Term {
        let mut s = sig.to_vec();
        s.sort_unstable();
        Term {
            deriv: 0,
            zpow: 0,
            sig: s,
        }
    }
    /// `D^m` applied to the product Π σ^{(j)}.
    pub fn deriv_of(m: u8, sig: &[u8]) -> Term {
        let mut s = sig.to_vec();
        s.sort_unstable();
        Term {
            deriv: m,
            zpow: 0,
            sig: s,
        }
    }
    /// z^p.
    pub fn zpow(p: u8) -> Term {
        Term {
            deriv: 0,
            zpow: p,
            sig: vec![],
        }
    }
    pub fn is_one(&self) -> bool {
        self.deriv == 0 && self.zpow == 0 && self.sig.is_empty()
    }
    /// Highest σ derivative order needed to evaluate the regular part.
    pub fn jet_order(&self) -> usize {
        self.sig
            .iter()
            .map(|&j| j as usize + self.deriv as usize)
            .max()
            .unwrap_or(0)
    }
    /// Build the term for a product of factors σ^{(m_i)} and z^q at one sample.
    /// For kinked activations a factor carrying delta functions must stand alone.
    pub fn from_factors(act: &dyn ActivationFn, orders: &[u8], zpow: u8) -> Result<Term, RgError> {
        let first_sing = first_singular_order(act)?;
        let singular: Vec<u8> = orders
            .iter()
            .copied()
            .filter(|&m| (m as usize) >= first_sing)
            .collect();
        if singular.is_empty() {
            let mut t = Term::prod(orders);
            t.zpow = zpow;
            return Ok(t);
        }
        if orders.len() == 1 && zpow == 0 {
            return Ok(Term::sigma(orders[0]));
        }
        Err(RgError::value(format!(
            "the product of σ^({}) (a distribution for the kinked activation {}) with other factors at the same sample is not defined; \
             put it on its own sample or use a derivative-of-product term",
            singular[0],
            act.name()
        )))
    }
}

/// Smallest m such that σ^{(m)} contains a delta function (usize::MAX for smooth activations).
pub fn first_singular_order(act: &dyn ActivationFn) -> Result<usize, RgError> {
    let Some(t) = act.kink() else {
        return Ok(usize::MAX);
    };
    let order = act.max_order();
    let mut l = vec![0.0; order + 1];
    let mut r = vec![0.0; order + 1];
    act.jets(&[t], order, Side::Left, &mut l)?;
    act.jets(&[t], order, Side::Right, &mut r)?;
    for j in 0..=order {
        if (l[j] - r[j]).abs() > 1e-14 * (1.0 + l[j].abs()) {
            return Ok(j + 1);
        }
    }
    Ok(usize::MAX)
}

/// Largest accepted nodes per piece (Gauss–Hermite levels use twice this).
pub const MAX_ORDER_PER_PIECE: usize = 320;

/// Quadrature options.
#[derive(Clone, Copy, Debug, Default)]
pub struct QuadOpts {
    /// Nodes per piece and level; 0 selects [`default_order`] by the number of integrated levels.
    pub order: usize,
    /// Skip the closed forms of [`crate::closed_form`] (for benchmarks and cross-checks).
    pub quadrature_only: bool,
}

/// Default nodes per half-line piece for a nested rule over `dim` integrated directions
/// (a level split at a kink uses two half-range Gauss–Hermite pieces of this order; an
/// unsplit level uses Gauss–Hermite of twice this order).
pub fn default_order(dim: usize) -> usize {
    match dim {
        0 | 1 => 64,
        2 => 32,
        3 => 16,
        4 => 12,
        _ => 8,
    }
}

const INV_FACT: [f64; 13] = [
    1.0,
    1.0,
    0.5,
    1.0 / 6.0,
    1.0 / 24.0,
    1.0 / 120.0,
    1.0 / 720.0,
    1.0 / 5040.0,
    1.0 / 40320.0,
    1.0 / 362880.0,
    1.0 / 3628800.0,
    1.0 / 39916800.0,
    1.0 / 479001600.0,
];

/// The `m`-th derivative of `z^q Π σ^{(j_i)}` from the jet `jets[k] = σ^{(k)}(z)`.
fn term_value(term: &Term, z: f64, jets: &[f64]) -> f64 {
    let m = term.deriv as usize;
    if m == 0 {
        let mut v = if term.zpow == 0 {
            1.0
        } else {
            z.powi(term.zpow as i32)
        };
        for &j in &term.sig {
            v *= jets[j as usize];
        }
        return v;
    }
    // Truncated Taylor product (coefficients f^{(k)}/k!).
    fn mul(poly: &mut [f64; 13], m: usize, f: impl Fn(usize) -> f64) {
        let mut out = [0.0f64; 13];
        for a in 0..=m {
            if poly[a] == 0.0 {
                continue;
            }
            for b in 0..=(m - a) {
                out[a + b] += poly[a] * f(b);
            }
        }
        *poly = out;
    }
    let mut poly = [0.0f64; 13];
    poly[0] = 1.0;
    for &j in &term.sig {
        let j = j as usize;
        mul(&mut poly, m, |k| jets[j + k] * INV_FACT[k]);
    }
    if term.zpow > 0 {
        let q = term.zpow as i32;
        mul(&mut poly, m, |k| {
            if k as i32 > q {
                0.0
            } else {
                let binom: f64 =
                    (0..k).map(|i| (q - i as i32) as f64).product::<f64>() * INV_FACT[k];
                binom * z.powi(q - k as i32)
            }
        });
    }
    poly[m] / INV_FACT[m]
}

/// A regular per-sample evaluation: the regular part of `term` times `z^mulpow`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Spec {
    term: Term,
    mulpow: u8,
}

/// Delta parts `(r, coefficient)` of a term at the kink t: `Σ_j [P^{(j)}]_t δ^{(m-1-j)}(z-t)`.
fn delta_parts(act: &dyn ActivationFn, term: &Term) -> Result<Vec<(u8, f64)>, RgError> {
    let m = term.deriv as usize;
    let Some(t) = act.kink() else {
        return Ok(vec![]);
    };
    if m == 0 || term.sig.is_empty() {
        return Ok(vec![]);
    }
    let order = term.sig.iter().map(|&j| j as usize).max().unwrap_or(0) + m;
    if order > act.max_order() {
        return Err(missing_derivative(act, order));
    }
    let mut jl = vec![0.0; order + 1];
    let mut jr = vec![0.0; order + 1];
    act.jets(&[t], order, Side::Left, &mut jl)?;
    act.jets(&[t], order, Side::Right, &mut jr)?;
    let mut out = vec![];
    for j in 0..m {
        let tj = Term {
            deriv: j as u8,
            ..term.clone()
        };
        let jump = term_value(&tj, t, &jr) - term_value(&tj, t, &jl);
        if jump != 0.0 && jump.abs() > 1e-15 * (1.0 + term_value(&tj, t, &jr).abs()) {
            out.push(((m - 1 - j) as u8, jump));
        }
    }
    Ok(out)
}

fn missing_derivative(act: &dyn ActivationFn, order: usize) -> RgError {
    RgError::value(format!(
        "this computation needs derivative order {order} of activation '{}', which provides only up to {}; \
         supply more derivatives (finite differences are refused)",
        act.name(),
        act.max_order()
    ))
}

/// Nested whitened quadrature for many integrands over one Gaussian.
struct Nested<'a> {
    act: &'a dyn ActivationFn,
    d: usize,
    /// L in pivot order (row-major d×d).
    l: Vec<f64>,
    /// mean in pivot order.
    mean: Vec<f64>,
    /// distinct specs per level (pivot order).
    specs: Vec<Vec<Spec>>,
    /// integrand → spec index per level.
    integ: Vec<Vec<usize>>,
    jet_order: Vec<usize>,
    uses_act: Vec<bool>,
    splits: Vec<f64>,
    /// Slopes (left, right) of a piecewise-linear activation (closed-form innermost level).
    pwl: Option<(f64, f64)>,
    /// Per level k: later samples j whose kink is sharp as a function of u_k, as
    /// (j, L_jk, r_jk = (conditional std of z_j beyond level k) / |L_jk|).
    sharp: Vec<Vec<(usize, f64, f64)>>,
    /// Rules fetched once per pass: Gauss–Hermite (2·order), half-range Hermite and
    /// Gauss–Legendre (order).
    gh: Arc<Rule>,
    hr: Arc<Rule>,
    gl: Arc<Rule>,
}

struct LevelBuf {
    u: Vec<f64>,
    w: Vec<f64>,
    z: Vec<f64>,
    jets: Vec<f64>,
    vals: Vec<f64>,
    inner: Vec<f64>,
    c: Vec<f64>,
}

impl<'a> Nested<'a> {
    fn nodes(&self, k: usize, ck: f64, buf: &mut LevelBuf) {
        buf.u.clear();
        buf.w.clear();
        let s = self.l[k * self.d + k];
        if s <= 0.0 {
            buf.u.push(0.0);
            buf.w.push(1.0);
            return;
        }
        let mut cuts = [0.0f64; 8];
        let mut nc = 0;
        if self.uses_act[k] {
            for t in &self.splits {
                let u = (t - ck) / s;
                if u.abs() < CUTOFF - 1e-9 && nc < 8 {
                    cuts[nc] = u;
                    nc += 1;
                }
            }
        }
        // Windows around the projected kinks of later samples that are nearly determined by
        // u_k (highly correlated inputs): their smoothed kink has width ~r in u_k.
        for &(j, ljk, r) in &self.sharp[k] {
            for t in &self.splits {
                let centre = (t - buf.c[j]) / ljk;
                let window: &[f64] = if r == 0.0 { &[0.0] } else { &[-4.0, 4.0] };
                for w in window {
                    let u = centre + w * r;
                    if u.abs() < CUTOFF - 1e-9 && nc < 8 {
                        cuts[nc] = u;
                        nc += 1;
                    }
                }
            }
        }
        if nc == 0 {
            buf.u.extend_from_slice(&self.gh.nodes);
            buf.w.extend_from_slice(&self.gh.weights);
            return;
        }
        if nc < 8 && !cuts[..nc].iter().any(|c| c.abs() <= 1.5) {
            // keep the outer half-range pieces anchored near the bulk of the Gaussian
            cuts[nc] = 0.0;
            nc += 1;
        }
        let cuts = &mut cuts[..nc];
        cuts.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let hr = &self.hr;
        let c0 = cuts[0];
        for (v, w) in hr.nodes.iter().zip(&hr.weights) {
            buf.u.push(c0 - v);
            buf.w.push(w * (c0 * v - 0.5 * c0 * c0).exp());
        }
        if cuts.len() > 1 {
            let r = &self.gl;
            let inv_sqrt_2pi = 1.0 / (2.0 * std::f64::consts::PI).sqrt();
            for p in cuts.windows(2) {
                let (a, b) = (p[0], p[1]);
                let half = 0.5 * (b - a);
                let mid = 0.5 * (a + b);
                for (x, w) in r.nodes.iter().zip(&r.weights) {
                    let u = mid + half * x;
                    buf.u.push(u);
                    buf.w.push(w * half * (-0.5 * u * u).exp() * inv_sqrt_2pi);
                }
            }
        }
        let cm = *cuts.last().unwrap();
        for (v, w) in hr.nodes.iter().zip(&hr.weights) {
            buf.u.push(cm + v);
            buf.w.push(w * (-cm * v - 0.5 * cm * cm).exp());
        }
    }

    /// Innermost level in closed form for piecewise-linear activations: each spec is
    /// `coef_± z^p` on either side of 0, integrated with truncated Gaussian moments.
    fn level_closed_form(&self, k: usize, ck: f64, s: f64, (al, ar): (f64, f64), out: &mut [f64]) {
        let specs = &self.specs[k];
        let mut shapes = [(0.0f64, 0.0f64, 0usize); 16];
        let mut pmax = 0;
        for (si, sp) in specs.iter().enumerate() {
            let t = &sp.term;
            let (n0, n1) = (
                t.sig.iter().filter(|&&j| j == 0).count() as i32,
                t.sig.iter().filter(|&&j| j == 1).count() as i32,
            );
            let high = t.sig.iter().any(|&j| j >= 2);
            let p = n0 as usize + t.zpow as usize;
            let m = t.deriv as usize;
            let (mut cr, mut cl) = (ar.powi(n0 + n1), al.powi(n0 + n1));
            if high || m > p {
                cr = 0.0;
                cl = 0.0;
            }
            let falling: f64 = (0..m).map(|i| (p - i.min(p)) as f64).product();
            let power = p.saturating_sub(m) + sp.mulpow as usize;
            shapes[si] = (cr * falling, cl * falling, power);
            pmax = pmax.max(power);
        }
        // Truncated moments of u ~ N(0,1) above a = -c/s: M_j = ∫_a^∞ u^j φ(u) du.
        let a = -ck / s;
        let phi_a = (-0.5 * a * a).exp() / (2.0 * std::f64::consts::PI).sqrt();
        let mut upper = [0.0f64; 24];
        let mut full = [0.0f64; 24];
        upper[0] = crate::activations::norm_cdf(-a);
        full[0] = 1.0;
        if pmax >= 1 {
            upper[1] = phi_a;
        }
        for j in 2..=pmax {
            upper[j] = a.powi(j as i32 - 1) * phi_a + (j - 1) as f64 * upper[j - 2];
            full[j] = (j - 1) as f64 * full[j - 2];
        }
        // ∫ (c + s u)^p over u > a (right side, z > 0) and u < a (left side)
        let mut right = [0.0f64; 24];
        let mut left = [0.0f64; 24];
        for p in 0..=pmax {
            let (mut r, mut l) = (0.0, 0.0);
            let mut binom = 1.0;
            for j in 0..=p {
                let w = binom * ck.powi((p - j) as i32) * s.powi(j as i32);
                r += w * upper[j];
                l += w * (full[j] - upper[j]);
                binom = binom * (p - j) as f64 / (j + 1) as f64;
            }
            right[p] = r;
            left[p] = l;
        }
        for (ii, idx) in self.integ.iter().enumerate() {
            let (cr, cl, p) = shapes[idx[k]];
            out[ii] = cr * right[p] + cl * left[p];
        }
    }

    fn level(&self, k: usize, bufs: &mut [LevelBuf], out: &mut [f64]) -> Result<(), RgError> {
        let (buf, rest) = bufs.split_first_mut().unwrap();
        let ck = buf.c[k];
        if k + 1 == self.d && self.uses_act[k] {
            let s = self.l[k * self.d + k];
            if let Some(slopes) = self.pwl {
                if s > 0.0
                    && self.specs[k].len() <= 16
                    && self.specs[k]
                        .iter()
                        .all(|sp| sp.term.zpow < 8 && sp.mulpow < 8)
                {
                    self.level_closed_form(k, ck, s, slopes, out);
                    return Ok(());
                }
            }
        }
        self.nodes(k, ck, buf);
        let s = self.l[k * self.d + k];
        let nn = buf.u.len();
        buf.z.clear();
        buf.z.extend(buf.u.iter().map(|u| ck + s * u));
        let jo = self.jet_order[k];
        let specs = &self.specs[k];
        let ns = specs.len();
        buf.vals.resize(nn * ns, 0.0);
        if self.uses_act[k] {
            buf.jets.resize(nn * (jo + 1), 0.0);
            self.act.jets(&buf.z, jo, Side::Auto, &mut buf.jets)?;
            for i in 0..nn {
                let jets = &buf.jets[i * (jo + 1)..(i + 1) * (jo + 1)];
                for (si, sp) in specs.iter().enumerate() {
                    let mut v = term_value(&sp.term, buf.z[i], jets);
                    if sp.mulpow > 0 {
                        v *= buf.z[i].powi(sp.mulpow as i32);
                    }
                    buf.vals[i * ns + si] = v;
                }
            }
        } else {
            for i in 0..nn {
                for (si, sp) in specs.iter().enumerate() {
                    let mut v = term_value(&sp.term, buf.z[i], &[]);
                    if sp.mulpow > 0 {
                        v *= buf.z[i].powi(sp.mulpow as i32);
                    }
                    buf.vals[i * ns + si] = v;
                }
            }
        }
        out.iter_mut().for_each(|v| *v = 0.0);
        if k + 1 == self.d {
            // innermost level: sums per distinct spec, then scatter to integrands
            let mut sums = std::mem::take(&mut buf.inner);
            sums.clear();
            sums.resize(ns, 0.0);
            for i in 0..nn {
                let w = buf.w[i];
                for (si, v) in buf.vals[i * ns..(i + 1) * ns].iter().enumerate() {
                    sums[si] += w * v;
                }
            }
            for (ii, idx) in self.integ.iter().enumerate() {
                out[ii] = sums[idx[k]];
            }
            buf.inner = sums;
            return Ok(());
        }
        for i in 0..nn {
            let w = buf.w[i];
            let vals = &buf.vals[i * ns..(i + 1) * ns];
            {
                let u = buf.u[i];
                let next = &mut rest[0];
                for j in (k + 1)..self.d {
                    next.c[j] = buf.c[j] + self.l[j * self.d + k] * u;
                }
                let mut inner = std::mem::take(&mut buf.inner);
                self.level(k + 1, rest, &mut inner)?;
                for (ii, idx) in self.integ.iter().enumerate() {
                    out[ii] += w * vals[idx[k]] * inner[ii];
                }
                buf.inner = inner;
            }
        }
        Ok(())
    }
}

/// Expectations of products of regular specs over N(mean, cov) (cov validated PSD).
fn nested(
    act: &dyn ActivationFn,
    mean: &[f64],
    cov: &[f64],
    d: usize,
    per_sample: &[Vec<Spec>],
    integ: &[Vec<usize>],
    opts: &QuadOpts,
) -> Result<Vec<f64>, RgError> {
    let ni = integ.len();
    if d == 0 {
        return Ok(vec![1.0; ni]);
    }
    let pc = pivoted_cholesky(cov, d);
    let perm = &pc.perm;
    let order = if opts.order > 0 {
        opts.order.min(MAX_ORDER_PER_PIECE)
    } else {
        default_order(pc.rank)
    };
    let specs: Vec<Vec<Spec>> = perm.iter().map(|&p| per_sample[p].clone()).collect();
    let integ_p: Vec<Vec<usize>> = integ
        .iter()
        .map(|row| perm.iter().map(|&p| row[p]).collect())
        .collect();
    let jet_order: Vec<usize> = specs
        .iter()
        .map(|s| s.iter().map(|sp| sp.term.jet_order()).max().unwrap_or(0))
        .collect();
    let uses_act: Vec<bool> = specs
        .iter()
        .map(|s| s.iter().any(|sp| !sp.term.sig.is_empty()))
        .collect();
    for (k, &jo) in jet_order.iter().enumerate() {
        if uses_act[k] && jo > act.max_order() {
            return Err(missing_derivative(act, jo));
        }
    }
    let splits = act.split_points();
    let mut sharp: Vec<Vec<(usize, f64, f64)>> = vec![vec![]; d];
    if !splits.is_empty() {
        for (k, sharp_k) in sharp.iter_mut().enumerate() {
            for (j, &uses) in uses_act.iter().enumerate().skip(k + 1) {
                let ljk = pc.l[j * d + k];
                if !uses || ljk == 0.0 {
                    continue;
                }
                let rest: f64 = ((k + 1)..=j)
                    .map(|i| pc.l[j * d + i].powi(2))
                    .sum::<f64>()
                    .sqrt();
                let r = rest / ljk.abs();
                if r < 0.5 {
                    sharp_k.push((j, ljk, r));
                }
            }
        }
    }
    let nest = Nested {
        act,
        sharp,
        d,
        l: pc.l.clone(),
        mean: perm.iter().map(|&p| mean[p]).collect(),
        specs,
        integ: integ_p,
        jet_order,
        uses_act,
        splits,
        pwl: act.piecewise_linear(),
        gh: crate::quadrature::hermite(2 * order),
        hr: crate::quadrature::half_hermite(order),
        gl: crate::quadrature::legendre(order),
    };
    let mut bufs: Vec<LevelBuf> = (0..d)
        .map(|_| LevelBuf {
            u: vec![],
            w: vec![],
            z: vec![],
            jets: vec![],
            vals: vec![],
            inner: vec![0.0; ni],
            c: vec![0.0; d],
        })
        .collect();
    bufs[0].c.copy_from_slice(&nest.mean);
    let mut out = vec![0.0; ni];
    nest.level(0, &mut bufs, &mut out)?;
    Ok(out)
}

/// Sparse polynomial over up to 8 variables: (exponents, coefficient).
type Poly = Vec<([u8; 8], f64)>;

fn poly_add(p: &mut Poly, e: [u8; 8], c: f64) {
    if c == 0.0 {
        return;
    }
    if let Some(t) = p.iter_mut().find(|t| t.0 == e) {
        t.1 += c;
    } else {
        p.push((e, c));
    }
}

fn poly_mul(a: &Poly, b: &Poly) -> Poly {
    let mut out = Poly::new();
    for (ea, ca) in a {
        for (eb, cb) in b {
            let mut e = [0u8; 8];
            for i in 0..8 {
                e[i] = ea[i] + eb[i];
            }
            poly_add(&mut out, e, ca * cb);
        }
    }
    out
}

/// Hermite polynomial H with `(-∂_{k1})…(-∂_{ks}) p = p·H(y)`, `y = P z`, in the variables y
/// (one per delta sample); `pdd` is the precision restricted to the delta samples.
fn hermite_poly(dirs: &[usize], pdd: &[f64], nd: usize) -> Poly {
    let mut h: Poly = vec![([0u8; 8], 1.0)];
    for &k in dirs {
        let mut next = Poly::new();
        for (e, c) in &h {
            // y_k * term
            let mut e1 = *e;
            e1[k] += 1;
            poly_add(&mut next, e1, *c);
            // - Σ_j P_kj ∂/∂y_j term
            for j in 0..nd {
                if e[j] > 0 {
                    let mut e2 = *e;
                    e2[j] -= 1;
                    poly_add(&mut next, e2, -c * e[j] as f64 * pdd[k * nd + j]);
                }
            }
        }
        h = next;
    }
    h
}

/// Evaluate expectations of `integrands` (each a Term per sample) over z ~ N(0, cov).
pub fn expect_block(
    act: &dyn ActivationFn,
    cov: &[f64],
    d: usize,
    integrands: &[Vec<Term>],
    opts: &QuadOpts,
) -> Result<Vec<f64>, RgError> {
    validate_covariance(cov, d)?;
    for (i, it) in integrands.iter().enumerate() {
        if it.len() != d {
            return Err(RgError::value(format!(
                "integrand {i} has {} factors for a {d}-sample block",
                it.len()
            )));
        }
    }
    if !opts.quadrature_only {
        if let Some(v) = crate::closed_form::expect_block(act, cov, d, integrands) {
            return Ok(v);
        }
    }
    let zero_mean = vec![0.0; d];
    let mut result = vec![0.0; integrands.len()];

    // Expand into delta patterns.
    // sub-terms: (integrand index, coefficient, per-sample: Ok(term) regular | Err((r, term)) delta)
    struct Sub {
        target: usize,
        coef: f64,
        delta: Vec<Option<u8>>,
    }
    let mut regular_specs: Vec<Vec<Spec>> = vec![vec![]; d];
    let mut regular_integ: Vec<Vec<usize>> = vec![];
    let mut regular_target: Vec<usize> = vec![];
    let mut delta_subs: Vec<(Sub, Vec<Term>)> = vec![];
    let intern = |specs: &mut Vec<Spec>, s: Spec| -> usize {
        if let Some(p) = specs.iter().position(|x| *x == s) {
            p
        } else {
            specs.push(s);
            specs.len() - 1
        }
    };
    for (i, it) in integrands.iter().enumerate() {
        // regular part of every factor
        let idx: Vec<usize> = (0..d)
            .map(|k| {
                intern(
                    &mut regular_specs[k],
                    Spec {
                        term: it[k].clone(),
                        mulpow: 0,
                    },
                )
            })
            .collect();
        regular_integ.push(idx);
        regular_target.push(i);
        // delta parts: every non-empty subset choice
        let parts: Vec<Vec<(u8, f64)>> = it
            .iter()
            .map(|t| delta_parts(act, t))
            .collect::<Result<_, _>>()?;
        if parts.iter().all(|p| p.is_empty()) {
            continue;
        }
        // enumerate choices: for each sample, None (regular) or one of its delta parts
        let mut choices: Vec<(Vec<Option<u8>>, f64)> = vec![(vec![], 1.0)];
        for p in &parts {
            let mut next = vec![];
            for (ch, c) in &choices {
                let mut a = ch.clone();
                a.push(None);
                next.push((a, *c));
                for &(r, coef) in p {
                    let mut b = ch.clone();
                    b.push(Some(r));
                    next.push((b, c * coef));
                }
            }
            choices = next;
        }
        for (ch, c) in choices {
            if ch.iter().all(|x| x.is_none()) {
                continue;
            }
            delta_subs.push((
                Sub {
                    target: i,
                    coef: c,
                    delta: ch,
                },
                it.clone(),
            ));
        }
    }
    let vals = nested(
        act,
        &zero_mean,
        cov,
        d,
        &regular_specs,
        &regular_integ,
        opts,
    )?;
    for (v, &t) in vals.iter().zip(&regular_target) {
        result[t] += v;
    }
    if delta_subs.is_empty() {
        return Ok(result);
    }
    let kink = act.kink().unwrap_or(0.0);
    let (prec, _) = invert(cov, d).ok_or_else(|| {
        RgError::value(
            "a distributional derivative (delta function at the kink) meets a singular covariance block; \
             the expectation is not defined (inputs are linearly dependent or duplicated)",
        )
    })?;
    // group by delta pattern
    let mut patterns: Vec<Vec<Option<u8>>> =
        delta_subs.iter().map(|(s, _)| s.delta.clone()).collect();
    patterns.sort();
    patterns.dedup();
    for pat in patterns {
        let dset: Vec<usize> = (0..d).filter(|&k| pat[k].is_some()).collect();
        let rset: Vec<usize> = (0..d).filter(|&k| pat[k].is_none()).collect();
        let nd = dset.len();
        let nr = rset.len();
        let kdd = submatrix(cov, d, &dset, &dset);
        let (kdd_inv, kdd_det) =
            invert(&kdd, nd).ok_or_else(|| RgError::value("singular delta block"))?;
        if kdd_det <= 0.0 {
            return Err(RgError::value("delta block is not positive definite"));
        }
        let t = vec![kink; nd];
        // density p_Δ(t)
        let quad: f64 = (0..nd)
            .map(|a| {
                (0..nd)
                    .map(|b| t[a] * kdd_inv[a * nd + b] * t[b])
                    .sum::<f64>()
            })
            .sum();
        let dens =
            (-0.5 * quad).exp() / ((2.0 * std::f64::consts::PI).powi(nd as i32) * kdd_det).sqrt();
        // conditional of R given z_Δ = t
        let krd = submatrix(cov, d, &rset, &dset);
        let krr = submatrix(cov, d, &rset, &rset);
        let mut a_mat = vec![0.0; nr * nd]; // K_RΔ K_ΔΔ^{-1}
        for r in 0..nr {
            for b in 0..nd {
                a_mat[r * nd + b] = (0..nd).map(|c| krd[r * nd + c] * kdd_inv[c * nd + b]).sum();
            }
        }
        let cmean: Vec<f64> = (0..nr)
            .map(|r| (0..nd).map(|b| a_mat[r * nd + b] * t[b]).sum())
            .collect();
        let mut ccov = krr.clone();
        for r1 in 0..nr {
            for r2 in 0..nr {
                ccov[r1 * nr + r2] -= (0..nd)
                    .map(|b| a_mat[r1 * nd + b] * krd[r2 * nd + b])
                    .sum::<f64>();
            }
        }
        for r1 in 0..nr {
            for r2 in 0..r1 {
                let v = 0.5 * (ccov[r1 * nr + r2] + ccov[r2 * nr + r1]);
                ccov[r1 * nr + r2] = v;
                ccov[r2 * nr + r1] = v;
            }
            ccov[r1 * nr + r1] = ccov[r1 * nr + r1].max(0.0);
        }
        // Hermite polynomial in y_Δ, then substitute y_a = P_aΔ t + Σ_r P_ar z_r.
        let mut dirs = vec![];
        for (a, &k) in dset.iter().enumerate() {
            for _ in 0..pat[k].unwrap() {
                dirs.push(a);
            }
        }
        let pdd = submatrix(&prec, d, &dset, &dset);
        let hy = hermite_poly(&dirs, &pdd, nd);
        let mut hz = Poly::new();
        for (e, c) in &hy {
            let mut term: Poly = vec![([0u8; 8], *c)];
            for a in 0..nd {
                if e[a] == 0 {
                    continue;
                }
                let ka = dset[a];
                let mut lin: Poly = vec![];
                let a0: f64 = dset
                    .iter()
                    .zip(&t)
                    .map(|(&kb, tb)| prec[ka * d + kb] * tb)
                    .sum();
                poly_add(&mut lin, [0u8; 8], a0);
                for (ri, &kr) in rset.iter().enumerate() {
                    let mut ee = [0u8; 8];
                    ee[ri] = 1;
                    poly_add(&mut lin, ee, prec[ka * d + kr]);
                }
                for _ in 0..e[a] {
                    term = poly_mul(&term, &lin);
                }
            }
            for (e2, c2) in term {
                poly_add(&mut hz, e2, c2);
            }
        }
        // integrands over R
        let mut specs: Vec<Vec<Spec>> = vec![vec![]; nr];
        let mut integ: Vec<Vec<usize>> = vec![];
        let mut targets: Vec<(usize, f64)> = vec![];
        for (sub, terms) in delta_subs.iter().filter(|(s, _)| s.delta == pat) {
            for (e, c) in &hz {
                let idx: Vec<usize> = rset
                    .iter()
                    .enumerate()
                    .map(|(ri, &k)| {
                        intern(
                            &mut specs[ri],
                            Spec {
                                term: terms[k].clone(),
                                mulpow: e[ri],
                            },
                        )
                    })
                    .collect();
                integ.push(idx);
                targets.push((sub.target, sub.coef * c * dens));
            }
        }
        let vals = if nr == 0 {
            vec![1.0; integ.len()]
        } else {
            nested(act, &cmean, &ccov, nr, &specs, &integ, opts)?
        };
        for (v, (t, c)) in vals.iter().zip(&targets) {
            result[*t] += c * v;
        }
    }
    Ok(result)
}

/// Expectations for every pair of inputs of an N×N kernel `k`, in parallel: for a < b the
/// two-sample values `⟨σ^{(i)}_a σ^{(j)}_b⟩` for each `(i, j)` in `offd`; for a = b the
/// single-sample values of the terms `diag`.  Entry `a*n + b` (a ≤ b) holds the values in
/// that order; entries with a > b are empty.
pub fn pair_values(
    act: &dyn ActivationFn,
    k: &[f64],
    n: usize,
    offd: &[(u8, u8)],
    diag: &[Term],
    opts: &QuadOpts,
) -> Result<Vec<Vec<f64>>, RgError> {
    let pairs: Vec<(usize, usize)> = (0..n).flat_map(|a| (a..n).map(move |b| (a, b))).collect();
    let offd_its: Vec<Vec<Term>> = offd
        .iter()
        .map(|&(i, j)| vec![Term::sigma(i), Term::sigma(j)])
        .collect();
    let diag_its: Vec<Vec<Term>> = diag.iter().map(|t| vec![t.clone()]).collect();
    let results: Vec<Vec<f64>> = pairs
        .par_iter()
        .map(|&(a, b)| {
            if a == b {
                expect_block(act, &[k[a * n + a]], 1, &diag_its, opts)
                    .map_err(|e| e.context(&format!("single-input expectations for input {a}")))
            } else {
                let cov = [k[a * n + a], k[a * n + b], k[b * n + a], k[b * n + b]];
                expect_block(act, &cov, 2, &offd_its, opts)
                    .map_err(|e| e.context(&format!("pair expectations for inputs ({a}, {b})")))
            }
        })
        .collect::<Result<_, _>>()?;
    let mut out = vec![vec![]; n * n];
    for ((a, b), v) in pairs.into_iter().zip(results) {
        out[a * n + b] = v;
    }
    Ok(out)
}

/// Batched [`expect_block`] over `covs` (B blocks of d×d, row-major), in parallel.
/// Returns B × n_integrands values.
pub fn expect_batch(
    act: &dyn ActivationFn,
    covs: &[f64],
    d: usize,
    integrands: &[Vec<Term>],
    opts: &QuadOpts,
) -> Result<Vec<f64>, RgError> {
    let dd = d * d;
    if dd == 0 || !covs.len().is_multiple_of(dd) {
        return Err(RgError::value("covariance batch has the wrong size"));
    }
    let nb = covs.len() / dd;
    let ni = integrands.len();
    let mut out = vec![0.0; nb * ni];
    out.par_chunks_mut(ni.max(1))
        .zip(covs.par_chunks(dd))
        .enumerate()
        .try_for_each(|(b, (o, c))| -> Result<(), RgError> {
            let v = expect_block(act, c, d, integrands, opts)
                .map_err(|e| e.context(&format!("block {b}")))?;
            o.copy_from_slice(&v);
            Ok(())
        })?;
    Ok(out)
}

/// Adaptive order: raise the order by 3/2 until two successive values agree to
/// `tol·max(1,|v|)` (every integrand). Returns (values, error estimate, order used); a block
/// done in closed form ([`crate::closed_form`]) returns error 0 and order 0.
pub fn expect_adaptive(
    act: &dyn ActivationFn,
    cov: &[f64],
    d: usize,
    integrands: &[Vec<Term>],
    tol: f64,
    max_order: usize,
    quadrature_only: bool,
) -> Result<(Vec<f64>, f64, usize), RgError> {
    validate_covariance(cov, d)?;
    if !quadrature_only {
        if let Some(v) = crate::closed_form::expect_block(act, cov, d, integrands) {
            return Ok((v, 0.0, 0));
        }
    }
    let rank = pivoted_cholesky(cov, d).rank;
    let mut n = (default_order(rank) / 2).clamp(4, max_order.clamp(4, MAX_ORDER_PER_PIECE));
    let mut prev = expect_block(
        act,
        cov,
        d,
        integrands,
        &QuadOpts {
            order: n,
            quadrature_only: true,
        },
    )?;
    loop {
        let next_n = (n * 3).div_ceil(2);
        let cur = expect_block(
            act,
            cov,
            d,
            integrands,
            &QuadOpts {
                order: next_n,
                quadrature_only: true,
            },
        )?;
        let err = prev
            .iter()
            .zip(&cur)
            .map(|(a, b)| (a - b).abs() / b.abs().max(1.0))
            .fold(0.0, f64::max);
        if err <= tol || next_n >= max_order.min(MAX_ORDER_PER_PIECE) {
            return Ok((cur, err, next_n));
        }
        prev = cur;
        n = next_n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::activations::Builtin;
    use std::f64::consts::PI;

    fn ev(act: Builtin, cov: &[f64], d: usize, its: &[Vec<Term>]) -> Vec<f64> {
        expect_block(&act, cov, d, its, &QuadOpts::default()).unwrap()
    }

    #[test]
    fn relu_arccos_kernels() {
        let (k11, k22, k12): (f64, f64, f64) = (1.3, 0.7, 0.55);
        let cov = [k11, k12, k12, k22];
        let c = k12 / (k11 * k22).sqrt();
        let psi = c.acos();
        let v = ev(
            Builtin::Relu,
            &cov,
            2,
            &[
                vec![Term::sigma(0), Term::sigma(0)],
                vec![Term::sigma(1), Term::sigma(1)],
                vec![Term::sigma(2), Term::sigma(0)],
            ],
        );
        let exact0 = (k11 * k22).sqrt() / (2.0 * PI) * (psi.sin() + (PI - psi) * c);
        let exact1 = 0.5 - psi / (2.0 * PI);
        let exact2 = (k11 * k22 - k12 * k12).sqrt() / (2.0 * PI * k11);
        assert!((v[0] - exact0).abs() < 1e-12, "{} {}", v[0], exact0);
        assert!((v[1] - exact1).abs() < 1e-12, "{} {}", v[1], exact1);
        assert!((v[2] - exact2).abs() < 1e-12, "{} {}", v[2], exact2);
    }

    #[test]
    fn erf_arcsine_kernel() {
        let (k11, k22, k12): (f64, f64, f64) = (0.9, 2.1, -0.6);
        let v = ev(
            Builtin::Erf,
            &[k11, k12, k12, k22],
            2,
            &[vec![Term::sigma(0), Term::sigma(0)]],
        );
        let exact = 2.0 / PI * (2.0 * k12 / ((1.0 + 2.0 * k11) * (1.0 + 2.0 * k22)).sqrt()).asin();
        assert!((v[0] - exact).abs() < 1e-12, "{} {exact}", v[0]);
    }

    #[test]
    fn isserlis_four_point() {
        let cov = [
            1.0, 0.3, 0.2, 0.1, //
            0.3, 1.5, 0.4, 0.2, //
            0.2, 0.4, 0.8, 0.3, //
            0.1, 0.2, 0.3, 1.2,
        ];
        let v = ev(Builtin::Linear, &cov, 4, &[vec![Term::sigma(0); 4]]);
        let k = |a: usize, b: usize| cov[a * 4 + b];
        let exact = k(0, 1) * k(2, 3) + k(0, 2) * k(1, 3) + k(0, 3) * k(1, 2);
        assert!((v[0] - exact).abs() < 1e-13);
    }

    #[test]
    fn degenerate_duplicates_marginalise() {
        // z2 = z1 exactly: ⟨σ(z1)²σ(z3)²⟩ as 3-D degenerate = 2-D.
        let cov3 = [1.2, 1.2, 0.3, 1.2, 1.2, 0.3, 0.3, 0.3, 0.9];
        let cov2 = [1.2, 0.3, 0.3, 0.9];
        let a = ev(
            Builtin::Tanh,
            &cov3,
            3,
            &[vec![Term::sigma(0), Term::sigma(0), Term::prod(&[0, 0])]],
        );
        let b = ev(
            Builtin::Tanh,
            &cov2,
            2,
            &[vec![Term::prod(&[0, 0]), Term::prod(&[0, 0])]],
        );
        assert!((a[0] - b[0]).abs() < 1e-12, "{} {}", a[0], b[0]);
        // zero variance sample
        let cov_z = [1.0, 0.0, 0.0, 0.0];
        let c = ev(
            Builtin::Gelu,
            &cov_z,
            2,
            &[vec![Term::sigma(0), Term::sigma(1)]],
        );
        let g = ev(Builtin::Gelu, &[1.0], 1, &[vec![Term::sigma(0)]]);
        assert!((c[0] - 0.5 * g[0]).abs() < 1e-14);
    }

    #[test]
    fn stein_identity_relu_deltas() {
        // ⟨z f(z)⟩ = K ⟨f'(z)⟩ and ⟨σ''(z1) σ(z2)⟩ via deltas against (z-derivative) identity:
        // ⟨σ(z1)σ(z2)(z1 z2 - K12)⟩ = Σ K K ⟨∂∂ σσ⟩ (Price) checked for a 2x2 block.
        let (k11, k22, k12) = (1.1, 0.8, 0.35);
        let cov = [k11, k12, k12, k22];
        for act in [
            Builtin::Relu,
            Builtin::LeakyRelu(0.3),
            Builtin::Elu(0.5),
            Builtin::Gelu,
        ] {
            let v = ev(
                act.clone(),
                &cov,
                2,
                &[
                    vec![
                        Term {
                            deriv: 0,
                            zpow: 1,
                            sig: vec![0],
                        },
                        Term::sigma(0),
                    ],
                    vec![Term::sigma(1), Term::sigma(0)],
                    vec![Term::sigma(0), Term::sigma(1)],
                ],
            );
            // ⟨z1 σ1 σ2⟩ = K11⟨σ1'σ2⟩ + K12⟨σ1σ2'⟩
            let rhs = k11 * v[1] + k12 * v[2];
            assert!((v[0] - rhs).abs() < 1e-10, "{:?}: {} {}", act, v[0], rhs);
            // Second derivative identity: d/dK12 ⟨σσ⟩ = ⟨σ'σ'⟩, and ⟨(z1z2-K12)σσ⟩ expressed by derivatives.
            let w = ev(
                act.clone(),
                &cov,
                2,
                &[
                    vec![
                        Term {
                            deriv: 0,
                            zpow: 1,
                            sig: vec![0],
                        },
                        Term {
                            deriv: 0,
                            zpow: 1,
                            sig: vec![0],
                        },
                    ],
                    vec![Term::sigma(0), Term::sigma(0)],
                    vec![Term::sigma(2), Term::sigma(0)],
                    vec![Term::sigma(0), Term::sigma(2)],
                    vec![Term::sigma(1), Term::sigma(1)],
                ],
            );
            let lhs = w[0] - k12 * w[1];
            let rhs = k11 * k12 * w[2] + k22 * k12 * w[3] + (k11 * k22 + k12 * k12) * w[4];
            assert!((lhs - rhs).abs() < 1e-9, "{:?}: {lhs} {rhs}", act);
        }
    }

    #[test]
    fn fourth_derivative_of_square_relu() {
        // D^4[σ²] for relu = 2 δ'(z): ⟨·⟩ = 0 at zero mean; D^2[σ²] = 2Θ(z) → ⟨·⟩ = 1.
        let v = ev(
            Builtin::Relu,
            &[1.7],
            1,
            &[
                vec![Term::deriv_of(4, &[0, 0])],
                vec![Term::deriv_of(2, &[0, 0])],
            ],
        );
        assert!(v[0].abs() < 1e-14);
        assert!((v[1] - 1.0).abs() < 1e-13);
        // D^4[σ'σ'] (=δ''' relu) at 2 samples vs finite-difference-free check: ⟨σ'''(z1)σ'(z2)⟩ analytic
        // = ∂²/∂K12² ⟨σ'σ'⟩ with ⟨σ'σ'⟩ = 1/2 - acos(ρ)/(2π)
        let (k11, k22): (f64, f64) = (1.0, 1.0);
        let f = |k12: f64| 0.5 - (k12 / (k11 * k22).sqrt()).acos() / (2.0 * PI);
        let k12 = 0.4;
        let h = 1e-3;
        let d2 = (f(k12 + h) - 2.0 * f(k12) + f(k12 - h)) / (h * h);
        let v = ev(
            Builtin::Relu,
            &[k11, k12, k12, k22],
            2,
            &[vec![Term::sigma(2), Term::sigma(2)]],
        );
        let d1 = (f(k12 + h) - f(k12 - h)) / (2.0 * h);
        assert!((v[0] - d1).abs() < 1e-6, "{} {}", v[0], d1);
        let v3 = ev(
            Builtin::Relu,
            &[k11, k12, k12, k22],
            2,
            &[vec![Term::sigma(3), Term::sigma(3)]],
        );
        assert!((v3[0] - d2).abs() < 1e-4, "{} {}", v3[0], d2);
    }
}
