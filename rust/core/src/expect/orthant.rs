//! Orthant probabilities `P(z_1 > 0, …, z_d > 0)` of centred Gaussian vectors, d ≤ 4.
//!
//! * d ≤ 3: Sheppard's closed forms, `1/4 + asin ρ/2π` and
//!   `1/8 + (asin ρ12 + asin ρ13 + asin ρ23)/4π`.
//! * d = 4: Plackett's identity `∂P/∂ρ_ij = φ₂(0,0; ρ_ij) · P(z_k>0, z_l>0 | z_i = z_j = 0)`
//!   integrated along `R(t) = I + t(R − I)` from `P(I) = 1/16`.  For each pair the
//!   substitution `θ = asin(t ρ_ij)` absorbs the density, `I_ij = (1/2π) ∫_0^{asin ρ_ij}
//!   (1/4 + asin ρ_kl·ij(t)/2π) dθ`, and `θ = Θ(1 − v²)` smooths the square-root endpoint
//!   behaviour of nearly singular correlation matrices; Gauss–Legendre in `v`, doubled until
//!   two successive values agree to 1e-9 (the error roughly squares per doubling, so the finer
//!   value is good to ~1e-14; see the tests).

use std::f64::consts::PI;
use std::sync::OnceLock;

use crate::quadrature::legendre;

/// Relative variance below which a coordinate counts as degenerate (orthant undefined).
const MIN_VARIANCE: f64 = 1e-300;

/// Gauss–Legendre rules mapped to [0, 1] for the doubling sequence 8, 16, …, 1024.
fn rules() -> &'static [(Vec<f64>, Vec<f64>)] {
    static RULES: OnceLock<Vec<(Vec<f64>, Vec<f64>)>> = OnceLock::new();
    RULES.get_or_init(|| {
        (3..=10)
            .map(|p| {
                let r = legendre(1 << p);
                let x = r.nodes.iter().map(|&u| 0.5 * (u + 1.0)).collect();
                let w = r.weights.iter().map(|&w| 0.5 * w).collect();
                (x, w)
            })
            .collect()
    })
}

/// `∫_0^1 f`: Gauss–Legendre doubled (8, 16, …, 1024 nodes) until two successive rules agree
/// to 1e-9.  On these (analytic, after the substitutions) integrands the error roughly squares
/// per doubling, so the accepted, finer value is good to ~1e-14 (tested against nearly singular
/// cases).
fn integrate_01(f: impl Fn(f64) -> f64) -> f64 {
    let rs = rules();
    let apply = |rule: &(Vec<f64>, Vec<f64>)| -> f64 {
        rule.0.iter().zip(&rule.1).map(|(&v, &w)| w * f(v)).sum()
    };
    let mut prev = apply(&rs[0]);
    let mut val = prev;
    for rule in &rs[1..] {
        val = apply(rule);
        if (val - prev).abs() <= 1e-9 {
            break;
        }
        prev = val;
    }
    val
}

/// `P(z > 0)` for `z ~ N(0, cov)` with `cov` d×d row-major (d ≤ 4); `None` when a variance
/// vanishes (the indicator at 0 is then undefined) or d > 4.
pub fn orthant(cov: &[f64], d: usize) -> Option<f64> {
    let mut s = [0.0f64; 4];
    if d > 4 {
        return None;
    }
    for i in 0..d {
        let v = cov[i * d + i];
        if v.is_nan() || v <= MIN_VARIANCE {
            return None;
        }
        s[i] = v.sqrt();
    }
    let mut r = [[0.0f64; 4]; 4];
    for i in 0..d {
        r[i][i] = 1.0;
        for j in 0..i {
            let c = (cov[i * d + j] / (s[i] * s[j])).clamp(-1.0, 1.0);
            r[i][j] = c;
            r[j][i] = c;
        }
    }
    Some(match d {
        0 => 1.0,
        1 => 0.5,
        2 => 0.25 + r[0][1].asin() / (2.0 * PI),
        3 => 0.125 + (r[0][1].asin() + r[0][2].asin() + r[1][2].asin()) / (4.0 * PI),
        _ => orthant4(&r),
    })
}

/// The six pairs (i, j) of four coordinates with their complements (k, l).
const PAIRS: [(usize, usize, usize, usize); 6] = [
    (0, 1, 2, 3),
    (0, 2, 1, 3),
    (0, 3, 1, 2),
    (1, 2, 0, 3),
    (1, 3, 0, 2),
    (2, 3, 0, 1),
];

/// Largest |ρ_ij| for which [`orthant4`] integrates all pairs on shared nodes in t.
const SHARED_T_MAX_RHO: f64 = 0.98;

/// Four-dimensional orthant probability of a correlation matrix (Plackett's reduction).
pub fn orthant4(r: &[[f64; 4]; 4]) -> f64 {
    let max_rho = (0..4)
        .flat_map(|i| (0..i).map(move |j| (i, j)))
        .map(|(i, j)| r[i][j].abs())
        .fold(0.0, f64::max);
    if max_rho <= SHARED_T_MAX_RHO {
        orthant4_shared_t(r)
    } else {
        orthant4_per_pair(r)
    }
}

