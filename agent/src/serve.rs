//! Which workers an agent serves.

use loom_config::Config;

/// The workers this agent pulls runs for: `agent.workers` when set,
/// otherwise every worker whose labels the agent serves (all of them with
/// `all_labels`, as `loom up` does).
pub fn served_workers(config: &Config, all_labels: bool) -> Vec<String> {
    if !config.agent.workers.is_empty() {
        return config.agent.workers.clone();
    }
    config
        .registry
        .workers()
        .filter(|worker| {
            all_labels
                || worker
                    .labels
                    .iter()
                    .all(|label| config.agent.labels.contains(label))
        })
        .map(|worker| worker.name.to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(agent: &str) -> Config {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("loom.toml");
        std::fs::write(
            &file,
            format!(
                "{agent}\n[workers.plain]\ncommand = [\"true\"]\n[workers.media]\ncommand = [\"true\"]\nlabels = [\"media\"]\n[workers.gpu-media]\ncommand = [\"true\"]\nlabels = [\"media\", \"gpu\"]\n"
            ),
        )
        .expect("write");
        loom_config::Loader::new(Some(file))
            .with_env(Vec::<(String, String)>::new())
            .load()
            .expect("config")
    }

    #[test]
    fn labels_choose_the_workers() {
        assert_eq!(served_workers(&config(""), false), ["plain"]);
        assert_eq!(
            served_workers(&config("[agent]\nlabels = [\"media\"]"), false),
            ["media", "plain"]
        );
        assert_eq!(
            served_workers(&config("[agent]\nlabels = [\"media\", \"gpu\"]"), false),
            ["gpu-media", "media", "plain"]
        );
        assert_eq!(
            served_workers(&config(""), true),
            ["gpu-media", "media", "plain"]
        );
    }

    #[test]
    fn an_explicit_list_wins() {
        assert_eq!(
            served_workers(&config("[agent]\nworkers = [\"media\"]"), false),
            ["media"]
        );
    }
}
