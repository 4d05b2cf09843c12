//! A tiny deterministic model, the fixture's user, golden files and resealed payloads, and an
//! independent f64 reference of the runtime's math.

use std::path::{Path, PathBuf};

use metarec_runtime::format::{
    Adaptation, DenseLayer, FieldKind, FieldSpec, ItemRecord, LearningRate, Method, RatingScale, Task, HEADER_LEN,
};
use metarec_runtime::{Error, Model, ModelBody, Session};

/// Tiny LCG (Knuth's MMIX constants) giving values exactly representable in f32.
pub struct Lcg(u64);

impl Lcg {
    pub fn new(seed: u64) -> Self {
        Lcg(seed)
    }

    /// Uniform in [-0.5, 0.5), a multiple of 2^-24.
    pub fn next_f32(&mut self) -> f32 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32) / (1u64 << 24) as f32 - 0.5
    }

    pub fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.next_f32() * scale).collect()
    }
}

pub const DIM: u32 = 4;

fn field(name: &str, kind: FieldKind, vocabulary: &[&str], rng: &mut Lcg) -> FieldSpec {
    let mut spec = FieldSpec {
        name: name.to_string(),
        kind,
        vocabulary: vocabulary.iter().map(|v| v.to_string()).collect(),
        embedding: Vec::new(),
    };
    spec.embedding = rng.vec(spec.rows() * DIM as usize, 2.0);
    spec
}

fn layer(inputs: u32, outputs: u32, rng: &mut Lcg) -> DenseLayer {
    let scale = 2.0 / (inputs as f32).sqrt();
    DenseLayer {
        inputs,
        outputs,
        weight: rng.vec((inputs * outputs) as usize, scale),
        bias: rng.vec(outputs as usize, 0.2),
    }
}

/// 2 user fields (categorical `gender`, numeric `age`), 2 item fields (categorical `rated`,
/// multi-categorical `genres` joined by `|`), embedding width 4, MLP 16 → 6 → 5 → 1.
pub fn tiny_body() -> ModelBody {
    let mut rng = Lcg::new(0x6d65_7461_7265_6321);
    let user_fields = vec![
        field("gender", FieldKind::Categorical, &["F", "M"], &mut rng),
        field("age", FieldKind::Numeric { bounds: vec![18.0, 25.0, 35.0, 50.0] }, &[], &mut rng),
    ];
    let item_fields = vec![
        field("rated", FieldKind::Categorical, &["G", "PG", "PG-13", "R"], &mut rng),
        field("genres", FieldKind::MultiCategorical { separator: '|' }, &["Action", "Comedy", "Drama"], &mut rng),
    ];
    let item = |id: &str, rated: u32, genres: &[u32]| ItemRecord {
        id: id.to_string(),
        rows: vec![vec![rated], genres.to_vec()],
    };
    let items = vec![
        item("m3", 1, &[1]),
        item("m1", 4, &[1, 3]),
        item("m10", 0, &[]),
        item("m2", 2, &[2, 3, 1]),
        item("m7", 3, &[0]),
        item("m5", 2, &[3]),
    ];
    let layers = vec![layer(16, 6, &mut rng), layer(6, 5, &mut rng), layer(5, 1, &mut rng)];
    ModelBody {
        method: Method::Melu,
        task: Task::Rating,
        embedding_dim: DIM,
        user_fields,
        item_fields,
        items,
        layers,
        adaptation: Adaptation { inner_lr: 0.05, inner_steps: 3 },
        extra_inits: Vec::new(),
        learning_rate: LearningRate::Fixed,
        neighbours: None,
        rating: RatingScale { min: 1.0, max: 5.0, global_mean: 3.5 },
        factors: None,
        product: Default::default(),
    }
}

// ---- the fixture's user ----

/// Profile `gender = F`, `age = 40` (rows 1 and 4), and a support set.
pub const SUPPORT: [(u32, f32); 4] = [(0, 4.0), (3, 1.0), (2, 5.0), (5, 2.5)];

pub fn user_rows() -> Vec<Vec<u32>> {
    vec![vec![1], vec![4]]
}

