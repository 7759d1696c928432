# Replies no R daemon writes, read by an R host: the envelope a daemon puts before a large plain
# vector's serialization (see src/adopt.c) well formed, then malformed in each field the host
# parses before it takes the payload's memory over, and streams cut short. A `mirai-daemon` with
# a C plugin (reply_plugin.c) sends back whatever bytes a task carries. Each reply is either read
# right or gives an R error; the host serves on after every one.
# Run: Rscript bindings/r/tests/envelopes.R (it builds mirai-daemon and the plugin).
library(mirai)
tests_dir <- dirname(normalizePath(sub("^--file=", "", grep("^--file=", commandArgs(FALSE), value = TRUE)[1L])))
source(file.path(tests_dir, "harness.R"))

root <- normalizePath(file.path(tests_dir, "..", "..", ".."))
stopifnot(system2("cargo", c("build", "-q", "-p", "mirai-daemon", "--manifest-path", shQuote(file.path(root, "Cargo.toml")))) == 0L)
target <- Sys.getenv("CARGO_TARGET_DIR", file.path(root, "target"))
daemon_bin <- file.path(target, "debug", "mirai-daemon")
plugin <- file.path(tempdir(), "reply_plugin.so")
stopifnot(system2("cc", c("-shared", "-fPIC", "-Wall", "-Werror", "-I", shQuote(file.path(root, "include")),
                          "-o", shQuote(plugin), shQuote(file.path(tests_dir, "reply_plugin.c")))) == 0L)

le_bytes <- function(n, width) as.raw(floor(n / 256^(seq_len(width) - 1L)) %% 256)

# A task whose reply is `bytes`: the plugin finds them after its marker and their length.
reply <- function(bytes) {
  mirai(NULL, .args = list(r = c(charToRaw("mirai-test-reply:"), le_bytes(length(bytes), 8L), bytes)))
}
# The reply's value, or the error reading it gave, as a "hostError".
read_reply <- function(bytes) {
  tryCatch(reply(bytes)[], error = function(e) structure(conditionMessage(e), class = "hostError"))
}

# As a daemon writes it: the envelope ("\0mir", its length, zeros) taking the vector's data to
# offset 128, R's native binary serialization, zeros up to the 8-byte multiple R rounds the
# vector to. `shift` moves the data off that place, `tail = FALSE` leaves the zeros out.
preamble <- length(serialize(NULL, NULL, xdr = FALSE)) - 4L
envelope <- function(n, field = n) c(as.raw(c(0, 0x6d, 0x69, 0x72)), le_bytes(field, 4L), raw(n - 8L))
enveloped <- function(x, shift = 0L, tail = TRUE, version = 3L, xdr = FALSE) {
  s <- serialize(x, NULL, xdr = xdr, version = version)
  n <- 128L - (preamble + 8L) + shift
  data_bytes <- length(x) * c(raw = 1, logical = 4, integer = 4, double = 8)[[typeof(x)]]
  c(envelope(n), s, if (tail) raw((8 - data_bytes %% 8) %% 8))
}
# Where in an enveloped reply R's stream starts, and where its vector's length is.
stream_at <- function() 128L - (preamble + 8L) + 1L
length_at <- function() 128L - 4L + 1L
put <- function(bytes, at, value) {
  bytes[at + 0:3] <- le_bytes(value %% 2^32, 4L)
  bytes
}

daemons(url = "tcp://127.0.0.1:0")
secret_file <- tempfile("secret")
writeLines(.Call(mirai:::rmirai_secret, mirai:::get_profile("default")$host), secret_file)
Sys.chmod(secret_file, "600")
system2(daemon_bin, c(shQuote(nextget("url")), "--evaluator", "plugin", "--plugin", shQuote(plugin),
                      "--secret-file", shQuote(secret_file)), wait = FALSE)
t0 <- Sys.time()
while (status()$connections < 1L && difftime(Sys.time(), t0, units = "secs") < 30) Sys.sleep(0.05)
check("the plugin daemon connects", status()$connections == 1L)

x <- as.raw(seq_len(2^20 + 3) %% 251)
d <- seq_len(4e6) / 8

# Well formed: taken over in place (outside R's vector heap), so the malformed replies below go
# through the checks before that.
held <- gc()[2L, "used"]
got <- read_reply(enveloped(d))
check("well-formed envelope: the value", identical(got, d))
check("well-formed envelope: taken over in place (gc() Vcells)", gc()[2L, "used"] - held < 1e6)
rm(got)
check("well-formed envelope, raw with its tail", identical(read_reply(enveloped(x)), x))

# Read by R's reader instead, and right.
held <- gc()[2L, "used"]
got <- read_reply(enveloped(d, shift = 8L))
check("data off its 16-byte boundary: read by copying", identical(got, d) && gc()[2L, "used"] - held > 3e6)
rm(got)
check("no zeros after the data: read by copying", identical(read_reply(enveloped(x, tail = FALSE)), x))
check("version 2 stream in an envelope", identical(read_reply(enveloped(x, version = 2L)), x))
check("XDR stream in an envelope", identical(read_reply(enveloped(x, xdr = TRUE)), x))
attributed <- structure(x, unit = "byte")
check("a vector with an attribute in an envelope", identical(read_reply(enveloped(attributed)), attributed))
check("a small vector in an envelope", identical(read_reply(enveloped(1:10)), 1:10))
strings <- rep(c("a", "b"), 3e5)
check("a character vector in an envelope", identical(read_reply(c(envelope(32L), serialize(strings, NULL, xdr = FALSE))), strings))

# Malformed: an R error, and nothing else.
is_error <- function(got, pattern = NULL) inherits(got, "hostError") && (is.null(pattern) || grepl(pattern, got))
good <- enveloped(x)
cut <- good[seq_len(length(good) - 1000L)]
check("stream cut short in the data", is_error(read_reply(cut), "ended early"))
check("stream cut short in the header", is_error(read_reply(good[seq_len(stream_at() + 10L)]), "ended early"))
check("envelope alone", is_error(read_reply(envelope(64L))))
check("envelope longer than the reply", is_error(read_reply(envelope(64L, field = 65L))))
check("envelope length under 8", is_error(read_reply(c(envelope(64L, field = 4L)))))
check("envelope length 2^32 - 1", is_error(read_reply(put(good, 5L, 2^32 - 1))))
check("vector longer than the data", is_error(read_reply(put(good, length_at(), length(x) + 1000)), "ended early"))
check("vector length negative", is_error(read_reply(put(good, length_at(), -5))))
long <- put(good, length_at(), -1)
check("long-vector length cut short", is_error(read_reply(long[seq_len(length_at() + 5L)])))
huge <- c(put(good[seq_len(length_at() + 3L)], length_at(), -1), le_bytes(2^12, 4L), raw(4L), raw(64L))
check("long-vector length past the data", is_error(read_reply(huge)))
check("encoding name's length negative", is_error(read_reply(put(good, stream_at() + 14L, -1))))
check("encoding name's length past the data", is_error(read_reply(put(good, stream_at() + 14L, 1e6))))
check("not a serialization after the envelope", is_error(read_reply(c(envelope(16L), charToRaw("not R at all")))))

check("the host serves on", identical(read_reply(serialize(42, NULL)), 42))
daemons(0)
unlink(secret_file)
finish("envelopes")
