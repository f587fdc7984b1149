//! rgflow-core: the finite-width effective theory of deep networks at initialisation.
//!
//! Modules, each using only those listed before it:
//!
//! * [`cancel`]: cooperative interruption (a flag the long loops poll) and fallible
//!   allocation of the large buffers.
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
pub mod cancel;
pub mod expect;
pub mod layers;
pub mod linalg;
pub mod ode;
pub mod quadrature;
pub mod recursions;
pub mod tables;

pub use recursions::{depthmup, mlp, preresnet, resmlp};

use std::fmt;

/// Errors reported to callers (the Python layer maps `Value` and `Cost` to `ValueError`,
/// `Interrupted` to `KeyboardInterrupt` and `OutOfMemory` to `MemoryError`).
#[derive(Debug, Clone, PartialEq)]
pub enum RgError {
    /// Invalid input: the message names the problem and the fix.
    Value(String),
    /// The computation was interrupted ([`cancel::interrupt`]).
    Interrupted,
    /// A large buffer could not be allocated: `bytes` requested for `what`.
    OutOfMemory { bytes: usize, what: String },
    /// Refused up front: the estimated cost exceeds the limit (the message states both and
    /// how to raise the limit).
    Cost(String),
}

impl RgError {
    pub fn value(msg: impl Into<String>) -> RgError {
        RgError::Value(msg.into())
    }
    /// Prefix the message with where it happened.
    pub fn context(self, what: &str) -> RgError {
        match self {
            RgError::Value(m) => RgError::Value(format!("{what}: {m}")),
            RgError::Cost(m) => RgError::Cost(format!("{what}: {m}")),
            RgError::OutOfMemory { bytes, what: w } => RgError::OutOfMemory {
                bytes,
                what: format!("{what}: {w}"),
            },
            RgError::Interrupted => RgError::Interrupted,
        }
    }
}

impl fmt::Display for RgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RgError::Value(m) | RgError::Cost(m) => write!(f, "{m}"),
            RgError::Interrupted => write!(f, "interrupted"),
            RgError::OutOfMemory { bytes, what } => write!(
                f,
                "out of memory: could not allocate {:.2} GB for {what}",
                *bytes as f64 / 1e9
            ),
        }
    }
}

impl std::error::Error for RgError {}
