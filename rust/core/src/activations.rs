//! Activation functions σ with exact derivatives ("jets") up to [`MAX_ORDER`].
//!
//! Kinked activations (relu, leaky relu, elu) are piecewise smooth with one breakpoint at
//! z = 0; their regular derivatives are evaluated one-sidedly ([`Side`]), and the
//! expectation engine adds the delta-function parts from the jumps of the one-sided jets.

use std::f64::consts::PI;
use std::fmt::Debug;
use std::sync::{Arc, OnceLock};

use crate::RgError;

/// Highest derivative order provided by built-in activations.
pub const MAX_ORDER: usize = 8;

/// Which one-sided branch of a piecewise activation to evaluate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// By the sign of `z - kink`; exactly at the kink, the average of both sides.
    Auto,
    Left,
    Right,
}

/// An activation function: batched evaluation of σ and its derivatives.
pub trait ActivationFn: Send + Sync + Debug {
    fn name(&self) -> String;
    /// Highest derivative order available.
    fn max_order(&self) -> usize;
    /// The breakpoint where derivatives jump (distributional derivatives carry deltas there).
    fn kink(&self) -> Option<f64> {
        None
    }
    /// Points where the quadrature splits the integration line (the kink, and the centre of
    /// saturating activations whose transition sharpens at large variance).
    fn split_points(&self) -> Vec<f64> {
        self.kink().into_iter().collect()
    }
    /// `Some((slope_left, slope_right))` for activations that are linear on each side of a
    /// kink at 0 (relu, leaky relu): the innermost quadrature level is then done in closed form.
    fn piecewise_linear(&self) -> Option<(f64, f64)> {
        None
    }
    /// The closed-form representation used by [`crate::expect::closed_form`], when there is one.
    fn gauss_class(&self) -> Option<GaussClass> {
        None
    }
    /// `out[i * (order + 1) + k] = σ^{(k)}(z[i])` for `k = 0..=order`.
    fn jets(&self, z: &[f64], order: usize, side: Side, out: &mut [f64]) -> Result<(), RgError>;
}

/// Activations whose Gaussian expectations reduce to centred orthant probabilities
/// (see [`crate::expect::closed_form`]).
#[derive(Clone, Debug, PartialEq)]
pub enum GaussClass {
    /// `σ(z) = P(z) + A(z) Φ(c z) + B(z) φ(c z)` with polynomials `P, A, B` (coefficients in
    /// ascending powers): linear, monomials, erf (`2Φ(√2 z) − 1`), gelu (`z Φ(z)`).
    Smooth {
        c: f64,
        p: Vec<f64>,
        a: Vec<f64>,
        b: Vec<f64>,
    },
    /// `σ(z) = left·z` for z < 0 and `right·z` for z > 0 (relu, leaky relu).
    Kinked { left: f64, right: f64 },
}

/// Shared handle to an activation.
pub type Activation = Arc<dyn ActivationFn>;

/// The built-in activations.
#[derive(Clone, Debug, PartialEq)]
pub enum Builtin {
    Linear,
    Relu,
    /// `z` for z > 0, `slope·z` for z < 0.
    LeakyRelu(f64),
    Tanh,
    Erf,
    Sin,
    /// Exact erf form `z Φ(z)`.
    Gelu,
    /// `z · sigmoid(z)` (silu).
    Swish,
    Softplus,
    Sigmoid,
    /// `z` for z > 0, `α(e^z − 1)` for z < 0.
    Elu(f64),
    /// `z^p`.
    Monomial(u32),
}

impl Builtin {
    /// Parse a built-in by name and parameter list (`slope`, `alpha` or `p`).
    pub fn from_name(name: &str, params: &[f64]) -> Result<Builtin, RgError> {
        let p = |i: usize, default: f64| params.get(i).copied().unwrap_or(default);
        let b = match name {
            "linear" | "identity" => Builtin::Linear,
            "relu" => Builtin::Relu,
            "leaky_relu" => Builtin::LeakyRelu(p(0, 0.01)),
            "tanh" => Builtin::Tanh,
            "erf" => Builtin::Erf,
            "sin" => Builtin::Sin,
            "gelu" => Builtin::Gelu,
            "swish" | "silu" => Builtin::Swish,
            "softplus" => Builtin::Softplus,
            "sigmoid" => Builtin::Sigmoid,
            "elu" => {
                let a = p(0, 1.0);
                if !(a > 0.0 && a.is_finite()) {
                    return Err(RgError::value(format!("elu alpha must be positive, got {a}")));
                }
                Builtin::Elu(a)
            }
            "monomial" => {
                let v = p(0, 2.0);
                if !(v >= 0.0 && v.fract() == 0.0 && v < 64.0) {
                    return Err(RgError::value(format!(
                        "monomial power p must be a non-negative integer, got {v}"
                    )));
                }
                Builtin::Monomial(v as u32)
            }
            other => {
                return Err(RgError::value(format!(
                    "unknown activation '{other}'; choose linear, relu, leaky_relu, tanh, erf, sin, gelu, swish, softplus, sigmoid, elu, monomial"
                )))
            }
        };
        if let Builtin::LeakyRelu(a) = b {
            if !a.is_finite() {
                return Err(RgError::value("leaky_relu slope must be finite"));
            }
        }
        Ok(b)
    }

