//! Nested whitened quadrature: many integrands (products of regular per-sample
//! [`Spec`]s) over one Gaussian N(μ, K), by 1-D rules level by level in the coordinates of a
//! pivoted Cholesky factor (`z_k = μ_k + Σ_{j≤k} L_kj u_j`).  Each level's line is split at
//! the activation's kink and around the projected kinks of nearly determined later samples
//! (half-range Gauss–Hermite outside, Gauss–Legendre between cuts); an unsplit level uses
//! Gauss–Hermite.  Rank-deficient directions are deterministic functions of earlier ones
//! (exact marginalisation, no jitter).  Uses the term algebra only.

use std::sync::Arc;

use super::terms::{missing_derivative, term_value, Spec};
use crate::activations::{ActivationFn, Side};
use crate::linalg::pivoted_cholesky;
use crate::quadrature::Rule;
use crate::RgError;

/// Split points further than this many standard deviations from the mean are ignored
/// (their effect is below double precision).
const CUTOFF: f64 = 9.0;

/// A level whose slope (own, or of a nearly determined later sample) exceeds this resolves
/// the transition region of a smooth or saturating activation (width O(1) in z, O(1/slope) in
/// the level's coordinate) by a ladder of extra cuts at `t ± LADDER[i]` (activation units)
/// around each split point t: at large variance a fixed Gauss–Hermite grid scaled by √K would
/// otherwise step over it (tanh ⟨σ'⟩ at K = 1e8 gave 0).  Below it the rules are unchanged.
pub const LADDER_SCALE: f64 = 4.0;

/// Offsets (in z) of the ladder cuts on each side of a split point: geometric, out to where
/// tanh, sigmoid, swish, softplus and elu are polynomial to double precision (e^{-64}).
pub const LADDER: [f64; 7] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0];

/// Capacity of the cut list of one level.
pub const MAX_CUTS: usize = 64;

/// Largest accepted nodes per piece (Gauss–Hermite levels use twice this).
pub const MAX_ORDER_PER_PIECE: usize = 320;

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
    /// Per level: a sample of variance exactly 0 at mean 0 in an unconditional expectation (a
    /// zero input at C_b = 0): the network evaluates σ^{(j)}(0) itself, taken with its
    /// right-hand value (the convention of the samplers and `rgflow.activations`), not the
    /// mean of the one-sided values that a conditioned delta part's limit takes.
    right_at_kink: Vec<bool>,
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

/// Cut points of one level's line, in its standardised coordinate: the activation's split points
/// (when the level evaluates it) and windows around the projected kinks of later samples nearly
/// determined by this one (highly correlated inputs: their smoothed kink has width ~r), within
/// the cutoff; with `ladder` (activations that are not piecewise linear), a slope above
/// [`LADDER_SCALE`] adds the [`LADDER`] cuts around each of those centres; when there are any
/// cuts, an anchor at 0 unless a cut lies within ±1.5 (it keeps the outer half-range pieces
/// near the bulk of the Gaussian).  Sorted; `nc == 0`: no cut (plain rule).
pub(super) fn level_cuts(
    splits: &[f64],
    uses_act: bool,
    ck: f64,
    s: f64,
    sharp: &[(usize, f64, f64)],
    c: &[f64],
    ladder: bool,
) -> ([f64; MAX_CUTS], usize) {
    let mut cuts = [0.0f64; MAX_CUTS];
    let mut nc = 0;
    let mut push = |u: f64| {
        if u.abs() < CUTOFF - 1e-9 && nc < MAX_CUTS {
            cuts[nc] = u;
            nc += 1;
        }
    };
    if uses_act {
        for t in splits {
            push((t - ck) / s);
        }
    }
    for &(j, ljk, r) in sharp {
        for t in splits {
            let centre = (t - c[j]) / ljk;
            let window: &[f64] = if r == 0.0 { &[0.0] } else { &[-4.0, 4.0] };
            for w in window {
                push(centre + w * r);
            }
        }
    }
    if ladder {
        if uses_act && s > LADDER_SCALE {
            for t in splits {
                for o in LADDER {
                    push((t - o - ck) / s);
                    push((t + o - ck) / s);
                }
            }
        }
        for &(j, ljk, _) in sharp {
            if ljk.abs() > LADDER_SCALE {
                for t in splits {
                    let centre = (t - c[j]) / ljk;
                    for o in LADDER {
                        push(centre - o / ljk.abs());
                        push(centre + o / ljk.abs());
                    }
                }
            }
        }
    }
    if nc == 0 {
        return (cuts, 0);
    }
    if nc < MAX_CUTS && !cuts[..nc].iter().any(|c| c.abs() <= 1.5) {
        cuts[nc] = 0.0;
        nc += 1;
    }
    cuts[..nc].sort_by(|a, b| a.partial_cmp(b).unwrap());
    (cuts, nc)
}

