//! Compiles the XDP program (`src/bpf/xdpcopy.bpf.c`) with clang through libbpf-cargo; the object
//! is embedded in the binary with `include_bytes!` and loaded by `bpf::Program`.

use std::{env, path::PathBuf};

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
}
