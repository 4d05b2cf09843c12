//! The dataset parsers: whatever the files hold, loading gives a dataset or an error, never a
//! panic (nor a hang or an unbounded allocation, which libFuzzer reports too).
//!
//! Input: one selector byte (format, `skip_invalid`), then the format's files separated by NUL
//! bytes, in the order of `FILES`; missing files stay absent. The files are written to a
//! scratch directory of this process and loaded with the trainer's own loader.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use metarec_trainer::data::{Dataset, Format, LoadOptions};

/// Each format's files, in the order the input gives them.
const FILES: [(Format, &[&str]); 5] = [
    (Format::Plain, &["schema.toml", "users.csv", "items.csv", "ratings.csv"]),
    (Format::Ml1m, &["users.dat", "movies.dat", "ratings.dat"]),
    (Format::Ml100k, &["u.user", "u.item", "u.data", "u.genre"]),
    (Format::MlLatest, &["movies.csv", "ratings.csv"]),
    (Format::BookCrossing, &["BX-Users.csv", "BX-Books.csv", "BX-Book-Ratings.csv"]),
];

fn scratch() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("metarec-fuzz-datasets-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create the scratch directory");
        dir
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let (format, names) = FILES[usize::from(selector) % FILES.len()];
    let skip_invalid = selector & 0x80 != 0;
    let dir = scratch();
    // Start from an empty directory: no file of an earlier input may leak into this one.
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    for (name, contents) in names.iter().zip(rest.split(|&b| b == 0)) {
        std::fs::write(dir.join(name), contents).expect("write a scratch file");
    }
    let options = LoadOptions { format: Some(format), skip_invalid };
    if let Ok(data) = Dataset::load_with(dir, &options) {
        // What loads is usable: the per-user views index within bounds.
        let by_user = data.ratings_by_user();
        assert_eq!(by_user.len(), data.users.len());
        assert_eq!(by_user.iter().map(Vec::len).sum::<usize>(), data.ratings.len());
    }
    // Detection never panics either, whatever files are there.
    let _ = Format::detect(dir);
});