/// |ρ_ij| ≤ 0.98: the Plackett integrand `Σ_ij ρ_ij φ₂(tρ_ij) P(kl | ij; R(t))` is analytic on a
/// neighbourhood of [0, 1] (after `t = 1 − v²`, also near t = 1); one inverse of R(t) per node
/// gives all six partial correlations `ρ_kl·ij = −Q_kl/√(Q_kk Q_ll)` (Q = R(t)⁻¹).
fn orthant4_shared_t(r: &[[f64; 4]; 4]) -> f64 {
    let integrand = |t: f64| -> f64 {
        let mut m = [[0.0f64; 4]; 4];
        for i in 0..4 {
            for j in 0..4 {
                m[i][j] = if i == j { 1.0 } else { t * r[i][j] };
            }
        }
        let q = inverse4(&m);
        let mut acc = 0.0;
        for &(i, j, k, l) in &PAIRS {
            let rij = r[i][j];
            if rij == 0.0 {
                continue;
            }
            let pc = (-q[k][l] / (q[k][k] * q[l][l]).sqrt()).clamp(-1.0, 1.0);
            let rho = t * rij;
            acc += rij / (2.0 * PI * (1.0 - rho * rho).sqrt()) * (0.25 + pc.asin() / (2.0 * PI));
        }
        acc
    };
    // t = 1 − v²: smooths the square-root behaviour at t = 1 of strongly correlated matrices.
    let val = integrate_01(|v| 2.0 * v * integrand(1.0 - v * v));
    (1.0 / 16.0 + val).clamp(0.0, 1.0)
}

/// Inverse of a symmetric positive-definite 4×4 matrix (Gauss–Jordan, no pivoting needed).
fn inverse4(a: &[[f64; 4]; 4]) -> [[f64; 4]; 4] {
    let mut m = *a;
    let mut inv = [[0.0f64; 4]; 4];
    for (i, row) in inv.iter_mut().enumerate() {
        row[i] = 1.0;
    }
    for c in 0..4 {
        let p = 1.0 / m[c][c];
        for j in 0..4 {
            m[c][j] *= p;
            inv[c][j] *= p;
        }
        for rr in 0..4 {
            if rr != c {
                let f = m[rr][c];
                if f != 0.0 {
                    for j in 0..4 {
                        m[rr][j] -= f * m[c][j];
                        inv[rr][j] -= f * inv[c][j];
                    }
                }
            }
        }
    }
    inv
}

