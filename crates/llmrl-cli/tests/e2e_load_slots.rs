//! Slots evolving with load, end to end (SPEC §4.2, §6.1, §7.1): two `llmrl serve` instances on
//! a throwaway Redis with the `load_two_types` preset — chat and batch, 10 000 tokens each, fixed
//! 0.5 ratios, on a model of 200 000 TPM and 20 concurrent requests. Each instance's share is
//! 100 000 TPM and 10 concurrent requests, so each type has
//! `min(0.5 × 100 000 / 10 000, 0.5 × 10 / 1) = 5` slots on each instance.
//!
//! - Held leases (acquired, not released) lower the holder's slots of that type one by one and
//!   nobody else's while every instance is below its share; releasing restores them.
//! - Usage above the estimate lowers what is left until the minute ends, a refund gives some
//!   back, the next minute restores everything; an instance pushed past its share by its own
//!   overage shrinks the others' parts of what the fleet has left.
//!
//! Every snapshot checked is one whose fleet-wide `used` figure is the expected one: a fleet
//! view an instance asked Redis for before its own last settlement may be applied after that
//! settlement's fresher one, and show the instance, briefly, a fleet that still holds the
//! units it just released (see `slots_at`).
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::fleet::Fleet;
use support::{Server, limit_figure, preset, slots_of};

/// How long a change may take to reach another instance (the push target is 100 ms).
const PROPAGATION: Duration = Duration::from_secs(5);
const MINUTE_MS: u64 = 60_000;

/// Releases lease `id` with `tokens` of input and one request.
async fn release(server: &Server, id: &str, tokens: u64) {
    let body = json!({"usage": {"input_tokens": tokens, "requests": 1}, "outcome": "done"});
    let released = server.release(id, &body).await;
    assert_eq!(released.status, 200, "release: {}", released.text());
}

/// Acquires a chat lease on `server`; its id.
async fn chat_lease(server: &Server, job: &str) -> String {
    let lease = server.lease("chat", Some(job)).await;
    lease["lease_id"].as_str().unwrap().to_owned()
}

/// `server`'s availability once its view of the fleet's `limit` usage is `used`.
async fn slots_at(server: &Server, limit: &str, used: u64) -> Value {
    server
        .availability_at_used("m", limit, used, PROPAGATION)
        .await
}

#[track_caller]
fn assert_slots(availability: &Value, who: &str, chat: u64, batch: u64) {
    assert_eq!(
        (
            slots_of(availability, "chat"),
            slots_of(availability, "batch")
        ),
        (chat, batch),
        "{who}: (chat, batch) slots in {availability}"
    );
}

