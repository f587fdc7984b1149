//! Cross-checks of the closed forms ([`super::closed_form`]) against the quadrature path of
//! the dispatcher (kept here, above both, so that `closed_form` never depends on dispatch).

use std::f64::consts::PI;

use super::closed_form::expect_block;
use super::terms::Term;
use super::{expect_block as quad_block, QuadOpts};
use crate::activations::Builtin;

fn quad(act: &Builtin, cov: &[f64], d: usize, its: &[Vec<Term>], order: usize) -> Vec<f64> {
    let opts = QuadOpts {
        order,
        quadrature_only: true,
        ..Default::default()
    };
    quad_block(act, cov, d, its, &opts).unwrap()
}

fn check(act: &Builtin, cov: &[f64], d: usize, its: &[Vec<Term>], order: usize, tol: f64) {
    let cf = expect_block(act, cov, d, its).expect("closed form applies");
    let q = quad(act, cov, d, its, order);
    for (i, (a, b)) in cf.iter().zip(&q).enumerate() {
        assert!(
            (a - b).abs() <= tol * (1.0 + b.abs()),
            "{act:?} integrand {i}: closed {a} vs quadrature {b}"
        );
    }
}

#[test]
fn relu_arc_cosine_kernels() {
    let (k11, k12, k22) = (1.3, 0.9, 0.8);
    let cov = [k11, k12, k12, k22];
    let its = vec![
        vec![Term::sigma(0), Term::sigma(0)],
        vec![Term::sigma(1), Term::sigma(1)],
    ];
    let v = expect_block(&Builtin::Relu, &cov, 2, &its).unwrap();
    let rho: f64 = k12 / (k11 * k22).sqrt();
    let th = rho.acos();
    let k1 = (k11 * k22).sqrt() / (2.0 * PI) * (th.sin() + (PI - th) * th.cos());
    let k0 = (PI - th) / (2.0 * PI);
    assert!((v[0] - k1).abs() < 1e-15, "{} vs {k1}", v[0]);
    assert!((v[1] - k0).abs() < 1e-14, "{} vs {k0}", v[1]);
}

#[test]
fn erf_arcsine_kernel() {
    let (k11, k12, k22) = (0.7, -0.3, 1.9);
    let cov = [k11, k12, k12, k22];
    let its = vec![vec![Term::sigma(0), Term::sigma(0)]];
    let v = expect_block(&Builtin::Erf, &cov, 2, &its).unwrap();
    let want = 2.0 / PI * (2.0 * k12 / ((1.0 + 2.0 * k11) * (1.0 + 2.0 * k22)).sqrt()).asin();
    assert!((v[0] - want).abs() < 1e-15, "{} {want}", v[0]);
}

fn cov4() -> Vec<f64> {
    // A generic positive-definite 4×4 block with strong correlations.
    let l = [
        [1.1, 0.0, 0.0, 0.0],
        [0.9, 0.5, 0.0, 0.0],
        [0.7, 0.4, 0.6, 0.0],
        [1.0, -0.2, 0.3, 0.35],
    ];
    let mut c = vec![0.0; 16];
    for i in 0..4 {
        for j in 0..4 {
            c[i * 4 + j] = (0..4).map(|k| l[i][k] * l[j][k]).sum();
        }
    }
    c
}

pub(super) fn cov4_pub() -> Vec<f64> {
    cov4()
}

pub(super) fn four_point_patterns_pub() -> Vec<Vec<Term>> {
    four_point_patterns()
}

fn four_point_patterns() -> Vec<Vec<Term>> {
    let mut its = vec![];
    for mask in 0u32..16 {
        if mask.count_ones() % 2 == 0 {
            its.push(
                (0..4)
                    .map(|i| Term::prod(&[(mask >> i & 1) as u8]))
                    .collect(),
            );
        }
    }
    its
}

#[test]
fn four_point_products_match_quadrature() {
    let cov = cov4();
    let its = four_point_patterns();
    check(&Builtin::Gelu, &cov, 4, &its, 24, 1e-10);
    check(&Builtin::Erf, &cov, 4, &its, 24, 1e-10);
    check(&Builtin::Relu, &cov, 4, &its, 24, 1e-10);
    check(&Builtin::LeakyRelu(0.2), &cov, 4, &its, 24, 1e-10);
}

