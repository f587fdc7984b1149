//! Layer recursions of a multilayer perceptron at initialisation, first order in 1/n,
//! in the derivative (Gaussian integration-by-parts) form: every entry needs only
//! expectations over the samples it names, and no inverse of the N×N kernel.
//!
//! Step ℓ → ℓ+1, expectations at K = K^{(ℓ)}, hyperparameters of layer ℓ+1,
//! ρ = n_ℓ/n_{ℓ-1} (spec `preactivations.md` §3–5, `ntk.md` §1.3–1.5):
//!
//! * K' = C_b + C_W⟨σσ⟩ (4.118);  Θ' = λ_b + λ_W⟨σσ⟩ + C_W⟨σ'σ'⟩Θ (9.5)
//! * V' (4.119) with ⟨σσ(zz−K)⟩ K^{-1}K^{-1} → C^{12}_{γγ'} = ⟨∂γ∂γ'(σσ)⟩ (§4c)
//! * K1' = ρ C_W 𝒩[σσ] (4.115), 𝒩[O] = ½K1·⟨∂∂O⟩ + ⅛V·⟨∂⁴O⟩ (ntk.md §1.3)
//! * D' (8.77), F' (8.79), B' (8.89), A' (8.97, D-terms with C_W/2), Θ1' (ntk.md §1.4);
//! * with `dntk`: P, Q, R, S, T, U ([`super::dntk`], `dntk.md` §3).

use crate::activations::ActivationFn;
use crate::expect::first_singular_order;
use crate::expect::QuadOpts;
use crate::layers::Layers;
use crate::tables::{distinct, fill4, four_point_expectations, FourPointSet, PairTable};

use super::dntk::{dntk_layer, DntkStacks};
use crate::cancel;
use crate::RgError;

/// Network hyperparameters; per-layer vectors have length L, `widths` = (n_0, …, n_L).
#[derive(Clone, Debug)]
pub struct MlpSpec {
    pub widths: Vec<f64>,
    pub c_b: Vec<f64>,
    pub c_w: Vec<f64>,
    pub lambda_b: Vec<f64>,
    pub lambda_w: Vec<f64>,
}

impl MlpSpec {
    pub fn depth(&self) -> usize {
        self.c_w.len()
    }

    pub fn validate(&self) -> Result<(), RgError> {
        let l = self.depth();
        if l == 0 {
            return Err(RgError::value("depth must be >= 1"));
        }
        for (name, v) in [
            ("C_b", &self.c_b),
            ("lambda_b", &self.lambda_b),
            ("lambda_W", &self.lambda_w),
        ] {
            if v.len() != l {
                return Err(RgError::value(format!(
                    "{name} has {} entries, expected one per layer ({l})",
                    v.len()
                )));
            }
            if v.iter().any(|x| !x.is_finite() || *x < 0.0) {
                return Err(RgError::value(format!(
                    "{name} entries must be finite and >= 0"
                )));
            }
        }
        if self.c_w.iter().any(|x| !x.is_finite() || *x <= 0.0) {
            return Err(RgError::value("C_W entries must be finite and > 0"));
        }
        if self.widths.len() != l + 1 {
            return Err(RgError::value(format!(
                "widths must list n_0..n_L ({} entries), got {}",
                l + 1,
                self.widths.len()
            )));
        }
        if self.widths.iter().any(|w| !w.is_finite() || *w <= 0.0) {
            return Err(RgError::value("widths must be positive"));
        }
        Ok(())
    }
}

