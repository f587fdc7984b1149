//! Gaussian quadrature rules computed in-crate: Golub–Welsch (eigen-decomposition of the
//! Jacobi matrix by implicit QL) followed by Newton polishing of each node on the
//! three-term recurrence, so nodes and weights are accurate to machine precision.
//!
//! * [`hermite`]: probabilists' Gauss–Hermite, weight `φ(u) = e^{-u²/2}/√(2π)` (weights sum to 1).
//! * [`legendre`]: Gauss–Legendre on `[-1, 1]`, weight 1 (weights sum to 2).
//!
//! Rules are cached per order.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

/// Nodes and weights of a quadrature rule.
#[derive(Debug, Clone)]
pub struct Rule {
    pub nodes: Vec<f64>,
    pub weights: Vec<f64>,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Family {
    Hermite,
    HalfHermite,
    Legendre,
}

type RuleCache = Mutex<HashMap<(Family, usize), Arc<Rule>>>;

fn cache() -> &'static RuleCache {
    static CACHE: OnceLock<RuleCache> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::new()))
}

fn cached(family: Family, n: usize, build: fn(usize) -> Rule) -> Arc<Rule> {
    assert!(n >= 1, "quadrature order must be >= 1");
    if let Some(r) = cache().lock().unwrap().get(&(family, n)) {
        return r.clone();
    }
    let rule = Arc::new(build(n));
    cache().lock().unwrap().insert((family, n), rule.clone());
    rule
}

/// Probabilists' Gauss–Hermite rule of order `n`: `E[f(u)] ≈ Σ w_i f(u_i)`, `u ~ N(0,1)`.
pub fn hermite(n: usize) -> Arc<Rule> {
    cached(Family::Hermite, n, build_hermite)
}

/// Half-range Gauss–Hermite rule of order `n`: `∫_0^∞ φ(v) f(v) dv ≈ Σ w_i f(v_i)`
/// (weights sum to 1/2).  Recurrence coefficients by the discretised Stieltjes procedure
/// (exact Gauss–Legendre discretisation of [0, 16]), nodes and weights by Golub–Welsch.
pub fn half_hermite(n: usize) -> Arc<Rule> {
    cached(Family::HalfHermite, n, build_half_hermite)
}

/// Gauss–Legendre rule of order `n` on `[-1, 1]`.
pub fn legendre(n: usize) -> Arc<Rule> {
    cached(Family::Legendre, n, build_legendre)
}

/// Eigenvalues of the symmetric tridiagonal matrix (diagonal `d`, off-diagonal `e[0..n-1]`)
/// and the squared first components of its normalised eigenvectors (implicit QL with
/// Wilkinson shifts, as in Golub & Welsch 1969).
pub fn tridiagonal_eigen(mut d: Vec<f64>, off: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let n = d.len();
    let mut e = vec![0.0; n];
    e[..n.saturating_sub(1)].copy_from_slice(&off[..n.saturating_sub(1)]);
    let mut z = vec![0.0; n];
    if n > 0 {
        z[0] = 1.0;
    }
    for l in 0..n {
        let mut iter = 0;
        loop {
            let mut m = l;
            while m + 1 < n {
                let dd = d[m].abs() + d[m + 1].abs();
                if e[m].abs() <= f64::EPSILON * dd {
                    break;
                }
                m += 1;
            }
            if m == l {
                break;
            }
            iter += 1;
            if iter > 60 {
                break;
            }
            let mut g = (d[l + 1] - d[l]) / (2.0 * e[l]);
            let mut r = g.hypot(1.0);
            g = d[m] - d[l] + e[l] / (g + r.copysign(g));
            let (mut s, mut c, mut p) = (1.0, 1.0, 0.0);
            let mut i = m;
            let mut early = false;
            while i > l {
                i -= 1;
                let f = s * e[i];
                let b = c * e[i];
                r = f.hypot(g);
                e[i + 1] = r;
                if r == 0.0 {
                    d[i + 1] -= p;
                    e[m] = 0.0;
                    early = true;
                    break;
                }
                s = f / r;
                c = g / r;
                g = d[i + 1] - p;
                r = (d[i] - g) * s + 2.0 * c * b;
                p = s * r;
                d[i + 1] = g + p;
                g = c * r - b;
                let fz = z[i + 1];
                z[i + 1] = s * z[i] + c * fz;
                z[i] = c * z[i] - s * fz;
            }
            if early {
                continue;
            }
            d[l] -= p;
            e[l] = g;
            e[m] = 0.0;
        }
    }
    let w = z.iter().map(|v| v * v).collect();
    (d, w)
}

