//! Command-line settings: the rule of every numeric flag (one place, checked when the command
//! line is parsed, with the rule in the message), and experiments as TOML files.
//!
//! `--config exp.toml` expands to the flags it names, placed before the flags given on the
//! command line, so the command line overrides the file:
//!
//! ```toml
//! method = "reg-paml"
//! gamma = 1e-3
//! hidden = [64, 64]
//! first_order = false
//! ```
//! Keys are flag names (`inner_lr` or `inner-lr`) of the subcommand the file is given to; `true`
//! sets a switch, `false` leaves it off; arrays become comma-separated lists; a flag also given
//! on the command line is taken from there. An unknown key or a value the flag does not accept
//! is an error naming the file and the key.

use std::ffi::OsString;
use std::fmt::Display;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Arg, ArgAction, Command};

/// The rule of a whole-number flag: a value in `min..=max` (`i128::MAX`: no upper bound).
#[derive(Debug, Clone, Copy)]
pub struct Whole {
    /// What the value is, as in "-1 is not a valid count".
    pub what: &'static str,
    /// Smallest value allowed.
    pub min: i128,
    /// Largest value allowed.
    pub max: i128,
    /// Why the bound is there (appended to the rule), or "".
    pub why: &'static str,
}

impl Whole {
    /// The rule in words: "expected a whole number >= 1".
    pub fn rule(&self) -> String {
        let range =
            if self.max == i128::MAX { format!(">= {}", self.min) } else { format!("in {}..={}", self.min, self.max) };
        format!("expected a whole number {range}{}", self.why)
    }

    /// Whether `value` follows the rule (`Err`: the rule).
    pub fn check(&self, value: impl TryInto<i128>) -> Result<(), String> {
        match value.try_into() {
            Ok(v) if (self.min..=self.max).contains(&v) => Ok(()),
            _ => Err(self.rule()),
        }
    }

    /// Parses a command-line value.
    pub fn parse<T: TryFrom<i128>>(&self, text: &str) -> Result<T, String> {
        let invalid = || format!("{text} is not a valid {}: {}", self.what, self.rule());
        let value: i128 = text.trim().parse().map_err(|_| invalid())?;
        self.check(value).map_err(|_| invalid())?;
        T::try_from(value).map_err(|_| invalid())
    }
}

/// The rule of a real-number flag: finite, above `min` (or at it when `inclusive`), below `max`.
#[derive(Debug, Clone, Copy)]
pub struct Real {
    /// What the value is, as in "-1 is not a valid learning rate".
    pub what: &'static str,
    /// Lower bound (`f64::NEG_INFINITY`: none).
    pub min: f64,
    /// Whether `min` itself is allowed.
    pub inclusive: bool,
    /// Upper bound, exclusive (`f64::INFINITY`: none).
    pub max: f64,
}

impl Real {
    /// The rule in words: "expected a finite number >= 0".
    pub fn rule(&self) -> String {
        let mut rule = String::from("expected a finite number");
        if self.min.is_finite() {
            rule += &format!(" {} {}", if self.inclusive { ">=" } else { ">" }, self.min);
        }
        if self.max.is_finite() {
            rule += &format!("{} < {:e}", if self.min.is_finite() { " and" } else { "" }, self.max);
        }
        rule
    }

    /// Whether `value` follows the rule (`Err`: the rule).
    pub fn check(&self, value: f64) -> Result<(), String> {
        let above = value > self.min || (self.inclusive && value == self.min);
        if value.is_finite() && above && value < self.max {
            Ok(())
        } else {
            Err(self.rule())
        }
    }

    /// Parses a command-line value.
    pub fn parse(&self, text: &str) -> Result<f64, String> {
        let invalid = || format!("{text} is not a valid {}: {}", self.what, self.rule());
        let value: f64 = text.trim().parse().map_err(|_| invalid())?;
        self.check(value).map_err(|_| invalid())?;
        Ok(value)
    }
}

/// A [`Whole`] rule with an upper bound whose message keeps the rule's own for values below it
/// (`0 is not a valid width: expected a whole number >= 1`), and names the range above it
/// (`5000 is not a valid width: expected a whole number in 1..=4096`).
#[derive(Debug, Clone, Copy)]
pub struct Capped {
    /// The rule below the cap.
    pub rule: Whole,
    /// Largest value allowed.
    pub max: i128,
    /// Why the cap is there (appended to the rule), or "".
    pub why: &'static str,
}

