//! The walk of `loadmodel`: both trees together, every problem collected, a plan built.
//!
//! Nothing is written here. The walk follows the destination's order, which is the walk
//! order that ties and overlapping copies are defined by. Leaves are handled in `leaf`.

use super::casting::CastRule;
use super::depth::too_deep;
use super::dicts::Entries;
use super::indexed::Indices;
use super::kinds::{ArrayLeaf, Classifier, Keyed, Node};
use super::leaf::{changed_arrays, DtypeInfo, SameLayout};
use super::path::{describe, KeyPath, Segment};
use super::room::LastSize;
use super::tensors::moved_tensors;
use crate::core::{Plan, Problem, ProblemKind};
use numpy::{PyArrayDescr, PyUntypedArray};
use pyo3::exceptions::PyException;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyInt, PyList, PyString};
use rustc_hash::{FxHashMap, FxHashSet};
use smallvec::SmallVec;

/// How many keys a structure message lists.
const LISTED_KEYS: usize = 10;

/// Leaves of the last plan built, as the room to make in the next one.
static PLAN_LEAVES: LastSize = LastSize::new(1 << 18);

/// What a finished walk hands to the copy.
pub struct Walked<'py> {
    pub plan: Plan,
    pub problems: Vec<Problem>,
    /// With `strict=False`, the keys present on one side only that were skipped:
    /// `(path, missing keys, unexpected keys)` per node.
    pub skipped: Vec<Skipped<'py>>,
    /// `(dst, src)` of each leaf whose cast NumPy performs, by leaf number.
    pub external: FxHashMap<usize, (Py<PyAny>, Py<PyAny>)>,
    /// The destination and source array of each leaf of the plan, alive until the copy
    /// is done.
    pub leaf_arrays: LeafArrays<'py>,
    /// The later source of each tie check, when the user's array is read directly.
    pub tie_arrays: Vec<Option<Bound<'py, PyUntypedArray>>>,
    /// Other arrays the plan points into (staged casts), alive until the copy is done.
    pub keep_alive: Vec<Bound<'py, PyAny>>,
    /// Whether the walk ran the user's Python code (a filter, a property, a registered
    /// children function...), which could have changed arrays planned before it.
    pub ran_user_code: bool,
    /// The casting rule, which the walk decides casts by and [`Walked::changed`] again.
    pub casting: CastRule<'py>,
    /// The tensors viewed as arrays, with their views' addresses (see `moved_tensors`).
    pub viewed: Vec<(Bound<'py, PyAny>, usize)>,
    /// Whether a tensor was met, so that arrays may be views of tensors' memory.
    pub met_torch: bool,
    /// The leaves torch copies (`fastload._torch.TorchCopies`), if any.
    pub torch_copies: Option<Bound<'py, PyAny>>,
}

impl Walked<'_> {
    /// The problems of arrays and tensors changed since they were planned, by code of the
    /// user's that the walk, or the checks after it, ran; none where none ran. Asked
    /// last before the copy, which would write into memory they may have given back,
    /// and before the plan's compact leaves are written out (from the arrays as they are
    /// then, which would hide a change).
    pub fn changed(&mut self) -> PyResult<Vec<Problem>> {
        if !self.ran_user_code {
            return Ok(Vec::new());
        }
        let mut changed = changed_arrays(
            &self.plan,
            &self.leaf_arrays,
            &self.tie_arrays,
            &mut self.casting,
        )?;
        let moved = moved_tensors(&self.viewed);
        if moved > 0 {
            let message = format!(
                "{moved} tensor(s) changed while the trees were walked (resized or given \
                 other memory by code the walk ran); load again once they stay put"
            );
            changed.push(Problem::new(ProblemKind::Leaf, "<walk>", message));
        }
        Ok(changed)
    }
}

/// Keys a node had on one side only, skipped under `strict=False`: its path, the keys
/// missing from the source and those the destination lacks.
pub type Skipped<'py> = (String, Vec<Bound<'py, PyAny>>, Vec<Bound<'py, PyAny>>);

/// The destination and source array of each leaf of a plan, by leaf number.
pub type LeafArrays<'py> = Vec<(
    Bound<'py, PyUntypedArray>,
    Option<Bound<'py, PyUntypedArray>>,
)>;

