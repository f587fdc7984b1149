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
use crate::tables::{distinct, four_point_at, FourPoint, FourPointSet, PairTable, ID4};

use super::space::{Dense, Space, Tuples};

use super::dntk::{dntk_layer, DntkSet, DntkStacks};
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

/// Tensors at the kept layers, each family in one layer-major buffer ([`Layers`]): two-point
/// (N² per layer) and four-point (N⁴ per layer, row-major, or one entry per requested tuple).
#[derive(Clone, Debug, Default)]
pub struct TheoryTensors {
    pub n: usize,
    /// The 0-based layers kept (axis 0 of every family).
    pub layers: Vec<usize>,
    /// With requested tuples: their number M (four-point families hold M entries per layer).
    pub tuples: Option<usize>,
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

/// What to compute and keep ([`mlp_theory_request`]); the default is every layer of every
/// family the options imply, dense.
#[derive(Clone, Debug, Default)]
pub struct Request {
    /// 0-based layers to keep (sorted, distinct, < depth); None: every layer.
    pub layers: Option<Vec<usize>>,
    /// Families to return, among K, Theta, K1, Theta1, V, D, F, A, B (K always) and with
    /// `dntk` P, Q, R, S, T, U; None: all the options imply.  Only the families they depend
    /// on are propagated.
    pub tensors: Option<Vec<String>>,
    /// Sample tuples: the four-point families are returned at these tuples only (one entry
    /// per tuple, in this order); None: every tuple (dense N⁴).
    pub tuples: Option<Vec<[u32; 4]>>,
}

/// Which families a run returns or propagates.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Families {
    k: bool,
    th: bool,
    k1: bool,
    th1: bool,
    v: bool,
    d: bool,
    f: bool,
    a: bool,
    b: bool,
}

impl Families {
    /// The families a request returns, checked against the options.
    fn wanted(names: Option<&[String]>, ntk: bool, first: bool) -> Result<Families, RgError> {
        let all = Families {
            k: true,
            th: ntk,
            k1: first,
            th1: first && ntk,
            v: first,
            d: first && ntk,
            f: first && ntk,
            a: first && ntk,
            b: first && ntk,
        };
        let Some(names) = names else {
            return Ok(all);
        };
        let mut w = Families::default();
        for name in names {
            let (slot, ok) = match name.as_str() {
                "K" => (&mut w.k, all.k),
                "Theta" => (&mut w.th, all.th),
                "K1" => (&mut w.k1, all.k1),
                "Theta1" => (&mut w.th1, all.th1),
                "V" => (&mut w.v, all.v),
                "D" => (&mut w.d, all.d),
                "F" => (&mut w.f, all.f),
                "A" => (&mut w.a, all.a),
                "B" => (&mut w.b, all.b),
                _ => {
                    return Err(RgError::value(format!(
                        "unknown tensor {name:?}; choose among K, Theta, K1, Theta1, V, D, F, A, B"
                    )))
                }
            };
            if !ok {
                return Err(RgError::value(format!(
                    "tensor {name:?} is not computed with ntk={ntk}, order={}; {}",
                    usize::from(first),
                    if first { "use ntk=True" } else { "use order=1" }
                )));
            }
            *slot = true;
        }
        w.k = true;
        Ok(w)
    }

    /// The families propagated to compute `self` (each recursion's inputs, closed) and the
    /// dNTK families (which read B and F, [`DntkSet::reads_b_f`]).
    fn needed(self, dntk: (bool, bool)) -> Families {
        let th1 = self.th1;
        let k1 = self.k1 || th1;
        let a = self.a;
        let d = self.d || a || th1;
        let v = self.v || d || k1;
        let f = self.f || th1 || dntk.1;
        let b = self.b || dntk.0;
        Families {
            k: true,
            th: self.th || th1 || d || f || b,
            k1,
            th1,
            v,
            d,
            f,
            a,
            b,
        }
    }

