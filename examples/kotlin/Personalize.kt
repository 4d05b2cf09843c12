// personalize (Kotlin/JVM): the C example examples/c/personalize.c through the JNI layer.
// Loads a model, reads a user file in the trainer's format (user/profile/support/query lines,
// tab-separated), sets the profile, adds the support ratings, adapts, and prints the ten
// best items the user has not rated, in the C example's format.
//
//   usage: java -jar personalize.jar LIBMETAREC_JNI.so MODEL.mrec USER.tsv
//
// Exits with 1 on a metarec error (code and message on stderr), 2 on a usage or file error.
import java.io.File
import kotlin.system.exitProcess
import metarec.FieldSide
import metarec.MetarecException
import metarec.Model
import metarec.Native

fun main(args: Array<String>) {
    if (args.size != 3) {
        System.err.println("usage: personalize LIBMETAREC_JNI.so MODEL.mrec USER.tsv")
        exitProcess(2)
    }
    val lines = try {
        File(args[2]).readLines()
    } catch (e: java.io.IOException) {
        System.err.println("personalize: cannot read ${args[2]}: ${e.message}")
        exitProcess(2)
    }
    try {
        Native.load(File(args[0]).absolutePath)
        Model.load(args[1]).use { model ->
            println("metarec ${Native.version()} (${model.method}): ${args[1]}, ${model.itemCount} items")
            println("user fields: ${model.fieldNames(FieldSide.USER).joinToString(", ")}")
            model.newSession().use { session ->
                for ((number, line) in lines.withIndex()) {
                    if (line.isBlank() || line.startsWith("#")) continue
                    val parts = line.split('\t')
                    when {
                        parts[0] == "user" && parts.size == 2 -> println("user ${parts[1]}")
                        parts[0] == "profile" && parts.size == 3 -> session.setProfile(parts[1], parts[2])
                        parts[0] == "support" && parts.size == 3 -> {
                            val rating = parts[2].toFloatOrNull()
                            if (rating == null) {
                                System.err.println("personalize: ${args[2]}:${number + 1}: bad rating '${parts[2]}'")
                                exitProcess(2)
                            }
                            session.addRating(parts[1], rating)
                        }
                        parts[0] == "query" && parts.size == 3 -> {}
                        else -> {
                            System.err.println("personalize: ${args[2]}:${number + 1}: unrecognized line")
                            exitProcess(2)
                        }
                    }
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
