//! Task plans: checking a workflow's task list and grouping it into levels
//! (DESIGN §10).
//!
//! [`plan_levels`] is pure: it serves the registry's workflows at load time
//! and the tasks a strategist spawns at run time alike. It knows nothing of
//! files or runs; callers say where the tasks came from.

use std::collections::{BTreeMap, HashMap, VecDeque};

use loom_protocol::subjects::validate_token;

use crate::settings::WorkflowTask;

/// Why a task list cannot be run.
///
/// Each message is a clause that reads after `workflow "w": `.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TaskPlanError {
    /// There are no tasks.
    #[error("tasks is empty; a workflow needs at least one task")]
    Empty,
    /// The dependencies go round in a circle. The path is in running order
    /// (`a → b`: `b` depends on `a`), starts at the smallest id on the cycle
    /// and repeats it at the end: `["a", "b", "c", "a"]`.
    #[error("tasks form a cycle: {}", .0.join(" → "))]
    Cycle(Vec<String>),
    /// A task names a worker the registry does not have.
    #[error("task {task:?} names worker {worker:?}, which is not in the registry")]
    UnknownWorker {
        /// The task's id.
        task: String,
        /// The worker it names.
        worker: String,
    },
    /// Two tasks have the same id.
    #[error("task id {0:?} is used by more than one task")]
    DuplicateId(String),
    /// A task depends on an id that is not among the tasks.
    #[error("task {task:?} depends on {dependency:?}, which is not among the tasks")]
    MissingDependency {
        /// The task's id.
        task: String,
        /// The id it depends on.
        dependency: String,
    },
    /// A task id is not subject-token-safe.
    #[error(
        "task id {0:?} is not valid: use letters, digits, '-' and '_', at most {max} characters",
        max = loom_protocol::subjects::MAX_TOKEN_LEN
    )]
    InvalidId(String),
}

/// Checks a task list and groups it into levels: level 0 has no dependencies, level n
/// depends only on levels < n. `worker_exists` says whether a worker name is in the registry.
/// Used for registry workflows and for the tasks a strategist spawns at run time.
///
/// A task's level is one more than the highest level among its dependencies,
/// so every task runs as early as it can. Within a level, ids keep their
/// definition order.
///
/// Checks run in this order, and the first problem found is returned: an
/// empty list; each id in definition order (valid, then not taken by an
/// earlier task); each task in definition order (its worker, then each of its
/// dependencies in listed order); cycles. When there are several cycles, the
/// one reported is found by starting at the first task (in definition order)
/// that cannot be placed and following, from each task, its first listed
/// dependency that cannot be placed either; the cycle reached is reported
/// from its smallest id (by byte order), in running order.
pub fn plan_levels(
    tasks: &[WorkflowTask],
    worker_exists: impl Fn(&str) -> bool,
) -> Result<Vec<Vec<String>>, TaskPlanError> {
    if tasks.is_empty() {
        return Err(TaskPlanError::Empty);
    }
    let mut index: HashMap<&str, usize> = HashMap::with_capacity(tasks.len());
    for (position, task) in tasks.iter().enumerate() {
        if validate_token(&task.id).is_err() {
            return Err(TaskPlanError::InvalidId(task.id.clone()));
        }
        if index.insert(task.id.as_str(), position).is_some() {
            return Err(TaskPlanError::DuplicateId(task.id.clone()));
        }
    }

    // Dependencies as positions, each listed once.
    let mut dependencies: Vec<Vec<usize>> = Vec::with_capacity(tasks.len());
    for task in tasks {
        if !worker_exists(&task.worker) {
            return Err(TaskPlanError::UnknownWorker {
                task: task.id.clone(),
                worker: task.worker.clone(),
            });
        }
        let mut positions: Vec<usize> = Vec::with_capacity(task.depends_on.len());
        for dependency in &task.depends_on {
            let Some(&position) = index.get(dependency.as_str()) else {
                return Err(TaskPlanError::MissingDependency {
                    task: task.id.clone(),
                    dependency: dependency.clone(),
                });
            };
            if !positions.contains(&position) {
                positions.push(position);
            }
        }
        dependencies.push(positions);
    }

    // Kahn's algorithm: a task is placed once all its dependencies are.
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); tasks.len()];
    for (position, positions) in dependencies.iter().enumerate() {
        for &dependency in positions {
            dependents[dependency].push(position);
        }
    }
    let mut unplaced: Vec<usize> = dependencies.iter().map(Vec::len).collect();
    let mut level = vec![0usize; tasks.len()];
    let mut ready: VecDeque<usize> = (0..tasks.len()).filter(|&p| unplaced[p] == 0).collect();
    let mut placed = 0;
    while let Some(position) = ready.pop_front() {
        placed += 1;
        for &dependent in &dependents[position] {
            level[dependent] = level[dependent].max(level[position] + 1);
            unplaced[dependent] -= 1;
            if unplaced[dependent] == 0 {
                ready.push_back(dependent);
            }
        }
    }
    if placed < tasks.len() {
        return Err(TaskPlanError::Cycle(cycle(tasks, &dependencies, &unplaced)));
    }

    let mut levels: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    for (position, task) in tasks.iter().enumerate() {
        levels
            .entry(level[position])
            .or_default()
            .push(task.id.clone());
    }
    Ok(levels.into_values().collect())
}