/// Strong correlations: per pair, `θ = asin(tρ_ij)` and `θ = Θ(1 − v²)`.
fn orthant4_per_pair(r: &[[f64; 4]; 4]) -> f64 {
    let mut total = 1.0 / 16.0;
    for &(i, j, k, l) in &PAIRS {
        let rij = r[i][j];
        if rij == 0.0 {
            continue;
        }
        let big_theta = rij.asin();
        // P(z_k > 0, z_l > 0 | z_i = z_j = 0) at R(t), t = sin θ / ρ_ij.
        let cond = |v: f64| -> f64 {
            let theta = big_theta * (1.0 - v * v);
            let (sn, cs) = theta.sin_cos();
            let t = sn / rij;
            let rho = sn; // t ρ_ij
            let c2 = cs * cs; // 1 − ρ²
            let (u0, u1) = (t * r[k][i], t * r[k][j]);
            let (w0, w1) = (t * r[l][i], t * r[l][j]);
            let q = |a0: f64, a1: f64, b0: f64, b1: f64| {
                (a0 * b0 + a1 * b1 - rho * (a0 * b1 + a1 * b0)) / c2
            };
            let mkk = 1.0 - q(u0, u1, u0, u1);
            let mll = 1.0 - q(w0, w1, w0, w1);
            let mkl = t * r[k][l] - q(u0, u1, w0, w1);
            let den = (mkk * mll).max(0.0).sqrt();
            let pc = if den > 0.0 {
                (mkl / den).clamp(-1.0, 1.0)
            } else {
                0.0
            };
            (0.25 + pc.asin() / (2.0 * PI)) * 2.0 * big_theta * v
        };
        total += integrate_01(cond) / (2.0 * PI);
    }
    total.clamp(0.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn corr(rho: &[f64; 6]) -> [[f64; 4]; 4] {
        let mut r = [[1.0; 4]; 4];
        let idx = [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)];
        for (&(i, j), &v) in idx.iter().zip(rho) {
            r[i][j] = v;
            r[j][i] = v;
        }
        r
    }

    #[test]
    fn equicorrelated_half_is_one_over_five() {
        // P(z > 0) = 1/(d+1) for equicorrelation 1/2.
        let r = corr(&[0.5; 6]);
        assert!((orthant4(&r) - 0.2).abs() < 1e-15, "{}", orthant4(&r));
        let c3 = [1.0, 0.5, 0.5, 0.5, 1.0, 0.5, 0.5, 0.5, 1.0];
        assert!((orthant(&c3, 3).unwrap() - 0.25).abs() < 1e-15);
    }

    #[test]
    fn factorised_blocks_multiply() {
        for &(a, b) in &[(0.3, -0.7), (0.999, 0.2), (-0.9999, 0.99999)] {
            let r = corr(&[a, 0.0, 0.0, 0.0, 0.0, b]);
            let want = (0.25 + a.asin() / (2.0 * PI)) * (0.25 + b.asin() / (2.0 * PI));
            assert!(
                (orthant4(&r) - want).abs() < 1e-13,
                "{a} {b}: {} vs {want}",
                orthant4(&r)
            );
        }
    }

    /// Reference for one-factor correlations ρ_ij = a_i a_j: with z_i = a_i X + √(1−a_i²) ε_i,
    /// `P = E_X[Π Φ(a_i X/√(1−a_i²))]`, a 1-D integral done on geometrically graded panels.
    fn one_factor(a: &[f64; 4]) -> f64 {
        let phi_cdf = |x: f64| 0.5 * libm::erfc(-x / std::f64::consts::SQRT_2);
        let rule = legendre(32);
        let mut edges = vec![0.0];
        let mut e = 1e-7;
        while e < 9.0 {
            edges.push(e);
            e *= 2.0;
        }
        edges.push(9.0);
        let mut total = 0.0;
        for sign in [-1.0, 1.0] {
            for w in edges.windows(2) {
                let (lo, hi) = (w[0], w[1]);
                for (&u, &wt) in rule.nodes.iter().zip(&rule.weights) {
                    let x = sign * (lo + (hi - lo) * 0.5 * (u + 1.0));
                    let dens = (-0.5 * x * x).exp() / (2.0 * PI).sqrt();
                    let f: f64 = a
                        .iter()
                        .map(|&ai| phi_cdf(ai * x / (1.0 - ai * ai).sqrt()))
                        .product();
                    total += 0.5 * (hi - lo) * wt * dens * f;
                }
            }
        }
        total
    }

    #[test]
    fn nearly_singular_matrices_match_a_one_factor_reference() {
        // Highly correlated samples (deep relu layers): 1 − ρ from 1e-2 down to 1e-8.
        for &eps in &[1e-2, 1e-4, 1e-6, 1e-8] {
            let a = [1.0 - eps, 1.0 - 2.0 * eps, 1.0 - 0.5 * eps, 1.0 - 3.0 * eps];
            let mut r = [[1.0; 4]; 4];
            for i in 0..4 {
                for j in 0..4 {
                    if i != j {
                        r[i][j] = a[i] * a[j];
                    }
                }
            }
            let (v, want) = (orthant4(&r), one_factor(&a));
            // Below 1 − ρ ≈ 1e-6 the conditional variances lose digits to rounding (~eps/(1−ρ)).
            let tol = if eps >= 1e-4 {
                1e-12
            } else {
                1e-16 / eps.powf(1.25)
            };
            assert!(
                (v - want).abs() < tol,
                "1 - a = {eps}: {v} vs {want} ({:e})",
                v - want
            );
        }
        let a = [0.3, -0.8, 0.55, 0.9];
        let mut r = [[1.0; 4]; 4];
        for i in 0..4 {
            for j in 0..4 {
                if i != j {
                    r[i][j] = a[i] * a[j];
                }
            }
        }
        assert!(
            (orthant4(&r) - one_factor(&a)).abs() < 1e-14,
            "{} {}",
            orthant4(&r),
            one_factor(&a)
        );
    }

    #[test]
    fn shared_and_per_pair_integrations_agree() {
        let a = [0.98, 0.97, 0.96, 0.95];
        let one_factor = [
            a[0] * a[1],
            a[0] * a[2],
            a[0] * a[3],
            a[1] * a[2],
            a[1] * a[3],
            a[2] * a[3],
        ];
        for rho in [
            [0.3, -0.2, 0.2, 0.25, -0.1, 0.5],
            [0.7, 0.7, 0.7, 0.7, 0.7, 0.7],
            [-0.3, -0.3, -0.3, -0.3, -0.3, -0.3],
            [0.98, 0.97, 0.98, 0.97, 0.98, 0.98],
            one_factor,
        ] {
            let r = corr(&rho);
            let (a, b) = (orthant4_shared_t(&r), orthant4_per_pair(&r));
            assert!((a - b).abs() < 1e-14, "{rho:?}: {a} vs {b}");
        }
    }

    #[test]
    fn one_independent_coordinate_halves_the_three_dimensional_value() {
        let r = corr(&[0.4, -0.3, 0.0, 0.6, 0.0, 0.0]);
        let c3 = [1.0, 0.4, -0.3, 0.4, 1.0, 0.6, -0.3, 0.6, 1.0];
        let want = 0.5 * orthant(&c3, 3).unwrap();
        assert!((orthant4(&r) - want).abs() < 1e-14);
    }
}
