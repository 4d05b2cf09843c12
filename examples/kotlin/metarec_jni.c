/*
 * metarec_jni: the JNI layer for Kotlin/Java (Android or the JVM), a thin C shim over the public
 * C API of include/metarec.h. It is built into its own shared library (libmetarec_jni.so) that
 * links libmetarec.so; Metarec.kt declares the native methods and wraps them in Model and
 * Session classes.
 *
 *   cc -std=c11 -Wall -Wextra -Werror -shared -fPIC -I include \
 *      -I "$JAVA_HOME/include" -I "$JAVA_HOME/include/linux" examples/kotlin/metarec_jni.c \
 *      -L target/release -lmetarec -Wl,-rpath,'$ORIGIN' -o libmetarec_jni.so
 *
 * Conventions:
 * - handles cross as jlong (a MetarecModel* or MetarecSession*; 0 is NULL);
 * - strings cross as NUL-terminated UTF-8 byte arrays, converted by Metarec.kt: JNI's own string
 *   functions use "modified UTF-8", which differs from UTF-8 for NUL and for characters outside
 *   the Basic Multilingual Plane;
 * - a failing status becomes a thrown metarec.MetarecException(code, message); the native
 *   method then returns a neutral value that the JVM ignores.
 * Thread safety is the C API's: a model may be shared by any number of threads, a session must
 * be used by one thread at a time (Metarec.kt's Session synchronizes on itself).
 */

#include <jni.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "metarec.h"

#define EXCEPTION_CLASS "metarec/MetarecException"

/* Throws MetarecException(code, message) unless `code` is METAREC_OK; returns whether it threw. */
static int throw_if_error(JNIEnv *env, int32_t code) {
    if (code == METAREC_OK) {
        return 0;
    }
    char message[256];
    metarec_error_message(code, message, sizeof message);
    jclass cls = (*env)->FindClass(env, EXCEPTION_CLASS);
    if (cls == NULL) {
        return 1; /* NoClassDefFoundError is pending */
    }
    jmethodID init = (*env)->GetMethodID(env, cls, "<init>", "(ILjava/lang/String;)V");
    jstring text = init != NULL ? (*env)->NewStringUTF(env, message) : NULL;
    if (text != NULL) {
        jobject error = (*env)->NewObject(env, cls, init, (jint)code, text);
        if (error != NULL) {
            (*env)->Throw(env, (jthrowable)error);
        }
    }
    return 1;
}

/* A copy of a Java byte array, NUL-terminated (Metarec.kt passes NUL-terminated UTF-8); NULL
 * (with an exception pending) on failure. Free with free(). */
static char *c_string(JNIEnv *env, jbyteArray bytes) {
    if (bytes == NULL) {
        throw_if_error(env, METAREC_ERR_NULL_POINTER);
        return NULL;
    }
    jsize len = (*env)->GetArrayLength(env, bytes);
    char *copy = malloc((size_t)len + 1);
    if (copy == NULL) {
        jclass oom = (*env)->FindClass(env, "java/lang/OutOfMemoryError");
        if (oom != NULL) {
            (*env)->ThrowNew(env, oom, "metarec_jni: out of memory");
        }
        return NULL;
    }
    (*env)->GetByteArrayRegion(env, bytes, 0, len, (jbyte *)copy);
    copy[len] = '\0';
    return copy;
}

/* A Java byte array holding the text a string getter writes (without its NUL). */
typedef int32_t (*Getter)(const void *self, size_t index, char *buf, size_t buf_len,
                          size_t *out_len);

static jbyteArray text_result(JNIEnv *env, Getter get, const void *self, size_t index) {
    size_t needed = 0;
    int32_t code = get(self, index, NULL, 0, &needed);
    if (code != METAREC_ERR_BUFFER_TOO_SMALL) {
        throw_if_error(env, code == METAREC_OK ? METAREC_ERR_PANIC : code);
        return NULL;
    }
    char *buf = malloc(needed);
    if (buf == NULL) {
        throw_if_error(env, METAREC_ERR_BUFFER_TOO_SMALL);
        return NULL;
    }
    jbyteArray result = NULL;
    if (!throw_if_error(env, get(self, index, buf, needed, NULL))) {
        result = (*env)->NewByteArray(env, (jsize)(needed - 1));
        if (result != NULL) {
            (*env)->SetByteArrayRegion(env, result, 0, (jsize)(needed - 1), (const jbyte *)buf);
        }
    }
    free(buf);
    return result;
}

