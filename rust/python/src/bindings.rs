//! The `#[pyfunction]`s of `rgflow._core`: convert the arguments, run the core with the GIL
//! released (`Python::detach`), convert the results.  No mathematics here.

use numpy::{
    PyArray1, PyArrayDyn, PyReadonlyArray1, PyReadonlyArray2, PyReadonlyArray3,
    PyUntypedArrayMethods,
};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use rgflow_core::expect::{
    expect_adaptive as core_adaptive, expect_batch as core_batch, QuadOpts, Term,
};
use rgflow_core::layers::Layers;
use rgflow_core::mlp::{mlp_theory_request as core_theory, MlpSpec, Request};

use crate::activation::activation;
use crate::convert::{err, flat, into_array, terms, TermSpec};
use crate::interrupt::{run, run_sized};

/// Largest batch of one- or two-sample blocks run without a worker thread.
const SMALL_BATCH: usize = 64;

/// Map a per-sample product of factors σ^{(m_i)} · z^q to a term (deriv, zpow, sig).
#[pyfunction]
pub(crate) fn term_from_factors(
    act: &Bound<'_, PyTuple>,
    orders: Vec<u8>,
    zpow: u8,
) -> PyResult<TermSpec> {
    let a = activation(act)?;
    let t = Term::from_factors(a.as_ref(), &orders, zpow).map_err(err)?;
    Ok((t.deriv, t.zpow, t.sig))
}

/// Batched expectations: covs (B, d, d); returns (B, n_integrands).  With `order` 0 and not
/// `quadrature_only`, smooth activations without closed forms use the error-controlled rule
/// with target accuracy `tol` (0: the core's default).
#[allow(clippy::too_many_arguments)]
#[pyfunction]
#[pyo3(signature = (act, covs, integrands, order, quadrature_only, tol=0.0, max_evals=0.0))]
pub(crate) fn expect_batch<'py>(
    py: Python<'py>,
    act: &Bound<'py, PyTuple>,
    covs: PyReadonlyArray3<'py, f64>,
    integrands: Vec<Vec<TermSpec>>,
    order: usize,
    quadrature_only: bool,
    tol: f64,
    max_evals: f64,
) -> PyResult<Bound<'py, PyArray1<f64>>> {
    let a = activation(act)?;
    let shape = covs.shape().to_vec();
    let d = shape[1];
    let buf = flat(&covs);
    let its = terms(integrands);
    let opts = QuadOpts {
        order,
        quadrature_only,
        tol,
        max_evals,
    };
    // One- and two-sample blocks take microseconds to milliseconds each: a short batch of
    // them runs on this thread (no worker, see `run_sized`).
    let small = d <= 2 && shape[0] <= SMALL_BATCH;
    let out = run_sized(py, small, || core_batch(a.as_ref(), &buf, d, &its, &opts))?;
    Ok(PyArray1::from_vec(py, out))
}

/// Adaptive-order expectations for one block: (values, error estimate, order used).
/// `max_evals`: refuse a pass whose nested rule would exceed this many nodes (0: no limit).
#[allow(clippy::too_many_arguments)]
#[pyfunction]
#[pyo3(signature = (act, cov, integrands, tol, max_order, quadrature_only, max_evals=0.0))]
pub(crate) fn expect_adaptive<'py>(
    py: Python<'py>,
    act: &Bound<'py, PyTuple>,
    cov: PyReadonlyArray2<'py, f64>,
    integrands: Vec<Vec<TermSpec>>,
    tol: f64,
    max_order: usize,
    quadrature_only: bool,
    max_evals: f64,
) -> PyResult<(Bound<'py, PyArray1<f64>>, f64, usize)> {
    let a = activation(act)?;
    let d = cov.shape()[0];
    let buf = flat(&cov);
    let its = terms(integrands);
    let (v, e, n) = run_sized(py, d <= 2, || {
        core_adaptive(
            a.as_ref(),
            &buf,
            d,
            &its,
            tol,
            max_order,
            quadrature_only,
            max_evals,
        )
    })?;
    Ok((PyArray1::from_vec(py, v), e, n))
}

type Array1<'py> = Bound<'py, PyArray1<f64>>;

/// Quadrature rule: kind "hermite" (probabilists', weights sum to 1), "half_hermite"
/// (∫_0^∞ φ, weights sum to 1/2) or "legendre" ([-1, 1]).
#[pyfunction]
pub(crate) fn quadrature_rule<'py>(
    py: Python<'py>,
    kind: &str,
    n: usize,
) -> PyResult<(Array1<'py>, Array1<'py>)> {
    if n == 0 || n > 640 {
        return Err(PyValueError::new_err("quadrature order must be in 1..=640"));
    }
    let r = match kind {
        "hermite" => rgflow_core::quadrature::hermite(n),
        "legendre" => rgflow_core::quadrature::legendre(n),
        _ => {
            return Err(PyValueError::new_err(
                "kind must be 'hermite' or 'legendre'",
            ))
        }
    };
    Ok((
        PyArray1::from_slice(py, &r.nodes),
        PyArray1::from_slice(py, &r.weights),
    ))
}

