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
//!
//! Module layout (each module uses only those listed before it):
//!
//! * [`terms`]: the term algebra ([`Term`], term values, delta parts, Hermite polynomials);
//! * [`orthant`], [`closed_form`]: exact expectations for the Gaussian-CDF class (relu, leaky
//!   relu, erf, gelu, linear, monomials) via Stein's identity and orthant probabilities;
//! * `nested`: the nested whitened quadrature of regular parts;
//! * [`collinear`]: pairs of (nearly) collinear samples of kinked activations, in the range
//!   of their singular block (duplicated, collinear and zero inputs);
//! * this module: dispatch (closed form first, then quadrature with exact delta parts),
//!   batching, adaptive order and the pair tables of a kernel.

pub mod closed_form;
pub mod collinear;
pub mod fast;
mod nested;
pub mod orthant;
pub mod terms;

#[cfg(test)]
mod closed_form_checks;

use rayon::prelude::*;

use crate::activations::ActivationFn;
use crate::linalg::{invert, pivoted_cholesky, submatrix, validate_covariance};
use crate::RgError;
use nested::nested;
pub use nested::{default_order, LADDER_SCALE, MAX_ORDER_PER_PIECE};
use terms::{delta_parts, hermite_poly, poly_add, poly_mul, Poly, Spec};
pub use terms::{first_singular_order, Term};

/// Variances of a positively homogeneous activation's block outside
/// `[1/HOMOGENEOUS_RANGE, HOMOGENEOUS_RANGE]` are rescaled ([`homogeneous_rescale`]).
const HOMOGENEOUS_RANGE: f64 = 1.125899906842624e15; // 2^50

/// Exact rescaling for the positively homogeneous activations (relu, leaky relu:
/// σ(λz) = λσ(z), λ > 0): a block with a variance outside `[2^-50, 2^50]` (where products of
/// its entries over- or underflow: `1e308·I` and `diag(1e12, 1)` gave 0) is evaluated with each
/// sample scaled to unit order, `z_i → z_i / 2^{k_i}`, and each integrand multiplied by
/// `Π_i 2^{k_i·deg_i}`, `deg_i` the degree of homogeneity of its factor at sample i
/// (`z^q D^m Π σ^{(j)}`: `q − m + Σ (1 − j)`); powers of 2 keep both steps exact.
fn homogeneous_rescale(
    act: &dyn ActivationFn,
    cov: &[f64],
    integrands: &[Vec<Term>],
) -> Option<(Vec<f64>, Vec<[f64; 2]>)> {
    act.piecewise_linear()?;
    let d = (cov.len() as f64).sqrt() as usize;
    let inside = |v: f64| v == 0.0 || (1.0 / HOMOGENEOUS_RANGE..=HOMOGENEOUS_RANGE).contains(&v);
    if (0..d).all(|i| inside(cov[i * d + i])) {
        return None;
    }
    // per sample 2^{k_i} ≈ √K_ii
    let k: Vec<i32> = (0..d)
        .map(|i| {
            let v = cov[i * d + i];
            if v > 0.0 {
                (v.log2() / 2.0).round() as i32
            } else {
                0
            }
        })
        .collect();
    let inv: Vec<f64> = k.iter().map(|&ki| 2f64.powi(-ki)).collect();
    let mut scaled = cov.to_vec();
    for i in 0..d {
        for j in 0..d {
            scaled[i * d + j] *= inv[i];
            scaled[i * d + j] *= inv[j];
        }
    }
    let factors = integrands
        .iter()
        .map(|it| {
            let e: i32 = it
                .iter()
                .zip(&k)
                .map(|(t, &ki)| {
                    ki * (t.zpow as i32 - t.deriv as i32
                        + t.sig.iter().map(|&j| 1 - j as i32).sum::<i32>())
                })
                .sum();
            // 2^e as two factors applied in turn (2^e itself may overflow while the value
            // times it does not)
            [2f64.powi(e / 2), 2f64.powi(e - e / 2)]
        })
        .collect();
    Some((scaled, factors))
}

/// Quadrature options.
#[derive(Clone, Copy, Debug, Default)]
pub struct QuadOpts {
    /// Nodes per piece and level; 0 selects [`default_order`] by the number of integrated levels.
    pub order: usize,
    /// Skip the closed forms of [`closed_form`] and the error-controlled rule of [`fast`]:
    /// always the nested rule of fixed order (for benchmarks and cross-checks).
    pub quadrature_only: bool,
    /// Target accuracy of the error-controlled rule ([`fast`]) for smooth activations
    /// without closed forms (used when `order == 0` and not `quadrature_only`); 0 selects
    /// [`fast::DEFAULT_TOL`].
    pub tol: f64,
    /// Refuse a fixed-order nested rule whose estimated node count (see [`check_cost`])
    /// exceeds this (0: no limit).
    pub max_evals: f64,
}

