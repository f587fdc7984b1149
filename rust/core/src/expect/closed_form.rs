//! Closed-form Gaussian expectations for the activations of the Gaussian-CDF class
//! ([`GaussClass`]: relu, leaky relu, linear, monomials, erf, gelu), any block size ≤ 8 with at
//! most four indicator factors per product.
//!
//! Every per-sample factor of such an activation (its jets, their products, powers of z and
//! derivatives) is a sum of terms `p(z) Φ(cz)^a φ(cz)^b` (kinked: `p(z) H(z)^a`, a ≤ 1).
//! Writing `Φ(cz) = E_y[H(cz − y)]` and `φ(cz) = E_y[δ(cz − y)]` with independent
//! `y ~ N(0, 1)` turns a block expectation into sums of
//! `E[z^e Π_{a∈S} H(w_a) Π_{a∈Δ} δ(w_a)]` over the centred Gaussian vector `(z, w)` with
//! `w_a = c z_{k(a)} − y_a` (kinked: `w_a = z_{k(a)}`).  The deltas condition on `w_Δ = 0`
//! (the vector stays centred); the monomial is reduced by Stein's identity on the region,
//!
//! `E[z_i G] = Σ_j C_ij E[∂_j G] + Σ_{a∈S} C_ia p_{w_a}(0) E[G|_{H(w_a)=1} | w_a = 0]`,
//!
//! down to centred orthant probabilities `P(w_S > 0)` ([`super::orthant`], |S| ≤ 4).
//! Derivatives `D^m` of smooth factors are taken in closed form; terms with distributional
//! derivatives of kinked factors (delta functions) go to quadrature, which integrates them
//! exactly.  Blocks this engine cannot do (other activations, more than four
//! indicators, singular kinked blocks) return `None` and go to quadrature.

use std::f64::consts::PI;

use super::orthant::orthant;
use super::terms::Term;
use crate::activations::{ActivationFn, GaussClass};
use crate::linalg::pivoted_cholesky;
use rustc_hash::{FxHashMap, FxHasher};

/// Most samples per block and aux variables per block this engine handles.
const MAX_SAMPLES: usize = 8;
const MAX_AUX: usize = 24;
/// Conditional variances below this fraction of the unconditional one count as degenerate.
const DEGENERATE: f64 = 1e-12;

/// A conditional variance that vanishes (or is NaN) relative to the unconditional one.
fn degenerate(v: f64, base: f64) -> bool {
    v.is_nan() || v <= DEGENERATE * base
}

/// Univariate polynomial, ascending coefficients.
type Poly1 = Vec<f64>;

fn poly1_mul(a: &[f64], b: &[f64]) -> Poly1 {
    if a.is_empty() || b.is_empty() {
        return vec![];
    }
    let mut out = vec![0.0; a.len() + b.len() - 1];
    for (i, &x) in a.iter().enumerate() {
        if x != 0.0 {
            for (j, &y) in b.iter().enumerate() {
                out[i + j] += x * y;
            }
        }
    }
    out
}

fn poly1_is_zero(p: &[f64]) -> bool {
    p.iter().all(|&x| x == 0.0)
}

/// `Σ p_{a,b}(z) Φ(cz)^a φ(cz)^b` at one sample (kinked: `H(z)^a`, a ≤ 1, b = 0).
#[derive(Clone, Debug, Default)]
struct Expansion(Vec<(u8, u8, Poly1)>);

impl Expansion {
    fn one() -> Expansion {
        Expansion(vec![(0, 0, vec![1.0])])
    }

    fn add(&mut self, a: u8, b: u8, p: Poly1) {
        if poly1_is_zero(&p) {
            return;
        }
        if let Some(t) = self.0.iter_mut().find(|t| t.0 == a && t.1 == b) {
            if t.2.len() < p.len() {
                t.2.resize(p.len(), 0.0);
            }
            for (x, y) in t.2.iter_mut().zip(&p) {
                *x += y;
            }
        } else {
            self.0.push((a, b, p));
        }
    }

    fn mul(&self, other: &Expansion, kinked: bool) -> Expansion {
        let mut out = Expansion::default();
        for (a1, b1, p1) in &self.0 {
            for (a2, b2, p2) in &other.0 {
                let a = if kinked { (a1 + a2).min(1) } else { a1 + a2 };
                out.add(a, b1 + b2, poly1_mul(p1, p2));
            }
        }
        out
    }