/// A session with the fixture's profile (`gender = F`, `age = 40`) and no ratings.
pub fn user_session(model: &Model) -> Session<&Model> {
    let mut session = Session::new(model);
    session.set_profile("gender", "F").unwrap();
    session.set_profile("age", "40").unwrap();
    session
}

/// [`user_session`] with the ratings of [`SUPPORT`], not adapted.
pub fn session(model: &Model) -> Session<&Model> {
    let mut session = user_session(model);
    for (item, rating) in SUPPORT {
        session.add_rating_by_index(item, rating).unwrap();
    }
    session
}

/// The session's score of every item, by index.
pub fn all_scores(session: &mut Session<&Model>) -> Vec<f32> {
    let items: Vec<u32> = (0..session.model().item_count() as u32).collect();
    let mut out = vec![0.0; items.len()];
    session.score_indices(&items, &mut out).unwrap();
    out
}

/// Top-4 is the four best of `scores` (ties to the lower index), with those scores.
pub fn assert_top_k_follows_scores(session: &mut Session<&Model>, scores: &[f32]) {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    let top: Vec<(usize, f32)> = session.top_k(4, false).unwrap().iter().map(|r| (r.item as usize, r.score)).collect();
    let want: Vec<(usize, f32)> = order[..4].iter().map(|&i| (i, scores[i])).collect();
    assert_eq!(top, want);
}

// ---- files ----

/// The committed golden file `name`.
pub fn golden_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(name)
}

/// `bytes` equal the golden file at `path`, which `METAREC_BLESS=1` (re)writes first.
pub fn assert_matches_golden(path: &Path, bytes: &[u8]) {
    if std::env::var_os("METAREC_BLESS").is_some_and(|v| v == "1") {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }
    let golden =
        std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}; run with METAREC_BLESS=1 to write it", path.display()));
    assert!(golden == bytes, "encoding differs from {}; if intended, re-bless", path.display());
}

/// `bytes` with `payload` as its body: length, body CRC and header CRC rewritten, and the
/// required flags set to `flags`.
pub fn reseal(bytes: &[u8], payload: &[u8], flags: u32) -> Vec<u8> {
    let mut header = bytes[..HEADER_LEN].to_vec();
    header[16..20].copy_from_slice(&flags.to_le_bytes());
    seal(header, payload)
}

/// `out`, a file's `HEADER_LEN` header bytes, with `payload`'s length and CRC and its own CRC
/// rewritten, then `payload`.
pub fn seal(mut out: Vec<u8>, payload: &[u8]) -> Vec<u8> {
    out[32..40].copy_from_slice(&(payload.len() as u64).to_le_bytes());
    out[40..44].copy_from_slice(&crc32fast::hash(payload).to_le_bytes());
    let crc = crc32fast::hash(&out[..44]);
    out[44..48].copy_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// A good file whose payload ends in a trailer under test (what follows its first `plain_len`
/// bytes), damaged and resealed (checksums made right, so the decoder sees the damage).
pub struct Trailer<'a> {
    pub good: &'a [u8],
    pub plain_len: usize,
    /// The required flags of the good file.
    pub flags: u32,
    /// What the messages call the trailer.
    pub name: &'a str,
}

impl Trailer<'_> {
    /// The good file's payload.
    pub fn payload(&self) -> &[u8] {
        &self.good[HEADER_LEN..]
    }

    /// Loads `payload` resealed with `flags`.
    pub fn load(&self, payload: &[u8], flags: u32) -> Result<(), Error> {
        Model::from_bytes(&reseal(self.good, payload, flags)).map(drop)
    }

    /// Every shorter trailer is malformed, and one byte more is left over.
    pub fn assert_cuts_and_extension_refused(&self) {
        let payload = self.payload();
        for len in self.plain_len..payload.len() {
            let cut = len - self.plain_len;
            assert_eq!(self.load(&payload[..len], self.flags), Err(Error::MalformedBody), "{} cut to {cut}", self.name);
        }
        let mut longer = payload.to_vec();
        longer.push(0);
        assert_eq!(self.load(&longer, self.flags), Err(Error::TrailingBytes));
    }

    /// `bytes` written from trailer byte `at` on give `want`.
    pub fn edit(&self, at: usize, bytes: &[u8], want: Error) {
        let mut damaged = self.payload().to_vec();
        damaged[self.plain_len + at..self.plain_len + at + bytes.len()].copy_from_slice(bytes);
        assert_eq!(self.load(&damaged, self.flags), Err(want), "{} byte {at} set to {bytes:02x?}", self.name);
    }

    /// Every trailer byte set to every value: an error or a model, never a panic.
    pub fn assert_no_byte_panics(&self) {
        let payload = self.payload();
        for at in self.plain_len..payload.len() {
            for value in 0..=255u8 {
                let mut damaged = payload.to_vec();
                damaged[at] = value;
                let file = reseal(self.good, &damaged, self.flags);
                let _verdict = std::panic::catch_unwind(|| Model::from_bytes(&file).map(drop)).unwrap_or_else(|_| {
                    panic!("panic with {} byte {} set to {value:#04x}", self.name, at - self.plain_len)
                });
            }
        }
    }
}

