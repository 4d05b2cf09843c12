//! What the last adaptation did: [`Explanation`], read with `Session::explain`.

use crate::format::MAX_NEIGHBOURS;

/// One stored user that set a personalized learning rate (AT-PAML).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Neighbour {
    /// Entry of the model's neighbour table.
    pub entry: u32,
    /// Squared distance between the user's key and the entry's key.
    pub distance: f32,
    /// Normalised kernel weight s_k / (Σ s_j + σ).
    pub weight: f32,
    /// The entry's stored learning rate.
    pub rate: f32,
}

/// How the last [`crate::Session::adapt`] adapted: the learning rate, its parts, and the
/// initialisation. Read it with [`crate::Session::explain`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Explanation {
    /// Whether an adaptation ran (ratings present and steps > 0).
    pub adapted: bool,
    /// The initialisation adapted from (HML's choice; 0 otherwise).
    pub init: u32,
    /// The scalar inner learning rate used (None when every parameter has its own, Meta-SGD).
    /// A fold-in head's ridge weights are divided by it relative to the model's `inner_lr`.
    pub learning_rate: Option<f32>,
    /// The learning-rate network's part alpha'(h) (PAML family).
    pub network_rate: Option<f32>,
    /// The stored users whose rates were added (AT-PAML), nearest first.
    pub neighbours: heapless::Vec<Neighbour, MAX_NEIGHBOURS>,
    /// The last fold-in (a factor model's, or a fold-in head's over the whole support set):
    /// what the ridge solve used and the user bias it found. None after gradient steps.
    pub fold_in: Option<FoldIn>,
}

/// How a fold-in solved the user's bias and factors.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FoldIn {
    /// Support ratings the solve ran over.
    pub support: u32,
    /// λ on the user's factors (a fold-in head: the mean of its Λ over the item factors, or over
    /// the last hidden layer's features when it has no factors, after the method's rate).
    pub regularisation: f32,
    /// λ_b on the user's bias (a fold-in head: its output bias's Λ).
    pub bias_regularisation: f32,
    /// The solved user bias b_u (a fold-in head: the change of its output bias).
    pub user_bias: f32,
}
