# Tests of the mirai R package on libmirai. Run: Rscript bindings/r/tests/tests.R
library(mirai)
tests_dir <- dirname(normalizePath(sub("^--file=", "", grep("^--file=", commandArgs(FALSE), value = TRUE)[1L])))

source(file.path(tests_dir, "harness.R"))
check_error <- function(what, expr, pattern) {
  msg <- tryCatch({ expr; NA_character_ }, error = function(e) conditionMessage(e))
  check(what, !is.na(msg) && grepl(pattern, msg, fixed = TRUE))
}

# No daemons.
check("info() is NULL without daemons", is.null(info()))
check("status() without daemons", identical(status(), list(connections = 0L, daemons = 0L)))
check("daemons(0) without daemons", identical(daemons(0), FALSE))
check_error("missing expression", mirai(), "missing expression, perhaps wrap in {}?")
check_error("unnamed dots", mirai(1, 2), "all `...` arguments must be named, unless supplying an environment")
check_error("unnamed .args", mirai(1, .args = list(2)), "all items in `.args` must be named, unless supplying an environment")
check_error("n < 0", daemons(-1), "zero or greater")
check_error("non-numeric n", daemons("a"), "must be numeric")
check_error("bad dispatcher", daemons(1, dispatcher = "x"), "`dispatcher` must be either TRUE or FALSE")
check_error("url not character", daemons(url = 1), "must be of type character")
check_error("mirai_map without daemons", mirai_map(1:2, identity), "No daemons set")
check_error("require_daemons", require_daemons(), "No daemons set.")
check_error("invalid URL", daemons(url = "nonsense"), "invalid URL")
check("on_daemon() is FALSE on the host", !on_daemon())
check("nextcode: daemon exit codes", identical(nextcode(0:3), c("0 | Daemon connection terminated", "1 | Daemon idletime limit reached",
                                                             "2 | Daemon walltime limit reached", "3 | Daemon task limit reached")))
check("nextcode of an unknown code", identical(nextcode(101), "101 | Unknown exit code"))
check("local_url", grepl("^abstract://[A-Za-z0-9]{12}$", local_url()))
set.seed(1)
u1 <- local_url()
seed_after <- .Random.seed
set.seed(1)
check("local_url neither follows nor moves R's RNG", !identical(u1, local_url()) && identical(.Random.seed, seed_after))
check("local_url tcp", identical(local_url(tcp = TRUE, port = 5555), "tcp://127.0.0.1:5555"))

# Without daemons: each mirai gets an R process of its own.
local({
  .helper <- function(x) x + 1
  a <- 1
  m <- mirai(.helper(a) + b, .helper = .helper, .args = environment(), b = 1)
  check("ephemeral mirai", identical(m[], 3))
  check("mirai id is an integer", is.integer(attr(m, "id")) && attr(mirai(1), "id") > attr(m, "id"))
})
check("ephemeral mirai with .args", identical(mirai(x * 2, .args = list(x = 4))[], 8))
to <- mirai(Sys.sleep(10), .timeout = 300)[]
check("ephemeral timeout", identical(unclass(to), 5L))
check("ephemeral on_daemon", isTRUE(mirai(mirai::on_daemon())[]))

# A synchronous profile: tasks run in this process before mirai() returns, in the profile's own
# global environment.
daemons(sync = TRUE, .compute = "seq")
user_global <- "kept"
m <- mirai({ defined_in_task <- 1; Sys.getpid() }, .compute = "seq")
check("sync mirai resolved on return", !unresolved(m) && identical(m$data, Sys.getpid()))
everywhere(sync_global <<- 2, .compute = "seq")
check("sync everywhere globals visible", identical(mirai(sync_global + 1, .compute = "seq")[], 3))
check("sync globals not in the user's", !exists("sync_global") && identical(user_global, "kept"))
check("sync cleanup after each task", identical(mirai(exists("defined_in_task"), .compute = "seq")[], FALSE))
check("sync task on_daemon", isTRUE(mirai(on_daemon(), .compute = "seq")[]))
check_error("sync launch_local", launch_local(1, .compute = "seq"), "daemons cannot be launched for synchronous compute profiles")
check_error("sync launch_remote", launch_remote(1, .compute = "seq"), "daemons cannot be launched for synchronous compute profiles")
check("sync map", identical(mirai_map(1:3, function(i) i * 2, .compute = "seq")[.flat], c(2, 4, 6)))
check("sync error", is_mirai_error(mirai(stop("x"), .compute = "seq")[]))
t0 <- Sys.time()
quick <- mirai(Sys.sleep(2), .timeout = 1, .compute = "seq")[]
check("sync mirai with a short timeout returns", identical(unclass(quick), 5L) && difftime(Sys.time(), t0, units = "secs") < 1.9)
daemons(0, .compute = "seq")
daemons(sync = TRUE, seed = 7, .compute = "seq")
r1 <- mirai(runif(1), .compute = "seq")[]
daemons(sync = TRUE, seed = 7, .compute = "seq")
check("sync seed reproducible", identical(mirai(runif(1), .compute = "seq")[], r1))
daemons(0, .compute = "seq")
check("host .Random.seed still an integer vector", !exists(".Random.seed") || is.integer(.Random.seed))

