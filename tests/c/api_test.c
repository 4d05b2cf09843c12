/*
 * api_test: exercises every function of include/metarec.h from C, misuse included, and checks
 * each documented status code. Run by tests/tests/it (under ASan/UBSan, and under valgrind
 * when it is installed).
 *
 *   usage: api_test MODEL.mrec SCRATCH_DIR
 *
 * MODEL.mrec is the fixture model of metarec-tests (user field "gender", ratings 1..5);
 * SCRATCH_DIR is a writable directory for the damaged copies of the model.
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
        METAREC_ERR_BAD_MAGIC, METAREC_ERR_UNSUPPORTED_VERSION, METAREC_ERR_TRUNCATED,
        METAREC_ERR_CHECKSUM_MISMATCH, METAREC_ERR_TRAILING_BYTES, METAREC_ERR_MALFORMED_BODY,
        METAREC_ERR_INCONSISTENT_DIMENSIONS, METAREC_ERR_NON_FINITE_PARAMETER,
        METAREC_ERR_UNKNOWN_ITEM, METAREC_ERR_UNKNOWN_FIELD, METAREC_ERR_INVALID_RATING,
        METAREC_ERR_TOO_MANY_RATINGS, METAREC_ERR_LENGTH_MISMATCH,
    };
    for (size_t i = 0; i < sizeof codes / sizeof codes[0]; i++) {
        metarec_error_message(codes[i], buf, sizeof buf);
        CHECK(strcmp(buf, "unknown error code") != 0 && strlen(buf) > 0);
    }
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
    free(all);

    metarec_session_free(session);
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
    test_loading(argv[1], argv[2]);

    MetarecModel *model = NULL;
    CHECK_CODE(metarec_model_load(argv[1], &model), METAREC_OK);
    if (model != NULL) {
        test_item_ids(model);
        test_session(model);
        metarec_model_free(model);
    }
    test_lifetimes(argv[1]);

    printf("api_test: %d checks, %d failed\n", checks, failures);
    return failures == 0 ? 0 : 1;
}
