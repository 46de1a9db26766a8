//! Compiles the BPF programs with clang through libbpf-cargo: the XDP program
//! (`src/bpf/xdpcopy.bpf.c`, loaded by `bpf::Program`) and the egress program of
//! `xdpcopy-intercept --local` (`src/bpf/egress.bpf.c`, loaded by `bpf::egress::EgressProgram`).
//! The objects are embedded in the binaries with `include_bytes!`. Also records the git commit
//! (`XDPCOPY_GIT_COMMIT`, for `--version`, the summary and the run metadata).

use std::{env, path::PathBuf, process::Command};

use libbpf_cargo::SkeletonBuilder;

const SOURCES: [(&str, &str); 2] =
    [("src/bpf/xdpcopy.bpf.c", "xdpcopy.bpf.o"), ("src/bpf/egress.bpf.c", "egress.bpf.o")];

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR is set by cargo"));
    let arch_include = format!("-I/usr/include/{}-linux-gnu", env::consts::ARCH);
    for (src, obj) in SOURCES {
        let result = SkeletonBuilder::new()
            .source(src)
            .obj(out.join(obj))
            .clang_args([arch_include.as_str(), "-Wall", "-O2"])
            .build();
        if let Err(e) = result {
            panic!(
                "building the BPF program {src} failed: {e:#}\n\
                 install clang and libelf-dev (scripts/setup.sh does it)"
            );
        }
        println!("cargo:rerun-if-changed={src}");
    }
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