# Daemons and mirai.
daemons(2)
check("two daemons connected", status()$connections == 2L)
check("daemons_set", daemons_set())
m <- mirai(x + y, x = 1, .args = list(y = 2))
check("a mirai is a mirai", is_mirai(m))
check("value", identical(m[], 3))
check("$data once resolved", identical(m$data, 3))
check("call_mirai returns the mirai", identical(call_mirai(m), m))
check("unresolved FALSE once done", !unresolved(m))
lang <- quote(a * 2)
check("a symbol naming a language object", identical(mirai(lang, a = 4)[], 8))
e <- mirai(stop("boom"))[]
check("miraiError", is_mirai_error(e) && is_error_value(e) && !is_mirai_interrupt(e))
check("miraiError text", identical(as.character(e), "Error: boom"))
check("miraiError condition class", "simpleError" %in% e$condition.class)
check(".DollarNames for miraiError", all(c("condition.class", "stack.trace") %in% utils:::.DollarNames(e, "")))
check("print daemons()", identical(capture.output(print(daemons(1, .compute = "printed"))), "[1] TRUE"))
daemons(0, .compute = "printed")
deep <- mirai(f(1), f = function(x) g(x), g = function(x) stop("deep ", x))[]
check("miraiError call and stack trace", identical(conditionCall(deep), quote(g(x))) &&
        identical(deep$stack.trace, list(quote(stop("deep ", x)), quote(g(x)), quote(f(1)))))
nested <- mirai(mirai::mirai())[]
check("nested mirai() error", is_mirai_error(nested) && length(nested$stack.trace) >= 2L && is.character(nested$condition.class))
check("a task changing options, globals and the search path is cleaned up after",
      identical(mirai({ options(digits = 3); assign("leak", 1, .GlobalEnv); attach(list(z = 1), name = "extra"); 1 })[], 1) &&
        identical(mirai(list(getOption("digits"), exists("leak"), "extra" %in% search()))[], list(7L, FALSE, FALSE)))
# Each kind of change alone is seen (the C layer checks before calling the R side's cleanup).
check("a task changing only an option is cleaned up after",
      identical(mirai({ options(digits = 4); 1 })[], 1) && identical(mirai(getOption("digits"))[], 7L))
check("a task adding only a global is cleaned up after",
      identical(mirai({ assign("leak2", 1, .GlobalEnv); 1 })[], 1) && identical(mirai(exists("leak2"))[], FALSE))
check("a task attaching only is cleaned up after",
      identical(mirai({ attach(list(z = 1), name = "extra2"); 1 })[], 1) && identical(mirai("extra2" %in% search())[], FALSE))
check("on_daemon() TRUE remotely", isTRUE(mirai(mirai::on_daemon())[]))

# Maps.
mp <- mirai_map(1:9, function(x) x^2)
check("map flat", identical(mp[.flat], (1:9)^2))
named <- mirai_map(c(a = 1, b = 2), function(x) x + 1)[]
check("map keeps names", identical(names(named), c("a", "b")))
df <- data.frame(x = 1:3, y = 4:6)
check("map over data frame rows", identical(unlist(mirai_map(df, function(x, y) x + y)[]), c(5L, 7L, 9L)))
check_error("map .stop", mirai_map(list(1, "a", 2), function(x) x + 1)[.stop], "In index")
inside <- mirai_map(1, function(x) mirai::daemons(1))[][[1L]]
check("daemons() inside a mirai_map task is an error", is_mirai_error(inside) &&
        grepl("cannot create local daemons from within mirai map", inside, fixed = TRUE))
check_error("map .flat with mixed types", mirai_map(list(1, "a"), identity)[.flat], "differing type")

# everywhere.
pids <- everywhere(Sys.getpid())[]
check("everywhere reaches each daemon once", length(unique(unlist(pids))) == 2L)
everywhere(helper <<- function(x) x * 10)
check("everywhere state survives cleanup", identical(mirai(helper(2))[], 20))
everywhere({ local_only <- 1; from_args + 1 }, .args = list(from_args = 1))
check("everywhere keeps .args and plain assignments local", identical(mirai(c(exists("local_only"), exists("from_args")))[], c(FALSE, FALSE)))
everywhere(NULL, shared = 5)
check("everywhere `...` persists as globals", identical(mirai(shared)[], 5))

