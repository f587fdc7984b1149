//! Pairs of (nearly) collinear samples of a kinked activation (relu, leaky relu, elu).
//!
//! The derivative form of the recursions contracts a tensor T over the samples {a, b} of a
//! pair with `⟨∂_{g₁}…∂_{gₘ}(σ^{(p)}_a σ^{(q)}_b)⟩`.  For a kinked activation the entries with
//! derivatives on both samples carry products of delta functions whose expectations diverge
//! like `(1 − ρ²)^{−k/2}` as the pair block becomes singular (ρ → ±1: duplicated, collinear or
//! zero inputs), while the contraction stays finite: every tensor the recursions contract
//! (K1, V, D, F, …) lies in the range of the pair block `K_S` (the reference's restricted
//! pseudo-inverse, `preactivations.md` §2).  For a rank-one block `K_S = v vᵀ` (`z_S = v u`,
//! `u ~ N(0, 1)`), a range tensor is `T = t v^{⊗m}` and
//!
//! `Σ T_{g₁…gₘ} ⟨∂_{g₁}…∂_{gₘ} O⟩ = t ⟨D_u^m O(v u)⟩ = t ⟨O(v u) He_m(u)⟩`  (Stein),
//!
//! a one-dimensional expectation of the regular function `O = σ^{(p)}σ^{(q)}` (p, q ≤ 1).  The
//! table entries of such a pair are therefore `Y^{pq}_m w_{g₁}…w_{gₘ}` with `w = v/|v|²` (the
//! projection onto the range), exact for singular blocks.  A zero-variance sample (a zero
//! input at C_b = 0) is the deterministic z ≡ 0, where the networks evaluate σ'(0) itself:
//! the NTK entries of a zero input depend on that convention (for relu σ'(0) is undefined);
//! like the samplers, the right-hand value is used (relu: σ'(0) = 1).
//!
//! Blocks with `1 − ρ² ≤` [`NEAR_DUPLICATE_RTOL`] are evaluated the same way with
//! `v = (√K_aa, sign(K_ab) √K_bb)` (their limit at coincidence): the derivative form there
//! amplifies the rounding of the contracted tensors by `(1 − ρ²)^{−3/2}` (ρ = 1 − 10⁻⁸ gave
//! Θ1 = 10⁵ for a true 0.1), while the limit differs from the exact value by O(ψ) (ψ the
//! angle of the pair, ψ ≤ √(2·NEAR_DUPLICATE_RTOL)).

use crate::activations::{ActivationFn, Side};
use crate::RgError;

use super::terms::Term;
use super::{expect_block, QuadOpts};

/// Pair blocks of a kinked activation with `1 − ρ² = det K_S / (K_aa K_bb)` at or below this
/// are evaluated in their coincidence limit (see the module doc).
pub const NEAR_DUPLICATE_RTOL: f64 = 1e-5;

/// Highest total derivative order `m` tabulated for a collinear pair.
pub const MAX_M: usize = 5;

/// `1 − ρ²` of a 2×2 block, with the determinant evaluated by Kahan's fused formula (exact
/// to one rounding even when `K_ab² ≈ K_aa K_bb`).
pub fn one_minus_rho2(kaa: f64, kab: f64, kbb: f64) -> f64 {
    let w = kab * kab;
    let e = (-kab).mul_add(kab, w);
    let det = kaa.mul_add(kbb, -w) + e;
    det / (kaa * kbb)
}

/// Whether the pair block `[[kaa, kab], [kab, kbb]]` of `act` is evaluated as collinear:
/// kinked activations only, a zero variance or `1 − ρ² ≤` [`NEAR_DUPLICATE_RTOL`].
pub fn is_collinear_pair(act: &dyn ActivationFn, kaa: f64, kab: f64, kbb: f64) -> bool {
    if act.kink().is_none() {
        return false;
    }
    kaa <= 0.0 || kbb <= 0.0 || one_minus_rho2(kaa, kab, kbb) <= NEAR_DUPLICATE_RTOL
}

/// The range-restricted expectations of a collinear pair: `y[p][q][m] = ⟨D_u^m(σ^{(p)}(v_a u)
/// σ^{(q)}(v_b u))⟩` and the projection `w = v/|v|²` (zero for two zero-variance samples).
#[derive(Clone, Debug, PartialEq)]
pub struct CollinearPair {
    pub w: [f64; 2],
    pub y: [[[f64; MAX_M + 1]; 2]; 2],
}

