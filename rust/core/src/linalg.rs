//! Small dense linear algebra on row-major `n×n` slices (n ≤ ~8): validation of covariance
//! blocks, pivoted Cholesky (exact handling of rank deficiency), inversion.

use crate::RgError;

/// Relative pivot below which a direction counts as degenerate (an exact linear combination
/// of the others): the sample is then integrated as a deterministic function of them.
pub const DEGENERATE_RTOL: f64 = 1e-12;

/// Check that `a` (n×n) is finite, symmetric and positive semi-definite.
pub fn validate_covariance(a: &[f64], n: usize) -> Result<(), RgError> {
    if a.len() != n * n {
        return Err(RgError::value(format!(
            "covariance must have {n}x{n} entries, got {}",
            a.len()
        )));
    }
    if a.iter().any(|v| !v.is_finite()) {
        return Err(RgError::value("covariance contains NaN or inf"));
    }
    let scale = (0..n).map(|i| a[i * n + i].abs()).fold(0.0, f64::max);
    for i in 0..n {
        if a[i * n + i] < 0.0 {
            return Err(RgError::value(format!(
                "covariance has a negative variance K[{i},{i}] = {}",
                a[i * n + i]
            )));
        }
        for j in 0..i {
            let (x, y) = (a[i * n + j], a[j * n + i]);
            if (x - y).abs() > 1e-10 * scale.max(f64::MIN_POSITIVE) {
                return Err(RgError::value(format!(
                    "covariance is not symmetric: K[{i},{j}]={x} but K[{j},{i}]={y}"
                )));
            }
        }
    }
    let pc = pivoted_cholesky(a, n);
    if pc.min_pivot < -1e-9 * scale.max(f64::MIN_POSITIVE) {
        return Err(RgError::value(
            "covariance is not positive semi-definite (a kernel must be PSD: check the inputs or hyperparameters)",
        ));
    }
    Ok(())
}

/// Result of a pivoted Cholesky factorisation `P A Pᵀ = L Lᵀ`.
#[derive(Debug, Clone)]
pub struct PivotedCholesky {
    /// `perm[k]` = original index of the k-th pivot.
    pub perm: Vec<usize>,
    /// Lower-triangular factor in pivot order (row-major n×n); zero columns past the rank.
    pub l: Vec<f64>,
    /// Numerical rank.
    pub rank: usize,
    /// Most negative pivot met (for PSD checks); ≥ 0 for PSD input.
    pub min_pivot: f64,
}

/// Pivoted Cholesky with greedy (largest remaining variance) pivoting.  A direction counts as
/// degenerate (an exact linear combination of the pivots before it) when its remaining
/// variance is at most [`DEGENERATE_RTOL`] × *its own* variance, so a sample with a small but
/// independent variance (`diag(1e12, 1)`) keeps its direction; the pivots of the degenerate
/// directions are set to zero.
pub fn pivoted_cholesky(a: &[f64], n: usize) -> PivotedCholesky {
    let mut w = a.to_vec();
    let mut perm: Vec<usize> = (0..n).collect();
    let mut l = vec![0.0; n * n];
    let degenerate = |w: &[f64], q: usize| w[q * n + q] <= DEGENERATE_RTOL * a[q * n + q];
    let mut rank = 0;
    let mut min_pivot = f64::INFINITY;
    for k in 0..n {
        // choose the pivot among k..n by largest remaining diagonal, skipping degenerate ones
        let mut best = None;
        for i in k..n {
            let q = perm[i];
            if degenerate(&w, q) {
                continue;
            }
            if best.is_none_or(|b: usize| w[q * n + q] > w[perm[b] * n + perm[b]]) {
                best = Some(i);
            }
        }
        let Some(best) = best else {
            // all remaining directions are degenerate
            for i in k..n {
                min_pivot = min_pivot.min(w[perm[i] * n + perm[i]]);
            }
            break;
        };
        perm.swap(k, best);
        // swap rows of l computed so far
        for j in 0..k {
            l.swap(k * n + j, best * n + j);
        }
        let p = perm[k];
        let piv = w[p * n + p];
        min_pivot = min_pivot.min(piv);
        rank += 1;
        let s = piv.sqrt();
        l[k * n + k] = s;
        for i in (k + 1)..n {
            let q = perm[i];
            l[i * n + k] = w[q * n + p] / s;
        }
        for i in (k + 1)..n {
            let qi = perm[i];
            for j in (k + 1)..n {
                let qj = perm[j];
                w[qi * n + qj] -= l[i * n + k] * l[j * n + k];
            }
        }
    }
    if min_pivot == f64::INFINITY {
        min_pivot = 0.0;
    }
    PivotedCholesky {
        perm,
        l,
        rank,
        min_pivot,
    }
}

