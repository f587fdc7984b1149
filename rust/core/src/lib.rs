//! rgflow-core: the finite-width effective theory of deep networks at initialisation.
//!
//! * [`quadrature`]: Gauss–Hermite / Gauss–Legendre rules (Golub–Welsch + Newton).
//! * [`activations`]: activation functions with exact derivative jets.
//! * [`expect`]: Gaussian expectations over blocks of correlated samples: term algebra
//!   ([`expect::terms`]), closed forms ([`expect::closed_form`], [`expect::orthant`]: relu,
//!   leaky relu, erf, gelu, linear and monomials via Stein's identity and centred orthant
//!   probabilities), nested quadrature, and the dispatch between them.
//! * [`ode`]: the Dormand–Prince 5(4) integrator of the continuous-depth recursions.
//! * [`mlp`]: the layer recursions K, V, K1, Θ, Θ1, D, F, A, B for MLPs.

pub mod activations;
pub mod expect;
pub mod linalg;
pub mod mlp;
pub mod ode;
pub mod preresnet;
pub mod quadrature;
pub mod resmlp;
pub mod tables;

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
