use super::Session;
pub(super) fn run(_s: &mut Session) -> std::io::Result<()> {
    Ok(())
}
