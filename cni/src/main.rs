//! `tessera-cni`: the CNI plugin. Not built yet (tracked by the node agent issue); every call
//! fails with a CNI error, so a runtime never starts a pod believing it is networked.

fn main() -> std::process::ExitCode {
    // CNI errors go to stdout as JSON; codes above 99 are the plugin's own.
    println!(r#"{{"cniVersion":"1.1.0","code":100,"msg":"tessera-cni is not implemented yet"}}"#);
    std::process::ExitCode::from(1)
}
