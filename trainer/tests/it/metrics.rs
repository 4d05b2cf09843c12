//! Metric definitions on hand-computed cases.

use metarec_trainer::eval::{metrics, ndcg_at, UserPredictions};

#[test]
fn ndcg_is_one_for_the_ideal_order_and_lower_otherwise() {
    let truth = [5.0, 3.0, 1.0, 4.0];
    assert!((ndcg_at(&truth, &[0.9, 0.5, 0.1, 0.7], 3) - 1.0).abs() < 1e-12);
    // Reverse order: DCG = (2^1-1)/log2(2) + (2^3-1)/log2(3) + (2^4-1)/log2(4)
    let dcg = 1.0 + 7.0 / 3f64.log2() + 15.0 / 2.0;
    let ideal = 31.0 + 15.0 / 3f64.log2() + 7.0 / 2.0;
    let got = ndcg_at(&truth, &[0.1, 0.5, 0.9, 0.2], 3);
    assert!((got - dcg / ideal).abs() < 1e-12, "{got}");
    // Fewer items than k: all of them count.
    assert!((ndcg_at(&[2.0], &[0.0], 3) - 1.0).abs() < 1e-12);
}

#[test]
fn mse_and_mae_pool_over_ratings() {
    let users = [
        UserPredictions { user: 0, truth: vec![4.0, 2.0], predicted: vec![3.0, 2.0] },
        UserPredictions { user: 1, truth: vec![5.0], predicted: vec![3.0] },
    ];
    let m = metrics(&users);
    assert!((m.mse - 5.0 / 3.0).abs() < 1e-9);
    assert!((m.mae - 1.0).abs() < 1e-9);
    assert_eq!(m.users, 2);
}