impl QuadOpts {
    /// Whether a block of `d` samples of a smooth (kink-free) activation uses the
    /// error-controlled rule of [`fast`]; blocks of one or two samples (cheap, and carrying
    /// derivatives up to σ^{(5)} in the pair tables) keep the default fixed-order rule.
    pub fn uses_fast_rule(&self, act: &dyn ActivationFn, d: usize) -> bool {
        !self.quadrature_only && self.order == 0 && d >= 3 && act.kink().is_none()
    }
}

/// The estimated count of innermost evaluations of the fixed-order nested rule over the block
/// N(`mean`, `cov`) of `d` samples with these specs at `order` (0: the default order of its
/// rank): [`nested::nested_nodes`] (levels built as the rule builds them: the pieces of a line
/// split at the kink and around sharp later samples, Gauss–Hermite on an unsplit line, one
/// node on a rank-deficient level, the innermost level of a piecewise-linear activation in
/// closed form).  Below the cheap bound [`nested::nested_nodes_bound`] it is not computed.
#[allow(clippy::too_many_arguments)]
fn nested_cost(
    act: &dyn ActivationFn,
    mean: &[f64],
    cov: &[f64],
    d: usize,
    specs: &[Vec<Spec>],
    integ: &[Vec<usize>],
    order: usize,
    limit: f64,
) -> Result<f64, RgError> {
    let n_act = specs
        .iter()
        .filter(|s| s.iter().any(|sp| !sp.term.sig.is_empty()))
        .count();
    let bound = nested::nested_nodes_bound(act, d, n_act, order);
    if bound <= limit {
        return Ok(bound);
    }
    nested::nested_nodes(act, mean, cov, d, specs, integ, order)
}

/// [`RgError::Cost`] when the fixed-order nested rule over the block N(`mean`, `cov`) with
/// these specs would exceed `opts.max_evals` innermost evaluations (see [`nested_cost`]).
/// Free for blocks far below the limit.
fn check_cost(
    act: &dyn ActivationFn,
    mean: &[f64],
    cov: &[f64],
    d: usize,
    specs: &[Vec<Spec>],
    integ: &[Vec<usize>],
    opts: &QuadOpts,
) -> Result<(), RgError> {
    if opts.max_evals <= 0.0 {
        return Ok(());
    }
    let cost = nested_cost(act, mean, cov, d, specs, integ, opts.order, opts.max_evals)?;
    if cost <= opts.max_evals {
        return Ok(());
    }
    let rank = pivoted_cholesky(cov, d).rank;
    let q = if opts.order == 0 {
        default_order(rank)
    } else {
        opts.order.min(MAX_ORDER_PER_PIECE)
    };
    Err(RgError::Cost(format!(
        "estimated cost {cost:.2e} quadrature nodes for one {rank}-dimensional nested rule at order {q} \
         exceeds the limit {:.2e}; lower the quadrature order (order=, max_order=, quad_order=) or \
         the number of samples in a block, or raise the limit with the environment variable \
         RGFLOW_MAX_EVALUATIONS (e.g. RGFLOW_MAX_EVALUATIONS={:.0e}; 0 disables it)",
        opts.max_evals,
        cost * 2.0
    )))
}

