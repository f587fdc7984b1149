//! Residual MLPs at initialisation (PDLT Appendix B; spec `preactivations.md` §8), first
//! order in 1/n, in the derivative (Gaussian integration-by-parts) form of [`crate::mlp`].
//!
//! Forward equation (B.3) with ξ = 1: layer 1 is the ordinary z⁽¹⁾ = b + Wx; every later
//! layer is z⁽ℓ⁺¹⁾ = b + Wσ(z⁽ℓ⁾) + γ z⁽ℓ⁾ with all widths equal to n (so every 1/n factor is
//! the same and the tensors below are width-independent coefficients of 1/n).
//!
//! Step ℓ → ℓ+1, expectations at K = K⁽ℓ⁾, hyperparameters (C_b, C_W, γ) of layer ℓ+1, with
//! C^{ab}_{gg'} = ⟨∂_g∂_{g'}(σ_aσ_b)⟩ and D^{ab}_g = ⟨∂_g(σ_aσ_b)⟩ (g ranges over the distinct
//! samples of the pair):
//!
//! * K' = C_b + C_W⟨σσ⟩ + γ²K (B.11).
//! * V' (book, B.25 in derivative form) = C_W²[⟨σσσσ⟩ − ⟨σσ⟩⟨σσ⟩] + ¼C_W² Σ V C C
//!   + C_Wγ²[Σ K K C^{12} + Σ K K C^{34} + ½Σ V_{(gg')(34)} C^{12}_{gg'} + ½Σ V_{(gg')(12)} C^{34}_{gg'}]
//!   + γ⁴V.
//! * S'_{(12)3} = γ³S_{(12)3} + γC_W[Σ_g K_{3g} D^{12}_g + ½Σ S_{(gg')3} C^{12}_{gg'}], S⁽¹⁾ = 0:
//!   the odd third cumulant E[z_{i;1} z_{j;2} z_{k;3}] = (1/n)[δ_ij S_{(12)3} + δ_ik S_{(13)2} + δ_jk S_{(23)1}]
//!   that the residual branch creates for non-odd σ (spec §8c [DISCREPANCY]).
//! * V' (corrected) = V'(book) + ½C_W² Σ S_{(g1g2)g3}(C^{12}_{g1g2} D^{34}_{g3} + D^{12}_{g3} C^{34}_{g1g2})
//!   + C_Wγ² Σ_g (S_{(12)g} D^{34}_g + S_{(34)g} D^{12}_g).
//! * K1' = γ²K1 + C_W[½ Σ K1 C + ½ Σ S ⟨∂³(σσ)⟩ + ⅛ Σ V ⟨∂⁴(σσ)⟩]: the spec's Edgeworth
//!   extension; **approximate** for residual nets (the self-interaction cumulants κ(j^m, k²),
//!   m ≥ 3, are missing: ReLU γ² = ½ layer 3 gives 0.2251 against the exact 0.2046). In the
//!   book form (`corrected = false`) the S term is dropped from V' and K1' (S is still reported).

use crate::activations::ActivationFn;
use crate::expect::QuadOpts;
use crate::layers::Layers;
use crate::tables::{distinct, fill4, four_point_expectations, FourPointSet, PairTable};
use crate::RgError;

/// Residual-MLP hyperparameters, one entry per layer 1..L; `gamma[0]` is unused (layer 1
/// has no residual branch).
#[derive(Clone, Debug)]
pub struct ResMlpSpec {
    pub c_b: Vec<f64>,
    pub c_w: Vec<f64>,
    pub gamma: Vec<f64>,
}

impl ResMlpSpec {
    pub fn depth(&self) -> usize {
        self.c_w.len()
    }

    pub fn validate(&self) -> Result<(), RgError> {
        let l = self.depth();
        if l == 0 {
            return Err(RgError::value("depth must be >= 1"));
        }
        for (name, v) in [("C_b", &self.c_b), ("gamma", &self.gamma)] {
            if v.len() != l {
                return Err(RgError::value(format!(
                    "{name} has {} entries, expected one per layer ({l})",
                    v.len()
                )));
            }
        }
        if self.c_b.iter().any(|x| !x.is_finite() || *x < 0.0) {
            return Err(RgError::value("C_b entries must be finite and >= 0"));
        }
        if self.gamma.iter().any(|x| !x.is_finite()) {
            return Err(RgError::value("gamma entries must be finite"));
        }
        if self.c_w.iter().any(|x| !x.is_finite() || *x <= 0.0) {
            return Err(RgError::value("C_W entries must be finite and > 0"));
        }
        Ok(())
    }
}

