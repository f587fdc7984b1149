//! Index spaces of the four-point tensors of the MLP recursion: every tuple (a, b, c, d) of
//! the N samples ([`Dense`], row-major N⁴), or the closure of a requested list of tuples
//! ([`Tuples`]).
//!
//! In the derivative form an entry at layer ℓ+1 for (a, b, c, d) needs layer-ℓ entries only
//! over tuples whose first pair is drawn from {a, b} and second from {c, d}, or the other way
//! round (`mlp.rs`).  Grouping the tuples by their *blocks* (u, w) — u, w the sets of samples
//! of the first and second pair, each of one or two samples — a tuple set is closed when, with
//! a block, it holds the swapped block (w, u) and every sub-block (u' ⊆ u, w' ⊆ w).  Each
//! tuple lies in exactly one block; a block ({a, b}, {c, d}) with a ≠ b, c ≠ d holds the four
//! tuples (a|b, b|a, c|d, d|c), a block with one singleton two tuples, ({a}, {c}) one.  All
//! four samples of a block form one multiset, so the four-point expectations a closure needs
//! are one per block.

use rayon::prelude::*;
use rustc_hash::FxHashMap;

use crate::cancel;
use crate::RgError;

/// An index space of four-point tensors: tuples of sample indices and their positions in a
/// flat array.  Every tuple the recursion reads must lie in the space (a closed set).
pub(crate) trait Space: Sync {
    /// Number of samples.
    fn n(&self) -> usize;
    /// Number of tuples (entries of one layer of a family).
    fn len(&self) -> usize;
    /// Position of the tuple (a, b, c, d).
    fn pos(&self, a: usize, b: usize, c: usize, d: usize) -> usize;
    /// A tensor over the space, entry (a, b, c, d) = f(a, b, c, d), filled in parallel
    /// (allocated fallibly; stops at an interrupt).
    fn fill<F: Fn(usize, usize, usize, usize) -> f64 + Sync>(
        &self,
        f: F,
    ) -> Result<Vec<f64>, RgError>;
    /// The sorted multisets whose four-point expectations the space needs (None: all).
    fn multisets(&self) -> Option<&[[usize; 4]]>;
}

/// Every tuple of N samples, row-major: position ((a·N + b)·N + c)·N + d.
pub(crate) struct Dense {
    pub(crate) n: usize,
}

impl Space for Dense {
    #[inline]
    fn n(&self) -> usize {
        self.n
    }
    fn len(&self) -> usize {
        self.n.pow(4)
    }
    #[inline]
    fn pos(&self, a: usize, b: usize, c: usize, d: usize) -> usize {
        ((a * self.n + b) * self.n + c) * self.n + d
    }
    fn fill<F: Fn(usize, usize, usize, usize) -> f64 + Sync>(
        &self,
        f: F,
    ) -> Result<Vec<f64>, RgError> {
        crate::tables::fill4(self.n, f)
    }
    fn multisets(&self) -> Option<&[[usize; 4]]> {
        None
    }
}

/// Index of the sample set {a, b} (a ≤ b): b(b+1)/2 + a.
#[inline]
fn tri(a: usize, b: usize) -> usize {
    let (a, b) = if a <= b { (a, b) } else { (b, a) };
    b * (b + 1) / 2 + a
}

/// The second-pair blocks of rows that share them: sorted set ids `cols`, `cum[i]` = tuples
/// per first-pair ordering before block i (a block of set w has 1 or 2 orderings), and for
/// large groups a dense map set id → i + 1 (0: absent).
struct Group {
    cols: Vec<u32>,
    cum: Vec<u32>,
    map: Option<Vec<u32>>,
}

impl Group {
    #[inline]
    fn find(&self, w: usize) -> usize {
        match &self.map {
            Some(m) => m[w] as usize - 1,
            None => self
                .cols
                .binary_search(&(w as u32))
                .expect("tuple outside the closure"),
        }
    }
}

/// The closure of a requested tuple list ([module docs](self)): rows by first-pair sample set
/// u (a group of second-pair blocks and the row's first position); the row of u holds, per
/// ordering of u ((a, b) then (b, a)), the tuples of every block w of its group in order.
pub(crate) struct Tuples {
    n: usize,
    /// Per first-pair set id: (group index or u32::MAX, first position).
    rows: Vec<(u32, usize)>,
    groups: Vec<Group>,
    /// (a, b) of each set id, a ≤ b.
    sets: Vec<(u32, u32)>,
    len: usize,
    multisets: Vec<[usize; 4]>,
}

