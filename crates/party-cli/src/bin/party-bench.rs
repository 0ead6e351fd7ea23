//! `party-bench [--db URL] [--json] [--quick]`: the benchmark on its own.
//!
//! Also `party-bench --worker URL`: a worker with the built-in handlers that runs until SIGTERM,
//! which the benchmark starts as a separate process.

use party::{Party, WorkerConfig};
use party_cli::bench::{self, BenchOptions};

fn usage() -> ! {
    eprintln!("usage: party-bench [--db URL] [--json] [--quick]");
    std::process::exit(2)
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let mut db = std::env::var("PARTY_DATABASE_URL").unwrap_or_else(|_| party::DEFAULT_DATABASE.to_string());
    let (mut json, mut quick, mut worker) = (false, false, false);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--db" => db = args.next().unwrap_or_else(|| usage()),
            "--json" => json = true,
            "--quick" => quick = true,
            "--worker" => {
                worker = true;
                db = args.next().unwrap_or_else(|| usage());
            }
            _ => usage(),
        }
    }
    if worker {
        let code = match run_worker(&db).await {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("error: {e}");
                1
            }
        };
        std::process::exit(code);
    }
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "party-bench".to_string());
    let options = BenchOptions {
        quick,
        worker_command: vec![exe, "--worker".into(), "{db}".into()],
    };
    match bench::run(&db, &options).await {
        Ok(report) => {
            if json {
                println!("{}", serde_json::to_string_pretty(&report).expect("serializable"));
            } else {
                print!("{}", bench::table(&report));
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}

async fn run_worker(db: &str) -> Result<(), party::TaskError> {
    let party = Party::connect(db, party::builtin::registry(false)).await?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(party::TaskError::store)?;
    party
        .worker(WorkerConfig::default())
        .run(async move {
            term.recv().await;
        })
        .await?;
    Ok(())
}
