//! Sequences of C-API calls, driven from Rust: the input is read as a program of calls on
//! metarec-ffi's `extern "C"` functions, with valid and invalid arguments (NULL handles and
//! pointers, unknown ids and fields, out-of-range indices and sides, short buffers, NaN
//! ratings, step and string lengths past the limits, damaged model bytes, a model freed before
//! its sessions), on the MeLU fixture or, after a reload that picks it, the fixture's matrix
//! factorisation (fold-in and `metarec_session_explain_fold_in`). Every call must return a
//! documented status (never `METAREC_ERR_PANIC`), no call may touch memory it was not given
//! (AddressSanitizer), and everything is released at the end of each input (LeakSanitizer).
#![no_main]

use core::ffi::c_char;
use core::ptr;
use std::ffi::CString;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use metarec::*;

/// Bytes of the fixture model (40 items, user fields `gender` and `age`).
fn fixture() -> &'static [u8] {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES.get_or_init(|| metarec_tests::model_bytes(false))
}

/// Bytes of the fixture's matrix factorisation (same fields and items; fold-in, 3 factors).
fn factor_fixture() -> &'static [u8] {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES.get_or_init(metarec_tests::factor_model_bytes)
}

/// Reads the program.
struct Program<'a>(&'a [u8]);

impl Program<'_> {
    fn byte(&mut self) -> u8 {
        let (&first, rest) = self.0.split_first().unwrap_or((&0, &[]));
        self.0 = rest;
        first
    }

    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.byte(), self.byte(), self.byte(), self.byte()])
    }

    fn take(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        head
    }

    /// A string argument: valid and invalid ids, fields and values, raw bytes, or too long.
    fn text(&mut self) -> CString {
        let choice = self.byte();
        let text: Vec<u8> = match choice % 12 {
            0 => b"gender".to_vec(),
            1 => b"age".to_vec(),
            2 => b"F".to_vec(),
            3 => b"27.5".to_vec(),
            4 => metarec_tests::item_id(usize::from(self.byte()) % 48).into_bytes(),
            5 => b"".to_vec(),
            6 => vec![b'm'; METAREC_MAX_STRING_LEN],
            7 => vec![b'm'; METAREC_MAX_STRING_LEN + 1],
            8 => b"\xff\xfe not utf-8".to_vec(),
            9 => b"action|comedy||drama".to_vec(),
            _ => {
                let n = usize::from(self.byte() % 24);
                self.take(n).to_vec()
            }
        };
        // Interior NULs end the string where C would.
        let end = text.iter().position(|&b| b == 0).unwrap_or(text.len());
        CString::new(&text[..end]).expect("no interior NUL")
    }

    fn rating(&mut self) -> f32 {
        match self.byte() % 8 {
            0 => f32::NAN,
            1 => f32::INFINITY,
            2 => -1.0,
            3 => 5.0,
            4 => 1.0,
            _ => 1.0 + f32::from(self.byte()) / 64.0,
        }
    }

    fn steps(&mut self) -> u32 {
        match self.byte() % 6 {
            0 => 0,
            1 => 1,
            2 => 3,
            3 => METAREC_MAX_STEPS,
            4 => METAREC_MAX_STEPS + 1,
            _ => u32::MAX,
        }
    }
}

/// Every code a call may return: the C layer's own and the runtime's (not `METAREC_ERR_PANIC`).
fn check(code: i32) {
    assert_ne!(code, METAREC_ERR_PANIC, "a call panicked");
    let mut buf = [0 as c_char; 8];
    // SAFETY: `buf` holds 8 writable bytes.
    let len = unsafe { metarec_error_message(code, buf.as_mut_ptr(), buf.len()) };
    assert!(len > 0 && code >= 0, "undocumented status {code}");
    let message = metarec::status::message(code);
    assert_ne!(message, "unknown error code", "undocumented status {code}");
}

const SESSIONS: usize = 4;

/// Paths for `metarec_model_load`: the fixture, a truncated copy, a directory, a missing file.
fn files() -> &'static [CString] {
    static PATHS: OnceLock<Vec<CString>> = OnceLock::new();
    PATHS.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("metarec-fuzz-c-api-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create the scratch directory");
        let good = dir.join("model.mrec");
        let truncated = dir.join("truncated.mrec");
        std::fs::write(&good, fixture()).expect("write the fixture");
        std::fs::write(&truncated, &fixture()[..100]).expect("write the truncated fixture");
        [good, truncated, dir.clone(), dir.join("missing.mrec")]
            .iter()
            .map(|path| CString::new(path.to_str().expect("a UTF-8 temp dir")).expect("no NUL"))
            .collect()
    })
}