impl Capped {
    fn above(&self) -> String {
        format!("expected a whole number in {}..={}{}", self.rule.min, self.max, self.why)
    }

    /// Whether `value` follows the rule and the cap (`Err`: the rule).
    pub fn check(&self, value: impl TryInto<i128>) -> Result<(), String> {
        let value: i128 = value.try_into().map_err(|_| self.above())?;
        self.rule.check(value)?;
        if value > self.max {
            return Err(self.above());
        }
        Ok(())
    }

    /// Parses a command-line value.
    pub fn parse<T: TryFrom<i128>>(&self, text: &str) -> Result<T, String> {
        let value: i128 = self.rule.parse(text)?;
        let invalid = || format!("{text} is not a valid {}: {}", self.rule.what, self.above());
        if value > self.max {
            return Err(invalid());
        }
        T::try_from(value).map_err(|_| invalid())
    }
}

/// A count of things or repetitions: epochs, patience, users per batch, AT-PAML's memory and
/// neighbours, HML's initialisations, ALS sweeps, report seeds.
pub const COUNT: Whole = Whole { what: "count", min: 1, max: i128::MAX, why: "" };
/// `report --seeds`: each seed trains every method.
pub const SEEDS: Capped = Capped { rule: COUNT, max: 1000, why: "" };
/// --seed: any 64-bit unsigned number.
pub const SEED: Whole = Whole { what: "seed", min: 0, max: u64::MAX as i128, why: "" };
/// A count that may be zero (AT-PAML's warm-up: values below --neighbours act as --neighbours).
pub const COUNT_OR_ZERO: Whole = Whole { what: "count", min: 0, max: i128::MAX, why: "" };
/// A layer width: --embedding-dim, --hidden, --lr-hidden (a wider layer's weights alone would
/// take gigabytes; libtorch's failed allocation is a panic).
pub const WIDTH: Capped = Capped { rule: Whole { what: "width", min: 1, max: i128::MAX, why: "" }, max: 4096, why: "" };
/// --threads (each OpenMP worker reserves its stack up front).
pub const THREADS: Whole = Whole { what: "thread count", min: 1, max: 1024, why: "" };
/// --memory-size: AT-PAML's memory rows.
pub const MEMORY_SIZE: Capped = Capped { rule: COUNT, max: 1 << 20, why: "" };
/// --neighbours: AT-PAML's K, at most what the runtime searches for.
pub const NEIGHBOURS: Capped = Capped {
    rule: COUNT,
    max: metarec_runtime::format::MAX_NEIGHBOURS as i128,
    why: " (the on-device runtime's limit)",
};
/// --inits: HML's initialisations, each a copy of the decision MLP.
pub const INITS: Capped = Capped { rule: COUNT, max: 64, why: "" };
/// --inner-steps: at least one step (zero adapts nothing), at most what the runtime runs.
pub const INNER_STEPS: Whole = Whole {
    what: "step count",
    min: 1,
    max: metarec_runtime::MAX_STEPS as i128,
    why: " (the on-device runtime's limit)",
};
/// --mf-factors (0: the bias model).
pub const MF_FACTORS: Whole = Whole {
    what: "factor count",
    min: 0,
    max: metarec_runtime::factors::MAX_FACTORS as i128,
    why: " (the on-device runtime's limit)",
};
/// --inner-lr (0 keeps the initialisation).
pub const INNER_LR: Real = Real { what: "learning rate", min: 0.0, inclusive: true, max: f64::INFINITY };
/// --outer-lr.
pub const OUTER_LR: Real = Real { what: "learning rate", min: 0.0, inclusive: false, max: f64::INFINITY };
/// --gamma, --gammas: REG-PAML's regularizer weight.
pub const WEIGHT: Real = Real { what: "weight", min: 0.0, inclusive: true, max: f64::INFINITY };
/// --delta: AT-PAML's kernel width.
pub const KERNEL_WIDTH: Real = Real { what: "kernel width", min: 0.0, inclusive: false, max: f64::INFINITY };
/// --mf-lambda, --mf-bias-lambda: the fold-in's ridge weights.
pub const RIDGE: Real = Real { what: "ridge weight", min: 0.0, inclusive: false, max: 1e30 };
/// --click-threshold: a rating.
pub const RATING: Real = Real { what: "rating", min: f64::NEG_INFINITY, inclusive: false, max: f64::INFINITY };

