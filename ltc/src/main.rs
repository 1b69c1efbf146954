//! `ltc`: the Lattice CLI. Targets a cluster's public API (`ltc target`), makes and
//! manages apps (`create`, `scale`, `remove`, `list`, `status`) and rolls out their
//! changes (`update`, `history`, `rollback`, `promote`), shows cells
//! (`cells`, `visualize`) and logs (`logs`, `debug-logs`), and runs tasks
//! (`submit-task`, `task`, `cancel-task`, `delete-task`, `list-tasks`), on a schedule
//! too (`submit-task FILE --every …`, `schedules`, `schedule …`); gets inside running
//! instances and Tasks (`ssh`, with port forwarding); volumes and
//! their backups (`volume …`, `backup …`); API tokens (`login`, `token …`); whole
//! systems from a manifest (`apply`, `export`).

mod api;
mod app;
mod backup_key;
mod backup_policy;
mod backup_view;
mod failover;
mod logs;
mod manifest;
mod rollout;
mod schedules;
mod show;
mod ssh;
mod storage;
mod target;
mod tokens;
mod trust;

use std::io::IsTerminal;
use std::time::Duration;

use anyhow::Context;
use clap::{CommandFactory, Parser, Subcommand};
use lattice_specs::errors::ErrorName;
use lattice_specs::receptor::TaskCreateRequest;

use api::Api;

