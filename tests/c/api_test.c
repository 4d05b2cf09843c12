/*
 * api_test: exercises every function of include/metarec.h from C, misuse included, and checks
 * each documented status code. Run by tests/tests/it (under ASan/UBSan, and under valgrind
 * when it is installed).
 *
 *   usage: api_test MODEL.mrec SCRATCH_DIR
 *
 * MODEL.mrec is the fixture model of metarec-tests (user fields "gender" and "age", item fields
 * "genre" and "year", ratings 1..5);
 * SCRATCH_DIR is a writable directory for the damaged copies of the model; it also holds the
 * fixture's click variant (click.mrec), its matrix factorisation (mf.mrec) and the fixture in
 * the aligned layout of format 2.4 (aligned.mrec).
 * Prints one line per failed check and a summary; exits 0 only when every check passed.
 */

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metarec.h"

static int checks = 0;
static int failures = 0;

static const char *message_of(int32_t code, char *buf, size_t len) {
    metarec_error_message(code, buf, len);
    return buf;
}

static void check_code(int32_t got, int32_t want, const char *expr, int line) {
    checks++;
    if (got != want) {
        char got_msg[128];
        char want_msg[128];
        failures++;
        fprintf(stderr, "api_test.c:%d: %s\n    returned %d (%s), expected %d (%s)\n", line, expr,
                (int)got, message_of(got, got_msg, sizeof got_msg), (int)want,
                message_of(want, want_msg, sizeof want_msg));
    }
}

static void check_true(int ok, const char *expr, int line) {
    checks++;
    if (!ok) {
        failures++;
        fprintf(stderr, "api_test.c:%d: check failed: %s\n", line, expr);
    }
}

#define CHECK_CODE(expr, want) check_code((expr), (want), #expr, __LINE__)
#define CHECK(expr) check_true((expr) ? 1 : 0, #expr, __LINE__)

/* Reads a whole file; returns NULL on failure. */
static unsigned char *read_file(const char *path, size_t *len) {
    FILE *file = fopen(path, "rb");
    if (file == NULL) {
        return NULL;
    }
    unsigned char *data = NULL;
    size_t cap = 0;
    size_t used = 0;
    for (;;) {
        if (used == cap) {
            size_t grown_cap = cap == 0 ? 4096 : cap * 2;
            unsigned char *grown = realloc(data, grown_cap);
            if (grown == NULL) {
                free(data);
                fclose(file);
                return NULL;
            }
            data = grown;
            cap = grown_cap;
        }
        size_t n = fread(data + used, 1, cap - used, file);
        used += n;
        if (n == 0) {
            break;
        }
    }
    int failed = ferror(file);
    fclose(file);
    if (failed) {
        free(data);
        return NULL;
    }
    *len = used;
    return data;
}

static int write_file(const char *path, const unsigned char *data, size_t len) {
    FILE *file = fopen(path, "wb");
    if (file == NULL) {
        return 0;
    }
    int ok = fwrite(data, 1, len, file) == len;
    return fclose(file) == 0 && ok;
}

static void test_version_and_messages(void) {
    const char *version = metarec_version();
    CHECK(version != NULL);
    CHECK(version != NULL && strcmp(version, METAREC_VERSION_STRING) == 0);

    char buf[128];
    CHECK(metarec_error_message(METAREC_OK, buf, sizeof buf) == strlen("ok"));
    CHECK(strcmp(buf, "ok") == 0);
    size_t unknown = metarec_error_message(9999, buf, sizeof buf);
    CHECK(unknown == strlen("unknown error code") && strcmp(buf, "unknown error code") == 0);
    CHECK(metarec_error_message(-7, buf, sizeof buf) == unknown);

    /* snprintf-style: truncated to fit, NUL-terminated, full length returned. */
    size_t full = metarec_error_message(METAREC_ERR_INVALID_RATING, NULL, 0);
    CHECK(full > 10);
    char small[8];
    memset(small, 'x', sizeof small);
    CHECK(metarec_error_message(METAREC_ERR_INVALID_RATING, small, sizeof small) == full);
    CHECK(small[7] == '\0' && strlen(small) == 7);
    char one[1] = {'x'};
    CHECK(metarec_error_message(METAREC_ERR_INVALID_RATING, one, 1) == full && one[0] == '\0');

    const int32_t codes[] = {
        METAREC_ERR_NULL_POINTER, METAREC_ERR_INVALID_UTF8, METAREC_ERR_IO,
        METAREC_ERR_BUFFER_TOO_SMALL, METAREC_ERR_INVALID_ARGUMENT, METAREC_ERR_PANIC,
        METAREC_ERR_INCOMPATIBLE_VERSION, METAREC_ERR_UNSUPPORTED_FEATURE, METAREC_ERR_BAD_MAGIC, METAREC_ERR_UNSUPPORTED_VERSION, METAREC_ERR_TRUNCATED,
        METAREC_ERR_CHECKSUM_MISMATCH, METAREC_ERR_TRAILING_BYTES, METAREC_ERR_MALFORMED_BODY,
        METAREC_ERR_INCONSISTENT_DIMENSIONS, METAREC_ERR_NON_FINITE_PARAMETER,
        METAREC_ERR_UNKNOWN_ITEM, METAREC_ERR_UNKNOWN_FIELD, METAREC_ERR_INVALID_RATING,
        METAREC_ERR_TOO_MANY_RATINGS, METAREC_ERR_LENGTH_MISMATCH, METAREC_ERR_INTERNAL,
    };
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++) {
        metarec_error_message(codes[i], buf, sizeof buf);
        CHECK(strcmp(buf, "unknown error code") != 0 && strlen(buf) > 0);
    }
}

static void test_version_check(void) {
    CHECK_CODE(METAREC_CHECK_VERSION(), METAREC_OK);
    CHECK_CODE(metarec_check_version(METAREC_VERSION_MAJOR, METAREC_VERSION_MINOR), METAREC_OK);
    /* A header newer than the library, or of another major version, is refused. */
    CHECK_CODE(metarec_check_version(METAREC_VERSION_MAJOR, METAREC_VERSION_MINOR + 1),
               METAREC_ERR_INCOMPATIBLE_VERSION);
    CHECK_CODE(metarec_check_version(METAREC_VERSION_MAJOR + 1, METAREC_VERSION_MINOR),
               METAREC_ERR_INCOMPATIBLE_VERSION);
    CHECK_CODE(metarec_check_version(UINT32_MAX, UINT32_MAX), METAREC_ERR_INCOMPATIBLE_VERSION);
#if METAREC_VERSION_MAJOR == 0
    /* 0.x: minor versions may break the API, so an older 0.x header is refused too. */
    if (METAREC_VERSION_MINOR > 0) {
        CHECK_CODE(metarec_check_version(0, METAREC_VERSION_MINOR - 1),
                   METAREC_ERR_INCOMPATIBLE_VERSION);
    }
#else
    CHECK_CODE(metarec_check_version(METAREC_VERSION_MAJOR, 0), METAREC_OK);
#endif
}

/* A non-NULL pointer value that must be overwritten with NULL by failed loads. */
static MetarecModel *sentinel_model(void) {
    static int marker;
    return (MetarecModel *)(void *)&marker;
}

