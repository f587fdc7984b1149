//! The sigma-kernel ("G+Σ") closure of the pre-activation ResNet kernel EFT (spec
//! `resnets.md` a.2: "extend the state space to incorporate the sigma-kernel"), leading
//! order in 1/n, continuous depth t = ε²ℓ and the block-by-block recursion.
//! Derivation in full: `docs/sigma_kernel.md`.
//!
//! **Per-neuron law (exact).** Given φ^ℓ the rows of W^ℓσ(φ^ℓ) are i.i.d. N(0, Q̂), Q̂ = C_W Σ̂,
//! Σ̂ = σ(φ)ᵀσ(φ)/n (the exact block law).  In the SDE limit every neuron (row) i follows
//! dφ_i = Q̂^{1/2} dB_i with independent Brownian motions B_i and one common random diffusion
//! matrix Q̂, so for any single-neuron function f the empirical average ⟨f⟩ = Σ_i f(φ_i)/n obeys
//! (Itô) `d⟨f⟩ = ⟨Lf⟩ dt + dM_f`, `L = ½ Q̂:∂∂`, `d[M_f, M_h] = ⟨∇fᵀ Q̂ ∇h⟩ dt / n`.
//! With f = φ_aφ_b: `E[dG | φ] = Q̂ dt` and the source Σ(G, Q̂) of the block law.  The mean and
//! covariances of G are therefore driven *exactly* by Σ̂ (`dK1/dt = C_W U1`,
//! `dV4/dt = C_W(V_ΣG + V_GΣ) + Σ(K0, Q)`); Σ̂ itself is driven by ⟨∂∂(σσ)⟩: the hierarchy.
//!
//! **Fluctuations (exact at O(n^{-1/2})).** Let K̃(t) = K⁰ + ∫₀ᵗ Q̂ ds (the integrated
//! sigma-kernel; E[K̃] = E[G] exactly) and η_t[f] = ⟨f⟩ − E_{K0}f evaluated on n independent
//! Gaussian paths with the mean-field diffusion Q (the sampling noise).  Linearising
//! φ_i = φ_i^{(0)} + ∫ δQ̂^{1/2} dB_i and using Gaussian integration by parts:
//!
//! * (E1) `δ⟨f⟩ = η_t[f] + ½⟨∂∂f⟩ : δK̃` for every f (⟨·⟩ at K0 from here on);
//! * (E2) `dδK̃/dt = C_W η_t[σσ] + χ[δK̃]`, `χ = C_W J`, `J_{ab,gh} = ½⟨∂_g∂_h(σ_aσ_b)⟩`;
//! * η is the empirical fluctuation of i.i.d. Gaussian paths: `n·Cov(η_t f, η_t h) = Cov_{K0}(f, h)`,
//!   `dη_t[f] = η_t[Lf] dt + (martingale)` with L = ½ Q:∂∂.
//!
//! State: `V = n·Cov(δK̃, δK̃)`, `X_φ[ab,cd] = n·Cov(η[φ_aφ_b], δK̃_cd)`,
//! `X_σ[ab,cd] = n·Cov(η[σ_aσ_b], δK̃_cd)`, all (N², N²), and `K1 = n(E[G] − K0)`:
//!
//! ```text
//! dV/dt  = χ₍₁₂₎V + χ₍₃₄₎V + C_W (X_σ + X_σᵀ)                        exact
//! dX_φ/dt = X_φ χᵀ + C_W Cov(φφ, σσ)                                 exact (L(φφ) = const)
//! dX_σ/dt = X_σ χᵀ + C_W Cov(σσ, σσ) + X[L(σσ)]                      X[L(σσ)]: closure
//! dK1/dt = C_W U1,   U1 = J:K1 + ⅛⟨∂⁴(σσ)⟩:V + ½ Σ_gh X[∂_g∂_h(σ_aσ_b)]_{gh}      exact given X
//! ```
//!
//! where `X[f]_{cd} = n·Cov(η[f], δK̃_cd)`.  The U1 formula is the exact 1/n shift of the
//! single-neuron law: a Gaussian mixture over K̃ (first two terms) plus the neuron's correlation
//! with the kernel it feeds (last term, the only one present at small t: U1 ∝ t, K1 ∝ t²).
//! The (G, Σ̂) blocks follow from (E1):
//! `V4 = W(K0) + X_φ + X_φᵀ + V`, `V_GS = Cov(φφ, σσ) + X_σᵀ + (X_φ + V)Jᵀ`,
//! `V_SS = Cov(σσ, σσ) + X_σJᵀ + JX_σᵀ + JVJᵀ`.
//!
//! **Closure (the only approximation).** X[f] for f = ∂_g∂_h(σ_aσ_b) is not carried.  Project
//! f onto span{φ_pφ_q, σ_pσ_q : p ≤ q in S} with the Gaussian (K0) covariance,
//! f = β_φ·φφ + β_σ·σσ + r_f, and assume the residual's sampling noise is uncorrelated with the
//! kernel, X[r_f] = 0: `X[f] ≈ β_φ X_φ + β_σ X_σ`.  S = {a, b, c, d} are the samples the entry
//! X[f]_{cd} names (so results on a subset of inputs do not depend on the other inputs, and
//! X[f] is exact to O(t)).  The G-only closure is the same statement one level down
//! (η[σσ] projected on η[φφ] alone, which gives δΣ̂ = J δG).  Exact for quadratic
//! σσ (linear σ), and at t = 0 (U1(0) = 0, dU1/dt(0) exact).
//!
//! **Discrete recursion** (one block per step, h = ε²): K0' = K0 + hQ, K1' = K1 + hC_W U1 and,
//! with A = 1 + hχ, `V' = AVAᵀ + hC_W(AX_σᵀ + X_σAᵀ) + h²C_W² Cov(σσ,σσ)`,
//! `X_φ' = X_φAᵀ + hC_W Cov(φφ,σσ)`, `X_σ' = (X_σ + hX[L(σσ)])Aᵀ + hC_W(Cov(σσ,σσ) + hCov(L(σσ),σσ))`:
//! the block law for K̃ and X_φ (exact in ε at this order in 1/n); the Gaussian smoothing
//! e^{hL} of σσ over one block truncated at first order (O(ε⁴) per block dropped).