    pub fn into_activation(self) -> Activation {
        Arc::new(self)
    }

    fn is_kinked(&self) -> bool {
        match self {
            Builtin::Relu | Builtin::Elu(_) => true,
            Builtin::LeakyRelu(a) => *a != 1.0,
            _ => false,
        }
    }
}

/// Coefficients of polynomials q_k with f^{(k)} = q_k(f) for f' = c0 + c1 f + c2 f²
/// (tanh: f' = 1 − f², sigmoid: f' = f − f²).
fn riccati_polys(c: [f64; 3]) -> Vec<Vec<f64>> {
    let mut polys = vec![vec![0.0, 1.0]];
    for _ in 0..=MAX_ORDER {
        let p = polys.last().unwrap();
        // d/dz q(f) = q'(f) f'
        let dq: Vec<f64> = (1..p.len()).map(|i| i as f64 * p[i]).collect();
        let mut next = vec![0.0; dq.len() + 2];
        for (i, a) in dq.iter().enumerate() {
            for (j, b) in c.iter().enumerate() {
                next[i + j] += a * b;
            }
        }
        polys.push(next);
    }
    polys
}

fn tanh_polys() -> &'static Vec<Vec<f64>> {
    static P: OnceLock<Vec<Vec<f64>>> = OnceLock::new();
    P.get_or_init(|| riccati_polys([1.0, 0.0, -1.0]))
}

fn sigmoid_polys() -> &'static Vec<Vec<f64>> {
    static P: OnceLock<Vec<Vec<f64>>> = OnceLock::new();
    P.get_or_init(|| riccati_polys([0.0, 1.0, -1.0]))
}

fn horner(p: &[f64], x: f64) -> f64 {
    p.iter().rev().fold(0.0, |acc, c| acc * x + c)
}

fn sigmoid(z: f64) -> f64 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}

/// Probabilists' Hermite values He_0..He_n at x.
fn hermite_e(x: f64, n: usize, out: &mut [f64]) {
    out[0] = 1.0;
    if n >= 1 {
        out[1] = x;
    }
    for k in 1..n {
        out[k + 1] = x * out[k] - k as f64 * out[k - 1];
    }
}

/// erf (musl libm port, < 1 ulp).
pub fn erf(x: f64) -> f64 {
    libm::erf(x)
}

/// Standard normal CDF Φ(x), accurate in the far tails (via erfc).
pub fn norm_cdf(x: f64) -> f64 {
    0.5 * libm::erfc(-x / std::f64::consts::SQRT_2)
}

impl ActivationFn for Builtin {
    fn name(&self) -> String {
        match self {
            Builtin::Linear => "linear".into(),
            Builtin::Relu => "relu".into(),
            Builtin::LeakyRelu(a) => format!("leaky_relu(slope={a})"),
            Builtin::Tanh => "tanh".into(),
            Builtin::Erf => "erf".into(),
            Builtin::Sin => "sin".into(),
            Builtin::Gelu => "gelu".into(),
            Builtin::Swish => "swish".into(),
            Builtin::Softplus => "softplus".into(),
            Builtin::Sigmoid => "sigmoid".into(),
            Builtin::Elu(a) => format!("elu(alpha={a})"),
            Builtin::Monomial(p) => format!("monomial(p={p})"),
        }
    }

    fn max_order(&self) -> usize {
        MAX_ORDER
    }

    fn kink(&self) -> Option<f64> {
        if self.is_kinked() {
            Some(0.0)
        } else {
            None
        }
    }

