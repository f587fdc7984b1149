//! Pre-activation ResNets at initialisation in the depth scaling t = ε²ℓ (spec `resnets.md`,
//! paper (a), Kawase & Ota): first order in 1/n.
//!
//! Model: the rows of φ⁰ ∈ R^{n×N} are i.i.d. N(0, K⁰); for ℓ = 0…L−1,
//! φ^{ℓ+1} = φ^ℓ + ε W^ℓ σ(φ^ℓ), W^ℓ_{ij} ~ N(0, C_W/n), no bias.  G = φᵀφ/n is the
//! empirical kernel.  Normalisation of the 1/n tensors (spec a.2):
//! `V4_{ab,cd} = n·Cov(G_ab, G_cd)` (Wishart at ℓ = 0: `K_ac K_bd + K_ad K_bc`) and
//! `K1 = n(E[G] − K0)`.
//!
//! With expectations at K0 (derivative / Price form, so kinks are exact), Q = C_W⟨σσ⟩ and
//! the transport operator `χ[A]_ab = (C_W/2) Σ_{g,h ∈ {a,b}} ⟨∂_g∂_h(σ_aσ_b)⟩ A_gh`:
//!
//! * **ODE** (continuous depth): `dK0/dt = Q`,
//!   `dV4/dt = χ₍₁₂₎V4 + χ₍₃₄₎V4 + Σ(K0, Q)`, `Σ_{ab,cd}(K,Q) = K_ac Q_bd + K_ad Q_bc + K_bc Q_ad + K_bd Q_ac`,
//!   `dK1/dt = χ[K1] + (C_W/8) Σ_{g₁..g₄} ⟨∂_{g₁}…∂_{g₄}(σ_aσ_b)⟩ W_{g₁g₂,g₃g₄}` (= (C_W/2) Hess_K E2 : W),
//!   where W = V4 (the spec's "K1,EFT", G-only closure) or, with [`K1Closure::Connected`],
//!   W = V4 − Wishart(K0) (the connected single-neuron vertex; gives U1(0) = 0 exactly).
//! * **Discrete** (one block per step, the G-only closure of the exact block law; exact
//!   in ε for K0): `K0' = K0 + ε²Q`, `V4' = M V4 Mᵀ + ε²Σ(K0,Q) + ε⁴(Q_ac Q_bd + Q_ad Q_bc)`
//!   with `M = 1 + ε²χ` acting on each index pair, `K1' = K1 + ε²(χ[K1] + (C_W/8)Σ⟨∂⁴⟩W)`.
//!   The ODE is its ε → 0 limit (forward Euler with step ε² drops only the ε⁴ terms).
//!
//! The ODE is integrated with the Dormand–Prince 5(4) embedded pair ([`crate::ode`]), local error control
//! per component `|err_i| ≤ atol + rtol·max(|y_i|, |y_i'|)` (RMS norm), hitting every output
//! time exactly.  A failed step (non-finite state, non-PSD kernel, step-size underflow)
//! is an [`RgError`].

use rayon::prelude::*;

use crate::activations::ActivationFn;
use crate::expect::QuadOpts;
use crate::layers::Layers;
use crate::ode::Dopri54;
use crate::resmlp::MAXD;
use crate::tables::{distinct, PairTable};
use crate::RgError;

mod sigma;

/// How the K1 source closes the single-neuron four-point function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum K1Closure {
    /// The spec's K1,EFT: Hess : V4 with the full n·Cov(G).
    GOnly,
    /// Hess : (V4 − Wishart(K0)): only the connected part of the four-point function.
    Connected,
    /// The sigma-kernel ("G+Σ") closure of [`sigma`]: the empirical sigma-kernel Σ̂ and its
    /// time integral are carried as state; changes V4 as well as K1.
    Sigma,
}

/// Integration method.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Method {
    /// Adaptive Dormand–Prince 5(4) on the continuous-depth ODEs.
    Ode { rtol: f64, atol: f64 },
    /// The discrete block-by-block recursion.
    Discrete,
}