#[derive(Parser)]
#[command(
    name = "ltc",
    version,
    about = "ltc: drive a Lattice-rs cluster",
    after_help = "Start with `sudo lattice up`, then `ltc target` the address it prints."
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(clap::Args)]
struct Json {
    /// Print the API's JSON objects instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum Cmd {
    /// Set the cluster to talk to (its API URL), or show it.
    Target {
        /// http://HOST:PORT or https://HOST:PORT of the API (`lattice up` prints it).
        /// For https, the CA the API presents is shown and trusted once confirmed.
        url: Option<String>,
        #[arg(long)]
        user: Option<String>,
        #[arg(long)]
        password: Option<String>,
        /// An API token (`ltc token create` made it; `lattice up` keeps an admin one in
        /// DATA/admin.token), sent as `Authorization: Bearer`.
        #[arg(long)]
        token: Option<String>,
        /// The apps' domain and router port: apps answer at http://APP.DOMAIN.
        #[arg(long, default_value = target::DEFAULT_DOMAIN)]
        domain: String,
        #[command(flatten)]
        trust: trust::TrustArgs,
    },
    /// Use an API token from now on (checked, then saved with the target).
    Login {
        /// The token (default: read from standard input).
        #[arg(long)]
        token: Option<String>,
        /// Read the token from this file (e.g. `lattice up`'s DATA/admin.token).
        #[arg(long, conflicts_with = "token")]
        token_file: Option<std::path::PathBuf>,
    },
    /// API tokens: create (admin, developer or viewer), list, revoke.
    #[command(subcommand)]
    Token(tokens::TokenCmd),
    /// Create an app and wait until every instance runs.
    Create(Box<app::CreateArgs>),
    /// Change an app's number of instances and wait for them.
    Scale {
        app: String,
        instances: i32,
        #[arg(short, long, default_value = "2m", value_parser = app::parse_duration)]
        timeout: Duration,
    },
    /// Change an app (only what the flags name) and roll the change out: a new
    /// generation replaces the instances a few at a time; instances and routes change
    /// in place.
    Update(Box<rollout::UpdateArgs>),
    /// An app's kept generations: when, by whom, how they ended, what each changed.
    History {
        app: String,
        #[command(flatten)]
        json: Json,
    },
    /// Go back to an earlier generation (default: the last that ran healthy) and wait.
    Rollback {
        app: String,
        generation: Option<i64>,
        #[arg(short, long, default_value = "5m", value_parser = app::parse_duration)]
        timeout: Duration,
    },
    /// Roll a paused canary out to every instance and wait.
    Promote {
        app: String,
        #[arg(short, long, default_value = "5m", value_parser = app::parse_duration)]
        timeout: Duration,
    },
    /// Make the cluster hold what a manifest (YAML or TOML) declares: apps, tasks,
    /// volumes, backup schedules. Checked whole first; applying it again changes nothing.
    Apply(manifest::ApplyArgs),
    /// Write the manifest of running apps (and the volumes they mount).
    Export(manifest::ExportArgs),
    /// Remove apps (their instances are stopped).
    Remove {
        #[arg(required = true)]
        apps: Vec<String>,
    },
    /// The apps.
    List(Json),
    /// An app and each of its instances.
    Status {
        app: String,
        #[command(flatten)]
        json: Json,
    },
    /// The cells.
    Cells(Json),
    /// An app's or task's logs from every instance, the cell and the router.
    Logs {
        /// An app or task name (or a log guid).
        name: String,
        /// Print the recent lines and exit instead of following.
        #[arg(long)]
        no_follow: bool,
    },
    /// The cluster components' own logs.
    DebugLogs {
        #[arg(long)]
        no_follow: bool,
    },
    /// Cells and their instances as a live picture.
    Visualize {
        /// Draw once and exit.
        #[arg(long)]
        once: bool,
        /// Seconds between redraws.
        #[arg(long, default_value_t = 1.0)]
        every: f64,
    },
    /// Run a task from a JSON file (the receptor's TaskCreateRequest), once or, with
    /// --every, on a schedule (each slot's run a task NAME-YYYYMMDD-HHMMSS).
    SubmitTask {
        file: std::path::PathBuf,
        /// Run it on a schedule: a period (30s, 15m, 2h, 1d; at least 5s), hourly, daily,
        /// weekly, monthly, or a five-field cron expression in UTC ("*/5 * * * *").
        #[arg(long)]
        every: Option<String>,
        /// The schedule's name (default: the task's task_guid).
        #[arg(long, requires = "every")]
        name: Option<String>,
        /// How many completed runs to keep.
        #[arg(long, requires = "every", default_value_t = 5)]
        keep: u32,
    },
    /// The schedules (periodic tasks and backups): next run, last run and its result.
    Schedules(Json),
    /// Remove, pause or resume a schedule.
    #[command(subcommand)]
    Schedule(schedules::ScheduleCmd),
    /// A task's state and result.
    Task {
        guid: String,
        #[command(flatten)]
        json: Json,
    },
    /// Cancel a pending or running task.
    CancelTask { guid: String },
    /// Delete a completed task.
    DeleteTask { guid: String },
    /// Volumes: create, list, remove.
    #[command(subcommand)]
    Volume(storage::VolumeCmd),
    /// Backups of volumes: create, list, restore, verify, export, import, delete.
    #[command(subcommand)]
    Backup(storage::BackupCmd),
    /// The tasks.
    ListTasks(Json),
    /// A shell or a command inside an app's instance (or a running Task), and local
    /// ports forwarded into it (`-L`). Exits with the remote command's status.
    Ssh(Box<ssh::SshArgs>),
    /// The versions of ltc and of the targeted API.
    Version,
    /// Shell completions: `ltc completions bash > /etc/bash_completion.d/ltc`.
    Completions { shell: clap_complete::Shell },
}

fn api() -> anyhow::Result<Api> {
    Api::new(target::load()?)
}

/// The TaskCreateRequest in `file`.
fn read_task(file: &std::path::Path) -> anyhow::Result<TaskCreateRequest> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not a task: expected JSON like {{\"task_guid\": \"t1\", \"rootfs\": \"preloaded:busybox\", \"action\": {{\"run\": {{\"path\": \"sh\", \"args\": [\"-c\", \"echo hi > /tmp/r\"]}}}}, \"result_file\": \"/tmp/r\"}}",
            file.display()
        )
    })
}