/// Tensors at every layer, each family in one layer-major buffer ([`Layers`]): two-point
/// (N² per layer) and four-point (N⁴ per layer), row-major.
#[derive(Clone, Debug, Default)]
pub struct TheoryTensors {
    pub n: usize,
    pub k: Layers,
    pub theta: Option<Layers>,
    pub k1: Option<Layers>,
    pub theta1: Option<Layers>,
    pub v: Option<Layers>,
    pub d: Option<Layers>,
    pub f: Option<Layers>,
    pub a: Option<Layers>,
    pub b: Option<Layers>,
    /// dNTK–preactivation cross-correlations P, Q (`dntk.md` §3.1–3.2), N⁴ per layer.
    pub p: Option<Layers>,
    pub q: Option<Layers>,
    /// ddNTK means R, S, T, U (`dntk.md` §3.3–3.6); None for kinked activations (§6.1).
    pub r: Option<Layers>,
    pub s: Option<Layers>,
    pub t: Option<Layers>,
    pub u: Option<Layers>,
}

/// (i, j) derivative-order pairs needed off the diagonal.
const PAIR_ORDERS_FULL: [(u8, u8); 14] = [
    (0, 0),
    (1, 1),
    (2, 0),
    (0, 2),
    (4, 0),
    (3, 1),
    (2, 2),
    (1, 3),
    (0, 4),
    (5, 1),
    (4, 2),
    (3, 3),
    (2, 4),
    (1, 5),
];

/// Single-sample entries `(m, p, q)` = `⟨D^m(σ^{(p)}σ^{(q)})⟩`: ⟨σ²⟩, ⟨σ'²⟩, then for the
/// first-order tensors ⟨(σ²)''⟩, ⟨(σ'²)''⟩, ⟨(σ²)''''⟩, ⟨(σ'²)''''⟩, ⟨(σσ')'⟩.
const DIAG_FULL: [(u8, u8, u8); 7] = [
    (0, 0, 0),
    (0, 1, 1),
    (2, 0, 0),
    (2, 1, 1),
    (4, 0, 0),
    (4, 1, 1),
    (1, 0, 1),
];

/// Pair table of one layer: `⟨σ^{(i)}_a σ^{(j)}_b⟩` (a ≠ b, i + j even, i, j ≤ 5) and the
/// single-sample values of [`DIAG_FULL`] (only ⟨σσ⟩, ⟨σ'σ'⟩ for the kernels alone).
fn pair_expectations(
    act: &dyn ActivationFn,
    k: &[f64],
    n: usize,
    full: bool,
    opts: &QuadOpts,
) -> Result<PairTable, RgError> {
    if full {
        PairTable::new(act, k, n, &PAIR_ORDERS_FULL, &DIAG_FULL, opts)
    } else {
        PairTable::new(act, k, n, &[(0, 0), (1, 1)], &DIAG_FULL[..2], opts)
    }
}

/// Compute the kernels (and first-order tensors when `order == 1`) at every layer.
/// `x` is N×n0 row-major.
#[allow(clippy::too_many_arguments)]
pub fn mlp_theory(
    act: &dyn ActivationFn,
    x: &[f64],
    n: usize,
    n0: usize,
    spec: &MlpSpec,
    ntk: bool,
    order: usize,
    opts: &QuadOpts,
) -> Result<TheoryTensors, RgError> {
    mlp_theory_dntk(act, x, n, n0, spec, ntk, order, false, opts)
}

