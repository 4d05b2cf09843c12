/*
 * personalize: cold-start personalization of a metarec model for one user, through the C API.
 *
 *   usage: personalize MODEL.mrec USER.tsv
 *
 * USER.tsv is the tab-separated user file the trainer exports (lines starting with '#' and
 * empty lines are ignored):
 *
 *   user     <user_id>
 *   profile  <field>    <value>     (any number; fields must be user fields of the model)
 *   support  <item_id>  <rating>    (ratings the session adapts on)
 *   query    <item_id>  <rating>    (held-out ratings, only used to measure the error)
 *
 * The whole file is checked before the library is called: a line of another kind or with
 * another number of tab-separated fields, or a rating that is not a finite number (nan, inf,
 * 1e999, empty, 4.5x), is reported with the file, line number and value, and nothing else runs.
 *
 * For a click model (metarec_model_task gives "click") the values are click labels, 0 or 1,
 * as the trainer exports them for a `--task click` run; an app holding ratings would pass
 * `rating >= metarec_model_click_threshold` instead.
 *
 * The program loads the model, opens a session, sets the profile, adds the support ratings,
 * prints the error on the query ratings (mean squared error of the predicted ratings, or the
 * log loss of the predicted click probabilities) with the meta-learned weights (before
 * adaptation) and after adapting with the model's default step count, then prints the ten
 * highest-scored items the user has not rated. Any failing call prints its status code and
 * message and the program exits with status 1 (2 for usage or user-file errors).
 *
 * Build (from the repository root, after `cargo build -p metarec-ffi`):
 *
 *   cc -std=c11 -Wall -Wextra -Werror -pedantic -Iinclude examples/c/personalize.c \
 *      -Ltarget/debug -lmetarec -lm -Wl,-rpath,"$PWD/target/debug" -o personalize
 *
 * or `make -C examples/c` (see examples/c/Makefile).
 */

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metarec.h"

#define TOP_K 10

/* One "key value" or "key item rating" line of the user file. */
typedef struct {
    char *key;   /* profile field or item id (owned) */
    char *value; /* profile value (owned), NULL for ratings */
    float rating;
} Entry;

typedef struct {
    Entry *items;
    size_t len;
    size_t cap;
} EntryList;

typedef struct {
    char *user;
    EntryList profile;
    EntryList support;
    EntryList query;
} UserFile;

/* Prints a failed call's code and message; returns 0 so callers can `return report(...)`. */
static int report(const char *call, int32_t code) {
    char message[256];
    metarec_error_message(code, message, sizeof message);
    fprintf(stderr, "personalize: %s failed: error %d: %s\n", call, (int)code, message);
    return 0;
}

static char *copy_string(const char *text) {
    size_t len = strlen(text) + 1;
    char *copy = malloc(len);
    if (copy != NULL) {
        memcpy(copy, text, len);
    }
    return copy;
}

static int push_entry(EntryList *list, const char *key, const char *value, float rating) {
    if (list->len == list->cap) {
        size_t cap = list->cap == 0 ? 16 : list->cap * 2;
        Entry *grown = realloc(list->items, cap * sizeof *grown);
        if (grown == NULL) {
            return 0;
        }
        list->items = grown;
        list->cap = cap;
    }
    Entry *entry = &list->items[list->len];
    entry->key = copy_string(key);
    entry->value = value != NULL ? copy_string(value) : NULL;
    entry->rating = rating;
    if (entry->key == NULL || (value != NULL && entry->value == NULL)) {
        free(entry->key);
        free(entry->value);
        return 0;
    }
    list->len++;
    return 1;
}

static void free_entries(EntryList *list) {
    for (size_t i = 0; i < list->len; i++) {
        free(list->items[i].key);
        free(list->items[i].value);
    }
    free(list->items);
    list->items = NULL;
    list->len = list->cap = 0;
}

static void free_user(UserFile *user) {
    free(user->user);
    user->user = NULL;
    free_entries(&user->profile);
    free_entries(&user->support);
    free_entries(&user->query);
}

/* Reads one line of any length (without the newline) into *line; returns 0 at end of file. */
static int read_line(FILE *file, char **line, size_t *cap) {
    size_t len = 0;
    int c;
    while ((c = fgetc(file)) != EOF && c != '\n') {
        if (len + 1 >= *cap) {
            size_t grown_cap = *cap == 0 ? 256 : *cap * 2;
            char *grown = realloc(*line, grown_cap);
            if (grown == NULL) {
                return -1;
            }
            *line = grown;
            *cap = grown_cap;
        }
        (*line)[len++] = (char)c;
    }
    if (c == EOF && len == 0) {
        return 0;
    }
    if (*line == NULL) {
        *line = malloc(1);
        if (*line == NULL) {
            return -1;
        }
        *cap = 1;
    }
    if (len > 0 && (*line)[len - 1] == '\r') {
        len--; /* tolerate CRLF files */
    }
    (*line)[len] = '\0';
    return 1;
}

