//! The Dormand–Prince 5(4) embedded Runge–Kutta pair for autonomous systems `dy/dt = f(y)`.
//!
//! Local error control per component, `|err_i| ≤ atol + rtol·max(|y_i|, |y_i'|)` in the RMS
//! norm, step factor `0.9·err^(-1/5)` clamped to [0.2, 5]; FSAL (the last stage of an accepted
//! step is the first of the next).  [`Dopri54::advance`] hits every output time exactly and
//! carries the step size between calls.  A right-hand side that fails at a stage (it left its
//! domain: non-finite or non-PSD state) or a non-finite error estimate rejects the step and
//! retries with a quarter of it; step-size underflow is an [`RgError`].
//!
//! Uses nothing above the crate root (errors only).

use crate::RgError;

// Dormand–Prince 5(4) tableau (the system is autonomous, so the nodes c_i are not needed).
const A: [[f64; 6]; 7] = [
    [0.0; 6],
    [0.2, 0.0, 0.0, 0.0, 0.0, 0.0],
    [3.0 / 40.0, 9.0 / 40.0, 0.0, 0.0, 0.0, 0.0],
    [44.0 / 45.0, -56.0 / 15.0, 32.0 / 9.0, 0.0, 0.0, 0.0],
    [
        19372.0 / 6561.0,
        -25360.0 / 2187.0,
        64448.0 / 6561.0,
        -212.0 / 729.0,
        0.0,
        0.0,
    ],
    [
        9017.0 / 3168.0,
        -355.0 / 33.0,
        46732.0 / 5247.0,
        49.0 / 176.0,
        -5103.0 / 18656.0,
        0.0,
    ],
    [
        35.0 / 384.0,
        0.0,
        500.0 / 1113.0,
        125.0 / 192.0,
        -2187.0 / 6784.0,
        11.0 / 84.0,
    ],
];
/// 5th-order weights (= last row of A, FSAL) and 5th − 4th order error weights.
const B5: [f64; 7] = [
    35.0 / 384.0,
    0.0,
    500.0 / 1113.0,
    125.0 / 192.0,
    -2187.0 / 6784.0,
    11.0 / 84.0,
    0.0,
];
const E: [f64; 7] = [
    71.0 / 57600.0,
    0.0,
    -71.0 / 16695.0,
    71.0 / 1920.0,
    -17253.0 / 339200.0,
    22.0 / 525.0,
    -1.0 / 40.0,
];

/// Right-hand side `y ↦ dy/dt` of an autonomous ODE.
pub type Field<'a> = dyn Fn(&[f64]) -> Result<Vec<f64>, RgError> + 'a;

/// Accepted and rejected steps so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub accepted: usize,
    pub rejected: usize,
}

/// Integrator state carried between output times: tolerances, time, step size and counts.
#[derive(Clone, Debug)]
pub struct Dopri54 {
    pub rtol: f64,
    pub atol: f64,
    /// Current time (starts at 0).
    pub t: f64,
    /// Step size for the next step (NaN: choose an initial step from the first span).
    pub h: f64,
    pub stats: Stats,
    /// Blow-up threshold on max |y| ([`blowup_limit`] of the state at the first
    /// [`Dopri54::advance`] unless set).
    pub blowup: f64,
}

/// Growth factor of the largest state entry (relative to max(1, its initial value)) that
/// counts as a blow-up: [`Dopri54::advance`] and the discrete recursions stop with an error
/// naming it instead of integrating on towards overflow (for the kernel flows: K grown by
/// ~1e20, its four-point function by ~1e40).
pub const BLOWUP: f64 = 1e40;

/// The blow-up threshold for a state starting at `y0`: [`BLOWUP`]·max(1, max |y0|).
pub fn blowup_limit(y0: &[f64]) -> f64 {
    BLOWUP * y0.iter().fold(1.0f64, |a, &v| a.max(v.abs()))
}

/// `Err` naming the blow-up when an entry of `y` exceeds `limit` in magnitude (infinite
/// included; NaN is left to the callers' own checks) at time `t`.
pub fn check_blowup(y: &[f64], t: f64, limit: f64) -> Result<(), RgError> {
    let m = y.iter().fold(0.0f64, |a, &v| a.max(v.abs()));
    if m <= limit {
        return Ok(());
    }
    Err(RgError::value(format!(
        "the solution blows up at t = {t:.6}: max |y| = {m:.3e} exceeds {limit:.1e} ({BLOWUP:.0e} \
         times its initial scale; the kernel and \
         its four-point function grow without bound for this activation, C_W and T = eps²·L); \
         lower eps or depth, or choose C_W at criticality"
    )))
}

