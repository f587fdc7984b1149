//! rgflow-core: the finite-width effective theory of deep networks at initialisation.
//!
//! * [`quadrature`]: Gauss–Hermite / Gauss–Legendre rules (Golub–Welsch + Newton).
//! * [`activations`]: activation functions with exact derivative jets.
//! * [`expect`]: Gaussian expectations over blocks of correlated samples (quadrature).
//! * [`closed_form`], [`orthant`]: exact expectations for relu, leaky relu, erf, gelu, linear
//!   and monomials via Stein's identity and centred orthant probabilities.
//! * [`mlp`]: the layer recursions K, V, K1, Θ, Θ1, D, F, A, B for MLPs.

pub mod activations;
pub mod closed_form;
pub mod expect;
pub mod linalg;
pub mod mlp;
pub mod orthant;
pub mod preresnet;
pub mod quadrature;
pub mod resmlp;

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};

/// FxHash-style hasher for the small integer keys of the recursions (much cheaper than SipHash;
/// the keys are not attacker-controlled).
#[derive(Default)]
pub(crate) struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(b as u64);
        }
    }
    fn write_u64(&mut self, i: u64) {
        self.0 = (self.0.rotate_left(5) ^ i).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn write_u128(&mut self, i: u128) {
        self.write_u64(i as u64);
        self.write_u64((i >> 64) as u64);
    }
}

/// Hash map with [`KeyHasher`].
pub(crate) type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<KeyHasher>>;

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
