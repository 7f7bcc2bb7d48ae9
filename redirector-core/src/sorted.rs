//! Bulk updates of ordered maps.

use std::collections::BTreeMap;

/// Inserts `new` (sorted by key, keys unique) into `map`, handing each value
/// it replaces to `replaced`. A batch about as large as the map (an install)
/// rebuilds the map in one sorted pass, which leaves its nodes full instead
/// of half empty after splits; a small one is inserted key by key.
pub fn upsert<K: Ord, V>(map: &mut BTreeMap<K, V>, new: impl ExactSizeIterator<Item = (K, V)>, mut replaced: impl FnMut(V)) {
    if new.len() < map.len() / 2 {
        for (key, value) in new {
            if let Some(old) = map.insert(key, value) {
                replaced(old);
            }
        }
        return;
    }
    let old = std::mem::take(map);
    let mut merged = Vec::with_capacity(old.len() + new.len());
    let mut new = new.peekable();
    for (key, value) in old {
        while let Some(next) = new.next_if(|(k, _)| *k < key) {
            merged.push(next);
        }
        match new.next_if(|(k, _)| *k == key) {
            Some(next) => {
                replaced(value);
                merged.push(next);
            }
            None => merged.push((key, value)),
        }
    }
    merged.extend(new);
    *map = merged.into_iter().collect();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Large and small batches give what inserting one by one gives.
    #[test]
    fn upsert_matches_inserting_one_by_one() {
        for (old, new) in [(0..10, 0..0), (0..10, 5..8), (0..4, 2..40), (10..20, 0..5), (0..3, 3..6)] {
            let old: BTreeMap<u32, u32> = old.map(|k| (k, k)).collect();
            let new: Vec<(u32, u32)> = new.filter(|k| k % 3 != 1).map(|k| (k, k + 100)).collect();
            let mut expected = old.clone();
            let mut expected_replaced = Vec::new();
            for &(k, v) in &new {
                expected_replaced.extend(expected.insert(k, v));
            }
            let (mut map, mut replaced) = (old, Vec::new());
            upsert(&mut map, new.into_iter(), |v| replaced.push(v));
            replaced.sort_unstable();
            assert_eq!((map, replaced), (expected, expected_replaced));
        }
    }
}
