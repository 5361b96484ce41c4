//! What the benches share: the bench's bed (classes, secrets, peers, the CSI peer's processes), watches that time each
//! event, the figures and their percentiles, /proc readings, Prometheus text, the plots, and the cleanup.

pub mod bed;
pub mod cleanup;
pub mod csi;
pub mod figures;
pub mod plot;
pub mod procfs;
pub mod promtext;
pub mod watch;

/// A bench's `main`: runs `run` on a multi-threaded runtime and exits with the code it returns
/// (`cargo bench` passes harness arguments such as `--bench`; they are ignored).
pub fn run_main(run: impl std::future::Future<Output = i32>) -> ! {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let code = rt.block_on(run);
    std::process::exit(code);
}