use rayon::prelude::*;
use rustc_hash::FxHashMap;

use super::{
    build_rhs, mat_mul, mat_mul_t, wishart, K1Closure, Method, PreResTensors, Rhs, System,
};
use crate::activations::ActivationFn;
use crate::expect::{expect_block, first_singular_order, QuadOpts, Term};
use crate::linalg::pivoted_cholesky;
use crate::ode::Dopri54;
use crate::tables::{distinct, key4, multisets4};
use crate::RgError;

/// Relative pivot (of the basis correlation matrix) below which a basis function counts as a
/// linear combination of the others in the projection.
const PROJ_RTOL: f64 = 1e-10;

/// Code of the factor σ^{(order)}(z_sample) in a four-point key.
#[inline]
fn code(sample: usize, order: u8) -> u16 {
    (sample * 4 + order as usize) as u16
}

/// The per-sample factor Π σ^{(o_i)} as a combination of engine terms.  For kinked
/// activations (σ'' a delta function) `σ''σ^k = D²(σ^{k+1})/(k+1) − kσ^{k−1}σ'²`.
fn sample_terms(orders: &[u8], first_sing: usize) -> Result<Vec<(f64, Term)>, RgError> {
    if orders.iter().all(|&o| (o as usize) < first_sing) {
        return Ok(vec![(1.0, Term::prod(orders))]);
    }
    if orders.len() == 1 {
        return Ok(vec![(1.0, Term::sigma(orders[0]))]);
    }
    let twos = orders.iter().filter(|&&o| o == 2).count();
    let zeros = orders.iter().filter(|&&o| o == 0).count();
    if first_sing == 2 && twos == 1 && zeros + 1 == orders.len() {
        let k = zeros;
        let mut sq = vec![0u8; k - 1];
        sq.extend([1, 1]);
        return Ok(vec![
            (1.0 / (k + 1) as f64, Term::deriv_of(2, &vec![0; k + 1])),
            (-(k as f64), Term::prod(&sq)),
        ]);
    }
    Err(RgError::value(
        "the sigma closure needs ⟨σ'σ'σσ⟩ and ⟨σ''σσσ⟩, which are not defined for an activation \
         whose first derivative jumps",
    ))
}

