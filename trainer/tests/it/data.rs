//! Loading, generating and splitting datasets.

use std::path::Path;

use metarec_trainer::data::mlgen::{write_ml1m, Ml1mSize, SizeArgs, SizePreset};
use metarec_trainer::data::synth::{self, SynthConfig};
use metarec_trainer::data::Dataset;
use metarec_trainer::fsutil;
use metarec_trainer::split::Split;

fn config(seed: u64) -> SynthConfig {
    crate::common::population(seed, 50, 30, 3..=12)
}

fn read_all(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("dir")
        .map(|e| e.expect("entry").path())
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&p).expect("read")))
        .collect();
    files.sort();
    files
}

#[test]
fn synthetic_data_is_deterministic_per_seed() {
    let (a, b, c) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    synth::generate(&config(1), a.path()).unwrap();
    synth::generate(&config(1), b.path()).unwrap();
    synth::generate(&config(2), c.path()).unwrap();
    assert_eq!(read_all(a.path()), read_all(b.path()));
    assert_ne!(read_all(a.path()), read_all(c.path()));
}

#[test]
fn synthetic_data_loads_with_groups_and_fields() {
    let dir = tempfile::tempdir().unwrap();
    synth::generate(&config(4), dir.path()).unwrap();
    let data = Dataset::load(dir.path()).unwrap();
    assert_eq!(data.users.len(), 50);
    assert_eq!(data.items.len(), 30);
    let minor = data.users.iter().filter(|u| u.group.as_deref() == Some("minor")).count();
    assert_eq!(minor, 10, "20% of 50 users are minor");
    let names: Vec<&str> = data.user_fields.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["gender", "age", "occupation", "region"]);
    // Every value seen in the data maps to a known row (row 0 is "unknown").
    assert!(data.users.iter().all(|u| u.rows.iter().all(|r| r.iter().all(|&row| row > 0))));
    // Genres are multi-valued: some items have several.
    assert!(data.items.iter().any(|i| i.rows[0].len() > 1));
    assert!(data.ratings.iter().all(|r| (1.0..=5.0).contains(&r.value)));
}

#[test]
fn split_is_reproducible_and_disjoint() {
    let dir = tempfile::tempdir().unwrap();
    synth::generate(&config(5), dir.path()).unwrap();
    let data = Dataset::load(dir.path()).unwrap();
    let (s1, s2) = (Split::new(&data, 9).unwrap(), Split::new(&data, 9).unwrap());
    let (p1, p2) = (dir.path().join("s1.csv"), dir.path().join("s2.csv"));
    s1.write(&data, &p1).unwrap();
    s2.write(&data, &p2).unwrap();
    assert_eq!(std::fs::read(&p1).unwrap(), std::fs::read(&p2).unwrap());
    let back = Split::read(&data, &p1).unwrap();
    assert_eq!(back.test.len(), s1.test.len());
    let mut users: Vec<u32> = s1.train.iter().chain(&s1.valid).chain(&s1.test).map(|t| t.user).collect();
    let total = users.len();
    users.sort();
    users.dedup();
    assert_eq!(users.len(), total, "a user is in one part only");
    assert!(s1.test.iter().all(|t| !t.support.is_empty() && !t.query.is_empty()));
}

fn write_dataset(dir: &Path, ratings: &str) {
    synth::generate(&config(6), dir).unwrap();
    std::fs::write(dir.join("ratings.csv"), ratings).unwrap();
}

#[test]
fn bad_rows_are_errors_naming_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    write_dataset(dir.path(), "user_id,item_id,rating\nu00000,i0001,4\nu00000,i0002,seven\n");
    let error = format!("{:#}", Dataset::load(dir.path()).unwrap_err());
    assert!(error.contains("ratings.csv:3") && error.contains("seven"), "{error}");

    write_dataset(dir.path(), "user_id,item_id,rating\nnobody,i0001,4\n");
    let error = format!("{:#}", Dataset::load(dir.path()).unwrap_err());
    assert!(error.contains("ratings.csv:2") && error.contains("unknown user id 'nobody'"), "{error}");

    write_dataset(dir.path(), "user_id,item_id,rating\nu00000,i0001,NaN\n");
    let error = format!("{:#}", Dataset::load(dir.path()).unwrap_err());
    assert!(error.contains("ratings.csv:2"), "{error}");

    write_dataset(dir.path(), "user_id,item_id,rating\n");
    let error = format!("{:#}", Dataset::load(dir.path()).unwrap_err());
    assert!(error.contains("no ratings"), "{error}");
}

