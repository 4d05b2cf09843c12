/*
 * thread_test: the thread-safety contract of include/metarec.h, exercised. Many threads share
 * one model handle, each with its own sessions, and every result (all scores and the top 10 of
 * every user) must be bit-for-bit what a single-threaded run gives. Run by tests/tests/it under
 * AddressSanitizer/UBSan, ThreadSanitizer and valgrind's helgrind.
 *
 *   usage: thread_test MODEL.mrec [THREADS [ROUNDS [PHASES]]]
 *
 * Phase 1: the threads share the model handle, read it concurrently (item ids, field names)
 * and personalize users in their own sessions. Phase 2: every thread opens its session, then
 * the main thread frees the model handle while the sessions are in use; the last session freed
 * (by whichever thread) releases the model. PHASES 1 runs phase 1 only: ThreadSanitizer cannot
 * see the atomics of the reference count inside the (uninstrumented) Rust library, so it would
 * report the model's release in phase 2 as a race with reads in other threads; helgrind, which
 * sees every instruction, checks phase 2.
 * Prints a summary line; exits 0 only when every call succeeded and every result matched.
 */

#define _POSIX_C_SOURCE 200809L

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metarec.h"

#define USERS 48
#define TOP 10

typedef struct {
    float *scores;     /* item_count scores after adaptation */
    size_t top[TOP];   /* top-10 unrated item indices */
    float top_scores[TOP];
    size_t top_len;
} Result;

typedef struct {
    MetarecModel *model;
    char *const *item_ids; /* item_count ids, read-only, shared */
    size_t item_count;
    const Result *reference; /* USERS results of the single-threaded run */
    pthread_barrier_t *barrier;
    int phase; /* 1: shared handle, 2: handle freed by main while sessions work */
    size_t index;
    size_t threads;
    size_t rounds;
    /* Outputs. */
    size_t users_done;
    size_t mismatches;
    size_t failed_calls;
} Worker;

/* A user's profile and ratings, derived from the user number only. */
static int personalize(MetarecSession *session, char *const *item_ids, size_t item_count,
                       size_t user, Result *out) {
    static const char *const genders[] = {"F", "M", "unknown-gender"};
    char age[16];
    snprintf(age, sizeof age, "%zu", 15 + (user * 7) % 50);
    if (metarec_session_clear_ratings(session) != METAREC_OK ||
        metarec_session_set_profile(session, "gender", genders[user % 3]) != METAREC_OK ||
        metarec_session_set_profile(session, "age", age) != METAREC_OK) {
        return 0;
    }
    size_t ratings = 3 + user % 6;
    for (size_t j = 0; j < ratings; j++) {
        const char *id = item_ids[(user * 5 + j * 11) % item_count];
        if (metarec_session_add_rating(session, id, (float)(1 + (user + j) % 5)) != METAREC_OK) {
            return 0;
        }
    }
    return metarec_session_adapt(session, (uint32_t)(user % 4)) == METAREC_OK &&
           metarec_session_score_all(session, out->scores, item_count) == METAREC_OK &&
           metarec_session_top_k(session, TOP, 1, out->top, out->top_scores, &out->top_len) ==
               METAREC_OK;
}

static int same(const Result *a, const Result *b, size_t item_count) {
    return a->top_len == b->top_len &&
           memcmp(a->scores, b->scores, item_count * sizeof *a->scores) == 0 &&
           memcmp(a->top, b->top, a->top_len * sizeof *a->top) == 0 &&
           memcmp(a->top_scores, b->top_scores, a->top_len * sizeof *a->top_scores) == 0;
}

/* Concurrent reads of the shared handle; returns the number of failed calls. */
static size_t read_model(const MetarecModel *model, size_t item_count, size_t seed) {
    size_t failed = 0;
    char buf[128];
    failed += metarec_model_item_id(model, seed % item_count, buf, sizeof buf, NULL) != METAREC_OK;
    failed += metarec_model_field_name(model, METAREC_FIELDS_USER, seed % 2, buf, sizeof buf,
                                       NULL) != METAREC_OK;
    failed += metarec_model_method(model, buf, sizeof buf, NULL) != METAREC_OK;
    failed += metarec_model_item_count(model) != item_count;
    return failed;
}