impl Dopri54 {
    /// Start at t = 0 with an automatic initial step.
    pub fn new(rtol: f64, atol: f64) -> Dopri54 {
        Dopri54 {
            rtol,
            atol,
            t: 0.0,
            h: f64::NAN,
            stats: Stats::default(),
            blowup: f64::NAN,
        }
    }

    /// Integrate `dy/dt = f(y)` in place from `self.t` to `t_end` (nothing when `t_end ≤ t`).
    pub fn advance(&mut self, f: &Field, y: &mut Vec<f64>, t_end: f64) -> Result<(), RgError> {
        let (rtol, atol) = (self.rtol, self.atol);
        let m = y.len();
        let span = t_end - self.t;
        if span <= 0.0 {
            return Ok(());
        }
        if !self.h.is_finite() {
            self.h = (0.01 * span).clamp(1e-6, 1e-2);
        }
        if self.blowup.is_nan() {
            self.blowup = blowup_limit(y);
        }
        let fail = |t: f64, e: RgError| e.context(&format!("ODE step at t = {t:.6}"));
        let mut k1 = f(y).map_err(|e| fail(self.t, e))?;
        let min_h = 1e-12 * t_end.abs().max(1.0);
        while self.t < t_end {
            crate::cancel::check()?;
            let last = self.t + self.h >= t_end * (1.0 - 1e-14);
            let hh = if last { t_end - self.t } else { self.h };
            if last && hh < min_h {
                // Rounding remainder: the state at t_end equals the state here to working precision.
                self.t = t_end;
                break;
            }
            if hh < min_h {
                return Err(RgError::value(format!(
                    "ODE step size underflow at t = {:.6} (h = {hh:.3e}): the flow is unstable or stiff here; \
                     loosen rtol/atol, shorten T = eps²·L, or use method=\"discrete\"",
                    self.t
                )));
            }
            let mut ks: Vec<Vec<f64>> = vec![k1.clone()];
            let mut stage_err: Option<RgError> = None;
            for arow in A.iter().skip(1) {
                let ys: Vec<f64> = (0..m)
                    .map(|i| y[i] + hh * (0..ks.len()).map(|j| arow[j] * ks[j][i]).sum::<f64>())
                    .collect();
                match f(&ys) {
                    Ok(k) => ks.push(k),
                    Err(e) => {
                        stage_err = Some(e);
                        break;
                    }
                }
            }
            if let Some(e) = stage_err {
                // A stage left the domain (non-PSD or non-finite): shrink the step and retry.
                self.stats.rejected += 1;
                self.h = 0.25 * hh;
                if self.h < min_h {
                    return Err(fail(self.t, e));
                }
                continue;
            }
            let y_new: Vec<f64> = (0..m)
                .map(|i| y[i] + hh * (0..7).map(|j| B5[j] * ks[j][i]).sum::<f64>())
                .collect();
            let mut err2 = 0.0;
            for i in 0..m {
                let e = hh * (0..7).map(|j| E[j] * ks[j][i]).sum::<f64>();
                let sc = atol + rtol * y[i].abs().max(y_new[i].abs());
                let r = if sc > 0.0 { e / sc } else { 0.0 };
                err2 += r * r;
            }
            let err = (err2 / m as f64).sqrt();
            if !err.is_finite() {
                self.stats.rejected += 1;
                self.h = 0.25 * hh;
                continue;
            }
            let fac = (0.9 * err.powf(-0.2)).clamp(0.2, 5.0);
            if err <= 1.0 {
                self.t = if last { t_end } else { self.t + hh };
                check_blowup(&y_new, self.t, self.blowup)?;
                *y = y_new;
                k1 = ks.swap_remove(6);
                self.stats.accepted += 1;
                if !last {
                    self.h = hh * fac;
                }
            } else {
                self.stats.rejected += 1;
                self.h = hh * fac.min(1.0);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn exponential_decay() {
        // y' = -y, y(0) = 1: y(t) = exp(-t), at several output times hit exactly.
        let f = |y: &[f64]| Ok(vec![-y[0]]);
        let mut ode = Dopri54::new(1e-10, 1e-12);
        let mut y = vec![1.0];
        for t in [0.5, 1.0, 2.0, 5.0] {
            ode.advance(&f, &mut y, t).unwrap();
            assert_eq!(ode.t, t);
            let exact = (-t).exp();
            assert!(
                (y[0] - exact).abs() < 1e-9 * exact,
                "t={t}: {} vs {exact}",
                y[0]
            );
        }
        assert!(ode.stats.accepted > 0);
        // Asking for an earlier time is a no-op.
        let before = (y.clone(), ode.stats);
        ode.advance(&f, &mut y, 1.0).unwrap();
        assert_eq!((y, ode.stats), before);
    }

    #[test]
    fn damped_oscillator() {
        // x'' + 2ζω x' + ω² x = 0 as a 2-D linear system (x, v), x(0) = 1, v(0) = 0,
        // underdamped: x(t) = e^{-ζωt}(cos ω_d t + ζω/ω_d sin ω_d t), ω_d = ω√(1-ζ²).
        let (w, z) = (3.0f64, 0.1f64);
        let f = move |y: &[f64]| Ok(vec![y[1], -w * w * y[0] - 2.0 * z * w * y[1]]);
        let wd = w * (1.0 - z * z).sqrt();
        let exact = |t: f64| {
            let e = (-z * w * t).exp();
            let (s, c) = (wd * t).sin_cos();
            let x = e * (c + z * w / wd * s);
            let v = -e * (w * w / wd) * s;
            (x, v)
        };
        for (rtol, tol) in [(1e-6, 1e-4), (1e-10, 1e-8)] {
            let mut ode = Dopri54::new(rtol, rtol * 1e-2);
            let mut y = vec![1.0, 0.0];
            for k in 1..=10 {
                let t = 0.5 * k as f64;
                ode.advance(&f, &mut y, t).unwrap();
                let (x, v) = exact(t);
                assert!(
                    (y[0] - x).abs() < tol,
                    "rtol {rtol} t={t}: x {} vs {x}",
                    y[0]
                );
                assert!(
                    (y[1] - v).abs() < tol * w,
                    "rtol {rtol} t={t}: v {} vs {v}",
                    y[1]
                );
            }
        }
        // Tighter tolerances take more steps.
        let steps = |rtol: f64| {
            let mut ode = Dopri54::new(rtol, 0.0);
            let mut y = vec![1.0, 0.0];
            ode.advance(&f, &mut y, 5.0).unwrap();
            ode.stats.accepted
        };
        assert!(steps(1e-10) > 2 * steps(1e-5));
    }

    #[test]
    fn step_rejection_by_error_control() {
        // y' = -50 (y - cos t): stiff-ish; the automatic first step h = 1e-2·span is far too
        // large for rtol = 1e-9, so the first attempt is rejected and the step shrinks.
        let f = |y: &[f64]| Ok(vec![-50.0 * (y[0] - y[1].cos()), 1.0]);
        let mut ode = Dopri54::new(1e-9, 1e-12);
        let mut y = vec![0.0, 0.0];
        // h0 = clamp(0.01 * 1, 1e-6, 1e-2) = 1e-2: y'' ~ 2500 y, local error ≫ tolerance.
        ode.advance(&f, &mut y, 1.0).unwrap();
        assert!(ode.stats.rejected >= 1, "{:?}", ode.stats);
        assert!(ode.stats.accepted > 0);
        // y(t) = (2500 cos t + 50 sin t − 2500 e^{−50t}) / 2501
        let t = 1.0f64;
        let exact = (2500.0 * t.cos() + 50.0 * t.sin() - 2500.0 * (-50.0 * t).exp()) / 2501.0;
        assert!((y[0] - exact).abs() < 1e-7, "{} vs {exact}", y[0]);
        assert_eq!(ode.t, 1.0);
    }

    #[test]
    fn step_rejection_by_domain_error() {
        // y' = -y with a right-hand side that refuses y < 0 (as the recursions refuse non-PSD
        // kernels).  A forced first step h = 10 overshoots into y < 0 at the second stage: the
        // step is rejected, quartered and retried, and the solution is still exp(-t).
        let refused = Cell::new(0usize);
        let f = |y: &[f64]| {
            if y[0] < 0.0 {
                refused.set(refused.get() + 1);
                return Err(RgError::value("out of domain"));
            }
            Ok(vec![-y[0]])
        };
        let mut ode = Dopri54::new(1e-9, 1e-12);
        ode.h = 10.0;
        let mut y = vec![1.0];
        ode.advance(&f, &mut y, 20.0).unwrap();
        assert!(refused.get() >= 1);
        assert!(ode.stats.rejected >= refused.get(), "{:?}", ode.stats);
        assert!((y[0] - (-20.0f64).exp()).abs() < 1e-12, "{}", y[0]);
    }

    #[test]
    fn step_size_underflow_is_an_error() {
        // y' = y², y(0) = 1 blows up at t = 1.
        let f = |y: &[f64]| {
            if y[0].is_finite() {
                Ok(vec![y[0] * y[0]])
            } else {
                Err(RgError::value("non-finite"))
            }
        };
        let mut ode = Dopri54::new(1e-8, 1e-10);
        let mut y = vec![1.0];
        let e = ode.advance(&f, &mut y, 2.0).unwrap_err().to_string();
        // It stops at the singularity (to within the tolerance), not beyond.
        assert!((ode.t - 1.0).abs() < 1e-6, "{e} at t = {}", ode.t);
        assert!(e.contains("underflow"), "{e}");
    }
}
