//! `eniroute-lab`: the scenarios eniroute exists for, on simulated EC2
//! instances in network namespaces, with the real agent running in them.
//!
//! `eniroute-lab list` names them; `eniroute-lab run <scenario>|all` builds
//! each one, starts `eniroute daemon` in its instances, checks what actually
//! gets through and tears everything down again (also on Ctrl-C).

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};

use eniroute_lab::scenarios::{self, runner::human, Options, Report, INTERRUPTED, SCENARIOS};

/// The file name under which the lab runs itself as the agent (see
/// [`agent_program`]).
const AGENT_NAME: &str = "eniroute";

#[derive(Debug, Parser)]
#[command(
    name = "eniroute-lab",
    version,
    about = "Runs eniroute's scenarios on simulated EC2 instances in network namespaces (needs root)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List the scenarios
    List,
    /// Run one scenario, or all of them
    Run {
        /// A scenario name from `eniroute-lab list`, or `all`
        scenario: String,
        /// Leave the namespaces in place afterwards, to look around
        #[arg(long)]
        keep: bool,
    },
    /// Measure the agent (hotplug, repair, reconciles at scale, idle) and the
    /// shell way of doing the same, and set each figure against its budget
    Bench {
        /// Fewer repetitions and a 15 s idle window (about a minute in all)
        #[arg(long)]
        quick: bool,
        /// Also write the table, with the machine it ran on, to this file
        #[arg(long, value_name = "FILE")]
        markdown: Option<PathBuf>,
        /// Only these figure groups (hotplug, address, scale, idle, churn)
        #[arg(long, value_name = "GROUP", value_delimiter = ',', value_parser = ["hotplug", "address", "scale", "idle", "churn"])]
        only: Vec<String>,
    },
    /// Remove namespaces left behind by runs that were killed or kept
    Cleanup,
    /// Run the agent itself: `eniroute-lab agent ARGS` is `eniroute ARGS`
    #[command(hide = true)]
    Agent {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
}

fn main() -> ExitCode {
    // Started through the `eniroute` link in the lab's directory: be the agent.
    let argv0 = std::env::args_os().next().unwrap_or_default();
    if Path::new(&argv0).file_name() == Some(AGENT_NAME.as_ref()) {
        return agent(std::env::args_os().skip(1).collect());
    }
    let cli = Cli::parse();
    match cli.command {
        Command::List => {
            list();
            ExitCode::SUCCESS
        }
        Command::Run { scenario, keep } => run(&scenario, keep),
        Command::Bench {
            quick,
            markdown,
            only,
        } => bench(quick, markdown.as_deref(), only),
        Command::Cleanup => cleanup(),
        Command::Agent { args } => agent(args),
    }
}

fn list() {
    println!(
        "Scenarios (run one with `eniroute-lab run NAME`, or all with `eniroute-lab run all`):"
    );
    for s in SCENARIOS {
        println!("  {:<20} {}", s.name, s.about);
    }
}

/// The agent's own command line, exactly as the `eniroute` binary runs it.
fn agent(args: Vec<OsString>) -> ExitCode {
    eniroute::cli::main(eniroute::cli::Cli::parse_from(
        std::iter::once(OsString::from(AGENT_NAME)).chain(args),
    ))
}

fn need_root() -> Result<(), ExitCode> {
    if nix::unistd::geteuid().is_root() {
        return Ok(());
    }
    eprintln!(
        "eniroute-lab: needs root, to create network namespaces, veth pairs and routes; \
         run it with sudo (e.g. `sudo target/release/eniroute-lab run all`)"
    );
    Err(ExitCode::from(2))
}

fn cleanup() -> ExitCode {
    if let Err(code) = need_root() {
        return code;
    }
    match eniroute_lab::cleanup_stale() {
        Ok(removed) if removed.is_empty() => println!("nothing to remove"),
        Ok(removed) => {
            for name in removed {
                println!("removed netns {name}");
            }
        }
        Err(e) => {
            eprintln!("eniroute-lab: cleanup: {e}");
            return ExitCode::from(1);
        }
    }
    ExitCode::SUCCESS
}