/// `value_parser` of [`COUNT`] flags.
pub fn count(text: &str) -> Result<usize, String> {
    COUNT.parse(text)
}
/// `value_parser` of [`COUNT_OR_ZERO`] flags.
pub fn count_or_zero(text: &str) -> Result<usize, String> {
    COUNT_OR_ZERO.parse(text)
}
/// `value_parser` of [`WIDTH`] flags.
pub fn width(text: &str) -> Result<i64, String> {
    WIDTH.parse(text)
}
/// `value_parser` of --memory-size.
pub fn memory_size(text: &str) -> Result<usize, String> {
    MEMORY_SIZE.parse(text)
}
/// `value_parser` of --neighbours.
pub fn neighbours(text: &str) -> Result<usize, String> {
    NEIGHBOURS.parse(text)
}
/// `value_parser` of --inits.
pub fn inits(text: &str) -> Result<usize, String> {
    INITS.parse(text)
}
/// `value_parser` of `report --seeds`.
pub fn seeds(text: &str) -> Result<u64, String> {
    SEEDS.parse(text)
}
/// `value_parser` of --seed.
pub fn seed(text: &str) -> Result<u64, String> {
    SEED.parse(text)
}
/// `value_parser` of --threads.
pub fn threads(text: &str) -> Result<i32, String> {
    THREADS.parse(text)
}
/// `value_parser` of --inner-steps.
pub fn inner_steps(text: &str) -> Result<u32, String> {
    INNER_STEPS.parse(text)
}
/// `value_parser` of --mf-factors.
pub fn mf_factors(text: &str) -> Result<usize, String> {
    MF_FACTORS.parse(text)
}
/// The rule of --dropout and --item-id-dropout: a share below 1.
pub const SHARE: Real = Real { what: "share", min: 0.0, inclusive: true, max: 1.0 };
/// `value_parser` of --dropout and --item-id-dropout.
pub fn share(text: &str) -> Result<f64, String> {
    SHARE.parse(text)
}
/// `value_parser` of --adapt: the runtime's spelling of each scope.
pub fn adapt(text: &str) -> Result<metarec_runtime::format::Adapt, String> {
    metarec_runtime::format::Adapt::from_name(text).ok_or_else(|| {
        let names: Vec<&str> = metarec_runtime::format::Adapt::ALL.iter().map(|a| a.name()).collect();
        format!("'{text}' is not a scope: expected one of {}", names.join(", "))
    })
}
/// `value_parser` of --inner-lr.
pub fn inner_lr(text: &str) -> Result<f64, String> {
    INNER_LR.parse(text)
}
/// `value_parser` of --outer-lr.
pub fn outer_lr(text: &str) -> Result<f64, String> {
    OUTER_LR.parse(text)
}
/// `value_parser` of --gamma and --gammas.
pub fn weight(text: &str) -> Result<f64, String> {
    WEIGHT.parse(text)
}
/// `value_parser` of --delta.
pub fn kernel_width(text: &str) -> Result<f64, String> {
    KERNEL_WIDTH.parse(text)
}
/// `value_parser` of --mf-lambda and --mf-bias-lambda.
pub fn ridge(text: &str) -> Result<f64, String> {
    let value = RIDGE.parse(text)?;
    check_ridge(value).map_err(|rule| format!("{text} is not a valid ridge weight: {rule}"))?;
    Ok(value)
}

/// The smallest ridge weight a model file may carry: the runtime's check of the fold-in wants
/// λ >= 1e-5 · (1 + |q_i|²) for every item (`metarec_runtime::factors::check`); a smaller one
/// (or one that is 0 in f32) makes the ridge solve singular.
pub const MIN_RIDGE: f64 = 1e-5;

/// [`RIDGE`] and [`MIN_RIDGE`] (`Err`: the rule).
pub fn check_ridge(value: f64) -> Result<(), String> {
    RIDGE.check(value)?;
    if value < MIN_RIDGE {
        return Err(format!(
            "expected a finite number >= {MIN_RIDGE:e} and < {:e} (the on-device runtime's limit)",
            RIDGE.max
        ));
    }
    Ok(())
}
/// `value_parser` of --click-threshold.
pub fn rating(text: &str) -> Result<f32, String> {
    let value = RATING.parse(text)?;
    let narrow = value as f32;
    if narrow.is_finite() {
        Ok(narrow)
    } else {
        Err(format!("{text} is not a valid rating: {}", RATING.rule()))
    }
}