/// Whether level k of a block gets ladder cuts ([`level_cuts`]): the activation is not
/// piecewise linear and the level's own slope `s` or a sharp later sample's slope exceeds
/// [`LADDER_SCALE`].
pub(super) fn has_ladder(
    ladder: bool,
    uses_act: bool,
    s: f64,
    sharp: &[(usize, f64, f64)],
) -> bool {
    ladder
        && ((uses_act && s > LADDER_SCALE) || sharp.iter().any(|&(_, l, _)| l.abs() > LADDER_SCALE))
}

/// The split rule on sorted cuts: half-range Gauss–Hermite below the first and above the last
/// cut, Gauss–Legendre (times the standard normal density) between consecutive cuts.
pub(super) fn push_split_rule(
    cuts: &[f64],
    hr: &Rule,
    gl: &Rule,
    u: &mut Vec<f64>,
    w: &mut Vec<f64>,
) {
    let c0 = cuts[0];
    for (v, wt) in hr.nodes.iter().zip(&hr.weights) {
        u.push(c0 - v);
        w.push(wt * (c0 * v - 0.5 * c0 * c0).exp());
    }
    let inv_sqrt_2pi = 1.0 / (2.0 * std::f64::consts::PI).sqrt();
    for p in cuts.windows(2) {
        let (a, b) = (p[0], p[1]);
        let half = 0.5 * (b - a);
        let mid = 0.5 * (a + b);
        for (x, wt) in gl.nodes.iter().zip(&gl.weights) {
            let uu = mid + half * x;
            u.push(uu);
            w.push(wt * half * (-0.5 * uu * uu).exp() * inv_sqrt_2pi);
        }
    }
    let cm = *cuts.last().unwrap();
    for (v, wt) in hr.nodes.iter().zip(&hr.weights) {
        u.push(cm + v);
        w.push(wt * (-cm * v - 0.5 * cm * cm).exp());
    }
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
        let (cuts, nc) = level_cuts(
            &self.splits,
            self.uses_act[k],
            ck,
            s,
            &self.sharp[k],
            &buf.c,
            self.pwl.is_none(),
        );
        if nc == 0 {
            buf.u.extend_from_slice(&self.gh.nodes);
            buf.w.extend_from_slice(&self.gh.weights);
            return;
        }
        push_split_rule(&cuts[..nc], &self.hr, &self.gl, &mut buf.u, &mut buf.w);
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
            let side = if self.right_at_kink[k] {
                Side::Right
            } else {
                Side::Auto
            };
            self.act.jets(&buf.z, jo, side, &mut buf.jets)?;
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
                crate::cancel::check()?;
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

/// The specs and integrand rows of a block in the pivot order of its Cholesky factor, with the
/// jet order each level needs and whether it evaluates the activation (checked against the
/// derivatives the activation provides).  Shared by the fixed-order and the error-controlled rules.
pub(super) struct Permuted {
    pub(super) specs: Vec<Vec<Spec>>,
    pub(super) integ_p: Vec<Vec<usize>>,
    pub(super) jet_order: Vec<usize>,
    pub(super) uses_act: Vec<bool>,
}

impl Permuted {
    pub(super) fn new(
        act: &dyn ActivationFn,
        per_sample: &[Vec<Spec>],
        integ: &[Vec<usize>],
        perm: &[usize],
    ) -> Result<Permuted, RgError> {
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
        Ok(Permuted {
            specs,
            integ_p,
            jet_order,
            uses_act,
        })
    }
}

/// The nested rule over one block, set up (Cholesky factor, permuted specs, cut data, rules)
/// but not run, with its per-level buffers.
#[allow(clippy::too_many_arguments)]
fn build<'a>(
    act: &'a dyn ActivationFn,
    mean: &[f64],
    cov: &[f64],
    d: usize,
    per_sample: &[Vec<Spec>],
    integ: &[Vec<usize>],
    order: usize,
    unconditional: bool,
) -> Result<(Nested<'a>, Vec<LevelBuf>), RgError> {
    let ni = integ.len();
    let pc = pivoted_cholesky(cov, d);
    let perm = &pc.perm;
    let order = if order > 0 {
        order.min(MAX_ORDER_PER_PIECE)
    } else {
        default_order(pc.rank)
    };
    let Permuted {
        specs,
        integ_p,
        jet_order,
        uses_act,
    } = Permuted::new(act, per_sample, integ, perm)?;
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
        right_at_kink: perm
            .iter()
            .map(|&p| unconditional && cov[p * d + p] == 0.0 && mean[p] == 0.0)
            .collect(),
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
    Ok((nest, bufs))
}

