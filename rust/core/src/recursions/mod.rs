//! The layer recursions, each built on [`crate::tables`] (pair and four-point expectation
//! tables at one kernel) and, for the continuous-depth flows, [`crate::ode`]:
//!
//! * [`mlp`]: K, V, K1, Θ, Θ1, D, F, A, B of multilayer perceptrons, and with `dntk` the
//!   dNTK family P, Q, R, S, T, U (`dntk`);
//! * [`resmlp`]: K, V, S, K1 of residual MLPs;
//! * [`depthmup`]: K, G, Θ, Θ_dec of depth-μP ResNets at infinite width and their depth
//!   ODE limit (`nfd.md` §2.1);
//! * [`preresnet`]: K0, V4, K1 of pre-activation ResNets in the depth scaling t = ε²ℓ
//!   (ODE or discrete; G-only, connected and sigma-kernel closures).
//!
//! The crate root re-exports them as `rgflow_core::{depthmup, mlp, resmlp, preresnet}`.

pub mod depthmup;
mod dntk;
pub mod mlp;
pub mod preresnet;
pub mod resmlp;
mod space;
