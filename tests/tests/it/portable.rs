//! Issue 16, portable speed: the x86-64 library is built for the baseline and picks its AVX2/FMA
//! kernels at run time. The C example, linked to the library under test, runs on an emulated
//! CPU without AVX (`qemu-x86_64 -cpu Nehalem`, where an AVX instruction raises SIGILL) and on
//! one with every feature (`-cpu max`), natively, and natively with the portable kernels forced
//! (`METAREC_PORTABLE=1`): every run gives the same top 10, scores equal to rounding.

use std::path::Path;
use std::process::{Command, Output};

use metarec_runtime::format::{encode, DenseLayer};
use metarec_tests::{model_body, UserFile, Weights};

use crate::support::{self, Sanitize};

/// The fixture model with 16-wide hidden layers (12 → 16 → 16 → 1): its scoring and adaptation
/// go through the register-tiled kernel, whose AVX2/FMA and portable versions differ.
fn wide_model(dir: &Path) -> std::path::PathBuf {
    let mut body = model_body(false);
    let mut w = Weights::new(0x0016_cafe);
    let input = body.layers[0].inputs as usize;
    let mut layer = |inputs: usize, outputs: usize, bias: f32| DenseLayer {
        inputs: inputs as u32,
        outputs: outputs as u32,
        weight: w.take(inputs * outputs, 1.0 / (inputs as f32).sqrt()),
        bias: w.take(outputs, 0.1).iter().map(|b| b + bias).collect(),
    };
    body.layers = vec![layer(input, 16, 0.1), layer(16, 16, 0.1), layer(16, 1, 3.5)];
    let path = dir.join("wide.mrec");
    std::fs::write(&path, encode(&body).expect("the wide model encodes")).expect("write the wide model");
    path
}

/// The top-10 block of a successful run: `(id, score)` per line.
fn top_ten(label: &str, output: &Output) -> Vec<(String, f32)> {
    let report = format!("{label}\n{}", support::describe(output));
    assert!(output.status.success(), "{report}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let ranked: Vec<(String, f32)> = support::top_block(&stdout)
        .iter()
        .skip(1)
        .map(|line| {
            let (_, rest) = line.trim_start().split_once(". ").expect("`N. id\\tscore`");
            let (id, score) = rest.split_once('\t').expect("`id\\tscore`");
            (id.to_owned(), score.parse().expect("score"))
        })
        .collect();
    assert_eq!(ranked.len(), 10, "{report}");
    ranked
}

#[test]
fn the_c_example_runs_without_avx_and_agrees_with_every_kernel() {
    if !cfg!(target_arch = "x86_64") || !support::have_program("qemu-x86_64") {
        eprintln!("note: not an x86-64 host, or qemu-user missing: skipped");
        return;
    }
    let dir = support::scratch_dir("portable");
    // No sanitizers: their runtimes do not run under qemu-user.
    let exe =
        support::compile_c(&support::repo_root().join("examples/c/personalize.c"), &dir, "personalize", Sanitize::None);
    let user = dir.join("user.tsv");
    std::fs::write(&user, UserFile::fixture().to_tsv()).unwrap();
    for model in [support::write_fixture_model(&dir), wide_model(&dir)] {
        // `qemu` empty: natively; `portable`: METAREC_PORTABLE=1.
        let run = |qemu: &[&str], portable: bool| {
            let mut command = match qemu {
                [] => Command::new(&exe),
                args => {
                    let mut command = Command::new("qemu-x86_64");
                    command.args(args).arg(&exe);
                    command
                }
            };
            // The rpath, not cargo's LD_LIBRARY_PATH (which may list another build's library
            // first), picks the library under test.
            command.arg(&model).arg(&user).env_remove("METAREC_PORTABLE").env_remove("LD_LIBRARY_PATH");
            if portable {
                command.env("METAREC_PORTABLE", "1");
            }
            command.output().expect("run the example")
        };
        let native = top_ten("native", &run(&[], false));
        let mut runs = vec![
            ("METAREC_PORTABLE=1", run(&[], true)),
            ("qemu-x86_64 -cpu Nehalem", run(&["-cpu", "Nehalem"], false)),
            ("qemu-x86_64 -cpu max", run(&["-cpu", "max"], false)),
        ];
        for (label, output) in runs.drain(..) {
            let top = top_ten(label, &output);
            for ((id, score), (want_id, want)) in top.iter().zip(&native) {
                assert_eq!(id, want_id, "{label} ranks otherwise than the native run\n{top:?}\n{native:?}");
                // Printed to 3 decimals: FMA's rounding may move the last one.
                assert!((score - want).abs() <= 2e-3, "{label}: {id} scores {score}, natively {want}");
            }
        }
    }
}
