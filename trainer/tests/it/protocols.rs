//! The PAML and MeLU protocols: seeded, reproducible byte for byte, and doing what they say.

use std::collections::HashSet;
use std::path::Path;

use metarec_trainer::data::mlgen::{write_ml1m, Ml1mSize};
use metarec_trainer::data::Dataset;
use metarec_trainer::split::{self, MeluConfig, PamlConfig, Split, State, Task};

/// A generated ML-1M-format dataset (loaded through the ML-1M loader).
fn generated(users: usize, items: usize, ratings: usize) -> (tempfile::TempDir, Dataset) {
    let dir = tempfile::tempdir().unwrap();
    write_ml1m(dir.path(), &Ml1mSize { users, items, ratings, seed: 4 }).unwrap();
    let data = Dataset::load(dir.path()).unwrap();
    (dir, data)
}

fn users_of(tasks: &[Task]) -> HashSet<u32> {
    tasks.iter().map(|t| t.user).collect()
}

#[test]
fn generator_writes_the_requested_size() {
    let (dir, data) = generated(300, 200, 12_000);
    assert_eq!((data.users.len(), data.items.len(), data.ratings.len()), (300, 200, 12_000));
    assert!(data.ratings_per_user().iter().all(|&n| n >= 20));
    let again = tempfile::tempdir().unwrap();
    write_ml1m(again.path(), &Ml1mSize { users: 300, items: 200, ratings: 12_000, seed: 4 }).unwrap();
    for file in ["users.dat", "movies.dat", "ratings.dat"] {
        assert_eq!(std::fs::read(dir.path().join(file)).unwrap(), std::fs::read(again.path().join(file)).unwrap());
    }
}

#[test]
fn paml_split_is_reproducible_byte_for_byte() {
    let (dir, data) = generated(300, 200, 12_000);
    let config = PamlConfig::default();
    let write = |seed: u64, name: &str| {
        let path = dir.path().join(name);
        Split::paml(&data, &config, seed).unwrap().0.write(&data, &path).unwrap();
        std::fs::read(path).unwrap()
    };
    let (a, b, c) = (write(3, "a.csv"), write(3, "b.csv"), write(4, "c.csv"));
    assert_eq!(a, b, "same seed, same bytes");
    assert_ne!(a, c, "another seed, another split");
    // Reading the file back gives the same tasks.
    let (split, _) = Split::paml(&data, &config, 3).unwrap();
    let back = Split::read(&data, &dir.path().join("a.csv")).unwrap();
    let parts = [(&split.train, &back.train), (&split.valid, &back.valid), (&split.test, &back.test)];
    for (x, y) in parts.into_iter().chain([(&split.warm, &back.warm)]) {
        assert_eq!(x.len(), y.len());
        for (s, t) in x.iter().zip(y) {
            assert_eq!((s.user, &s.support, &s.query), (t.user, &t.support, &t.query));
        }
    }
}

#[test]
fn paml_keeps_the_least_active_users_and_splits_them() {
    let (_dir, data) = generated(300, 200, 12_000);
    let (split, report) = Split::paml(&data, &PamlConfig::default(), 1).unwrap();
    let counts = data.ratings_per_user();
    let kept: Vec<u32> = split.train.iter().chain(&split.valid).chain(&split.test).map(|t| t.user).collect();
    assert_eq!(kept.len(), 240, "80% of 300 users");
    assert_eq!((split.train.len(), split.valid.len(), split.test.len()), (168, 24, 48));
    let most_kept = kept.iter().map(|&u| counts[u as usize]).max().unwrap();
    let dropped: Vec<usize> = (0..300u32).filter(|u| !kept.contains(u)).map(|u| counts[u as usize]).collect();
    assert!(dropped.iter().all(|&n| n >= most_kept), "only the most active users are left out");
    assert_eq!(users_of(&split.train).len() + users_of(&split.valid).len() + users_of(&split.test).len(), 240);
    for task in split.train.iter().chain(&split.test) {
        let n = task.support.len() + task.query.len();
        assert_eq!(n, counts[task.user as usize], "every rating of the user is used");
        assert_eq!(task.support.len(), ((n as f64 * 0.8).round() as usize).clamp(1, n - 1));
    }
    assert!(report.to_string().contains("cold-start users (80% least active"), "{report}");
}

#[test]
fn paml_keeps_the_most_active_users_as_warm_users_for_training_only() {
    let (_dir, data) = generated(300, 200, 12_000);
    let (split, report) = Split::paml(&data, &PamlConfig::default(), 1).unwrap();
    let cold: HashSet<u32> = users_of(&split.train).union(&users_of(&split.valid)).copied().collect();
    let cold: HashSet<u32> = cold.union(&users_of(&split.test)).copied().collect();
    let warm = users_of(&split.warm);
    assert_eq!(warm.len(), 60, "the 20% most active users");
    assert!(warm.is_disjoint(&cold));
    let counts = data.ratings_per_user();
    let least_warm = warm.iter().map(|&u| counts[u as usize]).min().unwrap();
    assert!(cold.iter().all(|&u| counts[u as usize] <= least_warm));
    for task in &split.warm {
        assert_eq!(task.support.len() + task.query.len(), counts[task.user as usize]);
    }
    assert!(report.to_string().contains("warm users: 60"), "{report}");
    // With --warm-users they join the training users after the cold-start ones; without, they
    // are set aside. Validation and test users never change.
    let with = split.clone().with_warm_users(true);
    assert_eq!(with.train.len(), split.train.len() + 60);
    assert_eq!(users_of(&with.train[split.train.len()..]), warm);
    assert_eq!(with.valid.len(), split.valid.len());
    assert!(with.warm.is_empty());
    let without = split.clone().with_warm_users(false);
    assert_eq!(users_of(&without.train), users_of(&split.train));
    assert!(without.warm.is_empty());
    // Where every user is a cold-start user, there are no warm users.
    let (all_cold, _) = Split::paml(&data, &PamlConfig { cold_share: 1.0, ..PamlConfig::default() }, 1).unwrap();
    assert!(all_cold.warm.is_empty());
}