    fn times_zpow(&self, q: u8) -> Expansion {
        let mut out = self.clone();
        for t in &mut out.0 {
            let mut p = vec![0.0; q as usize];
            p.extend_from_slice(&t.2);
            t.2 = p;
        }
        out
    }

    /// d/dz of a smooth-class expansion: `Φ(cz)' = c φ(cz)`, `φ(cz)' = −c² z φ(cz)`.
    fn derivative(&self, c: f64) -> Expansion {
        let mut out = Expansion::default();
        for (a, b, p) in &self.0 {
            let dp: Poly1 = p
                .iter()
                .enumerate()
                .skip(1)
                .map(|(i, &x)| i as f64 * x)
                .collect();
            out.add(*a, *b, dp);
            if *a > 0 {
                out.add(a - 1, b + 1, p.iter().map(|&x| *a as f64 * c * x).collect());
            }
            if *b > 0 {
                let mut q = vec![0.0];
                q.extend(p.iter().map(|&x| -(*b as f64) * c * c * x));
                out.add(*a, *b, q);
            }
        }
        out
    }
}

/// The expansion of σ^{(j)} (regular part; `None` where it is a distribution).
fn jet(class: &GaussClass, j: u8) -> Option<Expansion> {
    match class {
        GaussClass::Smooth { c, p, a, b } => {
            let mut e = Expansion::default();
            e.add(0, 0, p.clone());
            e.add(1, 0, a.clone());
            e.add(0, 1, b.clone());
            for _ in 0..j {
                e = e.derivative(*c);
            }
            Some(e)
        }
        GaussClass::Kinked { left, right } => {
            let mut e = Expansion::default();
            match j {
                0 => {
                    e.add(0, 0, vec![0.0, *left]);
                    e.add(1, 0, vec![0.0, right - left]);
                }
                1 => {
                    e.add(0, 0, vec![*left]);
                    e.add(1, 0, vec![right - left]);
                }
                _ => return None,
            }
            Some(e)
        }
    }
}

/// Exponents of the z monomial, 8 bits per sample.
type Exps = u64;

fn exp_get(e: Exps, i: usize) -> u64 {
    (e >> (8 * i)) & 0xff
}

/// The Stein/orthant recursion over one block's joint covariance of (z, w).  One engine per
/// thread is reused across blocks (its tables keep their capacity).
#[derive(Default)]
struct Engine {
    d: usize,
    dim: usize,
    base_var: Vec<f64>,
    /// Conditional covariances (row-major dim×dim), stored back to back.
    arena: Vec<f64>,
    /// Offset in `arena` of the covariance conditioned on the aux variables in the key mask;
    /// `NONE` when that conditioning is degenerate.
    cond: FxHashMap<u32, usize>,
    memo: FxHashMap<u128, Option<f64>>,
}

const NONE: usize = usize::MAX;

impl Engine {
    fn reset(&mut self, cov: &[f64], d: usize, dim: usize) {
        self.d = d;
        self.dim = dim;
        self.base_var.clear();
        self.base_var.extend((0..dim).map(|i| cov[i * dim + i]));
        self.arena.clear();
        self.arena.extend_from_slice(cov);
        self.cond.clear();
        self.cond.insert(0, 0);
        self.memo.clear();
    }

    /// Offset of the conditional covariance for `mask`, or `None` if degenerate.
    fn ensure(&mut self, mask: u32) -> Option<usize> {
        if let Some(&off) = self.cond.get(&mask) {
            return (off != NONE).then_some(off);
        }
        let a = 31 - mask.leading_zeros() as usize;
        let parent = mask & !(1u32 << a);
        let Some(po) = self.ensure(parent) else {
            self.cond.insert(mask, NONE);
            return None;
        };
        let n = self.dim;
        let ia = self.d + a;
        let v = self.arena[po + ia * n + ia];
        if degenerate(v, self.base_var[ia]) || v <= 0.0 {
            self.cond.insert(mask, NONE);
            return None;
        }
        let start = self.arena.len();
        self.arena.extend_from_within(po..po + n * n);
        for i in 0..n {
            let f = self.arena[po + i * n + ia] / v;
            if f == 0.0 {
                continue;
            }
            for j in 0..n {
                let pj = self.arena[po + ia * n + j];
                self.arena[start + i * n + j] -= f * pj;
            }
        }
        for i in 0..n {
            self.arena[start + i * n + ia] = 0.0;
            self.arena[start + ia * n + i] = 0.0;
        }
        self.cond.insert(mask, start);
        Some(start)
    }