# Cancellation, timeouts, lost daemons.
slow <- mirai(Sys.sleep(100))
Sys.sleep(0.3)
check("stop_mirai a running task", isTRUE(stop_mirai(slow)))
check("cancelled resolves 20", identical(unclass(slow[]), 20L))
check("stop_mirai a resolved task", !stop_mirai(slow))
check("daemon still there", identical(mirai(1)[], 1))
to <- mirai(Sys.sleep(10), .timeout = 200)[]
check("timeout resolves 5", is_error_value(to) && identical(unclass(to), 5L))
check("stop_mirai(NULL)", identical(stop_mirai(NULL), FALSE))
all_pids <- unlist(everywhere(Sys.getpid())[])
doomed <- mirai(Sys.sleep(100))
Sys.sleep(0.3)
idle_pid <- mirai(Sys.getpid())[]
tools::pskill(setdiff(all_pids, idle_pid), tools::SIGKILL)
check("killed daemon gives 19", identical(unclass(doomed[]), 19L))
daemons(0)

# race_mirai and counters.
daemons(2)
r <- list(mirai(Sys.sleep(2)), mirai(1))
check("race_mirai", identical(race_mirai(r), 2L))
check("race_mirai empty", identical(race_mirai(list()), 0L))
i <- info()
check("info names", identical(names(i), c("connections", "cumulative", "awaiting", "executing", "completed")))

# Two profiles at once.
daemons(1, .compute = "other")
check("second profile", status(.compute = "other")$connections == 1L)
check("second profile value", identical(mirai(2 + 2, .compute = "other")[], 4))
check("with_daemons", identical(with_daemons("other", mirai(3)[]), 3))
daemons(0, .compute = "other")
check("second profile reset", !daemons_set(.compute = "other"))

# Per-daemon RNG streams follow parallel::nextRNGStream.
seeds <- everywhere(.Random.seed)[]
check("daemon streams are L'Ecuyer-CMRG", all(vapply(seeds, function(s) s[1] == 10407L, logical(1))))
check("daemon streams differ", length(unique(seeds)) == 2L)
daemons(0)

# Streams: daemon k gets nextRNGStream^k of set.seed(seed), as in R's mirai; with a seed, each
# mirai takes the next stream, so results do not depend on the number of daemons.
daemons(4, seed = 1546)
set.seed(1546, kind = "L'Ecuyer-CMRG")
s <- .Random.seed
expected <- lapply(1:4, function(k) { s <<- parallel::nextRNGStream(s); s })
got <- everywhere(list(.Random.seed, Sys.getpid()))[]
check("daemon streams are R's nextRNGStream^k", all(vapply(got, function(g) any(vapply(expected, identical, logical(1), g[[1L]])), logical(1))))
check("each stream once", length(unique(lapply(got, `[[`, 1L))) == 4L)
a <- mirai_map(1:12, function(i) rnorm(1))[.flat]
daemons(1, seed = 1546)
b <- mirai_map(1:12, function(i) rnorm(1))[.flat]
check("seeded results do not depend on daemons", identical(a, b))
check("nextstream advances", !identical(nextstream(), nextstream()))
daemons(0)
RNGkind("default")

# Daemon limits.
daemons(1, maxtasks = 2)
check("maxtasks daemon serves", identical(mirai(1)[], 1) && identical(mirai(2)[], 2))
Sys.sleep(0.5)
check("maxtasks daemon left", status()$connections == 0L)
daemons(0)
daemons(1, idletime = 300)
check("idletime daemon serves", identical(mirai(1)[], 1))
Sys.sleep(1)
check("idletime daemon left", status()$connections == 0L)
daemons(0)

# daemon() in this process: its exit codes (1 idletime, 3 maxtasks; 2, walltime, is tested in
# mirai-core's daemon_limits).
daemons(url = local_url(), .compute = "codes")
# A daemon takes the secret out of its environment: give it again before each.
secret <- .Call(mirai:::rmirai_secret, mirai:::get_profile("codes")$host)
url <- nextget("url", .compute = "codes")
Sys.setenv(MIRAI_SECRET = secret)
check("daemon idletime exit code", identical(daemon(url, idletime = 200), 1L))
check("daemon() removes MIRAI_SECRET from its environment", identical(Sys.getenv("MIRAI_SECRET", NA), NA_character_))
queued <- mirai(Sys.getpid(), .compute = "codes")
Sys.setenv(MIRAI_SECRET = secret)
check("daemon maxtasks exit code", identical(daemon(url, maxtasks = 1), 3L) && identical(queued[], Sys.getpid()))
Sys.setenv(MIRAI_SECRET = secret)
check("daemon walltime with no task: the receive times out, code 1", identical(daemon(url, walltime = 200, asyncdial = TRUE), 1L))
check_error("daemon without the secret is refused, visibly", daemon(url), "auth")
check_error("daemon with a bad URL", daemon("URL"), "`url` must be a valid URL")
daemons(0, .compute = "codes")

