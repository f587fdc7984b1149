//! The dNTK and ddNTK layer recursions of an MLP (`dntk.md` §3; PDLT (11.49), (11.52),
//! (∞.177), (∞.179)–(∞.181)), leading order in 1/n, in the derivative form of `dntk.md`
//! §1.4: every entry at layer ℓ+1 needs Gaussian expectations only over its own (≤ 4)
//! samples and layer-ℓ tensors only on those samples; no inverse kernel.
//!
//! Step ℓ → ℓ+1, expectations at K = K^{(ℓ)}, Θ = Θ^{(ℓ)}, hyperparameters of layer ℓ+1,
//! ρ = n_ℓ/n_{ℓ-1}, `X_ab = ∂_x Ω_ab = λ_W σ'_aσ_b + C_WΘ_ab σ''_aσ'_b` and the sample
//! gradients `⟨∇_γ g⟩` of a pair function (for a = b one entry, the total derivative):
//!
//! * P'_{0123} = C_W²Θ01Θ02⟨σ''0σ'1σ'2σ3⟩ + ρC_W²⟨σ'1σ'2⟩[⟨σ''0σ3⟩B_{0012} + Σγ⟨∇γ(σ'0σ3)⟩P_{012γ}]
//! * Q'_{0123} = C_WΘ02⟨X01σ'2σ3⟩ + ρC_W Σγγ'⟨∇γX01⟩⟨∇γ'(σ'2σ3)⟩F_{γ0γ'2}
//!   + ρC_W²⟨σ'0σ'1⟩Σγ⟨∇γ(σ'2σ3)⟩Q_{012γ}
//! * R'_{0123} = C_WΘ02Θ03⟨X^{xx}01σ'2σ'3⟩ + ρC_W⟨σ'2σ'3⟩[⟨X^{xx}01⟩B_{0023} + Σγ⟨∇γX01⟩P_{023γ}]
//!   + ρC_W²⟨σ'0σ'1⟩⟨σ'2σ'3⟩R_{0123}
//! * S'_{1234} = C_WΘ13Θ24⟨X^{xy}12σ'3σ'4⟩ + ρC_W⟨σ'3σ'4⟩⟨X^{xy}12⟩B_{1234} + ρC_W²⟨σ'1σ'2⟩⟨σ'3σ'4⟩S_{1234}
//! * T'_{1342} = Θ12⟨X13X24⟩ + ρΣγγ'⟨∇γX13⟩⟨∇γ'X24⟩F_{γ1γ'2} + ρC_W⟨σ'2σ'4⟩Σγ⟨∇γX13⟩Q_{241γ}
//!   + ρC_W⟨σ'1σ'3⟩Σγ⟨∇γX24⟩Q_{132γ} + ρC_W²⟨σ'1σ'3⟩⟨σ'2σ'4⟩T_{1342}
//! * U'_{1423} = C_W²Θ12Θ13Θ24⟨σ''1σ''2σ'3σ'4⟩ + ρC_W²⟨σ'1σ'4⟩⟨σ'2σ'3⟩U_{1423}
//!
//! Arrays hold each tensor in its own subscript order (`T[a,b,c,d] = T_{abcd}`, so the T
//! recursion fills `T[δ1,δ3,δ4,δ2]`).  Kinked activations (σ'' a delta function): P and Q
//! only, with every coincident-sample product that is a distribution written as a total
//! derivative (`dntk.md` §6.1: ⟨σ'''σ'⟩ + ⟨σ''σ''⟩ = ½⟨(σ'²)''⟩ at one sample); R, S, T, U
//! are not defined (PDLT (∞.39)–(∞.44)) and not computed.

use rayon::prelude::*;

use crate::activations::ActivationFn;
use crate::expect::{expect_block, QuadOpts, Term};
use crate::layers::Layers;
use crate::tables::{fill4, FourPoint, PairTable};
use crate::RgError;

use super::mlp::TheoryTensors;

