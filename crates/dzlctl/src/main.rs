//! The `dzlctl` binary: hands the command line to the library
//! ([`dzlctl::main_with_args`]) and exits with the code it returns.

fn main() -> std::process::ExitCode {
    std::process::ExitCode::from(dzlctl::main_with_args(std::env::args_os()))
}
