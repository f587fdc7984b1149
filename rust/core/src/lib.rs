//! rgflow-core: the finite-width effective theory of deep networks at initialisation.
//!
//! Modules, each using only those listed before it:
//!
//! * [`layers`]: per-layer tensors in one contiguous layer-major buffer.
//! * [`quadrature`]: Gauss–Hermite / Gauss–Legendre rules (Golub–Welsch + Newton).
//! * [`linalg`]: covariance validation, pivoted Cholesky, small inverses.
//! * [`activations`]: activation functions with exact derivative jets.
//! * [`expect`]: Gaussian expectations over blocks of correlated samples: term algebra
//!   ([`expect::terms`]), closed forms ([`expect::orthant`], [`expect::closed_form`]: relu,
//!   leaky relu, erf, gelu, linear and monomials via Stein's identity and centred orthant
//!   probabilities), nested quadrature, and the dispatch between them.
//! * [`tables`]: pair and four-point expectation tables at one kernel, shared by every
//!   recursion.
//! * [`ode`]: the Dormand–Prince 5(4) integrator of the continuous-depth recursions.
//! * [`recursions`]: the layer recursions ([`mlp`], [`resmlp`], [`preresnet`], re-exported
//!   here).

pub mod activations;
pub mod expect;
pub mod layers;
pub mod linalg;
pub mod ode;
pub mod quadrature;
pub mod recursions;
pub mod tables;

pub use recursions::{depthmup, mlp, preresnet, resmlp};

use std::fmt;

/// Errors reported to callers (the Python layer maps them to `ValueError`).
#[derive(Debug, Clone, PartialEq)]
pub enum RgError {
    /// Invalid input: the message names the problem and the fix.
    Value(String),
}

impl RgError {
    pub fn value(msg: impl Into<String>) -> RgError {
        RgError::Value(msg.into())
    }
    /// Prefix the message with where it happened.
    pub fn context(self, what: &str) -> RgError {
        match self {
            RgError::Value(m) => RgError::Value(format!("{what}: {m}")),
        }
    }
}

impl fmt::Display for RgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RgError::Value(m) => write!(f, "{m}"),
        }
    }
}

impl std::error::Error for RgError {}