    fn piecewise_linear(&self) -> Option<(f64, f64)> {
        match *self {
            Builtin::Relu => Some((0.0, 1.0)),
            Builtin::LeakyRelu(a) if a != 1.0 => Some((a, 1.0)),
            _ => None,
        }
    }

    fn gauss_class(&self) -> Option<GaussClass> {
        let smooth = |c: f64, p: Vec<f64>, a: Vec<f64>| GaussClass::Smooth { c, p, a, b: vec![] };
        match *self {
            Builtin::Linear | Builtin::LeakyRelu(1.0) => Some(smooth(1.0, vec![0.0, 1.0], vec![])),
            Builtin::Monomial(p) if p <= 12 => {
                let mut c = vec![0.0; p as usize + 1];
                c[p as usize] = 1.0;
                Some(smooth(1.0, c, vec![]))
            }
            Builtin::Erf => Some(smooth(std::f64::consts::SQRT_2, vec![-1.0], vec![2.0])),
            Builtin::Gelu => Some(smooth(1.0, vec![], vec![0.0, 1.0])),
            Builtin::Relu => Some(GaussClass::Kinked {
                left: 0.0,
                right: 1.0,
            }),
            Builtin::LeakyRelu(a) => Some(GaussClass::Kinked {
                left: a,
                right: 1.0,
            }),
            _ => None,
        }
    }

    fn split_points(&self) -> Vec<f64> {
        match self {
            Builtin::Linear | Builtin::Sin | Builtin::Monomial(_) => vec![],
            Builtin::LeakyRelu(a) if *a == 1.0 => vec![],
            _ => vec![0.0],
        }
    }

    fn jets(&self, z: &[f64], order: usize, side: Side, out: &mut [f64]) -> Result<(), RgError> {
        if order > MAX_ORDER {
            return Err(RgError::value(format!(
                "derivative order {order} exceeds the supported maximum {MAX_ORDER}"
            )));
        }
        let m = order + 1;
        for (i, &x) in z.iter().enumerate() {
            let o = &mut out[i * m..(i + 1) * m];
            if self.is_kinked() && side == Side::Auto && x == 0.0 {
                let mut right = vec![0.0; m];
                self.jet_one(x, Side::Right, &mut right);
                self.jet_one(x, Side::Left, o);
                for k in 0..m {
                    o[k] = 0.5 * (o[k] + right[k]);
                }
            } else {
                self.jet_one(x, side, o);
            }
        }
        Ok(())
    }
}

