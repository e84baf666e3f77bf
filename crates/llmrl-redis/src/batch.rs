//! One instance's calls to Redis, in the order they were made, by one task: admissions and
//! settlements that arrive while a call is in flight go together in the next one (group
//! commit). Redis then reads and writes each of the fleet's hashes once for all of them; each
//! operation still takes one round trip, and replies carry the figures after the batch.
//! Membership calls (register, sync, unregister) go alone, in their place in the order.

use std::collections::HashMap;
use std::sync::Weak;

use llmrl::Timestamp;
use llmrl::backend::{
    AdmitReply, BackendError, FleetFigures, Settlement, SettlementOutcome, Windows,
};
use redis::{Cmd, Value};
use tokio::sync::{mpsc, oneshot, watch};

use crate::backend::Inner;
use crate::config::WindowClock;
use crate::figures::{self, Registration};
use crate::library::Entry;

/// The most operations in one call.
const MOST: usize = 256;

/// An admission waiting for its batch.
pub(crate) struct Admit {
    pub(crate) model: usize,
    pub(crate) estimates: [u64; 4],
    pub(crate) now: Timestamp,
    pub(crate) reply: oneshot::Sender<Result<AdmitReply, BackendError>>,
}

/// A settlement waiting for its batch.
pub(crate) struct Settle {
    pub(crate) settlement: Settlement,
    /// The registration it follows (see `settle_one` in the library).
    pub(crate) generation: u64,
    /// `None`: a reservation given back because nobody received its admission.
    pub(crate) reply: Option<oneshot::Sender<Result<FleetFigures, BackendError>>>,
}

/// A membership call.
pub(crate) struct Control {
    pub(crate) entry: Entry,
    pub(crate) args: Box<dyn Fn(&mut Cmd) + Send + Sync>,
    pub(crate) reply: oneshot::Sender<Result<Vec<i64>, BackendError>>,
}

pub(crate) enum Op {
    Admit(Admit),
    Settle(Settle),
    Control(Control),
}

impl Op {
    /// The instance's time of an operation that goes in a batch (`None` for a control call).
    fn now(&self) -> Option<Timestamp> {
        match self {
            Self::Admit(admit) => Some(admit.now),
            Self::Settle(settle) => Some(settle.settlement.now),
            Self::Control(_) => None,
        }
    }
}

/// Replies as integers (what every entry point returns).
pub(crate) fn integers(value: Value) -> Option<Vec<i64>> {
    match value {
        Value::Array(items) => items
            .into_iter()
            .map(|item| match item {
                Value::Int(i) => Some(i),
                _ => None,
            })
            .collect(),
        Value::Int(i) => Some(vec![i]),
        _ => None,
    }
}

pub(crate) fn malformed(entry: &str) -> BackendError {
    BackendError::Protocol(format!("malformed reply from llmrl's {entry} function"))
}

/// Runs an instance's calls until `stop` or until its backend is gone.
pub(crate) async fn run(
    inner: Weak<Inner>,
    mut queue: mpsc::UnboundedReceiver<Op>,
    mut stop: watch::Receiver<bool>,
) {
    let mut held: Option<Op> = None;
    let mut give_back: Vec<Settle> = Vec::new();
    let mut texts = Estimates::default();
    loop {
        let first = match held.take() {
            Some(op) => op,
            None => match give_back.pop() {
                Some(settle) => Op::Settle(settle),
                None => tokio::select! {
                    biased;
                    _ = stop.wait_for(|stop| *stop) => return,
                    op = queue.recv() => match op {
                        Some(op) => op,
                        None => return,
                    },
                },
            },
        };
        let Some(inner) = inner.upgrade() else { return };
        let ops = match first {
            Op::Control(control) => {
                let result = control_call(&inner, &control).await;
                let _ = control.reply.send(result);
                continue;
            }
            op => {
                // Everything that queued up meanwhile, up to a control call (it keeps its
                // place) or, on the client's clock, an operation at another time.
                let same_time = inner.config.window_clock == WindowClock::Client;
                let now = op.now();
                let mut ops = vec![op];
                while ops.len() < MOST {
                    let next = match give_back.pop() {
                        Some(settle) => Op::Settle(settle),
                        None => match queue.try_recv() {
                            Ok(op) => op,
                            Err(_) => break,
                        },
                    };
                    if next.now().is_none() || (same_time && next.now() != now) {
                        held = Some(next);
                        break;
                    }
                    ops.push(next);
                }
                ops
            }
        };
        run_batch(&inner, ops, &mut give_back, &mut texts).await;
    }
}