async fn submit_task(api: &Api, file: &std::path::Path) -> anyhow::Result<()> {
    let req = read_task(file)?;
    anyhow::ensure!(
        !req.task_guid.is_empty(),
        "{}: the task needs a task_guid",
        file.display()
    );
    match api.create_task(&req).await {
        Err(e) if api::error_name(&e) == Some(ErrorName::TaskGuidAlreadyExists) => anyhow::bail!(
            "task {} already exists: pick another task_guid, or `ltc delete-task {}` once it completed",
            req.task_guid,
            req.task_guid
        ),
        r => r?,
    }
    println!(
        "Submitted task {}: `ltc task {}` shows how it goes.",
        req.task_guid, req.task_guid
    );
    Ok(())
}

async fn visualize(api: &Api, once: bool, every: f64) -> anyhow::Result<()> {
    let tty = std::io::stdout().is_terminal();
    loop {
        let (cells, actuals) = (api.cells().await?, api.actual_lrps().await?);
        let picture = show::picture(&cells, &actuals, tty);
        if once || !tty {
            print!("{picture}");
            if once {
                return Ok(());
            }
        } else {
            print!("\x1b[H\x1b[2J{picture}\n(Ctrl-C to stop)\n");
        }
        tokio::time::sleep(Duration::from_secs_f64(every.max(0.1))).await;
    }
}

/// `ltc target`: shows the target, or checks and saves a new one.
async fn set_target(
    url: Option<String>,
    user: Option<String>,
    password: Option<String>,
    token: Option<String>,
    domain: String,
    trust: trust::TrustArgs,
) -> anyhow::Result<()> {
    let Some(url) = url else {
        let t = target::load()?;
        println!("Target: {} (apps at http://APP.{})", t.api, t.domain);
        if let Some(u) = &t.user {
            println!("User:   {u}");
        }
        if t.token.is_some() {
            println!("Token:  set (`ltc login` changes it)");
        }
        if let Some(fp) = t.ca.as_deref().and_then(trust::ca_fingerprint) {
            println!("CA:     SHA-256 {fp}");
        }
        return Ok(());
    };
    let mut t = target::Target::parse(&url)?;
    t.user = user.or(t.user);
    t.password = password.or(t.password);
    t.token = token;
    t.domain = domain;
    trust::choose_ca(&mut t, &trust, target::load_saved().ok().as_ref()).await?;
    let api = Api::new(t.clone())?;
    let v = api.version().await.context("checking the target")?;
    let path = target::save(&t)?;
    println!(
        "Target set to {} (API version {}), apps at http://APP.{}. Saved in {}.",
        t.api,
        v["version"].as_str().unwrap_or("?"),
        t.domain,
        path.display()
    );
    Ok(())
}

/// `ltc status APP`: the app, its instances and their use of CPU and memory.
async fn status(api: &Api, app: &str, json: bool, now: i64) -> anyhow::Result<()> {
    let d = api.app(app).await?;
    let actuals = api.actual_lrps_of(app).await?;
    // Two samples of the containers' use, for CPU over the interval.
    let sample = || async { api.usage(app).await.unwrap_or_default() };
    let before = sample().await;
    let t0 = std::time::Instant::now();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = sample().await;
    if json {
        show::json(&serde_json::json!({"desired_lrp": d, "actual_lrps": actuals, "usage": after}))?;
    } else {
        let usage = show::usage(&before, &after, t0.elapsed().as_secs_f64());
        print!("{}", show::status(&d, &actuals, &usage, &api.target, now));
    }
    Ok(())
}

/// `ltc version`: ltc's, and the API's when a target answers.
async fn version() {
    println!("ltc {}", env!("CARGO_PKG_VERSION"));
    match api() {
        Ok(api) => match api.version().await {
            Ok(v) => println!(
                "api {} at {}",
                v["version"].as_str().unwrap_or("?"),
                api.target.api
            ),
            Err(e) => println!("api: {e:#}"),
        },
        Err(e) => println!("api: {e:#}"),
    }
}

