//! `tessera-agent`: the node agent. Not built yet (tracked by the node agent issue); it refuses
//! to start rather than pretend to enforce anything.

fn main() -> std::process::ExitCode {
    eprintln!("tessera-agent: the node agent is not implemented yet; nothing is enforced by this build");
    std::process::ExitCode::from(2)
}