/// Expectations of products of regular specs over N(mean, cov) (cov validated PSD), with
/// `order` nodes per piece and level (0: [`default_order`] of the rank).  `unconditional`:
/// the expectation is over the samples themselves (not conditioned on a delta part), so a
/// zero-variance sample at mean 0 takes the right-hand values at a kink.
#[allow(clippy::too_many_arguments)]
pub(crate) fn nested(
    act: &dyn ActivationFn,
    mean: &[f64],
    cov: &[f64],
    d: usize,
    per_sample: &[Vec<Spec>],
    integ: &[Vec<usize>],
    order: usize,
    unconditional: bool,
) -> Result<Vec<f64>, RgError> {
    let ni = integ.len();
    if d == 0 {
        return Ok(vec![1.0; ni]);
    }
    let (nest, mut bufs) = build(act, mean, cov, d, per_sample, integ, order, unconditional)?;
    let mut out = vec![0.0; ni];
    nest.level(0, &mut bufs, &mut out)?;
    Ok(out)
}

/// Random descents of [`nested_nodes`] (Knuth's estimator of a tree's size).
const PROBES: u64 = 96;

/// A deterministic pseudo-random stream (splitmix64).
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// An upper bound on the innermost evaluations of [`nested`] over `d` samples (of which
/// `n_act` evaluate the activation) at `order` (0: [`default_order`] of `d`), from the most
/// cuts [`level_cuts`] can place on a level: cheap, to skip [`nested_nodes`] far below a limit.
pub(crate) fn nested_nodes_bound(
    act: &dyn ActivationFn,
    d: usize,
    n_act: usize,
    order: usize,
) -> f64 {
    let q = if order > 0 {
        order.min(MAX_ORDER_PER_PIECE)
    } else {
        default_order(d)
    } as f64;
    let ns = act.split_points().len();
    let ladder = if act.piecewise_linear().is_none() {
        1 + 2 * LADDER.len()
    } else {
        1
    };
    let cuts = (ns * (2 * n_act.max(1) - 1) * ladder + 1).min(MAX_CUTS);
    let per_level = q * (cuts as f64 + 1.0).max(2.0);
    let levels = if act.piecewise_linear().is_some() {
        d.saturating_sub(1)
    } else {
        d
    };
    per_level.powi(levels as i32)
}

