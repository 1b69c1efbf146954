//! `ltc ssh`: a shell or a command inside a running instance (or Task), and local
//! ports forwarded into its network namespace (`-L`), over the public API's exec and
//! forward WebSockets (the wire protocol is `lattice_specs::exec`).
//!
//! [`terminal`] holds the local terminal (raw mode, size, signals), [`session`] the
//! exec session's relay, [`forward`] the `-L` listeners. The choices (a terminal or
//! not, the routes, the `-L` syntax) are pure functions here and in [`forward`].

mod forward;
mod session;
mod terminal;

use std::io::IsTerminal;
use std::sync::Arc;

use lattice_specs::exec::{self, EnvVar, ExecRequest};
use lattice_specs::path_segment as seg;

use crate::api::Api;

/// Exit status of `ltc ssh` when the session could not be made or broke (as ssh's).
pub const FAILED: i32 = 255;

#[derive(clap::Args, Debug)]
pub struct SshArgs {
    /// The app (its instance `-i`); not with `--task`.
    #[arg(required_unless_present = "task", conflicts_with = "task")]
    pub app: Option<String>,
    /// The app's instance index.
    #[arg(short, long, default_value_t = 0)]
    pub index: u32,
    /// Into a running Task instead of an app.
    #[arg(long, value_name = "GUID")]
    pub task: Option<String>,
    /// Run on a terminal even with a command or when stdin is not one.
    #[arg(short = 't', conflicts_with = "no_tty")]
    pub tty: bool,
    /// Never run on a terminal (the default with a command or piped stdin).
    #[arg(short = 'T')]
    pub no_tty: bool,
    /// Forward a local port into the instance: [LOCAL_ADDR:]LOCAL_PORT:[HOST:]PORT
    /// (LOCAL_ADDR default 127.0.0.1; HOST, in the instance, default 127.0.0.1).
    #[arg(short = 'L', value_name = "SPEC", value_parser = forward::Spec::parse)]
    pub forward: Vec<forward::Spec>,
    /// Forward only (`-L`): no shell or command; Ctrl-C stops.
    #[arg(short = 'N', requires = "forward")]
    pub no_command: bool,
    /// What to run, after `--` (default: the image's shell).
    #[arg(last = true)]
    pub command: Vec<String>,
}

/// Where a session goes: an app's instance or a Task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Instance { app: String, index: u32 },
    Task { guid: String },
}

impl Target {
    fn of(args: &SshArgs) -> Target {
        match (&args.task, &args.app) {
            (Some(guid), _) => Target::Task { guid: guid.clone() },
            (None, app) => Target::Instance {
                app: app.clone().unwrap_or_default(),
                index: args.index,
            },
        }
    }

    /// The API's exec route for this target.
    pub fn exec_path(&self) -> String {
        self.route(exec::API_LRP_EXEC, exec::API_TASK_EXEC)
    }

    /// The API's forward route for a connection to `host:port` in this target.
    pub fn forward_path(&self, host: &str, port: u16) -> String {
        let route = self.route(exec::API_LRP_FORWARD, exec::API_TASK_FORWARD);
        format!("{route}?port={port}&host={}", seg(host))
    }

    fn route(&self, lrp: &str, task: &str) -> String {
        match self {
            Target::Instance { app, index } => lrp
                .replace("{process_guid}", &seg(app))
                .replace("{index}", &index.to_string()),
            Target::Task { guid } => task.replace("{task_guid}", &seg(guid)),
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Instance { app, index } => write!(f, "{app}/{index}"),
            Target::Task { guid } => write!(f, "task {guid}"),
        }
    }
}

/// Whether the remote process gets a terminal: `-T` never, `-t` always, else when
/// there is no command and stdin is a terminal (an interactive shell).
pub fn wants_tty(force: bool, refuse: bool, has_command: bool, stdin_tty: bool) -> bool {
    !refuse && (force || (!has_command && stdin_tty))
}

/// The request for the session: on a terminal, its size and `TERM`.
pub fn request(
    command: Vec<String>,
    tty: bool,
    size: Option<(u16, u16)>,
    term: Option<String>,
) -> ExecRequest {
    let (cols, rows) = size.unwrap_or((80, 24));
    ExecRequest {
        command,
        tty,
        cols: if tty { cols } else { 0 },
        rows: if tty { rows } else { 0 },
        env: match term {
            Some(t) if tty => vec![EnvVar {
                name: "TERM".into(),
                value: t,
            }],
            _ => vec![],
        },
        ..Default::default()
    }
}

/// `ltc ssh`: runs the session (and forwards) and gives ltc's exit status: the remote
/// process's, or [`FAILED`] with the reason on stderr.
pub async fn main(api: anyhow::Result<Api>, args: SshArgs) -> i32 {
    match run(api, args).await {
        Ok(status) => status,
        Err(e) => {
            eprintln!("ltc: {e:#}");
            FAILED
        }
    }
}

