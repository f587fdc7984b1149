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

/// The dNTK families in their order in [`DntkSet`] and [`DntkStacks`].
pub(crate) const NAMES: [&str; 6] = ["P", "Q", "R", "S", "T", "U"];
const P: usize = 0;
const Q: usize = 1;
const R: usize = 2;
const S: usize = 3;
const T: usize = 4;
const U: usize = 5;

/// A subset of the dNTK family P, Q, R, S, T, U (flags in the order of [`NAMES`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct DntkSet([bool; 6]);

impl DntkSet {
    /// Split a `tensors=` request into the dNTK names (returned as the set) and the others;
    /// `None` (no request) asks for all six.  A dNTK name without `dntk` is an error.
    pub(crate) fn split(
        names: Option<&[String]>,
        dntk: bool,
    ) -> Result<(DntkSet, Option<Vec<String>>), RgError> {
        let Some(names) = names else {
            return Ok((DntkSet([dntk; 6]), None));
        };
        let mut set = DntkSet::default();
        let mut rest = Vec::with_capacity(names.len());
        for name in names {
            match NAMES.iter().position(|&m| m == name) {
                Some(i) if dntk => set.0[i] = true,
                Some(_) => {
                    return Err(RgError::value(format!(
                        "tensor {name:?} belongs to the dNTK family: it needs dntk = true"
                    )))
                }
                None => rest.push(name.clone()),
            }
        }
        Ok((set, Some(rest)))
    }

    pub(crate) fn any(self) -> bool {
        self.0.iter().any(|&w| w)
    }

    /// Whether R, S, T or U is in the set.
    pub(crate) fn ddntk(self) -> bool {
        self.0[R..].iter().any(|&w| w)
    }

    /// The families propagated to compute `self`: R reads P, T reads Q (`dntk.md` §3).
    pub(crate) fn closure(self) -> DntkSet {
        let mut c = self.0;
        c[P] |= c[R];
        c[Q] |= c[T];
        DntkSet(c)
    }

    /// Whether the propagated set (a [`DntkSet::closure`]) reads B (P, R, S) or F (Q, T).
    pub(crate) fn reads_b_f(self) -> (bool, bool) {
        let c = self.0;
        (c[P] || c[R] || c[S], c[Q] || c[T])
    }

    /// Without R, S, T, U (kinked activations, `dntk.md` §6.1).
    pub(crate) fn first_order_only(self) -> DntkSet {
        let mut c = self.0;
        c[R..].iter_mut().for_each(|w| *w = false);
        DntkSet(c)
    }
}

/// The dNTK families while the recursion streams through the layers: the current layer of
/// each propagated family (layer 1: zero) and the kept layers of each returned one.
pub(crate) struct DntkStacks {
    /// Propagated families (the closure of the returned ones).
    prop: DntkSet,
    /// Returned families.
    want: DntkSet,
    cur: [Option<Vec<f64>>; 6],
    out: [Layers; 6],
}

/// One new layer of the propagated dNTK families.
pub(crate) struct DntkLayer([Option<Vec<f64>>; 6]);

impl DntkStacks {
    /// Layer 1 (zero) over `n4` tuples; `want` the returned families (R…U dropped when
    /// `ddntk` is false), `n_keep` the number of kept layers, `keep_first` whether layer 1 is.
    pub(crate) fn new(
        n4: usize,
        want: DntkSet,
        ddntk: bool,
        n_keep: usize,
        keep_first: bool,
    ) -> Result<DntkStacks, RgError> {
        let want = if ddntk { want } else { want.first_order_only() };
        let prop = want.closure();
        let mut cur: [Option<Vec<f64>>; 6] = Default::default();
        let mut out: [Layers; 6] = std::array::from_fn(|_| Layers::new(n4));
        for i in 0..6 {
            if prop.0[i] {
                cur[i] = Some(crate::cancel::zeros(n4, "the dNTK tensors")?);
            }
            if want.0[i] && n_keep > 1 {
                out[i] = Layers::try_with_capacity(n4, n_keep, "the dNTK tensors")?;
            }
            if want.0[i] && keep_first {
                out[i].push_zeros();
            }
        }
        Ok(DntkStacks {
            prop,
            want,
            cur,
            out,
        })
    }

    /// Replace the current layer by `layer` (the layer after it), keeping it in the output
    /// when `kept`; after the `last` layer nothing is propagated (the new layer is moved).
    pub(crate) fn push(&mut self, layer: DntkLayer, kept: bool, last: bool) {
        for (i, new) in layer.0.into_iter().enumerate() {
            let Some(new) = new else { continue };
            self.cur[i] = None;
            let keep = kept && self.want.0[i];
            if last {
                if keep {
                    self.out[i].push_owned(new);
                }
            } else {
                if keep {
                    self.out[i].push(&new);
                }
                self.cur[i] = Some(new);
            }
        }
    }

