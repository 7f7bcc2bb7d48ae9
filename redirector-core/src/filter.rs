//! The bits of the kernel's service filter (`FILTER`, see redirector-common),
//! kept incrementally from the destinations they cover.
//!
//! A bit may cover several destinations (they hash alike), so each set bit
//! counts its destinations and is cleared only when the last one goes.

use foldhash::{HashMap, HashMapExt as _, HashSet, HashSetExt as _};
use redirector_common::{FILTER_WORDS, ServiceKey, filter_bit};

/// A destination: address (IPv6 form) and port, network byte order.
type Destination = ([u32; 4], u16);

/// The filter's words and what they cover.
pub struct ServiceFilter {
    covered: HashSet<Destination>,
    /// Destinations per set bit.
    counts: HashMap<u32, u32>,
    words: Vec<u64>,
}

/// A changed word: its index and its new value, to be written to the kernel.
pub type WordChange = (u32, u64);

impl Default for ServiceFilter {
    fn default() -> Self {
        Self::new()
    }
}

impl ServiceFilter {
    /// A filter covering nothing (every bit clear).
    pub fn new() -> Self {
        Self { covered: HashSet::new(), counts: HashMap::new(), words: vec![0; FILTER_WORDS as usize] }
    }

    /// Covers the destination of `key` (its class is ignored). Returns the
    /// word to write when a bit was set: write it before the `ROUTES` entry.
    pub fn cover(&mut self, key: &ServiceKey) -> Option<WordChange> {
        if !self.covered.insert((key.addr, key.port)) {
            return None;
        }
        let bit = filter_bit(&key.addr, key.port);
        let count = self.counts.entry(bit).or_insert(0);
        *count += 1;
        (*count == 1).then(|| self.flip(bit))
    }

    /// Stops covering the destination of `key`. Returns the word to write
    /// when a bit was cleared: write it after the `ROUTES` entry is gone.
    pub fn uncover(&mut self, key: &ServiceKey) -> Option<WordChange> {
        if !self.covered.remove(&(key.addr, key.port)) {
            return None;
        }
        let bit = filter_bit(&key.addr, key.port);
        let count = self.counts.get_mut(&bit).expect("a covered destination counts in its bit");
        *count -= 1;
        if *count > 0 {
            return None;
        }
        self.counts.remove(&bit);
        Some(self.flip(bit))
    }

    /// Whether the destination of `key` is covered.
    pub fn covers(&self, key: &ServiceKey) -> bool {
        self.covered.contains(&(key.addr, key.port))
    }

    /// Destinations covered.
    pub fn len(&self) -> usize {
        self.covered.len()
    }

    /// Whether nothing is covered.
    pub fn is_empty(&self) -> bool {
        self.covered.is_empty()
    }

    /// The words as the kernel should hold them.
    pub fn words(&self) -> &[u64] {
        &self.words
    }

    fn flip(&mut self, bit: u32) -> WordChange {
        let word = &mut self.words[(bit >> 6) as usize];
        *word ^= 1 << (bit & 63);
        (bit >> 6, *word)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use redirector_common::{BASE_CLASS, mapped_v4};

    fn key(addr: u32, port: u16) -> ServiceKey {
        ServiceKey { class: BASE_CLASS, addr: mapped_v4(addr.to_be()), port: port.to_be(), pad: 0 }
    }

    /// Bits of exactly `keys`, computed from scratch.
    fn from_scratch<'k>(keys: impl Iterator<Item = &'k ServiceKey>) -> Vec<u64> {
        let mut words = vec![0u64; FILTER_WORDS as usize];
        for k in keys {
            let bit = filter_bit(&k.addr, k.port);
            words[(bit >> 6) as usize] |= 1 << (bit & 63);
        }
        words
    }

    #[test]
    fn a_shared_bit_is_cleared_with_its_last_destination() {
        let a = key(0x0a60_0001, 80);
        let bit = filter_bit(&a.addr, a.port);
        let b = (2..u32::MAX)
            .map(|i| key(0x0a60_0000 + i, 80))
            .find(|k| filter_bit(&k.addr, k.port) == bit)
            .expect("2^21 bits: a collision within a few million addresses");
        let mut f = ServiceFilter::new();
        assert!(f.cover(&a).is_some());
        assert_eq!(f.cover(&b), None, "the bit is already set");
        assert_eq!(f.cover(&a), None, "covering twice counts once");
        assert_eq!(f.uncover(&a), None, "b still needs the bit");
        assert_ne!(f.words()[(bit >> 6) as usize] & 1 << (bit & 63), 0);
        let (word, value) = f.uncover(&b).expect("the last destination clears the bit");
        assert_eq!((word, value & 1 << (bit & 63)), (bit >> 6, 0));
        assert_eq!(f.uncover(&b), None);
        assert!(f.is_empty());
    }

    #[test]
    fn the_class_of_a_key_does_not_matter() {
        let mut f = ServiceFilter::new();
        f.cover(&ServiceKey { class: 7, ..key(0x0a00_0001, 443) });
        assert!(f.covers(&key(0x0a00_0001, 443)));
        assert!(!f.covers(&key(0x0a00_0001, 444)));
    }

    #[test]
    fn few_other_destinations_pass_at_100000_services() {
        let mut f = ServiceFilter::new();
        for i in 0..100_000u32 {
            f.cover(&key(0x0a60_0000 + i, 80));
        }
        let words = f.words();
        let passing = (0..100_000u32)
            .map(|i| key(0x0b00_0000 + i * 7, 8080))
            .filter(|k| {
                let bit = filter_bit(&k.addr, k.port);
                words[(bit >> 6) as usize] & 1 << (bit & 63) != 0
            })
            .count();
        // 1 - e^(-100000 / 2^21) is 4.7%.
        assert!(passing < 6_000, "{passing} of 100,000 other destinations look like services");
    }

    proptest! {
        /// Whatever the order of covers and uncovers, the words are the bits
        /// of what is covered, and the changes returned rebuild them.
        #[test]
        fn words_are_the_bits_of_what_is_covered(ops in proptest::collection::vec((any::<bool>(), 0u32..64, 0u16..4), 1..300)) {
            let mut f = ServiceFilter::new();
            let mut kernel = vec![0u64; FILTER_WORDS as usize];
            let mut live = std::collections::BTreeSet::new();
            for (add, addr, port) in ops {
                // Few addresses, so that some share bits only by chance and
                // the same one comes back.
                let k = key(0x0a00_0000 + addr, port);
                let change = if add { live.insert(k); f.cover(&k) } else { live.remove(&k); f.uncover(&k) };
                if let Some((i, w)) = change {
                    kernel[i as usize] = w;
                }
            }
            let expected = from_scratch(live.iter());
            prop_assert_eq!(f.words(), &expected[..]);
            prop_assert_eq!(&kernel, &expected);
            prop_assert_eq!(f.len(), live.len());
        }
    }
}
