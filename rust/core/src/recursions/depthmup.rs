//! Depth-μP ResNets at initialisation, infinite width (spec `nfd.md` §2.1, [C, sim]).
//!
//! Model (nfd.md §1.1): `h_0 = Ux/√d`, `h_ℓ = h_{ℓ-1} + a_L W_ℓ φ(h_{ℓ-1})/√n` (ℓ = 1..L),
//! `f = vᵀr/(γ0 n)` with `r = h_L` (readout "h") or `φ(h_L)` (readout "phi"); every
//! parameter group trained with learning rate ηγ0²n (times a per-group weight w, see
//! [`DepthMuPSpec`]).  With the pair expectations `Φ(K) = ⟨φφ⟩`, `Ψ(K) = ⟨φ'φ'⟩` (closed
//! forms for relu/erf/…, the accurate quadrature of [`crate::expect`] otherwise):
//!
//! * forward kernel `K_ℓ = K_{ℓ-1} + a_L² Φ(K_{ℓ-1})`, `K_0 = K_in = xxᵀ/d`;
//! * gradient kernel `G_ℓ = ⟨g_ℓ, g_ℓ'⟩/n` (g_ℓ = γ0 n ∂f/∂h_ℓ), by gradient independence:
//!   `G_{ℓ-1} = G_ℓ ⊙ (1 + a_L² Ψ(K_{ℓ-1}))`, `G_L = 𝟏𝟏ᵀ` (readout h) or `G_L = Ψ(K_L)`
//!   (readout phi: `g_L = v ⊙ φ'(h_L)`, so `G_L = E[v²]⟨φ'φ'⟩`);
//! * NTK (first GD step `f(1) = f(0) + ηΘΔ(0)`):
//!   `Θ = w_out R + w_hid a_L² Σ_{ℓ=1}^L G_ℓ ⊙ Φ(K_{ℓ-1}) + w_in G_0 ⊙ K_in`, with
//!   `R = K_L` (readout h) or `Φ(K_L)` (readout phi);
//! * decoupled network's first-step kernel: the same with G replaced by the forward/backward
//!   cross kernel `C_ℓ = ⟨g_ℓ, g̃_ℓ⟩/n = G_L` for every ℓ (the independent W̃ cross terms
//!   average out), so `Θ_dec = w_out R + w_hid a_L² G_L ⊙ Σ Φ(K_{ℓ-1}) + w_in G_L ⊙ K_in`
//!   (`a_L² Σ Φ(K_{ℓ-1}) = K_L − K_in` exactly).
//!
//! Depth limit (L → ∞ at `L a_L² → c`: c = T for the √(T/L) branch, 0 for T/L), in s = ℓ/L:
//! `dK/ds = cΦ(K)`, `G(s) = G(1) ⊙ exp(∫_s^1 cΨ)`,
//! `Θ_∞ = w_out R(1) + w_hid^∞ ∫_0^1 c G ⊙ Φ ds + w_in G(0) ⊙ K_in`.  Integrated with
//! Dormand–Prince 5(4) ([`crate::ode`]) on the state `(K, I, J)`, `I(s) = ∫_0^s cΨ`,
//! `J(s) = ∫_0^s c e^{-I} ⊙ Φ`, so that `G(s) = G(1) ⊙ e^{I(1) − I(s)}` and the hidden term is
//! `G(1) ⊙ e^{I(1)} ⊙ J(1)`; the finite-L recursion is its exact Euler scheme (error O(1/L)).

use crate::activations::ActivationFn;
use crate::expect::QuadOpts;
use crate::layers::Layers;
use crate::ode::Dopri54;
use crate::tables::PairTable;
use crate::RgError;

/// The network's parameters that the infinite-width kernels depend on.
#[derive(Clone, Debug)]
pub struct DepthMuPSpec {
    /// Number of residual blocks L (≥ 1).
    pub depth: usize,
    /// `a_L²`, the per-block variance factor (T/L for the √(T/L) branch).
    pub block_variance: f64,
    /// Readout `φ(h_L)` instead of `h_L`.
    pub readout_phi: bool,
    /// NTK weights of the groups at finite L (learning rate / ηγ0²n; 0 = frozen):
    /// input U, hidden W_ℓ, readout v.
    pub w_input: f64,
    pub w_hidden: f64,
    pub w_readout: f64,
}

