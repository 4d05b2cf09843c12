//! A training run on disk: `run.json` (settings, dataset fingerprint, results), the split, and
//! the best weights. `train` writes it; `eval` and `export` read it.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use tch::{Device, Tensor};

use crate::data::{Dataset, Format, LoadOptions};
use crate::eval::UserPredictions;
use crate::method::Method;
use crate::mf::FactorModel;
use crate::model::{MetaModel, ModelSpec};
use crate::objective::Loss as _;
use crate::split::{Split, Task};

/// What a run trained: a meta-learned model on libtorch, or a matrix factorisation.
#[derive(Debug)]
pub enum Trained {
    /// Every method but `mf` (boxed: the two sizes differ by far).
    Meta(Box<MetaModel>),
    /// `--method mf`.
    Factors(FactorModel),
}

impl Trained {
    /// The method's rows on `tasks`: adapted, and (for adapting methods) without adaptation.
    pub fn rows(&self, tasks: &[Task]) -> Vec<(String, Vec<UserPredictions>)> {
        match self {
            Trained::Meta(model) => crate::eval::method_rows(model, tasks),
            Trained::Factors(model) => model.rows(tasks),
        }
    }
}

/// Settings and results of a run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunInfo {
    /// Dataset directory the run was trained on.
    pub data: PathBuf,
    /// Fingerprint of the dataset's vocabularies and catalogue.
    pub fingerprint: u32,
    /// Dataset format as given to `train` (None: detected).
    #[serde(default)]
    pub format: Option<Format>,
    /// Whether malformed rows were skipped.
    #[serde(default)]
    pub skip_invalid: bool,
    /// Whether the item id was added as an item field.
    #[serde(default)]
    pub item_id: bool,
    /// Whether the split's existing (warm) users joined the training users (`--warm-users`).
    #[serde(default)]
    pub warm_users: bool,
    /// Whether the lookup tables were stepped by lazy (row-sparse) Adam (`--lazy-adam`; runs
    /// from before the flag read as off, dense Adam).
    #[serde(default)]
    pub lazy_adam: bool,
    /// Seed of the split and the initialisation.
    pub seed: u64,
    /// Method, shape and inner loop.
    pub spec: ModelSpec,
    /// Whether the outer gradient skipped the inner loop's second-order terms.
    pub first_order: bool,
    /// Mean training rating (click rate for the click task).
    pub global_mean: f32,
    /// Epoch whose weights were kept (best validation loss), 1-based.
    pub best_epoch: usize,
    /// Validation loss of the kept weights (MSE, or log loss for the click task).
    #[serde(alias = "best_valid_mse")]
    pub best_valid_loss: f64,
    /// Training and validation loss per epoch.
    pub history: Vec<EpochRecord>,
    /// Wall time of training in seconds.
    pub train_seconds: f64,
    /// Device trained on.
    pub device: String,
}

/// One epoch of a run's learning curve.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct EpochRecord {
    /// 1-based epoch.
    pub epoch: usize,
    /// Mean query loss (MSE or log loss) of the training users during the epoch.
    #[serde(alias = "train_mse")]
    pub train_loss: f64,
    /// Mean query loss of the validation users after the epoch.
    #[serde(alias = "valid_mse")]
    pub valid_loss: f64,
}

/// Files inside a run directory.
#[derive(Debug, Clone)]
pub struct RunDir(pub PathBuf);

impl RunDir {
    /// `run.json`.
    pub fn info_path(&self) -> PathBuf {
        self.0.join("run.json")
    }
    /// `split.csv`.
    pub fn split_path(&self) -> PathBuf {
        self.0.join("split.csv")
    }
    /// `weights.safetensors` (best epoch).
    pub fn weights_path(&self) -> PathBuf {
        self.0.join("weights.safetensors")
    }

    /// `factors.json` (`--method mf`: μ, item biases and factors of the best sweep).
    pub fn factors_path(&self) -> PathBuf {
        self.0.join("factors.json")
    }

