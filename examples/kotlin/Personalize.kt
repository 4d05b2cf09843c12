// personalize (Kotlin/JVM): the C example examples/c/personalize.c through the JNI layer.
// Loads a model, reads a user file in the trainer's format (user/profile/support/query lines,
// tab-separated), sets the profile, adds the support ratings, prints the size of the
// federated contribution those ratings give (the blob an app would send to the server; not
// printed for models that cannot contribute), adapts, and prints the ten best items the user has
// not rated, in the C example's format.
//
//   usage: java -jar personalize.jar LIBMETAREC_JNI.so MODEL.mrec USER.tsv
//
// The user file is checked whole before the library is called: a line of another kind or with
// another number of fields, or a rating that is not a finite number (nan, inf, 1e999, empty,
// 4.5x), is reported with the file, line number and value. Exits with 1 on a metarec error
// (code and message on stderr), 2 on a usage or file error.
import java.io.File
import kotlin.system.exitProcess
import metarec.ErrorCode
import metarec.FieldSide
import metarec.MetarecException
import metarec.Model
import metarec.Native

class Rating(val itemId: String, val value: Float)

class UserFile(
    val user: String?,
    val profile: List<Pair<String, String>>,
    val support: List<Rating>,
    val query: List<Rating>
)

fun fail(message: String): Nothing {
    System.err.println("personalize: $message")
    exitProcess(2)
}

fun readUserFile(path: String): UserFile {
    val lines = try {
        File(path).readLines()
    } catch (e: java.io.IOException) {
        fail("cannot read $path: ${e.message}")
    }
    var user: String? = null
    val profile = mutableListOf<Pair<String, String>>()
    val support = mutableListOf<Rating>()
    val query = mutableListOf<Rating>()
    for ((index, line) in lines.withIndex()) {
        if (line == "" || line.startsWith("#")) continue
        val where = "$path:${index + 1}"
        val parts = line.split('\t')
        val kind = parts[0]
        val want = when (kind) {
            "user" -> 2
            "profile", "support", "query" -> 3
            else -> fail("$where: unknown line kind '$kind' (want user, profile, support or query)")
        }
        if (parts.size != want) fail("$where: a $kind line has ${parts.size} tab-separated fields, want $want")
        when (kind) {
            "user" -> user = parts[1]
            "profile" -> profile.add(Pair(parts[1], parts[2]))
            else -> {
                // toFloatOrNull takes "NaN" and "Infinity", and 1e999 overflows to infinity.
                val value = parts[2].toFloatOrNull()?.takeIf { it.isFinite() }
                    ?: fail("$where: $kind rating '${parts[2]}' is not a finite number")
                (if (kind == "support") support else query).add(Rating(parts[1], value))
            }
        }
    }
    return UserFile(user, profile, support, query)
}

fun main(args: Array<String>) {
    if (args.size != 3) {
        System.err.println("usage: personalize LIBMETAREC_JNI.so MODEL.mrec USER.tsv")
        exitProcess(2)
    }
    val userFile = readUserFile(args[2])
    try {
        Native.load(File(args[0]).absolutePath)
        Model.load(args[1]).use { model ->
            println("metarec ${Native.version()} (${model.method}): ${args[1]}, ${model.itemCount} items")
            println("user fields: ${model.fieldNames(FieldSide.USER).joinToString(", ")}")
            userFile.user?.let { println("user $it") }
            model.newSession().use { session ->
                for ((field, value) in userFile.profile) session.setProfile(field, value)
                for (rating in userFile.support) session.addRating(rating.itemId, rating.value)
                // Before adapt(): a contribution leaves the session unadapted.
                try {
                    println("contribution: ${session.contribute(clipNorm = 1f).size} bytes (clip norm 1)")
                } catch (e: MetarecException) {
                    if (e.code != ErrorCode.NOT_CONTRIBUTABLE && e.code != ErrorCode.TOO_FEW_RATINGS) throw e
                    println("contribution: none (${e.message})")
                }
                session.adapt()
                val top = session.topK(10)
                println("top ${top.size} recommendations (unrated items):")
                for ((rank, item) in top.withIndex()) {
                    println(String.format(java.util.Locale.ROOT, "%3d. %s\t%.4f", rank + 1, item.id, item.score))
                }
            }
        }
    } catch (e: MetarecException) {
        System.err.println("personalize: metarec failed: ${e.message}")
        exitProcess(1)
    }
}
