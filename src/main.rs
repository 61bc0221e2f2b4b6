//! `camxuc` command line. Every subcommand is a thin call into the library.
fn main() -> anyhow::Result<()> {
    Ok(())
}
