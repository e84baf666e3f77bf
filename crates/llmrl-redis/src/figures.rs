//! The fleet's figures as the Lua library replies them, and the limits it is called with.

use llmrl::backend::{FleetFigures, ModelLimits, RESOURCES, Windows, fair_share};

/// One model's limits as the library takes them: a model number and five limits (-1: none).
#[derive(Clone, Debug)]
pub(crate) struct Model {
    pub(crate) limits: [Option<u64>; RESOURCES],
}

impl Model {
    pub(crate) fn new(limits: &ModelLimits) -> Self {
        Self {
            limits: limits.limits,
        }
    }

    /// The limits as arguments: -1 where there is none.
    pub(crate) fn limit_args(&self) -> [i64; RESOURCES] {
        self.limits
            .map(|limit| limit.map_or(-1, |l| i64::try_from(l).unwrap_or(i64::MAX)))
    }

    /// How many numbers the figures of this model take in a reply.
    fn width(&self) -> usize {
        HEAD + 3 * self.limits.iter().filter(|l| l.is_some()).count()
    }
}

/// What an instance registered with: its models' limits, and for each model the
/// "shape" of its calls (`<model>\n<limits>\n<id>`), which the library keeps parsed between
/// calls.
#[derive(Debug)]
pub(crate) struct Registration {
    pub(crate) models: Vec<Model>,
    pub(crate) shapes: Vec<String>,
    /// A canonical description of every model's limits: the fleet's members must agree on it.
    pub(crate) descriptor: String,
}

impl Registration {
    pub(crate) fn new(instance: &str, models: &[ModelLimits]) -> Self {
        let models: Vec<Model> = models.iter().map(Model::new).collect();
        let limits = |m: &Model| {
            m.limit_args()
                .iter()
                .map(i64::to_string)
                .collect::<Vec<_>>()
                .join(",")
        };
        let shapes = models
            .iter()
            .enumerate()
            .map(|(i, m)| format!("{i}\n{}\n{instance}", limits(m)))
            .collect();
        Self {
            descriptor: descriptor(&models),
            models,
            shapes,
        }
    }
}

/// Every model's limits, in order: `m0=L0,L1,L2,L3,L4;m1=…` with model numbers, so that two
/// fleets agree exactly when their limits do, model by model.
fn descriptor(models: &[Model]) -> String {
    models
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let limits: Vec<String> = m.limit_args().iter().map(i64::to_string).collect();
            format!("{i}={}", limits.join(","))
        })
        .collect::<Vec<_>>()
        .join(";")
}

/// n, N, rank, minute, day, version.
const HEAD: usize = 6;

/// One model's figures from a reply, and the fleet's size.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Read {
    /// Live members.
    pub(crate) members: u32,
    /// What shares divide by: the members, or more while a restarted fleet waits for those
    /// that were there before.
    pub(crate) divisor: u32,
    /// Whether the fleet knows this member.
    pub(crate) registered: bool,
    pub(crate) figures: FleetFigures,
}

fn number(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// Reads one model's figures at `reply[*at..]` (`n, N, rank, minute, day, version`, then
/// `used, own, Σ unused shares` per resource with a limit) and moves `at` past them.
pub(crate) fn read(reply: &[i64], at: &mut usize, model: &Model) -> Option<Read> {
    let cells = reply.get(*at..*at + model.width())?;
    *at += model.width();
    let divisor = number(cells[1]);
    let rank = cells[2];
    let windows = Windows {
        minute: number(cells[3]),
        day: number(cells[4]),
    };
    let (mut share, mut used, mut own, mut others) = (
        [0; RESOURCES],
        [0; RESOURCES],
        [0; RESOURCES],
        [0; RESOURCES],
    );
    let mut i = HEAD;
    for (r, limit) in model.limits.iter().enumerate() {
        let Some(limit) = *limit else { continue };
        share[r] = fair_share::share(limit, divisor, number(rank));
        used[r] = number(cells[i]);
        own[r] = number(cells[i + 1]);
        let unused_sum = number(cells[i + 2]);
        others[r] = unused_sum.saturating_sub(fair_share::unused(share[r], own[r]));
        i += 3;
    }
    Some(Read {
        members: u32::try_from(number(cells[0])).unwrap_or(u32::MAX),
        divisor: u32::try_from(divisor).unwrap_or(u32::MAX),
        registered: rank >= 0,
        figures: FleetFigures::new(windows, share, used, own, others)
            .with_version(number(cells[5])),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn shapes_descriptors_and_figures() {
        let models = [ModelLimits::new(
            Arc::from("gpt"),
            [Some(100), None, Some(5), None, Some(2)],
        )];
        let registration = Registration::new("a", &models);
        assert_eq!(registration.descriptor, "0=100,-1,5,-1,2");
        assert_eq!(registration.shapes, ["0\n100,-1,5,-1,2\na"]);
        // Two members, this one second (rank 1): shares 50, 2 (5 = 3 + 2), 1.
        let reply = [7, 2, 2, 1, 29, 0, 42, 60, 10, 45, 3, 1, 4, 1, 0, 1];
        let mut at = 1;
        let read = read(&reply, &mut at, &registration.models[0]).unwrap_or_default();
        assert_eq!(at, reply.len());
        assert_eq!((read.members, read.divisor, read.registered), (2, 2, true));
        let f = read.figures;
        assert_eq!(f.windows, Windows { minute: 29, day: 0 });
        assert_eq!(f.version, 42);
        assert_eq!(f.share, [50, 0, 2, 0, 1]);
        assert_eq!(f.used, [60, 0, 3, 0, 1]);
        assert_eq!(f.own, [10, 0, 1, 0, 0]);
        // Σ unused minus this member's own unused part.
        assert_eq!(f.others_unused, [5, 0, 3, 0, 0]);
        assert!(super::read(&reply, &mut at, &registration.models[0]).is_none());
    }
}