fn run(which: &str, keep: bool) -> ExitCode {
    let chosen: Vec<&scenarios::Scenario> = if which == "all" {
        SCENARIOS.iter().collect()
    } else if let Some(s) = scenarios::find(which) {
        vec![s]
    } else {
        eprintln!("eniroute-lab: no scenario {which:?}");
        list();
        return ExitCode::from(2);
    };
    if let Err(code) = need_root() {
        return code;
    }
    if let Err(e) = on_interrupt_stop() {
        eprintln!("eniroute-lab: cannot install the Ctrl-C handler: {e}");
        return ExitCode::from(1);
    }
    match eniroute_lab::cleanup_stale() {
        Ok(removed) if !removed.is_empty() => {
            println!(
                "Removed {} namespaces left behind by earlier runs.\n",
                removed.len()
            );
        }
        Ok(_) => {}
        Err(e) => eprintln!("eniroute-lab: warning: could not remove stale namespaces: {e}\n"),
    }
    let workdir = match WorkDir::create() {
        Ok(w) => w,
        Err(e) => {
            eprintln!("eniroute-lab: {e}");
            return ExitCode::from(1);
        }
    };
    let (agent, how) = match agent_program(&workdir.0) {
        Ok(found) => found,
        Err(e) => {
            eprintln!("eniroute-lab: cannot find or provide the agent: {e}");
            return ExitCode::from(1);
        }
    };
    println!("Agent under test: {how}\n");

    let opts = Options {
        agent,
        print: true,
        keep,
    };
    let started = Instant::now();
    let mut reports: Vec<Report> = Vec::new();
    for s in chosen {
        if INTERRUPTED.load(Ordering::Relaxed) {
            break;
        }
        reports.push(s.run(&opts));
    }
    drop(workdir);
    summarize(&reports, started.elapsed())
}