impl CollinearPair {
    /// `⟨∂_a^{na} ∂_b^{nb}(σ^{(p)}_a σ^{(q)}_b)⟩` projected on the range (p, q ≤ 1).
    #[inline]
    pub fn dn(&self, p: usize, q: usize, na: usize, nb: usize) -> f64 {
        let m = na + nb;
        if m > MAX_M {
            return f64::NAN;
        }
        self.y[p][q][m] * self.w[0].powi(na as i32) * self.w[1].powi(nb as i32)
    }

    /// The same pair seen from b: samples swapped.
    pub fn swapped(&self) -> CollinearPair {
        let mut y = self.y;
        y[0][1] = self.y[1][0];
        y[1][0] = self.y[0][1];
        CollinearPair {
            w: [self.w[1], self.w[0]],
            y,
        }
    }
}

/// Coefficients of the probabilists' Hermite polynomials He_0 … He_5 (ascending powers).
const HERMITE: [[f64; MAX_M + 1]; MAX_M + 1] = [
    [1.0, 0.0, 0.0, 0.0, 0.0, 0.0],
    [0.0, 1.0, 0.0, 0.0, 0.0, 0.0],
    [-1.0, 0.0, 1.0, 0.0, 0.0, 0.0],
    [0.0, -3.0, 0.0, 1.0, 0.0, 0.0],
    [3.0, 0.0, -6.0, 0.0, 1.0, 0.0],
    [0.0, 15.0, 0.0, -10.0, 0.0, 1.0],
];