/// The specs of the regular part of `integrands` per sample and each integrand's spec rows
/// (as [`expect_block`] builds them).
fn regular_parts(integrands: &[Vec<Term>], d: usize) -> (Vec<Vec<Spec>>, Vec<Vec<usize>>) {
    let mut specs: Vec<Vec<Spec>> = vec![vec![]; d];
    let integ = integrands
        .iter()
        .map(|it| {
            (0..d)
                .map(|k| {
                    let s = Spec {
                        term: it[k].clone(),
                        mulpow: 0,
                    };
                    if let Some(p) = specs[k].iter().position(|x| *x == s) {
                        p
                    } else {
                        specs[k].push(s);
                        specs[k].len() - 1
                    }
                })
                .collect()
        })
        .collect();
    (specs, integ)
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
    if let Some((scaled, factors)) = homogeneous_rescale(act, cov, integrands) {
        let v = expect_block(act, &scaled, d, integrands, opts)?;
        return Ok(v
            .iter()
            .zip(&factors)
            .map(|(v, f)| v * f[0] * f[1])
            .collect());
    }
    for (i, it) in integrands.iter().enumerate() {
        if it.len() != d {
            return Err(RgError::value(format!(
                "integrand {i} has {} factors for a {d}-sample block",
                it.len()
            )));
        }
    }
    if !opts.quadrature_only {
        if let Some(v) = closed_form::expect_block(act, cov, d, integrands) {
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
    let vals = if opts.uses_fast_rule(act, d) {
        crate::cancel::check()?;
        fast::nested_fast(
            act,
            &zero_mean,
            cov,
            d,
            &regular_specs,
            &regular_integ,
            opts.tol,
        )?
    } else {
        check_cost(
            act,
            &zero_mean,
            cov,
            d,
            &regular_specs,
            &regular_integ,
            opts,
        )?;
        nested(
            act,
            &zero_mean,
            cov,
            d,
            &regular_specs,
            &regular_integ,
            opts.order,
            true,
        )?
    };
    let vals = if opts.order == 0 {
        refine_large_scale(act, cov, d, &regular_specs, &regular_integ, opts, &vals)?
            .unwrap_or(vals)
    } else {
        vals
    };
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
            check_cost(act, &cmean, &ccov, nr, &specs, &integ, opts)?;
            nested(act, &cmean, &ccov, nr, &specs, &integ, opts.order, false)?
        };
        for (v, (t, c)) in vals.iter().zip(&targets) {
            result[*t] += c * v;
        }
    }
    Ok(result)
}

/// The expectations of one pair of inputs (see [`pair_values`]).
#[derive(Clone, Debug, PartialEq)]
pub enum PairValues {
    /// The requested values in request order.
    Values(Vec<f64>),
    /// A (nearly) collinear pair of a kinked activation, in the range of its block, and for
    /// a non-singular block also its requested values (see [`collinear`]: those of total
    /// derivative order ≤ 3 are bounded and used as they are).
    Collinear(Box<collinear::CollinearPair>, Option<Vec<f64>>),
}

/// Variances above `LADDER_SCALE²` are outside the range the default orders were tuned on.
fn large_scale(cov: &[f64], d: usize) -> bool {
    (0..d).any(|i| cov[i * d + i] > LADDER_SCALE * LADDER_SCALE)
}

/// The default (order 0) rules on a block with a large variance: the ladder cuts resolve the
/// transition region of saturating activations, but nothing guarantees convergence for every
/// activation there (sin oscillates on the scale 1 at any variance; a custom activation may have
/// structure away from its centre).  Check the regular part against a second rule and go on
/// refining (at most twice) until two successive rules agree; refuse the block (a clear error)
/// instead of returning unconverged numbers.  The fixed-order rule is compared with 3/2 of its
/// nodes per piece (to 1e-9 relative); the error-controlled rule with 100× its tolerance, and
/// when they disagree with 1/100 of it.  Ordinary blocks (every variance ≤ LADDER_SCALE²) are
/// not checked (bit-identical results, no cost).  Returns the refined values, if any.
fn refine_large_scale(
    act: &dyn ActivationFn,
    cov: &[f64],
    d: usize,
    specs: &[Vec<Spec>],
    integ: &[Vec<usize>],
    opts: &QuadOpts,
    vals: &[f64],
) -> Result<Option<Vec<f64>>, RgError> {
    if !large_scale(cov, d) || act.piecewise_linear().is_some() {
        return Ok(None);
    }
    let zero_mean = vec![0.0; d];
    let agree = |a: &[f64], b: &[f64], rel: f64| {
        a.iter().zip(b).all(|(x, y)| {
            let e = (x - y).abs();
            e <= rel * x.abs().max(y.abs()) || e <= 1e-15
        })
    };
    let (last, prev) = if opts.uses_fast_rule(act, d) {
        let tol = if opts.tol > 0.0 {
            opts.tol
        } else {
            fast::DEFAULT_TOL
        };
        let coarse = fast::nested_fast(act, &zero_mean, cov, d, specs, integ, 100.0 * tol)?;
        if agree(vals, &coarse, 1e3 * tol) {
            return Ok(None);
        }
        let fine = fast::nested_fast(act, &zero_mean, cov, d, specs, integ, 0.01 * tol)?;
        if agree(vals, &fine, 10.0 * tol) {
            return Ok(Some(fine));
        }
        (fine, vals.to_vec())
    } else {
        // pair (and single-sample) blocks are cheap: refine further before refusing (a deep tanh
        // ResNet flow needs 3-4 refinements at variance 16); larger blocks stop after two
        let max_steps = if d <= 2 { 6 } else { 2 };
        let mut n = default_order(pivoted_cholesky(cov, d).rank);
        let mut prev = vals.to_vec();
        let mut step = 0;
        loop {
            crate::cancel::check()?;
            n = ((3 * n).div_ceil(2)).min(MAX_ORDER_PER_PIECE);
            let next = nested(act, &zero_mean, cov, d, specs, integ, n, true)?;
            if agree(&prev, &next, 1e-9) {
                return Ok(Some(next));
            }
            step += 1;
            if step == max_steps || n == MAX_ORDER_PER_PIECE {
                break (next, prev);
            }
            prev = next;
        }
    };
    let kmax = (0..d).map(|i| cov[i * d + i]).fold(0.0, f64::max);
    let (i, a, b) = last
        .iter()
        .zip(&prev)
        .enumerate()
        .map(|(i, (a, b))| (i, *a, *b))
        .max_by(|x, y| (x.1 - x.2).abs().total_cmp(&(y.1 - y.2).abs()))
        .unwrap_or((0, f64::NAN, f64::NAN));
    Err(RgError::value(format!(
        "the quadrature of {} expectations did not converge at variance {kmax:.3e} \
         (integrand {i}: {a:e} vs {b:e} at two successive refinements); the requested \
         accuracy cannot be met for this activation at this scale: rescale the inputs or \
         the weight variances, or give an explicit order (quad_order=) and check it",
        act.name()
    )))
}