// ---- f64 reference, written from the spec, sharing nothing with the runtime ----

/// MLP parameters in f64, one `(W, b)` per layer.
pub type Params = Vec<(Vec<f64>, Vec<f64>)>;

pub fn params_of(body: &ModelBody) -> Params {
    body.layers
        .iter()
        .map(|l| (l.weight.iter().map(|&v| v as f64).collect(), l.bias.iter().map(|&v| v as f64).collect()))
        .collect()
}

fn mean_rows(field: &FieldSpec, rows: &[u32]) -> Vec<f64> {
    let dim = DIM as usize;
    let mut out = vec![0.0; dim];
    for &r in rows {
        let row = &field.embedding[r as usize * dim..][..dim];
        for (o, v) in out.iter_mut().zip(row) {
            *o += *v as f64;
        }
    }
    if !rows.is_empty() {
        for v in &mut out {
            *v /= rows.len() as f64;
        }
    }
    out
}

/// Input vector for a user given as rows per user field.
pub fn input(body: &ModelBody, user_rows: &[Vec<u32>], item: usize) -> Vec<f64> {
    let mut x = Vec::new();
    for (field, rows) in body.user_fields.iter().zip(user_rows) {
        x.extend(mean_rows(field, rows));
    }
    for (field, rows) in body.item_fields.iter().zip(&body.items[item].rows) {
        x.extend(mean_rows(field, rows));
    }
    x
}

/// Rows of a user whose every field is unset.
pub fn unset_user() -> Vec<Vec<u32>> {
    vec![vec![0], vec![0]]
}

pub fn forward(params: &Params, x: &[f64]) -> f64 {
    let mut a = x.to_vec();
    for (l, (w, b)) in params.iter().enumerate() {
        let inputs = a.len();
        let mut z: Vec<f64> = b
            .iter()
            .enumerate()
            .map(|(o, bo)| bo + (0..inputs).map(|i| w[o * inputs + i] * a[i]).sum::<f64>())
            .collect();
        if l + 1 < params.len() {
            for v in &mut z {
                *v = v.max(0.0);
            }
        }
        a = z;
    }
    a[0]
}

pub fn loss(params: &Params, xs: &[Vec<f64>], ratings: &[f64]) -> f64 {
    let n = xs.len() as f64;
    xs.iter().zip(ratings).map(|(x, r)| (forward(params, x) - r).powi(2)).sum::<f64>() / n
}

/// Central finite-difference gradient of the support loss.
pub fn fd_gradient(params: &Params, xs: &[Vec<f64>], ratings: &[f64]) -> Params {
    let h = 1e-6;
    let mut grad = params.clone();
    for l in 0..params.len() {
        for which in 0..2 {
            let len = if which == 0 { params[l].0.len() } else { params[l].1.len() };
            for k in 0..len {
                let mut plus = params.clone();
                let mut minus = params.clone();
                let (p, m) = if which == 0 {
                    (&mut plus[l].0[k], &mut minus[l].0[k])
                } else {
                    (&mut plus[l].1[k], &mut minus[l].1[k])
                };
                *p += h;
                *m -= h;
                let g = (loss(&plus, xs, ratings) - loss(&minus, xs, ratings)) / (2.0 * h);
                if which == 0 {
                    grad[l].0[k] = g;
                } else {
                    grad[l].1[k] = g;
                }
            }
        }
    }
    grad
}