# daemons(NULL) makes even autoexit = FALSE daemons exit.
daemons(1, autoexit = FALSE, dispatcher = FALSE)
check("dispatcher = FALSE serves", identical(mirai(1)[], 1))
stay <- mirai(Sys.getpid())[]
daemons(NULL)
t0 <- Sys.time()
while (isTRUE(tools::pskill(stay, 0L)) && difftime(Sys.time(), t0, units = "secs") < 10) Sys.sleep(0.05)
check("daemons(NULL) ends autoexit = FALSE daemons", !isTRUE(tools::pskill(stay, 0L)))

# A task's own options(error =) does not run when it fails; an everywhere task that fails part
# way keeps what it did; a result that cannot be read here can be read later.
daemons(1)
flag <- tempfile()
check("options(error =) of a task is not run", is_mirai_error(mirai({ options(error = function() writeLines("ran", flag)); stop("x") }, flag = flag)[]) &&
        !file.exists(flag))
invisible(everywhere({ partial <<- 1; stop("x") })[])
check("everywhere failing part way keeps its changes", isTRUE(mirai(exists("partial"))[]))
daemons(0)
fragile <- serial_config("fragile", function(x) serialize(attr(x, "value"), NULL),
                         function(r) {
                           if (isTRUE(getOption("mirai.test.fail"))) { options(mirai.test.fail = FALSE); stop("not now") }
                           structure(methods::new("externalptr"), class = "fragile", value = unserialize(r))
                         })
# A task the daemon cannot read, and a value it cannot send back: each a miraiError, and the
# daemon serves on.
picky <- serial_config("picky", function(x) if (mirai::on_daemon()) stop("cannot send this") else serialize(1, NULL),
                       function(r) if (mirai::on_daemon()) stop("cannot read this") else structure(methods::new("externalptr"), class = "picky"))
daemons(1, serial = picky)
obj <- structure(methods::new("externalptr"), class = "picky")
unreadable <- mirai(TRUE, obj = obj)[]
check("a task the daemon cannot read gives a miraiError", is_mirai_error(unreadable) && grepl("cannot read this", unreadable, fixed = TRUE))
unsendable <- mirai(structure(methods::new("externalptr"), class = "picky"))[]
check("a value the daemon cannot send gives a miraiError", is_mirai_error(unsendable) && grepl("cannot send this", unsendable, fixed = TRUE))
check("the daemon serves on", identical(mirai(1)[], 1))
daemons(0)
daemons(1, serial = fragile)
held <- mirai(structure(methods::new("externalptr"), class = "fragile", value = 7))
invisible(call_mirai(mirai(1)))
options(mirai.test.fail = TRUE)
first <- tryCatch(held[], error = function(e) conditionMessage(e))
check("a result that fails to unserialize is kept", grepl("not now", first) && identical(attr(held[], "value"), 7))
daemons(0)

# More of the API: printing, collect_mirai, local_daemons, host_url, interrupts, cancelling a
# queued task.
daemons(1)
m <- mirai(1)
invisible(m[])
check("print mirai", identical(capture.output(print(m)), "< mirai [$data] >"))
check("print errorValue", identical(capture.output(print(mirai(Sys.sleep(5), .timeout = 50)[])), "'errorValue' int 5 | Timed out"))
check("print miraiError", identical(capture.output(print(mirai(stop("x"))[])), "'miraiError' chr Error: x"))
mp <- mirai_map(1:3, function(x) x)
check("is_mirai_map", is_mirai_map(mp) && !is_mirai_map(m))
check("collect_mirai with options", identical(collect_mirai(mp, list(.flat = TRUE)), 1:3) && identical(collect_mirai(m), 1))
check("print mirai_map", identical(capture.output(print(mp)), "< mirai map [3/3] >"))
# cli's bar (cli is installed here) shows in a fresh session; the text ticker is the fallback.
progress <- system2(file.path(R.home("bin"), "Rscript"), c("-e", shQuote(paste(
  "library(mirai); daemons(1); options(cli.progress_show_after = 0);",
  "invisible(collect_mirai(mirai_map(1:4, function(x) { Sys.sleep(0.1); x }), list(.progress = 'Crunching')))"))),
  stdout = TRUE, stderr = TRUE)