/// Expectations for every pair of inputs of an N×N kernel `k`, in parallel: for a < b the
/// two-sample values `⟨σ^{(i)}_a σ^{(j)}_b⟩` for each `(i, j)` in `offd` (or, for a pair of
/// a kinked activation that [`collinear::is_collinear_pair`] selects, its range-restricted
/// [`collinear::CollinearPair`]); for a = b the single-sample values of the terms `diag`
/// (for a zero variance of a kinked activation, the terms with a derivative are 0: they are
/// contracted only with tensors that vanish with the variance).  Entry `a*n + b` (a ≤ b)
/// holds the values; entries with a > b are empty.
pub fn pair_values(
    act: &dyn ActivationFn,
    k: &[f64],
    n: usize,
    offd: &[(u8, u8)],
    diag: &[Term],
    opts: &QuadOpts,
) -> Result<Vec<PairValues>, RgError> {
    let pairs: Vec<(usize, usize)> = (0..n).flat_map(|a| (a..n).map(move |b| (a, b))).collect();
    let offd_its: Vec<Vec<Term>> = offd
        .iter()
        .map(|&(i, j)| vec![Term::sigma(i), Term::sigma(j)])
        .collect();
    let offd_swapped: Vec<Vec<Term>> = offd_its
        .iter()
        .map(|t| vec![t[1].clone(), t[0].clone()])
        .collect();
    let diag_its: Vec<Vec<Term>> = diag.iter().map(|t| vec![t.clone()]).collect();
    let kinked = act.kink().is_some();
    let results: Vec<PairValues> = pairs
        .par_iter()
        .map(|&(a, b)| {
            crate::cancel::check()?;
            let (kaa, kab, kbb) = (k[a * n + a], k[a * n + b], k[b * n + b]);
            if a == b {
                if kinked && kaa <= 0.0 {
                    let regular: Vec<Vec<Term>> = diag_its
                        .iter()
                        .filter(|t| t[0].deriv == 0)
                        .cloned()
                        .collect();
                    let mut vals = expect_block(act, &[0.0], 1, &regular, opts)?.into_iter();
                    return Ok(PairValues::Values(
                        diag_its
                            .iter()
                            .map(|t| {
                                if t[0].deriv == 0 {
                                    vals.next().unwrap_or(0.0)
                                } else {
                                    0.0
                                }
                            })
                            .collect(),
                    ));
                }
                expect_block(act, &[kaa], 1, &diag_its, opts)
                    .map(PairValues::Values)
                    .map_err(|e| e.context(&format!("single-input expectations for input {a}")))
            } else if collinear::is_collinear_pair(act, kaa, kab, kbb) {
                let ctx = |e: RgError| {
                    e.context(&format!(
                        "collinear pair expectations for inputs ({a}, {b})"
                    ))
                };
                let c = collinear::collinear_pair(act, kaa, kab, kbb, opts).map_err(ctx)?;
                let cov = [kaa, kab, kab, kbb];
                let exact = if pivoted_cholesky(&cov, 2).rank == 2 {
                    Some(expect_block(act, &cov, 2, &offd_its, opts).map_err(ctx)?)
                } else {
                    None
                };
                Ok(PairValues::Collinear(Box::new(c), exact))
            } else if kinked && kbb > kaa {
                // the sample with the larger variance first, so that the values of a pair do
                // not depend on the order of the inputs (at ρ → 1 the delta parts amplify the
                // rounding of the conditioning by (1 − ρ²)^{−1})
                let cov = [kbb, kab, kab, kaa];
                expect_block(act, &cov, 2, &offd_swapped, opts)
                    .map(PairValues::Values)
                    .map_err(|e| e.context(&format!("pair expectations for inputs ({a}, {b})")))
            } else {
                let cov = [kaa, kab, k[b * n + a], kbb];
                expect_block(act, &cov, 2, &offd_its, opts)
                    .map(PairValues::Values)
                    .map_err(|e| e.context(&format!("pair expectations for inputs ({a}, {b})")))
            }
        })
        .collect::<Result<_, _>>()?;
    let mut out = vec![PairValues::Values(vec![]); n * n];
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
            crate::cancel::check()?;
            let v = expect_block(act, c, d, integrands, opts)
                .map_err(|e| e.context(&format!("block {b}")))?;
            o.copy_from_slice(&v);
            Ok(())
        })?;
    Ok(out)
}

