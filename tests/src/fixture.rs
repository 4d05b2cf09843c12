//! A tiny, deterministic model and user file for the C API tests.
//!
//! Shared by `metarec-tests` (as its library) and by `metarec-ffi`'s integration test (through
//! `#[path]`), so it depends on nothing but `metarec_runtime` and std.

use core::fmt::Write as _;

use metarec_runtime::format::{
    encode, encode_aligned, Adaptation, DenseLayer, EmbeddingPrecision, Factors, FieldKind, FieldSpec, ItemRecord,
    LearningRate, Method, ModelBody, RatingScale, Task,
};

/// Embedding width of the fixture model.
pub const EMBEDDING_DIM: usize = 3;
/// Number of catalogue items of the fixture model.
pub const ITEM_COUNT: usize = 40;
/// Genre vocabulary of the fixture items (`genre` field, multi-categorical).
pub const GENRES: [&str; 4] = ["action", "comedy", "drama", "horror"];

/// A small deterministic generator (xorshift32) for weights: no dependency, same numbers
/// everywhere.
#[derive(Debug, Clone)]
pub struct Weights(u32);

impl Weights {
    /// Starts the sequence from a non-zero seed.
    pub fn new(seed: u32) -> Self {
        Weights(seed.max(1))
    }

    /// Next value, uniform in `[-scale, scale)`.
    pub fn next(&mut self, scale: f32) -> f32 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.0 = x;
        ((x >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0) * scale
    }

    /// `n` values in `[-scale, scale)`.
    pub fn take(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.next(scale)).collect()
    }
}

/// Id of fixture item `i`: `"m001"`, `"m002"`, …; item 7 has a long id (buffer tests).
pub fn item_id(i: usize) -> String {
    if i == 7 {
        "m008-the-item-with-a-rather-long-identifier".to_owned()
    } else {
        format!("m{:03}", i + 1)
    }
}

fn field(name: &str, kind: FieldKind, vocabulary: &[&str], w: &mut Weights) -> FieldSpec {
    let mut spec = FieldSpec {
        name: name.to_owned(),
        kind,
        vocabulary: vocabulary.iter().map(|v| (*v).to_owned()).collect(),
        embedding: Vec::new(),
    };
    spec.embedding = w.take(spec.rows() * EMBEDDING_DIM, 0.8);
    spec
}

/// The fixture model: user fields `gender` (categorical) and `age` (numeric buckets), item
/// fields `genre` (multi-categorical, `|`) and `year` (categorical), a 12→8→1 MLP, ratings 1–5.
/// With `flat` every weight is zero, so every item scores the global mean (tie tests).
pub fn model_body(flat: bool) -> ModelBody {
    let mut w = Weights::new(0x5eed_1234);
    let user_fields = vec![
        field("gender", FieldKind::Categorical, &["F", "M"], &mut w),
        field("age", FieldKind::Numeric { bounds: vec![18.0, 25.0, 35.0, 50.0] }, &[], &mut w),
    ];
    let years = ["1990", "2000", "2010"];
    let item_fields = vec![
        field("genre", FieldKind::MultiCategorical { separator: '|' }, &GENRES, &mut w),
        field("year", FieldKind::Categorical, &years, &mut w),
    ];
    let items = (0..ITEM_COUNT)
        .map(|i| {
            let first = 1 + (i % GENRES.len()) as u32;
            let genres = if i % 3 == 0 { vec![first] } else { vec![first, 1 + ((i / 3) % 4) as u32] };
            ItemRecord { id: item_id(i), rows: vec![genres, vec![1 + (i % years.len()) as u32]] }
        })
        .collect();
    let input = 4 * EMBEDDING_DIM;
    let hidden = 8;
    let mut layer = |inputs: usize, outputs: usize, bias: f32| DenseLayer {
        inputs: inputs as u32,
        outputs: outputs as u32,
        weight: if flat { vec![0.0; inputs * outputs] } else { w.take(inputs * outputs, 0.6) },
        bias: if flat { vec![bias; outputs] } else { w.take(outputs, 0.1).iter().map(|b| b + bias).collect() },
    };
    let layers = vec![layer(input, hidden, 0.1), layer(hidden, 1, 3.5)];
    ModelBody {
        method: Method::Melu,
        task: Task::Rating,
        embedding_dim: EMBEDDING_DIM as u32,
        user_fields,
        item_fields,
        items,
        layers,
        adaptation: Adaptation { inner_lr: 0.05, inner_steps: 5 },
        extra_inits: Vec::new(),
        learning_rate: LearningRate::Fixed,
        neighbours: None,
        rating: RatingScale { min: 1.0, max: 5.0, global_mean: 3.5 },
        factors: None,
        product: Default::default(),
    }
}

/// The fixture model as file bytes.
pub fn model_bytes(flat: bool) -> Vec<u8> {
    encode(&model_body(flat)).expect("the fixture model encodes")
}

/// The fixture model in the aligned layout of format 2.4 (what `trainer export` writes).
pub fn aligned_model_bytes() -> Vec<u8> {
    encode_aligned(&model_body(false), EmbeddingPrecision::F32).expect("the fixture model encodes aligned")
}