    /// Density of the aux variables in `dmask` at 0 (sequential conditioning).
    fn density(&mut self, dmask: u32) -> Option<f64> {
        let mut dens = 1.0;
        let mut done = 0u32;
        let mut rest = dmask;
        while rest != 0 {
            let a = rest.trailing_zeros() as usize;
            rest &= rest - 1;
            let off = self.ensure(done)?;
            let ia = self.d + a;
            let v = self.arena[off + ia * self.dim + ia];
            if degenerate(v, self.base_var[ia]) {
                return None;
            }
            dens /= (2.0 * PI * v).sqrt();
            done |= 1 << a;
        }
        Some(dens)
    }

    fn orthant(&mut self, cmask: u32, smask: u32) -> Option<f64> {
        if smask == 0 {
            return Some(1.0);
        }
        let off = self.ensure(cmask)?;
        let c = &self.arena[off..off + self.dim * self.dim];
        let mut idx = [0usize; 4];
        let mut s = 0;
        let mut rest = smask;
        while rest != 0 {
            if s == 4 {
                return None;
            }
            idx[s] = self.d + rest.trailing_zeros() as usize;
            rest &= rest - 1;
            s += 1;
        }
        let mut sub = [0.0f64; 16];
        for x in 0..s {
            let i = idx[x];
            if degenerate(c[i * self.dim + i], self.base_var[i]) {
                return None;
            }
            for y in 0..s {
                sub[x * s + y] = c[i * self.dim + idx[y]];
            }
        }
        orthant(&sub[..s * s], s)
    }

    /// `E[z^e Π_{a∈smask} H(w_a) | w_cmask = 0]`.
    fn moment(&mut self, cmask: u32, smask: u32, e: Exps) -> Option<f64> {
        let key = (cmask as u128) << 96 | (smask as u128) << 64 | e as u128;
        if let Some(v) = self.memo.get(&key) {
            return *v;
        }
        let v = self.moment_uncached(cmask, smask, e);
        self.memo.insert(key, v);
        v
    }

    fn moment_uncached(&mut self, cmask: u32, smask: u32, e: Exps) -> Option<f64> {
        if e == 0 {
            return self.orthant(cmask, smask);
        }
        let off = self.ensure(cmask)?;
        let i = (e.trailing_zeros() / 8) as usize;
        let e1 = e - (1u64 << (8 * i));
        let n = self.dim;
        let mut row = [0.0f64; MAX_SAMPLES + MAX_AUX];
        let mut auxvar = [0.0f64; MAX_AUX];
        {
            let c = &self.arena[off..off + n * n];
            row[..n].copy_from_slice(&c[i * n..(i + 1) * n]);
            for j in self.d..n {
                auxvar[j - self.d] = c[j * n + j];
            }
        }
        let mut sum = 0.0;
        for (j, &cij) in row.iter().enumerate().take(self.d) {
            let ej = exp_get(e1, j);
            if ej == 0 || cij == 0.0 {
                continue;
            }
            sum += cij * ej as f64 * self.moment(cmask, smask, e1 - (1u64 << (8 * j)))?;
        }
        let mut rest = smask;
        while rest != 0 {
            let a = rest.trailing_zeros() as usize;
            rest &= rest - 1;
            let cia = row[self.d + a];
            if cia == 0.0 {
                continue;
            }
            let v = auxvar[a];
            if degenerate(v, self.base_var[self.d + a]) {
                return None;
            }
            let bit = 1u32 << a;
            sum += cia / (2.0 * PI * v).sqrt() * self.moment(cmask | bit, smask & !bit, e1)?;
        }
        Some(sum)
    }
}

/// One term of an integrand after expansion: `Π_{a∈Δ} δ(w_a) Π_{a∈S} H(w_a) Σ coef z^e`.
struct PlanTerm {
    dmask: u32,
    smask: u32,
    monomials: Vec<(Exps, f64)>,
}

/// The covariance-independent part of a block evaluation: per integrand, its expanded terms.
struct Plan {
    kinked: bool,
    c: f64,
    tau2: f64,
    /// `owner[a]` = sample of aux variable a.
    owner: Vec<usize>,
    integrands: Vec<Vec<PlanTerm>>,
}