/// Inverse and determinant of a small matrix by Gauss–Jordan with partial pivoting;
/// `None` when (relatively) singular.
pub fn invert(a: &[f64], n: usize) -> Option<(Vec<f64>, f64)> {
    let mut m = a.to_vec();
    let mut inv = vec![0.0; n * n];
    for i in 0..n {
        inv[i * n + i] = 1.0;
    }
    let scale = a.iter().fold(0.0f64, |s, v| s.max(v.abs()));
    if scale == 0.0 {
        return None;
    }
    let mut det = 1.0;
    for c in 0..n {
        let mut piv = c;
        for r in (c + 1)..n {
            if m[r * n + c].abs() > m[piv * n + c].abs() {
                piv = r;
            }
        }
        if m[piv * n + c].abs() <= 1e-13 * scale {
            return None;
        }
        if piv != c {
            for j in 0..n {
                m.swap(c * n + j, piv * n + j);
                inv.swap(c * n + j, piv * n + j);
            }
            det = -det;
        }
        let d = m[c * n + c];
        det *= d;
        for j in 0..n {
            m[c * n + j] /= d;
            inv[c * n + j] /= d;
        }
        for r in 0..n {
            if r != c {
                let f = m[r * n + c];
                if f != 0.0 {
                    for j in 0..n {
                        m[r * n + j] -= f * m[c * n + j];
                        inv[r * n + j] -= f * inv[c * n + j];
                    }
                }
            }
        }
    }
    Some((inv, det))
}

/// Sub-matrix `a[rows, cols]` of an n×n matrix.
pub fn submatrix(a: &[f64], n: usize, rows: &[usize], cols: &[usize]) -> Vec<f64> {
    let mut out = Vec::with_capacity(rows.len() * cols.len());
    for &r in rows {
        for &c in cols {
            out.push(a[r * n + c]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cholesky_degeneracy_is_relative_to_each_variance() {
        // variances 1e12 and 1, independent: full rank (the small one is not a function of
        // the large one); a copy of the small one is degenerate.
        let pc = pivoted_cholesky(&[1e12, 0.0, 0.0, 1.0], 2);
        assert_eq!(pc.rank, 2);
        assert_eq!(pc.l[3], 1.0);
        let a = [1e12, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0];
        assert_eq!(pivoted_cholesky(&a, 3).rank, 2);
        // a zero-variance sample is degenerate
        assert_eq!(pivoted_cholesky(&[2.0, 0.0, 0.0, 0.0], 2).rank, 1);
    }

    #[test]
    fn cholesky_detects_rank() {
        // rank-2 3x3: third = first + second
        let a = [2.0, 0.5, 2.5, 0.5, 1.0, 1.5, 2.5, 1.5, 4.0];
        let pc = pivoted_cholesky(&a, 3);
        assert_eq!(pc.rank, 2);
        assert!(validate_covariance(&a, 3).is_ok());
        let bad = [1.0, 2.0, 2.0, 1.0];
        assert!(validate_covariance(&bad, 2).is_err());
        let asym = [1.0, 0.1, 0.2, 1.0];
        assert!(validate_covariance(&asym, 2).is_err());
    }

    #[test]
    fn invert_roundtrip() {
        let a = [4.0, 1.0, 0.5, 1.0, 3.0, 0.2, 0.5, 0.2, 2.0];
        let (inv, det) = invert(&a, 3).unwrap();
        for i in 0..3 {
            for j in 0..3 {
                let s: f64 = (0..3).map(|k| a[i * 3 + k] * inv[k * 3 + j]).sum();
                assert!((s - if i == j { 1.0 } else { 0.0 }).abs() < 1e-14);
            }
        }
        assert!((det - (4.0 * (6.0 - 0.04) - 1.0 * (2.0 - 0.1) + 0.5 * (0.2 - 1.5))).abs() < 1e-12);
    }
}
