//! rust-hyper: the reference hash server in the seed's design, hyper on tokio's multi-threaded
//! runtime. The contract is the Python servers' (README.md, "The API").

mod connection;
mod handlers;
mod hashing;
mod serve;
mod settings;

use std::process::exit;

use settings::SERVER_NAME;

fn main() {
    let (settings, address) =
        match settings::load(&settings::process_env).and_then(|s| s.address().map(|a| (s, a))) {
            Ok(loaded) => loaded,
            Err(error) => {
                eprintln!("{}: {}", SERVER_NAME, error);
                exit(1);
            }
        };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(settings.workers)
        .enable_all()
        .build()
        .unwrap_or_else(|error| {
            eprintln!("{}: cannot start tokio's runtime ({}).", SERVER_NAME, error);
            exit(1);
        });
    if let Err(message) = runtime.block_on(serve::serve(&settings, address)) {
        eprintln!("{}: {}", SERVER_NAME, message);
        exit(1);
    }
}