    fn four(self) -> bool {
        self.v || self.d || self.f || self.a || self.b
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
    mlp_theory_request(
        act,
        x,
        n,
        n0,
        spec,
        ntk,
        order,
        dntk,
        opts,
        &Request::default(),
    )
}

/// [`mlp_theory_dntk`] keeping only what `req` asks for: the requested layers (the
/// recursion streams through the others, holding one layer of what it propagates), the
/// requested families (and those they depend on), and with `req.tuples` the four-point
/// families at those tuples only (the closure of the list is propagated, [`super::space`]).
/// Every entry equals the dense all-layer run's bit for bit.
#[allow(clippy::too_many_arguments)]
pub fn mlp_theory_request(
    act: &dyn ActivationFn,
    x: &[f64],
    n: usize,
    n0: usize,
    spec: &MlpSpec,
    ntk: bool,
    order: usize,
    dntk: bool,
    opts: &QuadOpts,
    req: &Request,
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
    let keep: Vec<bool> = match &req.layers {
        None => vec![true; l_total],
        Some(ls) => {
            let mut k = vec![false; l_total];
            for &l in ls {
                if l >= l_total {
                    return Err(RgError::value(format!(
                        "layer {} is out of range 1..{l_total}",
                        l + 1
                    )));
                }
                k[l] = true;
            }
            k
        }
    };
    if dntk && req.tuples.is_some() {
        return Err(RgError::value(
            "dntk=True is not supported with tuples= (the dNTK family is dense N⁴); use layers= and tensors=",
        ));
    }
    let first = order == 1;
    let (dn_want, names) = DntkSet::split(req.tensors.as_deref(), dntk)?;
    let want = Families::wanted(names.as_deref(), ntk, first)?;
    let dntk = dntk && dn_want.any();
    let need = want.needed(dn_want.closure().reads_b_f());
    let run = Run {
        act,
        x,
        n0,
        spec,
        ntk,
        first,
        dntk,
        dn_want,
        want,
        need,
        keep: &keep,
        tuples: req.tuples.as_deref(),
        opts,
    };
    match &req.tuples {
        Some(t) => {
            if t.is_empty() {
                return Err(RgError::value(
                    "tuples is empty: pass at least one (a, b, c, d)",
                ));
            }
            let sp = Tuples::closure(n, t, first && need.k1)?;
            run.run(&sp)
        }
        None => run.run(&Dense { n }),
    }
}

/// Size of the closure of `tuples` over n samples ([`super::space`]; `pairs`: with the blocks
/// the two-point K1, Θ1 read): (tuples propagated, multisets evaluated per layer).
pub fn closure_size(n: usize, tuples: &[[u32; 4]], pairs: bool) -> Result<(usize, usize), RgError> {
    let sp = Tuples::closure(n, tuples, pairs)?;
    Ok((sp.len(), sp.multisets().map_or(0, <[_]>::len)))
}

/// The options of one run.
struct Run<'a> {
    act: &'a dyn ActivationFn,
    x: &'a [f64],
    n0: usize,
    spec: &'a MlpSpec,
    ntk: bool,
    first: bool,
    dntk: bool,
    /// The dNTK families returned (with `dntk`).
    dn_want: DntkSet,
    want: Families,
    need: Families,
    keep: &'a [bool],
    tuples: Option<&'a [[u32; 4]]>,
    opts: &'a QuadOpts,
}

/// One layer of every propagated family (four-point ones over the run's [`Space`]).
struct State {
    k: Vec<f64>,
    th: Vec<f64>,
    k1: Option<Vec<f64>>,
    th1: Option<Vec<f64>>,
    v: Option<Vec<f64>>,
    d: Option<Vec<f64>>,
    f: Option<Vec<f64>>,
    a: Option<Vec<f64>>,
    b: Option<Vec<f64>>,
}

/// The tensor of a family that is propagated (present by construction).
fn got(t: &Option<Vec<f64>>) -> &[f64] {
    t.as_deref().unwrap_or(&[])
}