/// Held leases lower the holder's slots only; releasing them gives the slots back.
#[tokio::test]
async fn held_leases_lower_the_holders_slots_and_releases_restore_them() {
    // Held leases count against concurrency, which has no window: the minute rolling over
    // (every 2 s of wall time at 30×) changes nothing here.
    let fleet = Fleet::start(&preset("load_two_types"), 2, 30);
    for (index, availability) in fleet.settle_at(2, PROPAGATION).await.iter().enumerate() {
        assert_slots(availability, &format!("instance {index} at rest"), 5, 5);
    }
    let (holder, other) = (fleet.server(0), fleet.server(1));

    // Load rises: chat part on the holder = 0.5 × 10 − k in flight = 5 − k. Batch keeps its 5:
    // the holder may still take 10 − k units, exactly chat's 5 − k plus batch's 5. The other
    // instance's share is untouched (the fleet has 20 − k left, the unused shares sum to
    // 10 − k + 10), so it keeps 5 and 5 while it sees the fleet's in-flight count grow.
    let mut held = Vec::new();
    for k in 1..=5 {
        held.push(chat_lease(holder, &format!("held-{k}")).await);
        let mine = slots_at(holder, "concurrent_requests", k).await;
        assert_slots(&mine, &format!("holder with {k} held"), 5 - k, 5);
        assert_eq!(limit_figure(&mine, "m", "concurrent_requests", "own"), k);
        let theirs = slots_at(other, "concurrent_requests", k).await;
        assert_slots(&theirs, &format!("other with {k} held elsewhere"), 5, 5);
        assert_eq!(
            limit_figure(&theirs, "m", "concurrent_requests", "available"),
            10
        );
    }

    // The holder's chat part is used up (max_wait 0: refused at once); its batch part and the
    // other instance's chat part are intact. (Releases below report no tokens: see below.)
    let refused = holder.acquire("chat", Some("one-too-many")).await;
    assert_eq!(refused.status, 429, "{}", refused.text());
    let batch = holder.lease("batch", Some("batch-while-full")).await;
    let mine = slots_at(holder, "concurrent_requests", 6).await;
    assert_slots(&mine, "holder with a batch", 0, 4);
    release(holder, batch["lease_id"].as_str().unwrap(), 0).await;
    let elsewhere = chat_lease(other, "chat-elsewhere").await;
    let theirs = slots_at(other, "concurrent_requests", 6).await;
    assert_slots(&theirs, "other with one chat", 4, 5);
    release(other, &elsewhere, 0).await;
    let theirs = slots_at(other, "concurrent_requests", 5).await;
    assert_slots(&theirs, "other released", 5, 5);

    // Load falls: each release gives one chat slot back. The jobs report no tokens (they used
    // none, say), so the minute's token counter keeps nothing of them (a refund of the
    // estimate in the same minute, nothing to charge in a later one): only load is measured.
    for (n, id) in held.iter().enumerate() {
        release(holder, id, 0).await;
        let back = n as u64 + 1;
        let mine = slots_at(holder, "concurrent_requests", 5 - back).await;
        assert_slots(&mine, &format!("holder after {back} released"), back, 5);
        let theirs = slots_at(other, "concurrent_requests", 5 - back).await;
        assert_slots(&theirs, &format!("other after {back} released"), 5, 5);
    }
    assert_eq!(holder.stats().await["leases_active"], 0);
}

/// Sleeps, if needed, into a minute with at least `room_ms` of the shared clock left; that
/// minute's end.
async fn minute_with_room(fleet: &Fleet, room_ms: u64) -> u64 {
    let now = fleet.logical_ms();
    let end = (now / MINUTE_MS + 1) * MINUTE_MS;
    if end - now >= room_ms {
        return end;
    }
    fleet.sleep_until(end + 500).await;
    end + MINUTE_MS
}