impl DepthMuPSpec {
    pub fn validate(&self) -> Result<(), RgError> {
        if self.depth == 0 {
            return Err(RgError::value("depth must be >= 1"));
        }
        if !(self.block_variance.is_finite() && self.block_variance > 0.0) {
            return Err(RgError::value(format!(
                "block_variance a_L² must be finite and > 0, got {}",
                self.block_variance
            )));
        }
        for (name, w) in [
            ("w_input", self.w_input),
            ("w_hidden", self.w_hidden),
            ("w_readout", self.w_readout),
        ] {
            if !(w.is_finite() && w >= 0.0) {
                return Err(RgError::value(format!(
                    "{name} (a learning-rate weight) must be finite and >= 0, got {w}"
                )));
            }
        }
        Ok(())
    }
}

/// Finite-L kernels: K, G, Φ(K_ℓ), Ψ(K_ℓ) at ℓ = 0..L (N×N each, row-major), Θ and Θ_dec.
#[derive(Clone, Debug, Default)]
pub struct DepthMuPTensors {
    pub n: usize,
    pub k: Layers,
    pub g: Layers,
    pub phi: Layers,
    pub psi: Layers,
    pub theta: Vec<f64>,
    pub theta_dec: Vec<f64>,
}

/// The L → ∞ limit on the grid s = ℓ/L, ℓ = 0..L (`grid + 1` points): K(s), G(s); Θ_∞, Θ_dec,∞.
#[derive(Clone, Debug, Default)]
pub struct DepthMuPLimit {
    pub n: usize,
    pub s: Vec<f64>,
    pub k: Layers,
    pub g: Layers,
    pub theta: Vec<f64>,
    pub theta_dec: Vec<f64>,
    pub accepted: usize,
    pub rejected: usize,
}

/// `K_in = xxᵀ/d` for x (N×d, row-major), validated.
pub fn input_kernel(x: &[f64], n: usize, d: usize) -> Result<Vec<f64>, RgError> {
    if n == 0 {
        return Err(RgError::value("no inputs (N = 0)"));
    }
    if d == 0 || x.len() != n * d {
        return Err(RgError::value("x has the wrong size"));
    }
    if x.iter().any(|v| !v.is_finite()) {
        return Err(RgError::value("x contains NaN or inf"));
    }
    let mut k = vec![0.0; n * n];
    for a in 0..n {
        for b in a..n {
            let dot: f64 = (0..d).map(|i| x[a * d + i] * x[b * d + i]).sum::<f64>() / d as f64;
            k[a * n + b] = dot;
            k[b * n + a] = dot;
        }
    }
    Ok(k)
}

/// Φ and Ψ of a piecewise-linear activation `φ(z) = l·z (z < 0), r·z (z > 0)` (relu: l = 0,
/// r = 1; leaky relu: l = a) at one pair with variances `q1, q2 > 0` and covariance `k12`,
/// from the arc-cosine kernels (Cho & Saul): with `φ = l·z + (r − l)·relu(z)`, `⟨z relu(z')⟩ =
/// k12/2` and `⟨H(z)⟩ = 1/2`,
/// `Φ = l r k12 + (r − l)² √(q1 q2)/(2π) (sin θ + (π − θ) cos θ)`,
/// `Ψ = l r + (r − l)² (π − θ)/(2π)`, `cos θ = k12/√(q1 q2)`.
fn pwl_phi_psi((l, r): (f64, f64), q1: f64, q2: f64, k12: f64) -> (f64, f64) {
    use std::f64::consts::PI;
    let norm = (q1 * q2).sqrt();
    let c = (k12 / norm).clamp(-1.0, 1.0);
    let theta = c.acos();
    let (lr, d2) = (l * r, (r - l) * (r - l));
    let phi = lr * k12 + d2 * norm / (2.0 * PI) * ((1.0 - c * c).sqrt() + (PI - theta) * c);
    let psi = lr + d2 * (PI - theta) / (2.0 * PI);
    (phi, psi)
}

