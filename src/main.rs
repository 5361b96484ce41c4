use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    rbd_provisioner::app::run(rbd_provisioner::app::Cli::parse()).await
}