/// Trajectories at the recorded layers, each family in one layer-major buffer ([`Layers`]),
/// row-major per layer: K0, K1, E2 = ⟨σσ⟩ at K0, U1 (N²); V4, V_GS, V_SS (N⁴).  `layers[i]` is ℓ, `t[i] = ε²ℓ`.
///
/// `u1` is the closure's model of the exact K1 source, `dK1/dt = C_W U1` with
/// `U1 = n(E[Σ̂] − E2)`; `v_gs[ab,cd] = n·Cov(G_ab, Σ̂_cd)` and `v_ss = n·Cov(Σ̂, Σ̂)` are the
/// closure's predictions for the sigma-kernel fluctuations (for the G-only closures
/// δΣ̂ = J δG with `J = ∂E2/∂K = χ/C_W`, so `v_gs = V4 Jᵀ`, `v_ss = J V4 Jᵀ`).
#[derive(Clone, Debug, Default)]
pub struct PreResTensors {
    pub n: usize,
    pub layers: Vec<usize>,
    pub t: Vec<f64>,
    pub k0: Layers,
    pub v4: Layers,
    pub k1: Layers,
    pub e2: Layers,
    pub u1: Layers,
    pub v_gs: Layers,
    pub v_ss: Layers,
    /// Accepted and rejected ODE steps (0 for the discrete recursion).
    pub accepted: usize,
    pub rejected: usize,
}

impl PreResTensors {
    /// Empty, with every family's buffer allocated for `records` recorded layers of N inputs.
    fn with_capacity(n: usize, records: usize) -> Result<PreResTensors, RgError> {
        let (n2, n4) = (n * n, n * n * n * n);
        let four = || Layers::try_with_capacity(n4, records, "the recorded four-point tensors");
        Ok(PreResTensors {
            n,
            layers: Vec::with_capacity(records),
            t: Vec::with_capacity(records),
            k0: Layers::with_capacity(n2, records),
            v4: four()?,
            k1: Layers::with_capacity(n2, records),
            e2: Layers::with_capacity(n2, records),
            u1: Layers::with_capacity(n2, records),
            v_gs: four()?,
            v_ss: four()?,
            accepted: 0,
            rejected: 0,
        })
    }
}

/// Everything the right-hand sides need at one kernel K0.
struct Rhs {
    /// Pair expectations at K0 (up to four derivatives of σ_aσ_b).
    pairs: PairTable,
    q: Vec<f64>,
    e2: Vec<f64>,
    /// χ as an (N², N²) matrix acting on a pair index.
    chi: Vec<f64>,
    /// Hess operator (N², N²): `dK1_ab += Σ_{gh,kl} hess[ab, gh·N²+kl]`… stored per (ab) as
    /// a sparse list of (gh, kl index into V4, coefficient).
    hess: Vec<Vec<(usize, f64)>>,
}

fn build_rhs(
    act: &dyn ActivationFn,
    k0: &[f64],
    n: usize,
    c_w: f64,
    opts: &QuadOpts,
) -> Result<Rhs, RgError> {
    let pairs = PairTable::sigma_sigma(act, k0, n, MAXD, opts)?;
    let ex = &pairs;
    let n2 = n * n;
    let mut e2 = vec![0.0; n2];
    let mut chi = vec![0.0; n2 * n2];
    let mut hess = vec![vec![]; n2];
    for a in 0..n {
        for b in 0..n {
            let ab = a * n + b;
            e2[ab] = ex.d(a, b, &[]);
            let gs = distinct(a, b);
            for &g in &gs {
                for &h in &gs {
                    chi[ab * n2 + g * n + h] += 0.5 * c_w * ex.d(a, b, &[g, h]);
                }
            }
            for &g1 in &gs {
                for &g2 in &gs {
                    for &g3 in &gs {
                        for &g4 in &gs {
                            let c = c_w / 8.0 * ex.d(a, b, &[g1, g2, g3, g4]);
                            hess[ab].push(((g1 * n + g2) * n2 + g3 * n + g4, c));
                        }
                    }
                }
            }
        }
    }
    let q = e2.iter().map(|v| c_w * v).collect();
    Ok(Rhs {
        pairs,
        q,
        e2,
        chi,
        hess,
    })
}