async fn run(api: anyhow::Result<Api>, args: SshArgs) -> anyhow::Result<i32> {
    anyhow::ensure!(
        !args.no_command || args.command.is_empty(),
        "-N forwards ports only: drop the command after `--`, or -N"
    );
    let api = Arc::new(api?);
    let target = Target::of(&args);
    let forwards = forward::listen(&api, &target, &args.forward).await?;
    if args.no_command {
        // Forward only, until Ctrl-C (or TERM/HUP).
        terminal::interrupted().await;
        drop(forwards);
        return Ok(0);
    }
    let stdin_tty = std::io::stdin().is_terminal();
    let tty = wants_tty(args.tty, args.no_tty, !args.command.is_empty(), stdin_tty);
    let local = (tty && stdin_tty).then(terminal::Local::raw).transpose()?;
    let req = request(
        args.command,
        tty,
        local.as_ref().and_then(|l| l.size()),
        std::env::var("TERM").ok(),
    );
    let events = terminal::events(local.is_some());
    let ws = api.websocket(&target.exec_path()).await;
    let outcome = match ws {
        Ok(ws) => {
            tokio::select! {
                r = session::run(ws, req, session::Io::std(), events) => r,
                _ = terminal::terminated() => Err(anyhow::anyhow!("ltc was terminated: the session is closed")),
            }
        }
        Err(e) => Err(e),
    };
    // The terminal is restored before anything is printed.
    drop(local);
    drop(forwards);
    let outcome = outcome.map_err(|e| describe(e, &target))?;
    if !outcome.reason.is_empty() {
        eprintln!("ltc: the session on {target} ended: {}", outcome.reason);
    }
    Ok(outcome.status)
}

/// The API's refusals, with where to look.
fn describe(e: anyhow::Error, target: &Target) -> anyhow::Error {
    use lattice_specs::errors::ErrorName;
    let hint = match (crate::api::error_name(&e), target) {
        (Some(ErrorName::DesiredLRPNotFound), _) => "`ltc list` shows the apps".to_string(),
        (
            Some(ErrorName::ActualLRPIndexNotFound | ErrorName::InstanceNotRunning),
            Target::Instance { app, .. },
        ) => format!("`ltc status {app}` shows its instances"),
        (Some(ErrorName::InstanceNotRunning | ErrorName::TaskNotFound), Target::Task { .. }) => {
            "`ltc list-tasks` shows the tasks and their states".into()
        }
        _ => return e,
    };
    anyhow::anyhow!("{e:#}; {hint}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_terminal_for_interactive_shells_or_when_forced() {
        // No command on a terminal: a shell on one.
        assert!(wants_tty(false, false, false, true));
        // A command, or piped stdin: none.
        assert!(!wants_tty(false, false, true, true));
        assert!(!wants_tty(false, false, false, false));
        // -t forces, -T refuses.
        assert!(wants_tty(true, false, true, false));
        assert!(!wants_tty(false, true, false, true));
    }

    #[test]
    fn routes_name_the_instance_or_task() {
        let i = Target::Instance {
            app: "web app".into(),
            index: 2,
        };
        assert_eq!(i.exec_path(), "/v1/actual_lrps/web%20app/index/2/exec");
        assert_eq!(
            i.forward_path("127.0.0.1", 8080),
            "/v1/actual_lrps/web%20app/index/2/forward?port=8080&host=127.0.0.1"
        );
        let t = Target::Task { guid: "t1".into() };
        assert_eq!(t.exec_path(), "/v1/tasks/t1/exec");
        assert_eq!(
            t.forward_path("", 5432),
            "/v1/tasks/t1/forward?port=5432&host="
        );
        assert_eq!(t.to_string(), "task t1");
        assert_eq!(i.to_string(), "web app/2");
    }

    #[test]
    fn a_terminal_request_carries_size_and_term() {
        let r = request(vec![], true, Some((120, 40)), Some("xterm".into()));
        assert_eq!((r.tty, r.cols, r.rows), (true, 120, 40));
        assert_eq!(
            r.env,
            vec![EnvVar {
                name: "TERM".into(),
                value: "xterm".into()
            }]
        );
        // Forced without a local terminal: a usual size.
        let r = request(vec![], true, None, None);
        assert_eq!((r.cols, r.rows), (80, 24));
        // No terminal: no size, no TERM; `who` is the API's to fill.
        let r = request(vec!["true".into()], false, Some((1, 1)), Some("x".into()));
        assert_eq!((r.tty, r.cols, r.rows, r.env.len()), (false, 0, 0, 0));
        assert!(r.who.is_empty());
    }

    #[test]
    fn flags_parse_as_documented() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct T {
            #[command(flatten)]
            a: SshArgs,
        }
        let t = T::try_parse_from(["ssh", "web", "-i", "1", "-L", "8080:80", "--", "ls", "-l"])
            .unwrap();
        assert_eq!(
            Target::of(&t.a),
            Target::Instance {
                app: "web".into(),
                index: 1
            }
        );
        assert_eq!(t.a.command, ["ls", "-l"]);
        assert_eq!(t.a.forward.len(), 1);
        let t = T::try_parse_from(["ssh", "--task", "t1"]).unwrap();
        assert_eq!(Target::of(&t.a), Target::Task { guid: "t1".into() });
        // Neither, both, -t with -T, -N without -L, a bad -L: refused.
        for bad in [
            &["ssh"][..],
            &["ssh", "web", "--task", "t1"],
            &["ssh", "web", "-t", "-T"],
            &["ssh", "web", "-N"],
            &["ssh", "web", "-L", "nope"],
        ] {
            assert!(T::try_parse_from(bad).is_err(), "{bad:?}");
        }
    }
}