/// `⟨σ^{(o1)}_a σ^{(o2)}_b σ_c σ_d⟩` for all sample quadruples and order patterns (0,0), (1,1),
/// (2,0) (in any slots), keyed by the multiset of factor codes.
fn four_table(
    act: &dyn ActivationFn,
    k: &[f64],
    n: usize,
    opts: &QuadOpts,
) -> Result<FxHashMap<u64, f64>, RgError> {
    let first_sing = first_singular_order(act)?;
    let mut patterns: Vec<[u8; 4]> = vec![[0; 4]];
    for i in 0..4 {
        for j in i + 1..4 {
            let mut p = [0; 4];
            p[i] = 1;
            p[j] = 1;
            patterns.push(p);
        }
    }
    for i in 0..4 {
        let mut p = [0; 4];
        p[i] = 2;
        patterns.push(p);
    }
    let sets = multisets4(n);
    let chunks: Vec<Vec<(u64, f64)>> = sets
        .par_iter()
        .map(|s| -> Result<Vec<(u64, f64)>, RgError> {
            crate::cancel::check()?;
            let mut ds: Vec<usize> = s.to_vec();
            ds.dedup();
            let cov: Vec<f64> = ds
                .iter()
                .flat_map(|&p| ds.iter().map(move |&q| k[p * n + q]))
                .collect();
            let mut keys: Vec<u64> = vec![];
            let mut its: Vec<Vec<Term>> = vec![];
            let mut owner: Vec<(usize, f64)> = vec![];
            for p in &patterns {
                let key = key4([0, 1, 2, 3].map(|i| code(s[i], p[i])));
                if keys.contains(&key) {
                    continue;
                }
                keys.push(key);
                let slot = keys.len() - 1;
                // Cartesian product of the per-sample combinations.
                let mut combos: Vec<(f64, Vec<Term>)> = vec![(1.0, vec![])];
                for &smp in &ds {
                    let orders: Vec<u8> = (0..4).filter(|&i| s[i] == smp).map(|i| p[i]).collect();
                    let terms = sample_terms(&orders, first_sing)?;
                    combos = combos
                        .into_iter()
                        .flat_map(|(c, v)| {
                            terms.iter().map(move |(c2, t)| {
                                let mut v2 = v.clone();
                                v2.push(t.clone());
                                (c * c2, v2)
                            })
                        })
                        .collect();
                }
                for (c, v) in combos {
                    its.push(v);
                    owner.push((slot, c));
                }
            }
            let vals = expect_block(act, &cov, ds.len(), &its, opts)
                .map_err(|e| e.context(&format!("four-point expectations for inputs {s:?}")))?;
            let mut acc = vec![0.0; keys.len()];
            for ((slot, c), v) in owner.into_iter().zip(vals) {
                acc[slot] += c * v;
            }
            Ok(keys.into_iter().zip(acc).collect())
        })
        .collect::<Result<_, _>>()?;
    Ok(chunks.into_iter().flatten().collect())
}

/// Least-squares solver for a PSD Gram matrix (pivoted Cholesky of the correlation matrix;
/// degenerate basis functions get coefficient 0 — the projection itself is unique).
#[derive(Clone)]
struct PsdSolve {
    m: usize,
    scale: Vec<f64>,
    keep: Vec<usize>,
    l: Vec<f64>,
}

impl PsdSolve {
    fn new(gram: &[f64], m: usize) -> PsdSolve {
        let scale: Vec<f64> = (0..m)
            .map(|i| {
                let d = gram[i * m + i];
                if d > 0.0 {
                    1.0 / d.sqrt()
                } else {
                    0.0
                }
            })
            .collect();
        let corr: Vec<f64> = (0..m * m)
            .map(|ij| gram[ij] * scale[ij / m] * scale[ij % m])
            .collect();
        let pc = pivoted_cholesky(&corr, m);
        let mut r = 0;
        while r < pc.rank && pc.l[r * m + r] * pc.l[r * m + r] > PROJ_RTOL {
            r += 1;
        }
        let keep: Vec<usize> = pc.perm[..r].to_vec();
        let mut l = vec![0.0; r * r];
        for i in 0..r {
            for j in 0..=i {
                l[i * r + j] = pc.l[i * m + j];
            }
        }
        PsdSolve { m, scale, keep, l }
    }

    /// β with Gram·β = b (on the kept basis functions).
    fn solve(&self, b: &[f64]) -> Vec<f64> {
        let r = self.keep.len();
        let mut y: Vec<f64> = self.keep.iter().map(|&i| b[i] * self.scale[i]).collect();
        for i in 0..r {
            let s: f64 = (0..i).map(|j| self.l[i * r + j] * y[j]).sum();
            y[i] = (y[i] - s) / self.l[i * r + i];
        }
        for i in (0..r).rev() {
            let s: f64 = (i + 1..r).map(|j| self.l[j * r + i] * y[j]).sum();
            y[i] = (y[i] - s) / self.l[i * r + i];
        }
        let mut x = vec![0.0; self.m];
        for (k, &i) in self.keep.iter().enumerate() {
            x[i] = y[k] * self.scale[i];
        }
        x
    }
}

/// A projection basis: (family 0 = φ_pφ_q / 1 = σ_pσ_q, p, q) with p ≤ q.
type Basis = Vec<(usize, usize, usize)>;

/// Everything the sigma-closure right-hand side needs at one kernel K0 (pair-space matrices
/// (N², N²), row-major).
struct Tables {
    r: Rhs,
    /// J = χ / C_W.
    j: Vec<f64>,
    /// Cov(φ_aφ_b, σ_cσ_d), Cov(σ_aσ_b, σ_cσ_d), Cov(L(σ_aσ_b), σ_cσ_d).
    cps: Vec<f64>,
    css: Vec<f64>,
    cls: Vec<f64>,
    /// Closure of X[L(σ_aσ_b)]_{cd}: per entry (ab, cd), weights on rows of [X_φ; X_σ]
    /// (index fam·N² + pq) in column cd.
    t_w: Vec<Vec<(usize, f64)>>,
    /// Closure of ½Σ_gh X[∂_g∂_h(σ_aσ_b)]_{gh}: per ab, weights on entries of [X_φ; X_σ]
    /// (index fam·N⁴ + pq·N² + gh).
    s_w: Vec<Vec<(usize, f64)>>,
}