    pub(crate) fn store(self, out: &mut TheoryTensors) {
        let [p, q, r, s, t, u] = self.out;
        let w = self.want.0;
        out.p = w[P].then_some(p);
        out.q = w[Q].then_some(q);
        out.r = w[R].then_some(r);
        out.s = w[S].then_some(s);
        out.t = w[T].then_some(t);
        out.u = w[U].then_some(u);
    }

    fn cur(&self, i: usize) -> &[f64] {
        self.cur[i].as_deref().unwrap_or(&[])
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

/// One step ℓ → ℓ+1 of the propagated dNTK families.  `prev` holds layer ℓ; `k`, `th`, `f`,
/// `b` are the layer-ℓ K, Θ, F, B (F, B empty when no propagated family reads them); `ly`,
/// `g4` the layer-ℓ expectation tables (with the dNTK patterns).
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
    n: usize,
    cw: f64,
    lw: f64,
    rho: f64,
    opts: &QuadOpts,
) -> Result<DntkLayer, RgError> {
    let n2 = n * n;
    let idx = |a: usize, b: usize, c: usize, d: usize| ((a * n + b) * n + c) * n + d;
    let on = prev.prop.0;
    let (pt, qt) = (prev.cur(P), prev.cur(Q));
    let mut new: [Option<Vec<f64>>; 6] = Default::default();
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
    new[P] = on[P]
        .then(|| {
            fill4(n, |d0, d1, d2, d3| {
                let src = cw * cw * t(d0, d1) * t(d0, d2) * g4.g2110(d0, d1, d2, d3);
                let mut prop = s20(d0, d3) * b[idx(d0, d0, d1, d2)];
                for (g, v) in gs[d0 * n + d3].iter() {
                    prop += v * pt[idx(d0, d1, d2, g)];
                }
                src + rho * cw * cw * pp(d1, d2) * prop
            })
        })
        .transpose()?;
    new[Q] = on[Q]
        .then(|| {
            fill4(n, |d0, d1, d2, d3| {
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
            })
        })
        .transpose()?;
    if !on[R..].iter().any(|&w| w) {
        return Ok(DntkLayer(new));
    }
    let (rt, st, tt, ut) = (prev.cur(R), prev.cur(S), prev.cur(T), prev.cur(U));
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
    new[R] = on[R]
        .then(|| {
            fill4(n, |d0, d1, d2, d3| {
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
            })
        })
        .transpose()?;
    new[S] = on[S]
        .then(|| {
            fill4(n, |d1, d2, d3, d4| {
                let src = cw
                    * t(d1, d3)
                    * t(d2, d4)
                    * (lw * g4.pppp(d1, d2, d3, d4) + cw * t(d1, d2) * g4.g2211(d1, d2, d3, d4));
                src + rho * cw * pp(d3, d4) * xy(d1, d2) * b[idx(d1, d2, d3, d4)]
                    + rho * cw * cw * pp(d1, d2) * pp(d3, d4) * st[idx(d1, d2, d3, d4)]
            })
        })
        .transpose()?;
    // T[δ1, δ3, δ4, δ2] = T_{1342}
    new[T] = on[T]
        .then(|| {
            fill4(n, |d1, d3, d4, d2| {
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
            })
        })
        .transpose()?;
    // U[δ1, δ4, δ2, δ3] = U_{1423}
    new[U] = on[U]
        .then(|| {
            fill4(n, |d1, d4, d2, d3| {
                cw * cw * t(d1, d2) * t(d1, d3) * t(d2, d4) * g4.g2211(d1, d2, d3, d4)
                    + rho * cw * cw * pp(d1, d4) * pp(d2, d3) * ut[idx(d1, d4, d2, d3)]
            })
        })
        .transpose()?;
    Ok(DntkLayer(new))
}

#[cfg(test)]
mod tests {
    use super::super::mlp::{mlp_theory_dntk, mlp_theory_request, MlpSpec, Request};
    use crate::activations::Builtin;
    use crate::expect::QuadOpts;
    use crate::layers::Layers;

    fn spec(l: usize) -> MlpSpec {
        MlpSpec {
            widths: vec![10.0; l + 1],
            c_b: vec![0.1; l],
            c_w: vec![1.5; l],
            lambda_b: vec![1.0; l],
            lambda_w: vec![0.7; l],
        }
    }