struct System<'a> {
    act: &'a dyn ActivationFn,
    n: usize,
    c_w: f64,
    closure: K1Closure,
    opts: QuadOpts,
}

impl System<'_> {
    fn sizes(&self) -> (usize, usize) {
        let n2 = self.n * self.n;
        (n2, n2 * n2)
    }

    fn check_state(&self, y: &[f64]) -> Result<(), RgError> {
        if y.iter().any(|v| !v.is_finite()) {
            return Err(RgError::value(
                "the state became non-finite (the kernel blew up): reduce eps or depth, or C_W",
            ));
        }
        Ok(())
    }

    /// K1 source with the chosen closure.
    fn k1_source(&self, r: &Rhs, k0: &[f64], v4: &[f64], k1: &[f64]) -> Vec<f64> {
        let n = self.n;
        let (n2, _) = self.sizes();
        (0..n2)
            .map(|ab| {
                let mut s: f64 = (0..n2).map(|gh| r.chi[ab * n2 + gh] * k1[gh]).sum();
                for &(idx, c) in &r.hess[ab] {
                    let mut w = v4[idx];
                    if self.closure == K1Closure::Connected {
                        let (gh, kl) = (idx / n2, idx % n2);
                        let (g, h, k, l) = (gh / n, gh % n, kl / n, kl % n);
                        w -= k0[g * n + k] * k0[h * n + l] + k0[g * n + l] * k0[h * n + k];
                    }
                    s += c * w;
                }
                s
            })
            .collect()
    }

    /// χ₍₁₂₎V + χ₍₃₄₎V.
    fn transport(&self, r: &Rhs, v4: &[f64]) -> Vec<f64> {
        let (n2, n4) = self.sizes();
        let mut out = vec![0.0; n4];
        out.par_chunks_mut(n2).enumerate().for_each(|(ab, row)| {
            for (cd, o) in row.iter_mut().enumerate() {
                let mut s = 0.0;
                for gh in 0..n2 {
                    let c1 = r.chi[ab * n2 + gh];
                    if c1 != 0.0 {
                        s += c1 * v4[gh * n2 + cd];
                    }
                    let c2 = r.chi[cd * n2 + gh];
                    if c2 != 0.0 {
                        s += c2 * v4[ab * n2 + gh];
                    }
                }
                *o = s;
            }
        });
        out
    }

    fn source(&self, k: &[f64], q: &[f64], (a, b, c, d): (usize, usize, usize, usize)) -> f64 {
        let n = self.n;
        let kk = |i: usize, j: usize| k[i * n + j];
        let qq = |i: usize, j: usize| q[i * n + j];
        kk(a, c) * qq(b, d) + kk(a, d) * qq(b, c) + kk(b, c) * qq(a, d) + kk(b, d) * qq(a, c)
    }

    fn eval(&self, y: &[f64]) -> Result<Vec<f64>, RgError> {
        self.check_state(y)?;
        let (n2, n4) = self.sizes();
        let n = self.n;
        let (k0, rest) = y.split_at(n2);
        let (v4, k1) = rest.split_at(n4);
        let r = build_rhs(self.act, k0, n, self.c_w, &self.opts)?;
        let mut dy = Vec::with_capacity(y.len());
        dy.extend_from_slice(&r.q);
        let tr = self.transport(&r, v4);
        for (i, t) in tr.iter().enumerate() {
            let (a, b, c, d) = (i / (n2 * n), (i / n2) % n, (i / n) % n, i % n);
            dy.push(t + self.source(k0, &r.q, (a, b, c, d)));
        }
        dy.extend(self.k1_source(&r, k0, v4, k1));
        Ok(dy)
    }
}

