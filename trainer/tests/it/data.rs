//! Loading, generating and splitting datasets.

use std::path::Path;

use metarec_trainer::data::synth::{self, SynthConfig};
use metarec_trainer::data::Dataset;
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
