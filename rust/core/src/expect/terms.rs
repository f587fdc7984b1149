//! Term algebra of the expectation engine: the per-sample factor [`Term`]
//! (`D^m[z^q Π σ^{(j)}]`), its value from an activation jet, its delta-function parts at a
//! kink, and the Hermite polynomials of a block precision that integrate those parts.
//! Uses only the activations; every other `expect` module builds on this one.

use crate::activations::{ActivationFn, Side};
use crate::RgError;

/// One per-sample factor: `D^deriv [ z^zpow Π_i σ^{(sig[i])}(z) ]`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct Term {
    pub deriv: u8,
    pub zpow: u8,
    pub sig: Vec<u8>,
}

impl Term {
    /// The constant 1 (sample absent).
    pub fn one() -> Term {
        Term::default()
    }
    /// σ^{(m)}(z), distributional for kinked activations.
    pub fn sigma(m: u8) -> Term {
        Term {
            deriv: m,
            zpow: 0,
            sig: vec![0],
        }
    }
    /// Regular product Π σ^{(j)}(z).
    pub fn prod(sig: &[u8]) -> Term {
        let mut s = sig.to_vec();
        s.sort_unstable();
        Term {
            deriv: 0,
            zpow: 0,
            sig: s,
        }
    }
    /// `D^m` applied to the product Π σ^{(j)}.
    pub fn deriv_of(m: u8, sig: &[u8]) -> Term {
        let mut s = sig.to_vec();
        s.sort_unstable();
        Term {
            deriv: m,
            zpow: 0,
            sig: s,
        }
    }
    /// z^p.
    pub fn zpow(p: u8) -> Term {
        Term {
            deriv: 0,
            zpow: p,
            sig: vec![],
        }
    }
    pub fn is_one(&self) -> bool {
        self.deriv == 0 && self.zpow == 0 && self.sig.is_empty()
    }
    /// Highest σ derivative order needed to evaluate the regular part.
    pub fn jet_order(&self) -> usize {
        self.sig
            .iter()
            .map(|&j| j as usize + self.deriv as usize)
            .max()
            .unwrap_or(0)
    }
    /// Build the term for a product of factors σ^{(m_i)} and z^q at one sample.
    /// For kinked activations a factor carrying delta functions must stand alone.
    pub fn from_factors(act: &dyn ActivationFn, orders: &[u8], zpow: u8) -> Result<Term, RgError> {
        let first_sing = first_singular_order(act)?;
        let singular: Vec<u8> = orders
            .iter()
            .copied()
            .filter(|&m| (m as usize) >= first_sing)
            .collect();
        if singular.is_empty() {
            let mut t = Term::prod(orders);
            t.zpow = zpow;
            return Ok(t);
        }
        if orders.len() == 1 && zpow == 0 {
            return Ok(Term::sigma(orders[0]));
        }
        Err(RgError::value(format!(
            "the product of σ^({}) (a distribution for the kinked activation {}) with other factors at the same sample is not defined; \
             put it on its own sample or use a derivative-of-product term",
            singular[0],
            act.name()
        )))
    }
}

/// Smallest m such that σ^{(m)} contains a delta function (usize::MAX for smooth activations).
pub fn first_singular_order(act: &dyn ActivationFn) -> Result<usize, RgError> {
    let Some(t) = act.kink() else {
        return Ok(usize::MAX);
    };
    let order = act.max_order();
    let mut l = vec![0.0; order + 1];
    let mut r = vec![0.0; order + 1];
    act.jets(&[t], order, Side::Left, &mut l)?;
    act.jets(&[t], order, Side::Right, &mut r)?;
    for j in 0..=order {
        if (l[j] - r[j]).abs() > 1e-14 * (1.0 + l[j].abs()) {
            return Ok(j + 1);
        }
    }
    Ok(usize::MAX)
}

const INV_FACT: [f64; 13] = [
    1.0,
    1.0,
    0.5,
    1.0 / 6.0,
    1.0 / 24.0,
    1.0 / 120.0,
    1.0 / 720.0,
    1.0 / 5040.0,
    1.0 / 40320.0,
    1.0 / 362880.0,
    1.0 / 3628800.0,
    1.0 / 39916800.0,
    1.0 / 479001600.0,
];

