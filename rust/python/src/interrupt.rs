//! Long core computations with Ctrl-C: [`run`] executes the computation on a worker thread
//! with the GIL released, while the calling thread waits for it and, every [`POLL`], briefly
//! re-attaches to run Python's signal handlers (`Python::check_signals`).  When a handler
//! raises (KeyboardInterrupt on SIGINT), the core's interrupt flag is set
//! ([`rgflow_core::cancel`]), the worker stops at its next check (milliseconds), is joined,
//! and the handler's exception is raised: no thread keeps running.

use std::sync::mpsc::{channel, RecvTimeoutError};
use std::sync::Mutex;
use std::time::Duration;

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use rgflow_core::{cancel, RgError};

use crate::convert::err;

/// How often the waiting thread runs the signal handlers.
const POLL: Duration = Duration::from_millis(50);

/// [`run`], or for a call known to be short (`small`: milliseconds at most) the computation
/// on this thread with the GIL released: a worker thread costs a spawn and two context
/// switches, which dominate small calls on a loaded machine.
pub(crate) fn run_sized<T, F>(py: Python<'_>, small: bool, f: F) -> PyResult<T>
where
    T: Send,
    F: FnOnce() -> Result<T, RgError> + Send,
{
    if small {
        py.detach(f).map_err(err)
    } else {
        run(py, f)
    }
}

/// Run `f` with the GIL released, interruptible by Ctrl-C (see the module docs); core errors
/// map to Python exceptions ([`err`]), a panic to `RuntimeError`.
pub(crate) fn run<T, F>(py: Python<'_>, f: F) -> PyResult<T>
where
    T: Send,
    F: FnOnce() -> Result<T, RgError> + Send,
{
    let job = Mutex::new(Some(f));
    let take = || job.lock().ok().and_then(|mut j| j.take());
    let (joined, pending) = py.detach(|| {
        std::thread::scope(|s| {
            let (tx, rx) = channel::<()>();
            let spawned = std::thread::Builder::new()
                .name("rgflow-core".into())
                .spawn_scoped(s, move || {
                    let r = take().map(|f| f());
                    let _ = tx.send(());
                    r
                });
            let Ok(handle) = spawned else {
                // No thread (a thread or address-space limit): run here, without Ctrl-C.
                return (Ok(take().map(|f| f())), None);
            };
            let mut pending: Option<PyErr> = None;
            loop {
                match rx.recv_timeout(POLL) {
                    Ok(()) | Err(RecvTimeoutError::Disconnected) => break,
                    Err(RecvTimeoutError::Timeout) if pending.is_none() => {
                        if let Err(e) = Python::attach(|py| py.check_signals()) {
                            cancel::interrupt();
                            pending = Some(e);
                        }
                    }
                    Err(RecvTimeoutError::Timeout) => {}
                }
            }
            let joined = handle.join();
            if pending.is_some() {
                cancel::clear();
            }
            (joined, pending)
        })
    });
    if let Some(e) = pending {
        return Err(e);
    }
    match joined {
        Ok(Some(r)) => r.map_err(err),
        Ok(None) => Err(PyRuntimeError::new_err(
            "internal error: the computation did not run",
        )),
        Err(panic) => {
            let msg = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            Err(PyRuntimeError::new_err(format!(
                "internal error in the rgflow core (please report): {msg}"
            )))
        }
    }
}
