// Kotlin bindings of metarec: a thin layer over the C API (include/metarec.h) through the JNI
// shim metarec_jni.c. Load the shim once (System.load or System.loadLibrary("metarec_jni")),
// then:
//
//     Model.load(path).use { model ->
//         model.newSession().use { session ->
//             session.setProfile("age", "28")
//             session.addRating("m001", 5f)
//             session.adapt()
//             val top = session.topK(10)
//             val blob = session.contribute(clipNorm = 1f)  // federated learning: send it
//         }
//     }
//
// Thread safety follows the C API: a Model may be shared by any number of threads; a Session
// is for one user and its methods synchronize on the session, so sharing one is safe but
// serial. Every failing call throws MetarecException with the C status code.
package metarec

import java.io.Closeable
import java.nio.charset.StandardCharsets.UTF_8

/** A failed call: `code` is the C API's METAREC_ERR_* value, `message` its description. */
class MetarecException(val code: Int, message: String) : RuntimeException("error $code: $message")

/** The METAREC_ERR_* codes a caller may want to tell apart (include/metarec.h has them all). */
object ErrorCode {
    /** contribute: the model's adaptation cannot give a federated update (HML, MF, ...). */
    const val NOT_CONTRIBUTABLE = 208
    /** contribute: fewer than two support ratings. */
    const val TOO_FEW_RATINGS = 209
    /** contribute: a clip norm that is NaN, infinite, zero or negative. */
    const val INVALID_CLIP_NORM = 210
}

/** The native methods of metarec_jni.c. Strings cross as NUL-terminated UTF-8. */
object Native {
    @JvmStatic external fun version(): String
    @JvmStatic external fun checkVersion()
    @JvmStatic external fun modelLoad(path: ByteArray): Long
    @JvmStatic external fun modelLoadFromMemory(bytes: ByteArray): Long
    @JvmStatic external fun modelFree(model: Long)
    @JvmStatic external fun itemCount(model: Long): Int
    @JvmStatic external fun itemId(model: Long, index: Int): ByteArray
    @JvmStatic external fun method(model: Long): ByteArray
    @JvmStatic external fun fieldCount(model: Long, side: Int): Int
    @JvmStatic external fun fieldName(model: Long, side: Int, index: Int): ByteArray
    @JvmStatic external fun sessionNew(model: Long): Long
    @JvmStatic external fun sessionFree(session: Long)
    @JvmStatic external fun setProfile(session: Long, field: ByteArray, value: ByteArray)
    @JvmStatic external fun addRating(session: Long, item: ByteArray, rating: Float)
    @JvmStatic external fun clearRatings(session: Long)
    @JvmStatic external fun adapt(session: Long, steps: Int)
    @JvmStatic external fun score(session: Long, ids: Array<ByteArray>): FloatArray
    @JvmStatic external fun topK(session: Long, k: Int, excludeRated: Boolean, outScores: FloatArray): IntArray
    @JvmStatic external fun contribute(session: Long, clipNorm: Float): ByteArray

    /** Loads the JNI shim from a path and checks that libmetarec.so matches its header. */
    fun load(shimPath: String) {
        System.load(shimPath)
        checkVersion()
    }
}

/** A string as the NUL-terminated UTF-8 bytes the C API takes. */
internal fun cString(text: String): ByteArray {
    require(text.indexOf('\u0000') < 0) { "a string passed to metarec contains NUL" }
    return (text + "\u0000").toByteArray(UTF_8)
}

internal fun fromC(bytes: ByteArray): String = String(bytes, UTF_8)

/** Side of a model's fields (METAREC_FIELDS_USER / METAREC_FIELDS_ITEM). */
enum class FieldSide(val code: Int) { USER(0), ITEM(1) }

/** One ranked item. */
data class Recommendation(val index: Int, val id: String, val score: Float)

/** An immutable, thread-safe model. Close it when done (sessions keep it alive). */
class Model private constructor(private var handle: Long) : Closeable {
    companion object {
        fun load(path: String): Model = Model(Native.modelLoad(cString(path)))
        fun fromBytes(bytes: ByteArray): Model = Model(Native.modelLoadFromMemory(bytes))
    }

    private fun live(): Long {
        check(handle != 0L) { "the model is closed" }
        return handle
    }

    val itemCount: Int get() = Native.itemCount(live())
    val method: String get() = fromC(Native.method(live()))
    fun itemId(index: Int): String = fromC(Native.itemId(live(), index))
    fun fieldNames(side: FieldSide): List<String> =
        (0 until Native.fieldCount(live(), side.code)).map { fromC(Native.fieldName(live(), side.code, it)) }

    fun newSession(): Session = Session(this, Native.sessionNew(live()))

    @Synchronized override fun close() {
        if (handle != 0L) {
            Native.modelFree(handle)
            handle = 0L
        }
    }
}

/** One user's session. Not shared by design; its methods are synchronized anyway. */
class Session internal constructor(private val model: Model, private var handle: Long) : Closeable {
    private fun live(): Long {
        check(handle != 0L) { "the session is closed" }
        return handle
    }

    @Synchronized fun setProfile(field: String, value: String) = Native.setProfile(live(), cString(field), cString(value))
    @Synchronized fun addRating(itemId: String, rating: Float) = Native.addRating(live(), cString(itemId), rating)
    @Synchronized fun clearRatings() = Native.clearRatings(live())
    /** Adapts with `steps` gradient steps; 0 uses the model's own step count. */
    @Synchronized fun adapt(steps: Int = 0) = Native.adapt(live(), steps)
    @Synchronized fun score(itemIds: List<String>): FloatArray =
        Native.score(live(), itemIds.map { cString(it) }.toTypedArray())

    /** The `k` best items, best first; items the user rated are left out unless `excludeRated` is false. */
    @Synchronized fun topK(k: Int, excludeRated: Boolean = true): List<Recommendation> {
        val scores = FloatArray(k)
        val indices = Native.topK(live(), k, excludeRated, scores)
        return indices.mapIndexed { i, index -> Recommendation(index, model.itemId(index), scores[i]) }
    }

    /**
     * This user's federated contribution (metarec_session_contribute): the first-order
     * meta-update from the support ratings, clipped to L2 norm `clipNorm`, as the versioned,
     * CRC-checked blob the app sends to the server (`trainer federated aggregate` reads it).
     * It carries no ratings, item ids, counts or losses. Afterwards the session scores with the
     * meta-learned weights: call adapt() again. Throws MetarecException with
     * ErrorCode.NOT_CONTRIBUTABLE, TOO_FEW_RATINGS or INVALID_CLIP_NORM among others.
     */
    @Synchronized fun contribute(clipNorm: Float): ByteArray = Native.contribute(live(), clipNorm)

    @Synchronized override fun close() {
        if (handle != 0L) {
            Native.sessionFree(handle)
            handle = 0L
        }
    }
}