impl Run<'_> {
    fn run<S: Space>(&self, sp: &S) -> Result<TheoryTensors, RgError> {
        let (act, spec, opts, x, n0) = (self.act, self.spec, self.opts, self.x, self.n0);
        let (ntk, first, dntk) = (self.ntk, self.first, self.dntk);
        let (need, want) = (self.need, self.want);
        let n = sp.n();
        let n2 = n * n;
        let l_total = spec.depth();
        let n_keep = self.keep.iter().filter(|&&k| k).count();
        let m4 = self.tuples.map_or(sp.len(), <[_]>::len);
        // layer 1
        let mut k = vec![0.0; n2];
        let mut th = vec![0.0; n2];
        for a in 0..n {
            for b in 0..n {
                let dot: f64 =
                    (0..n0).map(|i| x[a * n0 + i] * x[b * n0 + i]).sum::<f64>() / n0 as f64;
                k[a * n + b] = spec.c_b[0] + spec.c_w[0] * dot;
                th[a * n + b] = spec.lambda_b[0] + spec.lambda_w[0] * dot;
            }
        }
        let zeros4 = |on: bool| -> Result<Option<Vec<f64>>, RgError> {
            Ok(if on {
                Some(cancel::zeros(sp.len(), "a four-point tensor")?)
            } else {
                None
            })
        };
        let mut st = State {
            k,
            th,
            k1: (first && need.k1).then(|| vec![0.0; n2]),
            th1: (first && need.th1).then(|| vec![0.0; n2]),
            v: zeros4(first && need.v)?,
            d: zeros4(first && need.d)?,
            f: zeros4(first && need.f)?,
            a: zeros4(first && need.a)?,
            b: zeros4(first && need.b)?,
        };
        // Output stacks, one allocation each for the kept layers (handed over without a copy).
        let stack = |size: usize, used: bool| {
            if used {
                Layers::try_with_capacity(size, n_keep, "the per-layer tensors")
            } else {
                Ok(Layers::new(size))
            }
        };
        let mut out = TheoryTensors {
            n,
            layers: (0..l_total).filter(|&l| self.keep[l]).collect(),
            tuples: self.tuples.map(<[_]>::len),
            k: stack(n2, want.k)?,
            ..Default::default()
        };
        let mut ths = stack(n2, want.th)?;
        let (mut k1s, mut th1s) = (stack(n2, want.k1)?, stack(n2, want.th1)?);
        let (mut vs, mut dss, mut fs, mut as_, mut bs) = (
            stack(m4, want.v)?,
            stack(m4, want.d)?,
            stack(m4, want.f)?,
            stack(m4, want.a)?,
            stack(m4, want.b)?,
        );
        // a kept layer of a four-point family: the tensor itself, or its entries at the tuples
        let emit = |dst: &mut Layers, t: &[f64]| match self.tuples {
            None => dst.push(t),
            Some(tu) => dst.push_fill(|i| {
                let [a, b, c, d] = tu[i].map(|s| s as usize);
                t[sp.pos(a, b, c, d)]
            }),
        };
        // dNTK family: P, Q always, R, S, T, U only for activations smooth up to σ'''
        let ddntk = dntk && self.dn_want.ddntk() && first_singular_order(act)? == usize::MAX;
        let mut dn = if dntk {
            Some(DntkStacks::new(
                sp.len(),
                self.dn_want,
                ddntk,
                n_keep,
                self.keep[0],
            )?)
        } else {
            None
        };
        let emit_two = |st: &State,
                        out: &mut TheoryTensors,
                        ths: &mut Layers,
                        k1s: &mut Layers,
                        th1s: &mut Layers| {
            if want.k {
                out.k.push(&st.k);
            }
            if want.th {
                ths.push(&st.th);
            }
            for (dst, on, t) in [(k1s, want.k1, &st.k1), (th1s, want.th1, &st.th1)] {
                if let (true, Some(t)) = (on, t) {
                    dst.push(t);
                }
            }
        };
        if self.keep[0] {
            emit_two(&st, &mut out, &mut ths, &mut k1s, &mut th1s);
            for (dst, on, t) in [
                (&mut vs, want.v, &st.v),
                (&mut dss, want.d, &st.d),
                (&mut fs, want.f, &st.f),
                (&mut as_, want.a, &st.a),
                (&mut bs, want.b, &st.b),
            ] {
                if let (true, Some(t)) = (on, t) {
                    emit(dst, t);
                }
            }
        }
        for l in 1..l_total {
            cancel::check()?;
            // step from layer l (index l-1) to layer l+1 (index l); the new layer of each
            // family is kept only while a later step needs it
            let kept = self.keep[l];
            let last = l + 1 == l_total;
            let (cb, cw, lb, lw) = (spec.c_b[l], spec.c_w[l], spec.lambda_b[l], spec.lambda_w[l]);
            let rho = spec.widths[l] / spec.widths[l - 1];
            let pairs = pair_expectations(act, &st.k, n, first, opts)
                .map_err(|e| e.context(&format!("layer {l}")))?;
            let ly = &pairs;
            let k_new: Vec<f64> = (0..n2).map(|i| cb + cw * ly.s(i / n, i % n)).collect();
            let th_new: Vec<f64> = (0..n2)
                .map(|i| lb + lw * ly.s(i / n, i % n) + cw * ly.p(i / n, i % n) * st.th[i])
                .collect();
            if first {
                let g4 = if need.four() || dntk {
                    let set = match (ntk, dntk, ddntk) {
                        (_, _, true) => FourPointSet::Ddntk,
                        (_, true, false) => FourPointSet::Dntk,
                        (true, false, _) => FourPointSet::Ntk,
                        (false, ..) => FourPointSet::Kernel,
                    };
                    Some(
                        four_point_at(act, &st.k, n, set, sp.multisets(), opts)
                            .map_err(|e| e.context(&format!("layer {l}")))?,
                    )
                } else {
                    None
                };
                let thl = st.th.clone();
                let step = Step {
                    sp,
                    ly,
                    n,
                    thl: &thl,
                    cw,
                    lw,
                    rho,
                };
                // two-point families first (they read the previous V, D, F, K1)
                let k1_new = need.k1.then(|| step.k1(&st));
                let th1_new = need.th1.then(|| step.th1(&st));
                if let (Some(dn), Some(g4)) = (dn.as_mut(), g4.as_ref()) {
                    let dl = dntk_layer(
                        act,
                        ly,
                        g4,
                        &st.k,
                        &thl,
                        got(&st.f),
                        got(&st.b),
                        dn,
                        n,
                        cw,
                        lw,
                        rho,
                        opts,
                    )
                    .map_err(|e| e.context(&format!("layer {l}")))?;
                    dn.push(dl, kept, last);
                }
                // each family replaces its previous layer as soon as nothing else reads it
                let settle = |slot: &mut Option<Vec<f64>>, new: Vec<f64>, dst: &mut Layers, on| {
                    if kept && on {
                        emit(dst, &new);
                    }
                    *slot = if last { None } else { Some(new) };
                };
                if let Some(g4) = g4.as_ref() {
                    if need.b {
                        let b_new = step.b(&st, g4)?;
                        settle(&mut st.b, b_new, &mut bs, want.b);
                    }
                    if need.f {
                        let f_new = step.f(&st, g4)?;
                        settle(&mut st.f, f_new, &mut fs, want.f);
                    }
                    let c2s = step.pair_table(false);
                    if need.d || need.a {
                        let c2p = step.pair_table(true);
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
                        drop(c2p);
                        let w_o = step.contract(got(&st.v), &om2)?;
                        if need.a {
                            let a_new = step.a(&st, g4, &om2, &w_o)?;
                            settle(&mut st.a, a_new, &mut as_, want.a);
                        }
                        let d_new = step.d(&st, g4, &c2s, &w_o)?;
                        drop(w_o);
                        settle(&mut st.d, d_new, &mut dss, want.d);
                    }
                    if need.v {
                        let w_s = step.contract(got(&st.v), &c2s)?;
                        let v_new = step.v(g4, &c2s, &w_s)?;
                        drop(w_s);
                        settle(&mut st.v, v_new, &mut vs, want.v);
                    }
                }
                st.k1 = k1_new;
                st.th1 = th1_new;
            }
            st.k = k_new;
            st.th = th_new;
            if kept {
                emit_two(&st, &mut out, &mut ths, &mut k1s, &mut th1s);
            }
        }
        if want.th {
            out.theta = Some(ths);
        }
        if want.k1 {
            out.k1 = Some(k1s);
        }
        if want.th1 {
            out.theta1 = Some(th1s);
        }
        for (slot, stack, on) in [
            (&mut out.v, vs, want.v),
            (&mut out.d, dss, want.d),
            (&mut out.f, fs, want.f),
            (&mut out.a, as_, want.a),
            (&mut out.b, bs, want.b),
        ] {
            if on {
                *slot = Some(stack);
            }
        }
        if let Some(dn) = dn {
            dn.store(&mut out);
        }
        Ok(out)
    }
}