    /// Writes a matrix factorisation atomically.
    pub fn save_factors(&self, model: &FactorModel) -> Result<()> {
        crate::fsutil::write_atomic(&self.factors_path(), serde_json::to_string(model)?.as_bytes())
    }

    /// `memory.ot` (AT-PAML's memory at the best epoch).
    pub fn memory_path(&self) -> PathBuf {
        self.0.join("memory.ot")
    }

    /// Saves the model's weights (and AT-PAML memory) atomically: temporary file, fsync, rename,
    /// so a crash or a full disk leaves the previous file whole and fails with an error. The
    /// memory is serialised in memory first (libtorch aborts the process when its own file writer
    /// fails); the weights go through the safetensors writer, whose errors are ordinary I/O errors.
    pub fn save_weights(&self, model: &MetaModel) -> Result<()> {
        if let Some(memory) = &model.memory {
            crate::fsutil::write_atomic(&self.memory_path(), &tensors_to_bytes(&memory.borrow().state())?)?;
        }
        let final_path = self.weights_path();
        // tch picks the format from the extension, so the temporary name keeps ".safetensors".
        let tmp = self.0.join(format!(".weights.tmp{}.safetensors", std::process::id()));
        let written = model
            .vs
            .save(&tmp)
            .map_err(anyhow::Error::from)
            .and_then(|()| std::fs::File::open(&tmp).and_then(|f| f.sync_all()).map_err(anyhow::Error::from))
            .and_then(|()| std::fs::rename(&tmp, &final_path).map_err(anyhow::Error::from));
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written.with_context(|| format!("writing {}", final_path.display()))
    }

    /// Writes `run.json` atomically.
    pub fn save_info(&self, info: &RunInfo) -> Result<()> {
        crate::fsutil::write_atomic(&self.info_path(), serde_json::to_string_pretty(info)?.as_bytes())
    }

    /// Loads a meta-learned run: settings, dataset (checked against the fingerprint), split and
    /// model. A matrix factorisation run is an error here: see [`RunDir::load_trained`].
    pub fn load(&self, device: Device) -> Result<(RunInfo, Dataset, Split, MetaModel)> {
        match self.load_trained(device)? {
            (info, data, split, Trained::Meta(model)) => Ok((info, data, split, *model)),
            (_, _, _, Trained::Factors(_)) => {
                bail!("{} holds a matrix factorisation (--method mf), not a meta-learned model", self.0.display())
            }
        }
    }

