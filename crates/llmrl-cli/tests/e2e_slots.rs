//! Slot calculations end to end (SPEC §6.1, §7.1, §10): real `llmrl serve` processes on a
//! throwaway Redis, each test starting its fleet with the config preset it needs
//! (`tests/presets/*.toml`) and growing it instance by instance. Every figure asserted here is
//! computed by hand in the preset's comments and again next to the assertion:
//!
//! - a type's part of a limit is `ratio × share`, where the share is the whole limit alone and
//!   `floor(L / n)` in a fleet of n, the `L mod n` remainder units going one each to the
//!   longest-registered instances;
//! - its slots on a model are the minimum over the model's limits of `floor(part / estimate)`;
//! - its slots on the instance are the sum over models, the instance's the sum over types.
//!
//! Nothing is acquired except in the remainder test, so minute windows never matter; the
//! clock runs 30× faster only because the fleet support needs a scale.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use serde_json::Value;
use support::fleet::Fleet;
use support::{instances_of, job_type_entry, limit_figure, preset, ratio_of, slots_of, slots_on};

const SCALE: u32 = 30;
/// How long a fleet may take to agree on its size (the push target is 100 ms).
const SETTLE: Duration = Duration::from_secs(10);

/// Expected slots of one instance: per job type, per model.
type Table<'a> = &'a [(&'a str, &'a [(&'a str, u64)])];

/// Asserts a snapshot's slots: per (type, model), per type (the sum over models) and for the
/// instance (the sum over types).
#[track_caller]
fn assert_table(availability: &Value, who: &str, table: Table<'_>) {
    let mut instance = 0;
    for &(job_type, models) in table {
        let mut total = 0;
        for &(model, slots) in models {
            assert_eq!(
                slots_on(availability, job_type, model),
                slots,
                "{who}: slots of {job_type} on {model} in {availability}"
            );
            total += slots;
        }
        assert_eq!(
            slots_of(availability, job_type),
            total,
            "{who}: slots of {job_type} (sum over models) in {availability}"
        );
        instance += total;
    }
    assert_eq!(
        availability["slots"].as_u64(),
        Some(instance),
        "{who}: instance slots (sum over types) in {availability}"
    );
}

/// Asserts each model's fair share of one limit.
#[track_caller]
fn assert_shares(availability: &Value, who: &str, limit: &str, shares: &[(&str, u64)]) {
    for &(model, share) in shares {
        assert_eq!(
            limit_figure(availability, model, limit, "share"),
            share,
            "{who}: {limit} share of {model}"
        );
        // Nothing is used, so what the instance may take is its whole share.
        assert_eq!(
            limit_figure(availability, model, limit, "available"),
            share,
            "{who}: {limit} available on {model}"
        );
    }
}

/// Asserts each job type's ratio and whether it is flexible.
#[track_caller]
fn assert_ratios(availability: &Value, ratios: &[(&str, f64, bool)]) {
    for &(job_type, ratio, flexible) in ratios {
        let actual = ratio_of(availability, job_type);
        assert!(
            (actual - ratio).abs() < 1e-9,
            "ratio of {job_type} is {actual}, not {ratio}"
        );
        assert_eq!(
            job_type_entry(availability, job_type)["flexible"],
            flexible,
            "flexible of {job_type}"
        );
    }
}

/// The seed's table: A (5 000 tokens) and B (10 000 tokens), 0.5 each, on X (1M TPM) and Y
/// (4M TPM), with 1, 2 and 3 instances.
#[tokio::test]
async fn seed_table_with_one_two_and_three_instances() {
    let mut fleet = Fleet::start(&preset("seed_two_models"), 1, SCALE);

    // One instance: A on X = 0.5 × 1 000 000 / 5 000 = 100, on Y = 0.5 × 4 000 000 / 5 000 =
    // 400; B on X = 0.5 × 1 000 000 / 10 000 = 50, on Y = 0.5 × 4 000 000 / 10 000 = 200.
    let alone = fleet.settle_at(1, SETTLE).await;
    assert_ratios(&alone[0], &[("A", 0.5, true), ("B", 0.5, true)]);
    assert_shares(
        &alone[0],
        "alone",
        "tokens_per_minute",
        &[("X", 1_000_000), ("Y", 4_000_000)],
    );
    assert_table(
        &alone[0],
        "alone",
        &[
            ("A", &[("X", 100), ("Y", 400)]),
            ("B", &[("X", 50), ("Y", 200)]),
        ],
    );

    // Two instances: shares 500 000 and 2 000 000 ⇒ 50 / 200 / 25 / 100 each (the seed's
    // second table: the capacity divided by the instances, then by the ratio).
    fleet.add();
    for (index, availability) in fleet.settle_at(2, SETTLE).await.iter().enumerate() {
        let who = format!("instance {index} of 2");
        assert_shares(
            availability,
            &who,
            "tokens_per_minute",
            &[("X", 500_000), ("Y", 2_000_000)],
        );
        assert_table(
            availability,
            &who,
            &[
                ("A", &[("X", 50), ("Y", 200)]),
                ("B", &[("X", 25), ("Y", 100)]),
            ],
        );
    }

    // Three instances: 1 000 000 = 3 × 333 333 + 1 and 4 000 000 = 3 × 1 333 333 + 1: the
    // oldest instance gets the remainder unit of each. Slots are the same for all three:
    // A on X = floor(166 667 / 5 000) = floor(166 666.5 / 5 000) = 33, A on Y =
    // floor(666 667 / 5 000) = 133, B on X = floor(166 667 / 10 000) = 16, B on Y = 66.
    fleet.add();
    let three = fleet.settle_at(3, SETTLE).await;
    let shares = [
        [("X", 333_334), ("Y", 1_333_334)],
        [("X", 333_333), ("Y", 1_333_333)],
        [("X", 333_333), ("Y", 1_333_333)],
    ];
    for (index, availability) in three.iter().enumerate() {
        let who = format!("instance {index} of 3");
        assert_shares(availability, &who, "tokens_per_minute", &shares[index]);
        assert_table(
            availability,
            &who,
            &[
                ("A", &[("X", 33), ("Y", 133)]),
                ("B", &[("X", 16), ("Y", 66)]),
            ],
        );
    }
    let total_x: u64 = three
        .iter()
        .map(|a| limit_figure(a, "X", "tokens_per_minute", "share"))
        .sum();
    assert_eq!(total_x, 1_000_000, "the shares sum to exactly the limit");
}

/// The seed's stress configuration: five types (one fixed, three sharing the 0.3 left evenly)
/// on three models limited by tokens and requests per minute, alone and in a fleet of five.
#[tokio::test]
async fn five_types_on_three_models_alone_and_five_instances() {
    let mut fleet = Fleet::start(&preset("stress_five_types"), 1, SCALE);
    let alone = fleet.settle_at(1, SETTLE).await;
    // Types without a ratio share 1 − 0.3 − 0.4 = 0.3 evenly: 0.1 each.
    assert_ratios(
        &alone[0],
        &[
            ("Summary", 0.3, true),
            ("VacationPlanning", 0.4, false),
            ("ImageCreation", 0.1, true),
            ("BudgetCalculation", 0.1, true),
            ("WeatherForecast", 0.1, true),
        ],
    );
    // slots = min(floor(ratio × TPM / tokens), floor(ratio × RPM / requests)); ModelA and
    // ModelB: 1 000 000 TPM, 500 RPM; ModelC: 500 000 TPM, 100 RPM.
    //   Summary (0.3, 10 000 t, 1 r):  A min(30, 150) = 30;  C min(15, 30) = 15
    //   Vacation (0.4, 2 000 t, 3 r):  A min(200, 66) = 66;  C min(100, 13) = 13
    //   Image (0.1, 5 000 t, 1 r):     A min(20, 50) = 20;   C min(10, 10) = 10
    //   Budget (0.1, 3 000 t, 5 r):    A min(33, 10) = 10;   C min(16, 2) = 2
    //   Weather (0.1, 1 000 t, 1 r):   A min(100, 50) = 50;  C min(50, 10) = 10
    assert_table(
        &alone[0],
        "alone",
        &[
            ("Summary", &[("ModelA", 30), ("ModelB", 30), ("ModelC", 15)]),
            (
                "VacationPlanning",
                &[("ModelA", 66), ("ModelB", 66), ("ModelC", 13)],
            ),
            (
                "ImageCreation",
                &[("ModelA", 20), ("ModelB", 20), ("ModelC", 10)],
            ),
            (
                "BudgetCalculation",
                &[("ModelA", 10), ("ModelB", 10), ("ModelC", 2)],
            ),
            (
                "WeatherForecast",
                &[("ModelA", 50), ("ModelB", 50), ("ModelC", 10)],
            ),
        ],
    );

    for _ in 1..5 {
        fleet.add();
    }
    // Five instances: shares ModelA/B 200 000 TPM and 100 RPM, ModelC 100 000 TPM, 20 RPM.
    //   Summary:  A min(6, 30) = 6;   C min(3, 6) = 3
    //   Vacation: A min(40, 13) = 13; C min(20, 2) = 2   (0.4 × 20 / 3 = 2.67)
    //   Image:    A min(4, 10) = 4;   C min(2, 2) = 2
    //   Budget:   A min(6, 2) = 2;    C min(3, 0) = 0    (0.1 × 20 / 5 = 0.4)
    //   Weather:  A min(20, 10) = 10; C min(10, 2) = 2
    for (index, availability) in fleet.settle_at(5, SETTLE).await.iter().enumerate() {
        let who = format!("instance {index} of 5");
        assert_shares(
            availability,
            &who,
            "tokens_per_minute",
            &[
                ("ModelA", 200_000),
                ("ModelB", 200_000),
                ("ModelC", 100_000),
            ],
        );
        assert_shares(
            availability,
            &who,
            "requests_per_minute",
            &[("ModelA", 100), ("ModelB", 100), ("ModelC", 20)],
        );
        assert_table(
            availability,
            &who,
            &[
                ("Summary", &[("ModelA", 6), ("ModelB", 6), ("ModelC", 3)]),
                (
                    "VacationPlanning",
                    &[("ModelA", 13), ("ModelB", 13), ("ModelC", 2)],
                ),
                (
                    "ImageCreation",
                    &[("ModelA", 4), ("ModelB", 4), ("ModelC", 2)],
                ),
                (
                    "BudgetCalculation",
                    &[("ModelA", 2), ("ModelB", 2), ("ModelC", 0)],
                ),
                (
                    "WeatherForecast",
                    &[("ModelA", 10), ("ModelB", 10), ("ModelC", 2)],
                ),
            ],
        );
    }
}

/// A model limited by concurrency only: two fixed types, 0.6 and 0.4 of CONC 30.
#[tokio::test]
async fn concurrency_limited_with_one_two_and_three_instances() {
    let mut fleet = Fleet::start(&preset("conc_limited"), 1, SCALE);
    // 1 instance: 0.6 × 30 = 18, 0.4 × 30 = 12; 2: 0.6 × 15 = 9, 0.4 × 15 = 6;
    // 3: 0.6 × 10 = 6, 0.4 × 10 = 4.
    for (instances, share, chat, batch) in [(1, 30, 18, 12), (2, 15, 9, 6), (3, 10, 6, 4)] {
        if instances > 1 {
            fleet.add();
        }
        for (index, availability) in fleet.settle_at(instances, SETTLE).await.iter().enumerate() {
            let who = format!("instance {index} of {instances}");
            assert_ratios(availability, &[("chat", 0.6, false), ("batch", 0.4, false)]);
            assert_shares(availability, &who, "concurrent_requests", &[("m", share)]);
            assert_table(
                availability,
                &who,
                &[("chat", &[("m", chat)]), ("batch", &[("m", batch)])],
            );
        }
    }
}

/// A model limited by requests per minute only: types of 1 and 3 requests, 0.5 each of 120.
#[tokio::test]
async fn requests_limited_with_one_two_and_three_instances() {
    let mut fleet = Fleet::start(&preset("rpm_limited"), 1, SCALE);
    // 1 instance: 60 / 1 = 60, 60 / 3 = 20; 2: 30 / 1 = 30, 30 / 3 = 10;
    // 3: 20 / 1 = 20, floor(20 / 3) = 6. Tokens are estimated but not limited: no bound.
    for (instances, share, single, triple) in [(1, 120, 60, 20), (2, 60, 30, 10), (3, 40, 20, 6)] {
        if instances > 1 {
            fleet.add();
        }
        for (index, availability) in fleet.settle_at(instances, SETTLE).await.iter().enumerate() {
            let who = format!("instance {index} of {instances}");
            assert_shares(availability, &who, "requests_per_minute", &[("r", share)]);
            assert!(
                availability["models"][0]["tokens_per_minute"].is_null(),
                "no token limit is reported as absent: {availability}"
            );
            assert_table(
                availability,
                &who,
                &[("single", &[("r", single)]), ("triple", &[("r", triple)])],
            );
        }
    }
}

/// CONC 8 among 3 instances: shares 3, 3, 2 (the remainder to the two oldest), and those
/// slots are real: each instance admits exactly that many jobs, then answers 429.
#[tokio::test]
async fn remainder_units_go_to_the_oldest_instances_and_are_real() {
    let fleet = Fleet::start(&preset("remainder"), 3, SCALE);
    let snapshots = fleet.settle_at(3, SETTLE).await;
    let expected = [3, 3, 2];
    for (index, availability) in snapshots.iter().enumerate() {
        let who = format!("instance {index} of 3");
        assert_eq!(instances_of(availability), 3);
        assert_shares(
            availability,
            &who,
            "concurrent_requests",
            &[("m", expected[index])],
        );
        assert_table(availability, &who, &[("job", &[("m", expected[index])])]);
    }

    // Every instance takes its slots; the fleet then holds exactly CONC = 8 and nobody admits
    // more (max_wait 0: a refusal is immediate).
    let mut leases = Vec::new();
    for (index, server) in fleet.live() {
        for n in 0..expected[index] {
            let lease = server.lease("job", Some(&format!("r-{index}-{n}"))).await;
            leases.push((index, lease["lease_id"].as_str().unwrap().to_owned()));
        }
        let refused = server.acquire("job", None).await;
        assert_eq!(
            refused.status,
            429,
            "instance {index} admitted beyond its share: {}",
            refused.text()
        );
    }
    for (index, server) in fleet.live() {
        let full = server
            .availability_until(SETTLE, |a| {
                limit_figure(a, "m", "concurrent_requests", "used") == 8
            })
            .await;
        assert_eq!(slots_of(&full, "job"), 0, "instance {index}: {full}");
    }
    for (index, id) in leases {
        let released = fleet
            .server(index)
            .release(&id, &serde_json::json!({"usage": {"input_tokens": 1_000}}))
            .await;
        assert_eq!(released.status, 200, "{}", released.text());
    }
    for (index, server) in fleet.live() {
        server
            .availability_until(SETTLE, |a| slots_of(a, "job") == expected[index])
            .await;
    }
}
