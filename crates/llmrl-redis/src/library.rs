//! The Lua library (`lua/fleet.lua`), one entry point per atomic operation, and how it runs:
//! as a Redis Functions library (`FCALL`, Redis 7 and Valkey), which keeps what it parsed
//! between calls, or as scripts (`EVALSHA`). Either way it is loaded again whenever the server
//! answers that it lacks it (a restart, a flush of functions or scripts), and a server without
//! functions gets the scripts.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use redis::aio::ConnectionManager;
use redis::{Cmd, ErrorKind, RedisError, RedisResult, ServerErrorKind, Value};

const SOURCE: &str = include_str!("lua/fleet.lua");

/// The library's entry points.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Entry {
    /// Admissions and settlements of one instance.
    Batch,
    Register,
    Sync,
    Unregister,
}

impl Entry {
    const ALL: [Self; 4] = [Self::Batch, Self::Register, Self::Sync, Self::Unregister];

    const fn lua(self) -> &'static str {
        match self {
            Self::Batch => "batch",
            Self::Register => "register",
            Self::Sync => "sync",
            Self::Unregister => "unregister",
        }
    }

    const fn index(self) -> usize {
        self as usize
    }
}

/// How the library runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum LuaMode {
    /// A Redis Functions library (`FUNCTION LOAD`, `FCALL`; Redis 7 or Valkey), the default.
    /// A server without functions (or a user not allowed to load them) gets scripts instead.
    #[default]
    Function,
    /// Scripts run with `EVALSHA`: for servers that do not allow functions. Each call runs the
    /// whole library, so each costs the server more.
    Eval,
}

/// The library's text in both forms. Its name holds a hash of its source, so that different
/// versions of llmrl on one server (a rolling deployment) never replace each other's.
struct Library {
    /// `FUNCTION LOAD` text.
    functions: String,
    /// Function names per entry point.
    names: [String; 4],
    /// One script per entry point: the library, then a call of that entry.
    scripts: [redis::Script; 4],
}

fn library() -> &'static Library {
    static LIBRARY: OnceLock<Library> = OnceLock::new();
    LIBRARY.get_or_init(|| {
        let hash = redis::Script::new(SOURCE).get_hash()[..12].to_owned();
        let name = format!("llmrl_{hash}");
        let names = Entry::ALL.map(|entry| format!("{name}_{}", entry.lua()));
        let mut functions = format!("#!lua name={name}\n{SOURCE}\n");
        for (entry, function) in Entry::ALL.iter().zip(&names) {
            functions.push_str(&format!(
                "redis.register_function('{function}', {})\n",
                entry.lua()
            ));
        }
        let scripts = Entry::ALL.map(|entry| {
            redis::Script::new(&format!("{SOURCE}\nreturn {}(KEYS, ARGV)\n", entry.lua()))
        });
        Library {
            functions,
            names,
            scripts,
        }
    })
}

/// Runs library entry points on one server, remembering whether it runs them as functions.
#[derive(Debug)]
pub(crate) struct Runner {
    eval: AtomicBool,
}

impl Runner {
    pub(crate) fn new(mode: LuaMode) -> Self {
        Self {
            eval: AtomicBool::new(mode == LuaMode::Eval),
        }
    }

    /// Calls `entry` with the limiter's `key` (its prefix as a hash tag) and the arguments
    /// `args` adds, loading the library first if the server lacks it.
    pub(crate) async fn call(
        &self,
        connection: &mut ConnectionManager,
        entry: Entry,
        key: &str,
        args: impl Fn(&mut Cmd),
    ) -> RedisResult<Value> {
        let library = library();
        // At most: load the functions, fall back to scripts, load the scripts.
        let mut attempts = 0;
        loop {
            attempts += 1;
            let eval = self.eval.load(Ordering::Relaxed);
            let mut cmd = if eval {
                let mut cmd = redis::cmd("EVALSHA");
                cmd.arg(library.scripts[entry.index()].get_hash());
                cmd
            } else {
                let mut cmd = redis::cmd("FCALL");
                cmd.arg(&library.names[entry.index()]);
                cmd
            };
            cmd.arg(1).arg(key);
            args(&mut cmd);
            let error = match cmd.query_async(connection).await {
                Ok(value) => return Ok(value),
                Err(error) => error,
            };
            if attempts > 3 {
                return Err(error);
            }
            if eval && error.kind() == ErrorKind::Server(ServerErrorKind::NoScript) {
                library.scripts[entry.index()]
                    .prepare_invoke()
                    .load_async(connection)
                    .await?;
            } else if !eval && function_missing(&error) {
                self.load_functions(connection).await?;
            } else if !eval && unknown_command(&error) {
                tracing::info!("this Redis has no functions; running llmrl's library as scripts");
                self.eval.store(true, Ordering::Relaxed);
            } else {
                return Err(error);
            }
        }
    }

    async fn load_functions(&self, connection: &mut ConnectionManager) -> RedisResult<()> {
        let loaded: RedisResult<String> = redis::cmd("FUNCTION")
            .arg("LOAD")
            .arg("REPLACE")
            .arg(&library().functions)
            .query_async(connection)
            .await;
        match loaded {
            Ok(_) => Ok(()),
            Err(error) if is_connection(&error) => Err(error),
            Err(error) => {
                // No FUNCTION command, or not allowed to use it: scripts do the same.
                tracing::info!(%error, "cannot load llmrl's function library; running it as scripts");
                self.eval.store(true, Ordering::Relaxed);
                Ok(())
            }
        }
    }
}

fn is_connection(error: &RedisError) -> bool {
    error.is_io_error()
        || error.is_timeout()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
}

fn detail_contains(error: &RedisError, what: &str) -> bool {
    error
        .detail()
        .is_some_and(|d| d.to_ascii_lowercase().contains(what))
        || error.to_string().to_ascii_lowercase().contains(what)
}

/// `FCALL` of a function the server does not have.
fn function_missing(error: &RedisError) -> bool {
    !is_connection(error) && detail_contains(error, "function not found")
}

/// A server that does not know `FCALL` (Redis before 7).
fn unknown_command(error: &RedisError) -> bool {
    !is_connection(error) && detail_contains(error, "unknown command")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_source_hash() {
        let library = library();
        let script = redis::Script::new(SOURCE);
        let hash = &script.get_hash()[..12];
        assert_eq!(library.names[0], format!("llmrl_{hash}_batch"));
        assert!(
            library
                .functions
                .starts_with(&format!("#!lua name=llmrl_{hash}\n"))
        );
        assert!(library.functions.contains(&format!(
            "redis.register_function('llmrl_{hash}_sync', sync)"
        )));
    }
}