static void test_loading(const char *model_path, const char *scratch) {
    MetarecModel *model = sentinel_model();
    CHECK_CODE(metarec_model_load(NULL, &model), METAREC_ERR_NULL_POINTER);
    CHECK_CODE(metarec_model_load(model_path, NULL), METAREC_ERR_NULL_POINTER);

    model = sentinel_model();
    CHECK_CODE(metarec_model_load("/nonexistent/metarec/model.mrec", &model), METAREC_ERR_IO);
    CHECK(model == NULL);
    CHECK_CODE(metarec_model_load(scratch, &model), METAREC_ERR_IO); /* a directory */

    size_t len = 0;
    unsigned char *bytes = read_file(model_path, &len);
    CHECK(bytes != NULL && len > 64);
    if (bytes == NULL || len <= 64) {
        free(bytes);
        return;
    }

    char path[4096];
    snprintf(path, sizeof path, "%s/truncated.mrec", scratch);
    CHECK(write_file(path, bytes, len - 10));
    model = sentinel_model();
    CHECK_CODE(metarec_model_load(path, &model), METAREC_ERR_TRUNCATED);
    CHECK(model == NULL);

    unsigned char *corrupted = malloc(len);
    CHECK(corrupted != NULL);
    if (corrupted != NULL) {
        memcpy(corrupted, bytes, len);
        corrupted[len / 2] ^= 0x10;
        snprintf(path, sizeof path, "%s/corrupted.mrec", scratch);
        CHECK(write_file(path, corrupted, len));
        CHECK_CODE(metarec_model_load(path, &model), METAREC_ERR_CHECKSUM_MISMATCH);
        CHECK_CODE(metarec_model_load_from_memory(corrupted, len, &model),
                   METAREC_ERR_CHECKSUM_MISMATCH);
        memcpy(corrupted, bytes, len);
        corrupted[0] = 'X';
        CHECK_CODE(metarec_model_load_from_memory(corrupted, len, &model), METAREC_ERR_BAD_MAGIC);
        free(corrupted);
    }

    CHECK_CODE(metarec_model_load_from_memory(NULL, len, &model), METAREC_ERR_NULL_POINTER);
    CHECK_CODE(metarec_model_load_from_memory(bytes, len, NULL), METAREC_ERR_NULL_POINTER);
    CHECK_CODE(metarec_model_load_from_memory(bytes, 0, &model), METAREC_ERR_TRUNCATED);
    CHECK_CODE(metarec_model_load_from_memory(bytes, 20, &model), METAREC_ERR_TRUNCATED);
    CHECK_CODE(metarec_model_load_from_memory(bytes, len - 1, &model), METAREC_ERR_TRUNCATED);
    CHECK(model == NULL);

    CHECK_CODE(metarec_model_load_from_memory(bytes, len, &model), METAREC_OK);
    CHECK(model != NULL);
    free(bytes); /* the model keeps its own copy */
    CHECK(metarec_model_item_count(model) > 0);
    metarec_model_free(model);
}

/* Item i's id into `buf` (empty on failure). */
static void item_id_of(const MetarecModel *model, size_t i, char *buf, size_t len) {
    size_t needed = 0;
    buf[0] = '\0';
    CHECK_CODE(metarec_model_item_id(model, i, buf, len, &needed), METAREC_OK);
}

/* The aligned fixture (SCRATCH_DIR/aligned.mrec) loaded in place from a caller-owned buffer:
 * the same catalogue and scores as its copy, the buffer freed only after the model and its
 * session (ASan reports any read of the buffer after that). */
static void test_borrowed(const char *scratch) {
    char path[4096];
    snprintf(path, sizeof path, "%s/aligned.mrec", scratch);
    size_t len = 0;
    unsigned char *bytes = read_file(path, &len);
    CHECK(bytes != NULL && len > 64);
    if (bytes == NULL || len <= 64) {
        free(bytes);
        return;
    }
    MetarecModel *model = sentinel_model();
    CHECK_CODE(metarec_model_load_from_memory_borrowed(NULL, len, &model), METAREC_ERR_NULL_POINTER);
    CHECK(model == NULL);
    CHECK_CODE(metarec_model_load_from_memory_borrowed(bytes, len, NULL), METAREC_ERR_NULL_POINTER);
    CHECK_CODE(metarec_model_load_from_memory_borrowed(bytes, len - 1, &model), METAREC_ERR_TRUNCATED);
    CHECK_CODE(metarec_model_load_from_memory_borrowed(bytes, (size_t)METAREC_MAX_MODEL_BYTES + 1, &model),
               METAREC_ERR_MODEL_TOO_LARGE);
    bytes[len - 1] ^= 0x01; /* the last byte of an id */
    CHECK_CODE(metarec_model_load_from_memory_borrowed(bytes, len, &model), METAREC_ERR_CHECKSUM_MISMATCH);
    bytes[len - 1] ^= 0x01;

    MetarecModel *copied = NULL;
    CHECK_CODE(metarec_model_load_from_memory(bytes, len, &copied), METAREC_OK);
    CHECK_CODE(metarec_model_load_from_memory_borrowed(bytes, len, &model), METAREC_OK);
    MetarecSession *session = NULL;
    MetarecSession *reference = NULL;
    char kept[256] = "";
    if (model != NULL && copied != NULL) {
        size_t count = metarec_model_item_count(model);
        CHECK(count > 0 && count == metarec_model_item_count(copied));
        char a[256];
        char b[256];
        for (size_t i = 0; i < count; i++) {
            item_id_of(model, i, a, sizeof a);
            item_id_of(copied, i, b, sizeof b);
            CHECK(a[0] != '\0' && strcmp(a, b) == 0);
        }
        CHECK_CODE(metarec_session_new(model, &session), METAREC_OK);
        CHECK_CODE(metarec_session_new(copied, &reference), METAREC_OK);
        item_id_of(model, count / 2, a, sizeof a);
        item_id_of(model, count - 1, kept, sizeof kept);
        CHECK_CODE(metarec_session_add_rating(session, a, 4.5f), METAREC_OK);
        CHECK_CODE(metarec_session_add_rating(reference, a, 4.5f), METAREC_OK);
        CHECK_CODE(metarec_session_adapt(session, 3), METAREC_OK);
        CHECK_CODE(metarec_session_adapt(reference, 3), METAREC_OK);
        float *scores = calloc(2 * count, sizeof *scores);
        CHECK(scores != NULL);
        if (scores != NULL) {
            CHECK_CODE(metarec_session_score_all(session, scores, count), METAREC_OK);
            CHECK_CODE(metarec_session_score_all(reference, scores + count, count), METAREC_OK);
            CHECK(memcmp(scores, scores + count, count * sizeof *scores) == 0);
        }
        free(scores);
    }
    metarec_model_free(model); /* the session keeps it, and the buffer, in use */
    metarec_model_free(copied);
    metarec_session_free(reference);
    if (session != NULL) {
        /* An id looked up in the borrowed catalogue after the model handle was freed. */
        CHECK_CODE(metarec_session_add_rating(session, kept, 3.0f), METAREC_OK);
    }
    metarec_session_free(session);
    free(bytes); /* only now: the borrowed model read it until its last session was freed */
}

static void test_item_ids(const MetarecModel *model) {
    size_t count = metarec_model_item_count(model);
    CHECK(metarec_model_item_count(NULL) == 0);
    char buf[256];
    size_t needed = 0;
    CHECK_CODE(metarec_model_item_id(NULL, 0, buf, sizeof buf, &needed), METAREC_ERR_NULL_POINTER);
    CHECK_CODE(metarec_model_item_id(model, 0, NULL, 16, &needed), METAREC_ERR_NULL_POINTER);
    CHECK_CODE(metarec_model_item_id(model, count, buf, sizeof buf, &needed),
               METAREC_ERR_INVALID_ARGUMENT);
    CHECK_CODE(metarec_model_item_id(model, (size_t)-1, buf, sizeof buf, &needed),
               METAREC_ERR_INVALID_ARGUMENT);

    for (size_t i = 0; i < count; i++) {
        needed = 0;
        CHECK_CODE(metarec_model_item_id(model, i, NULL, 0, &needed), METAREC_ERR_BUFFER_TOO_SMALL);
        CHECK(needed >= 2 && needed <= sizeof buf);
        if (needed < 2 || needed > sizeof buf) {
            continue;
        }
        memset(buf, 'x', sizeof buf);
        size_t reported = 0;
        CHECK_CODE(metarec_model_item_id(model, i, buf, needed - 1, &reported),
                   METAREC_ERR_BUFFER_TOO_SMALL);
        CHECK(reported == needed && buf[0] == '\0');
        CHECK_CODE(metarec_model_item_id(model, i, buf, needed, &reported), METAREC_OK);
        CHECK(reported == needed && strlen(buf) == needed - 1);
        CHECK_CODE(metarec_model_item_id(model, i, buf, sizeof buf, NULL), METAREC_OK);
    }
}