fn build_plan(class: &GaussClass, d: usize, integrands: &[Vec<Term>]) -> Option<Plan> {
    let (kinked, c, tau2) = match class {
        GaussClass::Smooth { c, .. } => (false, *c, 1.0),
        GaussClass::Kinked { .. } => (true, 1.0, 0.0),
    };
    // Per integrand: per-sample expansions and the derivative directions moved onto the density.
    let mut expanded: Vec<Vec<Expansion>> = Vec::with_capacity(integrands.len());
    let mut jets: Vec<Option<Expansion>> = vec![];
    for it in integrands {
        let mut per = Vec::with_capacity(d);
        for term in it {
            // D^m σ^{(j)} with j + m ≤ 1 is the regular jet σ^{(j+m)} (relu: σ' = H).
            let regular;
            let term =
                if kinked && term.sig.len() == 1 && term.sig[0] + term.deriv <= 1 && term.zpow == 0
                {
                    regular = Term::prod(&[term.sig[0] + term.deriv]);
                    &regular
                } else {
                    term
                };
            let mut e = Expansion::one();
            for &j in &term.sig {
                let j = j as usize;
                if jets.len() <= j {
                    jets.resize(j + 1, None);
                }
                if jets[j].is_none() {
                    jets[j] = Some(jet(class, j as u8)?);
                }
                e = e.mul(jets[j].as_ref().unwrap(), kinked);
            }
            e = e.times_zpow(term.zpow);
            if kinked && term.deriv > 0 {
                // Distributional derivatives of relu-type factors (delta functions at the kink):
                // quadrature integrates them exactly; moving them onto the density with the
                // block precision's Hermite polynomials cancels catastrophically for correlated
                // blocks (ρ = 0.999 loses all digits at fourth order) and leaves rounding where
                // scale invariance makes single-input K1 exactly 0.
                return None;
            }
            for _ in 0..term.deriv {
                e = e.derivative(c);
            }
            per.push(e);
        }
        expanded.push(per);
    }
    // Aux variables: per sample, as many as the largest Φ/φ count of any product there.
    let mut n_aux = vec![0usize; d];
    for per in &expanded {
        for (k, e) in per.iter().enumerate() {
            for (a, b, _) in &e.0 {
                n_aux[k] = n_aux[k].max((a + b) as usize);
            }
        }
    }
    if n_aux.iter().sum::<usize>() > MAX_AUX {
        return None;
    }
    let mut owner = vec![];
    let mut first = vec![0usize; d];
    for k in 0..d {
        first[k] = owner.len();
        owner.extend(std::iter::repeat_n(k, n_aux[k]));
    }
    let mut plans = Vec::with_capacity(expanded.len());
    for per in expanded {
        let mut terms = vec![];
        if per.iter().any(|e| e.0.is_empty()) {
            plans.push(terms);
            continue;
        }
        // Cartesian product over the per-sample expansion terms.
        let mut choice = vec![0usize; d];
        'outer: loop {
            let mut smask = 0u32;
            let mut dmask = 0u32;
            let mut poly: Vec<(Exps, f64)> = vec![(0, 1.0)];
            for k in 0..d {
                let (a, b, p1) = &per[k].0[choice[k]];
                for x in 0..*a as usize {
                    smask |= 1 << (first[k] + x);
                }
                for x in 0..*b as usize {
                    dmask |= 1 << (first[k] + *a as usize + x);
                }
                let mut next = Vec::with_capacity(poly.len() * p1.len());
                for &(e, cf) in &poly {
                    for (q, &pq) in p1.iter().enumerate() {
                        if pq != 0.0 {
                            next.push((e + ((q as u64) << (8 * k)), cf * pq));
                        }
                    }
                }
                poly = next;
            }
            if smask.count_ones() > 4 {
                return None;
            }
            if !poly.is_empty() {
                terms.push(PlanTerm {
                    dmask,
                    smask,
                    monomials: poly,
                });
            }
            for k in 0..d {
                choice[k] += 1;
                if choice[k] < per[k].0.len() {
                    continue 'outer;
                }
                choice[k] = 0;
            }
            break;
        }
        plans.push(terms);
    }
    Some(Plan {
        kinked,
        c,
        tau2,
        owner,
        integrands: plans,
    })
}