fn bench(quick: bool, markdown: Option<&Path>, only: Vec<String>) -> ExitCode {
    if let Err(code) = need_root() {
        return code;
    }
    if let Err(e) = on_interrupt_stop() {
        eprintln!("eniroute-lab: cannot install the Ctrl-C handler: {e}");
        return ExitCode::from(1);
    }
    if let Err(e) = eniroute_lab::cleanup_stale() {
        eprintln!("eniroute-lab: warning: could not remove stale namespaces: {e}");
    }
    let workdir = match WorkDir::create() {
        Ok(w) => w,
        Err(e) => {
            eprintln!("eniroute-lab: {e}");
            return ExitCode::from(1);
        }
    };
    let (agent, how) = match agent_program(&workdir.0) {
        Ok(found) => found,
        Err(e) => {
            eprintln!("eniroute-lab: cannot find or provide the agent: {e}");
            return ExitCode::from(1);
        }
    };
    let machine = eniroute_lab::bench::machine();
    println!("Agent under test: {how}\nMachine: {machine}\n");
    let opts = eniroute_lab::bench::Options { agent, quick, only };
    let started = Instant::now();
    let table = eniroute_lab::bench::run(&opts, &mut |line| eprintln!("  {line}"));
    drop(workdir);
    if INTERRUPTED.load(Ordering::Relaxed) {
        println!("Interrupted: stopped early and removed everything the lab built.");
        return ExitCode::from(130);
    }
    let (met, budgets) = table.score();
    let text = format!(
        "{}\n{met} of {budgets} budgets met; {} run in {:.0} s.\n",
        table.markdown(),
        if quick { "quick" } else { "full" },
        started.elapsed().as_secs_f64()
    );
    println!("{text}");
    if let Some(path) = markdown {
        let doc = format!(
            "Measured by `eniroute-lab bench{}` on {machine}.\n\n{text}",
            if quick { " --quick" } else { "" }
        );
        if let Err(e) = eniroute_lab::bench::write_file(path, &doc) {
            eprintln!("eniroute-lab: {e}");
            return ExitCode::from(1);
        }
    }
    // Budgets are for people to read (machines are noisy); a figure that
    // could not be measured means something broke.
    if table.rows.iter().any(|r| r.failed.is_some()) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn summarize(reports: &[Report], elapsed: Duration) -> ExitCode {
    let interrupted = INTERRUPTED.load(Ordering::Relaxed) || reports.iter().any(|r| r.interrupted);
    if reports.len() > 1 {
        println!("Summary");
        for r in reports {
            let mark = if r.passed() { "✓" } else { "✗" };
            println!("  {mark} {}", r.summary());
            for m in &r.measurements {
                println!("      {}: {}", m.name, human(m.value));
            }
        }
    }
    let passed = reports.iter().filter(|r| r.passed()).count();
    let checks: usize = reports.iter().map(|r| r.checks.len()).sum();
    let failed: usize = reports.iter().map(|r| r.failed_checks().count()).sum();
    if interrupted {
        println!("Interrupted: stopped early and removed everything the lab built.");
        return ExitCode::from(130);
    }
    println!(
        "{passed} of {} scenarios passed ({checks} checks, {failed} failed) in {}",
        reports.len(),
        human(elapsed)
    );
    if passed == reports.len() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// Ctrl-C and SIGTERM make the running scenario stop at its next step and
/// tear down what it built (the namespace guards drop on the way out). A
/// second signal gives up at once; `eniroute-lab run` or `cleanup` removes
/// what that leaves behind.
fn on_interrupt_stop() -> nix::Result<()> {
    extern "C" fn handler(_: nix::libc::c_int) {
        const FIRST: &[u8] =
            b"\neniroute-lab: stopping and removing what the lab built (again to quit at once)\n";
        const AGAIN: &[u8] = b"\neniroute-lab: quitting; the next run removes what is left\n";
        let again = INTERRUPTED.swap(true, Ordering::SeqCst);
        let msg = if again { AGAIN } else { FIRST };
        // SAFETY: write(2) and _exit(2) are async-signal-safe, and the
        // buffer is a static.
        unsafe {
            nix::libc::write(2, msg.as_ptr().cast(), msg.len());
            if again {
                nix::libc::_exit(130);
            }
        }
    }
    let action = SigAction::new(
        SigHandler::Handler(handler),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for sig in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only touches an atomic and calls _exit.
        unsafe { sigaction(sig, &action) }?;
    }
    Ok(())
}

/// A directory for this run's files, removed on drop.
struct WorkDir(PathBuf);

impl WorkDir {
    fn create() -> io::Result<WorkDir> {
        let dir = std::env::temp_dir().join(format!("eniroute-lab-{}", std::process::id()));
        std::fs::create_dir_all(&dir)
            .map_err(|e| io::Error::new(e.kind(), format!("create {}: {e}", dir.display())))?;
        Ok(WorkDir(dir))
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The program to run as `eniroute` in the instances, and how it was found.
///
/// `cargo run --bin eniroute-lab` builds only this binary, so an `eniroute`
/// beside it may be missing, or older than this one (built before the last
/// change). This binary contains the whole agent, so it then runs itself as
/// the agent through a link named `eniroute` (a link rather than a script:
/// it works even where the temporary directory is mounted noexec).
fn agent_program(workdir: &Path) -> io::Result<(PathBuf, String)> {
    let me = std::env::current_exe()
        .map_err(|e| io::Error::new(e.kind(), format!("where is this executable: {e}")))?;
    if std::env::var_os("ENIROUTE_BIN").is_some() {
        let bin = eniroute_lab::agent::binary()?;
        let how = format!("{} (from ENIROUTE_BIN)", bin.display());
        return Ok((bin, how));
    }
    let mut why = "no eniroute binary beside it".to_string();
    if let Ok(bin) = eniroute_lab::agent::binary() {
        let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified());
        match (modified(&bin), modified(&me)) {
            (Ok(agent), Ok(lab)) if agent >= lab => {
                let how = format!("{}", bin.display());
                return Ok((bin, how));
            }
            _ => why = format!("{} is older than the lab", bin.display()),
        }
    }
    let link = workdir.join(AGENT_NAME);
    std::os::unix::fs::symlink(&me, &link).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("link {} -> {}: {e}", link.display(), me.display()),
        )
    })?;
    let how = format!(
        "the lab's own copy of the agent, run as {} ({why}; `cargo build --bins` builds it)",
        link.display()
    );
    Ok((link, how))
}