typedef int32_t (*TextGetter)(const MetarecModel *, char *, size_t, size_t *);

/* Checks a string getter's conventions and compares its text with `want`. */
static void check_text(const MetarecModel *model, TextGetter get, const char *want, int line) {
    char buf[64];
    size_t needed = 0;
    check_code(get(NULL, buf, sizeof buf, &needed), METAREC_ERR_NULL_POINTER, "get(NULL, ...)", line);
    check_code(get(model, NULL, 16, &needed), METAREC_ERR_NULL_POINTER, "get(model, NULL, 16)", line);
    check_code(get(model, NULL, 0, &needed), METAREC_ERR_BUFFER_TOO_SMALL, "get(model, NULL, 0)", line);
    check_true(needed == strlen(want) + 1, "needed == strlen(want) + 1", line);
    memset(buf, 'x', sizeof buf);
    size_t reported = 0;
    check_code(get(model, buf, strlen(want), &reported), METAREC_ERR_BUFFER_TOO_SMALL,
               "get(model, buf, strlen(want))", line);
    check_true(reported == needed && buf[0] == '\0', "short buffer gets an empty string", line);
    check_code(get(model, buf, sizeof buf, NULL), METAREC_OK, "get(model, buf, sizeof buf, NULL)", line);
    check_true(strcmp(buf, want) == 0, "text equals the expected one", line);
}

static void test_model_info(const MetarecModel *model) {
    check_text(model, metarec_model_method, "melu", __LINE__);
    check_text(model, metarec_model_task, "rating", __LINE__);
    check_text(model, metarec_model_adapt, "all", __LINE__);
    float threshold = -1.0f;
    CHECK_CODE(metarec_model_click_threshold(NULL, &threshold), METAREC_ERR_NULL_POINTER);
    CHECK_CODE(metarec_model_click_threshold(model, &threshold), METAREC_ERR_INVALID_ARGUMENT);
    CHECK(threshold == -1.0f);

    float min = 0.0f;
    float max = 0.0f;
    CHECK_CODE(metarec_model_rating_range(NULL, &min, &max), METAREC_ERR_NULL_POINTER);
    CHECK_CODE(metarec_model_rating_range(model, &min, &max), METAREC_OK);
    CHECK(min == 1.0f && max == 5.0f);
    CHECK_CODE(metarec_model_rating_range(model, NULL, NULL), METAREC_OK);

    CHECK(metarec_model_field_count(model, METAREC_FIELDS_USER) == 2);
    CHECK(metarec_model_field_count(model, METAREC_FIELDS_ITEM) == 2);
    CHECK(metarec_model_field_count(model, 2) == 0);
    CHECK(metarec_model_field_count(model, -1) == 0);
    CHECK(metarec_model_field_count(NULL, METAREC_FIELDS_USER) == 0);

    /* The fixture: user fields gender (F, M) and age (4 bounds, 5 buckets); item fields genre
     * (4 genres, multi) and year (3 years). */
    const struct {
        int32_t side;
        const char *name;
        int32_t kind;
        size_t vocabulary;
    } want[] = {
        {METAREC_FIELDS_USER, "gender", METAREC_FIELD_CATEGORICAL, 2},
        {METAREC_FIELDS_USER, "age", METAREC_FIELD_NUMERIC, 5},
        {METAREC_FIELDS_ITEM, "genre", METAREC_FIELD_MULTI_CATEGORICAL, 4},
        {METAREC_FIELDS_ITEM, "year", METAREC_FIELD_CATEGORICAL, 3},
    };
    char name[64];
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        size_t index = i % 2;
        size_t needed = 0;
        CHECK_CODE(metarec_model_field_name(model, want[i].side, index, NULL, 0, &needed),
                   METAREC_ERR_BUFFER_TOO_SMALL);
        CHECK(needed == strlen(want[i].name) + 1);
        CHECK_CODE(metarec_model_field_name(model, want[i].side, index, name, sizeof name, NULL),
                   METAREC_OK);
        CHECK(strcmp(name, want[i].name) == 0);
        int32_t kind = -1;
        size_t vocabulary = 0;
        CHECK_CODE(metarec_model_field_info(model, want[i].side, index, &kind, &vocabulary),
                   METAREC_OK);
        CHECK(kind == want[i].kind);
        CHECK(vocabulary == want[i].vocabulary);
        CHECK_CODE(metarec_model_field_info(model, want[i].side, index, NULL, NULL), METAREC_OK);
    }

    /* Misuse: NULL model, unknown side, index past the end, NULL buffer with a length. */
    CHECK_CODE(metarec_model_field_name(NULL, METAREC_FIELDS_USER, 0, name, sizeof name, NULL),
               METAREC_ERR_NULL_POINTER);
    CHECK_CODE(metarec_model_field_name(model, 7, 0, name, sizeof name, NULL),
               METAREC_ERR_INVALID_ARGUMENT);
    CHECK_CODE(metarec_model_field_name(model, METAREC_FIELDS_ITEM, 2, name, sizeof name, NULL),
               METAREC_ERR_INVALID_ARGUMENT);
    CHECK_CODE(metarec_model_field_name(model, METAREC_FIELDS_USER, 0, NULL, 8, NULL),
               METAREC_ERR_NULL_POINTER);
    int32_t kind = -1;
    CHECK_CODE(metarec_model_field_info(NULL, METAREC_FIELDS_USER, 0, &kind, NULL),
               METAREC_ERR_NULL_POINTER);
    CHECK_CODE(metarec_model_field_info(model, -3, 0, &kind, NULL), METAREC_ERR_INVALID_ARGUMENT);
    CHECK_CODE(metarec_model_field_info(model, METAREC_FIELDS_USER, (size_t)-1, &kind, NULL),
               METAREC_ERR_INVALID_ARGUMENT);
    CHECK(kind == -1); /* nothing written on failure */
}

/* Scores of every item for a user with this profile (no ratings); 0 on failure. */
static int profile_scores(const MetarecModel *model, const char *gender, const char *age,
                          float *out, size_t count) {
    MetarecSession *session = NULL;
    if (metarec_session_new(model, &session) != METAREC_OK) {
        return 0;
    }
    int ok = metarec_session_set_profile(session, "gender", gender) == METAREC_OK &&
             metarec_session_set_profile(session, "age", age) == METAREC_OK &&
             metarec_session_score_all(session, out, count) == METAREC_OK;
    metarec_session_free(session);
    return ok;
}

/* Values the model has never seen map to the field's unknown row, as in training. */
static void test_unknown_values(const MetarecModel *model) {
    size_t count = metarec_model_item_count(model);
    float *a = calloc(count, sizeof *a);
    float *b = calloc(count, sizeof *b);
    CHECK(a != NULL && b != NULL);
    if (a != NULL && b != NULL) {
        CHECK(profile_scores(model, "never-seen", "28", a, count));
        CHECK(profile_scores(model, "also-unknown", "28", b, count));
        CHECK(memcmp(a, b, count * sizeof *a) == 0);
        CHECK(profile_scores(model, "F", "28", b, count));
        CHECK(memcmp(a, b, count * sizeof *a) != 0);
        CHECK(profile_scores(model, "F", "not-a-number", a, count));
        CHECK(profile_scores(model, "F", "", b, count));
        CHECK(memcmp(a, b, count * sizeof *a) == 0);
    }
    free(a);
    free(b);
}