/// Samples `server` until the shared clock reaches `end`: every answer given entirely before
/// `end` must satisfy `holds`. Returns how many such answers there were.
async fn holds_until(
    fleet: &Fleet,
    server: &Server,
    end: u64,
    who: &str,
    holds: impl Fn(&Value) -> bool,
) -> usize {
    let mut checked = 0;
    loop {
        let availability = server.availability().await;
        if fleet.logical_ms() >= end {
            return checked;
        }
        assert!(
            holds(&availability),
            "{who} before the minute ended: {availability}"
        );
        checked += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Usage above the estimate lowers what is left until the next minute; a refund gives part of
/// it back; an instance over its share shrinks the others' parts until the next minute.
#[tokio::test]
async fn overage_lowers_slots_until_the_next_minute() {
    // 20×: a minute lasts 3 s of wall time, plenty for a few requests of a few ms.
    let fleet = Fleet::start(&preset("load_two_types"), 2, 20);
    fleet.settle_at(2, PROPAGATION).await;
    let (spender, other) = (fleet.server(0), fleet.server(1));

    // Minute 1, within one window. Two chat leases: 20 000 tokens reserved, 3 chat slots.
    let end = minute_with_room(&fleet, 40_000).await;
    let first = chat_lease(spender, "first").await;
    let second = chat_lease(spender, "second").await;
    let held = slots_at(spender, "tokens_per_minute", 20_000).await;
    assert_slots(&held, "two held", 3, 5);
    // The first used 40 000 tokens: 30 000 more than reserved ⇒ chat has used 50 000 of its
    // 0.5 × 100 000: no token slot left although nothing of chat runs but the second.
    release(spender, &first, 40_000).await;
    let over = slots_at(spender, "tokens_per_minute", 50_000).await;
    assert_slots(&over, "after an overage", 0, 5);
    assert_eq!(limit_figure(&over, "m", "tokens_per_minute", "own"), 50_000);
    let refused = spender.acquire("chat", Some("refused")).await;
    assert_eq!(refused.status, 429, "{}", refused.text());
    // The second used nothing: its 10 000 are refunded ⇒ 40 000 used ⇒ 1 chat slot. Batch
    // keeps its 5: the spender may still take 100 000 − 40 000 = 60 000 ≥ 10 000 + 50 000.
    release(spender, &second, 0).await;
    let refunded = slots_at(spender, "tokens_per_minute", 40_000).await;
    assert!(
        fleet.logical_ms() < end,
        "the minute ended too early to check"
    );
    assert_slots(&refunded, "after a refund", 1, 5);
    assert_eq!(
        limit_figure(&refunded, "m", "tokens_per_minute", "available"),
        60_000
    );
    // The other instance sees the fleet's 40 000 used but keeps its whole share: 5 and 5.
    let theirs = slots_at(other, "tokens_per_minute", 40_000).await;
    assert_slots(&theirs, "other during the overage", 5, 5);
    assert_eq!(
        limit_figure(&theirs, "m", "tokens_per_minute", "available"),
        100_000
    );
    // It stays so until the minute ends ...
    let checked = holds_until(&fleet, spender, end, "spender", |a| {
        slots_of(a, "chat") == 1 && slots_of(a, "batch") == 5
    })
    .await;
    assert!(checked > 0, "no sample before the minute ended");
    // ... and the next minute starts from nothing used.
    let restored = spender
        .availability_until(PROPAGATION, |a| slots_of(a, "chat") == 5)
        .await;
    assert_slots(&restored, "next minute", 5, 5);
    assert_eq!(limit_figure(&restored, "m", "tokens_per_minute", "used"), 0);
    assert!(fleet.logical_ms() >= end);

    // Minute 2: one job of the spender used 150 000 tokens, past its 100 000 share. Its part is
    // gone (unused share 0); the other may take only what the fleet has left, 50 000
    // (unused share 100 000 × min(1, 50 000 / 100 000)): chat's and batch's parts of 50 000
    // each scale to 25 000, 2 slots each, and the 10 000 the flooring leaves is one more job
    // for one of them (largest remainder, a tie): 5 slots between them.
    let end = minute_with_room(&fleet, 40_000).await;
    let big = chat_lease(spender, "big").await;
    release(spender, &big, 150_000).await;
    let spent = slots_at(spender, "tokens_per_minute", 150_000).await;
    assert_slots(&spent, "spender over its share", 0, 0);
    assert_eq!(
        limit_figure(&spent, "m", "tokens_per_minute", "available"),
        0
    );
    let squeezed = slots_at(other, "tokens_per_minute", 150_000).await;
    assert!(
        fleet.logical_ms() < end,
        "the minute ended too early to check"
    );
    assert_eq!(
        limit_figure(&squeezed, "m", "tokens_per_minute", "available"),
        50_000
    );
    let (chat, batch) = (slots_of(&squeezed, "chat"), slots_of(&squeezed, "batch"));
    assert_eq!(chat + batch, 5, "other squeezed: {squeezed}");
    assert!((2..=3).contains(&chat), "other squeezed: {squeezed}");
    holds_until(&fleet, other, end, "other", |a| {
        slots_of(a, "chat") + slots_of(a, "batch") == 5
    })
    .await;
    for server in [spender, other] {
        let restored = server
            .availability_until(PROPAGATION, |a| {
                slots_of(a, "chat") == 5 && slots_of(a, "batch") == 5
            })
            .await;
        assert_eq!(limit_figure(&restored, "m", "tokens_per_minute", "used"), 0);
    }
}