/// Φ(K) and Ψ(K) (N×N each) at one kernel, every input pair in parallel.  Piecewise-linear
/// activations (relu, leaky relu) at positive variances use the arc-cosine closed forms of
/// [`pwl_phi_psi`] directly over all pairs (the general dispatch reaches the same values
/// through Stein's identity and orthant probabilities, several times slower).
pub fn phi_psi(
    act: &dyn ActivationFn,
    k: &[f64],
    n: usize,
    opts: &QuadOpts,
) -> Result<(Vec<f64>, Vec<f64>), RgError> {
    if let Some(slopes) = act.piecewise_linear() {
        if !opts.quadrature_only
            && k.len() == n * n
            && (0..n).all(|a| k[a * n + a].is_finite() && k[a * n + a] > 0.0)
            && k.iter().all(|v| v.is_finite())
        {
            return phi_psi_pwl(slopes, k, n);
        }
    }
    phi_psi_general(act, k, n, opts)
}

/// [`phi_psi`] by the arc-cosine closed forms, rows in parallel.
fn phi_psi_pwl(slopes: (f64, f64), k: &[f64], n: usize) -> Result<(Vec<f64>, Vec<f64>), RgError> {
    use rayon::prelude::*;
    let mut phi = vec![0.0; n * n];
    let mut psi = vec![0.0; n * n];
    phi.par_chunks_mut(n)
        .zip(psi.par_chunks_mut(n))
        .enumerate()
        .for_each(|(a, (prow, srow))| {
            for b in 0..n {
                // the same arguments in the same order for (a, b) and (b, a): symmetric bitwise
                let (i, j) = if a <= b { (a, b) } else { (b, a) };
                let (p, s) = pwl_phi_psi(slopes, k[i * n + i], k[j * n + j], k[i * n + j]);
                prow[b] = p;
                srow[b] = s;
            }
        });
    crate::cancel::check()?;
    if phi.iter().chain(psi.iter()).any(|v| !v.is_finite()) {
        return Err(RgError::value(
            "Φ or Ψ is not finite (the kernel blew up): reduce the horizon T or the inputs' scale",
        ));
    }
    Ok((phi, psi))
}

/// [`phi_psi`] through the pair tables of [`crate::expect`] (any activation).
pub fn phi_psi_general(
    act: &dyn ActivationFn,
    k: &[f64],
    n: usize,
    opts: &QuadOpts,
) -> Result<(Vec<f64>, Vec<f64>), RgError> {
    let t = PairTable::new(act, k, n, &[(0, 0), (1, 1)], &[(0, 0, 0), (0, 1, 1)], opts)?;
    let mut phi = vec![0.0; n * n];
    let mut psi = vec![0.0; n * n];
    for a in 0..n {
        for b in a..n {
            let (s, p) = (t.s(a, b), t.p(a, b));
            phi[a * n + b] = s;
            phi[b * n + a] = s;
            psi[a * n + b] = p;
            psi[b * n + a] = p;
        }
    }
    if phi.iter().chain(psi.iter()).any(|v| !v.is_finite()) {
        return Err(RgError::value(
            "Φ or Ψ is not finite (the kernel blew up): reduce the horizon T or the inputs' scale",
        ));
    }
    Ok((phi, psi))
}

/// The finite-L recursions of nfd.md §2.1 for inputs x (N×d, row-major).
pub fn depthmup_theory(
    act: &dyn ActivationFn,
    x: &[f64],
    n: usize,
    d: usize,
    spec: &DepthMuPSpec,
    opts: &QuadOpts,
) -> Result<DepthMuPTensors, RgError> {
    spec.validate()?;
    let k_in = input_kernel(x, n, d)?;
    let (l, a2, n2) = (spec.depth, spec.block_variance, n * n);
    let mut out = DepthMuPTensors {
        n,
        k: Layers::with_capacity(n2, l + 1),
        g: Layers::with_capacity(n2, l + 1),
        phi: Layers::with_capacity(n2, l + 1),
        psi: Layers::with_capacity(n2, l + 1),
        ..Default::default()
    };
    let mut k = k_in.clone();
    for layer in 0..=l {
        let (phi, psi) =
            phi_psi(act, &k, n, opts).map_err(|e| e.context(&format!("depth {layer}")))?;
        out.k.push(&k);
        if layer < l {
            k = k.iter().zip(&phi).map(|(k, p)| k + a2 * p).collect();
        }
        out.phi.push(phi);
        out.psi.push(psi);
    }
    let g_top: Vec<f64> = if spec.readout_phi {
        out.psi[l].to_vec()
    } else {
        vec![1.0; n2]
    };
    let readout: &[f64] = if spec.readout_phi {
        &out.phi[l]
    } else {
        &out.k[l]
    };
    // Backward: G_{ℓ-1} = G_ℓ ⊙ (1 + a²Ψ(K_{ℓ-1})), accumulating Σ G_ℓ ⊙ Φ(K_{ℓ-1}).
    let mut gs = vec![vec![]; l + 1];
    let mut hidden = vec![0.0; n2];
    let mut g = g_top.clone();
    for layer in (1..=l).rev() {
        let (phi, psi) = (&out.phi[layer - 1], &out.psi[layer - 1]);
        for i in 0..n2 {
            hidden[i] += g[i] * phi[i];
        }
        let next: Vec<f64> = (0..n2).map(|i| g[i] * (1.0 + a2 * psi[i])).collect();
        gs[layer] = std::mem::replace(&mut g, next);
    }
    gs[0] = g;
    for gl in &gs {
        out.g.push(gl);
    }
    let k_l = &out.k[l];
    out.theta = (0..n2)
        .map(|i| {
            spec.w_readout * readout[i]
                + spec.w_hidden * a2 * hidden[i]
                + spec.w_input * gs[0][i] * k_in[i]
        })
        .collect();
    out.theta_dec = (0..n2)
        .map(|i| {
            spec.w_readout * readout[i]
                + spec.w_hidden * g_top[i] * (k_l[i] - k_in[i])
                + spec.w_input * g_top[i] * k_in[i]
        })
        .collect();
    Ok(out)
}