/* Calls in an unusual order: all allowed, with defined results. */
static void test_call_order(const MetarecModel *model) {
    MetarecSession *session = NULL;
    CHECK_CODE(metarec_session_new(model, &session), METAREC_OK);
    if (session == NULL) {
        return;
    }
    size_t count = metarec_model_item_count(model);
    float *meta = calloc(count, sizeof *meta);
    float *now = calloc(count, sizeof *now);
    CHECK(meta != NULL && now != NULL);
    if (meta != NULL && now != NULL) {
        /* Scoring before any profile or rating: the meta-learned model with unknown profile. */
        CHECK_CODE(metarec_session_score_all(session, meta, count), METAREC_OK);
        /* Adapting without ratings keeps the meta-learned weights. */
        CHECK_CODE(metarec_session_adapt(session, 0), METAREC_OK);
        CHECK_CODE(metarec_session_adapt(session, 7), METAREC_OK);
        CHECK_CODE(metarec_session_score_all(session, now, count), METAREC_OK);
        CHECK(memcmp(meta, now, count * sizeof *meta) == 0);
        /* Clearing ratings that were never added is fine. */
        CHECK_CODE(metarec_session_clear_ratings(session), METAREC_OK);

        /* Adapt, then change the profile: the adaptation is dropped. */
        char id[64];
        CHECK_CODE(metarec_model_item_id(model, 3, id, sizeof id, NULL), METAREC_OK);
        CHECK_CODE(metarec_session_add_rating(session, id, 5.0f), METAREC_OK);
        CHECK_CODE(metarec_session_adapt(session, 0), METAREC_OK);
        CHECK_CODE(metarec_session_score_all(session, now, count), METAREC_OK);
        CHECK(memcmp(meta, now, count * sizeof *meta) != 0);
        CHECK_CODE(metarec_session_set_profile(session, "gender", "nobody-knows"), METAREC_OK);
        CHECK_CODE(metarec_session_score_all(session, now, count), METAREC_OK);
        CHECK(memcmp(meta, now, count * sizeof *meta) == 0);

        /* Clearing the ratings and adapting again also gives the meta-learned scores. */
        CHECK_CODE(metarec_session_adapt(session, 0), METAREC_OK);
        CHECK_CODE(metarec_session_clear_ratings(session), METAREC_OK);
        CHECK_CODE(metarec_session_adapt(session, 0), METAREC_OK);
        CHECK_CODE(metarec_session_score_all(session, now, count), METAREC_OK);
        CHECK(memcmp(meta, now, count * sizeof *meta) == 0);

        /* The support set is bounded; the limit is reported, not a crash. */
        int32_t code = METAREC_OK;
        size_t added = 0;
        while (code == METAREC_OK && added < 1000000) {
            code = metarec_session_add_rating(session, id, 3.0f);
            added += code == METAREC_OK;
        }
        CHECK_CODE(code, METAREC_ERR_TOO_MANY_RATINGS);
        CHECK(added >= 1000 && added < 1000000);
        CHECK_CODE(metarec_session_clear_ratings(session), METAREC_OK);
        CHECK_CODE(metarec_session_add_rating(session, id, 3.0f), METAREC_OK);
    }
    free(meta);
    free(now);
    metarec_session_free(session);
}

static void test_session(const MetarecModel *model) {
    MetarecSession *session = NULL;
    CHECK_CODE(metarec_session_new(NULL, &session), METAREC_ERR_NULL_POINTER);
    CHECK(session == NULL);
    CHECK_CODE(metarec_session_new(model, NULL), METAREC_ERR_NULL_POINTER);
    CHECK_CODE(metarec_session_new(model, &session), METAREC_OK);
    if (session == NULL) {
        return;
    }

    size_t count = metarec_model_item_count(model);
    char first[256];
    char second[256];
    CHECK_CODE(metarec_model_item_id(model, 0, first, sizeof first, NULL), METAREC_OK);
    CHECK_CODE(metarec_model_item_id(model, 1, second, sizeof second, NULL), METAREC_OK);

    /* Profile. */
    CHECK_CODE(metarec_session_set_profile(NULL, "gender", "F"), METAREC_ERR_NULL_POINTER);
    CHECK_CODE(metarec_session_set_profile(session, NULL, "F"), METAREC_ERR_NULL_POINTER);
    CHECK_CODE(metarec_session_set_profile(session, "gender", NULL), METAREC_ERR_NULL_POINTER);
    CHECK_CODE(metarec_session_set_profile(session, "shoe-size", "44"), METAREC_ERR_UNKNOWN_FIELD);
    CHECK_CODE(metarec_session_set_profile(session, "gender", "caf\xe9"), METAREC_ERR_INVALID_UTF8);
    CHECK_CODE(metarec_session_set_profile(session, "gender", "F"), METAREC_OK);
    CHECK_CODE(metarec_session_set_profile(session, "gender", "never-seen"), METAREC_OK);
    CHECK_CODE(metarec_session_set_profile(session, "gender", "F"), METAREC_OK);

    /* Ratings. */
    CHECK_CODE(metarec_session_add_rating(NULL, first, 4.0f), METAREC_ERR_NULL_POINTER);
    CHECK_CODE(metarec_session_add_rating(session, NULL, 4.0f), METAREC_ERR_NULL_POINTER);
    CHECK_CODE(metarec_session_add_rating(session, "no-such-item", 4.0f), METAREC_ERR_UNKNOWN_ITEM);
    CHECK_CODE(metarec_session_add_rating(session, "\xff\xfe", 4.0f), METAREC_ERR_INVALID_UTF8);
    CHECK_CODE(metarec_session_add_rating(session, first, NAN), METAREC_ERR_INVALID_RATING);
    CHECK_CODE(metarec_session_add_rating(session, first, INFINITY), METAREC_ERR_INVALID_RATING);
    CHECK_CODE(metarec_session_add_rating(session, first, 1000.0f), METAREC_ERR_INVALID_RATING);
    CHECK_CODE(metarec_session_add_rating(session, first, 5.0f), METAREC_OK);
    CHECK_CODE(metarec_session_add_rating(session, second, 1.0f), METAREC_OK);
    CHECK_CODE(metarec_session_clear_ratings(NULL), METAREC_ERR_NULL_POINTER);
    CHECK_CODE(metarec_session_clear_ratings(session), METAREC_OK);
    CHECK_CODE(metarec_session_add_rating(session, first, 5.0f), METAREC_OK);
    CHECK_CODE(metarec_session_add_rating(session, second, 1.0f), METAREC_OK);

    /* Scoring by id, before adaptation. */
    const char *ids[2] = {first, second};
    const char *with_unknown[2] = {first, "no-such-item"};
    const char *with_null[2] = {first, NULL};
    float before[2] = {0};
    float scores[2] = {0};
    CHECK_CODE(metarec_session_score(NULL, ids, 2, scores), METAREC_ERR_NULL_POINTER);
    CHECK_CODE(metarec_session_score(session, NULL, 2, scores), METAREC_ERR_NULL_POINTER);
    CHECK_CODE(metarec_session_score(session, ids, 2, NULL), METAREC_ERR_NULL_POINTER);
    CHECK_CODE(metarec_session_score(session, with_null, 2, scores), METAREC_ERR_NULL_POINTER);
    CHECK_CODE(metarec_session_score(session, with_unknown, 2, scores), METAREC_ERR_UNKNOWN_ITEM);
    CHECK_CODE(metarec_session_score(session, NULL, 0, NULL), METAREC_OK);
    CHECK_CODE(metarec_session_score(session, ids, 2, before), METAREC_OK);
    CHECK(isfinite(before[0]) && isfinite(before[1]));

    /* Adaptation. */
    CHECK_CODE(metarec_session_adapt(NULL, 0), METAREC_ERR_NULL_POINTER);
    CHECK_CODE(metarec_session_adapt(session, 0), METAREC_OK);
    float adapted[2] = {0};
    CHECK_CODE(metarec_session_score(session, ids, 2, adapted), METAREC_OK);
    CHECK(adapted[0] != before[0] || adapted[1] != before[1]);
    /* Adapting again restarts from the meta-learned weights: same result. */
    CHECK_CODE(metarec_session_adapt(session, 0), METAREC_OK);
    CHECK_CODE(metarec_session_score(session, ids, 2, scores), METAREC_OK);
    CHECK(scores[0] == adapted[0] && scores[1] == adapted[1]);
    CHECK_CODE(metarec_session_adapt(session, 3), METAREC_OK);

    /* Scoring everything. */
    float *all = calloc(count + 1, sizeof *all);
    CHECK(all != NULL);
    if (all != NULL) {
        CHECK_CODE(metarec_session_score_all(NULL, all, count), METAREC_ERR_NULL_POINTER);
        CHECK_CODE(metarec_session_score_all(session, NULL, count), METAREC_ERR_NULL_POINTER);
        CHECK_CODE(metarec_session_score_all(session, all, count - 1), METAREC_ERR_INVALID_ARGUMENT);
        CHECK_CODE(metarec_session_score_all(session, all, count + 1), METAREC_ERR_INVALID_ARGUMENT);
        CHECK_CODE(metarec_session_score_all(session, all, count), METAREC_OK);
    }

    /* Top k. */
    size_t indices[5];
    float top_scores[5];
    size_t len = 99;
    CHECK_CODE(metarec_session_top_k(NULL, 5, 1, indices, top_scores, &len),
               METAREC_ERR_NULL_POINTER);
    CHECK_CODE(metarec_session_top_k(session, 5, 1, indices, top_scores, NULL),
               METAREC_ERR_NULL_POINTER);
    CHECK_CODE(metarec_session_top_k(session, 5, 1, NULL, top_scores, &len),
               METAREC_ERR_NULL_POINTER);
    CHECK(len == 0);
    CHECK_CODE(metarec_session_top_k(session, 0, 1, NULL, NULL, &len), METAREC_OK);
    CHECK(len == 0);
    CHECK_CODE(metarec_session_top_k(session, 5, 0, indices, top_scores, &len), METAREC_OK);
    CHECK(len == 5 || len == count);
    for (size_t i = 0; i < len; i++) {
        CHECK(indices[i] < count);
        if (all != NULL && indices[i] < count) {
            CHECK(top_scores[i] == all[indices[i]]);
        }
        if (i > 0) {
            CHECK(top_scores[i - 1] > top_scores[i] ||
                  (top_scores[i - 1] == top_scores[i] && indices[i - 1] < indices[i]));
        }
    }
    CHECK_CODE(metarec_session_top_k(session, 5, 1, indices, NULL, &len), METAREC_OK);
    for (size_t i = 0; i < len; i++) {
        CHECK(indices[i] != 0 && indices[i] != 1); /* the two rated items */
    }

    /* Ranking through a shortlist of one candidate (raised to k plus the ratings): the scores
     * are still the network's, best first; then exhaustive, then the default again. */
    CHECK_CODE(metarec_session_set_ranking(NULL, 0), METAREC_ERR_NULL_POINTER);
    int64_t rankings[3] = {1, 0, -1};
    for (size_t r = 0; r < 3; r++) {
        CHECK_CODE(metarec_session_set_ranking(session, rankings[r]), METAREC_OK);
        CHECK_CODE(metarec_session_top_k(session, 5, 1, indices, top_scores, &len), METAREC_OK);
        CHECK(len == 5 || len + 2 == count);
        for (size_t i = 0; i < len; i++) {
            CHECK(indices[i] < count && indices[i] != 0 && indices[i] != 1);
            if (all != NULL && indices[i] < count) {
                CHECK(top_scores[i] == all[indices[i]]);
            }
            if (i > 0) {
                CHECK(top_scores[i - 1] >= top_scores[i]);
            }
        }
    }
    free(all);

    metarec_session_free(session);
}