/// The dNTK tensors at every layer so far (layer 1: zero).
pub(crate) struct DntkStacks {
    p: Layers,
    q: Layers,
    /// R, S, T, U (None for kinked activations).
    ddntk: Option<[Layers; 4]>,
}

/// One layer of the dNTK family.
pub(crate) struct DntkLayer {
    p: Vec<f64>,
    q: Vec<f64>,
    ddntk: Option<[Vec<f64>; 4]>,
}

impl DntkStacks {
    pub(crate) fn new(n4: usize, depth: usize, ddntk: bool) -> Result<DntkStacks, RgError> {
        let stack = || -> Result<Layers, RgError> {
            let mut s = Layers::try_with_capacity(n4, depth, "the dNTK tensors")?;
            s.push_zeros();
            Ok(s)
        };
        Ok(DntkStacks {
            p: stack()?,
            q: stack()?,
            ddntk: if ddntk {
                Some([stack()?, stack()?, stack()?, stack()?])
            } else {
                None
            },
        })
    }

    pub(crate) fn push(&mut self, layer: DntkLayer) {
        self.p.push(layer.p);
        self.q.push(layer.q);
        if let (Some(st), Some(ly)) = (self.ddntk.as_mut(), layer.ddntk) {
            for (s, l) in st.iter_mut().zip(ly) {
                s.push(l);
            }
        }
    }

    pub(crate) fn store(self, out: &mut TheoryTensors) {
        out.p = Some(self.p);
        out.q = Some(self.q);
        if let Some([r, s, t, u]) = self.ddntk {
            out.r = Some(r);
            out.s = Some(s);
            out.t = Some(t);
            out.u = Some(u);
        }
    }
}

/// Sample gradient `⟨∇_γ g⟩` of a pair function: (γ, value) over the distinct samples.
#[derive(Clone, Copy, Default)]
struct Grad {
    g: [usize; 2],
    v: [f64; 2],
    len: usize,
}

impl Grad {
    /// `⟨∂_x g⟩` at γ = a and `⟨∂_y g⟩` at γ = b; for a = b their sum `total` at γ = a.
    fn new(a: usize, b: usize, dx: f64, dy: f64, total: impl FnOnce() -> f64) -> Grad {
        if a == b {
            Grad {
                g: [a, a],
                v: [total(), 0.0],
                len: 1,
            }
        } else {
            Grad {
                g: [a, b],
                v: [dx, dy],
                len: 2,
            }
        }
    }
    #[inline]
    fn iter(&self) -> impl Iterator<Item = (usize, f64)> + '_ {
        (0..self.len).map(|i| (self.g[i], self.v[i]))
    }
}