#[test]
fn paml_drops_users_with_invalid_features() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ml-100k");
    let data = Dataset::load(&dir).unwrap();
    let config = PamlConfig { cold_share: 1.0, ..PamlConfig::default() };
    // Four users minus the 7-year-old leaves too few to split: an error, not an empty split.
    let error = format!("{:#}", Split::paml(&data, &config, 1).unwrap_err());
    assert!(error.contains("only 3 users are left"), "{error}");
}

#[test]
fn split_new_is_the_every_user_protocol() {
    let (_dir, data) = generated(120, 80, 4_000);
    let a = Split::new(&data, 5).unwrap();
    let (b, _) = Split::paml(&data, &PamlConfig::every_user(), 5).unwrap();
    assert_eq!(a.to_csv(&data), b.to_csv(&data));
    assert_eq!(a.train.len() + a.valid.len() + a.test.len(), 120);
}

#[test]
fn melu_states_follow_the_protocol_and_reproduce() {
    let (dir, data) = generated(400, 300, 32_000);
    let config = MeluConfig::default();
    let (states, report) = split::melu(&data, &config, 2).unwrap();
    let new_item = |item: u32| data.info.item_year[item as usize].unwrap() >= 1998;
    let warm = states.state(State::Warm);
    let (train, valid) = (users_of(&warm.train), users_of(&warm.valid));
    assert!(train.is_disjoint(&valid));
    for (state, split) in &states.states {
        assert!(!split.test.is_empty(), "{state:?}");
        // Every state shares the warm training and validation tasks.
        assert_eq!(users_of(&split.train), train);
        for task in split.train.iter().chain(&split.valid).chain(&split.test) {
            assert_eq!(task.query.len(), 10);
            assert!((3..=90).contains(&task.support.len()));
        }
        let test_users = users_of(&split.test);
        let cold_items = matches!(state, State::ItemCold | State::UserItemCold);
        let cold_users = matches!(state, State::UserCold | State::UserItemCold);
        for task in &split.test {
            assert!(task.support.iter().chain(&task.query).all(|r| new_item(r.item) == cold_items), "{state:?}");
        }
        assert_eq!(test_users.is_disjoint(&train), cold_users, "{state:?}");
        assert!(test_users.is_disjoint(&valid), "{state:?}");
    }
    // Training never sees a new item, not even from the warm users: the existing (training)
    // users whose count of existing items falls outside 13..100, each state carrying them.
    assert!(warm.train.iter().flat_map(|t| t.support.iter().chain(&t.query)).all(|r| !new_item(r.item)));
    assert!(!warm.warm.is_empty(), "the generator has users above 100 ratings");
    assert!(warm.warm.iter().flat_map(|t| t.support.iter().chain(&t.query)).all(|r| !new_item(r.item)));
    let warm_users = users_of(&warm.warm);
    assert!(warm_users.is_disjoint(&train) && warm_users.is_disjoint(&valid));
    let test_users_of = |state: State| users_of(&states.state(state).test);
    assert!(warm_users.is_disjoint(&test_users_of(State::UserCold)), "warm users are existing users");
    for task in &warm.warm {
        assert!(!(13..=100).contains(&(task.support.len() + task.query.len())));
    }
    assert!(states.states.iter().all(|(_, split)| users_of(&split.warm) == warm_users));
    assert!(report.to_string().contains("user_item_cold test tasks"));

    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    states.write(&data, &a).unwrap();
    split::melu(&data, &config, 2).unwrap().0.write(&data, &b).unwrap();
    for state in State::ALL {
        let file = format!("{}.csv", state.name());
        let bytes = std::fs::read(a.join(&file)).unwrap();
        assert_eq!(bytes, std::fs::read(b.join(&file)).unwrap(), "{file}");
        let back = Split::read(&data, &a.join(&file)).unwrap();
        assert_eq!(back.test.len(), states.state(state).test.len());
    }
}

#[test]
fn melu_without_new_items_is_an_error() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ml-100k");
    let data = Dataset::load(&dir).unwrap();
    let error = format!("{:#}", split::melu(&data, &MeluConfig::default(), 1).unwrap_err());
    assert!(error.contains("no item is released after 1997"), "{error}");
}

#[test]
fn a_paml_split_of_a_real_format_feeds_the_model() {
    use metarec_trainer::eval::predict_tasks;
    use metarec_trainer::model::{MetaModel, ModelShape, ModelSpec};
    let (_dir, data) = generated(150, 100, 6_000);
    let (split, _) = Split::paml(&data, &PamlConfig::default(), 1).unwrap();
    let shape = ModelShape { embedding_dim: 4, hidden: vec![8] };
    let model = MetaModel::new(&data, &ModelSpec::melu(shape, 0.01, 2), 3.5, tch::Device::Cpu);
    let predictions = predict_tasks(&model, &split.test, 2, 16);
    assert_eq!(predictions.len(), split.test.len());
    assert!(predictions.iter().flat_map(|p| &p.predicted).all(|v| v.is_finite()));
}