/* Adapters from the C getters to Getter. */
static int32_t get_item_id(const void *model, size_t index, char *buf, size_t len, size_t *out) {
    return metarec_model_item_id(model, index, buf, len, out);
}
static int32_t get_method(const void *model, size_t index, char *buf, size_t len, size_t *out) {
    (void)index;
    return metarec_model_method(model, buf, len, out);
}
static int32_t get_user_field(const void *model, size_t index, char *buf, size_t len,
                              size_t *out) {
    return metarec_model_field_name(model, METAREC_FIELDS_USER, index, buf, len, out);
}
static int32_t get_item_field(const void *model, size_t index, char *buf, size_t len,
                              size_t *out) {
    return metarec_model_field_name(model, METAREC_FIELDS_ITEM, index, buf, len, out);
}

static MetarecModel *model_of(jlong handle) {
    return (MetarecModel *)(intptr_t)handle;
}

static MetarecSession *session_of(jlong handle) {
    return (MetarecSession *)(intptr_t)handle;
}

/* ---- library ---------------------------------------------------------------------------- */

JNIEXPORT jstring JNICALL Java_metarec_Native_version(JNIEnv *env, jclass cls) {
    (void)cls;
    return (*env)->NewStringUTF(env, metarec_version());
}

/* Checks the loaded libmetarec.so against the header this shim was compiled with. */
JNIEXPORT void JNICALL Java_metarec_Native_checkVersion(JNIEnv *env, jclass cls) {
    (void)cls;
    throw_if_error(env, METAREC_CHECK_VERSION());
}

/* ---- model ------------------------------------------------------------------------------ */

JNIEXPORT jlong JNICALL Java_metarec_Native_modelLoad(JNIEnv *env, jclass cls, jbyteArray path) {
    (void)cls;
    char *c_path = c_string(env, path);
    if (c_path == NULL) {
        return 0;
    }
    MetarecModel *model = NULL;
    int32_t code = metarec_model_load(c_path, &model);
    free(c_path);
    throw_if_error(env, code);
    return (jlong)(intptr_t)model;
}

JNIEXPORT jlong JNICALL Java_metarec_Native_modelLoadFromMemory(JNIEnv *env, jclass cls,
                                                                 jbyteArray bytes) {
    (void)cls;
    if (bytes == NULL) {
        throw_if_error(env, METAREC_ERR_NULL_POINTER);
        return 0;
    }
    jsize len = (*env)->GetArrayLength(env, bytes);
    jbyte *data = (*env)->GetByteArrayElements(env, bytes, NULL);
    if (data == NULL) {
        return 0; /* OutOfMemoryError is pending */
    }
    MetarecModel *model = NULL;
    int32_t code = metarec_model_load_from_memory((const uint8_t *)data, (size_t)len, &model);
    (*env)->ReleaseByteArrayElements(env, bytes, data, JNI_ABORT); /* read only: no copy back */
    throw_if_error(env, code);
    return (jlong)(intptr_t)model;
}

JNIEXPORT void JNICALL Java_metarec_Native_modelFree(JNIEnv *env, jclass cls, jlong model) {
    (void)env;
    (void)cls;
    metarec_model_free(model_of(model));
}

JNIEXPORT jint JNICALL Java_metarec_Native_itemCount(JNIEnv *env, jclass cls, jlong model) {
    (void)env;
    (void)cls;
    size_t count = metarec_model_item_count(model_of(model));
    return count > INT32_MAX ? INT32_MAX : (jint)count;
}

JNIEXPORT jbyteArray JNICALL Java_metarec_Native_itemId(JNIEnv *env, jclass cls, jlong model,
                                                        jint index) {
    (void)cls;
    if (index < 0) {
        throw_if_error(env, METAREC_ERR_INVALID_ARGUMENT);
        return NULL;
    }
    return text_result(env, get_item_id, model_of(model), (size_t)index);
}