#[test]
fn schema_errors_name_the_field() {
    let dir = tempfile::tempdir().unwrap();
    synth::generate(&config(7), dir.path()).unwrap();
    let schema = std::fs::read_to_string(dir.path().join("schema.toml")).unwrap();
    std::fs::write(
        dir.path().join("schema.toml"),
        schema.replace(r#"kind = "multi", separator = "|""#, r#"kind = "multi""#),
    )
    .unwrap();
    let error = format!("{:#}", Dataset::load(dir.path()).unwrap_err());
    assert!(error.contains("'genres'") && error.contains("separator"), "{error}");

    std::fs::write(dir.path().join("schema.toml"), schema.replace("rating_max = 5", "rating_max = 5\ncolour = 1"))
        .unwrap();
    let error = format!("{:#}", Dataset::load(dir.path()).unwrap_err());
    assert!(error.contains("colour"), "{error}");
}

/// `trainer data generate-ml` with explicit counts writes that population, seeded.
#[test]
fn generate_ml_writes_the_counts_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let args = |out: &str, seed: &str| {
        ["data", "generate-ml", "--out", out, "--users", "400", "--items", "250", "--ratings", "15000", "--seed", seed]
            .map(String::from)
    };
    crate::common::succeed(dir.path(), &args("a", "3"));
    crate::common::succeed(dir.path(), &args("b", "3"));
    let data = Dataset::load(&dir.path().join("a")).unwrap();
    assert_eq!((data.users.len(), data.items.len(), data.ratings.len()), (400, 250, 15_000));
    assert!(data.ratings_per_user().iter().all(|&n| n >= 20), "every user rates at least 20 movies");
    assert_eq!(read_all(&dir.path().join("a")), read_all(&dir.path().join("b")), "same seed, same bytes");
    // An existing dataset is refused without --force, and left as it was.
    let before = read_all(&dir.path().join("a"));
    let refused = crate::common::trainer(dir.path(), &args("a", "4"));
    assert!(!refused.status.success());
    assert!(crate::common::text(&refused.stderr).contains("--force"), "{}", crate::common::text(&refused.stderr));
    assert_eq!(read_all(&dir.path().join("a")), before);
}

/// The streamed ratings.dat: users in order, each user's movies distinct with increasing
/// timestamps, every movie rated, ratings on the 1..5 scale.
#[test]
fn generated_ratings_are_well_formed() {
    let dir = tempfile::tempdir().unwrap();
    let size = Ml1mSize { users: 120, items: 90, ratings: 5_000, seed: 9 };
    write_ml1m(dir.path(), &size).unwrap();
    let text = std::fs::read_to_string(dir.path().join("ratings.dat")).unwrap();
    let rows: Vec<[u64; 4]> = text
        .lines()
        .map(|line| {
            let fields: Vec<u64> = line.split("::").map(|f| f.parse().unwrap()).collect();
            fields.try_into().unwrap()
        })
        .collect();
    assert_eq!(rows.len(), 5_000);
    assert!(rows.windows(2).all(|w| w[0][0] <= w[1][0]), "users in order");
    let mut seen = std::collections::HashSet::new();
    for w in rows.windows(2).filter(|w| w[0][0] == w[1][0]) {
        assert!(w[0][3] < w[1][3], "a user's timestamps increase");
    }
    for [user, item, value, _] in &rows {
        assert!((1..=120).contains(user) && (1..=90).contains(item) && (1..=5).contains(value));
        assert!(seen.insert((*user, *item)), "user {user} rates movie {item} once");
    }
    let items: std::collections::HashSet<u64> = rows.iter().map(|r| r[1]).collect();
    assert_eq!(items.len(), 90, "every movie is rated");
}

/// The named sizes: ML-25M's population, counts overridable one by one; counts the generator
/// cannot meet are refused before anything is written.
#[test]
fn size_presets_resolve_and_impossible_counts_are_refused() {
    let args = |size, users, ratings| SizeArgs { size, users, items: None, ratings, seed: 2 };
    let big = args(SizePreset::Ml25m, None, None).resolve();
    assert_eq!((big.users, big.items, big.ratings, big.seed), (162_541, 59_047, 25_000_095, 2));
    let small = args(SizePreset::Ml1m, Some(10), Some(5_000)).resolve();
    assert_eq!((small.users, small.items, small.ratings), (10, 3706, 5_000));
    assert_eq!(args(SizePreset::Ml1m, None, None).resolve(), Ml1mSize { seed: 2, ..Ml1mSize::default() });
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let error = write_ml1m(&out, &Ml1mSize { users: 10, items: 20, ratings: 300, seed: 1 }).unwrap_err();
    assert!(error.to_string().contains("users x items"), "{error}");
    let huge = Ml1mSize { users: 2_000_000_000, items: 1, ratings: 2_000_000_000, seed: 1 };
    let error = write_ml1m(&out, &huge).unwrap_err();
    assert!(error.to_string().contains("at most"), "{error}");
    assert!(!out.exists(), "nothing written");
}

/// A streamed atomic write whose producer fails leaves the previous file and no temporary.
#[test]
fn failed_streamed_write_keeps_the_previous_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ratings.dat");
    std::fs::write(&path, "old").unwrap();
    let result = fsutil::write_atomic_with(&path, |out| {
        out.write_all(b"half of the new")?;
        anyhow::bail!("the generator failed")
    });
    assert!(format!("{:#}", result.unwrap_err()).contains("the generator failed"));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "old");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no temporary file left");
    fsutil::write_atomic_with(&path, |out| Ok(out.write_all(b"new")?)).unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "new");
}
