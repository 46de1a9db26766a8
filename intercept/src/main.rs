//! `xdpcopy-intercept`: the assist-server side of session replay (arrives with issue 3).
#![deny(unsafe_code)]

fn main() {
    eprintln!("xdpcopy-intercept: not implemented yet (session replay, issue 3)");
    std::process::exit(2);
}