static void test_explanation(const MetarecModel *model) {
    MetarecExplanation explanation;
    MetarecNeighbour neighbours[16];
    CHECK_CODE(metarec_session_explain(NULL, &explanation, neighbours, 16), METAREC_ERR_NULL_POINTER);
    CHECK(metarec_session_memory_bytes(NULL) == 0);
    MetarecSession *session = NULL;
    CHECK_CODE(metarec_session_new(model, &session), METAREC_OK);
    if (session == NULL) {
        return;
    }
    CHECK(metarec_session_memory_bytes(session) > 0);
    CHECK_CODE(metarec_session_explain(session, NULL, neighbours, 16), METAREC_ERR_NULL_POINTER);
    /* Before any adaptation: nothing to explain. */
    CHECK_CODE(metarec_session_explain(session, &explanation, NULL, 0), METAREC_OK);
    CHECK(explanation.adapted == 0 && explanation.neighbour_count == 0);
    char id[64];
    size_t needed = 0;
    CHECK_CODE(metarec_model_item_id(model, 0, id, sizeof id, &needed), METAREC_OK);
    CHECK_CODE(metarec_session_add_rating(session, id, 4.0f), METAREC_OK);
    CHECK_CODE(metarec_session_adapt(session, 0), METAREC_OK);
    CHECK_CODE(metarec_session_explain(session, &explanation, neighbours, 16), METAREC_OK);
    /* The fixture is a MeLU model: one fixed rate (0.05), no network, no neighbours, init 0. */
    CHECK(explanation.adapted == 1 && explanation.init == 0);
    CHECK(explanation.learning_rate > 0.049f && explanation.learning_rate < 0.051f);
    CHECK(explanation.network_rate != explanation.network_rate); /* NaN */
    CHECK(explanation.neighbour_count == 0);
    /* A change to the support set drops the adaptation and its explanation. */
    CHECK_CODE(metarec_session_clear_ratings(session), METAREC_OK);
    CHECK_CODE(metarec_session_explain(session, &explanation, NULL, 0), METAREC_OK);
    CHECK(explanation.adapted == 0);

    /* A MeLU model has no fold-in: refused, nothing written; NULL arguments come first. */
    MetarecFoldIn fold_in;
    fold_in.adapted = -1;
    fold_in.support_count = 77;
    CHECK_CODE(metarec_session_explain_fold_in(NULL, &fold_in), METAREC_ERR_NULL_POINTER);
    CHECK_CODE(metarec_session_explain_fold_in(session, NULL), METAREC_ERR_NULL_POINTER);
    CHECK_CODE(metarec_session_explain_fold_in(NULL, NULL), METAREC_ERR_NULL_POINTER);
    CHECK_CODE(metarec_session_explain_fold_in(session, &fold_in), METAREC_ERR_INVALID_ARGUMENT);
    CHECK_CODE(metarec_session_add_rating(session, id, 4.0f), METAREC_OK);
    CHECK_CODE(metarec_session_adapt(session, 0), METAREC_OK);
    CHECK_CODE(metarec_session_explain_fold_in(session, &fold_in), METAREC_ERR_INVALID_ARGUMENT);
    CHECK(fold_in.adapted == -1 && fold_in.support_count == 77);
    metarec_session_free(session);
}

/* A device's federated contribution (the fixture is a MeLU model adapting every weight): the size
 * is asked with buf_len 0, the blob is written whole or not at all, and bad arguments come back
 * as their codes. */