check("[.progress] is cli's bar, named as asked", any(grepl("Crunching.*100%", progress)))
ticker <- capture.output({ tick <- mirai:::text_progress(2L); tick(1L); tick(2L) }, type = "message")
check("text progress without cli", identical(ticker, "\r[ 1 / 2 .... ]\r[ 2 / 2 done ]"))
intr <- mirai({ tools::pskill(Sys.getpid(), tools::SIGINT); Sys.sleep(2) })[]
check("an interrupt on the daemon gives miraiInterrupt", is_mirai_interrupt(intr) && identical(capture.output(print(intr)), "'miraiInterrupt' chr \"\""))
check("daemon fine after an interrupt", identical(mirai(2)[], 2))
marker <- tempfile()
busy <- mirai(Sys.sleep(1))
queued <- mirai(writeLines("ran", marker), marker = marker)
check("cancel a queued task", isTRUE(stop_mirai(queued)) && identical(unclass(queued[]), 20L))
invisible(busy[])
Sys.sleep(0.2)
check("a cancelled queued task never runs", !file.exists(marker))
in_profile <- function() {
  local_daemons("default")
  mirai(3)[]
}
check("local_daemons", identical(in_profile(), 3))
daemons(0)
check("host_url", all(grepl("^tcp://.+:0$", host_url())) && all(grepl("^tls\\+tcp://.+:5555$", host_url(tls = TRUE, port = 5555))) &&
        !is.null(names(host_url())))
daemons(url = "tcp://127.0.0.1:0")
cmds <- launch_remote(1, remote_config(args = list(c("a", "."), c("b", "."))))
check("remote_config args as a list: one launch each", length(cmds) == 2L)
check_error("args list and n differ", launch_remote(3, remote_config(args = list(c("a", "."), c("b", ".")))), "`n` must equal the length of `args`, or either must be 1")
daemons(0)
daemons(1)
check("collect_mirai with a named options list", identical(collect_mirai(mirai_map(1:2, function(x) x), list(.flat = TRUE, .progress = FALSE)), 1:2))
daemons(0)

# Memory cap: try_mirai refuses at once when the queue is full; mirai waits.
daemons(url = local_url(), memory = 0.01)
check("capacity reported", identical(unname(status()$memory[3L]), 0.01))
first <- try_mirai(1, .args = list(big = raw(16000)))
check("first submission accepted", is_mirai(first))
t0 <- Sys.time()
check("next one refused", is.null(try_mirai(2)))
check("refused at once", difftime(Sys.time(), t0, units = "secs") < 1)
check("used memory", status()$memory[["used"]] > 0.01)
invisible(stop_mirai(first))
check("cancelling frees memory", identical(status()$memory[["used"]], 0))
check("nextget url", identical(nextget("url"), status()$daemons))
launch_local(1)
check("accepted again", identical(try_mirai(3)[], 3))
daemons(0)

# TLS: a generated certificate; local daemons get the CA (and the secret) in their environment.
daemons(url = "tls+tcp://127.0.0.1:0")
check("TLS URL resolved", grepl("^tls\\+tcp://127\\.0\\.0\\.1:[0-9]+$", nextget("url")))
launch_local(1)
t0 <- Sys.time()
while (status()$connections < 1L && difftime(Sys.time(), t0, units = "secs") < 30) Sys.sleep(0.05)
check("TLS daemon serves", identical(mirai(6 * 7)[], 42))
daemons(0)

# TLS with the user's own certificate (cert and key in one file) and `tlscert` for daemons.
if (!is.null(own <- self_signed_cert())) {
  dir <- own$dir
  cert <- own$cert
  key <- own$key
  both <- own$both
  daemons(url = "tls+tcp://127.0.0.1:0", tls = both, tlscert = cert)
  launch_local(1)
  t0 <- Sys.time()
  while (status()$connections < 1L && difftime(Sys.time(), t0, units = "secs") < 30) Sys.sleep(0.05)
  check("user certificate serves", identical(mirai(2 * 21)[], 42))
  check("nextget(\"tls\") is the tlscert given", identical(nextget("tls"), cert))
  cmd <- launch_remote(1, remote_config())
  check("launch command passes the tlscert path", inherits(cmd, "miraiLaunchCmd") && grepl(cert, cmd, fixed = TRUE))
  daemons(0)
  daemons(url = "tls+tcp://127.0.0.1:0", tls = both)
  check("the CA given to daemons holds no private key", !grepl("PRIVATE KEY", nextget("tls")[1L]) && grepl("CERTIFICATE", nextget("tls")[1L]))
  launch_local(1)
  t0 <- Sys.time()
  while (status()$connections < 1L && difftime(Sys.time(), t0, units = "secs") < 30) Sys.sleep(0.05)
  check("user certificate without tlscert", identical(mirai(4)[], 4))
  daemons(0)
  daemons(url = "tls+tcp://127.0.0.1:0", tls = c(paste(readLines(cert), collapse = "\n"), paste(readLines(key), collapse = "\n")))
  launch_local(1)
  t0 <- Sys.time()
  while (status()$connections < 1L && difftime(Sys.time(), t0, units = "secs") < 30) Sys.sleep(0.05)
  check("user certificate as c(cert, key)", identical(mirai(5)[], 5))
  daemons(0)
  enc <- file.path(dir, "enc.pem")
  system2("openssl", c("pkcs8", "-topk8", "-v2", "aes-256-cbc", "-in", key, "-out", enc, "-passout", "pass:test"))
  daemons(url = "tls+tcp://127.0.0.1:0", tls = c(paste(readLines(cert), collapse = "\n"), paste(readLines(enc), collapse = "\n")),
          pass = function() "test")
  launch_local(1)
  t0 <- Sys.time()
  while (status()$connections < 1L && difftime(Sys.time(), t0, units = "secs") < 30) Sys.sleep(0.05)
  check("password-protected key", identical(mirai(6)[], 6))
  daemons(0)
  check_error("wrong key password", daemons(url = "tls+tcp://127.0.0.1:0", tls = c(paste(readLines(cert), collapse = "\n"), paste(readLines(enc), collapse = "\n")), pass = "nope"),
              "wrong password")
  check_error("tls file missing", daemons(url = "tls+tcp://127.0.0.1:0", tls = file.path(dir, "none.pem")), "file not found")
}
daemons(url = "tls+tcp://127.0.0.1:0")
check("generated CA in launch commands", grepl("CERTIFICATE", launch_remote(1, remote_config())))
check("nextget(\"tls\") is the generated CA, as daemon(tlscert =) takes it", length(nextget("tls")) == 2L && grepl("CERTIFICATE", nextget("tls")[1L]) && identical(nextget("tls")[2L], ""))
embedded <- str2lang(sub("^.* -e '(.*)'$", "\\1", launch_remote(1, remote_config())[1L]))
check("the CA embedded in launch commands is intact", identical(eval(embedded$tlscert), nextget("tls")))
daemons(0)