static void *work(void *arg) {
    Worker *w = arg;
    Result mine;
    mine.scores = calloc(w->item_count, sizeof *mine.scores);
    MetarecSession *session = NULL;
    if (w->phase == 2 && metarec_session_new(w->model, &session) != METAREC_OK) {
        w->failed_calls++;
    }
    /* Phase 2: after this barrier main frees the handle; only the session is used. */
    pthread_barrier_wait(w->barrier);
    if (mine.scores == NULL) {
        w->failed_calls++;
        metarec_session_free(session);
        return NULL;
    }
    for (size_t round = 0; round < w->rounds; round++) {
        for (size_t user = w->index; user < USERS; user += w->threads) {
            if (w->phase == 1) {
                /* Concurrent reads of the shared handle, and a fresh session per user on it. */
                w->failed_calls += read_model(w->model, w->item_count, user + round);
                if (metarec_session_new(w->model, &session) != METAREC_OK) {
                    w->failed_calls++;
                    continue;
                }
            }
            if (!personalize(session, w->item_ids, w->item_count, user, &mine)) {
                w->failed_calls++;
            } else {
                w->mismatches += !same(&mine, &w->reference[user], w->item_count);
                w->users_done++;
            }
            if (w->phase == 1) {
                metarec_session_free(session);
                session = NULL;
            }
        }
    }
    metarec_session_free(session); /* phase 2: possibly the model's last reference */
    free(mine.scores);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 2 || argc > 5) {
        fprintf(stderr, "usage: %s MODEL.mrec [THREADS [ROUNDS [PHASES]]]\n",
                argc > 0 ? argv[0] : "thread_test");
        return 2;
    }
    size_t threads = argc > 2 ? (size_t)strtoul(argv[2], NULL, 10) : 8;
    size_t rounds = argc > 3 ? (size_t)strtoul(argv[3], NULL, 10) : 2;
    int phases = argc > 4 ? atoi(argv[4]) : 2;
    if (threads == 0 || threads > 256 || rounds == 0 || phases < 1 || phases > 2) {
        fprintf(stderr, "thread_test: THREADS must be 1..256, ROUNDS > 0, PHASES 1 or 2\n");
        return 2;
    }
    if (METAREC_CHECK_VERSION() != METAREC_OK) {
        fprintf(stderr, "thread_test: library %s does not match header %s\n", metarec_version(),
                METAREC_VERSION_STRING);
        return 1;
    }
    MetarecModel *model = NULL;
    int32_t code = metarec_model_load(argv[1], &model);
    if (code != METAREC_OK) {
        char message[256];
        metarec_error_message(code, message, sizeof message);
        fprintf(stderr, "thread_test: metarec_model_load: error %d: %s\n", (int)code, message);
        return 1;
    }
    size_t item_count = metarec_model_item_count(model);
    size_t failed = 0;

    /* Item ids, shared read-only by the workers. */
    char **item_ids = calloc(item_count, sizeof *item_ids);
    for (size_t i = 0; item_ids != NULL && i < item_count; i++) {
        size_t needed = 0;
        metarec_model_item_id(model, i, NULL, 0, &needed);
        item_ids[i] = malloc(needed > 0 ? needed : 1);
        if (item_ids[i] == NULL ||
            metarec_model_item_id(model, i, item_ids[i], needed, NULL) != METAREC_OK) {
            failed++;
        }
    }
    if (item_ids == NULL || item_count == 0) {
        failed++;
    }

    /* The single-threaded reference. */
    Result reference[USERS];
    MetarecSession *session = NULL;
    if (metarec_session_new(model, &session) != METAREC_OK) {
        fprintf(stderr, "thread_test: metarec_session_new failed\n");
        metarec_model_free(model);
        return 1;
    }
    for (size_t user = 0; user < USERS; user++) {
        reference[user].scores = calloc(item_count, sizeof *reference[user].scores);
        if (failed > 0 || reference[user].scores == NULL ||
            !personalize(session, item_ids, item_count, user, &reference[user])) {
            fprintf(stderr, "thread_test: reference run failed for user %zu\n", user);
            failed++;
        }
    }
    metarec_session_free(session);

    Worker *workers = calloc(threads, sizeof *workers);
    pthread_t *ids = calloc(threads, sizeof *ids);
    size_t mismatches = 0;
    size_t users_done = 0;
    size_t phase_failures = 0;
    if (workers == NULL || ids == NULL || failed > 0) {
        failed++;
    } else {
        for (int phase = 1; phase <= phases; phase++) {
            pthread_barrier_t barrier;
            pthread_barrier_init(&barrier, NULL, (unsigned)(phase == 1 ? threads : threads + 1));
            MetarecModel *shared = model;
            if (phase == 2) {
                /* A second handle, loaded for this phase and freed mid-way by main. */
                shared = NULL;
                if (metarec_model_load(argv[1], &shared) != METAREC_OK) {
                    failed++;
                    pthread_barrier_destroy(&barrier);
                    break;
                }
            }
            size_t started = 0;
            for (size_t t = 0; t < threads; t++) {
                workers[t] = (Worker){
                    .model = shared, .item_ids = item_ids, .item_count = item_count,
                    .reference = reference,
                    .barrier = &barrier, .phase = phase, .index = t, .threads = threads,
                    .rounds = rounds,
                };
                if (pthread_create(&ids[t], NULL, work, &workers[t]) != 0) {
                    fprintf(stderr, "thread_test: pthread_create failed\n");
                    break;
                }
                started++;
            }
            if (started < threads) {
                /* Cannot reach the barrier count: give up (the started threads stay blocked
                 * and the process exits). */
                fprintf(stderr, "thread_test: only %zu of %zu threads started\n", started, threads);
                return 1;
            }
            if (phase == 2) {
                pthread_barrier_wait(&barrier); /* every session is open */
                metarec_model_free(shared);     /* the sessions keep the model alive */
            }
            for (size_t t = 0; t < threads; t++) {
                pthread_join(ids[t], NULL);
                mismatches += workers[t].mismatches;
                users_done += workers[t].users_done;
                phase_failures += workers[t].failed_calls;
            }
            pthread_barrier_destroy(&barrier);
        }
    }

    printf("thread_test: %zu threads, %zu users x %zu rounds x %d phases, %zu results, "
           "%zu mismatches, %zu failed calls\n",
           threads, (size_t)USERS, rounds, phases, users_done, mismatches, phase_failures + failed);
    for (size_t user = 0; user < USERS; user++) {
        free(reference[user].scores);
    }
    for (size_t i = 0; item_ids != NULL && i < item_count; i++) {
        free(item_ids[i]);
    }
    free(item_ids);
    free(workers);
    free(ids);
    metarec_model_free(model);
    int expected = users_done == (size_t)phases * USERS * rounds;
    return failed == 0 && phase_failures == 0 && mismatches == 0 && expected ? 0 : 1;
}