/// Check the common inputs.
fn validate(k_init: &[f64], n: usize, c_w: f64, eps: f64, depth: usize) -> Result<(), RgError> {
    if n == 0 {
        return Err(RgError::value("no inputs (N = 0)"));
    }
    if k_init.len() != n * n {
        return Err(RgError::value(format!(
            "the input kernel must be {n}x{n}, got {} entries",
            k_init.len()
        )));
    }
    if k_init.iter().any(|v| !v.is_finite()) {
        return Err(RgError::value(
            "the input kernel (or inputs) contain NaN or inf: pass finite values",
        ));
    }
    crate::linalg::validate_covariance(k_init, n).map_err(|e| e.context("input kernel K0(0)"))?;
    if !(eps.is_finite() && eps > 0.0) {
        return Err(RgError::value(format!(
            "eps must be finite and > 0 (the branch scale, eps = sqrt(T/L)), got {eps}"
        )));
    }
    if !(c_w.is_finite() && c_w > 0.0) {
        return Err(RgError::value(format!(
            "C_W must be finite and > 0, got {c_w}"
        )));
    }
    if depth < 1 {
        return Err(RgError::value(
            "depth L must be >= 1 (number of residual blocks)",
        ));
    }
    Ok(())
}

/// Kernel K0, vertex V4 and mean correction K1 of a pre-activation ResNet at layers
/// ℓ = 0, every, 2·every, …, L (L always included), from the input kernel `k_init` (N×N).
#[allow(clippy::too_many_arguments)]
pub fn preresnet_theory(
    act: &dyn ActivationFn,
    k_init: &[f64],
    n: usize,
    c_w: f64,
    eps: f64,
    depth: usize,
    every: usize,
    method: Method,
    closure: K1Closure,
    opts: &QuadOpts,
) -> Result<PreResTensors, RgError> {
    validate(k_init, n, c_w, eps, depth)?;
    if every == 0 {
        return Err(RgError::value("every must be >= 1"));
    }
    if let Method::Ode { rtol, atol } = method {
        if !(rtol.is_finite() && rtol > 0.0 && atol.is_finite() && atol >= 0.0) {
            return Err(RgError::value(format!(
                "rtol must be > 0 and atol >= 0 (finite), got rtol={rtol}, atol={atol}"
            )));
        }
    }
    let targets: Vec<usize> = (1..=depth)
        .filter(|l| l % every == 0 || *l == depth)
        .collect();
    if closure == K1Closure::Sigma {
        return sigma::theory(act, k_init, n, c_w, eps, &targets, method, opts);
    }
    let sys = System {
        act,
        n,
        c_w,
        closure,
        opts: *opts,
    };
    let (n2, n4) = sys.sizes();
    let mut y = vec![0.0; n2 + n4 + n2];
    y[..n2].copy_from_slice(k_init);
    y[n2..n2 + n4].copy_from_slice(&wishart(k_init, n));
    let h2 = eps * eps;
    let mut out = PreResTensors::with_capacity(n, targets.len() + 1)?;
    let record = |out: &mut PreResTensors, l: usize, y: &[f64]| -> Result<(), RgError> {
        let (k0, rest) = y.split_at(n2);
        let (v4, k1) = rest.split_at(n4);
        let r = build_rhs(act, k0, n, c_w, opts)?;
        let j: Vec<f64> = r.chi.iter().map(|c| c / c_w).collect();
        out.layers.push(l);
        out.t.push(h2 * l as f64);
        out.k0.push(k0);
        out.v4.push(v4);
        out.k1.push(k1);
        out.u1.push(
            sys.k1_source(&r, k0, v4, k1)
                .iter()
                .map(|s| s / c_w)
                .collect::<Vec<f64>>(),
        );
        let v_gs = mat_mul_t(v4, &j, n2);
        out.v_ss.push(mat_mul(&j, &v_gs, n2));
        out.v_gs.push(v_gs);
        out.e2.push(r.e2);
        Ok(())
    };
    record(&mut out, 0, &y)?;
    match method {
        Method::Discrete => {
            let limit = crate::ode::blowup_limit(&y);
            let mut l = 0;
            for &tl in &targets {
                while l < tl {
                    crate::cancel::check()?;
                    y = discrete_step(&sys, &y, h2)
                        .map_err(|e| e.context(&format!("block {l}")))?;
                    l += 1;
                    crate::ode::check_blowup(&y, h2 * l as f64, limit)
                        .map_err(|e| e.context(&format!("block {l}")))?;
                }
                record(&mut out, l, &y).map_err(|e| e.context(&format!("layer {l}")))?;
            }
        }
        Method::Ode { rtol, atol } => {
            let f = |y: &[f64]| sys.eval(y);
            let mut ode = Dopri54::new(rtol, atol);
            for &tl in &targets {
                let tt = h2 * tl as f64;
                ode.advance(&f, &mut y, tt)?;
                record(&mut out, tl, &y).map_err(|e| e.context(&format!("t = {tt}")))?;
            }
            out.accepted = ode.stats.accepted;
            out.rejected = ode.stats.rejected;
        }
    }
    Ok(out)
}

