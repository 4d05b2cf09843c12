//! Which of the decision MLP's flat parameters the inner loop updates ([`Adapt`]), as ranges of
//! the flat layout `[W0, b0, W1, b1, …]` (see [`crate::mlp`]). The fold-in changes the same
//! parameters as `Head` (the output layer), by one solve instead of steps (`session::fold_in`).

use alloc::vec::Vec;
use core::ops::Range;

use crate::error::{Error, Result};
use crate::format::Adapt;
use crate::mlp::{LayerShape, Layout};

/// The adapted parameters of one model, computed once at load.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Scope {
    /// The adapted ranges, ascending and disjoint, none empty.
    ranges: Vec<Range<usize>>,
    /// The same less layer 0's item columns: what a step changes directly while the low-rank
    /// record holds those columns' change (equal to `ranges` when they are not adapted).
    without_item_columns: Vec<Range<usize>>,
    /// Whether layer 0's item columns are adapted (scope `All`, or `Head` of a one-layer MLP).
    item_columns: bool,
    /// The lowest layer with an adapted parameter: backpropagation stops there.
    lowest: usize,
}

impl Scope {
    /// The scope `adapt` of an MLP laid out as `layout` whose first `user_width` inputs are the
    /// user fields'.
    ///
    /// Errors: [`Error::InconsistentDimensions`] for a layout without layers or a user part wider
    /// than layer 0's input (validation rules both out first).
    pub(crate) fn new(layout: &Layout, user_width: usize, adapt: Adapt) -> Result<Scope> {
        let bad = Error::InconsistentDimensions;
        let (first, last) = match (layout.layers.first(), layout.layers.last()) {
            (Some(first), Some(last)) if user_width <= first.inputs => (first, last),
            _ => return Err(bad),
        };
        let everything = 0..layout.param_len;
        let ranges: Vec<Range<usize>> = match adapt {
            Adapt::All => alloc::vec![everything],
            // The output layer is the last in the flat layout: its weight to the end. The fold-in
            // solves for exactly these (and the user's factors, which are not MLP parameters).
            Adapt::Head | Adapt::FoldIn => alloc::vec![last.weight_at..layout.param_len],
            Adapt::User => {
                let mut ranges = user_columns(first, user_width);
                ranges.push(bias_range(first));
                if layout.layers.len() > 1 {
                    ranges.push(bias_range(last));
                }
                ranges
            }
        };
        let ranges: Vec<Range<usize>> = ranges.into_iter().filter(|r| !r.is_empty()).collect();
        let item_columns =
            ranges.first().is_some_and(|r| r.start == 0 && r.end == layout.param_len) && user_width < first.inputs;
        let without_item_columns = if item_columns {
            let mut rest = alloc::vec![0..first.weight_at];
            rest.extend(user_columns(first, user_width));
            rest.push(first.weight_at + first.inputs * first.outputs..layout.param_len);
            rest.into_iter().filter(|r| !r.is_empty()).collect()
        } else {
            ranges.clone()
        };
        let lowest = match adapt {
            Adapt::Head | Adapt::FoldIn => layout.layers.len() - 1,
            Adapt::All | Adapt::User => 0,
        };
        Ok(Scope { ranges, without_item_columns, item_columns, lowest })
    }

    /// The ranges a step changes: all adapted ones, or with `low_rank` (the record holds layer
    /// 0's item columns) all but those columns.
    pub(crate) fn ranges(&self, low_rank: bool) -> &[Range<usize>] {
        if low_rank {
            &self.without_item_columns
        } else {
            &self.ranges
        }
    }

    /// Whether layer 0's item columns are adapted: only then does an adaptation change how
    /// layer 0 sees an item (the low-rank record), otherwise its item part stays the
    /// initialisation's.
    pub(crate) fn item_columns(&self) -> bool {
        self.item_columns
    }

    /// The lowest layer with an adapted parameter (the backward pass need not go below it).
    pub(crate) fn lowest_layer(&self) -> usize {
        self.lowest
    }

    /// Whether flat parameter `index` is adapted (tests).
    #[cfg(test)]
    pub(crate) fn contains(&self, index: usize) -> bool {
        self.ranges.iter().any(|r| r.contains(&index))
    }
}

/// Layer 0's user columns, one range per output row.
fn user_columns(first: &LayerShape, user_width: usize) -> Vec<Range<usize>> {
    (0..first.outputs)
        .map(|o| {
            let at = first.weight_at + o * first.inputs;
            at..at + user_width
        })
        .collect()
}

/// A layer's bias in the flat layout.
fn bias_range(shape: &LayerShape) -> Range<usize> {
    let at = shape.weight_at + shape.inputs * shape.outputs;
    at..at + shape.outputs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::DenseLayer;

    fn layer(inputs: u32, outputs: u32) -> DenseLayer {
        let n = (inputs * outputs) as usize;
        DenseLayer { inputs, outputs, weight: alloc::vec![0.0; n], bias: alloc::vec![0.0; outputs as usize] }
    }

    /// Every parameter of a 5 → 3 → 2 → 1 MLP with 2 user inputs, named by hand, against each
    /// scope.
    #[test]
    fn scopes_name_exactly_their_parameters() {
        let layout = Layout::new(&[layer(5, 3), layer(3, 2), layer(2, 1)], 5).unwrap();
        // W0 0..15, b0 15..18, W1 18..24, b1 24..26, W2 26..28, b2 28.
        assert_eq!(layout.param_len, 29);
        let user_w0 = [0, 1, 5, 6, 10, 11];
        let expected = |adapt: Adapt, i: usize| match adapt {
            Adapt::All => true,
            Adapt::Head | Adapt::FoldIn => (26..29).contains(&i),
            Adapt::User => user_w0.contains(&i) || (15..18).contains(&i) || i == 28,
        };
        for adapt in Adapt::ALL {
            let scope = Scope::new(&layout, 2, adapt).unwrap();
            for i in 0..29 {
                assert_eq!(scope.contains(i), expected(adapt, i), "{adapt:?} parameter {i}");
            }
            assert_eq!(scope.item_columns(), adapt == Adapt::All);
            // Without the item columns of W0 (2..5, 7..10, 12..15) when they are adapted.
            let low: Vec<usize> = scope.ranges(true).iter().flat_map(|r| r.clone()).collect();
            let want: Vec<usize> = (0..29).filter(|&i| expected(adapt, i) && !(i < 15 && i % 5 >= 2)).collect();
            assert_eq!(low, want, "{adapt:?}");
        }
    }

    /// A one-layer MLP: its head is everything, and the user scope's two biases are one.
    #[test]
    fn one_layer_scopes() {
        let layout = Layout::new(&[layer(4, 1)], 4).unwrap();
        let head = Scope::new(&layout, 1, Adapt::Head).unwrap();
        assert_eq!(head, Scope::new(&layout, 1, Adapt::All).unwrap());
        assert_eq!(head, Scope::new(&layout, 1, Adapt::FoldIn).unwrap());
        assert!(head.item_columns());
        let user = Scope::new(&layout, 1, Adapt::User).unwrap();
        assert_eq!(user.ranges(false), [0..1, 4..5]);
        assert!(!user.item_columns());
        assert_eq!(Scope::new(&layout, 5, Adapt::User), Err(Error::InconsistentDimensions));
    }
}