/// The number of innermost evaluations of [`nested`] with these arguments — nodes of the
/// innermost level that uses nodes, or closed-form innermost levels of a piecewise-linear
/// activation — estimated by [`PROBES`] random descents through the levels, each level's nodes
/// built exactly as [`nested`] builds them (cuts at the kink of the level's conditional mean,
/// windows around sharp later samples, rank-deficient levels one node): the product of the
/// node counts along a descent is an unbiased estimate of the count (Knuth).  Deterministic.
#[allow(clippy::too_many_arguments)]
pub(crate) fn nested_nodes(
    act: &dyn ActivationFn,
    mean: &[f64],
    cov: &[f64],
    d: usize,
    per_sample: &[Vec<Spec>],
    integ: &[Vec<usize>],
    order: usize,
) -> Result<f64, RgError> {
    if d == 0 {
        return Ok(1.0);
    }
    let (nest, mut bufs) = build(act, mean, cov, d, per_sample, integ, order, true)?;
    let mut state = 0x5EED_u64;
    let mut total = 0.0;
    for _ in 0..PROBES {
        let mut weight = 1.0;
        for k in 0..d {
            let ck = bufs[k].c[k];
            let s = nest.l[k * d + k];
            if k + 1 == d
                && nest.uses_act[k]
                && nest.pwl.is_some()
                && s > 0.0
                && nest.specs[k].len() <= 16
                && nest.specs[k]
                    .iter()
                    .all(|sp| sp.term.zpow < 8 && sp.mulpow < 8)
            {
                break;
            }
            let (head, tail) = bufs.split_at_mut(k + 1);
            let buf = &mut head[k];
            nest.nodes(k, ck, buf);
            let n = buf.u.len();
            weight *= n as f64;
            if k + 1 == d {
                break;
            }
            let u = buf.u[(splitmix(&mut state) % n as u64) as usize];
            for j in (k + 1)..d {
                tail[0].c[j] = buf.c[j] + nest.l[j * d + k] * u;
            }
        }
        total += weight;
    }
    Ok(total / PROBES as f64)
}

#[cfg(test)]
#[allow(clippy::needless_range_loop)]
mod tests {
    use super::*;
    use crate::activations::Builtin;
    use crate::expect::Term;

    /// The exact count of innermost evaluations: the whole tree of levels walked.
    fn exact(nest: &Nested, k: usize, bufs: &mut [LevelBuf]) -> f64 {
        let d = nest.d;
        let (head, tail) = bufs.split_first_mut().unwrap();
        let buf = head;
        let s = nest.l[k * d + k];
        if k + 1 == d && nest.uses_act[k] && nest.pwl.is_some() && s > 0.0 {
            return 1.0;
        }
        nest.nodes(k, buf.c[k], buf);
        if k + 1 == d {
            return buf.u.len() as f64;
        }
        let us = buf.u.clone();
        let c = buf.c.clone();
        us.iter()
            .map(|&u| {
                for j in (k + 1)..d {
                    tail[0].c[j] = c[j] + nest.l[j * d + k] * u;
                }
                exact(nest, k + 1, tail)
            })
            .sum()
    }

    #[test]
    fn the_node_estimate_matches_the_count_of_the_rule() {
        // a random-looking 5×5 covariance (one near-collinear pair: sharp windows) and 0.5·I + 0.5
        let a: [[f64; 5]; 5] = [
            [1.0, 0.3, -0.7, 0.2, 0.5],
            [0.3, 1.2, 0.1, -0.4, 0.0],
            [-0.7, 0.1, 0.9, 0.3, -0.2],
            [0.2, -0.4, 0.3, 1.1, 0.6],
            [1.0, 0.29, -0.71, 0.21, 0.5],
        ];
        let mut rand = vec![0.0; 25];
        for i in 0..5 {
            for j in 0..5 {
                rand[i * 5 + j] = (0..5).map(|k| a[i][k] * a[j][k]).sum();
            }
        }
        let equi: Vec<f64> = (0..25)
            .map(|i| if i % 6 == 0 { 1.0 } else { 0.5 })
            .collect();
        let sig = Spec {
            term: Term::sigma(0),
            mulpow: 0,
        };
        let specs = vec![vec![sig]; 5];
        let integ = vec![vec![0; 5]];
        for act in [Builtin::Relu, Builtin::Tanh] {
            for cov in [&rand, &equi] {
                for order in [3, 6] {
                    let (nest, mut bufs) =
                        build(&act, &[0.0; 5], cov, 5, &specs, &integ, order, true).unwrap();
                    let n = exact(&nest, 0, &mut bufs);
                    let est = nested_nodes(&act, &[0.0; 5], cov, 5, &specs, &integ, order).unwrap();
                    assert!(
                        (est / n - 1.0).abs() < 0.1,
                        "{act:?} order {order}: estimate {est} vs count {n}"
                    );
                    assert!(nested_nodes_bound(&act, 5, 5, order) >= n);
                }
            }
        }
    }
}