/// Wishart four-point function `W_{ab,cd} = K_ac K_bd + K_ad K_bc` (= n·Cov(G) of i.i.d.
/// Gaussian rows with kernel K), as an (N², N²) pair-space matrix.
fn wishart(k: &[f64], n: usize) -> Vec<f64> {
    let mut w = vec![0.0; n * n * n * n];
    for a in 0..n {
        for b in 0..n {
            for c in 0..n {
                for d in 0..n {
                    w[((a * n + b) * n + c) * n + d] =
                        k[a * n + c] * k[b * n + d] + k[a * n + d] * k[b * n + c];
                }
            }
        }
    }
    w
}

/// `A B` for (m, m) row-major matrices.
fn mat_mul(a: &[f64], b: &[f64], m: usize) -> Vec<f64> {
    let mut out = vec![0.0; m * m];
    for i in 0..m {
        for k in 0..m {
            let x = a[i * m + k];
            if x != 0.0 {
                for j in 0..m {
                    out[i * m + j] += x * b[k * m + j];
                }
            }
        }
    }
    out
}

/// `A Bᵀ` for (m, m) row-major matrices.
fn mat_mul_t(a: &[f64], b: &[f64], m: usize) -> Vec<f64> {
    let mut out = vec![0.0; m * m];
    for i in 0..m {
        for j in 0..m {
            out[i * m + j] = (0..m).map(|k| a[i * m + k] * b[j * m + k]).sum();
        }
    }
    out
}

/// `M` (an n2×n2 pair-space operator) applied to pair slot `slot` (0: first, 1: second) of a
/// pair-pair tensor `v` (n2×n2, row-major): `(M·v)[x, y] = Σ_g M[x, g] v[g, y]` for slot 0,
/// `Σ_g M[y, g] v[x, g]` for slot 1.
fn apply_on_pair(m: &impl Fn(usize, usize) -> f64, v: &[f64], n2: usize, slot: usize) -> Vec<f64> {
    let mut out = vec![0.0; n2 * n2];
    for x in 0..n2 {
        for g in 0..n2 {
            let mxg = m(x, g);
            if mxg == 0.0 {
                continue;
            }
            for y in 0..n2 {
                if slot == 0 {
                    out[x * n2 + y] += mxg * v[g * n2 + y];
                } else {
                    out[y * n2 + x] += mxg * v[y * n2 + g];
                }
            }
        }
    }
    out
}