/* Splits `line` at tabs into at most `max` fields; returns the field count. */
static size_t split_tabs(char *line, char **fields, size_t max) {
    size_t count = 0;
    char *start = line;
    for (;;) {
        char *tab = strchr(start, '\t');
        if (count < max) {
            fields[count] = start;
        }
        count++;
        if (tab == NULL) {
            break;
        }
        *tab = '\0';
        start = tab + 1;
    }
    return count;
}

/* Parses a rating: a finite number and nothing after it (1e999 overflows to infinity). */
static int parse_rating(const char *text, float *out) {
    char *end = NULL;
    float value = strtof(text, &end);
    if (end == text || *end != '\0' || !isfinite(value)) {
        return 0;
    }
    *out = value;
    return 1;
}

/* The number of tab-separated fields of a line of kind `kind`; 0 for an unknown kind. */
static size_t fields_of_kind(const char *kind) {
    if (strcmp(kind, "user") == 0) {
        return 2;
    }
    if (strcmp(kind, "profile") == 0 || strcmp(kind, "support") == 0 ||
        strcmp(kind, "query") == 0) {
        return 3;
    }
    return 0;
}

/* Parses the user file; on failure prints why and returns 0. */
static int read_user_file(const char *path, UserFile *user) {
    FILE *file = fopen(path, "r");
    if (file == NULL) {
        fprintf(stderr, "personalize: cannot open %s: %s\n", path, strerror(errno));
        return 0;
    }
    char *line = NULL;
    size_t cap = 0;
    size_t line_no = 0;
    int ok = 1;
    int status;
    while (ok && (status = read_line(file, &line, &cap)) != 0) {
        line_no++;
        if (status < 0) {
            fprintf(stderr, "personalize: out of memory reading %s\n", path);
            ok = 0;
            break;
        }
        if (line[0] == '\0' || line[0] == '#') {
            continue;
        }
        char *fields[4];
        size_t count = split_tabs(line, fields, 4);
        const char *kind = fields[0];
        size_t want = fields_of_kind(kind);
        float rating = 0.0f;
        if (want == 0) {
            fprintf(stderr,
                    "personalize: %s:%zu: unknown line kind '%s' (want user, profile, support or "
                    "query)\n",
                    path, line_no, kind);
            ok = 0;
            break;
        }
        if (count != want) {
            fprintf(stderr,
                    "personalize: %s:%zu: a %s line has %zu tab-separated fields, want %zu\n",
                    path, line_no, kind, count, want);
            ok = 0;
            break;
        }
        if (want == 2) {
            free(user->user);
            user->user = copy_string(fields[1]);
            ok = user->user != NULL;
        } else if (kind[0] == 'p') {
            ok = push_entry(&user->profile, fields[1], fields[2], 0.0f);
        } else if (!parse_rating(fields[2], &rating)) {
            fprintf(stderr, "personalize: %s:%zu: %s rating '%s' is not a finite number\n", path,
                    line_no, kind, fields[2]);
            ok = 0;
            break;
        } else {
            EntryList *list = kind[0] == 's' ? &user->support : &user->query;
            ok = push_entry(list, fields[1], NULL, rating);
        }
        if (!ok) {
            fprintf(stderr, "personalize: out of memory reading %s\n", path);
        }
    }
    if (ok && ferror(file)) {
        fprintf(stderr, "personalize: error reading %s\n", path);
        ok = 0;
    }
    free(line);
    fclose(file);
    return ok;
}

/* Error of the session's scores on the query entries: mean squared error of ratings, or for a
 * click model the mean log loss of the click probabilities (clamped away from 0 and 1);
 * returns 0 on failure. */
static int query_error(MetarecSession *session, const EntryList *query, int click, double *out_error) {
    const char **ids = malloc(query->len * sizeof *ids);
    float *scores = malloc(query->len * sizeof *scores);
    int ok = ids != NULL && scores != NULL;
    if (!ok) {
        fprintf(stderr, "personalize: out of memory\n");
    } else {
        for (size_t i = 0; i < query->len; i++) {
            ids[i] = query->items[i].key;
        }
        int32_t code = metarec_session_score(session, ids, query->len, scores);
        if (code != METAREC_OK) {
            ok = report("metarec_session_score", code);
        } else {
            double sum = 0.0;
            for (size_t i = 0; i < query->len; i++) {
                double score = (double)scores[i];
                double label = (double)query->items[i].rating;
                if (click) {
                    double p = score < 1e-7 ? 1e-7 : score > 1.0 - 1e-7 ? 1.0 - 1e-7 : score;
                    sum -= label * log(p) + (1.0 - label) * log(1.0 - p);
                } else {
                    sum += (score - label) * (score - label);
                }
            }
            *out_error = sum / (double)query->len;
        }
    }
    free(ids);
    free(scores);
    return ok;
}

