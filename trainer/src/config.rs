//! Experiments as TOML files: `--config exp.toml` expands to the flags it names, placed before
//! the flags given on the command line, so the command line overrides the file.
//!
//! ```toml
//! method = "reg-paml"
//! gamma = 1e-3
//! hidden = [64, 64]
//! first_order = false
//! ```
//! Keys are flag names (`inner_lr` or `inner-lr`); `true` sets a switch, `false` leaves it off;
//! arrays become comma-separated lists.

use std::ffi::OsString;

use anyhow::{bail, Context, Result};

/// Replaces `--config PATH` (or `--config=PATH`) in `args` by the flags of that TOML file.
pub fn expand_config_args(args: Vec<OsString>) -> Result<Vec<OsString>> {
    let Some(position) = args.iter().position(|a| a == "--config" || a.to_string_lossy().starts_with("--config="))
    else {
        return Ok(args);
    };
    let flag = args[position].to_string_lossy().into_owned();
    let (path, taken) = match flag.strip_prefix("--config=") {
        Some(path) => (path.to_string(), 1),
        None => (args.get(position + 1).context("--config needs a file path")?.to_string_lossy().into_owned(), 2),
    };
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading experiment config {path}"))?;
    let table: toml::Table = toml::from_str(&text).with_context(|| format!("parsing {path}"))?;
    let mut expanded = Vec::new();
    for (key, value) in &table {
        let name = format!("--{}", key.replace('_', "-"));
        let scalar = |v: &toml::Value| -> Result<String> {
            Ok(match v {
                toml::Value::String(s) => s.clone(),
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Float(f) => f.to_string(),
                other => bail!("{path}: key '{key}': unsupported value {other}"),
            })
        };
        match value {
            toml::Value::Boolean(true) => expanded.push(OsString::from(name)),
            toml::Value::Boolean(false) => {}
            toml::Value::Array(items) => {
                let joined = items.iter().map(scalar).collect::<Result<Vec<_>>>()?.join(",");
                expanded.push(OsString::from(format!("{name}={joined}")));
            }
            other => expanded.push(OsString::from(format!("{name}={}", scalar(other)?))),
        }
    }
    let mut out: Vec<OsString> = args[..position].to_vec();
    out.extend(expanded);
    out.extend(args[position + taken..].iter().cloned());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_flags_come_before_command_line_flags() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("exp.toml");
        std::fs::write(
            &path,
            "method = \"paml\"\ninner_lr = 0.1\nhidden = [32, 16]\nfirst_order = true\nresume = false\n",
        )
        .unwrap();
        let args: Vec<OsString> = ["trainer", "train", "--config", path.to_str().unwrap(), "--inner-lr", "0.2"]
            .iter()
            .map(OsString::from)
            .collect();
        let out: Vec<String> =
            expand_config_args(args).unwrap().iter().map(|a| a.to_string_lossy().into_owned()).collect();
        assert_eq!(
            out,
            [
                "trainer",
                "train",
                "--first-order",
                "--hidden=32,16",
                "--inner-lr=0.1",
                "--method=paml",
                "--inner-lr",
                "0.2"
            ]
        );
    }

    #[test]
    fn bad_files_are_named() {
        let args = ["trainer", "train", "--config=/nonexistent/exp.toml"].iter().map(OsString::from).collect();
        let error = format!("{:#}", expand_config_args(args).unwrap_err());
        assert!(error.contains("/nonexistent/exp.toml"), "{error}");
    }
}
