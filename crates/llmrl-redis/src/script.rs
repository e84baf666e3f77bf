//! The Lua scripts, one per atomic operation, and their replies.

use std::sync::OnceLock;

use llmrl::backend::{FleetFigures, FleetView, ModelLimits, RESOURCES, Windows};
use redis::Script;

const COMMON: &str = include_str!("lua/common.lua");

/// The scripts, each prefixed with the shared library. `redis::Script` runs them with EVALSHA
/// and loads them again when the server answers NOSCRIPT (after a restart or SCRIPT FLUSH).
pub(crate) struct Scripts {
    pub(crate) admit: Script,
    pub(crate) settle: Script,
    pub(crate) register: Script,
    pub(crate) sync: Script,
    pub(crate) unregister: Script,
}

pub(crate) fn scripts() -> &'static Scripts {
    static SCRIPTS: OnceLock<Scripts> = OnceLock::new();
    SCRIPTS.get_or_init(|| {
        let with_common = |body: &str| Script::new(&format!("{COMMON}\n{body}"));
        Scripts {
            admit: with_common(include_str!("lua/admit.lua")),
            settle: with_common(include_str!("lua/settle.lua")),
            register: with_common(include_str!("lua/register.lua")),
            sync: with_common(include_str!("lua/sync.lua")),
            unregister: with_common(include_str!("lua/unregister.lua")),
        }
    })
}

/// Limits as script arguments: 5 per model, -1 where there is no such limit.
pub(crate) fn limit_args(limits: &ModelLimits) -> [i64; RESOURCES] {
    limits
        .limits
        .map(|limit| limit.map_or(-1, |l| i64::try_from(l).unwrap_or(i64::MAX)))
}

/// A canonical description of every model's limits: instances of one fleet must agree on it.
pub(crate) fn descriptor(models: &[ModelLimits]) -> String {
    models
        .iter()
        .map(|m| {
            let limits: Vec<String> = limit_args(m).iter().map(i64::to_string).collect();
            format!("{}={}", m.name, limits.join(","))
        })
        .collect::<Vec<_>>()
        .join(";")
}

fn number(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// Reads `models` figures from a reply laid out as `n, minute, day, (share, used, own,
/// others) × 5 × models`, starting at `at`.
pub(crate) fn view(reply: &[i64], at: usize, models: usize) -> Option<FleetView> {
    let head = reply.get(at..at + 3)?;
    let windows = Windows {
        minute: number(head[1]),
        day: number(head[2]),
    };
    let mut figures = Vec::with_capacity(models);
    for m in 0..models {
        let start = at + 3 + m * RESOURCES * 4;
        let cells = reply.get(start..start + RESOURCES * 4)?;
        let pick = |k: usize| std::array::from_fn(|r| number(cells[r * 4 + k]));
        figures.push(FleetFigures::new(
            windows,
            pick(0),
            pick(1),
            pick(2),
            pick(3),
        ));
    }
    Some(FleetView::new(
        u32::try_from(head[0]).unwrap_or(u32::MAX),
        figures,
    ))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn replies_and_descriptors() {
        let models = [ModelLimits::new(
            Arc::from("gpt"),
            [Some(100), None, Some(5), None, Some(2)],
        )];
        assert_eq!(descriptor(&models), "gpt=100,-1,5,-1,2");
        let mut reply = vec![1, 2, 7, 0];
        for r in 0..5i64 {
            reply.extend([10 + r, 20 + r, 30 + r, 40 + r]);
        }
        let view = view(&reply, 1, 1).unwrap_or_default();
        assert_eq!(view.instances, 2);
        assert_eq!(view.models[0].windows.minute, 7);
        assert_eq!(view.models[0].share, [10, 11, 12, 13, 14]);
        assert_eq!(view.models[0].others_unused, [40, 41, 42, 43, 44]);
        assert!(super::view(&[1, 2], 1, 1).is_none());
    }
}