# Remote launchers (libmirai's): a generic command, and with the CI services, SSH and Slurm.
daemons(url = "tcp://127.0.0.1:0")
launch_remote(1, remote = remote_config(command = "sh", args = c("-c", "."), rscript = file.path(R.home("bin"), "Rscript")))
check("remote_config daemon serves", identical(mirai(1 + 2)[], 3))
check_error("remote_config needs a dot", remote_config(args = "x"), "`.` must be an element")
if (identical(Sys.getenv("MIRAI_TEST_SERVICES"), "1")) {
  Sys.setenv(MIRAI_SSH_OPTIONS = paste("-F", Sys.getenv("CI_SSH_CONFIG")))
  remote <- sprintf("ssh://root@127.0.0.1:%s", Sys.getenv("CI_SSH_PORT"))
  # ssh passes no environment: point the remote Rscript at this test's library.
  rscript <- c("env", paste0("R_LIBS=", Sys.getenv("R_LIBS")), file.path(R.home("bin"), "Rscript"))
  launch_remote(remote = ssh_config(remote, rscript = rscript))
  t0 <- Sys.time()
  while (status()$connections < 2L && difftime(Sys.time(), t0, units = "secs") < 60) Sys.sleep(0.1)
  check("ssh daemon connected", status()$connections == 2L)
  daemons(0)
  daemons(url = "tcp://127.0.0.1:0")
  launch_remote(1, remote = cluster_config(options = "#SBATCH --partition=debug\n#SBATCH --output=/dev/null", rscript = rscript))
  t0 <- Sys.time()
  while (status()$connections < 1L && difftime(Sys.time(), t0, units = "secs") < 60) Sys.sleep(0.1)
  check("Slurm daemon serves", identical(mirai(5)[], 5))
}
daemons(0)

# http_config: a stand-in job API launches daemons from the R call in its request body.
check("http_config fields", identical(names(http_config()), c("type", "url", "method", "headers", "data", "dots", "cookie", "token")))
check("http_config headers default is a function", is.function(http_config()$headers))
check("http_config captures dots", identical(http_config(cpus = 2)$dots, list(cpus = 2)))
portfile <- tempfile()
system2("python3", c(file.path(tests_dir, "http_api.py"), portfile, shQuote(file.path(R.home("bin"), "Rscript")), "2"), wait = FALSE)
t0 <- Sys.time()
while (!file.exists(portfile) && difftime(Sys.time(), t0, units = "secs") < 20) Sys.sleep(0.05)
api <- sprintf("http://127.0.0.1:%s/launch", readLines(portfile, warn = FALSE))
daemons(url = "tcp://127.0.0.1:0")
res <- launch_remote(1, http_config(url = api, headers = c(`Content-Type` = "application/json"),
                                    data = function(prefix) sprintf("{\"cmd\": \"%s%%s\", \"environment\": %%e}", prefix),
                                    prefix = "", token = function() "t0ken"))
