//! `trace2e demo`: the main job in one command. Starts a real `trace2ed` in a temporary
//! directory, runs real `trace2e-proc` processes that copy data, asks the daemon where the
//! data came from, shows an integrity and a deletion denial, and prints the story.
//!
//! It drives the same binaries an operator would (`trace2ed`, `trace2e-proc`, `trace2e`),
//! found next to the running `trace2e`, and fails if any step does not turn out as told.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// Arguments of `trace2e demo`.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Keep the demo's temporary directory (daemon sockets, files, logs) after it ends.
    #[arg(long)]
    pub keep: bool,
}

type DemoResult<T> = Result<T, Box<dyn std::error::Error>>;

struct Demo {
    dir: PathBuf,
    bin_dir: PathBuf,
    p2m: PathBuf,
    o2m: PathBuf,
    /// Stopped when the demo is dropped.
    _daemon: crate::launch::Running,
}

impl Demo {
    fn start(dir: PathBuf) -> DemoResult<Self> {
        let bin_dir =
            std::env::current_exe()?.parent().ok_or("cannot locate the directory of the trace2e binary")?.to_path_buf();
        for bin in ["trace2ed", "trace2e-proc"] {
            if !bin_dir.join(bin).exists() {
                return Err(format!(
                    "{} not found next to trace2e; build all binaries first: cargo build --release --bins",
                    bin_dir.join(bin).display()
                )
                .into());
            }
        }
        let p2m = dir.join("p2m.sock");
        let o2m = dir.join("o2m.sock");
        let mut cmd = Command::new(bin_dir.join("trace2ed"));
        cmd.args(["--node", "demo-node", "--address", "127.0.0.1"])
            .arg("--p2m-socket")
            .arg(&p2m)
            .arg("--o2m-socket")
            .arg(&o2m)
            .arg("--data-dir")
            .arg(dir.join("data"))
            .env("RUST_LOG", "warn");
        let daemon = crate::launch::start(cmd, &dir.join("trace2ed.log"), Duration::from_secs(30))?;
        Ok(Self { dir, bin_dir, p2m, o2m, _daemon: daemon })
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn show(&self, who: &str, args: &[&str], out: &Output) {
        println!("  $ {who} {}", args.join(" ").replace(&format!("{}/", self.dir.display()), ""));
        for line in String::from_utf8_lossy(&out.stdout).lines().chain(String::from_utf8_lossy(&out.stderr).lines()) {
            println!("    {line}");
        }
    }

    /// Runs `trace2e-proc` in the demo directory; returns whether it was denied.
    fn process(&self, args: &[&str]) -> DemoResult<bool> {
        let out = Command::new(self.bin_dir.join("trace2e-proc"))
            .args(args)
            .current_dir(&self.dir)
            .env("TRACE2E_SOCKET", &self.p2m)
            .env_remove("TRACE2E_TRANSPORT")
            .stdin(Stdio::null())
            .output()?;
        self.show("trace2e-proc", args, &out);
        match out.status.code() {
            Some(0) => Ok(false),
            Some(13) => Ok(true),
            _ => {
                Err(format!("trace2e-proc {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr)).into())
            }
        }
    }

    /// Runs the operator CLI against the demo daemon; returns its stdout.
    fn operator(&self, args: &[&str]) -> DemoResult<String> {
        let out = Command::new(self.bin_dir.join("trace2e"))
            .arg("--socket")
            .arg(&self.o2m)
            .args(args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .output()?;
        self.show("trace2e", args, &out);
        if !out.status.success() {
            return Err(format!("trace2e {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr)).into());
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

fn expect(ok: bool, what: &str) -> DemoResult<()> {
    if ok { Ok(()) } else { Err(format!("the demo did not go as told: {what}").into()) }
}

fn story(demo: &Demo) -> DemoResult<()> {
    let path = |name: &str| demo.file(name).display().to_string();
    let (cv, copy, report, payroll, archive) =
        (path("cv.txt"), path("cv-copy.txt"), path("report.txt"), path("payroll.txt"), path("archive.txt"));

    println!("\n1. Alice's CV enters the node, and two processes copy it around.");
    std::fs::write(&cv, "Alice — CV\nSkills: Rust, distributed systems\n")?;
    std::fs::write(&payroll, "salary records (integrity-protected)\n")?;
    expect(!demo.process(&["cp", &cv, &copy])?, "copying the CV is granted")?;
    expect(!demo.process(&["cp", &copy, &report])?, "copying the copy is granted")?;

    println!("\n2. Where did report.txt's data come from? The daemon recorded every flow.");
    let prov = demo.operator(&["provenance", &report])?;
    expect(
        prov.contains("cv.txt") && prov.contains("cv-copy.txt") && prov.contains("process://"),
        "provenance lists the CV, the copy and the processes",
    )?;

    println!("\n3. payroll.txt is protected: integrity level 1. trace2e-proc runs at level 0.");
    demo.operator(&["policy", "set", &payroll, "--integrity", "1"])?;
    expect(demo.process(&["cp", &report, &payroll])?, "writing low-integrity data into payroll.txt is denied")?;
    expect(std::fs::read_to_string(&payroll)?.starts_with("salary records"), "payroll.txt is untouched")?;

    println!("\n4. Alice asks for her CV to be deleted. Every copy made from it is now frozen.");
    demo.operator(&["delete", &cv])?;
    expect(demo.process(&["cp", &copy, &archive])?, "copying data derived from the deleted CV is denied")?;

    println!("\n5. The audit trail: who was denied what, and why.");
    let audit = demo.operator(&["audit", "--decision", "denied"])?;
    expect(audit.contains("integrity") && audit.contains("deletion"), "the audit trail lists both denials")?;

    println!("\nDone: provenance answered, an integrity and a deletion denial enforced and audited.");
    Ok(())
}

/// Runs the demo.
pub async fn run(args: &DemoArgs) -> DemoResult<()> {
    let tmp = tempdir()?;
    println!("trace2e demo — a daemon and real processes in {}", tmp.display());
    let keep = args.keep;
    let result = tokio::task::spawn_blocking({
        let tmp = tmp.clone();
        move || -> Result<(), String> {
            let demo = Demo::start(tmp).map_err(|e| e.to_string())?;
            let r = story(&demo).map_err(|e| e.to_string());
            // Stops the daemon before its directory is removed.
            drop(demo);
            r
        }
    })
    .await
    .map_err(|e| e.to_string())
    .and_then(|r| r);
    if keep {
        println!("kept {} (daemon log: trace2ed.log)", tmp.display());
    } else {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result.map_err(Into::into)
}

fn tempdir() -> DemoResult<PathBuf> {
    let base = std::env::temp_dir();
    for attempt in 0..100u32 {
        let dir = base.join(format!("trace2e-demo-{}-{attempt}", std::process::id()));
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir.canonicalize()?),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err("cannot create a temporary directory".into())
}
