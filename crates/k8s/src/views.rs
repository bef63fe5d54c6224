//! [`ViewStore`]: the planner's views of one kind of object, kept current by applying
//! watch events as they arrive.
//!
//! Why not a reflector store of API objects converted on every pass: at 50,000 pods
//! the conversion was most of a loop's work and the stored objects (even trimmed)
//! most of the process's memory. Here each object is converted once, when its watch
//! event arrives, and only the view is kept; the API object is dropped right away. A
//! snapshot then only collects the views (cheap `Arc` clones under the lock, deep
//! copies outside it).
//!
//! The relist semantics are the reflector's: `Init` starts a new buffer, `InitApply`
//! fills it, `InitDone` swaps it in whole, so a relist that drops objects deleted
//! while the watch was down leaves no stale views behind.

use crate::convert::ConversionError;
use kube::runtime::watcher;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// Namespace (empty for cluster-scoped kinds) and name.
pub type ObjectKey = (String, String);

/// What one object converted to.
#[derive(Debug)]
pub enum Converted<V> {
    /// The view, plus warnings about parts of the object that were ignored.
    View(Arc<V>, Vec<String>),
    /// The object could not be understood: skipped, reported every pass.
    Skipped(ConversionError),
}

impl<V> Converted<V> {
    /// From a conversion's result: the view with its warnings, or why it was skipped.
    pub fn new(result: Result<(V, Vec<String>), ConversionError>) -> Self {
        match result {
            Ok((view, warnings)) => Self::View(Arc::new(view), warnings),
            Err(e) => Self::Skipped(e),
        }
    }
}

/// How objects of one kind become views.
pub struct Conversion<K, V> {
    pub key: fn(&K) -> ObjectKey,
    pub view: fn(&K) -> Converted<V>,
}

impl<K, V> Clone for Conversion<K, V> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<K, V> Copy for Conversion<K, V> {}

#[derive(Debug)]
struct State<V> {
    live: BTreeMap<ObjectKey, Converted<V>>,
    /// The buffer of a relist in progress.
    relisting: Option<BTreeMap<ObjectKey, Converted<V>>>,
}

/// Views of every object of one kind, shared between the watch task (writer) and the
/// loop (reader).
#[derive(Debug)]
pub struct ViewStore<V> {
    state: Arc<Mutex<State<V>>>,
}

impl<V> Clone for ViewStore<V> {
    fn clone(&self) -> Self {
        Self {
            state: self.state.clone(),
        }
    }
}

impl<V> Default for ViewStore<V> {
    fn default() -> Self {
        Self {
            state: Arc::new(Mutex::new(State {
                live: BTreeMap::new(),
                relisting: None,
            })),
        }
    }
}

/// A collected copy of a store's contents, in key order.
#[derive(Debug)]
pub struct Collected<V> {
    pub views: Vec<Arc<V>>,
    pub skipped: Vec<ConversionError>,
    pub warnings: Vec<String>,
}

impl<V> ViewStore<V> {
    fn lock(&self) -> MutexGuard<'_, State<V>> {
        // A panic while holding the lock cannot leave a half-applied event (each
        // event is one map operation), so a poisoned lock is still consistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies one watch event, converting the object it carries with `conversion`
    /// (outside the lock: a pass collecting views is not held up by conversions).
    pub fn apply<K>(&self, event: &watcher::Event<K>, conversion: Conversion<K, V>) {
        match event {
            watcher::Event::Init => self.lock().relisting = Some(BTreeMap::new()),
            watcher::Event::InitApply(obj) => {
                let (key, view) = ((conversion.key)(obj), (conversion.view)(obj));
                let mut state = self.lock();
                // An InitApply without Init (kube does not send one) must not be lost.
                let State { live, relisting } = &mut *state;
                relisting.as_mut().unwrap_or(live).insert(key, view);
            }
            watcher::Event::InitDone => {
                let mut state = self.lock();
                if let Some(fresh) = state.relisting.take() {
                    state.live = fresh;
                }
            }
            watcher::Event::Apply(obj) => {
                let (key, view) = ((conversion.key)(obj), (conversion.view)(obj));
                self.lock().live.insert(key, view);
            }
            watcher::Event::Delete(obj) => {
                self.lock().live.remove(&(conversion.key)(obj));
            }
        }
    }

    /// The current views in key order, with what was skipped and warned about.
    pub fn collect(&self) -> Collected<V> {
        let state = self.lock();
        let mut out = Collected {
            views: Vec::with_capacity(state.live.len()),
            skipped: Vec::new(),
            warnings: Vec::new(),
        };
        for converted in state.live.values() {
            match converted {
                Converted::View(view, warnings) => {
                    out.views.push(view.clone());
                    out.warnings.extend(warnings.iter().cloned());
                }
                Converted::Skipped(e) => out.skipped.push(e.clone()),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in object: (name, value); a negative value does not convert.
    type Obj = (&'static str, i32);

    fn view(o: &Obj) -> Converted<i32> {
        if o.1 < 0 {
            Converted::Skipped(ConversionError {
                kind: "Obj",
                name: o.0.to_owned(),
                field: "value".into(),
                message: "negative".into(),
            })
        } else {
            Converted::View(
                Arc::new(o.1),
                if o.1 == 0 {
                    vec![format!("{} is zero", o.0)]
                } else {
                    vec![]
                },
            )
        }
    }

    const CONVERT: Conversion<Obj, i32> = Conversion {
        key: |o| (String::new(), o.0.to_owned()),
        view,
    };

    fn values(store: &ViewStore<i32>) -> Vec<i32> {
        store.collect().views.iter().map(|v| **v).collect()
    }

    #[test]
    fn applies_updates_and_deletes_in_key_order() {
        let store = ViewStore::default();
        store.apply(&watcher::Event::Apply(("b", 2)), CONVERT);
        store.apply(&watcher::Event::Apply(("a", 1)), CONVERT);
        store.apply(&watcher::Event::Apply(("b", 3)), CONVERT);
        assert_eq!(values(&store), vec![1, 3]);
        store.apply(&watcher::Event::Delete(("a", 1)), CONVERT);
        assert_eq!(values(&store), vec![3]);
    }

    #[test]
    fn a_relist_replaces_the_contents_only_when_done() {
        let store = ViewStore::default();
        store.apply(&watcher::Event::Apply(("gone", 1)), CONVERT);
        store.apply(&watcher::Event::Apply(("kept", 2)), CONVERT);
        store.apply(&watcher::Event::Init, CONVERT);
        store.apply(&watcher::Event::InitApply(("kept", 5)), CONVERT);
        assert_eq!(
            values(&store),
            vec![1, 2],
            "the old view stays whole until the relist is done"
        );
        store.apply(&watcher::Event::InitDone, CONVERT);
        assert_eq!(
            values(&store),
            vec![5],
            "an object deleted while the watch was down is gone"
        );
    }

    #[test]
    fn bad_objects_are_reported_until_fixed_or_deleted() {
        let store = ViewStore::default();
        store.apply(&watcher::Event::Apply(("bad", -1)), CONVERT);
        store.apply(&watcher::Event::Apply(("zero", 0)), CONVERT);
        let c = store.collect();
        assert_eq!(c.skipped.len(), 1);
        assert_eq!(c.skipped[0].name, "bad");
        assert_eq!(c.warnings, vec!["zero is zero".to_owned()]);
        assert_eq!(c.views.len(), 1);
        store.apply(&watcher::Event::Apply(("bad", 4)), CONVERT);
        let c = store.collect();
        assert!(c.skipped.is_empty());
        assert_eq!(values(&store), vec![4, 0]);
    }
}