/// `steps` gradient-descent steps with finite-difference gradients.
pub fn fd_adapt(params: &Params, xs: &[Vec<f64>], ratings: &[f64], lr: f64, steps: u32) -> Params {
    let mut p = params.clone();
    for _ in 0..steps {
        let g = fd_gradient(&p, xs, ratings);
        for (layer, glayer) in p.iter_mut().zip(&g) {
            for (v, gv) in layer.0.iter_mut().zip(&glayer.0) {
                *v -= lr * gv;
            }
            for (v, gv) in layer.1.iter_mut().zip(&glayer.1) {
                *v -= lr * gv;
            }
        }
    }
    p
}

/// [`tiny_body`]'s fields and catalogue as a matrix factorisation: 3 factors, λ = 2, λ_b = 1,
/// item biases in ±0.5 and factors in ±0.75; the last item has no factors (as an item no
/// training user rated).
pub fn tiny_factor_body() -> ModelBody {
    let mut body = tiny_body();
    let mut rng = Lcg::new(0x6d66_6f6c_6469_6e21);
    let items = body.items.len();
    let k = 3;
    let mut item_bias = rng.vec(items, 1.0);
    let mut item_factors = rng.vec(items * k, 1.5);
    item_bias[items - 1] = 0.0;
    item_factors[(items - 1) * k..].fill(0.0);
    body.method = Method::Mf;
    body.embedding_dim = 0;
    for field in body.user_fields.iter_mut().chain(body.item_fields.iter_mut()) {
        field.embedding.clear();
    }
    body.layers.clear();
    body.adaptation = Adaptation { inner_lr: 0.0, inner_steps: 1 };
    body.factors = Some(metarec_runtime::format::Factors {
        factors: k as u32,
        regularisation: 2.0,
        bias_regularisation: 1.0,
        item_bias,
        item_factors,
    });
    body
}

/// The fold-in's `[b_u, p_u]` by Gaussian elimination with partial pivoting on the normal
/// equations, in f64.
pub fn reference_fold_in(f: &metarec_runtime::format::Factors, mean: f32, support: &[(u32, f32)]) -> Vec<f64> {
    let k = f.factors as usize;
    let n = k + 1;
    let mut a = vec![vec![0.0f64; n + 1]; n];
    for (d, row) in a.iter_mut().enumerate() {
        row[d] = f64::from(if d == 0 { f.bias_regularisation } else { f.regularisation });
    }
    for &(item, r) in support {
        let i = item as usize;
        let x: Vec<f64> =
            std::iter::once(1.0).chain(f.item_factors[i * k..][..k].iter().map(|&v| f64::from(v))).collect();
        let t = f64::from(r) - f64::from(mean) - f64::from(f.item_bias[i]);
        for p in 0..n {
            for q in 0..n {
                a[p][q] += x[p] * x[q];
            }
            a[p][n] += x[p] * t;
        }
    }
    gauss(a)
}

/// Gaussian elimination with partial pivoting of an augmented `n × (n + 1)` system.
pub fn gauss(mut a: Vec<Vec<f64>>) -> Vec<f64> {
    let n = a.len();
    for c in 0..n {
        let pivot = (c..n).max_by(|&p, &q| a[p][c].abs().total_cmp(&a[q][c].abs())).unwrap();
        a.swap(c, pivot);
        let pivot_row = a[c].clone();
        for (r, row) in a.iter_mut().enumerate() {
            if r != c {
                let factor = row[c] / pivot_row[c];
                for (value, p) in row.iter_mut().zip(&pivot_row).skip(c) {
                    *value -= factor * p;
                }
            }
        }
    }
    (0..n).map(|d| a[d][n] / a[d][d]).collect()
}

/// `μ + b_u + b_i + p_u · q_i` in f64.
pub fn reference_score(f: &metarec_runtime::format::Factors, mean: f32, user: &[f64], item: u32) -> f64 {
    let k = f.factors as usize;
    let i = item as usize;
    let q = &f.item_factors[i * k..][..k];
    f64::from(mean)
        + user[0]
        + f64::from(f.item_bias[i])
        + user[1..].iter().zip(q).map(|(p, &q)| p * f64::from(q)).sum::<f64>()
}
