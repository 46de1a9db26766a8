//! Compiles the XDP program (`src/bpf/xdpcopy.bpf.c`) with clang through libbpf-cargo; the object
//! is embedded in the binary with `include_bytes!` and loaded by `bpf::Program`. Also records the
//! git commit (`XDPCOPY_GIT_COMMIT`, for `--version`, the summary and the run metadata).

use std::{env, path::PathBuf, process::Command};

use libbpf_cargo::SkeletonBuilder;

const SRC: &str = "src/bpf/xdpcopy.bpf.c";

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR is set by cargo"));
    let arch_include = format!("-I/usr/include/{}-linux-gnu", env::consts::ARCH);
    let result = SkeletonBuilder::new()
        .source(SRC)
        .obj(out.join("xdpcopy.bpf.o"))
        .clang_args([arch_include.as_str(), "-Wall", "-O2"])
        .build();
    if let Err(e) = result {
        panic!(
            "building the XDP program {SRC} failed: {e:#}\n\
             install clang and libelf-dev (scripts/setup.sh does it)"
        );
    }
    println!("cargo:rerun-if-changed={SRC}");
    git_commit();
}

/// Sets `XDPCOPY_GIT_COMMIT`: the environment's value if given (a build from a tarball), else
/// `git rev-parse`, else `unknown`. Reruns when HEAD or the branch it points to moves.
fn git_commit() {
    println!("cargo:rerun-if-env-changed=XDPCOPY_GIT_COMMIT");
    let git = |args: &[&str]| -> Option<String> {
        let out = Command::new("git").args(args).output().ok().filter(|o| o.status.success())?;
        Some(String::from_utf8(out.stdout).ok()?.trim().to_string()).filter(|s| !s.is_empty())
    };
    let commit = env::var("XDPCOPY_GIT_COMMIT")
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=XDPCOPY_GIT_COMMIT={commit}");
    // Only files that exist: a missing one would make cargo rerun this script on every build.
    let mut watch = vec![git(&["rev-parse", "--git-path", "HEAD"]), git(&["rev-parse", "--git-path", "packed-refs"])];
    if let Some(r) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watch.push(git(&["rev-parse", "--git-path", &r]));
    }
    for path in watch.into_iter().flatten() {
        if std::path::Path::new(&path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
}