/// The L → ∞ depth ODEs of nfd.md §2.1 at rate `rate` = lim L a_L² (T for the √(T/L) branch,
/// 0 for T/L), reported on the grid s = i/`grid`, i = 0..grid; `w_hidden` is the hidden group's
/// limiting NTK weight.  Dormand–Prince 5(4) with tolerances `rtol`, `atol` (every grid point is
/// hit exactly, so a grid finer than the natural steps costs one step per point).
#[allow(clippy::too_many_arguments)]
pub fn depthmup_limit(
    act: &dyn ActivationFn,
    x: &[f64],
    n: usize,
    d: usize,
    spec: &DepthMuPSpec,
    rate: f64,
    w_hidden: f64,
    grid: usize,
    rtol: f64,
    atol: f64,
    opts: &QuadOpts,
) -> Result<DepthMuPLimit, RgError> {
    spec.validate()?;
    if grid == 0 {
        return Err(RgError::value("the limit's grid must have >= 1 interval"));
    }
    if !(rate.is_finite() && rate >= 0.0) {
        return Err(RgError::value(format!(
            "rate (lim L·a_L²) must be finite and >= 0, got {rate}"
        )));
    }
    if !(w_hidden.is_finite() && w_hidden >= 0.0) {
        return Err(RgError::value(format!(
            "the limiting hidden weight must be finite and >= 0, got {w_hidden}"
        )));
    }
    if !(rtol.is_finite() && rtol > 0.0 && atol.is_finite() && atol >= 0.0) {
        return Err(RgError::value(format!(
            "rtol must be > 0 and atol >= 0 (finite), got rtol={rtol}, atol={atol}"
        )));
    }
    let k_in = input_kernel(x, n, d)?;
    let n2 = n * n;
    // State (K, I, J), each N×N.
    let field = |y: &[f64]| -> Result<Vec<f64>, RgError> {
        if y.iter().any(|v| !v.is_finite()) {
            return Err(RgError::value("the state became non-finite"));
        }
        let (phi, psi) = phi_psi(act, &y[..n2], n, opts)?;
        let mut dy = vec![0.0; 3 * n2];
        for i in 0..n2 {
            dy[i] = rate * phi[i];
            dy[n2 + i] = rate * psi[i];
            dy[2 * n2 + i] = rate * (-y[n2 + i]).exp() * phi[i];
        }
        Ok(dy)
    };
    let mut y = vec![0.0; 3 * n2];
    y[..n2].copy_from_slice(&k_in);
    let mut ode = Dopri54::new(rtol, atol);
    let mut ks = Layers::with_capacity(n2, grid + 1);
    let mut is = Vec::with_capacity(grid + 1);
    let mut s = Vec::with_capacity(grid + 1);
    for step in 0..=grid {
        let t = step as f64 / grid as f64;
        ode.advance(&field, &mut y, t)?;
        s.push(t);
        ks.push(&y[..n2]);
        is.push(y[n2..2 * n2].to_vec());
    }
    let k1 = &y[..n2];
    let (phi1, psi1) = phi_psi(act, k1, n, opts)?;
    let (g_top, readout) = if spec.readout_phi {
        (psi1, phi1)
    } else {
        (vec![1.0; n2], k1.to_vec())
    };
    let i1 = &is[grid];
    let mut gs = Layers::with_capacity(n2, grid + 1);
    for il in &is {
        let g: Vec<f64> = (0..n2).map(|i| g_top[i] * (i1[i] - il[i]).exp()).collect();
        gs.push(g);
    }
    let g0 = &gs[0];
    let j1 = &y[2 * n2..];
    let theta = (0..n2)
        .map(|i| {
            spec.w_readout * readout[i]
                + w_hidden * g_top[i] * i1[i].exp() * j1[i]
                + spec.w_input * g0[i] * k_in[i]
        })
        .collect();
    let theta_dec = (0..n2)
        .map(|i| {
            spec.w_readout * readout[i]
                + w_hidden * g_top[i] * (k1[i] - k_in[i])
                + spec.w_input * g_top[i] * k_in[i]
        })
        .collect();
    Ok(DepthMuPLimit {
        n,
        s,
        k: ks,
        g: gs,
        theta,
        theta_dec,
        accepted: ode.stats.accepted,
        rejected: ode.stats.rejected,
    })
}

