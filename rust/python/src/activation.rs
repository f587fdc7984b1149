//! Activations from Python specs: builtins by name, and user callables (σ, σ', σ'', …)
//! wrapped as a core [`ActivationFn`].

use std::sync::Arc;

use numpy::{PyArray1, PyArrayMethods};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyTuple;

use rgflow_core::activations::{Activation, ActivationFn, Builtin, Side};
use rgflow_core::RgError;

use crate::convert::err;

/// A user-defined activation: vectorised Python callables for σ, σ', σ'', ...
struct PyCallableActivation {
    label: String,
    funcs: Vec<Py<PyAny>>,
}

impl std::fmt::Debug for PyCallableActivation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PyCallableActivation({})", self.label)
    }
}

impl ActivationFn for PyCallableActivation {
    fn name(&self) -> String {
        self.label.clone()
    }
    fn max_order(&self) -> usize {
        self.funcs.len() - 1
    }
    /// The origin, the centre the built-in smooth activations split at: a custom activation gets
    /// the same quadrature (split rule, and the ladder of cuts that resolves its transition
    /// region at large variance) as the built-in of the same smoothness.
    fn split_points(&self) -> Vec<f64> {
        vec![0.0]
    }
    fn jets(&self, z: &[f64], order: usize, _side: Side, out: &mut [f64]) -> Result<(), RgError> {
        if order > self.max_order() {
            return Err(RgError::value(format!(
                "the custom activation '{}' needs derivative order {order} here but only {} derivatives were supplied; \
                 pass derivatives=[f1, ..., f{order}] (finite differences are refused)",
                self.label,
                self.max_order()
            )));
        }
        let m = order + 1;
        Python::attach(|py| -> Result<(), RgError> {
            let arr = PyArray1::from_slice(py, z);
            for k in 0..m {
                let res = self.funcs[k].call1(py, (arr.clone(),)).map_err(|e| {
                    RgError::value(format!(
                        "custom activation '{}' derivative {k} raised: {e}",
                        self.label
                    ))
                })?;
                let res = res.bind(py);
                let vals: Vec<f64> = if let Ok(a) = res.cast::<PyArray1<f64>>() {
                    a.readonly()
                        .as_slice()
                        .map(|s| s.to_vec())
                        .unwrap_or_else(|_| a.to_vec().unwrap_or_default())
                } else {
                    res.extract::<Vec<f64>>().map_err(|_| {
                        RgError::value(format!(
                            "custom activation derivative {k} must return a float array of the input's shape"
                        ))
                    })?
                };
                if vals.len() != z.len() {
                    return Err(RgError::value(format!(
                        "custom activation derivative {k} returned {} values for {} inputs (it must be vectorised)",
                        vals.len(),
                        z.len()
                    )));
                }
                for (i, v) in vals.iter().enumerate() {
                    if !v.is_finite() {
                        return Err(RgError::value(format!(
                            "custom activation '{}' derivative {k} returned a non-finite value ({v}) at z = {}; \
                             the quadrature evaluates it wherever the Gaussian weight is not negligible, \
                             so it must be finite on the whole real line (e.g. use np.logaddexp, not log(1 + exp))",
                            self.label,
                            z[i]
                        )));
                    }
                    out[i * m + k] = *v;
                }
            }
            Ok(())
        })
    }
}

/// Build a core activation from `("builtin", name, params)` or `("custom", label, [f, f', ...])`.
pub(crate) fn activation(spec: &Bound<'_, PyTuple>) -> PyResult<Activation> {
    let kind: String = spec.get_item(0)?.extract()?;
    match kind.as_str() {
        "builtin" => {
            let name: String = spec.get_item(1)?.extract()?;
            let params: Vec<f64> = spec.get_item(2)?.extract()?;
            Ok(Builtin::from_name(&name, &params)
                .map_err(err)?
                .into_activation())
        }
        "custom" => {
            let label: String = spec.get_item(1)?.extract()?;
            let funcs: Vec<Py<PyAny>> = spec.get_item(2)?.extract()?;
            if funcs.is_empty() {
                return Err(PyValueError::new_err(
                    "custom activation needs at least the function itself",
                ));
            }
            Ok(Arc::new(PyCallableActivation { label, funcs }))
        }
        other => Err(PyValueError::new_err(format!(
            "unknown activation kind '{other}'"
        ))),
    }
}