fn sort_rule(nodes: Vec<f64>, weights: Vec<f64>) -> Rule {
    let mut idx: Vec<usize> = (0..nodes.len()).collect();
    idx.sort_by(|&a, &b| nodes[a].partial_cmp(&nodes[b]).unwrap());
    Rule {
        nodes: idx.iter().map(|&i| nodes[i]).collect(),
        weights: idx.iter().map(|&i| weights[i]).collect(),
    }
}

/// Enforce the exact symmetry of a rule for an even weight (nodes ±x, equal weights).
fn symmetric(mut r: Rule) -> Rule {
    let n = r.nodes.len();
    for i in 0..n / 2 {
        let j = n - 1 - i;
        let a = 0.5 * (r.nodes[j] - r.nodes[i]);
        let b = 0.5 * (r.weights[i] + r.weights[j]);
        r.nodes[i] = -a;
        r.nodes[j] = a;
        r.weights[i] = b;
        r.weights[j] = b;
    }
    if n % 2 == 1 {
        r.nodes[n / 2] = 0.0;
    }
    r
}

/// Orthonormal probabilists' Hermite values p_{n-1}(x), p_n(x) and Σ_{k<n} p_k(x)².
fn hermite_orthonormal(n: usize, x: f64) -> (f64, f64, f64) {
    let (mut pm1, mut p) = (0.0, 1.0);
    let mut sum = 0.0;
    for k in 0..n {
        sum += p * p;
        let next = (x * p - (k as f64).sqrt() * pm1) / ((k + 1) as f64).sqrt();
        pm1 = p;
        p = next;
    }
    (pm1, p, sum)
}

fn build_hermite(n: usize) -> Rule {
    let off: Vec<f64> = (1..n).map(|k| (k as f64).sqrt()).collect();
    let (mut x, _) = tridiagonal_eigen(vec![0.0; n], &off);
    let mut w = vec![0.0; n];
    for i in 0..n {
        // Newton polish on p_n, with p_n' = √n p_{n-1}.
        for _ in 0..3 {
            let (pm1, p, _) = hermite_orthonormal(n, x[i]);
            let dp = (n as f64).sqrt() * pm1;
            if dp != 0.0 {
                x[i] -= p / dp;
            }
        }
        let (_, _, sum) = hermite_orthonormal(n, x[i]);
        w[i] = 1.0 / sum; // Christoffel function of the normalised measure.
    }
    symmetric(sort_rule(x, w))
}

fn build_half_hermite(n: usize) -> Rule {
    // Discrete measure: Gauss–Legendre on [0, T] with weights φ(v); exact for the
    // polynomial moments needed to degree 2n (T = 16: tail mass < 1e-57).
    let t_max = 16.0;
    let base = legendre(600);
    let inv_sqrt_2pi = 1.0 / (2.0 * std::f64::consts::PI).sqrt();
    let v: Vec<f64> = base.nodes.iter().map(|x| 0.5 * t_max * (x + 1.0)).collect();
    let w: Vec<f64> = base
        .weights
        .iter()
        .zip(&v)
        .map(|(wi, vi)| wi * 0.5 * t_max * (-0.5 * vi * vi).exp() * inv_sqrt_2pi)
        .collect();
    let mut alpha = vec![0.0; n];
    let mut beta = vec![0.0; n];
    let mut p_prev = vec![0.0; v.len()];
    let mut p = vec![1.0; v.len()];
    let mut norm_prev = 1.0;
    let mu0: f64 = w.iter().sum();
    for k in 0..n {
        let nk: f64 = (0..v.len()).map(|i| w[i] * p[i] * p[i]).sum();
        alpha[k] = (0..v.len()).map(|i| w[i] * v[i] * p[i] * p[i]).sum::<f64>() / nk;
        if k > 0 {
            beta[k] = nk / norm_prev;
        }
        // normalise to avoid overflow
        let scale = nk.sqrt();
        let next: Vec<f64> = (0..v.len())
            .map(|i| {
                ((v[i] - alpha[k]) * p[i] - if k > 0 { beta[k] * p_prev[i] } else { 0.0 }) / scale
            })
            .collect();
        p_prev = p.iter().map(|x| x / scale).collect();
        p = next;
        // ‖p_prev‖² in the same scaling as the next ‖p‖²
        norm_prev = (0..v.len()).map(|i| w[i] * p_prev[i] * p_prev[i]).sum();
    }
    let off: Vec<f64> = beta[1..].iter().map(|b| b.sqrt()).collect();
    let (x, z2) = tridiagonal_eigen(alpha, &off);
    let wts: Vec<f64> = z2.iter().map(|z| z * mu0).collect();
    sort_rule(x, wts)
}

