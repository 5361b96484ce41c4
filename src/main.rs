use clap::Parser;

#[tokio::main]
async fn main() {
    rbd_provisioner::ceph::release_dead_stack();
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
    rbd_provisioner::ceph::exit_process(code)
}