/// Blocks (u, w) by row u: a bit matrix for up to a few tens of MB, else hash sets.
enum Relation {
    Bits { words: usize, bits: Vec<u64> },
    Hash(Vec<rustc_hash::FxHashSet<u32>>),
}

impl Relation {
    fn new(t: usize) -> Relation {
        let words = t.div_ceil(64);
        if (t as u128) * (words as u128) * 8 <= 64 << 20 {
            Relation::Bits {
                words,
                bits: vec![0; t * words],
            }
        } else {
            Relation::Hash(vec![Default::default(); t])
        }
    }
    #[inline]
    fn insert(&mut self, u: usize, w: usize) -> bool {
        match self {
            Relation::Bits { words, bits } => {
                let (i, m) = (u * *words + w / 64, 1u64 << (w % 64));
                let new = bits[i] & m == 0;
                bits[i] |= m;
                new
            }
            Relation::Hash(h) => h[u].insert(w as u32),
        }
    }
    /// The sorted set ids w of row u.
    fn row(&self, u: usize) -> Vec<u32> {
        match self {
            Relation::Bits { words, bits } => {
                let mut out = vec![];
                for (k, &word) in bits[u * words..(u + 1) * words].iter().enumerate() {
                    let mut x = word;
                    while x != 0 {
                        out.push((k * 64 + x.trailing_zeros() as usize) as u32);
                        x &= x - 1;
                    }
                }
                out
            }
            Relation::Hash(h) => {
                let mut v: Vec<u32> = h[u].iter().copied().collect();
                v.sort_unstable();
                v
            }
        }
    }
}

impl Tuples {
    /// The closure of `tuples` (each index < n), and with `pairs` of the blocks ({a, b}, {a, b})
    /// of every pair (what the two-point K1, Θ1 read).
    pub(crate) fn closure(n: usize, tuples: &[[u32; 4]], pairs: bool) -> Result<Tuples, RgError> {
        if n >= 1 << 16 {
            return Err(RgError::value("tuples= needs fewer than 65536 inputs"));
        }
        if let Some(t) = tuples.iter().find(|t| t.iter().any(|&i| i as usize >= n)) {
            return Err(RgError::value(format!(
                "tuple {t:?} has a sample index out of range 0..{n}"
            )));
        }
        let t = n * (n + 1) / 2;
        let sets: Vec<(u32, u32)> = (0..n)
            .flat_map(|b| (0..=b).map(move |a| (a as u32, b as u32)))
            .collect();
        // requested blocks, deduplicated, then every swap and sub-block
        let mut req = Relation::new(t);
        let mut blocks: Vec<(u32, u32)> = vec![];
        let mut add = |u: usize, w: usize, blocks: &mut Vec<(u32, u32)>| {
            if req.insert(u, w) {
                blocks.push((u as u32, w as u32));
            }
        };
        for q in tuples {
            let q = q.map(|i| i as usize);
            add(tri(q[0], q[1]), tri(q[2], q[3]), &mut blocks);
        }
        if pairs {
            for u in 0..t {
                add(u, u, &mut blocks);
            }
        }
        drop(req);
        let subs = |u: u32| -> ([usize; 3], usize) {
            let (a, b) = sets[u as usize];
            if a == b {
                ([u as usize, 0, 0], 1)
            } else {
                (
                    [
                        tri(a as usize, a as usize),
                        tri(b as usize, b as usize),
                        u as usize,
                    ],
                    3,
                )
            }
        };
        let mut rel = Relation::new(t);
        for &(u, w) in &blocks {
            let (su, nu) = subs(u);
            let (sw, nw) = subs(w);
            for &x in &su[..nu] {
                for &y in &sw[..nw] {
                    rel.insert(x, y);
                    rel.insert(y, x);
                }
            }
        }
        drop(blocks);
        cancel::check()?;
        // rows with the same blocks share a group
        let mut groups: Vec<Group> = vec![];
        let mut by_cols: FxHashMap<Vec<u32>, u32> = FxHashMap::default();
        let mut rows = vec![(u32::MAX, 0usize); t];
        let mut len = 0usize;
        for (u, row) in rows.iter_mut().enumerate() {
            let cols = rel.row(u);
            if cols.is_empty() {
                continue;
            }
            let g = match by_cols.get(&cols) {
                Some(&g) => g,
                None => {
                    let mut cum = Vec::with_capacity(cols.len() + 1);
                    let mut acc = 0u32;
                    for &w in &cols {
                        cum.push(acc);
                        let (c, d) = sets[w as usize];
                        acc += 1 + u32::from(c != d);
                    }
                    cum.push(acc);
                    let map = (cols.len() * 16 >= t).then(|| {
                        let mut m = vec![0u32; t];
                        for (i, &w) in cols.iter().enumerate() {
                            m[w as usize] = i as u32 + 1;
                        }
                        m
                    });
                    groups.push(Group {
                        cols: cols.clone(),
                        cum,
                        map,
                    });
                    by_cols.insert(cols, groups.len() as u32 - 1);
                    groups.len() as u32 - 1
                }
            };
            let (a, b) = sets[u];
            let su = 1 + usize::from(a != b);
            *row = (g, len);
            len += su * *groups[g as usize].cum.last().unwrap() as usize;
        }
        drop(rel);
        // one multiset per block
        let mut keys: Vec<u64> = vec![];
        for (u, &(g, _)) in rows.iter().enumerate() {
            if g == u32::MAX {
                continue;
            }
            let (a, b) = sets[u];
            for &w in &groups[g as usize].cols {
                let (c, d) = sets[w as usize];
                let mut m = [a as usize, b as usize, c as usize, d as usize];
                m.sort_unstable();
                keys.push(crate::tables::ms_key(m));
            }
        }
        keys.par_sort_unstable();
        keys.dedup();
        let multisets = keys
            .iter()
            .map(|&k| [0, 16, 32, 48].map(|s| ((k >> s) & 0xffff) as usize))
            .collect();
        Ok(Tuples {
            n,
            rows,
            groups,
            sets,
            len,
            multisets,
        })
    }
}

