//! One shared copy of the strings thousands of cached objects repeat: zone identifiers,
//! vendors, regions, condition types and reasons, annotation keys, colo lists.
//!
//! A 32-character zone id is a 48-byte allocation; at 35,000 objects, each naming its zone in
//! spec, status and record, the copies alone cost megabytes. The tables forget a value once no
//! object holds it, so a tenant cycling through distinct values cannot grow them for good.

use std::collections::HashSet;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

/// A table of shared values that drops the ones nobody holds any more, now and then.
struct Table<T: ?Sized + Eq + Hash> {
    values: HashSet<Arc<T>>,
    sweep_at: usize,
}

/// Below this many values a table is never swept: sweeping costs a pass over all of them.
const MIN_SWEEP: usize = 1024;

impl<T: ?Sized + Eq + Hash> Table<T> {
    fn new() -> Self {
        Table {
            values: HashSet::new(),
            sweep_at: MIN_SWEEP,
        }
    }

    fn get(&mut self, v: &T, make: impl FnOnce(&T) -> Arc<T>) -> Arc<T> {
        if let Some(shared) = self.values.get(v) {
            return shared.clone();
        }
        if self.values.len() >= self.sweep_at {
            self.values.retain(|x| Arc::strong_count(x) > 1);
            // Amortised: the next sweep waits until the table has doubled again.
            self.sweep_at = (self.values.len() * 2).max(MIN_SWEEP);
        }
        let shared = make(v);
        self.values.insert(shared.clone());
        shared
    }
}

static STRINGS: Mutex<Option<Table<str>>> = Mutex::new(None);
static LISTS: Mutex<Option<Table<[String]>>> = Mutex::new(None);

/// The shared copy of `s`.
pub fn string(s: &str) -> Arc<str> {
    let mut t = STRINGS.lock().unwrap_or_else(|e| e.into_inner());
    t.get_or_insert_with(Table::new).get(s, |x| Arc::from(x))
}

/// The shared copy of the list `v`.
pub fn list(v: &[String]) -> Arc<[String]> {
    let mut t = LISTS.lock().unwrap_or_else(|e| e.into_inner());
    t.get_or_insert_with(Table::new).get(v, |x| Arc::from(x))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_values_share_one_copy() {
        let a = string("023e105f4ecef8ad9ca31a8372d0c353");
        let b = string(&String::from("023e105f4ecef8ad9ca31a8372d0c353"));
        assert!(Arc::ptr_eq(&a, &b));
        let l = list(&["IAD".to_string(), "EWR".to_string()]);
        let m = list(&["IAD".to_string(), "EWR".to_string()]);
        assert!(Arc::ptr_eq(&l, &m));
        assert!(!Arc::ptr_eq(&l, &list(&["IAD".to_string()])));
    }

    #[test]
    fn values_nobody_holds_are_forgotten() {
        let mut t: Table<str> = Table::new();
        let kept = t.get("kept", |x| Arc::from(x));
        for i in 0..10 * MIN_SWEEP {
            drop(t.get(&format!("gone-{i}"), |x| Arc::from(x)));
        }
        assert!(
            t.values.len() <= 2 * MIN_SWEEP,
            "{} values kept",
            t.values.len()
        );
        assert!(Arc::ptr_eq(&kept, &t.get("kept", |x| Arc::from(x))));
    }
}
