//! Writes the man page eniroute(8) and the bash, zsh and fish completions
//! from the agent's own command-line definition, for packaging/build.sh.
//! It lives here, not in the agent, so the shipped binary does not carry
//! clap_mangen and clap_complete.
//!
//!   eniroute-gen --out DIR [--date YYYY-MM-DD]
//!
//! writes DIR/eniroute.8, DIR/eniroute.bash, DIR/_eniroute, DIR/eniroute.fish.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use clap_complete::Shell;
use clap_mangen::roff::{bold, italic, roman, Roff};
use clap_mangen::Man;

#[derive(Debug, Parser)]
#[command(about = "Writes eniroute's man page and shell completions")]
struct Args {
    /// Directory to write into (created if missing).
    #[arg(long)]
    out: PathBuf,
    /// Date in the man page footer; the package's changelog date keeps
    /// rebuilds byte-identical.
    #[arg(long, default_value = "")]
    date: String,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match generate(&args.out, &args.date) {
        Ok(files) => {
            for f in files {
                println!("{}", f.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("eniroute-gen: {e}");
            ExitCode::FAILURE
        }
    }
}

fn generate(out: &Path, date: &str) -> Result<Vec<PathBuf>, String> {
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let mut written = Vec::new();

    let page = out.join("eniroute.8");
    std::fs::write(&page, man_page(date)?).map_err(|e| format!("{}: {e}", page.display()))?;
    written.push(page);

    for (shell, name) in [
        (Shell::Bash, "eniroute.bash"),
        (Shell::Zsh, "_eniroute"),
        (Shell::Fish, "eniroute.fish"),
    ] {
        let path = out.join(name);
        let mut text = Vec::new();
        clap_complete::generate(
            shell,
            &mut eniroute::cli::Cli::command(),
            "eniroute",
            &mut text,
        );
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

fn man_page(date: &str) -> Result<Vec<u8>, String> {
    let mut cmd = eniroute::cli::Cli::command().disable_help_subcommand(true);
    cmd.build();
    let man = Man::new(cmd.clone())
        .section("8")
        .date(date)
        .manual("System Administration");
    let mut out = Vec::new();
    let io = |e: std::io::Error| format!("rendering the man page: {e}");
    man.render_title(&mut out).map_err(io)?;
    man.render_name_section(&mut out).map_err(io)?;
    man.render_synopsis_section(&mut out).map_err(io)?;
    man.render_description_section(&mut out).map_err(io)?;
    man.render_options_section(&mut out).map_err(io)?;

    let mut roff = Roff::new();
    roff.control("SH", ["COMMANDS"]);
    for sub in cmd.get_subcommands() {
        commands(&mut roff, sub, "eniroute");
    }
    extra_sections(&mut roff);
    roff.to_writer(&mut out).map_err(io)?;
    man.render_version_section(&mut out).map_err(io)?;
    Ok(out)
}

/// One entry per subcommand (nested ones too): its usage, what it does, and
/// its own options. clap_mangen lists only their names.
fn commands(roff: &mut Roff, sub: &clap::Command, parent: &str) {
    let name = format!("{parent} {}", sub.get_name());
    if sub.has_subcommands() {
        for inner in sub.get_subcommands() {
            commands(roff, inner, &name);
        }
        return;
    }
    // Global options are in OPTIONS already; --help is on every command.
    let own = || {
        sub.get_arguments()
            .filter(|a| !a.is_global_set() && a.get_id() != "help")
    };
    let mut usage = vec![bold(name.clone())];
    for arg in own() {
        if let Some(long) = arg.get_long() {
            usage.push(roman(format!(" [--{long}]")));
        }
    }
    roff.control("TP", [] as [&str; 0]);
    roff.text(usage);
    if let Some(about) = sub.get_long_about().or(sub.get_about()) {
        roff.text([roman(about.to_string())]);
    }
    for arg in own() {
        let (Some(long), Some(help)) = (arg.get_long(), arg.get_help()) else {
            continue;
        };
        roff.control("br", [] as [&str; 0]);
        roff.text([bold(format!("--{long}")), roman(format!(": {help}"))]);
    }
}

fn extra_sections(roff: &mut Roff) {
    roff.control("SH", ["SIGNALS"]);
    for (sig, what) in [
        (
            "SIGHUP",
            "re-reads the configuration file; a file with a problem is rejected as a whole and the previous configuration stays (systemctl reload eniroute).",
        ),
        (
            "SIGUSR1",
            "re-reads metadata now (what eniroute refresh sends).",
        ),
        (
            "SIGTERM, SIGINT",
            "stop the daemon. Routing stays as it is: stopping never cuts a connection; eniroute cleanup removes what eniroute owns.",
        ),
    ] {
        roff.control("TP", [] as [&str; 0]);
        roff.text([bold(sig)]);
        roff.text([roman(what)]);
    }

    roff.control("SH", ["EXIT STATUS"]);
    for (code, what) in [
        ("0", "success."),
        (
            "1",
            "something outside failed: metadata, the kernel, the state directory.",
        ),
        (
            "2",
            "the input is wrong: the configuration, the arguments, or a host where the agent refuses to change the kernel (amazon-ec2-net-utils installed, a table range holding someone else's routes). The systemd unit does not restart the daemon on this code.",
        ),
        (
            "3 to 8",
            "what eniroute status and eniroute trace found. status: 3 drift, 4 a conflict, 5 metadata unreadable, 6 an ENI held on metadata that is not applied. trace: 3 eniroute's rule or address for the source missing, 4 a foreign rule first, 6 the wrong link for another reason, 7 a source that is no ENI's address, 8 no route.",
        ),
    ] {
        roff.control("TP", [] as [&str; 0]);
        roff.text([bold(code)]);
        roff.text([roman(what)]);
    }

    roff.control("SH", ["FILES"]);
    for (path, what) in [
        (
            "/etc/eniroute/config.toml",
            "configuration; optional, every key has a default. Reference: /usr/share/doc/eniroute/CONFIG.md.",
        ),
        (
            "/run/eniroute/",
            "the single-instance lock and the addresses the agent added, per network namespace.",
        ),
        (
            "/usr/lib/systemd/networkd.conf.d/10-eniroute.conf",
            "keeps systemd-networkd from removing rules and routes it did not create, eniroute's and every other program's.",
        ),
        (
            "/etc/iproute2/rt_protos.d/eniroute.conf",
            "names protocol 233 eniroute in ip rule and ip route output.",
        ),
    ] {
        roff.control("TP", [] as [&str; 0]);
        roff.text([italic(path)]);
        roff.text([roman(what)]);
    }

    roff.control("SH", ["SEE ALSO"]);
    roff.text([
        bold("ip-rule"),
        roman("(8), "),
        bold("ip-route"),
        roman("(8), "),
        bold("systemd-networkd.service"),
        roman("(8), "),
        bold("networkd.conf"),
        roman("(5), /usr/share/doc/eniroute/README.md"),
    ]);
}