/// The error of a flag whose value breaks its rule, for settings that did not come from the
/// command line (the library's callers): "--epochs 0: expected a whole number >= 1".
pub fn check_flag(flag: &str, value: impl Display, rule: Result<(), String>) -> Result<()> {
    rule.map_err(|rule| anyhow!("{flag} {value}: {rule}"))
}

/// `--preset`: a named set of `train` flags (the flags given on the command line, and those of
/// a `--config` file, override it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Preset {
    /// The product model: the defaults (item identity, item biases, the fold-in with item
    /// factors warm-started from matrix factorisation), chosen on validation users.
    #[default]
    Product,
    /// Each paper's published model: the decision MLP over field embeddings, every weight
    /// adapted by gradient steps, no item identity, no item biases, no regularisation.
    Paper,
}

impl Preset {
    /// The flags the preset sets (the product model's are the defaults: none).
    pub fn flags(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Preset::Product => &[],
            Preset::Paper => &[
                ("--item-id", "false"),
                ("--warm-users", "false"),
                ("--lazy-adam", "false"),
                ("--item-bias", "false"),
                ("--adapt", "all"),
                ("--item-factors", "false"),
                ("--item-id-dropout", "0"),
                ("--dropout", "0"),
                ("--embedding-decay", "0"),
                ("--proximal", "0"),
                ("--unadapted-loss", "0"),
                ("--rate-penalty", "0"),
                ("--init-choice", "query"),
                ("--shared-layers", "0"),
            ],
        }
    }
}

/// Expands `--preset NAME` (or `--preset=NAME`) of the subcommand `args[1]` into the preset's
/// flags, placed right after the subcommand so that every flag given later (on the command
/// line or from `--config`) overrides them. An unknown name, or `--preset` given to a subcommand
/// without it (found in `cli`), is left for clap to refuse.
pub fn expand_preset_args(args: Vec<OsString>, cli: &Command) -> Vec<OsString> {
    let takes_preset = args
        .get(1..2)
        .and_then(|words| subcommand_of(cli, words))
        .is_some_and(|command| command.get_arguments().any(|a| a.get_id() == "preset"));
    if !takes_preset {
        return args;
    }
    let value = args.iter().enumerate().find_map(|(i, a)| {
        let text = a.to_string_lossy();
        match text.strip_prefix("--preset") {
            Some("") => args.get(i + 1).map(|v| v.to_string_lossy().into_owned()),
            Some(rest) => rest.strip_prefix('=').map(str::to_string),
            None => None,
        }
    });
    let Some(preset) = value.and_then(|v| <Preset as clap::ValueEnum>::from_str(&v, false).ok()) else {
        return args;
    };
    if args.len() < 2 {
        return args;
    }
    let mut out: Vec<OsString> = args[..2].to_vec();
    out.extend(preset.flags().iter().flat_map(|(flag, value)| [OsString::from(flag), OsString::from(value)]));
    out.extend(args[2..].iter().cloned());
    out
}

/// Replaces `--config PATH` (or `--config=PATH`) in `args` by the flags of that TOML file, each
/// checked against the arguments of the subcommand it is given to (found in `cli`).
pub fn expand_config_args(args: Vec<OsString>, cli: &Command) -> Result<Vec<OsString>> {
    let Some(position) = args.iter().position(|a| a == "--config" || a.to_string_lossy().starts_with("--config="))
    else {
        return Ok(args);
    };
    let flag = args[position].to_string_lossy().into_owned();
    let (path, taken) = match flag.strip_prefix("--config=") {
        Some("") => bail!("--config needs a file path"),
        Some(path) => (path.to_string(), 1),
        None => (args.get(position + 1).context("--config needs a file path")?.to_string_lossy().into_owned(), 2),
    };
    let command = subcommand_of(cli, &args[1.min(position)..position])
        .context("--config goes after the subcommand, e.g. `trainer train --config exp.toml`")?;
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading experiment config {path}"))?;
    let table: toml::Table = toml::from_str(&text).with_context(|| format!("parsing {path}"))?;
    let given: Vec<String> = args
        .iter()
        .enumerate()
        .filter(|&(i, _)| i < position || i >= position + taken)
        .map(|(_, a)| a.to_string_lossy().into_owned())
        .collect();
    let mut expanded = Vec::new();
    for (key, value) in &table {
        let flags = key_flags(&path, command, key, value)?;
        // A flag on the command line wins: the file's is left out (lists would append to it).
        let long = format!("--{}", key.replace('_', "-"));
        if !given.iter().any(|a| *a == long || a.starts_with(&format!("{long}="))) {
            expanded.extend(flags);
        }
    }
    let mut out: Vec<OsString> = args[..position].to_vec();
    out.extend(expanded);
    out.extend(args[position + taken..].iter().cloned());
    Ok(out)
}