fn tables(
    act: &dyn ActivationFn,
    k: &[f64],
    n: usize,
    c_w: f64,
    opts: &QuadOpts,
) -> Result<Tables, RgError> {
    let r = build_rhs(act, k, n, c_w, opts)?;
    let four = four_table(act, k, n, opts)?;
    let n2 = n * n;
    let n4 = n2 * n2;
    let ex = &r.pairs;
    let kk = |i: usize, j: usize| k[i * n + j];
    let e2 = &r.e2;
    let e4 = |a: usize, i: u8, b: usize, j: u8, c: usize, d: usize| -> f64 {
        let key = key4([code(a, i), code(b, j), code(c, 0), code(d, 0)]);
        four[&key]
    };
    // f = ∂_g∂_h(σ_aσ_b): E[f σ_rσ_s], Cov(f, σ_rσ_s), Cov(f, φ_rφ_s) (Gaussian IBP).
    let ef_ss = |a: usize, b: usize, g: usize, h: usize, rr: usize, s: usize| -> f64 {
        if a == b {
            2.0 * e4(a, 1, a, 1, rr, s) + 2.0 * e4(a, 2, a, 0, rr, s)
        } else {
            let i = (g == a) as u8 + (h == a) as u8;
            e4(a, i, b, 2 - i, rr, s)
        }
    };
    let cov_f_sig = |a: usize, b: usize, g: usize, h: usize, rr: usize, s: usize| -> f64 {
        ef_ss(a, b, g, h, rr, s) - ex.d(a, b, &[g, h]) * e2[rr * n + s]
    };
    let cov_f_phi = |a: usize, b: usize, g: usize, h: usize, rr: usize, s: usize| -> f64 {
        let ds = distinct(a, b);
        let mut v = 0.0;
        for &kx in &ds {
            for &lx in &ds {
                v += kk(rr, kx) * kk(s, lx) * ex.d(a, b, &[g, h, kx, lx]);
            }
        }
        v
    };
    let mut cps = vec![0.0; n4];
    let mut css = vec![0.0; n4];
    let mut cls = vec![0.0; n4];
    for a in 0..n {
        for b in 0..n {
            let ab = a * n + b;
            let ds = distinct(a, b);
            for c in 0..n {
                for d in 0..n {
                    let cd = c * n + d;
                    let mut v = 0.0;
                    for &g in &distinct(c, d) {
                        for &h in &distinct(c, d) {
                            v += kk(a, g) * kk(b, h) * ex.d(c, d, &[g, h]);
                        }
                    }
                    cps[ab * n2 + cd] = v;
                    css[ab * n2 + cd] = e4(a, 0, b, 0, c, d) - e2[ab] * e2[cd];
                    let mut l = 0.0;
                    for &g in &ds {
                        for &h in &ds {
                            l += 0.5 * r.q[g * n + h] * cov_f_sig(a, b, g, h, c, d);
                        }
                    }
                    cls[ab * n2 + cd] = l;
                }
            }
        }
    }
    // Projection bases and their Gram solvers, one per sample subset S (bit mask).
    let basis_of = |mask: u32| -> Vec<(usize, usize, usize)> {
        let ss: Vec<usize> = (0..n).filter(|&i| mask >> i & 1 == 1).collect();
        let mut out = vec![];
        for fam in 0..2 {
            for (i, &p) in ss.iter().enumerate() {
                for &q in &ss[i..] {
                    out.push((fam, p, q));
                }
            }
        }
        out
    };
    let cov_basis = |x: (usize, usize, usize), y: (usize, usize, usize)| -> f64 {
        let (pq, rs) = (x.1 * n + x.2, y.1 * n + y.2);
        match (x.0, y.0) {
            (0, 0) => kk(x.1, y.1) * kk(x.2, y.2) + kk(x.1, y.2) * kk(x.2, y.1),
            (0, 1) => cps[pq * n2 + rs],
            (1, 0) => cps[rs * n2 + pq],
            _ => css[pq * n2 + rs],
        }
    };
    let mut solvers: FxHashMap<u32, (Basis, PsdSolve)> = FxHashMap::default();
    let mut solver = |mask: u32| {
        solvers
            .entry(mask)
            .or_insert_with(|| {
                let basis = basis_of(mask);
                let m = basis.len();
                let gram: Vec<f64> = (0..m * m)
                    .map(|ij| cov_basis(basis[ij / m], basis[ij % m]))
                    .collect();
                let s = PsdSolve::new(&gram, m);
                (basis, s)
            })
            .clone()
    };
    // β(f_{ab,gh}, S) summed with the weights each use needs.
    let beta = |basis: &[(usize, usize, usize)],
                s: &PsdSolve,
                a: usize,
                b: usize,
                g: usize,
                h: usize|
     -> Vec<f64> {
        let rhs: Vec<f64> = basis
            .iter()
            .map(|&(fam, p, q)| {
                if fam == 0 {
                    cov_f_phi(a, b, g, h, p, q)
                } else {
                    cov_f_sig(a, b, g, h, p, q)
                }
            })
            .collect();
        s.solve(&rhs)
    };
    let mut t_w = vec![vec![]; n4];
    let mut s_w = vec![vec![]; n2];
    for a in 0..n {
        for b in 0..n {
            let ab = a * n + b;
            let ds = distinct(a, b);
            let mask_ab = (1u32 << a) | (1u32 << b);
            // T: ½ Σ_gh Q_gh β(f_{ab,gh}, S), S = {a, b, c, d}
            let mut by_mask: FxHashMap<u32, Vec<(usize, f64)>> = FxHashMap::default();
            for c in 0..n {
                for d in 0..n {
                    let mask = mask_ab | (1u32 << c) | (1u32 << d);
                    let w = by_mask.entry(mask).or_insert_with(|| {
                        let (basis, s) = solver(mask);
                        let mut acc = vec![0.0; basis.len()];
                        for &g in &ds {
                            for &h in &ds {
                                let bt = beta(&basis, &s, a, b, g, h);
                                for (x, y) in acc.iter_mut().zip(bt) {
                                    *x += 0.5 * r.q[g * n + h] * y;
                                }
                            }
                        }
                        basis
                            .iter()
                            .zip(acc)
                            .filter(|(_, w)| *w != 0.0)
                            .map(|(&(fam, p, q), w)| (fam * n2 + p * n + q, w))
                            .collect()
                    });
                    t_w[ab * n2 + c * n + d] = w.clone();
                }
            }
            // S: ½ Σ_gh β(f_{ab,gh}, {a, b}) · X[·]_{gh}
            let (basis, s) = solver(mask_ab);
            for &g in &ds {
                for &h in &ds {
                    let bt = beta(&basis, &s, a, b, g, h);
                    for (&(fam, p, q), w) in basis.iter().zip(bt) {
                        if w != 0.0 {
                            s_w[ab].push((fam * n4 + (p * n + q) * n2 + g * n + h, 0.5 * w));
                        }
                    }
                }
            }
        }
    }
    let j = r.chi.iter().map(|c| c / c_w).collect();
    Ok(Tables {
        r,
        j,
        cps,
        css,
        cls,
        t_w,
        s_w,
    })
}