/// The fixture as a click model: same features and weights, output a logit centred near 0,
/// support labels in 0..1, trained (in this story) with ratings >= 4 as clicks.
pub fn click_model_body() -> ModelBody {
    let mut body = model_body(false);
    body.task = Task::Click { threshold: 4.0 };
    body.rating = RatingScale { min: 0.0, max: 1.0, global_mean: 0.4 };
    if let Some(output) = body.layers.last_mut() {
        for b in &mut output.bias {
            *b -= 3.5;
        }
    }
    body
}

/// The click fixture as file bytes.
pub fn click_model_bytes() -> Vec<u8> {
    encode(&click_model_body()).expect("the click fixture encodes")
}

/// Latent factors per item (and per user) of the factor fixture.
pub const FACTOR_COUNT: usize = 3;
/// λ, the fold-in's ridge weight on the user's factors, of the factor fixture.
pub const FACTOR_REGULARISATION: f32 = 2.0;
/// λ_b, the fold-in's ridge weight on the user's bias, of the factor fixture.
pub const FACTOR_BIAS_REGULARISATION: f32 = 1.0;

/// Item bias b_i of the factor fixture: `((5 i) mod 9 − 4) / 8`, in −0.5..0.5 and exact in f32,
/// so that a user without a fold-in scores exactly `3.5 + b_i` (tests/c/api_test.c computes
/// the same formula).
pub fn factor_item_bias(i: usize) -> f32 {
    ((i * 5) % 9) as f32 * 0.125 - 0.5
}

/// The fixture as a matrix factorisation with fold-in ([`Method::Mf`]): the same user and item
/// fields (vocabularies only, no tables) and catalogue as [`model_body`], so profile calls and
/// item ids work as there; μ = 3.5 on the 1–5 scale, [`FACTOR_COUNT`] factors per item from the
/// weight generator, biases [`factor_item_bias`], λ = [`FACTOR_REGULARISATION`] and
/// λ_b = [`FACTOR_BIAS_REGULARISATION`]; one "step" (the exact solve), as the trainer exports.
pub fn factor_model_body() -> ModelBody {
    let base = model_body(false);
    let bare = |fields: Vec<FieldSpec>| {
        fields.into_iter().map(|field| FieldSpec { embedding: Vec::new(), ..field }).collect::<Vec<_>>()
    };
    let mut w = Weights::new(0xfac7_0125);
    ModelBody {
        method: Method::Mf,
        task: Task::Rating,
        embedding_dim: 0,
        user_fields: bare(base.user_fields),
        item_fields: bare(base.item_fields),
        items: base.items,
        layers: Vec::new(),
        adaptation: Adaptation { inner_lr: 0.0, inner_steps: 1 },
        extra_inits: Vec::new(),
        learning_rate: LearningRate::Fixed,
        neighbours: None,
        rating: RatingScale { min: 1.0, max: 5.0, global_mean: 3.5 },
        factors: Some(Factors {
            factors: FACTOR_COUNT as u32,
            regularisation: FACTOR_REGULARISATION,
            bias_regularisation: FACTOR_BIAS_REGULARISATION,
            item_bias: (0..ITEM_COUNT).map(factor_item_bias).collect(),
            item_factors: w.take(ITEM_COUNT * FACTOR_COUNT, 0.9),
        }),
        product: Default::default(),
    }
}

/// The factor fixture as file bytes.
pub fn factor_model_bytes() -> Vec<u8> {
    encode(&factor_model_body()).expect("the factor fixture encodes")
}

/// One user as the trainer exports them (see `examples/c/personalize.c` for the format).
#[derive(Debug, Clone, PartialEq)]
pub struct UserFile {
    /// User id.
    pub user: String,
    /// `(field, value)` profile entries.
    pub profile: Vec<(String, String)>,
    /// `(item id, rating)` ratings to adapt on.
    pub support: Vec<(String, f32)>,
    /// `(item id, rating)` held-out ratings to evaluate on.
    pub query: Vec<(String, f32)>,
}

impl UserFile {
    /// A fixture user: a 28-year-old woman who loves comedies (genre index 1) and dislikes the
    /// rest, with 8 support and 6 query ratings.
    pub fn fixture() -> Self {
        let rating = |i: usize| if i % GENRES.len() == 1 { 5.0 } else { 2.0 };
        let pair = |i: usize| (item_id(i), rating(i));
        UserFile {
            user: "u42".to_owned(),
            profile: vec![("gender".to_owned(), "F".to_owned()), ("age".to_owned(), "28".to_owned())],
            support: [0, 1, 2, 3, 5, 9, 13, 7].into_iter().map(pair).collect(),
            query: [4, 17, 21, 6, 10, 14].into_iter().map(pair).collect(),
        }
    }

    /// The tab-separated text the trainer writes (with a comment line).
    pub fn to_tsv(&self) -> String {
        let mut out = String::from("# metarec user file\n");
        let _ = writeln!(out, "user\t{}", self.user);
        for (field, value) in &self.profile {
            let _ = writeln!(out, "profile\t{field}\t{value}");
        }
        for (item, rating) in &self.support {
            let _ = writeln!(out, "support\t{item}\t{rating}");
        }
        for (item, rating) in &self.query {
            let _ = writeln!(out, "query\t{item}\t{rating}");
        }
        out
    }
}