/// The (sub)command the words before `--config` name, when it takes flags (no subcommands).
fn subcommand_of<'a>(cli: &'a Command, words: &[OsString]) -> Option<&'a Command> {
    let mut command = cli;
    for word in words {
        if !command.has_subcommands() {
            break;
        }
        command = command.find_subcommand(word)?;
    }
    (!command.has_subcommands()).then_some(command)
}

/// The command-line flags of one key of a config file, checked by the flag's own parser.
fn key_flags(path: &str, command: &Command, key: &str, value: &toml::Value) -> Result<Vec<OsString>> {
    let long = key.replace('_', "-");
    let Some(arg) = command.get_arguments().find(|a| a.get_long() == Some(long.as_str())) else {
        bail!("{path}: unknown key '{key}'{}", suggestion(command, key));
    };
    let name = format!("--{long}");
    let switch = matches!(arg.get_action(), ArgAction::SetTrue);
    let scalar = |v: &toml::Value| -> Result<String> {
        Ok(match v {
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Datetime(d) => bail!("{path}: key '{key}': unsupported value {d} (a date or time)"),
            other => bail!("{path}: key '{key}': unsupported value {other}"),
        })
    };
    let flags = match value {
        toml::Value::Boolean(true) if switch => vec![OsString::from(name)],
        toml::Value::Boolean(false) if switch => Vec::new(),
        other if switch => bail!("{path}: key '{key}' is a switch: expected true or false, got {other}"),
        toml::Value::Boolean(b) => bail!("{path}: key '{key}' takes a value, not {b}"),
        toml::Value::Array(items) => {
            if !matches!(arg.get_action(), ArgAction::Append) && arg.get_value_delimiter().is_none() {
                bail!("{path}: key '{key}' takes one value, not a list");
            }
            let values = items.iter().map(scalar).collect::<Result<Vec<_>>>()?;
            match arg.get_value_delimiter() {
                Some(delimiter) => vec![OsString::from(format!("{name}={}", values.join(&delimiter.to_string())))],
                None => values.iter().map(|v| OsString::from(format!("{name}={v}"))).collect(),
            }
        }
        other => vec![OsString::from(format!("{name}={}", scalar(other)?))],
    };
    check_with_parser(arg, &flags).map_err(|message| anyhow!("{path}: key '{key}': {message}"))?;
    Ok(flags)
}

/// Runs the flag's own value parser (and its range) over `flags`; `Err`: clap's message.
fn check_with_parser(arg: &Arg, flags: &[OsString]) -> Result<(), String> {
    let probe = Command::new("config").no_binary_name(true).disable_help_flag(true).arg(arg.clone().required(false));
    probe.try_get_matches_from(flags).map(drop).map_err(|error| {
        let text = error.to_string();
        let first = text.split("\n\n").next().unwrap_or(&text);
        let lines: Vec<&str> = first.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
        lines.join(" ").trim_start_matches("error: ").to_string()
    })
}

/// " (did you mean 'hidden'?)" for the flag of `command` closest to `key`, in the key's style.
fn suggestion(command: &Command, key: &str) -> String {
    let wanted = key.replace('_', "-");
    let best = command
        .get_arguments()
        .filter(|a| !a.is_hide_set())
        .filter_map(Arg::get_long)
        .map(|long| (edit_distance(&wanted, long), long))
        .min();
    match best {
        Some((distance, long)) if distance <= 2.max(wanted.len() / 3) => {
            let spelt = if key.contains('_') { long.replace('-', "_") } else { long.to_string() };
            format!(" (did you mean '{spelt}'?)")
        }
        _ => format!(" (the keys are the flags of `trainer {} --help`)", command.get_name()),
    }
}