JNIEXPORT jbyteArray JNICALL Java_metarec_Native_method(JNIEnv *env, jclass cls, jlong model) {
    (void)cls;
    return text_result(env, get_method, model_of(model), 0);
}

/* side: METAREC_FIELDS_USER (0) or METAREC_FIELDS_ITEM (1). */
JNIEXPORT jint JNICALL Java_metarec_Native_fieldCount(JNIEnv *env, jclass cls, jlong model,
                                                      jint side) {
    (void)env;
    (void)cls;
    return (jint)metarec_model_field_count(model_of(model), side);
}

JNIEXPORT jbyteArray JNICALL Java_metarec_Native_fieldName(JNIEnv *env, jclass cls, jlong model,
                                                           jint side, jint index) {
    (void)cls;
    if (index < 0 || (side != METAREC_FIELDS_USER && side != METAREC_FIELDS_ITEM)) {
        throw_if_error(env, METAREC_ERR_INVALID_ARGUMENT);
        return NULL;
    }
    Getter get = side == METAREC_FIELDS_USER ? get_user_field : get_item_field;
    return text_result(env, get, model_of(model), (size_t)index);
}

/* ---- session ---------------------------------------------------------------------------- */

JNIEXPORT jlong JNICALL Java_metarec_Native_sessionNew(JNIEnv *env, jclass cls, jlong model) {
    (void)cls;
    MetarecSession *session = NULL;
    throw_if_error(env, metarec_session_new(model_of(model), &session));
    return (jlong)(intptr_t)session;
}

JNIEXPORT void JNICALL Java_metarec_Native_sessionFree(JNIEnv *env, jclass cls, jlong session) {
    (void)env;
    (void)cls;
    metarec_session_free(session_of(session));
}

JNIEXPORT void JNICALL Java_metarec_Native_setProfile(JNIEnv *env, jclass cls, jlong session,
                                                      jbyteArray field, jbyteArray value) {
    (void)cls;
    char *c_field = c_string(env, field);
    char *c_value = c_field != NULL ? c_string(env, value) : NULL;
    if (c_value != NULL) {
        throw_if_error(env, metarec_session_set_profile(session_of(session), c_field, c_value));
    }
    free(c_field);
    free(c_value);
}

JNIEXPORT void JNICALL Java_metarec_Native_addRating(JNIEnv *env, jclass cls, jlong session,
                                                     jbyteArray item, jfloat rating) {
    (void)cls;
    char *c_item = c_string(env, item);
    if (c_item != NULL) {
        throw_if_error(env, metarec_session_add_rating(session_of(session), c_item, rating));
        free(c_item);
    }
}

JNIEXPORT void JNICALL Java_metarec_Native_clearRatings(JNIEnv *env, jclass cls, jlong session) {
    (void)cls;
    throw_if_error(env, metarec_session_clear_ratings(session_of(session)));
}

JNIEXPORT void JNICALL Java_metarec_Native_adapt(JNIEnv *env, jclass cls, jlong session,
                                                 jint steps) {
    (void)cls;
    if (steps < 0) {
        throw_if_error(env, METAREC_ERR_INVALID_ARGUMENT);
        return;
    }
    throw_if_error(env, metarec_session_adapt(session_of(session), (uint32_t)steps));
}

/* Scores of items given by id (an array of NUL-terminated UTF-8 byte arrays). */
JNIEXPORT jfloatArray JNICALL Java_metarec_Native_score(JNIEnv *env, jclass cls, jlong session,
                                                        jobjectArray ids) {
    (void)cls;
    if (ids == NULL) {
        throw_if_error(env, METAREC_ERR_NULL_POINTER);
        return NULL;
    }
    jsize count = (*env)->GetArrayLength(env, ids);
    char **c_ids = calloc((size_t)count + 1, sizeof *c_ids);
    float *scores = calloc((size_t)count + 1, sizeof *scores);
    jfloatArray result = NULL;
    int ok = c_ids != NULL && scores != NULL;
    if (!ok) {
        throw_if_error(env, METAREC_ERR_BUFFER_TOO_SMALL);
    }
    for (jsize i = 0; ok && i < count; i++) {
        jbyteArray id = (jbyteArray)(*env)->GetObjectArrayElement(env, ids, i);
        c_ids[i] = c_string(env, id);
        (*env)->DeleteLocalRef(env, id);
        ok = c_ids[i] != NULL;
    }
    if (ok && !throw_if_error(env, metarec_session_score(session_of(session),
                                                         (const char *const *)c_ids,
                                                         (size_t)count, scores))) {
        result = (*env)->NewFloatArray(env, count);
        if (result != NULL) {
            (*env)->SetFloatArrayRegion(env, result, 0, count, scores);
        }
    }
    for (jsize i = 0; c_ids != NULL && i < count; i++) {
        free(c_ids[i]);
    }
    free(c_ids);
    free(scores);
    return result;
}