async fn control_call(inner: &Inner, control: &Control) -> Result<Vec<i64>, BackendError> {
    let mut connection = inner.connection().await?;
    let value = inner
        .runner
        .call(&mut connection, control.entry, &inner.key, |cmd| {
            (control.args)(cmd);
        })
        .await
        .map_err(|error| inner.error(&error))?;
    integers(value).ok_or_else(|| malformed("membership"))
}

/// Estimates as the library takes them, `e0,e1,e2,e3`, made once per job type.
#[derive(Default)]
struct Estimates(HashMap<[u64; 4], String>);

impl Estimates {
    fn text(&mut self, estimates: [u64; 4]) -> &str {
        if self.0.len() > 1024 {
            self.0.clear();
        }
        self.0.entry(estimates).or_insert_with(|| {
            let [a, b, c, d] = estimates;
            format!("{a},{b},{c},{d}")
        })
    }
}

fn outcome(settlement: &Settlement) -> (&'static str, [u64; 4]) {
    match settlement.outcome {
        SettlementOutcome::Used(actual) => ("u", actual),
        SettlementOutcome::NeverStarted => ("n", [0; 4]),
        _ => ("x", [0; 4]),
    }
}

async fn run_batch(
    inner: &Inner,
    ops: Vec<Op>,
    give_back: &mut Vec<Settle>,
    texts: &mut Estimates,
) {
    // An admission nobody waits for any more is not made.
    let ops: Vec<Op> = ops
        .into_iter()
        .filter(|op| !matches!(op, Op::Admit(admit) if admit.reply.is_closed()))
        .collect();
    if ops.is_empty() {
        return;
    }
    let Some(registration) = inner.registration() else {
        fail(ops, &BackendError::NotRegistered);
        return;
    };
    // The models the batch concerns, each passed once: (model, number in the call).
    let mut shapes: Vec<usize> = Vec::new();
    let mut numbers: Vec<usize> = Vec::with_capacity(ops.len());
    for op in &ops {
        let model = match op {
            Op::Admit(admit) => admit.model,
            Op::Settle(settle) => settle.settlement.model,
            Op::Control(_) => 0,
        };
        if model >= registration.models.len() {
            fail(
                ops,
                &BackendError::Protocol(format!("no model number {model}")),
            );
            return;
        }
        let number = match shapes.iter().position(|&m| m == model) {
            Some(i) => i,
            None => {
                shapes.push(model);
                shapes.len() - 1
            }
        };
        numbers.push(number + 1);
    }
    for op in &ops {
        if let Op::Admit(Admit { estimates, .. })
        | Op::Settle(Settle {
            settlement: Settlement { estimates, .. },
            ..
        }) = op
        {
            texts.text(*estimates);
        }
    }
    let now = match inner.config.window_clock {
        WindowClock::Server => None,
        WindowClock::Client => ops.first().and_then(Op::now),
    };
    let args = |cmd: &mut Cmd| {
        match now {
            Some(now) => cmd.arg(now.as_millis()),
            None => cmd.arg(""),
        };
        cmd.arg(shapes.len());
        for &model in &shapes {
            cmd.arg(&registration.shapes[model]);
        }
        for (op, number) in ops.iter().zip(&numbers) {
            match op {
                Op::Admit(admit) => {
                    cmd.arg("a")
                        .arg(*number)
                        .arg(texts.0.get(&admit.estimates).map_or("", String::as_str));
                }
                Op::Settle(settle) => {
                    let s = &settle.settlement;
                    let (outcome, actual) = outcome(s);
                    cmd.arg("s")
                        .arg(*number)
                        .arg(settle.generation)
                        .arg(s.reserved_in.minute)
                        .arg(s.reserved_in.day)
                        .arg(outcome)
                        .arg(texts.0.get(&s.estimates).map_or("", String::as_str))
                        .arg(&actual[..]);
                }
                Op::Control(_) => {}
            }
        }
    };
    let reply = match inner.connection().await {
        Ok(mut connection) => inner
            .runner
            .call(&mut connection, Entry::Batch, &inner.key, args)
            .await
            .map_err(|error| inner.error(&error))
            .and_then(|value| integers(value).ok_or_else(|| malformed("batch"))),
        Err(error) => Err(error),
    };
    let reply = match reply {
        Ok(reply) => reply,
        Err(error) => {
            fail(ops, &error);
            return;
        }
    };
    deliver(inner, &registration, ops, &shapes, &reply, give_back);
}