fuzz_target!(|data: &[u8]| {
    let mut p = Program(data);
    let mut model: *mut MetarecModel = ptr::null_mut();
    let bytes = fixture();
    // SAFETY: `bytes` is live for the call; `model` is writable.
    check(unsafe { metarec_model_load_from_memory(bytes.as_ptr(), bytes.len(), &mut model) });
    // Whether `model` is the factor fixture, and whether each session was opened on it.
    let mut model_is_factor = false;
    let mut sessions: [*mut MetarecSession; SESSIONS] = [ptr::null_mut(); SESSIONS];
    let mut session_is_factor = [false; SESSIONS];
    let mut ops = 0;
    while !p.0.is_empty() && ops < 64 {
        ops += 1;
        let op = p.byte();
        let slot = usize::from(p.byte()) % SESSIONS;
        let s = sessions[slot];
        // SAFETY (every call below): handles are live or NULL, each session is used by this
        // thread only, and every pointer argument is NULL or points to as many elements as the
        // call is told.
        unsafe {
            match op % 16 {
                0 => {
                    if s.is_null() {
                        let mut out = ptr::null_mut();
                        check(metarec_session_new(model, &mut out));
                        assert_eq!(out.is_null(), model.is_null());
                        sessions[slot] = out;
                        session_is_factor[slot] = model_is_factor;
                    }
                }
                1 => {
                    metarec_session_free(s);
                    sessions[slot] = ptr::null_mut();
                }
                2 => {
                    let (field, value) = (p.text(), p.text());
                    let null = p.byte() % 8;
                    let field_ptr = if null == 1 { ptr::null() } else { field.as_ptr() };
                    let value_ptr = if null == 2 { ptr::null() } else { value.as_ptr() };
                    check(metarec_session_set_profile(s, field_ptr, value_ptr));
                }
                3 => {
                    let (id, rating) = (p.text(), p.rating());
                    check(metarec_session_add_rating(s, id.as_ptr(), rating));
                }
                4 => check(metarec_session_clear_ratings(s)),
                5 => {
                    let steps = p.steps();
                    check(metarec_session_adapt(s, steps));
                }
                6 => {
                    let count = usize::from(p.byte() % 6);
                    let ids: Vec<CString> = (0..count).map(|_| p.text()).collect();
                    let mut pointers: Vec<*const c_char> = ids.iter().map(|id| id.as_ptr()).collect();
                    if count > 0 && p.byte() % 5 == 0 {
                        pointers[0] = ptr::null();
                    }
                    let mut scores = vec![0f32; count];
                    let out = if p.byte() % 7 == 0 { ptr::null_mut() } else { scores.as_mut_ptr() };
                    check(metarec_session_score(s, pointers.as_ptr(), count, out));
                    // Past the cap, refused before the arrays are read.
                    let code = metarec_session_score(s, pointers.as_ptr(), METAREC_MAX_CANDIDATES + 1, out);
                    assert!(code == METAREC_ERR_TOO_MANY_CANDIDATES || code == METAREC_ERR_NULL_POINTER);
                }
                7 => {
                    let n = metarec_model_item_count(model);
                    let len = match p.byte() % 4 {
                        0 => n.saturating_sub(1),
                        1 => n + 1,
                        2 => 0,
                        _ => n,
                    };
                    let mut scores = vec![0f32; len];
                    check(metarec_session_score_all(s, scores.as_mut_ptr(), len));
                }
                8 => {
                    let k = usize::from(p.byte() % 50);
                    let exclude = i32::from(p.byte() % 2);
                    let mut indices = vec![0usize; k];
                    let mut scores = vec![0f32; k];
                    let mut len = 0usize;
                    let out_scores = if k % 2 == 0 { ptr::null_mut() } else { scores.as_mut_ptr() };
                    check(metarec_session_top_k(s, k, exclude, indices.as_mut_ptr(), out_scores, &mut len));
                    assert!(len <= k);
                }
                9 => {
                    let capacity = usize::from(p.byte() % 20);
                    let mut neighbours = vec![MetarecNeighbour::default(); capacity];
                    let mut explanation = MetarecExplanation::default();
                    let explained = metarec_session_explain(s, &mut explanation, neighbours.as_mut_ptr(), capacity);
                    check(explained);
                    let factor = !s.is_null() && session_is_factor[slot];
                    if explained == METAREC_OK && factor {
                        // A fold-in has no learning rate and no neighbours.
                        assert!(explanation.learning_rate.is_nan() && explanation.neighbour_count == 0);
                    }
                    let _ = metarec_session_memory_bytes(s);
                    // Only a factor model's session explains a fold-in; NULL comes first.
                    let mut fold_in = MetarecFoldIn { adapted: -1, ..MetarecFoldIn::default() };
                    let out = if capacity == 7 { ptr::null_mut() } else { &mut fold_in as *mut MetarecFoldIn };
                    let code = metarec_session_explain_fold_in(s, out);
                    check(code);
                    let want = if s.is_null() || out.is_null() {
                        METAREC_ERR_NULL_POINTER
                    } else if factor {
                        METAREC_OK
                    } else {
                        METAREC_ERR_INVALID_ARGUMENT
                    };
                    assert_eq!(code, want, "metarec_session_explain_fold_in");
                    if code == METAREC_OK {
                        if explained == METAREC_OK {
                            assert_eq!(fold_in.adapted, explanation.adapted);
                        }
                        let ridge = (metarec_tests::FACTOR_REGULARISATION, metarec_tests::FACTOR_BIAS_REGULARISATION);
                        assert_eq!((fold_in.regularisation, fold_in.bias_regularisation), ridge);
                        assert_eq!(fold_in.adapted == 0, fold_in.support_count == 0);
                        assert!(fold_in.user_bias.is_finite());
                    } else {
                        assert_eq!(fold_in.adapted, -1, "written on failure");
                    }
                }
                10 => {
                    let index = usize::from(p.byte());
                    let buf_len = usize::from(p.byte() % 48);
                    let mut buf = vec![0 as c_char; buf_len];
                    let mut needed = 0usize;
                    check(metarec_model_item_id(model, index, buf.as_mut_ptr(), buf_len, &mut needed));
                    check(metarec_model_method(model, buf.as_mut_ptr(), buf_len, &mut needed));
                    check(metarec_model_task(model, buf.as_mut_ptr(), buf_len, ptr::null_mut()));
                    let side = i32::from(p.byte() % 4) - 1;
                    let field = usize::from(p.byte() % 4);
                    let _ = metarec_model_field_count(model, side);
                    check(metarec_model_field_name(model, side, field, buf.as_mut_ptr(), buf_len, &mut needed));
                    let (mut kind, mut size) = (0i32, 0usize);
                    check(metarec_model_field_info(model, side, field, &mut kind, &mut size));
                    let (mut min, mut max) = (0f32, 0f32);
                    check(metarec_model_rating_range(model, &mut min, ptr::null_mut()));
                    check(metarec_model_rating_range(model, ptr::null_mut(), &mut max));
                }
                11 => {
                    // The model may go before its sessions; a new handle replaces it: the
                    // fixture, or its matrix factorisation.
                    metarec_model_free(model);
                    model = ptr::null_mut();
                    model_is_factor = false;
                    let reload = p.byte();
                    if reload % 2 == 0 {
                        model_is_factor = reload % 4 == 2;
                        let new = if model_is_factor { factor_fixture() } else { bytes };
                        check(metarec_model_load_from_memory(new.as_ptr(), new.len(), &mut model));
                        assert!(!model.is_null());
                    }
                }
                12 => {
                    let code = i32::from_le_bytes(p.u32().to_le_bytes());
                    let buf_len = usize::from(p.byte() % 16);
                    let mut buf = vec![0 as c_char; buf_len];
                    let len = metarec_error_message(code, buf.as_mut_ptr(), buf_len);
                    assert!(len > 0);
                    let _ = metarec_check_version(p.u32() % 3, p.u32() % 3);
                }
                13 => {
                    // Damaged model bytes: the fixture (or its matrix factorisation) with one
                    // byte changed, or a fuzz-given prefix of it, or raw bytes.
                    let how = p.byte();
                    let mut damaged = if how % 6 < 3 { bytes.to_vec() } else { factor_fixture().to_vec() };
                    match how % 3 {
                        0 => {
                            let at = p.u32() as usize % damaged.len();
                            damaged[at] ^= p.byte() | 1;
                        }
                        1 => damaged.truncate(p.u32() as usize % damaged.len()),
                        _ => {
                            let n = usize::from(p.byte());
                            damaged = p.take(n).to_vec();
                        }
                    }
                    let mut other = ptr::null_mut();
                    let code = metarec_model_load_from_memory(damaged.as_ptr(), damaged.len(), &mut other);
                    check(code);
                    assert_eq!(other.is_null(), code != METAREC_OK);
                    metarec_model_free(other);
                }
                14 => {
                    // NULL handles everywhere.
                    let id = p.text();
                    check(metarec_session_add_rating(ptr::null_mut(), id.as_ptr(), 3.0));
                    check(metarec_session_adapt(ptr::null_mut(), 1));
                    check(metarec_model_item_id(ptr::null(), 0, ptr::null_mut(), 0, ptr::null_mut()));
                    let mut out = ptr::null_mut();
                    check(metarec_session_new(ptr::null(), &mut out));
                    assert!(out.is_null());
                }
                _ => {
                    // Loading from paths: the fixture, a damaged copy, a directory, nothing.
                    let paths = files();
                    let path = &paths[usize::from(p.byte()) % paths.len()];
                    let mut other = ptr::null_mut();
                    let code = metarec_model_load(path.as_ptr(), &mut other);
                    check(code);
                    metarec_model_free(other);
                }
            }
        }
    }
    // SAFETY: every handle is live or NULL and used by this thread only; none is used again.
    unsafe {
        for session in sessions {
            metarec_session_free(session);
        }
        metarec_model_free(model);
    }
});