/// One layer step ℓ → ℓ+1 over an index space: the formulas of the module docs, each entry
/// reading the layer-ℓ tensors only at tuples of its own samples (so the same code serves the
/// dense space and a tuple closure).
struct Step<'a, S: Space> {
    sp: &'a S,
    ly: &'a PairTable,
    n: usize,
    thl: &'a [f64],
    cw: f64,
    lw: f64,
    rho: f64,
}

/// Four-point pattern numbers of [`FourPointSet`]'s patterns.
const SSSS: usize = 0;
const SSPP: usize = 1;
const PPPP: usize = 2;

impl<S: Space> Step<'_, S> {
    #[inline]
    fn at(&self, t: &[f64], a: usize, b: usize, c: usize, d: usize) -> f64 {
        t[self.sp.pos(a, b, c, d)]
    }

    /// 𝒩[σ_aσ_b] and 𝒩[σ'_aσ'_b] from the layer-ℓ K1 and V.
    fn nlo(&self, st: &State, a: usize, b: usize, prime: bool) -> f64 {
        let (ly, n) = (self.ly, self.n);
        let (k1, v) = (got(&st.k1), got(&st.v));
        if a == b {
            let o = prime as usize;
            let (d2, d4) = (ly.diag(a, 2, o, o), ly.diag(a, 4, o, o));
            return 0.5 * k1[a * n + a] * d2 + 0.125 * self.at(v, a, a, a, a) * d4;
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
            t4 += self.at(v, g[0], g[1], g[2], g[3]) * ly.c4(a, b, na, prime);
        }
        0.5 * t2 + 0.125 * t4
    }

    /// K1' = ρ C_W 𝒩[σσ] (4.115).
    fn k1(&self, st: &State) -> Vec<f64> {
        let n = self.n;
        (0..n * n)
            .map(|i| self.rho * self.cw * self.nlo(st, i / n, i % n, false))
            .collect()
    }

    /// Θ1' (`ntk.md` §1.4).
    fn th1(&self, st: &State) -> Vec<f64> {
        let (ly, n, thl, cw, lw, rho) = (self.ly, self.n, self.thl, self.cw, self.lw, self.rho);
        let (dt, ft, th1) = (got(&st.d), got(&st.f), got(&st.th1));
        (0..n * n)
            .map(|i| {
                let (a, b) = (i / n, i % n);
                let gab = distinct(a, b);
                let mut tdf = 0.0;
                for &g1 in &gab {
                    for &g2 in &gab {
                        tdf += ly.c2(a, b, g1, g2, true)
                            * (0.5 * self.at(dt, g1, g2, a, b) + self.at(ft, g1, a, g2, b));
                    }
                }
                rho * (cw * ly.p(a, b) * th1[i]
                    + lw * self.nlo(st, a, b, false)
                    + cw * thl[i] * self.nlo(st, a, b, true)
                    + cw * tdf)
            })
            .collect()
    }

    /// Second-derivative weights per pair, over the distinct samples (g1, g2) of (a, b):
    /// ⟨∂_{g1}∂_{g2}(σ_aσ_b)⟩ (`prime`: of σ'_aσ'_b).
    fn pair_table(&self, prime: bool) -> Vec<[[f64; 2]; 2]> {
        let (ly, n) = (self.ly, self.n);
        (0..n * n)
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
    }

    /// W[g1, g2, c, d] = Σ_{g3,g4 ∈ {c,d}} V[g1, g2, g3, g4] w_cd[g3][g4]: the inner
    /// contraction shared by every (a, b) with g1, g2 ∈ {a, b}.
    fn contract(&self, v: &[f64], w: &[[[f64; 2]; 2]]) -> Result<Vec<f64>, RgError> {
        let n = self.n;
        self.sp.fill(|g1, g2, c, d| {
            let gcd = distinct(c, d);
            let ncd = gcd.len();
            let m = &w[c * n + d];
            let mut acc = 0.0;
            for x in 0..ncd {
                for y in 0..ncd {
                    acc += self.at(v, g1, g2, gcd[x], gcd[y]) * m[x][y];
                }
            }
            acc
        })
    }

    /// Σ_{g1,g2 ∈ {a,b}} m_ab[g1][g2] T[g1, g2, c, d].
    #[inline]
    fn outer(&self, m: &[[f64; 2]; 2], t: &[f64], a: usize, b: usize, c: usize, d: usize) -> f64 {
        let gab = distinct(a, b);
        let nab = gab.len();
        let mut acc = 0.0;
        for x in 0..nab {
            for y in 0..nab {
                acc += m[x][y] * self.at(t, gab[x], gab[y], c, d);
            }
        }
        acc
    }

    #[inline]
    fn omega(&self, c: usize, d: usize) -> f64 {
        self.lw * self.ly.s(c, d) + self.cw * self.thl[c * self.n + d] * self.ly.p(c, d)
    }

    /// V' (4.119).
    fn v(&self, g4: &FourPoint, c2s: &[[[f64; 2]; 2]], w_s: &[f64]) -> Result<Vec<f64>, RgError> {
        let (ly, n, cw, rho) = (self.ly, self.n, self.cw, self.rho);
        self.sp.fill(|a, b, c, d| {
            let inter = self.outer(&c2s[a * n + b], w_s, a, b, c, d);
            let ssss = g4.get(&g4.locate([a, b, c, d]), SSSS, ID4);
            cw * cw * (ssss - ly.s(a, b) * ly.s(c, d)) + 0.25 * cw * cw * rho * inter
        })
    }

    /// D' (8.77).
    fn d(
        &self,
        st: &State,
        g4: &FourPoint,
        c2s: &[[[f64; 2]; 2]],
        w_o: &[f64],
    ) -> Result<Vec<f64>, RgError> {
        let (ly, n, thl, cw, lw, rho) = (self.ly, self.n, self.thl, self.cw, self.lw, self.rho);
        let dt = got(&st.d);
        self.sp.fill(|a, b, c, d| {
            let loc = g4.locate([a, b, c, d]);
            let s_omega =
                lw * g4.get(&loc, SSSS, ID4) + cw * thl[c * n + d] * g4.get(&loc, SSPP, ID4);
            let cab = &c2s[a * n + b];
            let tv = self.outer(cab, w_o, a, b, c, d);
            let td = self.outer(cab, dt, a, b, c, d);
            cw * (s_omega - ly.s(a, b) * self.omega(c, d))
                + 0.25 * cw * rho * tv
                + 0.5 * cw * cw * rho * td * ly.p(c, d)
        })
    }

    /// F'[p1, t1, p2, t2] (8.79).
    fn f(&self, st: &State, g4: &FourPoint) -> Result<Vec<f64>, RgError> {
        let (ly, n, thl, cw, rho) = (self.ly, self.n, self.thl, self.cw, self.rho);
        let ft = got(&st.f);
        self.sp.fill(|p1, t1, p2, t2| {
            let g1s = distinct(p1, t1);
            let g2s = distinct(p2, t2);
            let mut tf = 0.0;
            for &g1 in &g1s {
                let e1 = ly.e1(p1, t1, g1);
                for &g2 in &g2s {
                    tf += e1 * ly.e1(p2, t2, g2) * self.at(ft, g1, t1, g2, t2);
                }
            }
            // ⟨σ_p1 σ_p2 σ'_t1 σ'_t2⟩: the tuple's slots in the order (0, 2, 1, 3)
            let sspp = g4.get(&g4.locate([p1, t1, p2, t2]), SSPP, [0, 2, 1, 3]);
            cw * cw * sspp * thl[t1 * n + t2] + cw * cw * rho * tf
        })
    }

    /// B' (8.89).
    fn b(&self, st: &State, g4: &FourPoint) -> Result<Vec<f64>, RgError> {
        let (ly, n, thl, cw, rho) = (self.ly, self.n, self.thl, self.cw, self.rho);
        let bt = got(&st.b);
        self.sp.fill(|b1, b2, b3, b4| {
            let pppp = g4.get(&g4.locate([b1, b2, b3, b4]), PPPP, ID4);
            cw * cw
                * (pppp * thl[b1 * n + b3] * thl[b2 * n + b4]
                    + rho * ly.p(b1, b2) * ly.p(b3, b4) * self.at(bt, b1, b2, b3, b4))
        })
    }

    /// A' (8.97, D-terms with C_W/2).
    fn a(
        &self,
        st: &State,
        g4: &FourPoint,
        om2: &[[[f64; 2]; 2]],
        w_o: &[f64],
    ) -> Result<Vec<f64>, RgError> {
        let (ly, n, thl, cw, lw, rho) = (self.ly, self.n, self.thl, self.cw, self.lw, self.rho);
        let (dt, at) = (got(&st.d), got(&st.a));
        self.sp.fill(|a, b, c, d| {
            let (tab, tcd) = (thl[a * n + b], thl[c * n + d]);
            let loc = g4.locate([a, b, c, d]);
            let oo = lw * lw * g4.get(&loc, SSSS, ID4)
                + lw * cw * tcd * g4.get(&loc, SSPP, ID4)
                + lw * cw * tab * g4.get(&loc, SSPP, [2, 3, 0, 1])
                + cw * cw * tab * tcd * g4.get(&loc, PPPP, ID4);
            let oab = &om2[a * n + b];
            let tv = self.outer(oab, w_o, a, b, c, d);
            let td1 = self.outer(oab, dt, a, b, c, d);
            let td2 = self.outer(&om2[c * n + d], dt, c, d, a, b);
            oo - self.omega(a, b) * self.omega(c, d)
                + 0.25 * rho * tv
                + rho * cw * cw * ly.p(a, b) * ly.p(c, d) * self.at(at, a, b, c, d)
                + rho * 0.5 * cw * (td1 * ly.p(c, d) + td2 * ly.p(a, b))
        })
    }
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

    #[test]
    fn tuples_and_layers_equal_the_dense_run() {
        let x = [
            0.3, -1.2, 0.8, 0.1, -0.4, 1.5, 0.9, 0.2, -0.7, -1.1, 0.6, 0.4,
        ];
        let (n, n0, s) = (4, 3, spec(3, 10.0, 0.1, 1.5));
        let opts = QuadOpts::default();
        let dense = mlp_theory(&Builtin::Gelu, &x, n, n0, &s, true, 1, &opts).unwrap();
        let tuples: Vec<[u32; 4]> = vec![
            [0, 1, 2, 3],
            [3, 3, 0, 1],
            [2, 2, 2, 2],
            [1, 0, 1, 0],
            [0, 1, 2, 3],
        ];
        let req = Request {
            layers: Some(vec![1, 2]),
            tensors: None,
            tuples: Some(tuples.clone()),
        };
        let t =
            mlp_theory_request(&Builtin::Gelu, &x, n, n0, &s, true, 1, false, &opts, &req).unwrap();
        assert_eq!(t.layers, vec![1, 2]);
        assert_eq!(t.tuples, Some(tuples.len()));
        let pairs = [
            (&t.v, &dense.v),
            (&t.d, &dense.d),
            (&t.f, &dense.f),
            (&t.a, &dense.a),
            (&t.b, &dense.b),
        ];
        for (got, want) in pairs {
            let (got, want) = (got.as_ref().unwrap(), want.as_ref().unwrap());
            for (kl, l) in [1usize, 2].iter().enumerate() {
                for (m, q) in tuples.iter().enumerate() {
                    let [a, b, c, d] = q.map(|i| i as usize);
                    let w = want[*l][((a * n + b) * n + c) * n + d];
                    assert_eq!(got[kl][m].to_bits(), w.to_bits(), "layer {l} tuple {q:?}");
                }
            }
        }
        assert_eq!(
            &t.theta1.as_ref().unwrap()[1],
            &dense.theta1.as_ref().unwrap()[2]
        );
        let (size, ms) = closure_size(n, &tuples, true).unwrap();
        assert!(size < n.pow(4) && ms > 0);
    }
}
