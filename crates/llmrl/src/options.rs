//! Settings both builders share, and the builder methods that set them.

use std::sync::Arc;

use crate::availability::Availability;
use crate::backend::{Backend, DynBackend};
use crate::clock::Clock;
use crate::config::{Config, Spec};
use crate::core::{Core, SlotsHookFactory};
use crate::engine::Engine;
use crate::error::BuildError;
use crate::event::Listener;
use crate::fleet::FleetOptions;
use crate::notify::{RelativeAdjustment, SlotsCallback, SlotsChangeReason, SlotsHook};

/// Settings both builders share.
#[derive(Default)]
pub(crate) struct Options {
    pub(crate) clock: Option<Clock>,
    pub(crate) listener: Option<Listener>,
    pub(crate) slots_hook: Option<SlotsHookFactory>,
    pub(crate) fleet: Option<FleetOptions>,
}

impl Options {
    pub(crate) fn start(self, config: &Config) -> Result<Arc<Core>, BuildError> {
        let validated = config.validate()?;
        Core::start(
            validated.spec,
            self.clock.unwrap_or_else(Clock::system),
            self.listener,
            self.slots_hook,
            self.fleet,
        )
    }

    pub(crate) fn backend(&mut self, backend: impl Backend) {
        let backend: Arc<dyn DynBackend> = Arc::new(backend);
        match &mut self.fleet {
            Some(fleet) => fleet.backend = backend,
            None => self.fleet = Some(FleetOptions::new(backend)),
        }
    }

    /// Changes the fleet settings; without a backend they have nothing to apply to.
    pub(crate) fn fleet_setting(&mut self, set: impl FnOnce(&mut FleetOptions)) {
        if let Some(fleet) = &mut self.fleet {
            set(fleet);
        }
    }

    /// Wraps the user's callback: changes are recorded under the engine lock, with snapshots
    /// built by `snapshot` (made from the validated spec, naming models and job types the face's
    /// way) and updated in place afterwards, and delivered after the lock is released.
    pub(crate) fn slots_callback<M, J, S>(
        &mut self,
        callback: impl Fn(&Availability<M, J>, SlotsChangeReason, Option<&RelativeAdjustment>)
        + Send
        + Sync
        + 'static,
        snapshot: impl FnOnce(&Spec) -> S + Send + 'static,
    ) where
        M: Send + 'static,
        J: Send + 'static,
        S: Fn(&Engine) -> Availability<M, J> + Send + Sync + 'static,
    {
        self.slots_hook = Some(Box::new(move |spec: &Spec| {
            Box::new(SlotsCallback::new(callback, snapshot(spec))) as Box<dyn SlotsHook>
        }));
    }
}

/// The builder methods of [`Options`], the same on both builders (`self.options` is the
/// builder's `Options`).
macro_rules! setters {
    () => {
        /// The clock (default: [`Clock::system`](crate::Clock::system)); use
        /// [`Clock::virtual_at`](crate::Clock::virtual_at) in tests.
        pub fn clock(mut self, clock: crate::Clock) -> Self {
            self.options.clock = Some(clock);
            self
        }

        /// Listens to the limiter's [`Event`](crate::Event)s.
        pub fn on_event(
            mut self,
            listener: impl Fn(&crate::Event) + Send + Sync + 'static,
        ) -> Self {
            self.options.listener = Some(std::sync::Arc::new(listener));
            self
        }

        /// Joins a fleet: the instances sharing `backend` stay, together, inside the models'
        /// limits (SPEC §7). Without it the limiter is alone (its own fleet of one, with no
        /// backend calls).
        pub fn backend(mut self, backend: impl crate::backend::Backend) -> Self {
            self.options.backend(backend);
            self
        }

        /// What to do while the fleet backend is unreachable (default
        /// [`FailureMode::LastKnownShare`](crate::FailureMode::LastKnownShare)). Call after
        /// `backend`.
        pub fn failure_mode(mut self, mode: crate::FailureMode) -> Self {
            self.options
                .fleet_setting(|fleet| fleet.failure_mode = Some(mode));
            self
        }

        /// How often the instance tells the fleet it is alive and refreshes its figures
        /// (default 5 s). Call after `backend`.
        pub fn heartbeat_interval(mut self, every: std::time::Duration) -> Self {
            self.options
                .fleet_setting(|fleet| fleet.heartbeat = Some(every));
            self
        }

        /// How long any backend call may take before it counts as failed (default 1 s). Call
        /// after `backend`.
        pub fn backend_timeout(mut self, timeout: std::time::Duration) -> Self {
            self.options
                .fleet_setting(|fleet| fleet.timeout = Some(timeout));
            self
        }
    };
}

pub(crate) use setters;