/// One cycle among the tasks Kahn's algorithm could not place (those with
/// `unplaced > 0`). Each of them has a dependency that could not be placed
/// either, so following such dependencies must come back to a task already
/// seen.
fn cycle(tasks: &[WorkflowTask], dependencies: &[Vec<usize>], unplaced: &[usize]) -> Vec<String> {
    let stuck = |position: usize| unplaced[position] > 0;
    let mut seen_at: HashMap<usize, usize> = HashMap::new();
    let mut path: Vec<usize> = Vec::new();
    let mut current = (0..tasks.len())
        .find(|&position| stuck(position))
        .unwrap_or_default();
    while !seen_at.contains_key(&current) {
        seen_at.insert(current, path.len());
        path.push(current);
        current = dependencies[current]
            .iter()
            .copied()
            .find(|&dependency| stuck(dependency))
            .unwrap_or(current);
    }
    // `path` walks from dependents to dependencies; running order is the reverse.
    let mut cycle: Vec<usize> = path[seen_at[&current]..].to_vec();
    cycle.reverse();
    let smallest = (0..cycle.len())
        .min_by_key(|&i| tasks[cycle[i]].id.as_str())
        .unwrap_or_default();
    cycle.rotate_left(smallest);
    let mut ids: Vec<String> = cycle.iter().map(|&p| tasks[p].id.clone()).collect();
    if let Some(first) = ids.first().cloned() {
        ids.push(first);
    }
    ids
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn task(id: &str, depends_on: &[&str]) -> WorkflowTask {
        WorkflowTask {
            id: id.to_owned(),
            worker: "w".to_owned(),
            depends_on: depends_on.iter().map(|d| (*d).to_owned()).collect(),
            params: BTreeMap::new(),
        }
    }

    fn plan(tasks: &[WorkflowTask]) -> Result<Vec<Vec<String>>, TaskPlanError> {
        plan_levels(tasks, |worker| worker == "w")
    }

    fn levels(groups: &[&[&str]]) -> Vec<Vec<String>> {
        groups
            .iter()
            .map(|group| group.iter().map(|id| (*id).to_owned()).collect())
            .collect()
    }

    fn ids(ids: &[&str]) -> Vec<String> {
        ids.iter().map(|id| (*id).to_owned()).collect()
    }

    #[test]
    fn plans_group_tasks_into_levels() {
        let table: &[(&[WorkflowTask], Vec<Vec<String>>)] = &[
            (&[task("a", &[])], levels(&[&["a"]])),
            (
                &[task("a", &[]), task("b", &[]), task("c", &[])],
                levels(&[&["a", "b", "c"]]),
            ),
            (
                // The diamond a → {b, c} → d.
                &[
                    task("a", &[]),
                    task("b", &["a"]),
                    task("c", &["a"]),
                    task("d", &["b", "c"]),
                ],
                levels(&[&["a"], &["b", "c"], &["d"]]),
            ),
            (
                // Definition order need not be running order; levels keep definition order.
                &[
                    task("d", &["c", "b"]),
                    task("c", &["a"]),
                    task("b", &["a"]),
                    task("a", &[]),
                ],
                levels(&[&["a"], &["c", "b"], &["d"]]),
            ),
            (
                // A task runs as soon as its dependencies allow, not later.
                &[
                    task("a", &[]),
                    task("b", &["a"]),
                    task("c", &["b"]),
                    task("x", &["a"]),
                    task("y", &[]),
                ],
                levels(&[&["a", "y"], &["b", "x"], &["c"]]),
            ),
            (
                // A dependency listed twice counts once.
                &[task("a", &[]), task("b", &["a", "a"])],
                levels(&[&["a"], &["b"]]),
            ),
        ];
        for (tasks, expected) in table {
            assert_eq!(plan(tasks).as_ref(), Ok(expected), "{tasks:?}");
        }
    }

    #[test]
    fn bad_task_lists_are_refused_with_the_first_problem() {
        let unknown_worker = WorkflowTask {
            worker: "nope".to_owned(),
            ..task("b", &[])
        };
        let table: Vec<(Vec<WorkflowTask>, TaskPlanError)> = vec![
            (vec![], TaskPlanError::Empty),
            (
                vec![task("a", &[]), task("a b", &[])],
                TaskPlanError::InvalidId("a b".into()),
            ),
            (vec![task("", &[])], TaskPlanError::InvalidId(String::new())),
            (
                vec![task("a", &[]), task("b", &[]), task("a", &[])],
                TaskPlanError::DuplicateId("a".into()),
            ),
            (
                vec![task("a", &[]), unknown_worker],
                TaskPlanError::UnknownWorker {
                    task: "b".into(),
                    worker: "nope".into(),
                },
            ),
            (
                vec![task("a", &["x"])],
                TaskPlanError::MissingDependency {
                    task: "a".into(),
                    dependency: "x".into(),
                },
            ),
            (
                vec![task("a", &["a"])],
                TaskPlanError::Cycle(ids(&["a", "a"])),
            ),
            (
                // c depends on b, b on a, a on c: in running order a → b → c → a.
                vec![task("c", &["b"]), task("a", &["c"]), task("b", &["a"])],
                TaskPlanError::Cycle(ids(&["a", "b", "c", "a"])),
            ),
            (
                // A task that depends on a cycle is not on it.
                vec![
                    task("start", &[]),
                    task("tail", &["y"]),
                    task("y", &["x", "start"]),
                    task("x", &["y"]),
                ],
                TaskPlanError::Cycle(ids(&["x", "y", "x"])),
            ),
        ];
        for (tasks, expected) in table {
            assert_eq!(plan(&tasks), Err(expected), "{tasks:?}");
        }
    }

    #[test]
    fn task_plan_errors_read_as_clauses() {
        let table = [
            (
                TaskPlanError::Empty,
                "tasks is empty; a workflow needs at least one task",
            ),
            (
                TaskPlanError::Cycle(ids(&["a", "b", "a"])),
                "tasks form a cycle: a → b → a",
            ),
            (
                TaskPlanError::UnknownWorker {
                    task: "x".into(),
                    worker: "nope".into(),
                },
                "task \"x\" names worker \"nope\", which is not in the registry",
            ),
            (
                TaskPlanError::DuplicateId("a".into()),
                "task id \"a\" is used by more than one task",
            ),
            (
                TaskPlanError::MissingDependency {
                    task: "b".into(),
                    dependency: "x".into(),
                },
                "task \"b\" depends on \"x\", which is not among the tasks",
            ),
            (
                TaskPlanError::InvalidId("a.b".into()),
                "task id \"a.b\" is not valid: use letters, digits, '-' and '_', at most 64 characters",
            ),
        ];
        for (error, message) in table {
            assert_eq!(error.to_string(), message);
        }
    }

    #[test]
    fn a_long_chain_is_planned_without_deep_recursion() {
        let chain: Vec<WorkflowTask> = (0..50_000)
            .map(|i| {
                let dependency = format!("t{}", i.max(1) - 1);
                let depends_on: Vec<&str> = if i == 0 {
                    vec![]
                } else {
                    vec![dependency.as_str()]
                };
                task(&format!("t{i}"), &depends_on)
            })
            .collect();
        let planned = plan(&chain).expect("a chain is a DAG");
        assert_eq!(planned.len(), 50_000);
        assert_eq!(planned[49_999], ids(&["t49999"]));
    }

    /// A random DAG: task `i` may depend only on tasks defined before it,
    /// then the list is shuffled so definition order says nothing.
    fn random_dag() -> impl Strategy<Value = Vec<WorkflowTask>> {
        (1usize..40)
            .prop_flat_map(|n| {
                let edges =
                    proptest::collection::vec(proptest::collection::vec(any::<bool>(), n), n);
                (Just(n), edges)
            })
            .prop_map(|(n, edges)| {
                (0..n)
                    .map(|i| {
                        let depends_on: Vec<String> = (0..i)
                            .filter(|&j| edges[i][j])
                            .map(|j| format!("t{j}"))
                            .collect();
                        WorkflowTask {
                            id: format!("t{i}"),
                            worker: "w".to_owned(),
                            depends_on,
                            params: BTreeMap::new(),
                        }
                    })
                    .collect::<Vec<_>>()
            })
            .prop_shuffle()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn every_task_sits_above_its_dependencies(tasks in random_dag()) {
            let planned = plan(&tasks).expect("a DAG is planned");
            let level_of: HashMap<&str, usize> = planned
                .iter()
                .enumerate()
                .flat_map(|(level, ids)| ids.iter().map(move |id| (id.as_str(), level)))
                .collect();
            // Every task appears exactly once.
            prop_assert_eq!(level_of.len(), tasks.len());
            prop_assert_eq!(planned.iter().map(Vec::len).sum::<usize>(), tasks.len());
            for task in &tasks {
                let level = level_of[task.id.as_str()];
                for dependency in &task.depends_on {
                    prop_assert!(level > level_of[dependency.as_str()]);
                }
                // As early as possible: level 0 without dependencies, else
                // right after its highest dependency.
                let earliest = task
                    .depends_on
                    .iter()
                    .map(|d| level_of[d.as_str()] + 1)
                    .max()
                    .unwrap_or(0);
                prop_assert_eq!(level, earliest);
            }
            // Within a level, definition order.
            for ids in &planned {
                let positions: Vec<usize> = ids
                    .iter()
                    .map(|id| tasks.iter().position(|t| &t.id == id).unwrap_or(usize::MAX))
                    .collect();
                prop_assert!(positions.windows(2).all(|w| w[0] < w[1]));
            }
            // No level is empty.
            prop_assert!(planned.iter().all(|ids| !ids.is_empty()));
        }

        #[test]
        fn a_back_edge_is_reported_as_a_cycle_through_it(
            tasks in random_dag().prop_filter("needs an edge", |t| t.iter().any(|t| !t.depends_on.is_empty())),
        ) {
            // Close a cycle: make some dependency depend on its dependent.
            let mut tasks = tasks;
            let dependent = tasks
                .iter()
                .position(|t| !t.depends_on.is_empty())
                .unwrap_or_default();
            let dependency_id = tasks[dependent].depends_on[0].clone();
            let dependent_id = tasks[dependent].id.clone();
            let dependency = tasks
                .iter()
                .position(|t| t.id == dependency_id)
                .unwrap_or_default();
            tasks[dependency].depends_on.push(dependent_id);
            match plan(&tasks) {
                Err(TaskPlanError::Cycle(path)) => {
                    prop_assert!(path.len() >= 3);
                    prop_assert_eq!(path.first(), path.last());
                    let on_cycle = &path[..path.len() - 1];
                    let smallest = on_cycle.iter().min().cloned().unwrap_or_default();
                    prop_assert_eq!(&path[0], &smallest);
                    // Each step is a real edge: the next task depends on the previous one.
                    for step in path.windows(2) {
                        let next = tasks.iter().find(|t| t.id == step[1]);
                        prop_assert!(next.is_some_and(|t| t.depends_on.contains(&step[0])));
                    }
                }
                other => prop_assert!(false, "expected a cycle, got {other:?}"),
            }
        }
    }
}