/// The `m`-th derivative of `z^q Π σ^{(j_i)}` from the jet `jets[k] = σ^{(k)}(z)`.
pub(crate) fn term_value(term: &Term, z: f64, jets: &[f64]) -> f64 {
    let m = term.deriv as usize;
    if m == 0 {
        let mut v = if term.zpow == 0 {
            1.0
        } else {
            z.powi(term.zpow as i32)
        };
        for &j in &term.sig {
            v *= jets[j as usize];
        }
        return v;
    }
    // Truncated Taylor product (coefficients f^{(k)}/k!).
    fn mul(poly: &mut [f64; 13], m: usize, f: impl Fn(usize) -> f64) {
        let mut out = [0.0f64; 13];
        for a in 0..=m {
            if poly[a] == 0.0 {
                continue;
            }
            for b in 0..=(m - a) {
                out[a + b] += poly[a] * f(b);
            }
        }
        *poly = out;
    }
    let mut poly = [0.0f64; 13];
    poly[0] = 1.0;
    for &j in &term.sig {
        let j = j as usize;
        mul(&mut poly, m, |k| jets[j + k] * INV_FACT[k]);
    }
    if term.zpow > 0 {
        let q = term.zpow as i32;
        mul(&mut poly, m, |k| {
            if k as i32 > q {
                0.0
            } else {
                let binom: f64 =
                    (0..k).map(|i| (q - i as i32) as f64).product::<f64>() * INV_FACT[k];
                binom * z.powi(q - k as i32)
            }
        });
    }
    poly[m] / INV_FACT[m]
}

/// A regular per-sample evaluation: the regular part of `term` times `z^mulpow`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Spec {
    pub(crate) term: Term,
    pub(crate) mulpow: u8,
}

/// Delta parts `(r, coefficient)` of a term at the kink t: `Σ_j [P^{(j)}]_t δ^{(m-1-j)}(z-t)`.
pub(crate) fn delta_parts(act: &dyn ActivationFn, term: &Term) -> Result<Vec<(u8, f64)>, RgError> {
    let m = term.deriv as usize;
    let Some(t) = act.kink() else {
        return Ok(vec![]);
    };
    if m == 0 || term.sig.is_empty() {
        return Ok(vec![]);
    }
    let order = term.sig.iter().map(|&j| j as usize).max().unwrap_or(0) + m;
    if order > act.max_order() {
        return Err(missing_derivative(act, order));
    }
    let mut jl = vec![0.0; order + 1];
    let mut jr = vec![0.0; order + 1];
    act.jets(&[t], order, Side::Left, &mut jl)?;
    act.jets(&[t], order, Side::Right, &mut jr)?;
    let mut out = vec![];
    for j in 0..m {
        let tj = Term {
            deriv: j as u8,
            ..term.clone()
        };
        let jump = term_value(&tj, t, &jr) - term_value(&tj, t, &jl);
        if jump != 0.0 && jump.abs() > 1e-15 * (1.0 + term_value(&tj, t, &jr).abs()) {
            out.push(((m - 1 - j) as u8, jump));
        }
    }
    Ok(out)
}

pub(crate) fn missing_derivative(act: &dyn ActivationFn, order: usize) -> RgError {
    RgError::value(format!(
        "this computation needs derivative order {order} of activation '{}', which provides only up to {}; \
         supply more derivatives (finite differences are refused)",
        act.name(),
        act.max_order()
    ))
}

/// Sparse polynomial over up to 8 variables: (exponents, coefficient).
pub(crate) type Poly = Vec<([u8; 8], f64)>;

pub(crate) fn poly_add(p: &mut Poly, e: [u8; 8], c: f64) {
    if c == 0.0 {
        return;
    }
    if let Some(t) = p.iter_mut().find(|t| t.0 == e) {
        t.1 += c;
    } else {
        p.push((e, c));
    }
}

pub(crate) fn poly_mul(a: &Poly, b: &Poly) -> Poly {
    let mut out = Poly::new();
    for (ea, ca) in a {
        for (eb, cb) in b {
            let mut e = [0u8; 8];
            for i in 0..8 {
                e[i] = ea[i] + eb[i];
            }
            poly_add(&mut out, e, ca * cb);
        }
    }
    out
}

/// Hermite polynomial H with `(-∂_{k1})…(-∂_{ks}) p = p·H(y)`, `y = P z`, in the variables y
/// (one per delta sample); `pdd` is the precision restricted to the delta samples.
pub(crate) fn hermite_poly(dirs: &[usize], pdd: &[f64], nd: usize) -> Poly {
    let mut h: Poly = vec![([0u8; 8], 1.0)];
    for &k in dirs {
        let mut next = Poly::new();
        for (e, c) in &h {
            // y_k * term
            let mut e1 = *e;
            e1[k] += 1;
            poly_add(&mut next, e1, *c);
            // - Σ_j P_kj ∂/∂y_j term
            for j in 0..nd {
                if e[j] > 0 {
                    let mut e2 = *e;
                    e2[j] -= 1;
                    poly_add(&mut next, e2, -c * e[j] as f64 * pdd[k * nd + j]);
                }
            }
        }
        h = next;
    }
    h
}
