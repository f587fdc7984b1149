//! Conversions between numpy arrays / Python values and the core's flat buffers, and the
//! mapping of core errors to Python exceptions.  Results go to numpy without a copy: each
//! tensor family is one layer-major buffer ([`Layers`]) that becomes the array's memory.

use numpy::ndarray::{Array, IxDyn};
use numpy::{IntoPyArray, PyArrayDyn, PyReadonlyArray};
use pyo3::exceptions::{PyKeyboardInterrupt, PyMemoryError, PyValueError};
use pyo3::prelude::*;

use rgflow_core::expect::Term;
use rgflow_core::layers::Layers;
use rgflow_core::RgError;

/// Core errors: invalid input and refused costs are `ValueError`s, an interrupt is
/// `KeyboardInterrupt`, a failed allocation `MemoryError`.
pub(crate) fn err(e: RgError) -> PyErr {
    match e {
        RgError::Interrupted => PyKeyboardInterrupt::new_err("interrupted"),
        RgError::OutOfMemory { .. } => PyMemoryError::new_err(e.to_string()),
        RgError::Value(_) | RgError::Cost(_) => PyValueError::new_err(e.to_string()),
    }
}

/// A numpy array's values in C order (one copy of the input; inputs are small).
pub(crate) fn flat<D: numpy::ndarray::Dimension>(a: &PyReadonlyArray<'_, f64, D>) -> Vec<f64> {
    match a.as_slice() {
        Ok(s) => s.to_vec(),
        Err(_) => a.as_array().iter().copied().collect(),
    }
}

pub(crate) type TermSpec = (u8, u8, Vec<u8>);

pub(crate) fn terms(integrands: Vec<Vec<TermSpec>>) -> Vec<Vec<Term>> {
    integrands
        .into_iter()
        .map(|it| {
            it.into_iter()
                .map(|(deriv, zpow, mut sig)| {
                    sig.sort_unstable();
                    Term { deriv, zpow, sig }
                })
                .collect()
        })
        .collect()
}

/// A stack of per-layer tensors as a C-contiguous array (L, *dims), taking over the buffer
/// without a copy.
pub(crate) fn into_array<'py>(
    py: Python<'py>,
    layers: Layers,
    dims: &[usize],
) -> PyResult<Bound<'py, PyArrayDyn<f64>>> {
    let mut shape = vec![layers.len()];
    shape.extend_from_slice(dims);
    let arr = Array::from_shape_vec(IxDyn(&shape), layers.into_vec())
        .map_err(|e| PyValueError::new_err(format!("tensor shape: {e}")))?;
    Ok(arr.into_pyarray(py))
}
