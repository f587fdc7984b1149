//! Per-layer tensors of one family in one contiguous buffer.

use std::ops::Index;

use crate::RgError;

/// The tensors of one family (K, V, …) at every recorded layer, layer-major in one buffer:
/// layer `l` is `data[l·size .. (l+1)·size]`, the memory layout of a C-contiguous array
/// (L, N, …, N), so the buffer can be handed over (to numpy) without a copy.
/// `layers[l]` is the flat row-major tensor of layer `l`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Layers {
    data: Vec<f64>,
    size: usize,
}

impl Layers {
    /// Empty, for tensors of `size` entries each; no allocation.
    pub fn new(size: usize) -> Layers {
        Layers { data: vec![], size }
    }

    /// Empty, with room for `count` layers of `size` entries (one allocation up front, so
    /// growing never copies the buffer).
    pub fn with_capacity(size: usize, count: usize) -> Layers {
        Layers {
            data: Vec::with_capacity(size * count),
            size,
        }
    }

    /// [`Layers::with_capacity`], or [`RgError::OutOfMemory`] naming `what` when the buffer
    /// cannot be allocated.
    pub fn try_with_capacity(size: usize, count: usize, what: &str) -> Result<Layers, RgError> {
        let mut data = Vec::new();
        crate::cancel::reserve(&mut data, size.saturating_mul(count), what)?;
        Ok(Layers { data, size })
    }

    /// Append one layer (copied into the buffer); a [`Default`] (size-0) stack adopts the
    /// size of its first layer.
    pub fn push(&mut self, layer: impl AsRef<[f64]>) {
        let layer = layer.as_ref();
        if self.size == 0 && self.data.is_empty() {
            self.size = layer.len();
        }
        assert_eq!(layer.len(), self.size, "layer of the wrong size");
        self.data.extend_from_slice(layer);
    }

    /// Append one layer, taking over its buffer when the stack is still empty (no copy).
    pub fn push_owned(&mut self, layer: Vec<f64>) {
        if self.data.is_empty() && (self.size == 0 || self.size == layer.len()) {
            self.size = layer.len();
            self.data = layer;
        } else {
            self.push(&layer);
        }
    }

    /// Append one layer with entry i = f(i), filled in parallel.
    pub fn push_fill(&mut self, f: impl Fn(usize) -> f64 + Sync) {
        use rayon::prelude::*;
        let start = self.data.len();
        self.data.resize(start + self.size, 0.0);
        self.data[start..]
            .par_iter_mut()
            .enumerate()
            .for_each(|(i, v)| *v = f(i));
    }

    /// Append one layer of zeros.
    pub fn push_zeros(&mut self) {
        self.data.resize(self.data.len() + self.size, 0.0);
    }

    /// Number of layers.
    pub fn len(&self) -> usize {
        self.data.len().checked_div(self.size).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Entries per layer.
    pub fn layer_size(&self) -> usize {
        self.size
    }

    /// Iterate over the layers.
    pub fn iter(&self) -> impl Iterator<Item = &[f64]> {
        self.data.chunks_exact(self.size.max(1))
    }

    /// The last layer.
    pub fn last(&self) -> Option<&[f64]> {
        self.len().checked_sub(1).map(|l| &self[l])
    }

    /// The whole buffer, layer-major.
    pub fn as_slice(&self) -> &[f64] {
        &self.data
    }

    /// The buffer from layer `l` on.
    pub fn from_layer(&self, l: usize) -> &[f64] {
        &self.data[l * self.size..]
    }

    /// The whole buffer, layer-major (no copy).
    pub fn into_vec(self) -> Vec<f64> {
        self.data
    }
}

impl Index<usize> for Layers {
    type Output = [f64];
    fn index(&self, l: usize) -> &[f64] {
        &self.data[l * self.size..(l + 1) * self.size]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_major_buffer() {
        let mut s = Layers::with_capacity(3, 2);
        s.push([1.0, 2.0, 3.0]);
        s.push_zeros();
        s.push(vec![4.0, 5.0, 6.0]);
        assert_eq!(s.len(), 3);
        assert_eq!(&s[2], &[4.0, 5.0, 6.0]);
        assert_eq!(s.iter().nth(1).unwrap(), &[0.0; 3]);
        assert_eq!(
            s.into_vec(),
            vec![1.0, 2.0, 3.0, 0.0, 0.0, 0.0, 4.0, 5.0, 6.0]
        );
        let mut d = Layers::default();
        assert!(d.is_empty());
        assert_eq!(d.len(), 0);
        d.push([7.0, 8.0]);
        assert_eq!((d.len(), d.layer_size()), (1, 2));
    }
}