check("http launch response", is.list(res) && identical(res[[1L]]$status, 200L) && grepl("Bearer t0ken", res[[1L]]$data))
t0 <- Sys.time()
while (status()$connections < 1L && difftime(Sys.time(), t0, units = "secs") < 30) Sys.sleep(0.05)
check("http-launched daemon serves", identical(mirai(3 * 3)[], 9))
check_error("http data without %e while authenticating", launch_remote(1, http_config(url = api, data = "{\"cmd\": \"%s\"}")), "%e")
res <- launch_remote(1, http_config(url = api, data = "{\"cmd\": \"%s\", \"environment\": %e}", cookie = "c=1"))
check("second http launch", identical(res[[1L]]$status, 200L))
t0 <- Sys.time()
while (status()$connections < 2L && difftime(Sys.time(), t0, units = "secs") < 30) Sys.sleep(0.05)
check("second http-launched daemon connected", status()$connections == 2L)
daemons(0)
daemons(url = "tcp://127.0.0.1:0")
unreachable <- launch_remote(1, http_config(url = "http://127.0.0.1:1/x", data = "%s%e"))
check("unreachable API gives an errorValue", is_error_value(unreachable[[1L]]))
check_error("data needs %s", launch_remote(1, http_config(url = "http://127.0.0.1:1/x", data = "{}")), "%s")
# Refused before connecting (192.0.2.1 is unroutable: a connection attempt would take 5 s).
took <- system.time(refused <- mirai:::http_request("http://192.0.2.1/x", "GET"))[["elapsed"]]
check("plain http only to loopback", is_error_value(refused) && took < 2)
daemons(0)
daemons(url = "tcp://127.0.0.1:0", auth = FALSE)
check("no %e needed without authentication", is_error_value(launch_remote(1, http_config(url = "http://127.0.0.1:1/x", data = "%s"))[[1L]]))
daemons(0)
pwb <- mirai:::posit_workbench_data(cluster = "k8s", resource_profile = "small", image = "r:4")
check("Workbench launch_job body", grepl("\"cluster\":\"k8s\"", pwb, fixed = TRUE) && grepl("\"resourceProfile\":\"small\"", pwb, fixed = TRUE) &&
        grepl("%s}", pwb, fixed = TRUE) && grepl("\"environment\":%e", pwb, fixed = TRUE))
check("Workbench resources", grepl("\"resources\":{\"cpus\":2,\"memory\":512}", mirai:::posit_workbench_data(cluster = "k", cpus = 2), fixed = TRUE))
if (requireNamespace("jsonlite", quietly = TRUE)) check("Workbench body is JSON", is.list(jsonlite::fromJSON(sprintf(sub("%e", "[]", pwb, fixed = TRUE), "x"))))

# Custom serialization of a class backed by an external pointer, both ways.
cfg <- serial_config("ptrobj",
                     function(x) serialize(attr(x, "value"), NULL),
                     function(r) structure(methods::new("externalptr"), class = "ptrobj", value = unserialize(r), restored = TRUE))
check_error("serial_config checks its functions", serial_config("a", 1, 2), "both `sfunc` and `ufunc` must be functions")
check_error("serial_config checks lengths", serial_config(c("a", "b"), identity, identity), "must be the same length")
check_error("serial_config checks the class", serial_config(1, identity, identity), "`class` must be a character string")
check("serial_config is nanonext's unnamed list", is.null(names(cfg)) && length(cfg) == 3L)
daemons(1, serial = cfg)
obj <- structure(methods::new("externalptr"), class = "ptrobj", value = list(a = 1))
check("sfunc/ufunc on the daemon", isTRUE(mirai(isTRUE(attr(obj, "restored")) && attr(obj, "value")$a == 1, obj = obj)[]))
back <- mirai(obj, obj = obj)[]
check("sfunc/ufunc on the way back", inherits(back, "ptrobj") && isTRUE(attr(back, "restored")) && identical(attr(back, "value"), list(a = 1)))
daemons(0)
register_serial("ptrobj", cfg[[2L]], cfg[[3L]])
daemons(1)
check("registered configuration applies", isTRUE(attr(mirai(obj, obj = obj)[], "restored")))
daemons(0)

# A parallel cluster.
cl <- make_cluster(2)
check("cluster class", inherits(cl, "cluster") && length(cl) == 2L)
check("parLapply", identical(parallel::parLapply(cl, 1:4, function(x) x * 2), as.list((1:4) * 2)))
check("parSapply", identical(parallel::parSapply(cl, 1:4, function(x) x + 1), (1:4) + 1))
check("clusterApplyLB", identical(unlist(parallel::clusterApplyLB(cl, 1:6, function(x) x^2)), (1:6)^2))
check("parLapplyLB", identical(unlist(parallel::parLapplyLB(cl, 1:6, sqrt)), sqrt(1:6)))
check("clusterEvalQ", length(parallel::clusterEvalQ(cl, Sys.getpid())) == 2L)
check_error("remote errors", parallel::clusterEvalQ(cl, elephant()), "could not find function \"elephant\"")
stop_cluster(cl)
check_error("stopped cluster", parallel::parLapply(cl, 1:2, identity), "cluster is no longer active")