fn fail(ops: Vec<Op>, error: &BackendError) {
    for op in ops {
        match op {
            Op::Admit(admit) => {
                let _ = admit.reply.send(Err(error.clone()));
            }
            Op::Settle(Settle {
                reply: Some(reply), ..
            }) => {
                let _ = reply.send(Err(error.clone()));
            }
            Op::Settle(_) => {}
            Op::Control(control) => {
                let _ = control.reply.send(Err(error.clone()));
            }
        }
    }
}

fn deliver(
    inner: &Inner,
    registration: &Registration,
    ops: Vec<Op>,
    shapes: &[usize],
    reply: &[i64],
    give_back: &mut Vec<Settle>,
) {
    let count = ops.len();
    let mut at = count;
    let mut reads = Vec::with_capacity(shapes.len());
    for &model in shapes {
        match figures::read(reply, &mut at, &registration.models[model]) {
            Some(read) => reads.push(read),
            None => {
                fail(ops, &malformed("batch"));
                return;
            }
        }
    }
    if let Some(read) = reads.iter().find(|read| read.registered) {
        inner.saw_members(read.members);
    }
    let shape_of = |model: usize| shapes.iter().position(|&m| m == model).unwrap_or(0);
    let mut changed = false;
    for (op, &status) in ops.into_iter().zip(&reply[..count]) {
        match op {
            Op::Admit(admit) => {
                let read = reads[shape_of(admit.model)];
                let answer = if status < 0 {
                    Err(BackendError::NotRegistered)
                } else {
                    changed |= status == 1;
                    Ok(AdmitReply::new(status == 1, read.divisor, read.figures))
                };
                if let Err(Ok(reply)) = admit.reply.send(answer) {
                    // The caller gave up (a timeout, a cancelled job) while its admission was
                    // on its way: give the reservation back.
                    if reply.admitted {
                        give_back.push(inner.give_back(
                            admit.model,
                            admit.estimates,
                            read.figures.windows,
                            admit.now,
                        ));
                    }
                }
            }
            Op::Settle(settle) => {
                let read = reads[shape_of(settle.settlement.model)];
                changed = true;
                if let Some(reply) = settle.reply {
                    let _ = reply.send(if status < 0 {
                        Err(BackendError::NotRegistered)
                    } else {
                        Ok(read.figures)
                    });
                }
            }
            Op::Control(_) => {}
        }
    }
    if changed {
        inner.usage_changed();
    }
}

/// A settlement that returns a whole reservation, nobody waiting for its answer.
pub(crate) fn never_started(
    model: usize,
    estimates: [u64; 4],
    reserved_in: Windows,
    now: Timestamp,
    generation: u64,
) -> Settle {
    Settle {
        settlement: Settlement::new(
            model,
            reserved_in,
            estimates,
            SettlementOutcome::NeverStarted,
            now,
        ),
        generation,
        reply: None,
    }
}