static void test_contribution(const MetarecModel *model) {
    size_t needed = 0;
    uint8_t small[4];
    CHECK_CODE(metarec_session_contribute(NULL, 1.0f, NULL, 0, &needed), METAREC_ERR_NULL_POINTER);
    MetarecSession *session = NULL;
    CHECK_CODE(metarec_session_new(model, &session), METAREC_OK);
    if (session == NULL) {
        return;
    }
    char id[64];
    CHECK_CODE(metarec_model_item_id(model, 0, id, sizeof id, &needed), METAREC_OK);
    CHECK_CODE(metarec_session_add_rating(session, id, 4.0f), METAREC_OK);
    CHECK_CODE(metarec_session_contribute(session, 1.0f, NULL, 0, &needed), METAREC_ERR_TOO_FEW_RATINGS);
    CHECK_CODE(metarec_model_item_id(model, 1, id, sizeof id, &needed), METAREC_OK);
    CHECK_CODE(metarec_session_add_rating(session, id, 2.0f), METAREC_OK);
    CHECK_CODE(metarec_model_item_id(model, 2, id, sizeof id, &needed), METAREC_OK);
    CHECK_CODE(metarec_session_add_rating(session, id, 5.0f), METAREC_OK);
    float bad_norms[] = {0.0f, -1.0f, NAN, INFINITY};
    for (size_t i = 0; i < sizeof bad_norms / sizeof bad_norms[0]; i++) {
        CHECK_CODE(metarec_session_contribute(session, bad_norms[i], NULL, 0, &needed), METAREC_ERR_INVALID_CLIP_NORM);
    }
    needed = 0;
    CHECK_CODE(metarec_session_contribute(session, 1.0f, NULL, 0, &needed), METAREC_ERR_BUFFER_TOO_SMALL);
    CHECK(needed > 16);
    memset(small, 0xAB, sizeof small);
    CHECK_CODE(metarec_session_contribute(session, 1.0f, small, sizeof small, &needed), METAREC_ERR_BUFFER_TOO_SMALL);
    CHECK(small[0] == 0xAB);
    uint8_t *blob = malloc(needed);
    uint8_t *again = malloc(needed);
    CHECK(blob != NULL && again != NULL);
    if (blob != NULL && again != NULL) {
        size_t written = 0;
        CHECK_CODE(metarec_session_contribute(session, 1.0f, blob, needed, &written), METAREC_OK);
        CHECK(written == needed && memcmp(blob, "MRFU", 4) == 0);
        /* The same ratings give the same bytes. */
        CHECK_CODE(metarec_session_contribute(session, 1.0f, again, needed, &written), METAREC_OK);
        CHECK(written == needed && memcmp(blob, again, needed) == 0);
    }
    free(blob);
    free(again);
    metarec_session_free(session);
}

/* A click model (SCRATCH_DIR/click.mrec): labels in 0..1, scores are probabilities. */
static void test_click_model(const char *scratch) {
    char path[4096];
    snprintf(path, sizeof path, "%s/click.mrec", scratch);
    MetarecModel *model = NULL;
    CHECK_CODE(metarec_model_load(path, &model), METAREC_OK);
    if (model == NULL) {
        return;
    }
    check_text(model, metarec_model_task, "click", __LINE__);
    float threshold = 0.0f;
    CHECK_CODE(metarec_model_click_threshold(model, NULL), METAREC_ERR_NULL_POINTER);
    CHECK_CODE(metarec_model_click_threshold(model, &threshold), METAREC_OK);
    CHECK(threshold == 4.0f);
    float min = -1.0f;
    float max = -1.0f;
    CHECK_CODE(metarec_model_rating_range(model, &min, &max), METAREC_OK);
    CHECK(min == 0.0f && max == 1.0f);

    MetarecSession *session = NULL;
    CHECK_CODE(metarec_session_new(model, &session), METAREC_OK);
    char first[64];
    char second[64];
    CHECK_CODE(metarec_model_item_id(model, 0, first, sizeof first, NULL), METAREC_OK);
    CHECK_CODE(metarec_model_item_id(model, 1, second, sizeof second, NULL), METAREC_OK);
    /* A rating is not a label. */
    CHECK_CODE(metarec_session_add_rating(session, first, 5.0f), METAREC_ERR_INVALID_RATING);
    CHECK_CODE(metarec_session_add_rating(session, first, 1.0f), METAREC_OK);
    CHECK_CODE(metarec_session_add_rating(session, second, 0.0f), METAREC_OK);
    const char *ids[2] = {first, second};
    float before[2] = {0};
    float after[2] = {0};
    CHECK_CODE(metarec_session_score(session, ids, 2, before), METAREC_OK);
    CHECK_CODE(metarec_session_adapt(session, 20), METAREC_OK);
    CHECK_CODE(metarec_session_score(session, ids, 2, after), METAREC_OK);
    for (int i = 0; i < 2; i++) {
        CHECK(before[i] > 0.0f && before[i] < 1.0f && after[i] > 0.0f && after[i] < 1.0f);
    }
    /* Adaptation lowers the support log loss (clicked item up, skipped item down, jointly). */
    double loss_before = -log(before[0]) - log(1.0 - before[1]);
    double loss_after = -log(after[0]) - log(1.0 - after[1]);
    CHECK(loss_after < loss_before - 1e-3);
    metarec_session_free(session);
    metarec_model_free(model);
}

/* Item bias b_i of the factor fixture (metarec-tests' factor_item_bias): ((5 i) mod 9 - 4) / 8,
 * exact in float, so a user without a fold-in scores exactly mu + b_i = 3.5 + b_i. */
static float factor_bias(size_t i) {
    return (float)((i * 5) % 9) * 0.125f - 0.5f;
}

/* Squared error of `scores` (indexed by item) against `count` support ratings. */
static double support_error(const float *scores, const size_t *items, const float *ratings,
                            size_t count) {
    double sum = 0.0;
    for (size_t i = 0; i < count; i++) {
        double residual = (double)ratings[i] - (double)scores[items[i]];
        sum += residual * residual;
    }
    return sum;
}

/* A matrix factorisation with fold-in (SCRATCH_DIR/mf.mrec): the fixture's fields and items,
 * mu = 3.5, 3 factors, lambda = 2, lambda_b = 1. Adaptation is one exact ridge solve. */