/* The k best items: returns their indices, best first, and writes their scores into
 * `out_scores` (which must hold at least as many elements as the returned array). */
JNIEXPORT jintArray JNICALL Java_metarec_Native_topK(JNIEnv *env, jclass cls, jlong session,
                                                     jint k, jboolean exclude_rated,
                                                     jfloatArray out_scores) {
    (void)cls;
    if (k < 0 || out_scores == NULL) {
        throw_if_error(env, k < 0 ? METAREC_ERR_INVALID_ARGUMENT : METAREC_ERR_NULL_POINTER);
        return NULL;
    }
    size_t room = (size_t)k;
    size_t *indices = calloc(room + 1, sizeof *indices);
    float *scores = calloc(room + 1, sizeof *scores);
    jintArray result = NULL;
    size_t len = 0;
    if (indices == NULL || scores == NULL) {
        throw_if_error(env, METAREC_ERR_BUFFER_TOO_SMALL);
    } else if (!throw_if_error(env, metarec_session_top_k(session_of(session), room,
                                                          exclude_rated ? 1 : 0, indices, scores,
                                                          &len))) {
        if ((*env)->GetArrayLength(env, out_scores) < (jsize)len) {
            throw_if_error(env, METAREC_ERR_BUFFER_TOO_SMALL);
        } else {
            jint *as_int = calloc(len + 1, sizeof *as_int);
            result = as_int != NULL ? (*env)->NewIntArray(env, (jsize)len) : NULL;
            if (result != NULL) {
                for (size_t i = 0; i < len; i++) {
                    as_int[i] = (jint)indices[i];
                }
                (*env)->SetIntArrayRegion(env, result, 0, (jsize)len, as_int);
                (*env)->SetFloatArrayRegion(env, out_scores, 0, (jsize)len, scores);
            }
            free(as_int);
        }
    }
    free(indices);
    free(scores);
    return result;
}

/* ---- federated learning ----------------------------------------------------------------- */

/* This user's clipped federated contribution (metarec_session_contribute): asks its size, then
 * writes it into a buffer of that size and returns it as a Java byte array. */
JNIEXPORT jbyteArray JNICALL Java_metarec_Native_contribute(JNIEnv *env, jclass cls,
                                                            jlong session, jfloat clip_norm) {
    (void)cls;
    size_t needed = 0;
    int32_t code = metarec_session_contribute(session_of(session), clip_norm, NULL, 0, &needed);
    if (code != METAREC_ERR_BUFFER_TOO_SMALL) {
        /* The size query computes nothing, so it never succeeds: any other status is an error. */
        throw_if_error(env, code == METAREC_OK ? METAREC_ERR_PANIC : code);
        return NULL;
    }
    if (needed > INT32_MAX) {
        throw_if_error(env, METAREC_ERR_BUFFER_TOO_SMALL);
        return NULL;
    }
    uint8_t *buf = malloc(needed);
    if (buf == NULL) {
        throw_if_error(env, METAREC_ERR_BUFFER_TOO_SMALL);
        return NULL;
    }
    size_t len = 0;
    jbyteArray result = NULL;
    if (!throw_if_error(env, metarec_session_contribute(session_of(session), clip_norm, buf,
                                                        needed, &len))) {
        result = (*env)->NewByteArray(env, (jsize)len);
        if (result != NULL) {
            (*env)->SetByteArrayRegion(env, result, 0, (jsize)len, (const jbyte *)buf);
        }
    }
    free(buf);
    return result;
}
