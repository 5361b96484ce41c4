use clap::Parser;

fn main() {
    // Before any other thread exists (the runtime's own): see limit_malloc_arenas.
    rbd_provisioner::process::limit_malloc_arenas();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("the tokio runtime")
        .block_on(run())
}

async fn run() {
    // Before any key is read: no core file and no same-uid process may read its memory.
    if let Err(e) = rbd_provisioner::process::forbid_dumps() {
        eprintln!("Error: cannot make the process non-dumpable (prctl PR_SET_DUMPABLE): {e}");
        rbd_provisioner::process::exit_process(1);
    }
    rbd_provisioner::process::release_dead_stack();
    let code = match rbd_provisioner::app::run(rbd_provisioner::app::Cli::parse()).await {
        Ok(()) => 0,
        Err(e) => {
            // Errors may quote objects (names, parameter values) that others can write.
            for line in format!("Error: {e:?}").lines() {
                eprintln!("{}", rbd_provisioner::text::escape(line));
            }
            1
        }
    };
    // Not a return from main: see exit_process.
    rbd_provisioner::process::exit_process(code)
}
