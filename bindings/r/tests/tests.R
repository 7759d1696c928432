# Tests of the mirai R package on libmirai. Run: Rscript bindings/r/tests/tests.R
library(mirai)

passed <- 0L
failed <- 0L
check <- function(what, ok) {
  if (isTRUE(ok)) {
    passed <<- passed + 1L
  } else {
    failed <<- failed + 1L
    cat("FAILED:", what, "\n")
  }
}
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
check("nextcode", identical(nextcode(c(5, 19, 20)), c("5 | Timed out", "19 | Connection reset", "20 | Operation canceled")))
check("local_url", grepl("^abstract://[A-Za-z0-9]{12}$", local_url()))
check("local_url tcp", identical(local_url(tcp = TRUE, port = 5555), "tcp://127.0.0.1:5555"))

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
check("on_daemon() TRUE remotely", isTRUE(mirai(mirai::on_daemon())[]))

# Maps.
mp <- mirai_map(1:9, function(x) x^2)
check("map flat", identical(mp[.flat], (1:9)^2))
named <- mirai_map(c(a = 1, b = 2), function(x) x + 1)[]
check("map keeps names", identical(names(named), c("a", "b")))
df <- data.frame(x = 1:3, y = 4:6)
check("map over data frame rows", identical(unlist(mirai_map(df, function(x, y) x + y)[]), c(5L, 7L, 9L)))
check_error("map .stop", mirai_map(list(1, "a", 2), function(x) x + 1)[.stop], "In index 2")
check_error("map .flat with mixed types", mirai_map(list(1, "a"), identity)[.flat], "differing type")

# everywhere.
pids <- everywhere(Sys.getpid())[]
check("everywhere reaches each daemon once", length(unique(unlist(pids))) == 2L)
everywhere(helper <- function(x) x * 10)
check("everywhere state survives cleanup", identical(mirai(helper(2))[], 20))

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
  check("ssh daemon connected", status()$connections == 2L)
  daemons(0)
  daemons(url = "tcp://127.0.0.1:0")
  launch_remote(1, remote = cluster_config(options = "#SBATCH --partition=debug\n#SBATCH --output=/dev/null", rscript = rscript))
  t0 <- Sys.time()
  while (status()$connections < 1L && difftime(Sys.time(), t0, units = "secs") < 60) Sys.sleep(0.1)
  check("Slurm daemon serves", identical(mirai(5)[], 5))
}
daemons(0)

# Custom serialization of a class backed by an external pointer, both ways.
cfg <- serial_config("ptrobj",
                     function(x) serialize(attr(x, "value"), NULL),
                     function(r) structure(methods::new("externalptr"), class = "ptrobj", value = unserialize(r), restored = TRUE))
check_error("serial_config checks its functions", serial_config("a", 1, 2), "must be functions")
daemons(1, serial = cfg)
obj <- structure(methods::new("externalptr"), class = "ptrobj", value = list(a = 1))
check("sfunc/ufunc on the daemon", isTRUE(mirai(isTRUE(attr(obj, "restored")) && attr(obj, "value")$a == 1, obj = obj)[]))
back <- mirai(obj, obj = obj)[]
check("sfunc/ufunc on the way back", inherits(back, "ptrobj") && isTRUE(attr(back, "restored")) && identical(attr(back, "value"), list(a = 1)))
daemons(0)
register_serial("ptrobj", cfg$sfunc[[1]], cfg$ufunc[[1]])
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
  # is.promising is extensible from promises 1.3 on (Debian's 1.2.0.1 hard-codes its classes).
  if ("UseMethod" %in% all.names(body(promises::is.promising))) check("is.promising", promises::is.promising(mirai(1)))
  daemons(0)
}

with(daemons(1), check("with(daemons())", identical(mirai(7)[], 7)))
check("with() resets", !daemons_set())

cat(sprintf("r-tests: %d passed, %d failed\n", passed, failed))
if (failed > 0L) quit(status = 1L)