/// [`mlp_theory`], and with `dntk` (needs `ntk` and `order == 1`) the dNTK family P, Q and,
/// for activations without a kink in their derivatives up to σ''', the ddNTK family R, S, T, U.
#[allow(clippy::too_many_arguments)]
pub fn mlp_theory_dntk(
    act: &dyn ActivationFn,
    x: &[f64],
    n: usize,
    n0: usize,
    spec: &MlpSpec,
    ntk: bool,
    order: usize,
    dntk: bool,
    opts: &QuadOpts,
) -> Result<TheoryTensors, RgError> {
    spec.validate()?;
    if dntk && !(ntk && order == 1) {
        return Err(RgError::value(
            "the dNTK family (P, Q, R, S, T, U) needs ntk = true and order = 1",
        ));
    }
    if n == 0 {
        return Err(RgError::value("no inputs (N = 0)"));
    }
    if x.len() != n * n0 {
        return Err(RgError::value("x has the wrong size"));
    }
    if x.iter().any(|v| !v.is_finite()) {
        return Err(RgError::value("x contains NaN or inf"));
    }
    if order > 1 {
        return Err(RgError::value("order must be 0 or 1"));
    }
    let l_total = spec.depth();
    let n2 = n * n;
    let n4 = n2 * n2;
    let first = order == 1;
    // layer 1
    let mut k = vec![0.0; n2];
    let mut th = vec![0.0; n2];
    for a in 0..n {
        for b in 0..n {
            let dot: f64 = (0..n0).map(|i| x[a * n0 + i] * x[b * n0 + i]).sum::<f64>() / n0 as f64;
            k[a * n + b] = spec.c_b[0] + spec.c_w[0] * dot;
            th[a * n + b] = spec.lambda_b[0] + spec.lambda_w[0] * dot;
        }
    }
    // Every family in one buffer allocated once for all layers (handed over without a copy).
    let stack = |size: usize, used: bool| {
        if used {
            Layers::try_with_capacity(size, l_total, "the per-layer tensors")
        } else {
            Ok(Layers::new(size))
        }
    };
    let mut out = TheoryTensors {
        n,
        k: stack(n2, true)?,
        ..Default::default()
    };
    out.k.push(k);
    let mut ths = stack(n2, true)?;
    ths.push(th);
    let (mut k1s, mut vs) = (stack(n2, first)?, stack(n4, first)?);
    let (mut th1s, mut dss, mut fs, mut as_, mut bs) = (
        stack(n2, first && ntk)?,
        stack(n4, first && ntk)?,
        stack(n4, first && ntk)?,
        stack(n4, first && ntk)?,
        stack(n4, first && ntk)?,
    );
    // dNTK family: P, Q always, R, S, T, U only for activations smooth up to σ'''
    let ddntk = dntk && first_singular_order(act)? == usize::MAX;
    let mut dntk_prev = if dntk {
        Some(DntkStacks::new(n4, l_total, ddntk)?)
    } else {
        None
    };
    if first {
        k1s.push_zeros();
        vs.push_zeros();
        if ntk {
            th1s.push_zeros();
            dss.push_zeros();
            fs.push_zeros();
            as_.push_zeros();
            bs.push_zeros();
        }
    }
    for l in 1..l_total {
        cancel::check()?;
        // step from layer l (index l-1) to layer l+1 (index l)
        let (cb, cw, lb, lw) = (spec.c_b[l], spec.c_w[l], spec.lambda_b[l], spec.lambda_w[l]);
        let rho = spec.widths[l] / spec.widths[l - 1];
        let kl = &out.k[l - 1];
        let pairs = pair_expectations(act, kl, n, first, opts)
            .map_err(|e| e.context(&format!("layer {l}")))?;
        let ly = &pairs;
        let thl = &ths[l - 1];
        let k_new: Vec<f64> = (0..n2).map(|i| cb + cw * ly.s(i / n, i % n)).collect();
        let th_new: Vec<f64> = (0..n2)
            .map(|i| lb + lw * ly.s(i / n, i % n) + cw * ly.p(i / n, i % n) * thl[i])
            .collect();
        if first {
            let set = match (ntk, dntk, ddntk) {
                (_, _, true) => FourPointSet::Ddntk,
                (_, true, false) => FourPointSet::Dntk,
                (true, false, _) => FourPointSet::Ntk,
                (false, ..) => FourPointSet::Kernel,
            };
            let g4 = four_point_expectations(act, kl, n, set, opts)
                .map_err(|e| e.context(&format!("layer {l}")))?;
            let v = &vs[l - 1];
            let k1 = &k1s[l - 1];
            let v_at = |a: usize, b: usize, c: usize, d: usize| v[((a * n + b) * n + c) * n + d];
            // 𝒩[σ_aσ_b] and 𝒩[σ'_aσ'_b]
            let nlo = |a: usize, b: usize, prime: bool| -> f64 {
                if a == b {
                    let o = prime as usize;
                    let (d2, d4) = (ly.diag(a, 2, o, o), ly.diag(a, 4, o, o));
                    return 0.5 * k1[a * n + a] * d2 + 0.125 * v_at(a, a, a, a) * d4;
                }
                let gs = [a, b];
                let mut t2 = 0.0;
                for &g1 in &gs {
                    for &g2 in &gs {
                        t2 += k1[g1 * n + g2] * ly.c2(a, b, g1, g2, prime);
                    }
                }
                let mut t4 = 0.0;
                for m in 0..16usize {
                    let g = [0, 1, 2, 3].map(|i| gs[m >> i & 1]);
                    let na = g.iter().filter(|&&x| x == a).count();
                    t4 += v_at(g[0], g[1], g[2], g[3]) * ly.c4(a, b, na, prime);
                }
                0.5 * t2 + 0.125 * t4
            };
            let k1_new: Vec<f64> = (0..n2)
                .map(|i| rho * cw * nlo(i / n, i % n, false))
                .collect();
            // Second-derivative weights per pair, over the distinct samples (g1, g2) of (a, b):
            // c2s = ⟨∂_{g1}∂_{g2}(σ_aσ_b)⟩, c2p = the same for σ'_aσ'_b.
            let pair_table = |prime: bool| -> Vec<[[f64; 2]; 2]> {
                (0..n2)
                    .map(|i| {
                        let (a, b) = (i / n, i % n);
                        let gab = distinct(a, b);
                        let nab = gab.len();
                        let mut m = [[0.0; 2]; 2];
                        for x in 0..nab {
                            for y in 0..nab {
                                m[x][y] = ly.c2(a, b, gab[x], gab[y], prime);
                            }
                        }
                        m
                    })
                    .collect()
            };
            let c2s = pair_table(false);
            // W[g1, g2, c, d] = Σ_{g3,g4 ∈ {c,d}} V[g1, g2, g3, g4] w_cd[g3][g4]: the inner
            // contraction shared by every (a, b) with g1, g2 ∈ {a, b}.
            let contract = |w: &[[[f64; 2]; 2]]| {
                fill4(n, |g1, g2, c, d| {
                    let gcd = distinct(c, d);
                    let ncd = gcd.len();
                    let m = &w[c * n + d];
                    let mut acc = 0.0;
                    for x in 0..ncd {
                        for y in 0..ncd {
                            acc += v_at(g1, g2, gcd[x], gcd[y]) * m[x][y];
                        }
                    }
                    acc
                })
            };
            // Σ_{g1,g2 ∈ {a,b}} m_ab[g1][g2] T[g1, g2, c, d]
            let outer =
                |m: &[[f64; 2]; 2], t: &[f64], a: usize, b: usize, c: usize, d: usize| -> f64 {
                    let gab = distinct(a, b);
                    let nab = gab.len();
                    let mut acc = 0.0;
                    for x in 0..nab {
                        for y in 0..nab {
                            acc += m[x][y] * t[((gab[x] * n + gab[y]) * n + c) * n + d];
                        }
                    }
                    acc
                };
            let w_s = contract(&c2s)?;
            // V'
            let v_new = fill4(n, |a, b, c, d| {
                let inter = outer(&c2s[a * n + b], &w_s, a, b, c, d);
                cw * cw * (g4.ssss(a, b, c, d) - ly.s(a, b) * ly.s(c, d))
                    + 0.25 * cw * cw * rho * inter
            })?;
            drop(w_s);
            if ntk {
                let dt = &dss[l - 1];
                let ft = &fs[l - 1];
                let at = &as_[l - 1];
                let bt = &bs[l - 1];
                let th1 = &th1s[l - 1];
                let idx = |a: usize, b: usize, c: usize, d: usize| ((a * n + b) * n + c) * n + d;
                let omega = |c: usize, d: usize| lw * ly.s(c, d) + cw * thl[c * n + d] * ly.p(c, d);
                // d2omega as a per-pair table, and V contracted with it over the second pair
                let c2p = pair_table(true);
                let om2: Vec<[[f64; 2]; 2]> = (0..n2)
                    .map(|i| {
                        let mut m = [[0.0; 2]; 2];
                        for x in 0..2 {
                            for y in 0..2 {
                                m[x][y] = lw * c2s[i][x][y] + cw * thl[i] * c2p[i][x][y];
                            }
                        }
                        m
                    })
                    .collect();
                let w_o = contract(&om2)?;
                // D'
                let d_new = fill4(n, |a, b, c, d| {
                    let s_omega =
                        lw * g4.ssss(a, b, c, d) + cw * thl[c * n + d] * g4.sspp(a, b, c, d);
                    let cab = &c2s[a * n + b];
                    let tv = outer(cab, &w_o, a, b, c, d);
                    let td = outer(cab, dt, a, b, c, d);
                    cw * (s_omega - ly.s(a, b) * omega(c, d))
                        + 0.25 * cw * rho * tv
                        + 0.5 * cw * cw * rho * td * ly.p(c, d)
                })?;
                // F'[p1, t1, p2, t2]
                let f_new = fill4(n, |p1, t1, p2, t2| {
                    let g1s = distinct(p1, t1);
                    let g2s = distinct(p2, t2);
                    let mut tf = 0.0;
                    for &g1 in &g1s {
                        let e1 = ly.e1(p1, t1, g1);
                        for &g2 in &g2s {
                            tf += e1 * ly.e1(p2, t2, g2) * ft[idx(g1, t1, g2, t2)];
                        }
                    }
                    cw * cw * g4.sspp(p1, p2, t1, t2) * thl[t1 * n + t2] + cw * cw * rho * tf
                })?;
                // B'[b1, b2, b3, b4]
                let b_new = fill4(n, |b1, b2, b3, b4| {
                    cw * cw
                        * (g4.pppp(b1, b2, b3, b4) * thl[b1 * n + b3] * thl[b2 * n + b4]
                            + rho * ly.p(b1, b2) * ly.p(b3, b4) * bt[idx(b1, b2, b3, b4)])
                })?;
                // A'
                let a_new = fill4(n, |a, b, c, d| {
                    let (tab, tcd) = (thl[a * n + b], thl[c * n + d]);
                    let oo = lw * lw * g4.ssss(a, b, c, d)
                        + lw * cw * tcd * g4.sspp(a, b, c, d)
                        + lw * cw * tab * g4.sspp(c, d, a, b)
                        + cw * cw * tab * tcd * g4.pppp(a, b, c, d);
                    let oab = &om2[a * n + b];
                    let tv = outer(oab, &w_o, a, b, c, d);
                    let td1 = outer(oab, dt, a, b, c, d);
                    let td2 = outer(&om2[c * n + d], dt, c, d, a, b);
                    oo - omega(a, b) * omega(c, d)
                        + 0.25 * rho * tv
                        + rho * cw * cw * ly.p(a, b) * ly.p(c, d) * at[idx(a, b, c, d)]
                        + rho * 0.5 * cw * (td1 * ly.p(c, d) + td2 * ly.p(a, b))
                })?;
                drop(w_o);
                // Θ1'
                let th1_new: Vec<f64> = (0..n2)
                    .map(|i| {
                        let (a, b) = (i / n, i % n);
                        let gab = distinct(a, b);
                        let mut tdf = 0.0;
                        for &g1 in &gab {
                            for &g2 in &gab {
                                tdf += ly.c2(a, b, g1, g2, true)
                                    * (0.5 * dt[idx(g1, g2, a, b)] + ft[idx(g1, a, g2, b)]);
                            }
                        }
                        rho * (cw * ly.p(a, b) * th1[i]
                            + lw * nlo(a, b, false)
                            + cw * thl[i] * nlo(a, b, true)
                            + cw * tdf)
                    })
                    .collect();
                if let Some(dn) = dntk_prev.as_mut() {
                    let dl = dntk_layer(act, ly, &g4, kl, thl, ft, bt, dn, l, n, cw, lw, rho, opts)
                        .map_err(|e| e.context(&format!("layer {l}")))?;
                    dn.push(dl);
                }
                dss.push(d_new);
                fs.push(f_new);
                bs.push(b_new);
                as_.push(a_new);
                th1s.push(th1_new);
            }
            k1s.push(k1_new);
            vs.push(v_new);
        }
        out.k.push(k_new);
        ths.push(th_new);
    }
    if ntk {
        out.theta = Some(ths);
    }
    if first {
        out.k1 = Some(k1s);
        out.v = Some(vs);
        if ntk {
            out.theta1 = Some(th1s);
            out.d = Some(dss);
            out.f = Some(fs);
            out.a = Some(as_);
            out.b = Some(bs);
        }
    }
    if let Some(dn) = dntk_prev {
        dn.store(&mut out);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::activations::Builtin;

    fn spec(l: usize, n: f64, cb: f64, cw: f64) -> MlpSpec {
        MlpSpec {
            widths: vec![n; l + 1],
            c_b: vec![cb; l],
            c_w: vec![cw; l],
            lambda_b: vec![1.0; l],
            lambda_w: vec![1.0; l],
        }
    }

    #[test]
    fn relu_scale_invariant_vertex() {
        // V^{(l)} = (l-1)·5·K*², K1 = 0 on the diagonal (single input).
        let x = [1.0, -0.5, 2.0];
        let t = mlp_theory(
            &Builtin::Relu,
            &x,
            1,
            3,
            &spec(5, 10.0, 0.0, 2.0),
            true,
            1,
            &QuadOpts::default(),
        )
        .unwrap();
        let kstar = 2.0 * (1.0 + 0.25 + 4.0) / 3.0;
        for l in 0..5 {
            assert!((t.k[l][0] - kstar).abs() < 1e-12);
            let v = t.v.as_ref().unwrap()[l][0];
            assert!(
                (v - 5.0 * l as f64 * kstar * kstar).abs() < 1e-9 * (1.0 + v),
                "l={l} v={v}"
            );
            assert!(t.k1.as_ref().unwrap()[l][0].abs() < 1e-10);
            assert!(t.theta1.as_ref().unwrap()[l][0].abs() < 1e-9);
        }
    }

    #[test]
    fn ntk_table_tanh_layer4() {
        // ntk.md §1.7: tanh (0, 1), x1 = √2(1.3, 0.4), x2 = √2(0.2, −1.1); layer 4 Θ1_01 = 0.1576, Θ1_00 = 0.0533.
        let s2 = 2f64.sqrt();
        let x = [s2 * 1.3, s2 * 0.4, s2 * 0.2, -s2 * 1.1];
        let t = mlp_theory(
            &Builtin::Tanh,
            &x,
            2,
            2,
            &spec(4, 10.0, 0.0, 1.0),
            true,
            1,
            &QuadOpts::default(),
        )
        .unwrap();
        let th = &t.theta.as_ref().unwrap()[3];
        let th1 = &t.theta1.as_ref().unwrap()[3];
        assert!((th[1] - 2.06625).abs() < 1e-5, "{}", th[1]);
        assert!((th[0] - 3.12852).abs() < 1e-5, "{}", th[0]);
        assert!((th1[1] - 0.1576).abs() < 1e-4, "{}", th1[1]);
        assert!((th1[0] - 0.0533).abs() < 1e-4, "{}", th1[0]);
    }
}
