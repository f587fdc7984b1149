//! `rgflow._core`: conversion and dispatch only; the mathematics lives in `rgflow-core`.
//!
//! * `bindings`: the Python functions (argument conversion, dispatch to the core with the GIL
//!   released, result conversion);
//! * `activation`: core activations from Python specs (builtins, Python callables);
//! * `convert`: numpy ↔ buffer conversions (results without a copy) and error mapping;
//! * `interrupt`: long computations on a worker thread, stopped by Ctrl-C.

mod activation;
mod bindings;
mod convert;
mod interrupt;

use pyo3::prelude::*;

use bindings::*;

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(term_from_factors, m)?)?;
    m.add_function(wrap_pyfunction!(expect_batch, m)?)?;
    m.add_function(wrap_pyfunction!(expect_adaptive, m)?)?;
    m.add_function(wrap_pyfunction!(quadrature_rule, m)?)?;
    m.add_function(wrap_pyfunction!(mlp_theory, m)?)?;
    m.add_function(wrap_pyfunction!(tuple_closure, m)?)?;
    m.add_function(wrap_pyfunction!(resmlp_theory, m)?)?;
    m.add_function(wrap_pyfunction!(preresnet_theory, m)?)?;
    m.add_function(wrap_pyfunction!(depthmup_theory, m)?)?;
    m.add("MAX_DERIVATIVE", rgflow_core::activations::MAX_ORDER)?;
    Ok(())
}
