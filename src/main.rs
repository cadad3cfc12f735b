//! The `csync` binary: everything lives in the library; see `csync::cli`.

fn main() -> std::process::ExitCode {
    csync::cli::main()
}