/// State layout: K0 (N²) | K1 (N²) | V (N⁴) | X_φ (N⁴) | X_σ (N⁴).
struct Sigma<'a> {
    sys: System<'a>,
}

struct Parts<'y> {
    k0: &'y [f64],
    k1: &'y [f64],
    v: &'y [f64],
    xp: &'y [f64],
    xs: &'y [f64],
}

impl Sigma<'_> {
    fn split<'y>(&self, y: &'y [f64]) -> Parts<'y> {
        let (n2, n4) = self.sys.sizes();
        let (k0, rest) = y.split_at(n2);
        let (k1, rest) = rest.split_at(n2);
        let (v, rest) = rest.split_at(n4);
        let (xp, xs) = rest.split_at(n4);
        Parts { k0, k1, v, xp, xs }
    }

    fn tables(&self, k0: &[f64]) -> Result<Tables, RgError> {
        tables(self.sys.act, k0, self.sys.n, self.sys.c_w, &self.sys.opts)
    }

    /// U1 = J:K1 + ⅛⟨∂⁴(σσ)⟩:V + ½Σ_gh X[∂_g∂_h(σσ)]_{gh} (closed).
    fn u1(&self, tb: &Tables, p: &Parts) -> Vec<f64> {
        let (n2, n4) = self.sys.sizes();
        let c_w = self.sys.c_w;
        let mix = self.sys.k1_source(&tb.r, p.k0, p.v, p.k1);
        (0..n2)
            .map(|ab| {
                let s: f64 = tb.s_w[ab]
                    .iter()
                    .map(|&(i, w)| w * if i < n4 { p.xp[i] } else { p.xs[i - n4] })
                    .sum();
                mix[ab] / c_w + s
            })
            .collect()
    }

    /// X[L(σσ)] closed: T[ab, cd].
    fn t_closed(&self, tb: &Tables, p: &Parts) -> Vec<f64> {
        let (n2, _) = self.sys.sizes();
        (0..n2 * n2)
            .map(|i| {
                let cd = i % n2;
                tb.t_w[i]
                    .iter()
                    .map(|&(row, w)| {
                        w * if row < n2 {
                            p.xp[row * n2 + cd]
                        } else {
                            p.xs[(row - n2) * n2 + cd]
                        }
                    })
                    .sum()
            })
            .collect()
    }

    fn eval(&self, y: &[f64]) -> Result<Vec<f64>, RgError> {
        self.sys.check_state(y)?;
        let (n2, _) = self.sys.sizes();
        let c_w = self.sys.c_w;
        let p = self.split(y);
        let tb = self.tables(p.k0)?;
        let mut dy = Vec::with_capacity(y.len());
        dy.extend_from_slice(&tb.r.q);
        dy.extend(self.u1(&tb, &p).iter().map(|u| c_w * u));
        let tr = self.sys.transport(&tb.r, p.v);
        for (i, t) in tr.iter().enumerate() {
            let (ab, cd) = (i / n2, i % n2);
            dy.push(t + c_w * (p.xs[i] + p.xs[cd * n2 + ab]));
        }
        let xpc = mat_mul_t(p.xp, &tb.r.chi, n2);
        dy.extend(xpc.iter().zip(&tb.cps).map(|(x, c)| x + c_w * c));
        let xsc = mat_mul_t(p.xs, &tb.r.chi, n2);
        let t = self.t_closed(&tb, &p);
        dy.extend(
            xsc.iter()
                .zip(&tb.css)
                .zip(&t)
                .map(|((x, c), t)| x + c_w * c + t),
        );
        Ok(dy)
    }

    fn step(&self, y: &[f64], h: f64) -> Result<Vec<f64>, RgError> {
        self.sys.check_state(y)?;
        let (n2, n4) = self.sys.sizes();
        let c_w = self.sys.c_w;
        let p = self.split(y);
        let tb = self.tables(p.k0)?;
        let mut a = tb.r.chi.iter().map(|c| h * c).collect::<Vec<f64>>();
        for i in 0..n2 {
            a[i * n2 + i] += 1.0;
        }
        let mut out = Vec::with_capacity(y.len());
        out.extend(p.k0.iter().zip(&tb.r.q).map(|(k, q)| k + h * q));
        let u1 = self.u1(&tb, &p);
        out.extend(p.k1.iter().zip(&u1).map(|(k, u)| k + h * c_w * u));
        let ava = mat_mul_t(&mat_mul(&a, p.v, n2), &a, n2);
        let ax = mat_mul_t(&a, p.xs, n2);
        let xa = mat_mul_t(p.xs, &a, n2);
        for i in 0..n4 {
            out.push(ava[i] + h * c_w * (ax[i] + xa[i]) + h * h * c_w * c_w * tb.css[i]);
        }
        let xpa = mat_mul_t(p.xp, &a, n2);
        out.extend(xpa.iter().zip(&tb.cps).map(|(x, c)| x + h * c_w * c));
        let t = self.t_closed(&tb, &p);
        let xt: Vec<f64> = p.xs.iter().zip(&t).map(|(x, t)| x + h * t).collect();
        let xta = mat_mul_t(&xt, &a, n2);
        out.extend(
            xta.iter()
                .zip(tb.css.iter().zip(&tb.cls))
                .map(|(x, (c, l))| x + h * c_w * (c + h * l)),
        );
        Ok(out)
    }

    /// Append the observables at one recorded layer.
    fn record(&self, out: &mut PreResTensors, l: usize, t: f64, y: &[f64]) -> Result<(), RgError> {
        let (n2, _) = self.sys.sizes();
        let n = self.sys.n;
        let p = self.split(y);
        let tb = self.tables(p.k0)?;
        let w = wishart(p.k0, n);
        let v4: Vec<f64> = (0..n2 * n2)
            .map(|i| {
                let (ab, cd) = (i / n2, i % n2);
                w[i] + p.xp[i] + p.xp[cd * n2 + ab] + p.v[i]
            })
            .collect();
        let xpv: Vec<f64> = p.xp.iter().zip(p.v).map(|(x, v)| x + v).collect();
        let xpvj = mat_mul_t(&xpv, &tb.j, n2);
        let v_gs: Vec<f64> = (0..n2 * n2)
            .map(|i| {
                let (ab, cd) = (i / n2, i % n2);
                tb.cps[i] + p.xs[cd * n2 + ab] + xpvj[i]
            })
            .collect();
        let xj = mat_mul_t(p.xs, &tb.j, n2);
        let jx = mat_mul_t(&tb.j, p.xs, n2);
        let jvj = mat_mul_t(&mat_mul(&tb.j, p.v, n2), &tb.j, n2);
        let v_ss: Vec<f64> = (0..n2 * n2)
            .map(|i| tb.css[i] + xj[i] + jx[i] + jvj[i])
            .collect();
        out.layers.push(l);
        out.t.push(t);
        out.k0.push(p.k0);
        out.k1.push(p.k1);
        out.u1.push(self.u1(&tb, &p));
        out.v4.push(v4);
        out.v_gs.push(v_gs);
        out.v_ss.push(v_ss);
        out.e2.push(&tb.r.e2);
        Ok(())
    }
}