#[cfg(test)]
#[allow(clippy::needless_range_loop)]
mod tests {
    use super::*;
    use crate::activations::Builtin;

    /// Two inputs at 60° with |x|² = d = 2 (nfd.md §3.1): K_in = [[1, ½], [½, 1]].
    fn x60() -> Vec<f64> {
        let r = 2f64.sqrt();
        vec![r, 0.0, r * 0.5, r * 0.75f64.sqrt()]
    }

    fn spec(l: usize, readout_phi: bool) -> DepthMuPSpec {
        DepthMuPSpec {
            depth: l,
            block_variance: 1.0 / l as f64,
            readout_phi,
            w_input: 1.0,
            w_hidden: 1.0,
            w_readout: 1.0,
        }
    }

    #[test]
    fn relu_fast_path_matches_the_general_dispatch() {
        // 12 inputs in 5 dimensions (deterministic, varied norms and angles, one repeated)
        let (n, d) = (12, 5);
        let mut x: Vec<f64> = (0..n * d)
            .map(|i| ((i * 37 % 23) as f64 - 11.0) / 7.0 + 0.1 * (i % 3) as f64)
            .collect();
        for i in 0..d {
            x[(n - 1) * d + i] = x[i];
        }
        let k = input_kernel(&x, n, d).unwrap();
        let opts = QuadOpts::default();
        for act in [
            Builtin::Relu,
            Builtin::LeakyRelu(0.2),
            Builtin::LeakyRelu(-0.5),
        ] {
            let (phi, psi) = phi_psi(&act, &k, n, &opts).unwrap();
            let (phi_g, psi_g) = phi_psi_general(&act, &k, n, &opts).unwrap();
            for i in 0..n * n {
                let scale = k[(i / n) * n + i / n].max(k[(i % n) * n + i % n]);
                assert!(
                    (phi[i] - phi_g[i]).abs() <= 1e-14 * scale,
                    "{act:?} Φ[{i}]: {} vs {}",
                    phi[i],
                    phi_g[i]
                );
                assert!(
                    (psi[i] - psi_g[i]).abs() <= 1e-14,
                    "{act:?} Ψ[{i}]: {} vs {}",
                    psi[i],
                    psi_g[i]
                );
                assert_eq!(phi[i], phi[(i % n) * n + i / n]);
            }
            // the whole recursion through the fast path against the general one
            let t = depthmup_theory(&act, &x, n, d, &spec(8, true), &opts).unwrap();
            let mut k = k.clone();
            for layer in 0..8 {
                assert!(t.k[layer]
                    .iter()
                    .zip(&k)
                    .all(|(a, b)| (a - b).abs() <= 1e-13 * b.abs().max(1.0)));
                let (p, _) = phi_psi_general(&act, &k, n, &opts).unwrap();
                k = k.iter().zip(&p).map(|(k, p)| k + p / 8.0).collect();
            }
        }
        // a zero input (variance 0) keeps the general path's conventions
        let mut x0 = x.clone();
        x0[..d].iter_mut().for_each(|v| *v = 0.0);
        let k0 = input_kernel(&x0, n, d).unwrap();
        let fast = phi_psi(&Builtin::Relu, &k0, n, &opts).unwrap();
        assert_eq!(
            fast,
            phi_psi_general(&Builtin::Relu, &k0, n, &opts).unwrap()
        );
    }