#[test]
fn repeated_samples_and_derivatives_match_quadrature() {
    let cov = [1.4, 0.6, 0.6, 0.9];
    let its = vec![
        vec![Term::prod(&[0, 0]), Term::prod(&[1, 1])],
        vec![Term::prod(&[0, 1]), Term::prod(&[0, 1])],
        vec![Term::sigma(2), Term::sigma(0)],
        vec![Term::sigma(3), Term::sigma(1)],
        vec![Term::deriv_of(2, &[0, 0]), Term::sigma(0)],
        vec![
            Term {
                deriv: 1,
                zpow: 2,
                sig: vec![1],
            },
            Term::zpow(1),
        ],
    ];
    check(&Builtin::Gelu, &cov, 2, &its, 64, 1e-11);
    check(&Builtin::Erf, &cov, 2, &its, 64, 1e-11);
    check(&Builtin::Relu, &cov, 2, &its[..2], 64, 1e-11);
    assert!(expect_block(&Builtin::Relu, &cov, 2, &its[2..3]).is_none());
    // distributional derivatives of relu go to quadrature (exact there)
    let single = vec![vec![Term::deriv_of(2, &[0, 0])]];
    assert!(expect_block(&Builtin::Relu, &[1.7], 1, &single).is_none());
    let single = vec![
        vec![Term::prod(&[0, 0, 0, 0])],
        vec![Term::prod(&[1, 1, 0, 0])],
    ];
    check(&Builtin::Gelu, &[2.3], 1, &single, 64, 1e-11);
}

#[test]
fn monomials_follow_isserlis() {
    let cov = cov4();
    let its = vec![(0..4).map(|_| Term::sigma(0)).collect::<Vec<_>>()];
    let v = expect_block(&Builtin::Linear, &cov, 4, &its).unwrap();
    let k = |i: usize, j: usize| cov[i * 4 + j];
    let want = k(0, 1) * k(2, 3) + k(0, 2) * k(1, 3) + k(0, 3) * k(1, 2);
    assert!((v[0] - want).abs() < 1e-14);
}

#[test]
fn unsupported_cases_decline() {
    let cov = cov4();
    let its = four_point_patterns();
    assert!(expect_block(&Builtin::Tanh, &cov, 4, &its).is_none());
    // five indicators in one product
    let five = vec![vec![Term::prod(&[0, 0, 0, 0, 0])]];
    assert!(expect_block(&Builtin::Gelu, &[1.0], 1, &five).is_none());
    // a singular kinked block
    let sing = [1.0, 1.0, 1.0, 1.0];
    let its2 = vec![vec![Term::sigma(0), Term::sigma(0)]];
    assert!(expect_block(&Builtin::Relu, &sing, 2, &its2).is_none());
}

mod timing {
    use super::*;
    use crate::activations::Builtin;

    /// `cargo test --release expect::closed_form_checks::timing -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn four_point_block_cost() {
        let cov = super::cov4_pub();
        let its = super::four_point_patterns_pub();
        for act in [Builtin::Gelu, Builtin::Relu] {
            let t = std::time::Instant::now();
            let n = 2000;
            let mut s = 0.0;
            for i in 0..n {
                let mut c = cov.clone();
                c[0] += 1e-3 * i as f64;
                s += expect_block(&act, &c, 4, &its).unwrap()[0];
            }
            let dt = t.elapsed().as_secs_f64() / n as f64;
            let t2 = std::time::Instant::now();
            for i in 0..n {
                let mut r = [
                    [1.0, 0.5, 0.3, 0.2],
                    [0.5, 1.0, 0.4, 0.1],
                    [0.3, 0.4, 1.0, 0.6],
                    [0.2, 0.1, 0.6, 1.0],
                ];
                r[0][1] += 1e-5 * i as f64;
                r[1][0] = r[0][1];
                s += crate::expect::orthant::orthant4(&r);
            }
            let dt2 = t2.elapsed().as_secs_f64() / n as f64;
            println!(
                "{act:?}: {:.1} µs per 4-D block (8 patterns); orthant4 {:.1} µs  ({s})",
                dt * 1e6,
                dt2 * 1e6
            );
        }
    }
}
