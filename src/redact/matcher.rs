//! The search: a Rabin–Karp matcher over the hashes of every form of every registered
//! secret (the module doc of [`super`] says why not an automaton), and [`replace`], which
//! puts [`MARKER`] over every match. The registry in [`super`] owns the matchers.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use super::forms::forms;
use super::{Entry, MARKER, MIN_LEN};

/// Forms at least this long are found through the hash of their first `PREFIX` bytes;
/// shorter ones through one set per length.
const PREFIX: usize = 16;

/// A hasher for keys that already are hashes.
#[derive(Default)]
pub(super) struct Identity(u64);

impl Hasher for Identity {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

pub(super) type IdMap<V> = HashMap<u64, V, BuildHasherDefault<Identity>>;

/// Polynomial hash base (odd, so powers never vanish mod 2⁶⁴).
pub(super) const BASE: u64 = 0x0000_0100_0000_01b3;

pub(super) fn hash(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0u64, |h, &b| {
        h.wrapping_mul(BASE).wrapping_add(u64::from(b) + 1)
    })
}

/// A multiset of forms, searchable in one pass (module docs).
#[derive(Default)]
pub(super) struct Matcher {
    /// Per length below [`PREFIX`]: hash → how many registrations hold it.
    short: [IdMap<u32>; PREFIX],
    /// Hash of the first [`PREFIX`] bytes → (length, hash of the whole form, count).
    long: IdMap<Vec<(usize, u64, u32)>>,
    pub(super) forms: usize,
}

/// What the matcher keeps of one form: its length and hashes, never the text, so the
/// registry holds no copy of any secret.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) struct FormKey {
    len: usize,
    full: u64,
    /// Hash of the first [`PREFIX`] bytes (0 for shorter forms).
    prefix: u64,
}

impl FormKey {
    pub(super) fn of(form: &str) -> Self {
        let b = form.as_bytes();
        FormKey {
            len: b.len(),
            full: hash(b),
            prefix: if b.len() < PREFIX {
                0
            } else {
                hash(&b[..PREFIX])
            },
        }
    }
}

/// The keys of every form of `entry`.
pub(super) fn keys(entry: &Entry) -> Vec<FormKey> {
    forms(entry).iter().map(|f| FormKey::of(f)).collect()
}

impl Matcher {
    pub(super) fn add(&mut self, k: FormKey) {
        self.forms += 1;
        if k.len < PREFIX {
            *self.short[k.len].entry(k.full).or_default() += 1;
            return;
        }
        let slot = self.long.entry(k.prefix).or_default();
        match slot
            .iter_mut()
            .find(|(l, h, _)| *l == k.len && *h == k.full)
        {
            Some((_, _, n)) => *n += 1,
            None => slot.push((k.len, k.full, 1)),
        }
    }

    pub(super) fn remove(&mut self, k: FormKey) {
        self.forms = self.forms.saturating_sub(1);
        if k.len < PREFIX {
            if let Some(n) = self.short[k.len].get_mut(&k.full) {
                *n -= 1;
                if *n == 0 {
                    self.short[k.len].remove(&k.full);
                }
            }
            return;
        }
        if let Some(slot) = self.long.get_mut(&k.prefix) {
            if let Some(i) = slot
                .iter()
                .position(|(l, h, _)| *l == k.len && *h == k.full)
            {
                slot[i].2 -= 1;
                if slot[i].2 == 0 {
                    slot.swap_remove(i);
                }
            }
            if slot.is_empty() {
                self.long.remove(&k.prefix);
            }
        }
    }

    pub(super) fn add_all(&mut self, keys: &[FormKey]) {
        keys.iter().for_each(|k| self.add(*k));
    }

    pub(super) fn remove_all(&mut self, keys: &[FormKey]) {
        keys.iter().for_each(|k| self.remove(*k));
    }

    #[cfg(test)]
    pub(super) fn add_entry(&mut self, entry: &Entry) {
        self.add_all(&keys(entry));
    }

    /// The length of the longest form starting at byte `i` (0 when none).
    pub(super) fn longest_at(&self, text: &mut Hashes<'_>, i: usize) -> usize {
        let left = text.len() - i;
        let mut best = 0;
        if left >= PREFIX
            && let Some(slot) = self.long.get(&text.of(i, PREFIX))
        {
            for &(len, full, _) in slot {
                if len > best && len <= left && text.of(i, len) == full {
                    best = len;
                }
            }
        }
        if best == 0 {
            for len in (MIN_LEN..PREFIX.min(left + 1)).rev() {
                if !self.short[len].is_empty() && self.short[len].contains_key(&text.of(i, len)) {
                    return len;
                }
            }
        }
        best
    }
}

/// Prefix hashes of a text, computed as far as the scan needs them: the hash of any slice
/// in O(1), and no work on the part of a long body that a cut drops anyway.
pub(super) struct Hashes<'a> {
    bytes: &'a [u8],
    prefix: Vec<u64>,
    power: Vec<u64>,
}

impl<'a> Hashes<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Hashes {
            bytes,
            prefix: vec![0],
            power: vec![1],
        }
    }

    fn len(&self) -> usize {
        self.bytes.len()
    }

    /// The hash of bytes `i..i + len` (within the text), equal to [`hash`] of that slice.
    fn of(&mut self, i: usize, len: usize) -> u64 {
        while self.prefix.len() <= i + len {
            let at = self.prefix.len() - 1;
            let (h, p) = (self.prefix[at], self.power[at]);
            self.prefix.push(
                h.wrapping_mul(BASE)
                    .wrapping_add(u64::from(self.bytes[at]) + 1),
            );
            self.power.push(p.wrapping_mul(BASE));
        }
        self.prefix[i + len].wrapping_sub(self.prefix[i].wrapping_mul(self.power[len]))
    }
}

/// Replaces every byte covered by a match of any matcher with [`MARKER`] (one marker per
/// run of overlapping matches), stopping once `budget` characters are out: everything
/// emitted is final, since a match only covers bytes to its right. Returns whether text
/// was left out.
pub(super) fn replace(text: &str, matchers: &[&Matcher], budget: usize) -> (String, bool) {
    let bytes = text.as_bytes();
    let mut hashes = Hashes::new(bytes);
    let mut out = Vec::with_capacity(bytes.len().min(budget.saturating_mul(4)));
    let (mut covered_to, mut chars) = (0usize, 0usize);
    for (i, &byte) in bytes.iter().enumerate() {
        if chars >= budget && i >= covered_to {
            return (String::from_utf8_lossy(&out).into_owned(), true);
        }
        let longest = matchers
            .iter()
            .map(|m| m.longest_at(&mut hashes, i))
            .max()
            .unwrap_or(0);
        if longest > 0 {
            if i >= covered_to {
                out.extend_from_slice(MARKER.as_bytes());
                chars += MARKER.len();
            }
            covered_to = covered_to.max(i + longest);
        } else if i >= covered_to {
            out.push(byte);
            // Count characters, not bytes: continuation bytes do not start one.
            if byte & 0xC0 != 0x80 {
                chars += 1;
            }
        }
    }
    (String::from_utf8_lossy(&out).into_owned(), false)
}