    #[test]
    fn tanh_table() {
        // nfd.md §2.1 table, L = 16: K_L, G_0, Θ, Θ_dec ([0,0] and [0,1]).
        let t = depthmup_theory(
            &Builtin::Tanh,
            &x60(),
            2,
            2,
            &spec(16, false),
            &QuadOpts::default(),
        )
        .unwrap();
        let want = [
            (&t.k[16], [1.42571, 0.69715]),
            (&t.g[0], [1.53503, 1.41084]),
            (&t.theta[..], [3.47968, 1.63321]),
            (&t.theta_dec[..], [2.85143, 1.39430]),
        ];
        for (got, w) in want {
            assert!((got[0] - w[0]).abs() < 6e-6, "{} vs {}", got[0], w[0]);
            assert!((got[1] - w[1]).abs() < 6e-6, "{} vs {}", got[1], w[1]);
        }
    }

    #[test]
    fn linear_exact() {
        // φ = id: Φ = K, Ψ = 1, so K_ℓ = (1 + 1/L)^ℓ K_in and G_ℓ = (1 + 1/L)^{L-ℓ}.
        let l = 8;
        let x = [1.0, 0.3, -0.4, 2.0];
        let t = depthmup_theory(
            &Builtin::Linear,
            &x,
            2,
            2,
            &spec(l, false),
            &QuadOpts::default(),
        )
        .unwrap();
        let k_in = input_kernel(&x, 2, 2).unwrap();
        let r = 1.0 + 1.0 / l as f64;
        for layer in 0..=l {
            for i in 0..4 {
                let k = r.powi(layer as i32) * k_in[i];
                assert!((t.k[layer][i] - k).abs() < 1e-12 * (1.0 + k.abs()));
                let g = r.powi((l - layer) as i32);
                assert!((t.g[layer][i] - g).abs() < 1e-12 * g);
            }
        }
        let lim = depthmup_limit(
            &Builtin::Linear,
            &x,
            2,
            2,
            &spec(l, false),
            1.0,
            1.0,
            l,
            1e-12,
            1e-13,
            &QuadOpts::default(),
        )
        .unwrap();
        let e = 1f64.exp();
        for i in 0..4 {
            // Θ_∞ = e K_in + ∫ e^{1-s} e^s K_in ds + e K_in = 3e K_in.
            let want = 3.0 * e * k_in[i];
            assert!((lim.theta[i] - want).abs() < 1e-9 * (1.0 + want.abs()));
            assert!((lim.g[0][i] - e).abs() < 1e-9);
        }
    }

    #[test]
    fn limit_matches_richardson() {
        let x = x60();
        let opts = QuadOpts::default();
        let lim = depthmup_limit(
            &Builtin::Tanh,
            &x,
            2,
            2,
            &spec(4, false),
            1.0,
            1.0,
            4,
            1e-11,
            1e-12,
            &opts,
        )
        .unwrap();
        let th = |l: usize| {
            depthmup_theory(&Builtin::Tanh, &x, 2, 2, &spec(l, false), &opts)
                .unwrap()
                .theta
        };
        let (a, b, c) = (th(32), th(64), th(128));
        for i in 0..4 {
            // Second-order Richardson from L, 2L, 4L.
            let r1 = 2.0 * b[i] - a[i];
            let r2 = 2.0 * c[i] - b[i];
            let r = (4.0 * r2 - r1) / 3.0;
            assert!((r - lim.theta[i]).abs() < 2e-6, "{r} vs {}", lim.theta[i]);
        }
    }

    #[test]
    fn bad_input() {
        let mut s = spec(4, false);
        s.block_variance = f64::NAN;
        let e = depthmup_theory(&Builtin::Tanh, &x60(), 2, 2, &s, &QuadOpts::default());
        assert!(e.is_err());
        let e = depthmup_theory(
            &Builtin::Tanh,
            &[1.0, f64::NAN],
            1,
            2,
            &spec(4, false),
            &QuadOpts::default(),
        );
        assert!(e.is_err());
    }
}