/// Cache key of a plan: the class (float bits) and the integrands.
#[derive(PartialEq)]
struct PlanKey {
    class: Vec<u64>,
    d: usize,
    integrands: Vec<Vec<Term>>,
}

fn class_bits(class: &GaussClass) -> Vec<u64> {
    match class {
        GaussClass::Smooth { c, p, a, b } => {
            let mut v = vec![
                0,
                c.to_bits(),
                p.len() as u64,
                a.len() as u64,
                b.len() as u64,
            ];
            v.extend(p.iter().chain(a).chain(b).map(|x| x.to_bits()));
            v
        }
        GaussClass::Kinked { left, right } => vec![1, left.to_bits(), right.to_bits()],
    }
}

type PlanCache = FxHashMap<u64, Vec<(PlanKey, Option<std::rc::Rc<Plan>>)>>;

thread_local! {
    /// Plans by (class, integrands): blocks of one recursion share a handful of structures.
    static PLANS: std::cell::RefCell<PlanCache> = std::cell::RefCell::new(PlanCache::default());
}

fn cached_plan(
    class: &GaussClass,
    d: usize,
    integrands: &[Vec<Term>],
) -> Option<std::rc::Rc<Plan>> {
    use std::hash::{Hash, Hasher};
    let bits = class_bits(class);
    let mut h = FxHasher::default();
    bits.hash(&mut h);
    d.hash(&mut h);
    integrands.hash(&mut h);
    let hash = h.finish();
    PLANS.with(|cache| {
        let mut cache = cache.borrow_mut();
        let bucket = cache.entry(hash).or_default();
        if let Some((_, plan)) = bucket
            .iter()
            .find(|(k, _)| k.d == d && k.class == bits && k.integrands.as_slice() == integrands)
        {
            return plan.clone();
        }
        let plan = build_plan(class, d, integrands).map(std::rc::Rc::new);
        if bucket.len() < 8 {
            bucket.push((
                PlanKey {
                    class: bits,
                    d,
                    integrands: integrands.to_vec(),
                },
                plan.clone(),
            ));
        }
        plan
    })
}

/// Expectations of `integrands` (a [`Term`] per sample) over `z ~ N(0, cov)` in closed form,
/// or `None` when the activation or the block is outside this engine's reach.
pub fn expect_block(
    act: &dyn ActivationFn,
    cov: &[f64],
    d: usize,
    integrands: &[Vec<Term>],
) -> Option<Vec<f64>> {
    let class = act.gauss_class()?;
    if d == 0 || d > MAX_SAMPLES {
        return None;
    }
    let plan = cached_plan(&class, d, integrands)?;
    if plan.kinked && pivoted_cholesky(cov, d).rank < d {
        // Singular kinked blocks: quadrature marginalises the duplicate directions exactly.
        return None;
    }
    let m = plan.owner.len();
    let dim = d + m;
    let mut joint = vec![0.0; dim * dim];
    for i in 0..dim {
        for j in 0..dim {
            let (ki, ci) = if i < d {
                (i, 1.0)
            } else {
                (plan.owner[i - d], plan.c)
            };
            let (kj, cj) = if j < d {
                (j, 1.0)
            } else {
                (plan.owner[j - d], plan.c)
            };
            joint[i * dim + j] =
                ci * cj * cov[ki * d + kj] + if i == j && i >= d { plan.tau2 } else { 0.0 };
        }
    }
    ENGINE.with(|cell| evaluate(&plan, &mut cell.borrow_mut(), &joint, d, dim))
}

thread_local! {
    static ENGINE: std::cell::RefCell<Engine> = std::cell::RefCell::new(Engine::default());
}

fn evaluate(
    plan: &Plan,
    eng: &mut Engine,
    joint: &[f64],
    d: usize,
    dim: usize,
) -> Option<Vec<f64>> {
    eng.reset(joint, d, dim);
    let mut out = Vec::with_capacity(plan.integrands.len());
    for terms in &plan.integrands {
        let mut total = 0.0;
        for t in terms {
            let dens = eng.density(t.dmask)?;
            let mut acc = 0.0;
            for &(e, cf) in &t.monomials {
                acc += cf * eng.moment(t.dmask, t.smask, e)?;
            }
            total += dens * acc;
        }
        if !total.is_finite() {
            return None;
        }
        out.push(total);
    }
    Some(out)
}