/// [`CollinearPair`] of the block `[[kaa, kab], [kab, kbb]]` (made exactly rank one:
/// `v = (√kaa, sign(kab) √kbb)`).
pub fn collinear_pair(
    act: &dyn ActivationFn,
    kaa: f64,
    kab: f64,
    kbb: f64,
    opts: &QuadOpts,
) -> Result<CollinearPair, RgError> {
    let sign = if kab < 0.0 { -1.0 } else { 1.0 };
    let v = [kaa.max(0.0).sqrt(), sign * kbb.max(0.0).sqrt()];
    let norm2 = v[0] * v[0] + v[1] * v[1];
    let mut y = [[[0.0; MAX_M + 1]; 2]; 2];
    if norm2 == 0.0 {
        // both samples are the deterministic z = 0: only the values themselves (right-hand
        // values at the kink, as the networks evaluate them)
        let mut jet = [0.0; 2];
        act.jets(&[0.0], 1, Side::Right, &mut jet)?;
        for p in 0..2 {
            for q in 0..2 {
                y[p][q][0] = jet[p] * jet[q];
            }
        }
        return Ok(CollinearPair { w: [0.0, 0.0], y });
    }
    // u = z_i / v_i on the sample with the larger |v|
    let i = if v[0].abs() >= v[1].abs() { 0 } else { 1 };
    let cov = [v[0] * v[0], v[0] * v[1], v[0] * v[1], v[1] * v[1]];
    let mut its = Vec::with_capacity(4 * (MAX_M + 1));
    for p in 0..2u8 {
        for q in 0..2u8 {
            for e in 0..=MAX_M as u8 {
                let mut t = [Term::prod(&[p]), Term::prod(&[q])];
                t[i].zpow = e;
                its.push(t.to_vec());
            }
        }
    }
    let moments = expect_block(act, &cov, 2, &its, opts)?;
    let vi = v[i];
    for p in 0..2 {
        for q in 0..2 {
            let mom = &moments[(p * 2 + q) * (MAX_M + 1)..][..MAX_M + 1];
            for m in 0..=MAX_M {
                y[p][q][m] = (0..=m)
                    .filter(|&e| HERMITE[m][e] != 0.0)
                    .map(|e| HERMITE[m][e] * mom[e] / vi.powi(e as i32))
                    .sum();
            }
        }
    }
    Ok(CollinearPair {
        w: [v[0] / norm2, v[1] / norm2],
        y,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::activations::Builtin;
    use std::f64::consts::PI;

    #[test]
    fn relu_duplicate_pair_is_the_single_sample_derivative() {
        // z_b = z_a (K = k 11ᵀ): ⟨D^m(σσ)⟩ of one sample: ⟨σ²⟩ = k/2, ⟨(σ²)''⟩ = 1, ⟨(σ²)''''⟩ = 0;
        // ⟨σ'σ'⟩ = ½, ⟨(σ'²)''⟩ = ⟨δ'⟩ = 0, ⟨(σσ')'⟩ = ⟨σ'²+σσ''⟩ = ½.
        let k = 1.7;
        let c = collinear_pair(&Builtin::Relu, k, k, k, &QuadOpts::default()).unwrap();
        // D_u with z = √k u: ⟨D_u^m O⟩ = k^{m/2} ⟨D_z^m O⟩
        assert!((c.y[0][0][0] - k / 2.0).abs() < 1e-14);
        assert!((c.y[0][0][2] - k).abs() < 1e-13, "{}", c.y[0][0][2]);
        assert!(c.y[0][0][4].abs() < 1e-12);
        assert!((c.y[1][1][0] - 0.5).abs() < 1e-15);
        assert!(c.y[1][1][2].abs() < 1e-13);
        assert!((c.y[0][1][1] - 0.5 * k.sqrt()).abs() < 1e-14);
        // the projection: Σ_g w_g v_g = 1
        assert!((c.w[0] + c.w[1] - 1.0 / k.sqrt()).abs() < 1e-15);
        // the pair derivative ⟨∂_a∂_b σσ⟩ with T = t v⊗v: t k ⟨D_z²(σ²)⟩
        let t = 0.3;
        let s: f64 = (0..4)
            .map(|m| {
                let (na, nb) = ((m & 1) + (m >> 1 & 1), 2 - (m & 1) - (m >> 1 & 1));
                t * k * c.dn(0, 0, na, nb)
            })
            .sum();
        assert!((s - t * k).abs() < 1e-13, "{s}");
    }

    #[test]
    fn relu_antiparallel_and_zero_samples() {
        // z_b = −2 z_a: σ(z)σ(−2z) = 0 and σ'σ' = 0 identically; ⟨σ_a σ'_b⟩ = 0 too.
        let c = collinear_pair(&Builtin::Relu, 1.0, -2.0, 4.0, &QuadOpts::default()).unwrap();
        for p in 0..2 {
            for q in 0..2 {
                for m in 0..=MAX_M {
                    assert!(c.y[p][q][m].abs() < 1e-14, "{p}{q}{m} {}", c.y[p][q][m]);
                }
            }
        }
        // leaky relu (slope s): σ(z)σ(−2z) = −2 s z² (smooth): ⟨⟩ = −2 s k, ⟨D²⟩ = −4 s k.
        let s = 0.2;
        let c =
            collinear_pair(&Builtin::LeakyRelu(s), 1.5, -3.0, 6.0, &QuadOpts::default()).unwrap();
        assert!((c.y[0][0][0] + 2.0 * s * 1.5).abs() < 1e-13);
        assert!((c.y[0][0][2] + 4.0 * s * 1.5).abs() < 1e-13);
        assert!(c.y[0][0][4].abs() < 1e-12);
        // a zero-variance sample b: σ(z_b) = 0, σ'(0) = 1 (right-hand value, as the networks)
        let c = collinear_pair(&Builtin::Relu, 2.0, 0.0, 0.0, &QuadOpts::default()).unwrap();
        assert_eq!(c.w[1], 0.0);
        assert!(c.y[0][0][0].abs() < 1e-15 && c.y[1][0][0].abs() < 1e-15);
        assert!((c.y[1][1][0] - 0.5).abs() < 1e-14, "{}", c.y[1][1][0]);
        // ⟨σ(z) σ'(0)⟩ = √(k/2π)
        assert!((c.y[0][1][0] - (2.0 / (2.0 * PI)).sqrt()).abs() < 1e-14);
        let z = collinear_pair(&Builtin::Relu, 0.0, 0.0, 0.0, &QuadOpts::default()).unwrap();
        assert_eq!(z.y[1][1][0], 1.0);
        assert_eq!(z.y[0][0][0], 0.0);
    }
}