/// One block of the discrete recursion.
fn discrete_step(sys: &System, y: &[f64], h2: f64) -> Result<Vec<f64>, RgError> {
    let (n2, n4) = sys.sizes();
    let n = sys.n;
    sys.check_state(y)?;
    let (k0, rest) = y.split_at(n2);
    let (v4, k1) = rest.split_at(n4);
    let r = build_rhs(sys.act, k0, n, sys.c_w, &sys.opts)?;
    let mut out = Vec::with_capacity(y.len());
    out.extend(k0.iter().zip(&r.q).map(|(k, q)| k + h2 * q));
    // M V4 Mᵀ with M = 1 + h2 χ: first apply on the first pair, then on the second.
    let m = |x: usize, g: usize| h2 * r.chi[x * n2 + g] + if x == g { 1.0 } else { 0.0 };
    let w = apply_on_pair(&m, v4, n2, 0);
    let mut v_new = apply_on_pair(&m, &w, n2, 1);
    let q = &r.q;
    for (i, v) in v_new.iter_mut().enumerate() {
        let (a, b, c, d) = (i / (n2 * n), (i / n2) % n, (i / n) % n, i % n);
        *v += h2 * sys.source(k0, q, (a, b, c, d))
            + h2 * h2 * (q[a * n + c] * q[b * n + d] + q[a * n + d] * q[b * n + c]);
    }
    out.extend(v_new);
    let src = sys.k1_source(&r, k0, v4, k1);
    out.extend(k1.iter().zip(&src).map(|(k, s)| k + h2 * s));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::activations::Builtin;

    fn paper_kernel() -> Vec<f64> {
        let n = 4;
        (0..n * n)
            .map(|i| if i / n == i % n { 2.0 } else { 0.6 })
            .collect()
    }

    #[test]
    fn linear_closed_forms() {
        let k = paper_kernel();
        let (cw, eps, l) = (1.5, 0.1, 50);
        let o = QuadOpts::default();
        let d = preresnet_theory(
            &Builtin::Linear,
            &k,
            4,
            cw,
            eps,
            l,
            10,
            Method::Discrete,
            K1Closure::GOnly,
            &o,
        )
        .unwrap();
        let ode = Method::Ode {
            rtol: 1e-10,
            atol: 1e-12,
        };
        let c = preresnet_theory(
            &Builtin::Linear,
            &k,
            4,
            cw,
            eps,
            l,
            10,
            ode,
            K1Closure::GOnly,
            &o,
        )
        .unwrap();
        let s = 1.0 + eps * eps * cw;
        for (i, &ll) in d.layers.iter().enumerate() {
            let t = eps * eps * ll as f64;
            let u = 1.0 + ll as f64 * (1.0 - 1.0 / (s * s));
            for (a, &ka) in k.iter().enumerate() {
                let kd = s.powi(ll as i32) * ka;
                assert!((d.k0[i][a] - kd).abs() < 1e-12 * kd.abs().max(1.0));
                let kc = (cw * t).exp() * ka;
                assert!((c.k0[i][a] - kc).abs() < 1e-8 * kc.abs().max(1.0));
                assert!(d.k1[i][a].abs() < 1e-12 && c.k1[i][a].abs() < 1e-12);
            }
            for idx in 0..256 {
                let (a, b, cc, dd) = (idx / 64, (idx / 16) % 4, (idx / 4) % 4, idx % 4);
                let w = k[a * 4 + cc] * k[b * 4 + dd] + k[a * 4 + dd] * k[b * 4 + cc];
                let vd = s.powi(2 * ll as i32) * u * w;
                let vc = (2.0 * cw * t).exp() * (1.0 + 2.0 * cw * t) * w;
                assert!((d.v4[i][idx] - vd).abs() < 1e-10 * vd.abs().max(1.0));
                assert!((c.v4[i][idx] - vc).abs() < 1e-8 * vc.abs().max(1.0));
            }
        }
        assert!(c.accepted > 0);
    }

    #[test]
    fn bad_inputs() {
        let k = paper_kernel();
        let o = QuadOpts::default();
        let run = |k: &[f64], eps: f64, l: usize| {
            preresnet_theory(
                &Builtin::Tanh,
                k,
                4,
                2.0,
                eps,
                l,
                1,
                Method::Discrete,
                K1Closure::GOnly,
                &o,
            )
        };
        assert!(run(&k, 0.0, 4).unwrap_err().to_string().contains("eps"));
        assert!(run(&k, 0.1, 0).unwrap_err().to_string().contains("depth"));
        let mut kb = k.clone();
        kb[0] = f64::NAN;
        assert!(run(&kb, 0.1, 4).unwrap_err().to_string().contains("NaN"));
        let mut kn = k.clone();
        kn[1] = 5.0;
        kn[4] = 5.0;
        assert!(run(&kn, 0.1, 4).is_err());
    }

    #[test]
    fn blowup_is_an_error() {
        // σ = z²: dK/dt = 3 C_W K² blows up at t = 1/(3 C_W K).
        let k = [1.0];
        let r = preresnet_theory(
            &Builtin::Monomial(2),
            &k,
            1,
            50.0,
            1.0,
            40,
            1,
            Method::Ode {
                rtol: 1e-8,
                atol: 1e-10,
            },
            K1Closure::GOnly,
            &QuadOpts::default(),
        );
        assert!(r.is_err(), "{r:?}");
    }
}