static void test_factor_model(const char *scratch) {
    char path[4096];
    snprintf(path, sizeof path, "%s/mf.mrec", scratch);
    MetarecModel *model = NULL;
    CHECK_CODE(metarec_model_load(path, &model), METAREC_OK);
    if (model == NULL) {
        return;
    }
    check_text(model, metarec_model_method, "mf", __LINE__);
    check_text(model, metarec_model_task, "rating", __LINE__);
    float min = 0.0f;
    float max = 0.0f;
    CHECK_CODE(metarec_model_rating_range(model, &min, &max), METAREC_OK);
    CHECK(min == 1.0f && max == 5.0f);
    CHECK(metarec_model_field_count(model, METAREC_FIELDS_USER) == 2);
    CHECK(metarec_model_field_count(model, METAREC_FIELDS_ITEM) == 2);
    size_t count = metarec_model_item_count(model);
    CHECK(count == 40);

    MetarecSession *session = NULL;
    CHECK_CODE(metarec_session_new(model, &session), METAREC_OK);
    float *meta = calloc(count, sizeof *meta);
    float *now = calloc(count, sizeof *now);
    float *other = calloc(count, sizeof *other);
    CHECK(meta != NULL && now != NULL && other != NULL);
    if (session == NULL || meta == NULL || now == NULL || other == NULL || count < 8) {
        free(meta);
        free(now);
        free(other);
        metarec_session_free(session);
        metarec_model_free(model);
        return;
    }
    CHECK(metarec_session_memory_bytes(session) > 0);

    /* A factor model folds users in: it has no gradient to contribute. */
    size_t blob_len = 0;
    CHECK_CODE(metarec_session_contribute(session, 1.0f, NULL, 0, &blob_len), METAREC_ERR_NOT_CONTRIBUTABLE);
    /* The profile calls work as for any model (the fields keep their vocabularies). */
    CHECK_CODE(metarec_session_set_profile(session, "gender", "F"), METAREC_OK);
    CHECK_CODE(metarec_session_set_profile(session, "age", "28"), METAREC_OK);
    CHECK_CODE(metarec_session_set_profile(session, "shoe-size", "44"), METAREC_ERR_UNKNOWN_FIELD);

    /* Before any fold-in: mu + b_i, whatever the profile. */
    CHECK_CODE(metarec_session_score_all(session, meta, count), METAREC_OK);
    int exact = 1;
    for (size_t i = 0; i < count; i++) {
        exact &= meta[i] == 3.5f + factor_bias(i);
    }
    CHECK(exact);
    CHECK(profile_scores(model, "M", "60", other, count));
    CHECK(memcmp(meta, other, count * sizeof *meta) == 0);
    MetarecFoldIn fold_in;
    memset(&fold_in, 0x55, sizeof fold_in);
    CHECK_CODE(metarec_session_explain_fold_in(session, &fold_in), METAREC_OK);
    CHECK(fold_in.adapted == 0 && fold_in.support_count == 0 && fold_in.user_bias == 0.0f);
    CHECK(fold_in.regularisation == 2.0f && fold_in.bias_regularisation == 1.0f);

    /* Adapting without ratings solves nothing: still mu + b_i. */
    CHECK_CODE(metarec_session_adapt(session, 0), METAREC_OK);
    CHECK_CODE(metarec_session_score_all(session, now, count), METAREC_OK);
    CHECK(memcmp(meta, now, count * sizeof *meta) == 0);
    CHECK_CODE(metarec_session_explain_fold_in(session, &fold_in), METAREC_OK);
    CHECK(fold_in.adapted == 0 && fold_in.support_count == 0);

    /* Ratings: the scale's maximum and minimum, a middle one and a second rating of item 0. */
    char ids[3][256];
    for (size_t i = 0; i < 3; i++) {
        CHECK_CODE(metarec_model_item_id(model, i, ids[i], sizeof ids[i], NULL), METAREC_OK);
    }
    const size_t rated[4] = {0, 1, 2, 0};
    const float ratings[4] = {5.0f, 1.0f, 3.0f, 4.0f};
    CHECK_CODE(metarec_session_add_rating(session, ids[0], NAN), METAREC_ERR_INVALID_RATING);
    CHECK_CODE(metarec_session_add_rating(session, ids[0], 5.5f), METAREC_ERR_INVALID_RATING);
    CHECK_CODE(metarec_session_add_rating(session, ids[0], 0.5f), METAREC_ERR_INVALID_RATING);
    for (size_t i = 0; i < 4; i++) {
        CHECK_CODE(metarec_session_add_rating(session, ids[rated[i]], ratings[i]), METAREC_OK);
    }
    /* Added but not yet adapted: still mu + b_i. */
    CHECK_CODE(metarec_session_score_all(session, now, count), METAREC_OK);
    CHECK(memcmp(meta, now, count * sizeof *meta) == 0);

    /* The fold-in. */
    CHECK_CODE(metarec_session_adapt(session, 0), METAREC_OK);
    float *adapted = calloc(count, sizeof *adapted);
    CHECK(adapted != NULL);
    if (adapted != NULL) {
        CHECK_CODE(metarec_session_score_all(session, adapted, count), METAREC_OK);
        int finite = 1;
        for (size_t i = 0; i < count; i++) {
            finite &= isfinite(adapted[i]) ? 1 : 0;
        }
        CHECK(finite);
        CHECK(memcmp(meta, adapted, count * sizeof *meta) != 0);
        /* The ridge solution fits the support better than no user terms (its objective at zero
         * is the support's squared error before). */
        CHECK(support_error(adapted, rated, ratings, 4) < support_error(meta, rated, ratings, 4));
        /* Scoring by id gives the same numbers. */
        const char *some[2] = {ids[2], ids[0]};
        float two[2] = {0.0f, 0.0f};
        CHECK_CODE(metarec_session_score(session, some, 2, two), METAREC_OK);
        CHECK(two[0] == adapted[2] && two[1] == adapted[0]);
    }
    MetarecExplanation explanation;
    MetarecNeighbour neighbours[4];
    CHECK_CODE(metarec_session_explain(session, &explanation, neighbours, 4), METAREC_OK);
    CHECK(explanation.adapted == 1 && explanation.init == 0 && explanation.neighbour_count == 0);
    CHECK(isnan(explanation.learning_rate) && isnan(explanation.network_rate));
    memset(&fold_in, 0x55, sizeof fold_in);
    CHECK_CODE(metarec_session_explain_fold_in(session, &fold_in), METAREC_OK);
    CHECK(fold_in.adapted == 1 && fold_in.support_count == 4);
    CHECK(fold_in.regularisation == 2.0f && fold_in.bias_regularisation == 1.0f);
    CHECK(isfinite(fold_in.user_bias) && fold_in.user_bias != 0.0f);
    CHECK_CODE(metarec_session_explain_fold_in(session, NULL), METAREC_ERR_NULL_POINTER);

    /* The solve is exact: adapting again, or with any step count, gives the same scores. */
    if (adapted != NULL) {
        CHECK_CODE(metarec_session_adapt(session, 0), METAREC_OK);
        CHECK_CODE(metarec_session_score_all(session, now, count), METAREC_OK);
        CHECK(memcmp(adapted, now, count * sizeof *now) == 0);
        CHECK_CODE(metarec_session_adapt(session, 3), METAREC_OK);
        CHECK_CODE(metarec_session_score_all(session, now, count), METAREC_OK);
        CHECK(memcmp(adapted, now, count * sizeof *now) == 0);
        /* Too many steps is refused and leaves the fold-in in place. */
        CHECK_CODE(metarec_session_adapt(session, METAREC_MAX_STEPS + 1), METAREC_ERR_TOO_MANY_STEPS);
        CHECK_CODE(metarec_session_score_all(session, now, count), METAREC_OK);
        CHECK(memcmp(adapted, now, count * sizeof *now) == 0);
    }
    /* A new profile drops the fold-in, but the profile does not enter a factor model's scores:
     * folding in again gives the same ones. */
    CHECK_CODE(metarec_session_set_profile(session, "gender", "M"), METAREC_OK);
    CHECK_CODE(metarec_session_adapt(session, 0), METAREC_OK);
    if (adapted != NULL) {
        CHECK_CODE(metarec_session_score_all(session, now, count), METAREC_OK);
        CHECK(memcmp(adapted, now, count * sizeof *now) == 0);
    }

    /* Top k, rated items excluded: ranked by the adapted scores. */
    size_t indices[5];
    float top_scores[5];
    size_t len = 99;
    CHECK_CODE(metarec_session_top_k(session, 5, 1, indices, top_scores, &len), METAREC_OK);
    CHECK(len == 5);
    for (size_t i = 0; i < len && i < 5; i++) {
        CHECK(indices[i] > 2 && indices[i] < count);
        if (adapted != NULL && indices[i] < count) {
            CHECK(top_scores[i] == adapted[indices[i]]);
        }
        if (i > 0) {
            CHECK(top_scores[i - 1] > top_scores[i] ||
                  (top_scores[i - 1] == top_scores[i] && indices[i - 1] < indices[i]));
        }
    }
    CHECK_CODE(metarec_session_top_k(session, 1, 0, indices, NULL, &len), METAREC_OK);
    CHECK(len == 1);
    if (adapted != NULL && len == 1 && indices[0] < count) {
        for (size_t i = 0; i < count; i++) {
            CHECK(adapted[i] <= adapted[indices[0]]);
        }
    }

    /* A change to the support set drops the fold-in: mu + b_i again. */
    CHECK_CODE(metarec_session_add_rating(session, ids[1], 2.0f), METAREC_OK);
    CHECK_CODE(metarec_session_explain_fold_in(session, &fold_in), METAREC_OK);
    CHECK(fold_in.adapted == 0 && fold_in.support_count == 0 && fold_in.user_bias == 0.0f);
    CHECK_CODE(metarec_session_score_all(session, now, count), METAREC_OK);
    CHECK(memcmp(meta, now, count * sizeof *now) == 0);
    CHECK_CODE(metarec_session_adapt(session, 0), METAREC_OK);
    CHECK_CODE(metarec_session_explain_fold_in(session, &fold_in), METAREC_OK);
    CHECK(fold_in.adapted == 1 && fold_in.support_count == 5);

    /* Clear, then adapt with no ratings: the scores with no ratings at all. */
    CHECK_CODE(metarec_session_clear_ratings(session), METAREC_OK);
    CHECK_CODE(metarec_session_adapt(session, 0), METAREC_OK);
    CHECK_CODE(metarec_session_score_all(session, now, count), METAREC_OK);
    CHECK(memcmp(meta, now, count * sizeof *now) == 0);
    CHECK_CODE(metarec_session_explain(session, &explanation, NULL, 0), METAREC_OK);
    CHECK(explanation.adapted == 0);
    CHECK_CODE(metarec_session_explain_fold_in(session, &fold_in), METAREC_OK);
    CHECK(fold_in.adapted == 0 && fold_in.regularisation == 2.0f);

    /* The session keeps the model alive: fold in again after the handle is gone. */
    metarec_model_free(model);
    for (size_t i = 0; i < 4; i++) {
        CHECK_CODE(metarec_session_add_rating(session, ids[rated[i]], ratings[i]), METAREC_OK);
    }
    CHECK_CODE(metarec_session_adapt(session, 0), METAREC_OK);
    if (adapted != NULL) {
        CHECK_CODE(metarec_session_score_all(session, now, count), METAREC_OK);
        CHECK(memcmp(adapted, now, count * sizeof *now) == 0);
    }
    CHECK_CODE(metarec_session_explain_fold_in(session, &fold_in), METAREC_OK);
    CHECK(fold_in.adapted == 1 && fold_in.support_count == 4);
    metarec_session_free(session);
    free(adapted);
    free(meta);
    free(now);
    free(other);
}