/// All tensors of the first-order MLP theory; returns a dict of (L, N, N) / (L, N, N, N, N) arrays
/// and "layers" (the 1-based layers kept, axis 0).  `dntk` adds P, Q and (activations smooth up to
/// σ''') R, S, T, U.  `layers` (0-based) keeps only those layers, `tensors` computes only the named
/// families (K always), `tuples` (M, 4) gives the four-point families as (L, M) at those tuples.
/// `tol`: target accuracy of the error-controlled rule for smooth activations (0: default).
#[pyfunction]
#[allow(clippy::too_many_arguments)]
#[pyo3(signature = (act, x, widths, c_b, c_w, lambda_b, lambda_w, ntk, order, quad_order, quadrature_only, dntk=false, tol=0.0, max_evals=0.0, layers=None, tensors=None, tuples=None))]
pub(crate) fn mlp_theory<'py>(
    py: Python<'py>,
    act: &Bound<'py, PyTuple>,
    x: PyReadonlyArray2<'py, f64>,
    widths: PyReadonlyArray1<'py, f64>,
    c_b: PyReadonlyArray1<'py, f64>,
    c_w: PyReadonlyArray1<'py, f64>,
    lambda_b: PyReadonlyArray1<'py, f64>,
    lambda_w: PyReadonlyArray1<'py, f64>,
    ntk: bool,
    order: usize,
    quad_order: usize,
    quadrature_only: bool,
    dntk: bool,
    tol: f64,
    max_evals: f64,
    layers: Option<Vec<usize>>,
    tensors: Option<Vec<String>>,
    tuples: Option<PyReadonlyArray2<'py, i64>>,
) -> PyResult<Bound<'py, PyDict>> {
    let a = activation(act)?;
    let (n, n0) = (x.shape()[0], x.shape()[1]);
    let xs = flat(&x);
    let spec = MlpSpec {
        widths: widths.as_array().to_vec(),
        c_b: c_b.as_array().to_vec(),
        c_w: c_w.as_array().to_vec(),
        lambda_b: lambda_b.as_array().to_vec(),
        lambda_w: lambda_w.as_array().to_vec(),
    };
    let opts = QuadOpts {
        order: quad_order,
        quadrature_only,
        tol,
        max_evals,
    };
    let tuples = match tuples {
        None => None,
        Some(t) => Some(tuple_list(&t, n)?),
    };
    let req = Request {
        layers,
        tensors,
        tuples,
    };
    let t = run(py, || {
        core_theory(a.as_ref(), &xs, n, n0, &spec, ntk, order, dntk, &opts, &req)
    })?;
    let out = PyDict::new(py);
    out.set_item("layers", t.layers.iter().map(|l| l + 1).collect::<Vec<_>>())?;
    let four_dims: Vec<usize> = match t.tuples {
        Some(m) => vec![m],
        None => vec![n, n, n, n],
    };
    out.set_item("K", into_array(py, t.k, &[n, n])?)?;
    let two = [("Theta", t.theta), ("K1", t.k1), ("Theta1", t.theta1)];
    for (name, v) in two {
        if let Some(v) = v {
            out.set_item(name, into_array(py, v, &[n, n])?)?;
        }
    }
    let four = [
        ("V", t.v),
        ("D", t.d),
        ("F", t.f),
        ("A", t.a),
        ("B", t.b),
        ("P", t.p),
        ("Q", t.q),
        ("R", t.r),
        ("S", t.s),
        ("T", t.t),
        ("U", t.u),
    ];
    for (name, v) in four {
        if let Some(v) = v {
            out.set_item(name, into_array(py, v, &four_dims)?)?;
        }
    }
    Ok(out)
}