impl Space for Tuples {
    #[inline]
    fn n(&self) -> usize {
        self.n
    }
    fn len(&self) -> usize {
        self.len
    }
    #[inline]
    fn pos(&self, a: usize, b: usize, c: usize, d: usize) -> usize {
        let (g, base) = self.rows[tri(a, b)];
        debug_assert!(g != u32::MAX, "tuple outside the closure");
        let grp = &self.groups[g as usize];
        let i = grp.find(tri(c, d));
        let total = *grp.cum.last().unwrap() as usize;
        base + usize::from(a > b) * total + grp.cum[i] as usize + usize::from(c > d)
    }
    fn fill<F: Fn(usize, usize, usize, usize) -> f64 + Sync>(
        &self,
        f: F,
    ) -> Result<Vec<f64>, RgError> {
        let mut out = cancel::zeros(self.len, "a four-point tensor over the tuple closure")?;
        // split the buffer into rows
        let mut chunks: Vec<(usize, &mut [f64])> = Vec::new();
        let mut rest: &mut [f64] = &mut out;
        for (u, &(g, _)) in self.rows.iter().enumerate() {
            if g == u32::MAX {
                continue;
            }
            let (a, b) = self.sets[u];
            let size =
                (1 + usize::from(a != b)) * *self.groups[g as usize].cum.last().unwrap() as usize;
            let (head, tail) = rest.split_at_mut(size);
            chunks.push((u, head));
            rest = tail;
        }
        chunks
            .into_par_iter()
            .try_for_each(|(u, chunk)| -> Result<(), RgError> {
                cancel::check()?;
                let (a, b) = self.sets[u];
                let (a, b) = (a as usize, b as usize);
                let grp = &self.groups[self.rows[u].0 as usize];
                let firsts: &[(usize, usize)] = if a == b {
                    &[(a, a)][..]
                } else {
                    &[(a, b), (b, a)][..]
                };
                let mut i = 0;
                for &(p, q) in firsts {
                    for &w in &grp.cols {
                        let (c, d) = self.sets[w as usize];
                        let (c, d) = (c as usize, d as usize);
                        chunk[i] = f(p, q, c, d);
                        i += 1;
                        if c != d {
                            chunk[i] = f(p, q, d, c);
                            i += 1;
                        }
                    }
                }
                Ok(())
            })?;
        Ok(out)
    }
    fn multisets(&self) -> Option<&[[usize; 4]]> {
        Some(&self.multisets)
    }
}