/// Levenshtein distance.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let substitution = previous + usize::from(ca != cb);
            previous = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(row[j + 1] + 1);
        }
    }
    row[b.len()]
}

#[cfg(all(test, feature = "torch"))]
mod tests {
    use clap::Args;

    use super::*;

    fn cli() -> Command {
        Command::new("trainer").subcommand(crate::train::TrainConfig::augment_args(Command::new("train")))
    }

    fn expand(args: &[&str]) -> Result<Vec<String>> {
        let args = args.iter().map(OsString::from).collect();
        Ok(expand_config_args(args, &cli())?.iter().map(|a| a.to_string_lossy().into_owned()).collect())
    }

    fn write(dir: &tempfile::TempDir, text: &str) -> String {
        let path = dir.path().join("exp.toml");
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_string()
    }

    #[test]
    fn file_flags_come_before_command_line_flags() {
        let dir = tempfile::tempdir().unwrap();
        let text = "method = \"paml\"\ninner_lr = 0.1\nhidden = [32, 16]\nfirst_order = true\nresume = false\n";
        let path = write(&dir, text);
        let out = expand(&["trainer", "train", "--config", &path, "--inner-lr", "0.2"]).unwrap();
        assert_eq!(out, ["trainer", "train", "--first-order", "--hidden=32,16", "--method=paml", "--inner-lr", "0.2"]);
        // A list on the command line replaces the file's (clap would append the two).
        let out = expand(&["trainer", "train", "--hidden=8", "--config", &path]).unwrap();
        assert_eq!(out, ["trainer", "train", "--hidden=8", "--first-order", "--inner-lr=0.1", "--method=paml"]);
    }

    #[test]
    fn bad_files_are_named() {
        let error = format!("{:#}", expand(&["trainer", "train", "--config=/nonexistent/exp.toml"]).unwrap_err());
        assert!(error.contains("/nonexistent/exp.toml"), "{error}");
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_file_and_the_key() {
        let dir = tempfile::tempdir().unwrap();
        for (text, expected) in [
            ("hiden = [32]", "unknown key 'hiden' (did you mean 'hidden'?)"),
            ("inner_lrr = 0.1", "unknown key 'inner_lrr' (did you mean 'inner_lr'?)"),
            ("zzzzzzzz = 1", "unknown key 'zzzzzzzz' (the keys are the flags of `trainer train --help`)"),
            ("epochs = \"many\"", "key 'epochs': invalid value 'many'"),
            ("epochs = 0", "0 is not a valid count: expected a whole number >= 1"),
            ("epochs = [1, 2]", "key 'epochs' takes one value, not a list"),
            ("quiet = 3", "key 'quiet' is a switch: expected true or false, got 3"),
            ("epochs = true", "key 'epochs' takes a value, not true"),
            ("method = \"mellu\"", "key 'method': invalid value 'mellu'"),
            ("hidden = [32, -1]", "-1 is not a valid width"),
        ] {
            let path = write(&dir, text);
            let error = format!("{:#}", expand(&["trainer", "train", "--config", &path]).unwrap_err());
            assert!(error.starts_with(&format!("{path}: ")) && error.contains(expected), "{text}: {error}");
        }
    }

    #[test]
    fn rules_name_the_value_and_the_range() {
        assert_eq!(count("-1").unwrap_err(), "-1 is not a valid count: expected a whole number >= 1");
        assert_eq!(
            inner_steps("1001").unwrap_err(),
            "1001 is not a valid step count: expected a whole number in 1..=1000 (the on-device runtime's limit)"
        );
        assert_eq!(inner_lr("nan").unwrap_err(), "nan is not a valid learning rate: expected a finite number >= 0");
        assert_eq!(outer_lr("0").unwrap_err(), "0 is not a valid learning rate: expected a finite number > 0");
        assert_eq!(
            ridge("1e31").unwrap_err(),
            "1e31 is not a valid ridge weight: expected a finite number > 0 and < 1e30"
        );
        assert_eq!(rating("inf").unwrap_err(), "inf is not a valid rating: expected a finite number");
        assert_eq!(rating("1e39").unwrap_err(), "1e39 is not a valid rating: expected a finite number");
        assert_eq!(count("3").unwrap(), 3);
        assert_eq!(mf_factors("0").unwrap(), 0);
        assert_eq!(weight("0").unwrap(), 0.0);
        assert_eq!(edit_distance("hiden", "hidden"), 1);
    }
}
