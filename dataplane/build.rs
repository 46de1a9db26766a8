//! Compiles the BPF programs with clang through libbpf-cargo: the XDP program
//! (`src/bpf/xdpcopy.bpf.c`, loaded by `bpf::Program`) and the egress program of
//! `xdpcopy-intercept --local` (`src/bpf/egress.bpf.c`, loaded by `bpf::egress::EgressProgram`).
//! The objects are embedded in the binaries with `include_bytes!`.

use std::{env, path::PathBuf};

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
}