pub struct Walker<'py> {
    pub(super) py: Python<'py>,
    pub(super) classifier: Classifier<'py>,
    /// The casting rule's name, for the leaves torch copies.
    pub(super) casting_name: String,
    pub(super) filter: Option<Bound<'py, PyAny>>,
    pub(super) strict: bool,
    pub(super) path: KeyPath<'py>,
    /// `(dst, src)` node pairs on the current path: meeting one again is a cycle.
    pub(super) on_path: FxHashSet<(usize, usize)>,
    /// Leaves with an external cast whose value was staged for tie checks.
    pub(super) staged: FxHashSet<usize>,
    /// The dtypes met so far, with what the leaves need of them (see `leaf`).
    pub(super) dtypes: SmallVec<[(Bound<'py, PyArrayDescr>, DtypeInfo); 4]>,
    /// The address and entry of the dtype last looked up in `dtypes` (which keeps it alive).
    pub(super) last_dtype: Option<(usize, DtypeInfo)>,
    /// Whether the destination node being walked is reached by no other path of the tree:
    /// the root, and each child borrowed from an exact list or dict (or an object's own
    /// attributes) that held the only reference to it. Its arrays that it alone references
    /// can then be planned without looking for ties (see `leaf::alone`).
    pub(super) unique: bool,
    /// The leaves planned so, by number, while no code of the user's had run: entered in
    /// the tie table once some has, since it could hand such an array back (see
    /// `leaf::enter_alone_leaves`).
    pub(super) alone_leaves: Vec<std::ops::Range<usize>>,
    /// The destination's root, whose uniqueness is assumed: met again below itself (with
    /// another source, or it would be a cycle), no leaf is planned alone from then on.
    pub(super) root: usize,
    pub(super) root_met_again: bool,
    pub(super) out: Walked<'py>,
}

impl<'py> Walker<'py> {
    pub fn new(
        py: Python<'py>,
        filter: Option<Bound<'py, PyAny>>,
        strict: bool,
        casting: &str,
    ) -> PyResult<Self> {
        let room = PLAN_LEAVES.room();
        let mut classifier = Classifier::new(py)?;
        // The filter is code of the user's too, run from the first node on; so is a
        // profile or trace function, run at each call of Python code the walk makes.
        classifier.ran_user_code = filter.is_some() || is_traced(py)?;
        Ok(Walker {
            py,
            classifier,
            casting_name: casting.to_owned(),
            filter,
            strict,
            path: KeyPath::default(),
            on_path: FxHashSet::default(),
            staged: FxHashSet::default(),
            dtypes: SmallVec::new(),
            last_dtype: None,
            unique: true,
            alone_leaves: Vec::new(),
            root: 0,
            root_met_again: false,
            out: Walked {
                plan: Plan::with_capacity(room),
                problems: Vec::new(),
                skipped: Vec::new(),
                external: FxHashMap::default(),
                leaf_arrays: Vec::with_capacity(room),
                tie_arrays: Vec::new(),
                keep_alive: Vec::new(),
                ran_user_code: false,
                casting: CastRule::new(py, casting)?,
                viewed: Vec::new(),
                met_torch: false,
                torch_copies: None,
            },
        })
    }

    /// Walks `dst` and `src` from the root. Errors only for exceptions that must not be
    /// turned into problems (`KeyboardInterrupt` and the like).
    pub fn walk(
        mut self,
        dst: &Bound<'py, PyAny>,
        src: &Bound<'py, PyAny>,
    ) -> PyResult<Walked<'py>> {
        self.root = dst.as_ptr() as usize;
        self.visit(dst, src)?;
        PLAN_LEAVES.remember(self.out.plan.len());
        self.out.ran_user_code = self.classifier.ran_user_code;
        self.out.met_torch = self.classifier.met_torch();
        let storages = self.classifier.take_tensor_storages();
        self.out.keep_alive.extend(storages);
        self.out.viewed = self.classifier.take_viewed_tensors();
        Ok(self.out)
    }

    pub(super) fn problem(&mut self, kind: ProblemKind, message: impl Into<String>) {
        let path = self.path_text();
        self.out.problems.push(Problem::new(kind, path, message));
    }

    /// The path being visited, rendered. A key's own `repr` may run, and change arrays
    /// already planned: the walk then counts as having run code of the user's.
    pub(super) fn path_text(&mut self) -> String {
        if self.path.renders_with_user_code() {
            self.classifier.ran_user_code = true;
        }
        self.path.render()
    }

    /// Visits one pair; an exception raised by the objects themselves (a children
    /// function, `keys()`, a property, the filter) becomes a problem at this path.
    fn visit(&mut self, dst: &Bound<'py, PyAny>, src: &Bound<'py, PyAny>) -> PyResult<()> {
        match self.visit_pair(dst, src) {
            Err(err) if err.is_instance_of::<PyException>(self.py) => {
                let message = format!("cannot walk this node: {err}");
                self.problem(ProblemKind::Structure, message);
                Ok(())
            }
            other => other,
        }
    }

    /// Inlined into the loops over children: most children are leaves, and a call per leaf
    /// (returning a `PyResult` through memory) costs more than the leaf's own checks.
    ///
    /// `dst` and `src` may be borrowed from their containers: planning the common leaf
    /// runs no Python code (the plan then holds its own references), and anything else is
    /// visited through references of its own, since a visit may run the user's code.
    #[inline(always)]
    pub(super) fn child(
        &mut self,
        segment: Segment<'py>,
        dst: &Bound<'py, PyAny>,
        src: &Bound<'py, PyAny>,
    ) -> PyResult<()> {
        let leaf = self.same_layout_arrays(dst, src);
        self.child_of_layout(segment, leaf, dst, src)
    }

    /// [`Walker::child`], where `leaf` is what [`Walker::same_layout_arrays`] made of the
    /// pair.
    #[inline(always)]
    pub(super) fn child_of_layout(
        &mut self,
        segment: Segment<'py>,
        leaf: Option<SameLayout<'_, 'py>>,
        dst: &Bound<'py, PyAny>,
        src: &Bound<'py, PyAny>,
    ) -> PyResult<()> {
        self.path.push(segment);
        let result = match leaf {
            Some(pair) => self.plan_same_layout(pair),
            None => {
                // Asked before the reference below is taken: the container's is the only
                // one when no other node holds the child.
                let unique = self.unique && references(dst) == 1;
                self.with_unique(unique, |this| this.visit(&dst.clone(), &src.clone()))
            }
        };
        self.path.pop();
        result
    }

    fn visit_pair(&mut self, dst: &Bound<'py, PyAny>, src: &Bound<'py, PyAny>) -> PyResult<()> {
        if let Some(reason) = too_deep(self.path.depth()) {
            self.problem(ProblemKind::Structure, reason);
            return Ok(());
        }
        if dst.as_ptr() as usize == self.root && self.path.depth() > 0 {
            self.root_met_again = true;
        }
        if let (None, Ok(d), Ok(s)) = (&self.filter, dst.cast_exact(), src.cast_exact()) {
            return self.unless_cycle(dst, src, |this| this.match_lists(d, s));
        }
        if self.filter.is_none() {
            // Two dicts (or objects' attributes) of the same size: matched position by
            // position while the keys pair up. Any other pair takes the general path.
            if let Some(d) = self.dict_of(dst)? {
                if let Some(s) = self.dict_of(src)?.filter(|s| d.len() == s.len()) {
                    // An exact dict's sharing is for its container's reference count to
                    // tell; an object's attributes are its own when only the object and
                    // `d` hold them.
                    let own = dst.is(&d) || references(&d) == 2;
                    let unique = self.unique && own;
                    return self.with_unique(unique, |this| {
                        this.unless_cycle(dst, src, |this| this.match_dicts(&d, &s))
                    });
                }
            }
        }
        match self.classifier.classify(dst)? {
            Node::Array(array) => self.load_array(&array, src),
            Node::Tensor(tensor) => match self.classifier.destination_tensor(&tensor)? {
                ArrayLeaf::NumPy(array) => self.load_array(&array, src),
                ArrayLeaf::Torch(tensor) => self.load_torch(&tensor, src),
            },
            mut node @ (Node::Keyed(_) | Node::Seq(..)) => {
                let src_node = self.classifier.classify_source(src)?;
                if src_node.is_node() {
                    return self.unless_cycle(dst, src, |this| this.match_children(node, src_node));
                }
                // Against a leaf, an empty node is a leaf too, as in Flux: an array cannot
                // load into `()`.
                if node.len() == 0 {
                    return self.load_plain(&node, dst, src);
                }
                // A node must have no children left once filtered.
                if let Some(filter) = self.filter.clone() {
                    retain(&mut node, &filter)?;
                }
                if node.len() > 0 {
                    let message = format!(
                        "Tried to load {} into a node with {} children; the structures do not match",
                        describe(src),
                        node.len()
                    );
                    self.problem(ProblemKind::Structure, message);
                }
                Ok(())
            }
            plain => self.load_plain(&plain, dst, src),
        }
    }

    /// `node` itself when it is an exact dict, or its attributes when they are read through
    /// an exact dict (`vars(node)`).
    fn dict_of(&mut self, node: &Bound<'py, PyAny>) -> PyResult<Option<Bound<'py, PyDict>>> {
        if let Ok(dict) = node.cast_exact::<PyDict>() {
            return Ok(Some(dict.clone()));
        }
        self.classifier.attribute_dict(node)
    }

    /// Runs `walk` with [`Walker::unique`] set to `unique`, as it is for a node below.
    fn with_unique(
        &mut self,
        unique: bool,
        walk: impl FnOnce(&mut Self) -> PyResult<()>,
    ) -> PyResult<()> {
        let outer = std::mem::replace(&mut self.unique, unique);
        let result = walk(self);
        self.unique = outer;
        result
    }

    /// Runs `walk` on the node pair `(dst, src)`, unless the pair is already on the path
    /// (the tree contains itself), which is a problem.
    fn unless_cycle(
        &mut self,
        dst: &Bound<'py, PyAny>,
        src: &Bound<'py, PyAny>,
        walk: impl FnOnce(&mut Self) -> PyResult<()>,
    ) -> PyResult<()> {
        let pair = (dst.as_ptr() as usize, src.as_ptr() as usize);
        if !self.on_path.insert(pair) {
            self.problem(
                ProblemKind::Structure,
                "the tree has a cycle: this node contains itself",
            );
            return Ok(());
        }
        let result = walk(self);
        self.on_path.remove(&pair);
        result
    }

    /// Two lists, matched by position; their items are read in place, one pair at a time,
    /// without a copy of either list. Code of the user's that the walk runs may resize
    /// them meanwhile: that is a problem, not a crash.
    fn match_lists(&mut self, dst: &Bound<'py, PyList>, src: &Bound<'py, PyList>) -> PyResult<()> {
        let len = dst.len();
        if src.len() != len {
            self.sequence_lengths_differ(src.len(), len);
            return Ok(());
        }
        for i in 0..len {
            let (Some(d), Some(s)) = (borrowed_item(dst, i), borrowed_item(src, i)) else {
                self.problem(
                    ProblemKind::Structure,
                    "a list changed size while the trees were walked",
                );
                break;
            };
            self.child(Segment::Index(i), &d, &s)?;
        }
        Ok(())
    }

    fn sequence_lengths_differ(&mut self, src_len: usize, dst_len: usize) {
        let message = format!(
            "Tried to load a sequence of {src_len} children into a sequence of {dst_len}; the structures do not match"
        );
        self.problem(ProblemKind::Structure, message);
    }

    fn match_children(&mut self, mut dst: Node<'py>, mut src: Node<'py>) -> PyResult<()> {
        let (mut dst_at, mut src_at) = (Indices::default(), Indices::default());
        if let Some(filter) = self.filter.clone() {
            dst_at = retain(&mut dst, &filter)?;
            src_at = retain(&mut src, &filter)?;
        }
        match (dst, src) {
            (Node::Keyed(d), Node::Keyed(s)) => self.match_keys(d, s, 0),
            // Matched by position among the children kept; paths name the destination's.
            (Node::Seq(d, _), Node::Seq(s, _)) => {
                if d.len() != s.len() {
                    self.sequence_lengths_differ(s.len(), d.len());
                    return Ok(());
                }
                for (j, (d, s)) in d.iter().zip(&s).enumerate() {
                    self.child(Segment::Index(dst_at.of(j)), d, s)?;
                }
                Ok(())
            }
            (Node::Seq(d, _), Node::Keyed(s)) => self.sequence_from_keyed(d, dst_at, s),
            (Node::Keyed(d), Node::Seq(s, _)) => self.keyed_from_sequence(d, s, src_at),
            _ => Ok(()),
        }
    }

    /// Two keyed nodes matched by key, in `dst`'s order; its first `visited` children
    /// (all found in `src`) were visited already.
    pub(super) fn match_keys(
        &mut self,
        dst: Keyed<'py>,
        mut src: Keyed<'py>,
        visited: usize,
    ) -> PyResult<()> {
        let index = src.index(self.py)?;
        // Looking keys up runs their `__hash__` and `__eq__`: the user's code, unless every
        // key on both sides is a `str` or an `int`.
        let plain = dst.has_plain_keys() && plain_keys(&index);
        self.classifier.ran_user_code |= !plain;
        let sizes = (dst.dict_len(), index.len());
        let mut matched = Vec::with_capacity(dst.pairs.len());
        let mut missing = Vec::new();
        for (key, d) in &dst.pairs {
            match index.get_item(key)? {
                Some(s) => matched.push((key, d, s)),
                None => missing.push(key.clone()),
            }
        }
        if (dst.dict_len(), index.len()) != sizes {
            let message = "a dict changed size while its keys were compared (by a key's __eq__)";
            self.problem(ProblemKind::Structure, message);
            return Ok(());
        }
        if !missing.is_empty() || matched.len() != src.len() {
            src.read_pairs();
            let dst_keys = PyDict::new(self.py);
            for (key, _) in &dst.pairs {
                dst_keys.set_item(key, self.py.None())?;
            }
            let mut unexpected = Vec::new();
            for (key, _) in &src.pairs {
                if !dst_keys.contains(key)? {
                    unexpected.push(key.clone());
                }
            }
            if missing.is_empty() && unexpected.is_empty() {
                let message = format!(
                    "the same keys on both sides, yet {} children in the destination and {} in the source: a mapping lists a key twice",
                    dst.pairs.len(),
                    src.pairs.len()
                );
                self.problem(ProblemKind::Structure, message);
                return Ok(());
            }
            self.one_sided(missing, unexpected);
        }
        for (key, d, s) in matched.into_iter().skip(visited) {
            self.child(Segment::Key(key.clone()), d, &s)?;
        }
        Ok(())
    }

    /// Keys on one side only: a problem, or skipped and reported under `strict=False`.
    pub(super) fn one_sided(
        &mut self,
        missing: Vec<Bound<'py, PyAny>>,
        unexpected: Vec<Bound<'py, PyAny>>,
    ) {
        if !self.strict {
            let path = self.path_text();
            self.out.skipped.push((path, missing, unexpected));
            return;
        }
        let mut parts = Vec::new();
        if !missing.is_empty() {
            parts.push(format!(
                "missing keys {} (not in the source)",
                key_list(self.py, &missing)
            ));
        }
        if !unexpected.is_empty() {
            parts.push(format!(
                "unexpected keys {} (not in the destination)",
                key_list(self.py, &unexpected)
            ));
        }
        let message = format!("the structures do not match: {}", parts.join(", "));
        self.problem(ProblemKind::Structure, message);
    }
}

/// The tool ids of `sys.monitoring`.
const MONITORING_TOOLS: u8 = 6;

/// Whether code of the user's runs at calls the walk makes: a profile or trace function
/// (`sys.setprofile`, `sys.settrace`), a `sys.monitoring` tool, or a torch function or
/// dispatch mode, which runs at each torch call on a tensor.
fn is_traced(py: Python<'_>) -> PyResult<bool> {
    let sys = py.import(intern!(py, "sys"))?;
    let set = |name| Ok::<_, PyErr>(!sys.call_method0(name)?.is_none());
    if set(intern!(py, "getprofile"))? || set(intern!(py, "gettrace"))? {
        return Ok(true);
    }
    // Python 3.12's `sys.monitoring`: a tool registered may have callbacks for any event,
    // globally or on some code objects only.
    if let Ok(monitoring) = sys.getattr(intern!(py, "monitoring")) {
        let get_tool = monitoring.getattr(intern!(py, "get_tool"))?;
        for tool in 0..MONITORING_TOOLS {
            if !get_tool.call1((tool,))?.is_none() {
                return Ok(true);
            }
        }
    }
    let modules = sys.getattr(intern!(py, "modules"))?;
    let Some(torch) = modules.get_item(intern!(py, "torch")).ok() else {
        return Ok(false);
    };
    let Ok(c) = torch.getattr(intern!(py, "_C")) else {
        return Ok(false); // (torch still being imported)
    };
    let stack = |name| -> PyResult<bool> {
        Ok(match c.getattr(name) {
            Ok(len) => len.call0()?.extract::<usize>()? > 0,
            Err(_) => false,
        })
    };
    Ok(stack(intern!(py, "_len_torch_function_stack"))?
        || stack(intern!(py, "_len_torch_dispatch_stack"))?)
}

/// The number of references to `object`.
pub(super) fn references(object: &Bound<'_, PyAny>) -> isize {
    // SAFETY: a live object.
    unsafe { pyo3::ffi::Py_REFCNT(object.as_ptr()) }
}

/// Item `i` of `list`, borrowed from it (see [`Walker::child`] for how long that is safe);
/// `None` past its end.
fn borrowed_item<'a, 'py>(
    list: &'a Bound<'py, PyList>,
    i: usize,
) -> Option<Borrowed<'a, 'py, PyAny>> {
    let i = isize::try_from(i).ok()?;
    // SAFETY: `list` is a live list; `PyList_GetItem` returns a borrowed reference, or null
    // (with an `IndexError` set, cleared below) past the end.
    let item = unsafe { pyo3::ffi::PyList_GetItem(list.as_ptr(), i) };
    if item.is_null() {
        drop(PyErr::take(list.py()));
        return None;
    }
    // SAFETY: non-null, and alive while the list holds it.
    Some(unsafe { Borrowed::from_ptr(list.py(), item) })
}

/// Whether a key is an exact `str` or `int`, whose hashing and comparison run no Python code.
pub(super) fn plain_key(key: &Bound<'_, PyAny>) -> bool {
    key.is_exact_instance_of::<PyString>() || key.is_exact_instance_of::<PyInt>()
}

/// Whether every key of `dict` is a [`plain_key`].
pub(super) fn plain_keys(dict: &Bound<'_, PyDict>) -> bool {
    // No Python code runs in this loop: the borrowed keys stay valid.
    Entries::new(dict).all(|(key, _)| plain_key(&key))
}

/// `['a', 'b']`, the first few keys as Python prints them, then how many more there are:
/// the one way messages and warnings list keys.
#[pyfunction]
pub fn keys_text(py: Python<'_>, keys: Vec<Bound<'_, PyAny>>) -> String {
    key_list(py, &keys)
}

pub(super) fn key_list(py: Python<'_>, keys: &[Bound<'_, PyAny>]) -> String {
    let shown = PyList::empty(py);
    for key in keys.iter().take(LISTED_KEYS) {
        let _ = shown.append(key);
    }
    let text = shown
        .repr()
        .and_then(|r| r.extract::<String>())
        .unwrap_or_else(|_| "[...]".to_owned());
    if keys.len() > LISTED_KEYS {
        format!("{} (and {} more)", text, keys.len() - LISTED_KEYS)
    } else {
        text
    }
}

/// Drops the children of a node for which `filter(child)` is false.
fn retain<'py>(node: &mut Node<'py>, filter: &Bound<'py, PyAny>) -> PyResult<Indices> {
    match node {
        Node::Keyed(keyed) => {
            keyed.retain(|v| filter.call1((v,))?.is_truthy())?;
            Ok(Indices::default())
        }
        Node::Seq(items, _) => {
            let (mut kept, mut indices) = (Vec::with_capacity(items.len()), Vec::new());
            for (i, item) in items.drain(..).enumerate() {
                if filter.call1((&item,))?.is_truthy()? {
                    kept.push(item);
                    indices.push(i);
                }
            }
            *items = kept;
            Ok(Indices::kept(indices))
        }
        _ => Ok(Indices::default()),
    }
}