/* The documented caps (METAREC_MAX_*): requests at a cap work, one past it is refused with its
 * code; a string argument is read no further than the cap, a count past the cap is refused
 * before the arrays are read, and a model file past the size cap is refused unread. */
static void test_limits(const MetarecModel *model, const char *scratch) {
    MetarecSession *session = NULL;
    CHECK_CODE(metarec_session_new(model, &session), METAREC_OK);
    char *text = malloc(METAREC_MAX_STRING_LEN + 2);
    char *unterminated = malloc(METAREC_MAX_STRING_LEN + 1);
    CHECK(text != NULL && unterminated != NULL);
    if (session == NULL || text == NULL || unterminated == NULL) {
        metarec_session_free(session);
        free(text);
        free(unterminated);
        return;
    }
    char id[64];
    size_t needed = 0;
    CHECK_CODE(metarec_model_item_id(model, 0, id, sizeof id, &needed), METAREC_OK);

    /* Steps. */
    CHECK_CODE(metarec_session_add_rating(session, id, 4.0f), METAREC_OK);
    CHECK_CODE(metarec_session_adapt(session, METAREC_MAX_STEPS), METAREC_OK);
    CHECK_CODE(metarec_session_adapt(session, METAREC_MAX_STEPS + 1), METAREC_ERR_TOO_MANY_STEPS);
    CHECK_CODE(metarec_session_adapt(session, UINT32_MAX), METAREC_ERR_TOO_MANY_STEPS);

    /* Strings: exactly the cap is a string like any other; one byte more is refused. */
    memset(text, 'x', METAREC_MAX_STRING_LEN);
    text[METAREC_MAX_STRING_LEN] = '\0';
    CHECK_CODE(metarec_session_set_profile(session, "gender", text), METAREC_OK);
    CHECK_CODE(metarec_session_add_rating(session, text, 3.0f), METAREC_ERR_UNKNOWN_ITEM);
    text[METAREC_MAX_STRING_LEN] = 'x';
    text[METAREC_MAX_STRING_LEN + 1] = '\0';
    CHECK_CODE(metarec_session_set_profile(session, "gender", text), METAREC_ERR_STRING_TOO_LONG);
    CHECK_CODE(metarec_session_set_profile(session, text, "F"), METAREC_ERR_STRING_TOO_LONG);
    CHECK_CODE(metarec_session_add_rating(session, text, 3.0f), METAREC_ERR_STRING_TOO_LONG);
    const char *ids[2] = {id, text};
    float scores[2] = {0.0f, 0.0f};
    CHECK_CODE(metarec_session_score(session, ids, 2, scores), METAREC_ERR_STRING_TOO_LONG);
    /* No NUL within cap + 1 bytes: the library stops there (ASan/valgrind see any read past). */
    memset(unterminated, 'a', METAREC_MAX_STRING_LEN + 1);
    CHECK_CODE(metarec_session_add_rating(session, unterminated, 3.0f), METAREC_ERR_STRING_TOO_LONG);

    /* Candidates: refused from the count alone (the arrays hold 2 and are never touched). */
    CHECK_CODE(metarec_session_score(session, ids, (size_t)METAREC_MAX_CANDIDATES + 1, scores),
               METAREC_ERR_TOO_MANY_CANDIDATES);
    CHECK_CODE(metarec_session_score(session, NULL, SIZE_MAX, NULL), METAREC_ERR_TOO_MANY_CANDIDATES);

    /* Support ratings. */
    CHECK_CODE(metarec_session_clear_ratings(session), METAREC_OK);
    int added = 0;
    for (size_t i = 0; i < METAREC_MAX_SUPPORT_RATINGS; i++) {
        added += metarec_session_add_rating(session, id, 3.0f) == METAREC_OK;
    }
    CHECK(added == METAREC_MAX_SUPPORT_RATINGS);
    CHECK_CODE(metarec_session_add_rating(session, id, 3.0f), METAREC_ERR_TOO_MANY_RATINGS);
    metarec_session_free(session);

    /* Model size: a sparse file one byte past the cap is refused from its size. */
    char path[4096];
    snprintf(path, sizeof path, "%s/huge.mrec", scratch);
    FILE *file = fopen(path, "wb");
    CHECK(file != NULL);
    if (file != NULL) {
        CHECK(fseek(file, (long)METAREC_MAX_MODEL_BYTES, SEEK_SET) == 0);
        CHECK(fputc(0, file) == 0);
        CHECK(fclose(file) == 0);
        MetarecModel *huge = sentinel_model();
        CHECK_CODE(metarec_model_load(path, &huge), METAREC_ERR_MODEL_TOO_LARGE);
        CHECK(huge == NULL);
        remove(path);
    }
    /* From memory: the length alone refuses it (the buffer is never read). */
    MetarecModel *huge = sentinel_model();
    CHECK_CODE(metarec_model_load_from_memory((const uint8_t *)id, (size_t)METAREC_MAX_MODEL_BYTES + 1, &huge),
               METAREC_ERR_MODEL_TOO_LARGE);
    CHECK(huge == NULL);
    free(text);
    free(unterminated);
}

static void test_lifetimes(const char *model_path) {
    MetarecModel *model = NULL;
    CHECK_CODE(metarec_model_load(model_path, &model), METAREC_OK);
    if (model == NULL) {
        return;
    }
    MetarecSession *a = NULL;
    MetarecSession *b = NULL;
    CHECK_CODE(metarec_session_new(model, &a), METAREC_OK);
    CHECK_CODE(metarec_session_new(model, &b), METAREC_OK);
    size_t count = metarec_model_item_count(model);
    metarec_model_free(model); /* the sessions keep the model alive */
    float *scores = calloc(count, sizeof *scores);
    CHECK(scores != NULL);
    if (scores != NULL) {
        CHECK_CODE(metarec_session_score_all(a, scores, count), METAREC_OK);
        CHECK_CODE(metarec_session_score_all(b, scores, count), METAREC_OK);
    }
    free(scores);
    metarec_session_free(a);
    metarec_session_free(b);
    metarec_model_free(NULL);
    metarec_session_free(NULL);
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s MODEL.mrec SCRATCH_DIR\n", argc > 0 ? argv[0] : "api_test");
        return 2;
    }
    test_version_and_messages();
    test_version_check();
    test_loading(argv[1], argv[2]);

    MetarecModel *model = NULL;
    CHECK_CODE(metarec_model_load(argv[1], &model), METAREC_OK);
    if (model != NULL) {
        test_item_ids(model);
        test_model_info(model);
        test_unknown_values(model);
        test_call_order(model);
        test_session(model);
        test_explanation(model);
        test_contribution(model);
        test_limits(model, argv[2]);
        metarec_model_free(model);
    }
    test_lifetimes(argv[1]);
    test_borrowed(argv[2]);
    test_click_model(argv[2]);
    test_factor_model(argv[2]);

    printf("api_test: %d checks, %d failed\n", checks, failures);
    return failures == 0 ? 0 : 1;
}
