//! Cooperative interruption and fallible allocation of the large buffers.
//!
//! Long computations (the batches of expectations, the tables over sample multisets, the
//! recursion layers, the outer levels of the nested quadrature, the ODE steps) call [`check`]
//! between chunks of work; once [`interrupt`] has been called it returns
//! [`RgError::Interrupted`], which the callers propagate (rayon's fallible iterators stop
//! handing out new items), so the whole computation unwinds within one chunk.  The flag is
//! process-wide: an interrupt (Ctrl-C, which Python delivers to the process) stops every core
//! computation in progress; the caller that requested it calls [`clear`] once its
//! computation has returned.
//!
//! [`zeros`] and [`reserve`] allocate with `try_reserve`, so an allocation failure of a large
//! buffer is an [`RgError::OutOfMemory`] instead of an abort of the process.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::RgError;

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Ask every running computation to stop at its next [`check`].
pub fn interrupt() {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Reset the flag (after the interrupted computation has returned).
pub fn clear() {
    INTERRUPTED.store(false, Ordering::SeqCst);
}

/// Whether an interrupt is pending.
#[inline]
pub fn is_interrupted() -> bool {
    INTERRUPTED.load(Ordering::Relaxed)
}

/// `Err(Interrupted)` once [`interrupt`] has been called (one relaxed atomic load).
#[inline]
pub fn check() -> Result<(), RgError> {
    if is_interrupted() {
        Err(RgError::Interrupted)
    } else {
        Ok(())
    }
}

/// Reserve room for `extra` more elements, or [`RgError::OutOfMemory`] naming `what`.
pub fn reserve<T>(v: &mut Vec<T>, extra: usize, what: &str) -> Result<(), RgError> {
    v.try_reserve_exact(extra)
        .map_err(|_| RgError::OutOfMemory {
            bytes: extra.saturating_mul(std::mem::size_of::<T>()),
            what: what.to_string(),
        })
}

/// `len` zeros, or [`RgError::OutOfMemory`] naming `what`.
pub fn zeros(len: usize, what: &str) -> Result<Vec<f64>, RgError> {
    let mut v = Vec::new();
    reserve(&mut v, len, what)?;
    v.resize(len, 0.0);
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_allocation_is_an_error() {
        let e = zeros(usize::MAX / 16, "a test buffer").unwrap_err();
        assert!(matches!(e, RgError::OutOfMemory { .. }), "{e:?}");
        assert!(e.to_string().contains("a test buffer"));
        assert_eq!(zeros(3, "x").unwrap(), vec![0.0; 3]);
    }
}