impl Builtin {
    fn jet_one(&self, x: f64, side: Side, o: &mut [f64]) {
        let m = o.len();
        let right = match side {
            Side::Auto => x > 0.0,
            Side::Right => true,
            Side::Left => false,
        };
        o.iter_mut().for_each(|v| *v = 0.0);
        match *self {
            Builtin::Linear => {
                o[0] = x;
                if m > 1 {
                    o[1] = 1.0;
                }
            }
            Builtin::Relu | Builtin::LeakyRelu(_) => {
                let a = if let Builtin::LeakyRelu(s) = *self {
                    s
                } else {
                    0.0
                };
                let slope = if right { 1.0 } else { a };
                o[0] = slope * x;
                if m > 1 {
                    o[1] = slope;
                }
            }
            Builtin::Elu(alpha) => {
                if right {
                    o[0] = x;
                    if m > 1 {
                        o[1] = 1.0;
                    }
                } else {
                    let e = alpha * x.exp();
                    o[0] = e - alpha;
                    for v in o.iter_mut().skip(1) {
                        *v = e;
                    }
                }
            }
            Builtin::Tanh => {
                let t = x.tanh();
                let p = tanh_polys();
                for (k, v) in o.iter_mut().enumerate() {
                    *v = horner(&p[k], t);
                }
            }
            Builtin::Sigmoid => {
                let s = sigmoid(x);
                let p = sigmoid_polys();
                for (k, v) in o.iter_mut().enumerate() {
                    *v = horner(&p[k], s);
                }
            }
            Builtin::Softplus | Builtin::Swish => {
                let s = sigmoid(x);
                let p = sigmoid_polys();
                let sd: Vec<f64> = (0..m).map(|k| horner(&p[k], s)).collect();
                if let Builtin::Softplus = self {
                    o[0] = x.max(0.0) + (-x.abs()).exp().ln_1p();
                    o[1..m].copy_from_slice(&sd[..m - 1]);
                } else {
                    o[0] = x * s;
                    for k in 1..m {
                        o[k] = x * sd[k] + k as f64 * sd[k - 1];
                    }
                }
            }
            Builtin::Erf => {
                o[0] = erf(x);
                if m > 1 {
                    // erf^{(k)} = 2/√π (−1)^{k−1} H_{k−1}(x) e^{−x²}, physicists' H.
                    let g = 2.0 / PI.sqrt() * (-x * x).exp();
                    let (mut hm1, mut h) = (0.0, 1.0);
                    for (k, ok) in o.iter_mut().enumerate().take(m).skip(1) {
                        let sign = if (k - 1).is_multiple_of(2) { 1.0 } else { -1.0 };
                        *ok = sign * h * g;
                        let next = 2.0 * x * h - 2.0 * (k - 1) as f64 * hm1;
                        hm1 = h;
                        h = next;
                    }
                }
            }
            Builtin::Gelu => {
                // σ = zΦ(z); σ^{(k)} = zΦ^{(k)} + kΦ^{(k−1)}; Φ^{(j)} = (−1)^{j−1}He_{j−1}φ.
                let phi = (-0.5 * x * x).exp() / (2.0 * PI).sqrt();
                let mut he = [0.0; MAX_ORDER + 2];
                hermite_e(x, m, &mut he);
                let cdf_der = |j: usize| -> f64 {
                    if j == 0 {
                        norm_cdf(x)
                    } else {
                        let sign = if (j - 1).is_multiple_of(2) { 1.0 } else { -1.0 };
                        sign * he[j - 1] * phi
                    }
                };
                o[0] = x * norm_cdf(x);
                for (k, ok) in o.iter_mut().enumerate().take(m).skip(1) {
                    *ok = x * cdf_der(k) + k as f64 * cdf_der(k - 1);
                }
            }
            Builtin::Sin => {
                let (s, c) = x.sin_cos();
                for (k, v) in o.iter_mut().enumerate() {
                    *v = [s, c, -s, -c][k % 4];
                }
            }
            Builtin::Monomial(p) => {
                for (k, v) in o.iter_mut().enumerate() {
                    if k as u32 <= p {
                        let coef: f64 = ((p - k as u32 + 1)..=p).map(|v| v as f64).product();
                        *v = coef * x.powi((p - k as u32) as i32);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fd_check(b: Builtin, xs: &[f64]) {
        let h = 1e-5;
        for &x in xs {
            let mut j0 = vec![0.0; MAX_ORDER + 1];
            let mut jp = vec![0.0; MAX_ORDER + 1];
            let mut jm = vec![0.0; MAX_ORDER + 1];
            b.jets(&[x], MAX_ORDER, Side::Auto, &mut j0).unwrap();
            b.jets(&[x + h], MAX_ORDER, Side::Auto, &mut jp).unwrap();
            b.jets(&[x - h], MAX_ORDER, Side::Auto, &mut jm).unwrap();
            for k in 0..MAX_ORDER {
                let fd = (jp[k] - jm[k]) / (2.0 * h);
                let tol = 1e-5 * (1.0 + j0[k + 1].abs());
                assert!(
                    (fd - j0[k + 1]).abs() < tol,
                    "{:?} x={x} k={k}: fd {fd} vs {}",
                    b,
                    j0[k + 1]
                );
            }
        }
    }

    #[test]
    fn derivatives_match_finite_differences() {
        let xs = [-2.1, -0.7, 0.3, 1.4];
        for b in [
            Builtin::Tanh,
            Builtin::Erf,
            Builtin::Sin,
            Builtin::Gelu,
            Builtin::Swish,
            Builtin::Softplus,
            Builtin::Sigmoid,
            Builtin::Monomial(5),
            Builtin::Elu(0.7),
            Builtin::Relu,
            Builtin::LeakyRelu(0.2),
        ] {
            fd_check(b, &xs);
        }
    }

    #[test]
    fn erf_is_accurate() {
        // Reference values erf(0.5), erf(1), erf(3), erfc(5)
        assert!((erf(0.5) - 0.520_499_877_813_046_5).abs() < 1e-15);
        assert!((erf(1.0) - 0.842_700_792_949_714_9).abs() < 1e-15);
        assert!((erf(3.0) - 0.999_977_909_503_001_4).abs() < 1e-15);
        assert!((libm::erfc(5.0) - 1.537_459_794_428_034_8e-12).abs() < 1e-26);
        assert!((norm_cdf(-8.0) - 6.220_960_574_271_785e-16).abs() < 1e-28);
    }
}
