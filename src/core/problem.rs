//! Problems found while planning a load, and the one failure they add up to.

use std::fmt::Write;

/// Which exception a problem maps to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProblemKind {
    /// The trees do not have the same structure (`ArgumentError`).
    Structure,
    /// Two arrays of different shapes (`DimensionMismatch`).
    Shape,
    /// Any other refused leaf: dtype, tie, read-only, non-array value (`LoadError`).
    Leaf,
}

/// One problem at one place of the tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub kind: ProblemKind,
    /// The dotted key path (`layers.1.weight`), or `<root>`.
    pub path: String,
    pub message: String,
}

impl Problem {
    pub fn new(kind: ProblemKind, path: impl Into<String>, message: impl Into<String>) -> Self {
        Problem {
            kind,
            path: path.into(),
            message: message.into(),
        }
    }
}

/// How many problems a failure message lists before it only counts the rest.
pub const LISTED_PROBLEMS: usize = 30;

/// Every problem of a refused load; nothing was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadFailure {
    pub problems: Vec<Problem>,
}

impl LoadFailure {
    /// The exception class is that of the first problem found.
    pub fn kind(&self) -> ProblemKind {
        self.problems.first().map_or(ProblemKind::Leaf, |p| p.kind)
    }

    /// The exception message: a count, then one line per problem (the first few dozen).
    pub fn message(&self) -> String {
        self.message_after("nothing was loaded")
    }

    /// [`LoadFailure::message`], saying `outcome` of what was refused.
    pub fn message_after(&self, outcome: &str) -> String {
        let n = self.problems.len();
        let mut out = match n {
            1 => format!("1 problem; {outcome}:"),
            _ => format!("{n} problems; {outcome}:"),
        };
        for p in self.problems.iter().take(LISTED_PROBLEMS) {
            let _ = write!(out, "\n  {}: {}", p.path, p.message);
        }
        if n > LISTED_PROBLEMS {
            let _ = write!(out, "\n  ... and {} more", n - LISTED_PROBLEMS);
        }
        out
    }
}

/// Inserts problems found after the walk (tie checks) among the walk's own, each after the
/// first `position` of them, so that the list stays in walk order.
pub fn merge_in_walk_order(walk: Vec<Problem>, mut later: Vec<(usize, Problem)>) -> Vec<Problem> {
    if later.is_empty() {
        return walk;
    }
    later.sort_by_key(|(position, _)| *position);
    let mut merged = Vec::with_capacity(walk.len() + later.len());
    let mut later = later.into_iter().peekable();
    for (i, problem) in walk.into_iter().enumerate() {
        while let Some((_, p)) = later.next_if(|(position, _)| *position <= i) {
            merged.push(p);
        }
        merged.push(problem);
    }
    merged.extend(later.map(|(_, p)| p));
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_problems_are_merged_at_their_walk_position() {
        let p = |path: &str| Problem::new(ProblemKind::Leaf, path, "m");
        let merged = merge_in_walk_order(
            vec![p("a"), p("c"), p("e")],
            vec![(3, p("f")), (1, p("b")), (0, p("root")), (1, p("b2"))],
        );
        let paths: Vec<_> = merged.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(paths, ["root", "a", "b", "b2", "c", "e", "f"]);
    }

    #[test]
    fn message_lists_paths_and_counts_the_rest() {
        let problems: Vec<Problem> = (0..LISTED_PROBLEMS + 5)
            .map(|i| Problem::new(ProblemKind::Shape, format!("layers.{i}.weight"), "bad"))
            .collect();
        let failure = LoadFailure { problems };
        let message = failure.message();
        assert!(message.starts_with("35 problems"));
        assert!(message.contains("\n  layers.0.weight: bad"));
        assert!(!message.contains("layers.31.weight"));
        assert!(message.ends_with("... and 5 more"));
        assert_eq!(failure.kind(), ProblemKind::Shape);
    }
}
