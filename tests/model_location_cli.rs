//! Where the real binary finds its models: the models folder (`$CAMXUC_MODELS_DIR`, else
//! `./models` in a camxuc checkout, else the per-user data folder), the acoustic model
//! (`--model`, else `$CAMXUC_MODEL`, else `<models folder>/acoustic/default`), the stderr line
//! naming the model and why, and `refine` / `calibrate` refusing to write into the default
//! model.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use camxuc::acoustic::train_model;
use camxuc::data::synth::{synthesize, SynthOptions};

mod common;

const BIN: &str = env!("CARGO_BIN_EXE_camxuc");

/// `camxuc ARGS` in `cwd` with `models` as the models folder and no `$CAMXUC_MODEL`.
fn camxuc(cwd: &Path, models: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(cwd)
        .env("CAMXUC_MODELS_DIR", models)
        .env_remove("CAMXUC_MODEL")
        // The copy built into the binary would otherwise answer for a missing model.
        .env("CAMXUC_EMBEDDED_MODEL", "0")
        .output()
        .expect("run camxuc")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The one `error:` line of a run that exited with 1.
fn error_line(o: &Output) -> String {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(lines.len(), 1, "{err}");
    lines[0].to_string()
}

/// Every file under `dir` with its bytes, to show that a refused command changed nothing.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect();
    files.sort();
    files
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for f in std::fs::read_dir(from).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), to.join(f.file_name())).unwrap();
    }
}

#[test]
fn the_default_model_is_used_and_refine_and_calibrate_do_not_change_it() {
    if !common::espeak_or_skip() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().canonicalize().unwrap();
    // 24 clips of 3 voices: enough held-out predictions for refine.
    let manifest = synthesize(
        &SynthOptions {
            out: root.join("corpus"),
            per_class: 8,
            speakers: 3,
            seed: 4,
            ..Default::default()
        },
        &mut |_, _| {},
    )
    .unwrap()
    .manifest;
    let models = root.join("models");
    let default = models.join("acoustic/default");
    let mut opts = common::light_options(manifest.clone(), default.clone(), 1, 0, 3);
    opts.oof_folds = 2;
    train_model(&opts, &mut |_| {}).unwrap();
    let clip = camxuc::data::manifest::Manifest::load_unlabelled(&manifest)
        .unwrap()
        .rows[0]
        .path
        .clone();
    let clip = clip.to_str().unwrap();
    let m = manifest.to_str().unwrap();

    // No --model, no $CAMXUC_MODEL: the default model, said so on stderr.
    let o = camxuc(&root, &models, &["classify", "--llm", "none", clip]);
    assert!(o.status.success(), "{}", stderr(&o));
    let said = format!(
        "model: {} (the default model in the models folder)",
        default.display()
    );
    assert!(stderr(&o).lines().any(|l| l == said), "{}", stderr(&o));

    // refine and calibrate refuse to write into it, say what to do, and change nothing.
    let before = snapshot(&default);
    for command in ["refine", "calibrate"] {
        let o = camxuc(&root, &models, &[command, "--manifest", m]);
        let line = error_line(&o);
        for needle in [
            command,
            "does not change the default model",
            &default.display().to_string(),
            "--model",
        ] {
            assert!(line.contains(needle), "lacks '{needle}': {line}");
        }
    }
    assert_eq!(snapshot(&default), before, "the default model was changed");

    // $CAMXUC_MODEL comes before the default, and --model before both.
    let copy = root.join("my-model");
    copy_dir(&default, &copy);
    let other = root.join("other-model");
    copy_dir(&default, &other);
    let o = Command::new(BIN)
        .args(["classify", "--llm", "none", clip])
        .current_dir(&root)
        .env("CAMXUC_MODELS_DIR", &models)
        .env("CAMXUC_MODEL", &copy)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let said = format!("model: {} (from CAMXUC_MODEL)", copy.display());
    assert!(stderr(&o).lines().any(|l| l == said), "{}", stderr(&o));
    let o = Command::new(BIN)
        .args(["classify", "--llm", "none", "--model"])
        .arg(&other)
        .arg(clip)
        .current_dir(&root)
        .env("CAMXUC_MODELS_DIR", &models)
        .env("CAMXUC_MODEL", &copy)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let said = format!("model: {} (from --model)", other.display());
    assert!(stderr(&o).lines().any(|l| l == said), "{}", stderr(&o));

    // A copy given with --model is refined: the rounds are written there, not in the default.
    let rounds = |dir: &Path| -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.starts_with("rules.v"))
            .collect()
    };
    for n in rounds(&copy) {
        std::fs::remove_file(copy.join(n)).unwrap();
    }
    let o = camxuc(
        &root,
        &models,
        &["refine", "--manifest", m, "--model", copy.to_str().unwrap()],
    );
    assert!(o.status.success(), "{}\n{}", stdout(&o), stderr(&o));
    assert!(!rounds(&copy).is_empty(), "{}", stderr(&o));
    assert_eq!(snapshot(&default), before, "the default model was changed");
}