fn legendre_p(n: usize, x: f64) -> (f64, f64) {
    let (mut pm1, mut p) = (0.0, 1.0);
    for k in 0..n {
        let next = ((2 * k + 1) as f64 * x * p - k as f64 * pm1) / (k + 1) as f64;
        pm1 = p;
        p = next;
    }
    (pm1, p)
}

fn build_legendre(n: usize) -> Rule {
    let off: Vec<f64> = (1..n)
        .map(|k| {
            let k = k as f64;
            k / (4.0 * k * k - 1.0).sqrt()
        })
        .collect();
    let (mut x, _) = tridiagonal_eigen(vec![0.0; n], &off);
    let mut w = vec![0.0; n];
    for i in 0..n {
        for _ in 0..3 {
            let (pm1, p) = legendre_p(n, x[i]);
            let dp = n as f64 * (x[i] * p - pm1) / (x[i] * x[i] - 1.0);
            if dp != 0.0 && dp.is_finite() {
                x[i] -= p / dp;
            }
        }
        let (pm1, p) = legendre_p(n, x[i]);
        let dp = n as f64 * (x[i] * p - pm1) / (x[i] * x[i] - 1.0);
        w[i] = 2.0 / ((1.0 - x[i] * x[i]) * dp * dp);
    }
    symmetric(sort_rule(x, w))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gauss_moment(k: u32) -> f64 {
        // E[u^k] for u ~ N(0,1): (k-1)!! for even k.
        if k % 2 == 1 {
            return 0.0;
        }
        (1..k).step_by(2).map(|v| v as f64).product()
    }

    #[test]
    fn hermite_is_exact_for_polynomials() {
        for n in [1usize, 2, 5, 10, 40, 100] {
            let r = hermite(n);
            for k in 0..(2 * n as u32).min(30) {
                let s: f64 = r
                    .nodes
                    .iter()
                    .zip(&r.weights)
                    .map(|(x, w)| w * x.powi(k as i32))
                    .sum();
                let exact = gauss_moment(k);
                let scale: f64 = r
                    .nodes
                    .iter()
                    .zip(&r.weights)
                    .map(|(x, w)| w * x.abs().powi(k as i32))
                    .sum();
                assert!(
                    (s - exact).abs() <= 1e-13 * scale.max(1.0),
                    "n={n} k={k} {s} {exact}"
                );
            }
        }
    }

    #[test]
    fn legendre_is_exact_for_polynomials() {
        for n in [1usize, 3, 8, 33, 128] {
            let r = legendre(n);
            for k in 0..(2 * n as i32).min(40) {
                let s: f64 = r
                    .nodes
                    .iter()
                    .zip(&r.weights)
                    .map(|(x, w)| w * x.powi(k))
                    .sum();
                let exact = if k % 2 == 1 {
                    0.0
                } else {
                    2.0 / (k as f64 + 1.0)
                };
                assert!((s - exact).abs() < 1e-13, "n={n} k={k} {s} {exact}");
            }
        }
    }

    #[test]
    fn half_hermite_moments() {
        // ∫_0^∞ φ(v) v^k dv = 2^{k/2 - 1} Γ((k+1)/2) / √π
        for n in [1usize, 4, 12, 40] {
            let r = half_hermite(n);
            for k in 0..(2 * n).min(30) {
                let s: f64 = r
                    .nodes
                    .iter()
                    .zip(&r.weights)
                    .map(|(x, w)| w * x.powi(k as i32))
                    .sum();
                let exact = 2f64.powf(k as f64 / 2.0 - 1.0) * gamma_half(k + 1)
                    / std::f64::consts::PI.sqrt();
                assert!(
                    (s - exact).abs() < 1e-12 * exact.max(1.0),
                    "n={n} k={k} {s} {exact}"
                );
            }
        }
    }

    /// Γ(m/2) for integer m ≥ 1.
    fn gamma_half(m: usize) -> f64 {
        if m == 1 {
            std::f64::consts::PI.sqrt()
        } else if m == 2 {
            1.0
        } else {
            (m as f64 / 2.0 - 1.0) * gamma_half(m - 2)
        }
    }

    #[test]
    fn hermite_integrates_smooth_function() {
        // E[cos(u)] = e^{-1/2}
        let r = hermite(40);
        let s: f64 = r
            .nodes
            .iter()
            .zip(&r.weights)
            .map(|(x, w)| w * x.cos())
            .sum();
        assert!((s - (-0.5f64).exp()).abs() < 1e-15);
    }
}