    /// Reads `run.json`.
    pub fn read_info(&self) -> Result<RunInfo> {
        let path = self.info_path();
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!("reading {} (is this a run directory written by `trainer train`?)", path.display())
        })?;
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }

    /// Removes the files of an earlier run (`--force`), and nothing else.
    pub fn remove_files(&self) -> Result<()> {
        for name in RUN_FILES {
            let path = self.0.join(name);
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(e).with_context(|| format!("removing {}", path.display()))
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Loads the run whatever it trained: settings, dataset (checked against the fingerprint),
    /// split and model.
    pub fn load_trained(&self, device: Device) -> Result<(RunInfo, Dataset, Split, Trained)> {
        self.load_trained_from(device, None)
    }

    /// [`RunDir::load_trained`] with the dataset read from `data` instead of the directory the
    /// run was trained on (`--data`: the dataset moved); the fingerprint check still applies.
    pub fn load_trained_from(
        &self,
        device: Device,
        data_override: Option<&Path>,
    ) -> Result<(RunInfo, Dataset, Split, Trained)> {
        let mut info = self.read_info()?;
        match data_override {
            Some(dir) if dir.is_file() => bail!("--data {} is a file, not a dataset directory", dir.display()),
            Some(dir) if !dir.is_dir() => bail!("--data {}: dataset directory does not exist", dir.display()),
            Some(dir) => info.data = dir.to_path_buf(),
            None if !info.data.is_dir() => bail!(
                "dataset directory {} (recorded in {}) does not exist; if it moved, pass its new place with --data DIR",
                info.data.display(),
                self.info_path().display()
            ),
            None => {}
        }
        let mut data =
            Dataset::load_with(&info.data, &LoadOptions { format: info.format, skip_invalid: info.skip_invalid })?;
        if info.item_id {
            data.add_item_id_field();
        }
        let fingerprint = fingerprint(&data);
        if fingerprint != info.fingerprint {
            if data_override.is_some() {
                bail!(
                    "--data {} is not the dataset the run was trained on (fingerprint {fingerprint:08x}, the run has \
                     {:08x})",
                    info.data.display(),
                    info.fingerprint
                );
            }
            bail!(
                "dataset {} changed since the run was trained (fingerprint {fingerprint:08x}, run has {:08x})",
                info.data.display(),
                info.fingerprint
            );
        }
        // The training users as the run trained on them (the warm part joined them or not).
        let mut split = Split::read(&data, &self.split_path())?.with_warm_users(info.warm_users);
        info.spec.objective.apply(&mut split);
        if info.spec.method == Method::Mf {
            let path = self.factors_path();
            let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
            let model: FactorModel =
                serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
            metarec_runtime::factors::check(&model.factors, data.items.len())
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            return Ok((info, data, split, Trained::Factors(model)));
        }
        let mut model = MetaModel::new(&data, &info.spec, info.global_mean, device);
        model.vs.load(self.weights_path()).with_context(|| format!("loading {}", self.weights_path().display()))?;
        if let Some(memory) = &model.memory {
            let named = load_tensors(&self.memory_path())
                .with_context(|| format!("loading {}", self.memory_path().display()))?
                .into_iter()
                .collect();
            memory.borrow_mut().load_state(&named)?;
        }
        Ok((info, data, split, Trained::Meta(Box::new(model))))
    }
}

/// The named tensors of a libtorch `.ot` file. libtorch appends its C++ stack trace ("Exception
/// raised from …", "frame #0: …") to the message of a file it cannot read; the error keeps the
/// message and leaves the trace out.
pub fn load_tensors(path: &Path) -> Result<Vec<(String, Tensor)>> {
    Tensor::load_multi(path).map_err(|error| {
        let text = error.to_string();
        let end = ["\nException raised from", "\nframe #"].iter().filter_map(|m| text.find(m)).min();
        anyhow::anyhow!("{}", text[..end.unwrap_or(text.len())].trim_end())
    })
}

/// Named tensors in libtorch's `.ot` format (what `Tensor::load_multi` reads), in memory: the
/// caller writes the bytes with [`crate::fsutil::write_atomic`]. Serialising to a file directly
/// would let libtorch abort the process when the disk fills up.
pub fn tensors_to_bytes<S: AsRef<str>, T: AsRef<Tensor>>(named: &[(S, T)]) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    Tensor::save_multi_to_stream(named, &mut bytes).context("serialising tensors")?;
    Ok(bytes)
}

/// CRC32 over field names, vocabularies and item and user ids: changes when the dataset's
/// feature space changes, so a run is never paired with the wrong embedding rows.
pub fn fingerprint(data: &Dataset) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    for field in data.user_fields.iter().chain(&data.item_fields) {
        hasher.update(field.name.as_bytes());
        hasher.update(&(field.rows() as u64).to_le_bytes());
        for value in &field.vocabulary {
            hasher.update(value.as_bytes());
            hasher.update(&[0]);
        }
    }
    for entity in data.users.iter().chain(&data.items) {
        hasher.update(entity.id.as_bytes());
        hasher.update(&[0]);
    }
    hasher.finalize()
}

/// The files a run directory holds: a directory with any of them holds an earlier run.
pub const RUN_FILES: [&str; 7] =
    ["run.json", "split.csv", "weights.safetensors", "memory.ot", "checkpoint.ot", "checkpoint.json", "factors.json"];

/// Refuses `--out DIR` for a new run when DIR is a file, or holds an earlier run and `force`
/// is off.
pub fn check_new_run(dir: &Path, force: bool) -> Result<()> {
    crate::fsutil::refuse_existing_in_dir("--out", dir, &RUN_FILES, "an earlier run", force)
}