/// Adaptive order: raise the order by 3/2 until two successive values agree to
/// `tol·max(1,|v|)` (every integrand). Returns (values, error estimate, order used); a block
/// done in closed form ([`closed_form`]) returns error 0 and order 0.
#[allow(clippy::too_many_arguments)]
pub fn expect_adaptive(
    act: &dyn ActivationFn,
    cov: &[f64],
    d: usize,
    integrands: &[Vec<Term>],
    tol: f64,
    max_order: usize,
    quadrature_only: bool,
    max_evals: f64,
) -> Result<(Vec<f64>, f64, usize), RgError> {
    validate_covariance(cov, d)?;
    if let Some((scaled, factors)) = homogeneous_rescale(act, cov, integrands) {
        let (v, err, order) = expect_adaptive(
            act,
            &scaled,
            d,
            integrands,
            tol,
            max_order,
            quadrature_only,
            max_evals,
        )?;
        return Ok((
            v.iter()
                .zip(&factors)
                .map(|(v, f)| v * f[0] * f[1])
                .collect(),
            err,
            order,
        ));
    }
    if !quadrature_only {
        if let Some(v) = closed_form::expect_block(act, cov, d, integrands) {
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
            max_evals,
            ..Default::default()
        },
    )?;
    // (after the first pass: it validates the integrands)
    let (specs, integ) = regular_parts(integrands, d);
    let zero_mean = vec![0.0; d];
    let cost = |n: usize| nested_cost(act, &zero_mean, cov, d, &specs, &integ, n, max_evals);
    let mut spent = 0.0;
    let mut last_err = f64::NAN;
    loop {
        let next_n = (n * 3).div_ceil(2);
        let total = if max_evals > 0.0 {
            spent += cost(n)?;
            spent + cost(next_n)?
        } else {
            0.0
        };
        if max_evals > 0.0 && total > max_evals {
            let reached = if last_err.is_nan() {
                String::new()
            } else {
                format!(" (change {last_err:.1e})")
            };
            return Err(RgError::Cost(format!(
                "the adaptive rule has not reached tol = {tol:.1e} at order {n}{reached}; order {next_n} \
                 would bring its estimated cost to {total:.2e} quadrature nodes over {rank} dimensions, \
                 above the limit {max_evals:.2e}; pass a fixed order= (or a smaller max_order=, or a \
                 larger tol), or raise the limit with the environment variable RGFLOW_MAX_EVALUATIONS \
                 (e.g. RGFLOW_MAX_EVALUATIONS={:.0e}; 0 disables it)",
                total * 2.0
            )));
        }
        let cur = expect_block(
            act,
            cov,
            d,
            integrands,
            &QuadOpts {
                order: next_n,
                quadrature_only: true,
                max_evals,
                ..Default::default()
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
        last_err = err;
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