# Promises, settled on later's event loop from libmirai's completion callback (no polling).
if (requireNamespace("promises", quietly = TRUE) && requireNamespace("later", quietly = TRUE)) {
  daemons(1)
  run_until <- function(done) {
    t0 <- Sys.time()
    while (!done() && difftime(Sys.time(), t0, units = "secs") < 30) later::run_now(1)
  }
  got <- NULL
  promises::then(promises::as.promise(mirai({ Sys.sleep(0.2); 21 * 2 })), function(v) got <<- v)
  run_until(function() !is.null(got))
  check("promise fulfilled", identical(got, 42))
  rejected <- NULL
  promises::then(promises::as.promise(mirai(stop("nope"))), onRejected = function(e) rejected <<- conditionMessage(e))
  run_until(function() !is.null(rejected))
  check("miraiError rejects", identical(rejected, "Error: nope"))
  timed <- NULL
  promises::then(promises::as.promise(mirai(Sys.sleep(5), .timeout = 100)), onRejected = function(e) timed <<- conditionMessage(e))
  run_until(function() !is.null(timed))
  check("timeout rejects", identical(timed, "5 | Timed out"))
  done <- mirai(5)
  done[]
  late <- NULL
  promises::then(promises::as.promise(done), function(v) late <<- v)
  run_until(function() !is.null(late))
  check("already resolved mirai", identical(late, 5))
  all <- NULL
  promises::then(promises::as.promise(mirai_map(1:3, function(x) x * 10)), function(v) all <<- v)
  run_until(function() !is.null(all))
  check("mirai_map promise", identical(unlist(all), c(10, 20, 30)))
  fulfilled <- list()
  rejected <- 0L
  mp <- mirai_map(list(1, "a", 3), function(x) x + 1,
                  .promise = list(function(v) fulfilled[[length(fulfilled) + 1L]] <<- v, function(e) rejected <<- rejected + 1L))
  run_until(function() length(fulfilled) + rejected == 3L)
  check("mirai_map .promise handlers", setequal(unlist(fulfilled), c(2, 4)) && rejected == 1L)
  # is.promising is extensible from promises 1.3 on (Debian's 1.2.0.1 hard-codes its classes).
  if ("UseMethod" %in% all.names(body(promises::is.promising))) check("is.promising", promises::is.promising(mirai(1)))
  daemons(0)
}

# Large vectors are unserialized into huge pages (where the kernel gives them on request), at the
# host and at the daemon: the mapping holding the vector's data carries the "hg" flag (for a
# 100 MB vector, not for a small one).
vm_flags_of <- function(x) {
  # The middle of the vector's data.
  addr <- as.numeric(sub("^<0x(.*)>$", "0x\\1", tracemem(x))) + as.numeric(object.size(x)) / 2
  untracemem(x)
  smaps <- readLines("/proc/self/smaps")
  heads <- grep("^[0-9a-f]+-[0-9a-f]+ ", smaps)
  bounds <- vapply(strsplit(sub(" .*", "", smaps[heads]), "-"), function(v) as.numeric(paste0("0x", v)), numeric(2))
  at <- heads[bounds[1, ] <= addr & addr < bounds[2, ]]
  strsplit(sub("^VmFlags: *", "", grep("^VmFlags", smaps[at:length(smaps)], value = TRUE)[1L]), " ")[[1L]]
}
if (file.exists("/proc/self/smaps") && capabilities("profmem") &&
    grepl("[madvise]", readLines("/sys/kernel/mm/transparent_hugepage/enabled"), fixed = TRUE)) {
  daemons(1)
  big <- mirai(runif(1.25e7))[]
  check("a large result is read into huge pages", "hg" %in% vm_flags_of(big))
  check("a large task is read into huge pages at the daemon",
        "hg" %in% mirai(f(x), x = big, f = vm_flags_of)[])
  check("a small result is not", !"hg" %in% vm_flags_of(mirai(runif(1e5))[]))
  rm(big)
  daemons(0)
}

daemons(1, cleanup = FALSE, .compute = "dirty")
check("cleanup = FALSE keeps what a task left",
      identical(mirai({ assign("left", 1, .GlobalEnv); options(digits = 5); 1 }, .compute = "dirty")[], 1) &&
        identical(mirai(list(exists("left"), getOption("digits")), .compute = "dirty")[], list(TRUE, 5L)))
daemons(0, .compute = "dirty")

with(daemons(1), check("with(daemons())", identical(mirai(7)[], 7)))
check("with() resets", !daemons_set())

finish("r-tests")