/// One step ℓ → ℓ+1 of the dNTK family.  `prev` holds layers 1..ℓ; `k`, `th`, `f`, `b` are
/// the layer-ℓ K, Θ, F, B; `ly`, `g4` the layer-ℓ expectation tables (with the dNTK patterns).
#[allow(clippy::too_many_arguments)]
pub(crate) fn dntk_layer(
    act: &dyn ActivationFn,
    ly: &PairTable,
    g4: &FourPoint,
    k: &[f64],
    th: &[f64],
    f: &[f64],
    b: &[f64],
    prev: &DntkStacks,
    l: usize,
    n: usize,
    cw: f64,
    lw: f64,
    rho: f64,
    opts: &QuadOpts,
) -> Result<DntkLayer, RgError> {
    let n2 = n * n;
    let idx = |a: usize, b: usize, c: usize, d: usize| ((a * n + b) * n + c) * n + d;
    let (pt, qt) = (&prev.p[l - 1], &prev.q[l - 1]);
    // Two-point expectations as per-pair tables (N², row-major), built once per layer so that
    // the N⁴ fills below read contiguous values instead of re-deriving them per entry
    // (a = b entries are single-sample values).
    let pair = |f: &(dyn Fn(usize, usize) -> f64 + Sync)| -> Vec<f64> {
        (0..n2).map(|i| f(i / n, i % n)).collect()
    };
    // σσ'' = ½(σ²)'' − σ'² at one sample
    let s20v = pair(&|a, c| {
        if a == c {
            0.5 * ly.diag(a, 2, 0, 0) - ly.diag(a, 0, 1, 1)
        } else {
            ly.m(a, 2, c, 0)
        }
    });
    let ppv = pair(&|a, c| ly.p(a, c));
    let s20 = |a: usize, c: usize| s20v[a * n + c];
    let pp = |a: usize, c: usize| ppv[a * n + c];
    // ½⟨(σ'²)''⟩ = ⟨σ'''σ'⟩ + ⟨σ''σ''⟩ at one sample (finite for kinked activations too)
    let dp2 = |a: usize| 0.5 * ly.diag(a, 2, 1, 1);
    // ⟨∇(σ'_cσ_d)⟩ and ⟨∇X_ab⟩ per pair
    let gs: Vec<Grad> = (0..n2)
        .map(|i| {
            let (c, d) = (i / n, i % n);
            Grad::new(c, d, s20(c, d), pp(c, d), || s20(c, c) + pp(c, c))
        })
        .collect();
    let gx: Vec<Grad> = (0..n2)
        .map(|i| {
            let (a, c) = (i / n, i % n);
            let (dx, dy) = if a == c {
                (0.0, 0.0)
            } else {
                (
                    lw * s20(a, c) + cw * th[i] * ly.m(a, 3, c, 1),
                    lw * pp(a, c) + cw * th[i] * ly.m(a, 2, c, 2),
                )
            };
            Grad::new(a, c, dx, dy, || {
                lw * (s20(a, a) + pp(a, a)) + cw * th[i] * dp2(a)
            })
        })
        .collect();
    let t = |a: usize, c: usize| th[a * n + c];
    let p = fill4(n, |d0, d1, d2, d3| {
        let src = cw * cw * t(d0, d1) * t(d0, d2) * g4.g2110(d0, d1, d2, d3);
        let mut prop = s20(d0, d3) * b[idx(d0, d0, d1, d2)];
        for (g, v) in gs[d0 * n + d3].iter() {
            prop += v * pt[idx(d0, d1, d2, g)];
        }
        src + rho * cw * cw * pp(d1, d2) * prop
    })?;
    let q = fill4(n, |d0, d1, d2, d3| {
        let src = cw
            * t(d0, d2)
            * (lw * g4.sspp(d1, d3, d0, d2) + cw * t(d0, d1) * g4.g2110(d0, d1, d2, d3));
        let g23 = &gs[d2 * n + d3];
        let mut tf = 0.0;
        for (g, v) in gx[d0 * n + d1].iter() {
            for (g2, v2) in g23.iter() {
                tf += v * v2 * f[idx(g, d0, g2, d2)];
            }
        }
        let mut tq = 0.0;
        for (g, v) in g23.iter() {
            tq += v * qt[idx(d0, d1, d2, g)];
        }
        src + rho * cw * tf + rho * cw * cw * pp(d0, d1) * tq
    })?;
    let Some([rt, st, tt, ut]) = prev.ddntk.as_ref() else {
        return Ok(DntkLayer { p, q, ddntk: None });
    };
    let (rt, st, tt, ut) = (&rt[l - 1], &st[l - 1], &tt[l - 1], &ut[l - 1]);
    // ⟨σ''σ''⟩ at one sample (smooth activations only)
    let pp2: Vec<f64> = (0..n)
        .into_par_iter()
        .map(|a| {
            crate::cancel::check()?;
            expect_block(act, &[k[a * n + a]], 1, &[vec![Term::prod(&[2, 2])]], opts)
                .map(|v| v[0])
                .map_err(|e| e.context(&format!("⟨σ''σ''⟩ for input {a}")))
        })
        .collect::<Result<_, _>>()?;
    let s22 = |a: usize, c: usize| if a == c { pp2[a] } else { ly.m(a, 2, c, 2) };
    let s31 = |a: usize, c: usize| {
        if a == c {
            dp2(a) - pp2[a]
        } else {
            ly.m(a, 3, c, 1)
        }
    };
    // ⟨X^{xx}_ac⟩, ⟨X^{xy}_ac⟩
    let xxv = pair(&|a, c| lw * s20(a, c) + cw * t(a, c) * s31(a, c));
    let xyv = pair(&|a, c| lw * pp(a, c) + cw * t(a, c) * s22(a, c));
    let xx = |a: usize, c: usize| xxv[a * n + c];
    let xy = |a: usize, c: usize| xyv[a * n + c];
    let r = fill4(n, |d0, d1, d2, d3| {
        let src = cw
            * t(d0, d2)
            * t(d0, d3)
            * (lw * g4.g2110(d0, d2, d3, d1) + cw * t(d0, d1) * g4.g3111(d0, d1, d2, d3));
        let mut mid = xx(d0, d1) * b[idx(d0, d0, d2, d3)];
        for (g, v) in gx[d0 * n + d1].iter() {
            mid += v * pt[idx(d0, d2, d3, g)];
        }
        src + rho * cw * pp(d2, d3) * mid
            + rho * cw * cw * pp(d0, d1) * pp(d2, d3) * rt[idx(d0, d1, d2, d3)]
    })?;
    let s = fill4(n, |d1, d2, d3, d4| {
        let src = cw
            * t(d1, d3)
            * t(d2, d4)
            * (lw * g4.pppp(d1, d2, d3, d4) + cw * t(d1, d2) * g4.g2211(d1, d2, d3, d4));
        src + rho * cw * pp(d3, d4) * xy(d1, d2) * b[idx(d1, d2, d3, d4)]
            + rho * cw * cw * pp(d1, d2) * pp(d3, d4) * st[idx(d1, d2, d3, d4)]
    })?;
    // T[δ1, δ3, δ4, δ2] = T_{1342}
    let tn = fill4(n, |d1, d3, d4, d2| {
        let (t13, t24) = (t(d1, d3), t(d2, d4));
        let src = t(d1, d2)
            * (lw * lw * g4.sspp(d3, d4, d1, d2)
                + lw * cw * t24 * g4.g2110(d2, d1, d4, d3)
                + lw * cw * t13 * g4.g2110(d1, d2, d3, d4)
                + cw * cw * t13 * t24 * g4.g2211(d1, d2, d3, d4));
        let (g13, g24) = (&gx[d1 * n + d3], &gx[d2 * n + d4]);
        let mut tf = 0.0;
        for (g, v) in g13.iter() {
            for (g2, v2) in g24.iter() {
                tf += v * v2 * f[idx(g, d1, g2, d2)];
            }
        }
        let (mut q1, mut q2) = (0.0, 0.0);
        for (g, v) in g13.iter() {
            q1 += v * qt[idx(d2, d4, d1, g)];
        }
        for (g, v) in g24.iter() {
            q2 += v * qt[idx(d1, d3, d2, g)];
        }
        let (p13, p24) = (pp(d1, d3), pp(d2, d4));
        src + rho * tf
            + rho * cw * (p24 * q1 + p13 * q2)
            + rho * cw * cw * p13 * p24 * tt[idx(d1, d3, d4, d2)]
    })?;
    // U[δ1, δ4, δ2, δ3] = U_{1423}
    let u = fill4(n, |d1, d4, d2, d3| {
        cw * cw * t(d1, d2) * t(d1, d3) * t(d2, d4) * g4.g2211(d1, d2, d3, d4)
            + rho * cw * cw * pp(d1, d4) * pp(d2, d3) * ut[idx(d1, d4, d2, d3)]
    })?;
    Ok(DntkLayer {
        p,
        q,
        ddntk: Some([r, s, tn, u]),
    })
}