/// First-order theory of a residual MLP (PDLT App. B): dict with K, K1 (L, N, N), S (L, N, N, N),
/// V (L, N, N, N, N); `corrected` selects the S-corrected vertex over the book's (B.25).
#[pyfunction]
#[allow(clippy::too_many_arguments)]
#[pyo3(signature = (act, x, c_b, c_w, gamma, width, corrected, order, quad_order, max_evals=0.0))]
pub(crate) fn resmlp_theory<'py>(
    py: Python<'py>,
    act: &Bound<'py, PyTuple>,
    x: PyReadonlyArray2<'py, f64>,
    c_b: PyReadonlyArray1<'py, f64>,
    c_w: PyReadonlyArray1<'py, f64>,
    gamma: PyReadonlyArray1<'py, f64>,
    width: usize,
    corrected: bool,
    order: usize,
    quad_order: usize,
    max_evals: f64,
) -> PyResult<Bound<'py, PyDict>> {
    if width == 0 {
        return Err(PyValueError::new_err("width must be >= 1"));
    }
    let a = activation(act)?;
    let (n, n0) = (x.shape()[0], x.shape()[1]);
    let xs = flat(&x);
    let spec = rgflow_core::resmlp::ResMlpSpec {
        c_b: c_b.as_array().to_vec(),
        c_w: c_w.as_array().to_vec(),
        gamma: gamma.as_array().to_vec(),
    };
    let opts = QuadOpts {
        order: quad_order,
        max_evals,
        ..Default::default()
    };
    let t = run(py, || {
        rgflow_core::resmlp::resmlp_theory(a.as_ref(), &xs, n, n0, &spec, corrected, order, &opts)
    })?;
    let out = PyDict::new(py);
    out.set_item("K", into_array(py, t.k, &[n, n])?)?;
    if let Some(v) = t.k1 {
        out.set_item("K1", into_array(py, v, &[n, n])?)?;
    }
    if let Some(v) = t.s {
        out.set_item("S", into_array(py, v, &[n, n, n])?)?;
    }
    if let Some(v) = t.v {
        out.set_item("V", into_array(py, v, &[n, n, n, n])?)?;
    }
    Ok(out)
}

/// Pre-activation ResNet (spec resnets.md, paper (a)): dict with layers, t, K0, K1, E2, U1 (M, N, N),
/// V4, V_GS, V_SS (M, N, N, N, N), accepted, rejected.  `method` is "ode" or "discrete"; `closure` is
/// "g_only", "connected" or "sigma".
#[pyfunction]
#[allow(clippy::too_many_arguments)]
#[pyo3(signature = (act, k_init, c_w, eps, depth, every, method, rtol, atol, closure, quad_order, max_evals=0.0))]
pub(crate) fn preresnet_theory<'py>(
    py: Python<'py>,
    act: &Bound<'py, PyTuple>,
    k_init: PyReadonlyArray2<'py, f64>,
    c_w: f64,
    eps: f64,
    depth: usize,
    every: usize,
    method: &str,
    rtol: f64,
    atol: f64,
    closure: &str,
    quad_order: usize,
    max_evals: f64,
) -> PyResult<Bound<'py, PyDict>> {
    use rgflow_core::preresnet::{K1Closure, Method};
    let a = activation(act)?;
    let n = k_init.shape()[0];
    if k_init.shape()[1] != n {
        return Err(PyValueError::new_err(
            "the input kernel must be square (N, N)",
        ));
    }
    let ks = flat(&k_init);
    let m = match method {
        "ode" => Method::Ode { rtol, atol },
        "discrete" => Method::Discrete,
        other => {
            return Err(PyValueError::new_err(format!(
                "method must be 'ode' or 'discrete', got {other:?}"
            )))
        }
    };
    let cl = match closure {
        "g_only" => K1Closure::GOnly,
        "connected" => K1Closure::Connected,
        "sigma" => K1Closure::Sigma,
        other => {
            return Err(PyValueError::new_err(format!(
                "closure must be 'g_only', 'connected' or 'sigma', got {other:?}"
            )))
        }
    };
    let opts = QuadOpts {
        order: quad_order,
        max_evals,
        ..Default::default()
    };
    let t = run(py, || {
        rgflow_core::preresnet::preresnet_theory(
            a.as_ref(),
            &ks,
            n,
            c_w,
            eps,
            depth,
            every,
            m,
            cl,
            &opts,
        )
    })?;
    let out = PyDict::new(py);
    out.set_item("layers", t.layers)?;
    out.set_item("t", t.t)?;
    out.set_item("K0", into_array(py, t.k0, &[n, n])?)?;
    out.set_item("K1", into_array(py, t.k1, &[n, n])?)?;
    out.set_item("E2", into_array(py, t.e2, &[n, n])?)?;
    out.set_item("V4", into_array(py, t.v4, &[n, n, n, n])?)?;
    out.set_item("U1", into_array(py, t.u1, &[n, n])?)?;
    out.set_item("V_GS", into_array(py, t.v_gs, &[n, n, n, n])?)?;
    out.set_item("V_SS", into_array(py, t.v_ss, &[n, n, n, n])?)?;
    out.set_item("accepted", t.accepted)?;
    out.set_item("rejected", t.rejected)?;
    Ok(out)
}

