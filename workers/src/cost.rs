//! Costs a worker reports on stdout (DESIGN §6): lines of the form
//! `LOOM_COST: {"usd": 0.12, "tokens": 3400}`, anywhere in the output,
//! summed per key.
//!
//! Cost lines are read from the captured stdout tail, so a cost printed
//! before the tail's window is not seen. They do not interact with the
//! output contract: whether the last line is a status line is the
//! validator's concern, not this module's.

use std::collections::BTreeMap;

/// The prefix that marks a cost line.
pub const COST_PREFIX: &str = "LOOM_COST:";

/// Sums the cost lines of `stdout`. A line whose value is not a JSON object
/// of finite numbers is ignored whole. When `truncated` (the text is a tail
/// whose front was cut), the first line may be partial and is skipped.
pub fn parse_costs(stdout: &str, truncated: bool) -> BTreeMap<String, f64> {
    let mut costs = BTreeMap::new();
    let skip = usize::from(truncated);
    for line in stdout.lines().skip(skip) {
        let Some(json) = line.trim_start().strip_prefix(COST_PREFIX) else {
            continue;
        };
        match parse_cost_object(json) {
            Some(entries) => {
                for (key, value) in entries {
                    *costs.entry(key).or_insert(0.0) += value;
                }
            }
            None => tracing::debug!(line, "ignoring a malformed cost line"),
        }
    }
    costs
}

fn parse_cost_object(json: &str) -> Option<Vec<(String, f64)>> {
    let serde_json::Value::Object(object) = serde_json::from_str(json.trim()).ok()? else {
        return None;
    };
    object
        .into_iter()
        .map(|(key, value)| {
            let number = value.as_f64().filter(|n| n.is_finite())?;
            Some((key, number))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_lines_are_summed_per_key() {
        let stdout = "starting\n\
                      LOOM_COST: {\"usd\": 0.12, \"tokens\": 3400}\n\
                      working\n\
                      LOOM_COST: {\"usd\": 0.5}\n\
                      STATUS: ok\n";
        let costs = parse_costs(stdout, false);
        assert_eq!(costs.len(), 2);
        assert!((costs["usd"] - 0.62).abs() < 1e-9);
        assert!((costs["tokens"] - 3400.0).abs() < 1e-9);
    }

    #[test]
    fn malformed_cost_lines_are_ignored() {
        let stdout = "LOOM_COST: not json\n\
                      LOOM_COST: [1, 2]\n\
                      LOOM_COST: {\"usd\": \"0.1\"}\n\
                      LOOM_COST: {\"usd\": 1, \"note\": null}\n\
                      LOOM_COST:{\"tokens\":7}\n";
        let costs = parse_costs(stdout, false);
        assert_eq!(costs, BTreeMap::from([("tokens".to_owned(), 7.0)]));
    }

    #[test]
    fn the_partial_first_line_of_a_cut_tail_is_skipped() {
        let stdout = "LOOM_COST: {\"usd\": 1}\nLOOM_COST: {\"usd\": 2}\n";
        assert_eq!(parse_costs(stdout, true)["usd"], 2.0);
        assert_eq!(parse_costs(stdout, false)["usd"], 3.0);
    }

    #[test]
    fn no_cost_lines_no_costs() {
        assert!(parse_costs("STATUS: ok\n", false).is_empty());
        assert!(parse_costs("", true).is_empty());
    }
}