/* Whether the model predicts clicks ("click") rather than ratings; -1 on failure. */
static int is_click_model(const MetarecModel *model) {
    char task[16];
    int32_t code = metarec_model_task(model, task, sizeof task, NULL);
    if (code != METAREC_OK) {
        report("metarec_model_task", code);
        return -1;
    }
    return strcmp(task, "click") == 0;
}

/* Prints the TOP_K best unrated items; returns 0 on failure. */
static int print_top(const MetarecModel *model, MetarecSession *session) {
    size_t indices[TOP_K];
    float scores[TOP_K];
    size_t count = 0;
    int32_t code = metarec_session_top_k(session, TOP_K, 1, indices, scores, &count);
    if (code != METAREC_OK) {
        return report("metarec_session_top_k", code);
    }
    printf("top %zu recommendations (unrated items):\n", count);
    for (size_t i = 0; i < count; i++) {
        size_t needed = 0;
        code = metarec_model_item_id(model, indices[i], NULL, 0, &needed);
        if (code != METAREC_OK && code != METAREC_ERR_BUFFER_TOO_SMALL) {
            return report("metarec_model_item_id", code);
        }
        char *id = malloc(needed);
        if (id == NULL) {
            fprintf(stderr, "personalize: out of memory\n");
            return 0;
        }
        code = metarec_model_item_id(model, indices[i], id, needed, NULL);
        if (code != METAREC_OK) {
            free(id);
            return report("metarec_model_item_id", code);
        }
        printf("%3zu. %s\t%.4f\n", i + 1, id, (double)scores[i]);
        free(id);
    }
    return 1;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s MODEL.mrec USER.tsv\n", argc > 0 ? argv[0] : "personalize");
        return 2;
    }
    /* The user file is checked whole before the library is called. */
    UserFile user = {0};
    if (!read_user_file(argv[2], &user)) {
        free_user(&user);
        return 2;
    }
    /* The shared library loaded at run time must serve the header compiled in. */
    int32_t version = METAREC_CHECK_VERSION();
    if (version != METAREC_OK) {
        report("METAREC_CHECK_VERSION", version);
        fprintf(stderr, "personalize: header %s, library %s\n", METAREC_VERSION_STRING,
                metarec_version());
        free_user(&user);
        return 1;
    }

    int ok = 0;
    MetarecModel *model = NULL;
    MetarecSession *session = NULL;
    int32_t code = metarec_model_load(argv[1], &model);
    if (code != METAREC_OK) {
        report("metarec_model_load", code);
        goto done;
    }
    printf("metarec %s: %s, %zu items\n", metarec_version(), argv[1],
           metarec_model_item_count(model));
    printf("user %s: %zu profile fields, %zu support ratings, %zu query ratings\n",
           user.user != NULL ? user.user : "(unnamed)", user.profile.len, user.support.len,
           user.query.len);

    int click = is_click_model(model);
    if (click < 0) {
        goto done;
    }
    const char *metric = click ? "log loss" : "MSE";

    code = metarec_session_new(model, &session);
    if (code != METAREC_OK) {
        report("metarec_session_new", code);
        goto done;
    }
    for (size_t i = 0; i < user.profile.len; i++) {
        const Entry *entry = &user.profile.items[i];
        code = metarec_session_set_profile(session, entry->key, entry->value);
        if (code != METAREC_OK) {
            fprintf(stderr, "personalize: profile field '%s'\n", entry->key);
            report("metarec_session_set_profile", code);
            goto done;
        }
    }
    for (size_t i = 0; i < user.support.len; i++) {
        const Entry *entry = &user.support.items[i];
        code = metarec_session_add_rating(session, entry->key, entry->rating);
        if (code != METAREC_OK) {
            fprintf(stderr, "personalize: support rating of item '%s'\n", entry->key);
            report("metarec_session_add_rating", code);
            goto done;
        }
    }

    double before = 0.0;
    if (user.query.len > 0 && !query_error(session, &user.query, click, &before)) {
        goto done;
    }
    code = metarec_session_adapt(session, 0);
    if (code != METAREC_OK) {
        report("metarec_session_adapt", code);
        goto done;
    }
    double after = 0.0;
    if (user.query.len > 0) {
        if (!query_error(session, &user.query, click, &after)) {
            goto done;
        }
        printf("query %s before adaptation: %.6f\n", metric, before);
        printf("query %s after adaptation:  %.6f\n", metric, after);
    } else {
        printf("no query ratings: skipping the query %s\n", metric);
    }
    if (!print_top(model, session)) {
        goto done;
    }
    ok = 1;

done:
    metarec_session_free(session);
    metarec_model_free(model);
    free_user(&user);
    return ok ? 0 : 1;
}