/// Tensors at every layer, each family in one layer-major buffer ([`Layers`]), row-major per
/// layer: K, K1 (N²), S (N³, `S[a,b,c] = S_{(ab)c}`), V (N⁴).
#[derive(Clone, Debug, Default)]
pub struct ResTensors {
    pub n: usize,
    pub k: Layers,
    pub v: Option<Layers>,
    pub s: Option<Layers>,
    pub k1: Option<Layers>,
}

/// Highest total derivative order of σ_aσ_b needed (⟨∂⁴(σσ)⟩ in K1).
pub(crate) const MAXD: u8 = 4;

/// Kernels (and with `order == 1` the 1/n tensors V, S, K1) at every layer of a residual MLP.
/// `x` is N×n0 row-major; `corrected` selects the S-corrected vertex (spec §8c) over the
/// book's (B.25).
#[allow(clippy::too_many_arguments)]
pub fn resmlp_theory(
    act: &dyn ActivationFn,
    x: &[f64],
    n: usize,
    n0: usize,
    spec: &ResMlpSpec,
    corrected: bool,
    order: usize,
    opts: &QuadOpts,
) -> Result<ResTensors, RgError> {
    spec.validate()?;
    if n == 0 {
        return Err(RgError::value("no inputs (N = 0)"));
    }
    if n0 == 0 || x.len() != n * n0 {
        return Err(RgError::value("x has the wrong size"));
    }
    if x.iter().any(|v| !v.is_finite()) {
        return Err(RgError::value("x contains NaN or inf"));
    }
    if order > 1 {
        return Err(RgError::value("order must be 0 or 1"));
    }
    let first = order == 1;
    let (n2, n3) = (n * n, n * n * n);
    let mut k = vec![0.0; n2];
    for a in 0..n {
        for b in 0..n {
            let dot: f64 = (0..n0).map(|i| x[a * n0 + i] * x[b * n0 + i]).sum::<f64>() / n0 as f64;
            k[a * n + b] = spec.c_b[0] + spec.c_w[0] * dot;
        }
    }
    // Every family in one buffer allocated once for all layers (handed over without a copy).
    let depth = spec.depth();
    let stack = |size: usize, used: bool| {
        if used {
            Layers::try_with_capacity(size, depth, "the per-layer tensors")
        } else {
            Ok(Layers::new(size))
        }
    };
    let mut out = ResTensors {
        n,
        k: stack(n2, true)?,
        ..Default::default()
    };
    out.k.push(k);
    let (mut vs, mut ss, mut k1s) = (stack(n2 * n2, first)?, stack(n3, first)?, stack(n2, first)?);
    if first {
        vs.push_zeros();
        ss.push_zeros();
        k1s.push_zeros();
    }
    for l in 1..spec.depth() {
        crate::cancel::check()?;
        let (cb, cw, gm) = (spec.c_b[l], spec.c_w[l], spec.gamma[l]);
        let g2 = gm * gm;
        let kl = &out.k[l - 1];
        let ly = PairTable::sigma_sigma(act, kl, n, if first { MAXD } else { 0 }, opts)
            .map_err(|e| e.context(&format!("layer {l}")))?;
        let k_new: Vec<f64> = (0..n2)
            .map(|i| cb + cw * ly.s(i / n, i % n) + g2 * kl[i])
            .collect();
        if first {
            let g4 = four_point_expectations(act, kl, n, FourPointSet::Kernel, opts)
                .map_err(|e| e.context(&format!("layer {l}")))?;
            let (v, s, k1) = (&vs[l - 1], &ss[l - 1], &k1s[l - 1]);
            let v_at = |a: usize, b: usize, c: usize, d: usize| v[((a * n + b) * n + c) * n + d];
            let s_at = |a: usize, b: usize, c: usize| s[(a * n + b) * n + c];
            let kk = |a: usize, b: usize| kl[a * n + b];
            // S'
            let s_new: Vec<f64> = (0..n3)
                .map(|i| {
                    let (a, b, c) = (i / n2, (i / n) % n, i % n);
                    let gab = distinct(a, b);
                    let mut t1 = 0.0;
                    let mut t2 = 0.0;
                    for &g in &gab {
                        t1 += kk(c, g) * ly.d(a, b, &[g]);
                        for &h in &gab {
                            t2 += s_at(g, h, c) * ly.d(a, b, &[g, h]);
                        }
                    }
                    gm * g2 * s_at(a, b, c) + gm * cw * (t1 + 0.5 * t2)
                })
                .collect();
            // V'
            let v_new = fill4(n, |a, b, c, d| {
                let gab = distinct(a, b);
                let gcd = distinct(c, d);
                let mut inter = 0.0;
                let mut resid = 0.0;
                for &g1 in &gab {
                    for &g2_ in &gab {
                        let cab = ly.d(a, b, &[g1, g2_]);
                        resid += (kk(c, g1) * kk(d, g2_) + 0.5 * v_at(g1, g2_, c, d)) * cab;
                        for &g3 in &gcd {
                            for &g4_ in &gcd {
                                inter += v_at(g1, g2_, g3, g4_) * cab * ly.d(c, d, &[g3, g4_]);
                            }
                        }
                    }
                }
                for &g3 in &gcd {
                    for &g4_ in &gcd {
                        resid += (kk(a, g3) * kk(b, g4_) + 0.5 * v_at(g3, g4_, a, b))
                            * ly.d(c, d, &[g3, g4_]);
                    }
                }
                let four = g4.ssss(a, b, c, d);
                let mut out = cw * cw * (four - ly.s(a, b) * ly.s(c, d))
                    + 0.25 * cw * cw * inter
                    + cw * g2 * resid
                    + g2 * g2 * v_at(a, b, c, d);
                if corrected {
                    let mut tsc = 0.0;
                    for &g1 in &gab {
                        for &g2_ in &gab {
                            let cab = ly.d(a, b, &[g1, g2_]);
                            for &g3 in &gcd {
                                tsc += s_at(g1, g2_, g3) * cab * ly.d(c, d, &[g3]);
                            }
                        }
                    }
                    for &g1 in &gcd {
                        for &g2_ in &gcd {
                            let ccd = ly.d(c, d, &[g1, g2_]);
                            for &g3 in &gab {
                                tsc += s_at(g1, g2_, g3) * ccd * ly.d(a, b, &[g3]);
                            }
                        }
                    }
                    let mut tsd = 0.0;
                    for &g in &gcd {
                        tsd += s_at(a, b, g) * ly.d(c, d, &[g]);
                    }
                    for &g in &gab {
                        tsd += s_at(c, d, g) * ly.d(a, b, &[g]);
                    }
                    out += 0.5 * cw * cw * tsc + cw * g2 * tsd;
                }
                out
            })?;
            // K1' (Edgeworth extension, approximate for residual nets)
            let k1_new: Vec<f64> = (0..n2)
                .map(|i| {
                    let (a, b) = (i / n, i % n);
                    let gs = distinct(a, b);
                    let m = gs.len();
                    let (mut t2, mut t3, mut t4) = (0.0, 0.0, 0.0);
                    for p in 0..m * m {
                        let (g1, g2_) = (gs[p % m], gs[p / m]);
                        t2 += k1[g1 * n + g2_] * ly.d(a, b, &[g1, g2_]);
                    }
                    if corrected {
                        for p in 0..m * m * m {
                            let g = [gs[p % m], gs[(p / m) % m], gs[p / (m * m)]];
                            t3 += s_at(g[0], g[1], g[2]) * ly.d(a, b, &g);
                        }
                    }
                    for p in 0..m.pow(4) {
                        let g = [
                            gs[p % m],
                            gs[(p / m) % m],
                            gs[(p / (m * m)) % m],
                            gs[p / (m * m * m)],
                        ];
                        t4 += v_at(g[0], g[1], g[2], g[3]) * ly.d(a, b, &g);
                    }
                    g2 * k1[i] + cw * (0.5 * t2 + 0.5 * t3 + 0.125 * t4)
                })
                .collect();
            vs.push(v_new);
            ss.push(s_new);
            k1s.push(k1_new);
        }
        out.k.push(k_new);
    }
    if first {
        out.v = Some(vs);
        out.s = Some(ss);
        out.k1 = Some(k1s);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::activations::Builtin;
    use crate::expect::{expect_block, Term};
    use crate::mlp::{mlp_theory, MlpSpec};

    fn spec(l: usize, cb: f64, cw: f64, gamma: f64) -> ResMlpSpec {
        ResMlpSpec {
            c_b: vec![cb; l],
            c_w: vec![cw; l],
            gamma: vec![gamma; l],
        }
    }

    #[test]
    fn gamma_zero_is_mlp() {
        let x = [1.3, 0.4, 0.2, -1.1, 0.5, 0.9];
        for act in [Builtin::Tanh, Builtin::Relu] {
            let r = resmlp_theory(
                &act,
                &x,
                3,
                2,
                &spec(4, 0.1, 1.5, 0.0),
                true,
                1,
                &QuadOpts::default(),
            )
            .unwrap();
            let ms = MlpSpec {
                widths: vec![8.0; 5],
                c_b: vec![0.1; 4],
                c_w: vec![1.5; 4],
                lambda_b: vec![1.0; 4],
                lambda_w: vec![1.0; 4],
            };
            let m = mlp_theory(&act, &x, 3, 2, &ms, false, 1, &QuadOpts::default()).unwrap();
            for l in 0..4 {
                let pairs = [
                    (&r.k[l], &m.k[l]),
                    (&r.v.as_ref().unwrap()[l], &m.v.as_ref().unwrap()[l]),
                    (&r.k1.as_ref().unwrap()[l], &m.k1.as_ref().unwrap()[l]),
                ];
                for (p, q) in pairs {
                    for (u, w) in p.iter().zip(q.iter()) {
                        assert!(
                            (u - w).abs() < 1e-11 * (1.0 + w.abs()),
                            "{act:?} l={l}: {u} vs {w}"
                        );
                    }
                }
                assert!(r.s.as_ref().unwrap()[l].iter().all(|s| *s == 0.0));
            }
        }
    }

    #[test]
    fn relu_half_gamma_table() {
        // spec §8c: ReLU, γ² = ½, C_W = 1, K = 1, single input; layers 2..6.
        let x = [1.0, -1.0, 1.0, 1.0];
        let g = 0.5f64.sqrt();
        let opts = QuadOpts::default();
        let book = resmlp_theory(
            &Builtin::Relu,
            &x,
            1,
            4,
            &spec(6, 0.0, 1.0, g),
            false,
            1,
            &opts,
        )
        .unwrap();
        let corr = resmlp_theory(
            &Builtin::Relu,
            &x,
            1,
            4,
            &spec(6, 0.0, 1.0, g),
            true,
            1,
            &opts,
        )
        .unwrap();
        let want_book = [2.25, 4.50, 6.75, 9.00, 11.25];
        let want_corr = [2.25, 5.40, 9.19, 13.42, 17.98];
        let want_s = [0.564, 0.963, 1.245, 1.445, 1.586];
        for l in 1..6 {
            assert!((corr.k[l][0] - 1.0).abs() < 1e-12);
            let vb = book.v.as_ref().unwrap()[l][0];
            let vc = corr.v.as_ref().unwrap()[l][0];
            let s = corr.s.as_ref().unwrap()[l][0];
            assert!(
                (vb - want_book[l - 1]).abs() < 1e-10,
                "book l={} {vb}",
                l + 1
            );
            assert!(
                (vc - want_corr[l - 1]).abs() < 5e-3,
                "corrected l={} {vc}",
                l + 1
            );
            assert!((s - want_s[l - 1]).abs() < 5e-4, "S l={} {s}", l + 1);
        }
        // S-Edgeworth NLO metric at layer 3 (spec: 0.2251); layer 2 is exact (0).
        let k1 = corr.k1.as_ref().unwrap();
        assert!(k1[1][0].abs() < 1e-12);
        assert!((k1[2][0] - 0.2251).abs() < 2e-4, "{}", k1[2][0]);
    }

    #[test]
    fn single_input_closed_form_tanh() {
        // (B.26) with S = 0 for odd σ: V' = C_W²[⟨σ⁴⟩−⟨σ²⟩²] + χ∥²V + 4γ²(χ∥−γ²)K².
        let x = [0.8, -1.4];
        let (cw, g) = (1.2, 0.6);
        let opts = QuadOpts::default();
        let t = resmlp_theory(
            &Builtin::Tanh,
            &x,
            1,
            2,
            &spec(4, 0.05, cw, g),
            true,
            1,
            &opts,
        )
        .unwrap();
        for l in 1..4 {
            let k = t.k[l - 1][0];
            let its = vec![
                vec![Term::prod(&[0, 0, 0, 0])],
                vec![Term::prod(&[0, 0])],
                vec![Term::deriv_of(2, &[0, 0])],
            ];
            let e = expect_block(&Builtin::Tanh, &[k], 1, &its, &opts).unwrap();
            let chi = g * g + 0.5 * cw * e[2];
            let v0 = t.v.as_ref().unwrap()[l - 1][0];
            let want = cw * cw * (e[0] - e[1] * e[1])
                + chi * chi * v0
                + 4.0 * g * g * (chi - g * g) * k * k;
            let got = t.v.as_ref().unwrap()[l][0];
            assert!(
                (got - want).abs() < 1e-9 * (1.0 + want.abs()),
                "l={l} {got} vs {want}"
            );
            assert!(t.s.as_ref().unwrap()[l][0].abs() < 1e-12);
        }
    }
}