    fn same(got: &Option<Layers>, want: &Option<Layers>, layers: &[usize], what: &str) {
        let (got, want) = (got.as_ref().unwrap(), want.as_ref().unwrap());
        assert_eq!(got.len(), layers.len(), "{what}");
        for (i, &l) in layers.iter().enumerate() {
            let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got[i]), bits(&want[l]), "{what} layer {l}");
        }
    }

    /// Streaming through layers and asking for some families gives the dense run's entries bit
    /// for bit, and returns only what was asked.
    #[test]
    fn layers_and_tensors_equal_the_dense_dntk_run() {
        let x = [
            0.3, -1.2, 0.8, 0.1, -0.4, 1.5, 0.9, 0.2, -0.7, -1.1, 0.6, 0.4,
        ];
        let (n, n0, s, opts) = (4, 3, spec(4), QuadOpts::default());
        let act = Builtin::Gelu;
        let dense = mlp_theory_dntk(&act, &x, n, n0, &s, true, 1, true, &opts).unwrap();
        let names = |v: &[&str]| Some(v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        let req = |layers: Vec<usize>, tensors| Request {
            layers: Some(layers),
            tensors,
            tuples: None,
        };
        // every family, layers 1 and 4 (layer 1 is zero)
        let t = mlp_theory_request(
            &act,
            &x,
            n,
            n0,
            &s,
            true,
            1,
            true,
            &opts,
            &req(vec![0, 3], None),
        )
        .unwrap();
        for (g, w, name) in [
            (&t.p, &dense.p, "P"),
            (&t.q, &dense.q, "Q"),
            (&t.r, &dense.r, "R"),
            (&t.s, &dense.s, "S"),
            (&t.t, &dense.t, "T"),
            (&t.u, &dense.u, "U"),
            (&t.a, &dense.a, "A"),
        ] {
            same(g, w, &[0, 3], name);
        }
        // R and T read P and Q, which are propagated but not returned
        let r = req(vec![2], names(&["R", "T", "Theta1"]));
        let t = mlp_theory_request(&act, &x, n, n0, &s, true, 1, true, &opts, &r).unwrap();
        same(&t.r, &dense.r, &[2], "R");
        same(&t.t, &dense.t, &[2], "T");
        same(&t.theta1, &dense.theta1, &[2], "Theta1");
        assert!(t.p.is_none() && t.q.is_none() && t.s.is_none() && t.u.is_none());
        assert!(t.v.is_none() && t.a.is_none() && t.b.is_none());
        // only dNTK families, every layer
        let r = Request {
            layers: None,
            tensors: names(&["U", "Q"]),
            tuples: None,
        };
        let t = mlp_theory_request(&act, &x, n, n0, &s, true, 1, true, &opts, &r).unwrap();
        same(&t.u, &dense.u, &[0, 1, 2, 3], "U");
        same(&t.q, &dense.q, &[0, 1, 2, 3], "Q");
        assert!(t.r.is_none() && t.p.is_none());
    }

    #[test]
    fn kinked_activation_streams_p_q_only() {
        let x = [0.3, -1.2, 0.8, 0.1, -0.4, 1.5];
        let (n, n0, s, opts) = (2, 3, spec(3), QuadOpts::default());
        let dense = mlp_theory_dntk(&Builtin::Relu, &x, n, n0, &s, true, 1, true, &opts).unwrap();
        let r = Request {
            layers: Some(vec![2]),
            tensors: Some(vec!["P".into(), "R".into()]),
            tuples: None,
        };
        let t =
            mlp_theory_request(&Builtin::Relu, &x, n, n0, &s, true, 1, true, &opts, &r).unwrap();
        same(&t.p, &dense.p, &[2], "P");
        assert!(t.r.is_none() && dense.r.is_none());
    }

    #[test]
    fn dntk_names_need_dntk_and_tuples_are_refused() {
        let x = [0.3, -1.2, 0.8, 0.1, -0.4, 1.5];
        let (s, opts) = (spec(2), QuadOpts::default());
        let r = Request {
            layers: None,
            tensors: Some(vec!["P".into()]),
            tuples: None,
        };
        let e = mlp_theory_request(&Builtin::Gelu, &x, 2, 3, &s, true, 1, false, &opts, &r);
        assert!(format!("{}", e.err().unwrap()).contains("dntk"));
        let r = Request {
            layers: None,
            tensors: None,
            tuples: Some(vec![[0, 1, 0, 1]]),
        };
        let e = mlp_theory_request(&Builtin::Gelu, &x, 2, 3, &s, true, 1, true, &opts, &r);
        assert!(format!("{}", e.err().unwrap()).contains("tuples"));
    }
}