#[test]
fn without_a_model_the_error_lists_where_it_looked() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().canonicalize().unwrap();
    let models = root.join("models");
    for command in [
        vec!["classify", "clip.wav"],
        vec!["eval", "--manifest", "m.csv"],
        vec!["review", "--manifest", "m.csv", "--out", "q.csv"],
        vec!["refine", "--manifest", "m.csv"],
        vec!["calibrate", "--manifest", "m.csv"],
    ] {
        let line = error_line(&camxuc(&root, &models, &command));
        let default = models.join("acoustic/default");
        for needle in [
            "--model (not given)",
            "$CAMXUC_MODEL (not set)",
            &default.display().to_string(),
            "camxuc train",
            "--model DIR",
        ] {
            assert!(
                line.contains(needle),
                "{command:?}: lacks '{needle}': {line}"
            );
        }
    }
    // With the built-in copy on, it answers instead, written into the cache folder; refine
    // refuses to change it like the installed default.
    let o = Command::new(BIN)
        .args(["refine", "--manifest", "m.csv"])
        .current_dir(&root)
        .env("CAMXUC_MODELS_DIR", &models)
        .env_remove("CAMXUC_MODEL")
        .env_remove("CAMXUC_EMBEDDED_MODEL")
        .env("XDG_CACHE_HOME", root.join("cache"))
        .output()
        .expect("run camxuc");
    let err = stderr(&o);
    assert!(!o.status.success());
    assert!(err.contains("built into camxuc"), "{err}");
    assert!(err.contains("does not change the default model"), "{err}");
    let cached = std::fs::read_dir(root.join("cache/camxuc"))
        .unwrap()
        .count();
    assert_eq!(cached, 1, "one copy of the built-in model in the cache");
}

#[test]
fn models_list_says_where_the_models_folder_is_and_why() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().canonicalize().unwrap();
    let folder_line = |o: &Output| {
        assert!(o.status.success(), "{}", stderr(o));
        stdout(o)
            .lines()
            .find(|l| l.starts_with("models folder: "))
            .unwrap_or_else(|| panic!("no models folder line:\n{}", stdout(o)))
            .to_string()
    };

    // $CAMXUC_MODELS_DIR, made absolute.
    let o = camxuc(&root, Path::new("rel"), &["models", "list"]);
    assert_eq!(
        folder_line(&o),
        format!(
            "models folder: {} (from CAMXUC_MODELS_DIR)",
            root.join("rel").display()
        )
    );

    // Outside a checkout, without the variable: the per-user data folder (XDG on Linux).
    let run_without_variable = |cwd: &Path| {
        Command::new(BIN)
            .args(["models", "list"])
            .current_dir(cwd)
            .env_remove("CAMXUC_MODELS_DIR")
            .env("HOME", root.join("home"))
            .env("XDG_DATA_HOME", root.join("xdg"))
            .output()
            .unwrap()
    };
    let line = folder_line(&run_without_variable(&root));
    assert!(line.contains("per-user data folder"), "{line}");
    assert!(line.contains("CAMXUC_MODELS_DIR"), "{line}");
    if cfg!(target_os = "linux") {
        assert!(
            line.contains(&root.join("xdg/camxuc/models").display().to_string()),
            "{line}"
        );
    }

    // In a camxuc checkout: its ./models.
    let checkout = root.join("checkout");
    std::fs::create_dir_all(&checkout).unwrap();
    std::fs::write(
        checkout.join("Cargo.toml"),
        "[package]\nname = \"camxuc\"\nversion = \"0.1.0\"\n",
    )
    .unwrap();
    let line = folder_line(&run_without_variable(&checkout));
    assert_eq!(
        line,
        format!(
            "models folder: {} (the current folder is a camxuc checkout; set CAMXUC_MODELS_DIR to change)",
            checkout.join("models").display()
        )
    );

    // A catalogued model that is not installed: the error names the absolute path looked at.
    let line = error_line(&camxuc(
        &root,
        Path::new("rel"),
        &["models", "bench", "smollm2-135m"],
    ));
    assert!(
        line.contains(&root.join("rel/smollm2-135m").display().to_string())
            && line.contains("camxuc models fetch smollm2-135m"),
        "{line}"
    );
}

#[test]
fn models_path_prints_the_file_a_spec_names_or_says_why_there_is_none() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().canonicalize().unwrap();
    let models = root.join("models");

    // Not installed: the same error as every other command that needs the model.
    let line = error_line(&camxuc(&root, &models, &["models", "path", "smollm2-135m"]));
    assert!(
        line.contains(&models.join("smollm2-135m").display().to_string())
            && line.contains("camxuc models fetch smollm2-135m"),
        "{line}"
    );

    // Installed where the catalogue puts it: its path on stdout, nothing else.
    let entry = camxuc::catalog::entry("smollm2-135m").unwrap();
    let installed = entry.main_path(&models);
    std::fs::create_dir_all(installed.parent().unwrap()).unwrap();
    std::fs::write(&installed, b"GGUF").unwrap();
    let o = camxuc(&root, &models, &["models", "path", "smollm2-135m"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), format!("{}\n", installed.display()));

    // A path is its own answer; a missing one is an error naming it; an unknown name lists
    // the catalogue.
    let o = camxuc(
        &root,
        &models,
        &["models", "path", installed.to_str().unwrap()],
    );
    assert_eq!(stdout(&o), format!("{}\n", installed.display()));
    let missing = root.join("nowhere.gguf");
    let line = error_line(&camxuc(
        &root,
        &models,
        &["models", "path", missing.to_str().unwrap()],
    ));
    assert!(line.contains("nowhere.gguf"), "{line}");
    let line = error_line(&camxuc(
        &root,
        &models,
        &["models", "path", "no-such-model"],
    ));
    assert!(
        line.contains("no-such-model") && line.contains("smollm2-135m"),
        "{line}"
    );
    let line = error_line(&camxuc(&root, &models, &["models", "path", "none"]));
    assert!(line.contains("none"), "{line}");
}