/// The sigma-closure theory at layers 0 and `targets` (validated by the caller).
#[allow(clippy::too_many_arguments)]
pub(super) fn theory(
    act: &dyn ActivationFn,
    k_init: &[f64],
    n: usize,
    c_w: f64,
    eps: f64,
    targets: &[usize],
    method: Method,
    opts: &QuadOpts,
) -> Result<PreResTensors, RgError> {
    let sg = Sigma {
        sys: System {
            act,
            n,
            c_w,
            closure: K1Closure::GOnly,
            opts: *opts,
        },
    };
    let (n2, n4) = sg.sys.sizes();
    let mut y = vec![0.0; 2 * n2 + 3 * n4];
    y[..n2].copy_from_slice(k_init);
    let h2 = eps * eps;
    let mut out = PreResTensors::with_capacity(n, targets.len() + 1)?;
    sg.record(&mut out, 0, 0.0, &y)
        .map_err(|e| e.context("layer 0"))?;
    match method {
        Method::Discrete => {
            let limit = crate::ode::blowup_limit(&y);
            let mut l = 0;
            for &tl in targets {
                while l < tl {
                    crate::cancel::check()?;
                    y = sg
                        .step(&y, h2)
                        .map_err(|e| e.context(&format!("block {l}")))?;
                    l += 1;
                    crate::ode::check_blowup(&y, h2 * l as f64, limit)
                        .map_err(|e| e.context(&format!("block {l}")))?;
                }
                sg.record(&mut out, l, h2 * l as f64, &y)
                    .map_err(|e| e.context(&format!("layer {l}")))?;
            }
        }
        Method::Ode { rtol, atol } => {
            let f = |y: &[f64]| sg.eval(y);
            let mut ode = Dopri54::new(rtol, atol);
            for &tl in targets {
                let tt = h2 * tl as f64;
                ode.advance(&f, &mut y, tt)?;
                sg.record(&mut out, tl, tt, &y)
                    .map_err(|e| e.context(&format!("t = {tt}")))?;
            }
            out.accepted = ode.stats.accepted;
            out.rejected = ode.stats.rejected;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::preresnet_theory;
    use super::*;
    use crate::activations::Builtin;

    fn kernel(n: usize) -> Vec<f64> {
        (0..n * n)
            .map(|i| if i / n == i % n { 2.0 } else { 0.6 })
            .collect()
    }

    fn run(
        act: &Builtin,
        k: &[f64],
        n: usize,
        eps: f64,
        l: usize,
        m: Method,
        c: K1Closure,
    ) -> PreResTensors {
        preresnet_theory(act, k, n, 2.0, eps, l, l, m, c, &QuadOpts::default()).unwrap()
    }

    fn max_diff(a: &[f64], b: &[f64]) -> f64 {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f64::max)
    }

    #[test]
    fn linear_equals_exact_g_only() {
        // σ(z) = z: Σ̂ = G, the G-only closure is exact, and so must the sigma closure be.
        let ode = Method::Ode {
            rtol: 1e-10,
            atol: 1e-12,
        };
        for (m, nn) in [(Method::Discrete, 3), (ode, 2)] {
            let k = kernel(nn);
            let g = run(&Builtin::Linear, &k, nn, 0.1, 30, m, K1Closure::GOnly);
            let s = run(&Builtin::Linear, &k, nn, 0.1, 30, m, K1Closure::Sigma);
            let scale =
                g.v4.last()
                    .unwrap()
                    .iter()
                    .fold(0.0f64, |a, v| a.max(v.abs()));
            assert!(max_diff(g.k0.as_slice(), s.k0.as_slice()) < 1e-12);
            assert!(
                max_diff(g.v4.as_slice(), s.v4.as_slice()) < 1e-9 * scale,
                "{}",
                max_diff(g.v4.as_slice(), s.v4.as_slice())
            );
            assert!(max_diff(s.v4.as_slice(), s.v_gs.as_slice()) < 1e-9 * scale);
            assert!(max_diff(s.v4.as_slice(), s.v_ss.as_slice()) < 1e-9 * scale);
            assert!(s
                .k1
                .as_slice()
                .iter()
                .chain(s.u1.as_slice())
                .all(|v| v.abs() < 1e-12));
        }
    }

    #[test]
    fn u1_starts_at_zero_with_the_exact_slope() {
        // dU1/dt(0) = ½C_W Σ_gh Cov(∂_g∂_h(σ_aσ_b), σ_gσ_h) exactly (Gaussian rows at ℓ = 0);
        // one input: ½C_W Cov((σ²)'', σ²).
        let (q, c_w) = (1.7, 2.0);
        let o = QuadOpts::default();
        let its = vec![
            vec![Term::deriv_of(2, &[0, 0])],
            vec![Term::prod(&[0, 0])],
            vec![Term::prod(&[1, 1, 0, 0])],
            vec![Term::prod(&[2, 0, 0, 0])],
        ];
        let v = expect_block(&Builtin::Tanh, &[q], 1, &its, &o).unwrap();
        let slope = 0.5 * c_w * (2.0 * v[2] + 2.0 * v[3] - v[0] * v[1]);
        assert!(slope.abs() > 0.05, "{slope}");
        for (eps, tol) in [(0.02, 0.02), (0.01, 0.01)] {
            let h = eps * eps;
            let r = preresnet_theory(
                &Builtin::Tanh,
                &[q],
                1,
                c_w,
                eps,
                1,
                1,
                Method::Discrete,
                K1Closure::Sigma,
                &o,
            )
            .unwrap();
            assert_eq!(r.u1[0][0], 0.0);
            let rel = (r.u1[1][0] / h - slope).abs() / slope.abs();
            assert!(rel < tol, "eps {eps}: {} vs {slope}", r.u1[1][0] / h);
        }
    }

    #[test]
    fn kink_rewrite_of_sigma_second_derivative() {
        // σ''σ^k = D²(σ^{k+1})/(k+1) − kσ^{k−1}σ'²: the identity on a smooth activation …
        let cov = [1.3, 0.4, 0.4, 0.9];
        let o = QuadOpts::default();
        for k in 1..=3usize {
            let mut orders = vec![2u8];
            orders.extend(vec![0u8; k]);
            let direct = expect_block(
                &Builtin::Tanh,
                &cov,
                2,
                &[vec![Term::prod(&orders), Term::prod(&[0])]],
                &o,
            )
            .unwrap()[0];
            let parts = sample_terms(&orders, 2).unwrap();
            let its: Vec<Vec<Term>> = parts
                .iter()
                .map(|(_, t)| vec![t.clone(), Term::prod(&[0])])
                .collect();
            let v = expect_block(&Builtin::Tanh, &cov, 2, &its, &o).unwrap();
            let rewritten: f64 = parts.iter().zip(v).map(|((c, _), v)| c * v).sum();
            assert!(
                (direct - rewritten).abs() < 1e-12,
                "{k}: {direct} {rewritten}"
            );
        }
        // … and for ReLU, σ''σ = δ(z) relu(z) = 0 while ⟨σ''_0 σ_1³⟩ = p(0) E[relu(z_1)³ | z_0 = 0].
        let t = four_table(&Builtin::Relu, &cov, 2, &o).unwrap();
        let e = |c: [u16; 4]| t[&key4(c)];
        assert!(e([code(0, 2), code(0, 0), code(1, 0), code(1, 0)]).abs() < 1e-14);
        let v: f64 = 0.9 - 0.4 * 0.4 / 1.3;
        let p0 = 1.0 / (2.0 * std::f64::consts::PI * 1.3).sqrt();
        // E[relu(x)³] for x ~ N(0, v) = v^{3/2} · 2/√(2π)
        let want = p0 * v.powf(1.5) * 2.0 / (2.0 * std::f64::consts::PI).sqrt();
        let got = e([code(0, 2), code(1, 0), code(1, 0), code(1, 0)]);
        assert!((got - want).abs() < 1e-12, "{got} {want}");
    }

    #[test]
    fn discrete_converges_to_ode() {
        let k = kernel(2);
        let ode = Method::Ode {
            rtol: 1e-10,
            atol: 1e-12,
        };
        let mut errs = vec![];
        for eps in [0.2f64, 0.1] {
            let l = (0.5 / (eps * eps)).round() as usize;
            let c = run(&Builtin::Tanh, &k, 2, eps, l, ode, K1Closure::Sigma);
            let d = run(
                &Builtin::Tanh,
                &k,
                2,
                eps,
                l,
                Method::Discrete,
                K1Closure::Sigma,
            );
            errs.push([
                max_diff(c.v4.from_layer(1), d.v4.from_layer(1)),
                max_diff(c.k1.from_layer(1), d.k1.from_layer(1)),
            ]);
        }
        for i in 0..2 {
            let ratio = errs[0][i] / errs[1][i];
            assert!(ratio > 3.3 && ratio < 4.7, "{errs:?}");
        }
    }
}