/// Runs the command; its exit status (a remote one for `ltc ssh`, else 0).
async fn run(cli: Cli) -> anyhow::Result<i32> {
    let now = lattice_specs::now_nanos();
    match cli.command {
        Cmd::Target {
            url,
            user,
            password,
            token,
            domain,
            trust,
        } => set_target(url, user, password, token, domain, trust).await?,
        Cmd::Login { token, token_file } => tokens::login(token, token_file).await?,
        Cmd::Token(cmd) => tokens::run(&api()?, cmd, now).await?,
        Cmd::Create(a) => app::create(&api()?, &a).await?,
        Cmd::Scale {
            app,
            instances,
            timeout,
        } => app::scale(&api()?, &app, instances, timeout).await?,
        Cmd::Update(u) => rollout::update(&api()?, &u).await?,
        Cmd::History { app, json } => rollout::history(&api()?, &app, json.json, now).await?,
        Cmd::Rollback {
            app,
            generation,
            timeout,
        } => rollout::rollback(&api()?, &app, generation, timeout).await?,
        Cmd::Promote { app, timeout } => rollout::promote(&api()?, &app, timeout).await?,
        Cmd::Apply(a) => manifest::apply(&api()?, &a).await?,
        Cmd::Export(a) => manifest::export(&api()?, &a).await?,
        Cmd::Remove { apps } => app::remove(&api()?, &apps).await?,
        Cmd::List(j) => {
            let api = api()?;
            let desired = api.desired_lrps().await?;
            if j.json {
                show::json(&desired)?;
            } else {
                print!(
                    "{}",
                    show::apps(&desired, &api.actual_lrps().await?, &api.target)
                );
            }
        }
        Cmd::Status { app, json } => status(&api()?, &app, json.json, now).await?,
        Cmd::Cells(j) => {
            let api = api()?;
            let cells = api.cells().await?;
            if j.json {
                show::json(&cells)?;
            } else {
                print!("{}", show::cells(&cells, &api.actual_lrps().await?));
            }
        }
        Cmd::Logs { name, no_follow } => {
            let api = api()?;
            let guid = logs::log_guid_of(&api, &name).await?;
            logs::print(&api, &guid, !no_follow).await?;
        }
        Cmd::DebugLogs { no_follow } => {
            logs::print(&api()?, lattice_specs::logs::DEBUG_LOG_GUID, !no_follow).await?
        }
        Cmd::Visualize { once, every } => visualize(&api()?, once, every).await?,
        Cmd::SubmitTask {
            file, every: None, ..
        } => submit_task(&api()?, &file).await?,
        Cmd::SubmitTask {
            file,
            every: Some(every),
            name,
            keep,
        } => {
            let req =
                schedules::create_request(read_task(&file)?, &file, &every, name.as_deref(), keep)?;
            schedules::create(&api()?, &req).await?
        }
        Cmd::Schedules(j) => schedules::list(&api()?, j.json, now).await?,
        Cmd::Schedule(cmd) => schedules::run(&api()?, cmd).await?,
        Cmd::Task { guid, json } => {
            let t = api()?.task(&guid).await?;
            if json.json {
                show::json(&t)?;
            } else {
                print!("{}", show::task(&t, now));
            }
        }
        Cmd::CancelTask { guid } => {
            api()?.cancel_task(&guid).await?;
            println!("Cancelled task {guid}.");
        }
        Cmd::DeleteTask { guid } => {
            api()?.delete_task(&guid).await?;
            println!("Deleted task {guid}.");
        }
        Cmd::Volume(cmd) => storage::volume(&api()?, cmd).await?,
        Cmd::Backup(cmd) => storage::backup(&api()?, cmd, now).await?,
        Cmd::ListTasks(j) => {
            let tasks = api()?.tasks().await?;
            if j.json {
                show::json(&tasks)?;
            } else {
                print!("{}", show::tasks(&tasks, now));
            }
        }
        Cmd::Ssh(args) => return Ok(ssh::main(api(), *args).await),
        Cmd::Version => version().await,
        Cmd::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "ltc", &mut std::io::stdout())
        }
    }
    Ok(0)
}

fn main() {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("starting the runtime");
    // Exiting (not returning) also leaves `ltc ssh`'s stdin reader behind.
    match rt.block_on(run(cli)) {
        Ok(status) => std::process::exit(status),
        Err(e) => {
            eprintln!("ltc: {e:#}");
            std::process::exit(1);
        }
    }
}