/// Depth-μP ResNet at infinite width (spec nfd.md §2.1): dict with K, G, Phi, Psi (L+1, N, N)
/// at ℓ = 0..L, Theta, Theta_decoupled (N, N); with `limit` also the L → ∞ ODE values on the
/// grid s = i/limit_grid: limit_s, limit_K, limit_G (limit_grid+1, N, N), limit_Theta, limit_Theta_decoupled,
/// limit_accepted, limit_rejected.
#[pyfunction]
#[allow(clippy::too_many_arguments)]
#[pyo3(signature = (act, x, depth, block_variance, readout_phi, w_input, w_hidden, w_readout, limit, rate, w_hidden_limit, limit_grid, rtol, atol, quad_order))]
pub(crate) fn depthmup_theory<'py>(
    py: Python<'py>,
    act: &Bound<'py, PyTuple>,
    x: PyReadonlyArray2<'py, f64>,
    depth: usize,
    block_variance: f64,
    readout_phi: bool,
    w_input: f64,
    w_hidden: f64,
    w_readout: f64,
    limit: bool,
    rate: f64,
    w_hidden_limit: f64,
    limit_grid: usize,
    rtol: f64,
    atol: f64,
    quad_order: usize,
) -> PyResult<Bound<'py, PyDict>> {
    use rgflow_core::depthmup::{depthmup_limit, depthmup_theory as core_depthmup, DepthMuPSpec};
    let a = activation(act)?;
    let (n, d) = (x.shape()[0], x.shape()[1]);
    let xs = flat(&x);
    let spec = DepthMuPSpec {
        depth,
        block_variance,
        readout_phi,
        w_input,
        w_hidden,
        w_readout,
    };
    let opts = QuadOpts {
        order: quad_order,
        ..Default::default()
    };
    let (t, lim) = py
        .detach(|| {
            let t = core_depthmup(a.as_ref(), &xs, n, d, &spec, &opts)?;
            let lim = if limit {
                Some(depthmup_limit(
                    a.as_ref(),
                    &xs,
                    n,
                    d,
                    &spec,
                    rate,
                    w_hidden_limit,
                    limit_grid,
                    rtol,
                    atol,
                    &opts,
                )?)
            } else {
                None
            };
            Ok((t, lim))
        })
        .map_err(err)?;
    let out = PyDict::new(py);
    out.set_item("K", into_array(py, t.k, &[n, n])?)?;
    out.set_item("G", into_array(py, t.g, &[n, n])?)?;
    out.set_item("Phi", into_array(py, t.phi, &[n, n])?)?;
    out.set_item("Psi", into_array(py, t.psi, &[n, n])?)?;
    let square = |v: Vec<f64>| -> PyResult<Bound<'py, PyArrayDyn<f64>>> {
        let mut l = Layers::new(n * n);
        l.push(v);
        into_array(py, l, &[n, n])
    };
    out.set_item("Theta", square(t.theta)?)?;
    out.set_item("Theta_decoupled", square(t.theta_dec)?)?;
    if let Some(l) = lim {
        out.set_item("limit_s", l.s)?;
        out.set_item("limit_K", into_array(py, l.k, &[n, n])?)?;
        out.set_item("limit_G", into_array(py, l.g, &[n, n])?)?;
        out.set_item("limit_Theta", square(l.theta)?)?;
        out.set_item("limit_Theta_decoupled", square(l.theta_dec)?)?;
        out.set_item("limit_accepted", l.accepted)?;
        out.set_item("limit_rejected", l.rejected)?;
    }
    Ok(out)
}

/// Size of the closure of a tuple list (M, 4) over n samples (`pairs`: with the blocks the
/// two-point K1, Θ1 read): (tuples propagated, sample multisets evaluated per layer).
#[pyfunction]
pub(crate) fn tuple_closure(
    py: Python<'_>,
    n: usize,
    tuples: PyReadonlyArray2<'_, i64>,
    pairs: bool,
) -> PyResult<(usize, usize)> {
    let t = tuple_list(&tuples, n)?;
    py.detach(|| rgflow_core::mlp::closure_size(n, &t, pairs))
        .map_err(err)
}

/// The rows of an (M, 4) int64 array as sample tuples, each index in 0..n.
fn tuple_list(t: &PyReadonlyArray2<'_, i64>, n: usize) -> PyResult<Vec<[u32; 4]>> {
    if t.shape()[1] != 4 {
        return Err(PyValueError::new_err(format!(
            "tuples must have shape (M, 4), got {:?}",
            t.shape()
        )));
    }
    let arr = t.as_array();
    let mut v = Vec::with_capacity(arr.nrows());
    for row in arr.rows() {
        let mut q = [0u32; 4];
        for (slot, &i) in q.iter_mut().zip(row.iter()) {
            if i < 0 || i as usize >= n || i > u32::MAX as i64 {
                return Err(PyValueError::new_err(format!(
                    "tuples: sample index {i} out of range 0..{n}"
                )));
            }
            *slot = i as u32;
        }
        v.push(q);
    }
    Ok(v)
}
