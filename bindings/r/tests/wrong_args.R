# Wrong arguments for every exported function and user-reachable S3 method of the mirai R
# package: each must give an R error (or mirai's documented result), never crash or hang.
# Run: Rscript bindings/r/tests/wrong_args.R
#
# The cases run in child R processes (this same file, run with `--child DIR`), many to a child.
# A child writes "S id" before each case and "R id ..." after it, so when a child dies or
# stalls, the case it had started is the culprit; the rest go to a new child. Every process a
# child starts carries its WA_MARK in the environment, so exactly those can be found and killed.
# Local daemons are started through a counting wrapper that kills its launcher past a few
# launches: an endless launch loop ends at once instead of filling the machine with R processes.
# Set WA_REPORT=<file> to get every case's outcome as tab-separated lines, WA_ONLY=<regex> to run
# only the cases whose code matches.

self_path <- local({
  arg <- grep("^--file=", commandArgs(FALSE), value = TRUE)
  if (length(arg)) normalizePath(sub("^--file=", "", arg[1L])) else "bindings/r/tests/wrong_args.R"
})
if (!file.exists(self_path)) stop("run this file with Rscript (its children run it again by its path)")
trailing <- commandArgs(TRUE)
source(file.path(dirname(self_path), "harness.R"))

one_line <- function(x) substr(gsub("[\t\r\n]+", " ", paste(x, collapse = " ")), 1L, 300L)

# ---- the child: runs cases ----------------------------------------------------------------

# State a case may leave behind is undone after it: every compute profile (read from the
# package's internal registry, the only place that lists them all), the current profile, a
# registered serialization, sinks. Profiles are closed without telling daemons to exit.
teardown <- function() {
  st <- get(".state", envir = asNamespace("mirai"))
  for (name in ls(st$profiles, all.names = TRUE)) try(daemons(0, .compute = name), silent = TRUE)
  st$cp <- "default"
  st$serial <- NULL
  while (sink.number() > 0L) sink()
  if (sink.number(type = "message") != 2L) try(sink(type = "message"), silent = TRUE)
  if (exists("CL", envir = globalenv(), inherits = FALSE)) rm("CL", envir = globalenv())
}

setups <- c(
  none = "",
  host = "daemons(url = local_url())",   # a host no daemon dials: tasks queue, nothing runs
  sync = "daemons(sync = TRUE)",         # tasks run in the child itself
  cluster = "CL <- make_cluster(1, url = local_url())"
)

# Objects the cases pass: closed ones (their profile reset), a foreign pointer, a miraiError.
prepare_child <- function() {
  ns <- asNamespace("mirai")
  # Launches of local and ephemeral daemons go through the counting wrapper. Without this
  # seam a runaway launch would start real R processes without end, so refuse to run.
  if (!exists("rscript_path", envir = ns, inherits = FALSE)) stop("mirai:::rscript_path is gone: cannot guard launches")
  wrapper <- Sys.getenv("WA_WRAPPER")
  utils::assignInNamespace("rscript_path", function() wrapper, ns = "mirai")
  g <- globalenv()
  g$forge <- function(x, cls) {
    class(x) <- cls
    x
  }
  # A fresh pointer on every use: a case setting its class must not change the next case's.
  makeActiveBinding("XPTR", function() getDLLRegisteredRoutines("stats")$.Call[[1L]]$address, g)
  daemons(url = local_url(), .compute = "wa_closed")
  g$CLOSED_MIRAI <- mirai(1, .compute = "wa_closed")
  g$CLOSED_MAP <- mirai_map(1:2, identity, .compute = "wa_closed")
  g$CLOSED_HOST <- nextget("dispatcher", .compute = "wa_closed")
  # The host pointer itself, should nextget() stop handing it out.
  if (typeof(g$CLOSED_HOST) != "externalptr") g$CLOSED_HOST <- get(".state", envir = ns)$profiles$wa_closed$host
  if (typeof(g$CLOSED_HOST) != "externalptr") stop("cannot get a profile's host pointer")
  daemons(0, .compute = "wa_closed")
  g$CLOSED_CLUSTER <- make_cluster(1, url = local_url())
  stop_cluster(g$CLOSED_CLUSTER)
  # A mirai whose profile was reset and then set again under the same name.
  daemons(url = local_url(), .compute = "wa_reset")
  reset_mirai <- mirai(1, .compute = "wa_reset")
  daemons(0, .compute = "wa_reset")
  makeActiveBinding("RESET_MIRAI", function() {
    if (!daemons_set("wa_reset")) daemons(url = local_url(), .compute = "wa_reset")
    reset_mirai
  }, g)
  daemons(sync = TRUE, .compute = "wa_err")
  g$MIRAI_ERROR <- mirai(stop("boom"), .compute = "wa_err")[]
  daemons(0, .compute = "wa_err")
  teardown()
}

launches <- function() {
  f <- Sys.getenv("WA_LAUNCHES")
  if (file.exists(f)) length(readLines(f, warn = FALSE)) else 0L
}

run_case <- function(setup, code) {
  cat("", file = Sys.getenv("WA_LAUNCHES"))
  on.exit(teardown())
  made <- tryCatch({
    eval(parse(text = setups[[setup]]), globalenv())
    NULL
  }, error = function(e) e)
  if (!is.null(made)) return(list(kind = "setup", true = FALSE, msg = conditionMessage(made)))
  warned <- character()
  tryCatch(withCallingHandlers({
    v <- eval(parse(text = code), new.env(parent = globalenv()))
    list(kind = "value", true = isTRUE(v),
         msg = paste0(class(v)[1L], if (length(warned)) paste0(" [warning: ", warned[1L], "]")))
  }, warning = function(w) {
    warned <<- c(warned, conditionMessage(w))
    invokeRestart("muffleWarning")
  }), error = function(e) list(kind = "error", true = FALSE, msg = conditionMessage(e)))
}

child_main <- function(dir) {
  cases <- readRDS(file.path(dir, "cases.rds"))
  out <- file(file.path(dir, "results"), open = "a")
  emit <- function(...) {
    writeLines(paste(..., sep = "\t"), out)
    flush(out)
  }
  emit("P", Sys.getpid())
  started <- tryCatch({
    suppressPackageStartupMessages(library(mirai))
    prepare_child()
    TRUE
  }, error = function(e) {
    emit("H", one_line(conditionMessage(e)))
    FALSE
  })
  if (!started) quit(save = "no", status = 3L)
  for (i in seq_len(nrow(cases))) {
    emit("S", cases$id[i])
    message("== case ", cases$id[i], ": ", cases$code[i])
    r <- run_case(cases$setup[i], cases$code[i])
    emit("R", cases$id[i], r$kind, r$true, launches(), one_line(r$msg))
  }
  close(out)
  quit(save = "no", status = 0L)
}

if (length(trailing) == 2L && trailing[1L] == "--child") child_main(trailing[2L])

# ---- the cases ----------------------------------------------------------------------------

BASIC <- c("NULL", "NA", "NA_character_", "0", "-1", "1.5", "1e10", "NaN", "Inf", '"a"', '""',
           'c("a", "b")', 'list(1, "a", NULL)', "list()", "new.env()", "identity", "XPTR",
           'new("externalptr")', "as.raw(1:3)", "character(0)")
CLOSED <- c("CLOSED_MIRAI", "CLOSED_MAP", "CLOSED_HOST", "CLOSED_CLUSTER", "RESET_MIRAI")
ALL <- c(BASIC, CLOSED)
# Values a class can be put on without changing a shared object (environments and the closed
# host are references: forge() would reclass them for every later case).
FORGEABLE <- setdiff(ALL, c("NULL", "CLOSED_MIRAI", "CLOSED_HOST", "RESET_MIRAI"))
MIRAI_ARGS <- c("CLOSED_MIRAI", "RESET_MIRAI")
LISTS <- c('list(1, "a", NULL)', "list()")

cases <- list()
covered <- character()
# One case per argument: `@` in the template becomes the argument's code.
add <- function(fun, formal, setup, tmpl, args = ALL, expect = "any") {
  e <- if (is.function(expect)) vapply(args, expect, "") else rep(expect, length(args))
  code <- vapply(args, function(a) gsub("@", a, tmpl, fixed = TRUE), "")
  n <- length(args)
  cases[[length(cases) + 1L]] <<- list(fun = rep(fun, n), formal = rep(formal, n), setup = rep(setup, n),
                                       code = unname(code), expect = unname(e))
  covered <<- union(covered, paste(fun, formal))
}
# An error is required, except for the arguments listed (valid values among the wrong ones).
error_unless <- function(ok) function(a) if (a %in% ok) "any" else "error"

# The issues reported by users, literally.
add("collect_mirai", "x", "none", "identical(collect_mirai(list(1, 2)), list(1, 2))", "", "true")
add("collect_mirai", "x", "none", 'identical(collect_mirai("a"), "a")', "", "true")
add("collect_mirai", "x", "none", "identical(collect_mirai(list(NULL)), list(NULL))", "", "true")
add("call_mirai", "x", "none", "identical(call_mirai(list(1)), list(1))", "", "true")
add("stop_mirai", "x", "none", 'identical(stop_mirai("a"), FALSE)', "", "true")
add("launch_local", "n", "host", 'launch_local("x")', "", "error")

# Non-mirai values pass through call_mirai (invisibly), collect_mirai, stop_mirai (FALSE, one
# per element of a list) and unresolved (FALSE), as in R's mirai; closed mirai are resolved
# (to errorValue 19).
add("call_mirai", "x", "none", "{x <- @; v <- withVisible(call_mirai(x)); identical(v$value, x) && !v$visible}", ALL, "true")
add("collect_mirai", "x", "none", "{x <- @; identical(collect_mirai(x), x)}", setdiff(ALL, c(CLOSED, "NULL")), "true")
add("collect_mirai", "x", "none", "is.null(collect_mirai(NULL))", "", "true")
add("collect_mirai", "x", "none", "is_error_value(collect_mirai(@))", MIRAI_ARGS, "true")
add("collect_mirai", "x", "none", "all(vapply(collect_mirai(CLOSED_MAP), is_error_value, NA))", "", "true")
add("collect_mirai", "x", "none", "identical(collect_mirai(CLOSED_HOST), CLOSED_HOST)", "", "true")
add("collect_mirai", "x", "none", "collect_mirai(CLOSED_CLUSTER)", "")
add("collect_mirai", "options", "none", "collect_mirai(list(1, 2), options = @)")
add("collect_mirai", "options", "none", "collect_mirai(CLOSED_MAP, options = @)")
add("stop_mirai", "x", "none", "identical(stop_mirai(@), FALSE)", setdiff(ALL, c(LISTS, "CLOSED_MAP", "CLOSED_CLUSTER")), "true")
add("stop_mirai", "x", "none", "{x <- @; identical(stop_mirai(x), rep(FALSE, length(x)))}", c(LISTS, "CLOSED_MAP", "CLOSED_CLUSTER"), "true")
add("unresolved", "x", "none", "identical(unresolved(@), FALSE)", ALL, "true")
for (f in c("is_mirai", "is_mirai_map", "is_mirai_error", "is_mirai_interrupt", "is_error_value")) {
  yes <- switch(f, is_mirai = MIRAI_ARGS, is_mirai_map = "CLOSED_MAP", character())
  for (a in ALL) add(f, "x", "none", sprintf("identical(%s(@), %s)", f, a %in% yes), a, "true")
}
add("race_mirai", "x", "none", "race_mirai(@)", ALL, "error")
add("race_mirai", "x", "host", "race_mirai(@)")
add("race_mirai", ".compute", "host", "race_mirai(list(1), .compute = @)")

# Profiles.
add("daemons", "n", "none", "daemons(@)", ALL, error_unless(c("NULL", "0", "1.5")))
add("daemons", "url", "none", "daemons(url = @)", ALL, "error")
add("daemons", "url", "none", "daemons(1, url = @)", setdiff(ALL, "NULL"), "error")
add("daemons", "remote", "none", "daemons(url = local_url(), remote = @)")
add("daemons", "remote", "none", "daemons(1, url = local_url(), remote = @)")
add("daemons", "dispatcher", "none", "daemons(url = local_url(), dispatcher = @)", ALL, "error")
# Unnamed `...` (the formals before it given by position), with and without local daemons:
# what launched daemons are given must still let them connect.
add("daemons", "...", "none", "daemons(1, local_url(), NULL, TRUE, @)")
add("daemons", "...", "none", "daemons(1, NULL, NULL, TRUE, @)", c("0", "NA", '"a"'))
add("daemons", "...", "none", "daemons(1, maxtasks = @)", c("NA", "-1", "NaN"))
add("daemons", "sync", "none", "daemons(url = local_url(), sync = @)")
add("daemons", "seed", "none", "daemons(url = local_url(), seed = @)")
add("daemons", "seed", "none", "daemons(sync = TRUE, seed = @)")
add("daemons", "memory", "none", "daemons(url = local_url(), memory = @)")
add("daemons", "serial", "none", "{daemons(url = local_url(), serial = @); mirai(1)}")
add("daemons", "tls", "none", 'daemons(url = "tls+tcp://127.0.0.1:0", tls = @)')
add("daemons", "pass", "none", 'daemons(url = "tls+tcp://127.0.0.1:0", tls = c("a", "b"), pass = @)')
add("daemons", ".compute", "none", "daemons(url = local_url(), .compute = @)")
add("daemons", ".compute", "none", "daemons(sync = TRUE, .compute = @)")
add("daemons", ".compute", "host", "daemons(0, .compute = @)")
add("daemons_set", ".compute", "host", "daemons_set(@)")
add("require_daemons", ".compute", "none", "require_daemons(@)", ALL, "error")
add("require_daemons", ".compute", "host", "require_daemons(@)")
add("require_daemons", "call", "host", "require_daemons(call = @)")
add("with_daemons", ".compute", "host", "with_daemons(@, 1)")
add("with_daemons", "expr", "host", 'with_daemons("default", @)')
add("local_daemons", ".compute", "host", "local_daemons(@)")
add("local_daemons", "frame", "host", 'local_daemons("default", frame = @)')
add("status", ".compute", "host", "status(@)")
add("info", ".compute", "host", "info(@)")
add("nextget", "x", "host", "nextget(@)")
add("nextget", ".compute", "host", 'nextget("url", .compute = @)')
add("nextstream", ".compute", "host", "nextstream(@)")
add("on_daemon", "(none)", "none", "on_daemon(@)", ALL, "error")
add("nextcode", "xc", "none", "nextcode(@)")
add("host_url", "tls", "none", "host_url(@)")
add("host_url", "port", "none", "host_url(port = @)")
add("local_url", "tcp", "none", "local_url(@)")
add("local_url", "port", "none", "local_url(TRUE, @)")

# Launching. A count that is not a whole number must not start daemons without end.
add("launch_local", "n", "host", "launch_local(@)", ALL, error_unless(c("0", "1.5")))
add("launch_local", "...", "host", "launch_local(1, @)")
add("launch_local", ".compute", "host", "launch_local(1, .compute = @)")
add("daemon", "url", "none", "daemon(@)", ALL, "error")
# A URL nobody listens on: the dial is refused once the other arguments have been read.
for (formal in c("dispatcher", "asyncdial", "autoexit", "cleanup", "output", "idletime", "walltime",
                 "maxtasks", "tlscert", "rs")) {
  add("daemon", formal, "none", sprintf('daemon("tcp://127.0.0.1:1", %s = @)', formal))
}
add("daemon", "...", "none", 'daemon("tcp://127.0.0.1:1", TRUE, @)')
add("remote_config", "command", "none", "remote_config(command = @)")
add("remote_config", "args", "none", "remote_config(args = @)")
add("remote_config", "rscript", "none", "remote_config(rscript = @)")
add("remote_config", "quote", "none", "remote_config(quote = @)")
add("launch_remote", "n", "host", "launch_remote(@)")
add("launch_remote", "n", "host", 'launch_remote(@, remote_config(command = "/nonexistent/wa"))')
add("launch_remote", "remote", "host", "launch_remote(1, @)")
add("launch_remote", "...", "host", "launch_remote(1, remote_config(), @)")
add("launch_remote", ".compute", "host", "launch_remote(1, .compute = @)")
add("remote_config", "command", "host", "launch_remote(1, remote_config(command = @))")
add("remote_config", "args", "host", 'launch_remote(1, remote_config(command = "/nonexistent/wa", args = @))')
add("remote_config", "rscript", "host", 'launch_remote(1, remote_config(command = "/nonexistent/wa", rscript = @))')
add("remote_config", "quote", "host", 'launch_remote(1, remote_config(command = "/nonexistent/wa", quote = @))')
# `ssh` here is a stand-in that fails (see fake_bin): nothing leaves the machine.
add("ssh_config", "remotes", "none", "ssh_config(@)")
add("ssh_config", "remotes", "host", "launch_remote(1, ssh_config(@))")
for (formal in c("tunnel", "timeout", "command", "rscript")) {
  add("ssh_config", formal, "host", sprintf('launch_remote(1, ssh_config("ssh://127.0.0.1:1", %s = @))', formal))
}
for (formal in c("command", "options", "rscript", "scheduler")) {
  add("cluster_config", formal, "none", sprintf("cluster_config(%s = @)", formal))
  add("cluster_config", formal, "host", sprintf("launch_remote(1, cluster_config(%s = @))", formal))
}
add("http_config", "url", "none", "http_config(@)")
add("http_config", "url", "host", 'launch_remote(1, http_config(url = @, data = "%s%e"))')
for (formal in c("method", "headers", "cookie", "token")) {
  add("http_config", formal, "host", sprintf('launch_remote(1, http_config(url = "http://127.0.0.1:1/", %s = @, data = "%%s%%e"))', formal))
}
add("http_config", "data", "host", 'launch_remote(1, http_config(url = "http://127.0.0.1:1/", data = @))')

# Clusters.
add("make_cluster", "n", "none", "make_cluster(@, url = local_url())")
add("make_cluster", "n", "none", "make_cluster(@)")
add("make_cluster", "url", "none", "make_cluster(1, url = @)")
add("make_cluster", "remote", "none", "make_cluster(1, url = local_url(), remote = @)")
add("make_cluster", "...", "none", "make_cluster(1, local_url(), NULL, @)")
add("stop_cluster", "cl", "host", "stop_cluster(@)")
add("[.miraiCluster", "i", "none", "CLOSED_CLUSTER[@]")
add("[.miraiCluster", "x", "none", 'forge(@, c("miraiCluster", "cluster"))[1]', FORGEABLE)
add("print.miraiCluster", "x", "none", 'print(forge(@, c("miraiCluster", "cluster")))', FORGEABLE)
add("print.miraiNode", "x", "none", 'print(forge(@, "miraiNode"))', FORGEABLE)
add("print.miraiCluster", "x", "none", "print(CLOSED_CLUSTER)", "")
add("print.miraiNode", "x", "none", "print(CLOSED_CLUSTER[[1]])", "")
add("sendData.miraiNode", "data", "cluster", "parallel:::sendData(CL[[1]], @)")
add("sendData.miraiNode", "node", "none", 'parallel:::sendData(forge(@, "miraiNode"), list())', FORGEABLE)
add("recvData.miraiNode", "node", "cluster", "parallel:::recvData(CL[[1]])", "")
add("recvData.miraiNode", "node", "none", 'parallel:::recvData(forge(@, "miraiNode"))', FORGEABLE)
add("recvOneData.miraiCluster", "cl", "cluster", "parallel:::recvOneData(CL)", "")
add("recvOneData.miraiCluster", "cl", "none", 'parallel:::recvOneData(forge(@, c("miraiCluster", "cluster")))', FORGEABLE)
add("stopCluster.miraiCluster", "cl", "host", 'parallel::stopCluster(forge(@, c("miraiCluster", "cluster")))', FORGEABLE)
add("stopCluster.miraiCluster", "cl", "none", "parallel::stopCluster(CLOSED_CLUSTER)", "")
add("sendData.miraiNode", "node", "none", "parallel::parLapply(CLOSED_CLUSTER, 1:2, identity)", "", "error")
add("sendData.miraiNode", "node", "none", "parallel::clusterEvalQ(CLOSED_CLUSTER, 1)", "", "error")

# Tasks.
add("mirai", ".expr", "host", "mirai(@)")
add("mirai", "...", "host", "mirai(1, @)")
add("mirai", "...", "host", "mirai(1, a = @)")
add("mirai", ".args", "host", "mirai(1, .args = @)")
add("mirai", ".timeout", "host", "mirai(1, .timeout = @)")
add("mirai", ".compute", "host", "mirai(1, .compute = @)")
add("mirai", "...", "sync", "mirai(a, a = @)[]")
add("mirai", ".timeout", "sync", "mirai(1, .timeout = @)[]")
add("try_mirai", ".expr", "host", "try_mirai(@)")
add("try_mirai", "...", "host", "try_mirai(1, @)")
add("try_mirai", ".args", "host", "try_mirai(1, .args = @)")
add("try_mirai", ".timeout", "host", "try_mirai(1, .timeout = @)")
add("try_mirai", ".compute", "host", "try_mirai(1, .compute = @)")
add("mirai_map", ".x", "host", "mirai_map(@, identity)")
add("mirai_map", ".x", "sync", "mirai_map(@, identity)[]")
add("mirai_map", ".f", "host", "mirai_map(1:2, @)", ALL, error_unless("identity"))
add("mirai_map", "...", "host", "mirai_map(1:2, identity, @)")
add("mirai_map", ".args", "host", "mirai_map(1:2, identity, .args = @)")
add("mirai_map", ".promise", "host", "mirai_map(1:2, identity, .promise = @)")
add("mirai_map", ".compute", "host", "mirai_map(1:2, identity, .compute = @)")
add("everywhere", ".expr", "host", "everywhere(@)")
add("everywhere", "...", "host", "everywhere(1, @)")
add("everywhere", ".args", "host", "everywhere(1, .args = @)")
add("everywhere", ".min", "host", "everywhere(1, .min = @)")
add("everywhere", ".compute", "host", "everywhere(1, .compute = @)")
add("serial_config", "class", "none", "serial_config(@, identity, identity)")
add("serial_config", "sfunc", "none", 'serial_config("a", @, identity)', ALL, error_unless("identity"))
add("serial_config", "ufunc", "none", 'serial_config("a", identity, @)', ALL, error_unless("identity"))
add("register_serial", "class", "none", "register_serial(@, identity, identity)")
add("register_serial", "sfunc", "none", 'register_serial("a", @, identity)', ALL, error_unless("identity"))
add("register_serial", "ufunc", "none", 'register_serial("a", identity, @)', ALL, error_unless("identity"))

# The S3 methods, through dispatch: on closed objects, and on wrong values given the class.
add("[.mirai", "i", "none", "is_error_value(CLOSED_MIRAI[@])", ALL, "true")
add("[.mirai", "x", "none", 'forge(@, "mirai")[]', FORGEABLE)
add("[.mirai_map", "...", "none", "CLOSED_MAP[@]")
add("[.mirai_map", "x", "none", 'forge(@, "mirai_map")[]', FORGEABLE)
add("[.mirai_map", "x", "none", 'forge(@, "mirai_map")[.flat]', FORGEABLE)
add("collect_mirai", "x", "none", 'collect_mirai(forge(@, "mirai"))', FORGEABLE)
add("call_mirai", "x", "none", 'call_mirai(forge(@, "mirai"))', FORGEABLE)
add("stop_mirai", "x", "none", 'stop_mirai(forge(@, "mirai"))', FORGEABLE)
add("unresolved", "x", "none", 'unresolved(forge(@, "mirai"))', FORGEABLE)
add("race_mirai", "x", "host", 'race_mirai(forge(@, "mirai"))', FORGEABLE)
for (cls in c("mirai", "mirai_map", "errorValue", "miraiError", "miraiInterrupt", "unresolvedValue",
              "miraiDaemons", "miraiLaunchCmd")) {
  add(paste0("print.", cls), "x", "none", sprintf('print(forge(@, "%s"))', cls), FORGEABLE)
}
add("print.mirai", "x", "none", "print(CLOSED_MIRAI)", "")
add("print.mirai_map", "x", "none", "print(CLOSED_MAP)", "")
add("$.miraiError", "x", "none", 'forge(@, "miraiError")$message', FORGEABLE)
add(".DollarNames.miraiError", "x", "none", 'utils::.DollarNames(forge(@, "miraiError"), "")', FORGEABLE)
add(".DollarNames.miraiError", "pattern", "none", "utils::.DollarNames(MIRAI_ERROR, @)")
add("conditionMessage.miraiError", "c", "none", 'conditionMessage(forge(@, "miraiError"))', FORGEABLE)
add("conditionCall.miraiError", "c", "none", 'conditionCall(forge(@, "miraiError"))', FORGEABLE)
add("with.miraiDaemons", "data", "none", 'with(forge(@, "miraiDaemons"), 1)', FORGEABLE)
add("with.miraiDaemons", "data", "none", 'with(forge(@, c("miraiDaemons", "wa_with")), 1)', FORGEABLE)
add("with.miraiDaemons", "expr", "none", 'with(daemons(url = local_url(), .compute = "wa_with"), @)')
if (requireNamespace("promises", quietly = TRUE)) {
  add("as.promise.mirai", "x", "none", 'promises::as.promise(forge(@, "mirai"))', FORGEABLE)
  add("as.promise.mirai_map", "x", "none", 'promises::as.promise(forge(@, "mirai_map"))', FORGEABLE)
  add("as.promise.mirai", "x", "none", "promises::as.promise(CLOSED_MIRAI)", "")
  add("as.promise.mirai_map", "x", "none", "promises::as.promise(CLOSED_MAP)", "")
  add("is.promising.mirai", "x", "none", 'promises::is.promising(forge(@, "mirai"))', FORGEABLE)
}

# Every formal of every export that no case above names gets the wrong values on its own, so a
# function or argument added later is not left out; `generic_base` holds the arguments that get
# such a call past its first checks.
generic_base <- c(daemons = "url = local_url(), ", daemon = '"tcp://127.0.0.1:1", ',
                  make_cluster = "1, url = local_url(), ", mirai = "1, ", try_mirai = "1, ", everywhere = "1, ",
                  mirai_map = "1:2, identity, ", launch_local = "1, ", launch_remote = "1, ",
                  serial_config = '"a", identity, identity, ', register_serial = '"a", identity, identity, ')
exports <- sort(getNamespaceExports("mirai"))
for (f in exports) {
  fn <- getExportedValue("mirai", f)
  if (!is.function(fn)) next # .flat, .progress, .stop: options, not functions
  formals_f <- setdiff(names(formals(fn)), "...")
  if (!length(formals_f) && !paste(f, "(none)") %in% covered) add(f, "(none)", "host", sprintf("%s(@)", f))
  base <- if (f %in% names(generic_base)) generic_base[[f]] else ""
  for (formal in formals_f) {
    if (!paste(f, formal) %in% covered) add(f, formal, "host", sprintf("%s(%s%s = @)", f, base, formal))
  }
}
cases <- as.data.frame(lapply(c(fun = "fun", formal = "formal", setup = "setup", code = "code", expect = "expect"),
                              function(col) unlist(lapply(cases, `[[`, col))), stringsAsFactors = FALSE)
# WA_ONLY=<regex>: run only the cases whose code matches (to look at one function).
if (nzchar(Sys.getenv("WA_ONLY"))) cases <- cases[grepl(Sys.getenv("WA_ONLY"), cases$code), ]
cases$id <- seq_len(nrow(cases))
for (code in unique(cases$code)) parse(text = code) # a typo in a case is this file's bug

# ---- the driver ---------------------------------------------------------------------------

CASE_SECONDS <- 10   # one case longer than this is a hang
MAX_LAUNCHES <- 3    # local daemons one case may start; the wrapper kills its launcher past it
MAX_PROCESSES <- 40  # processes of one child (its daemons still starting included): runaway
PARALLEL <- 2L
CHUNK <- 300L

run_id <- sprintf("%d%04d", Sys.getpid(), sample.int(9999L, 1L))
work <- file.path(tempdir(), "wrong_args")
dir.create(work, showWarnings = FALSE)
rscript <- file.path(R.home("bin"), "Rscript")
wrapper <- file.path(work, "rscript-wrapper")
writeLines(c(
  "#!/bin/sh",
  "# Counts launches; past the limit it kills the launching R process (its parent).",
  "echo launch >> \"$WA_LAUNCHES\"",
  sprintf("if [ \"$(wc -l < \"$WA_LAUNCHES\")\" -gt %d ]; then kill -9 \"$PPID\"; exit 1; fi", MAX_LAUNCHES),
  "exec \"$WA_RSCRIPT\" \"$@\""
), wrapper)
fake_bin <- file.path(work, "bin")
dir.create(fake_bin, showWarnings = FALSE)
writeLines(c("#!/bin/sh", "echo 'wrong_args: ssh is a stand-in here' >&2", "exit 255"), file.path(fake_bin, "ssh"))
Sys.chmod(c(wrapper, file.path(fake_bin, "ssh")), "755")

# Processes whose environment holds `WA_MARK=<mark>`.
marked <- function(mark) {
  needle <- paste0("WA_MARK=", mark, "\n")
  pids <- list.files("/proc", pattern = "^[0-9]+$")
  hit <- vapply(pids, function(p) {
    env <- tryCatch(suppressWarnings(readBin(file.path("/proc", p, "environ"), "raw", 1e6)), error = function(e) raw())
    if (!length(env)) return(FALSE)
    env[env == as.raw(0)] <- as.raw(10)
    grepl(needle, paste0(rawToChar(env), "\n"), fixed = TRUE, useBytes = TRUE)
  }, logical(1L))
  as.integer(pids[hit])
}
kill_marked <- function(mark) for (pid in marked(mark)) tools::pskill(pid, tools::SIGKILL)

jobs <- 0L
start_job <- function(rows) {
  jobs <<- jobs + 1L
  dir <- file.path(work, sprintf("job%04d", jobs))
  dir.create(dir)
  saveRDS(rows, file.path(dir, "cases.rds"))
  mark <- sprintf("%s_%04d", run_id, jobs)
  env <- c(paste0("WA_MARK=", mark), paste0("WA_LAUNCHES=", shQuote(file.path(dir, "launches"))),
           paste0("WA_RSCRIPT=", shQuote(rscript)), paste0("WA_WRAPPER=", shQuote(wrapper)),
           paste0("PATH=", shQuote(paste(fake_bin, Sys.getenv("PATH"), sep = ":"))))
  # Address space capped: a case that allocates without end fails there, not on the machine.
  script <- sprintf("ulimit -v 3000000; timeout -s KILL %d %s %s --child %s > %s 2> %s; echo $? > %s",
                    CASE_SECONDS * nrow(rows) + 60L, shQuote(rscript), shQuote(self_path), shQuote(dir),
                    shQuote(file.path(dir, "out")), shQuote(file.path(dir, "err")), shQuote(file.path(dir, "status")))
  system2("sh", c("-c", shQuote(script)), env = env, wait = FALSE)
  list(dir = dir, mark = mark, rows = rows, current = NA_integer_, since = Sys.time(), stalled = NA_character_)
}

read_lines <- function(path) if (file.exists(path)) readLines(path, warn = FALSE) else character()

outcomes <- list()
record <- function(id, kind, msg, launches = 0L, true = FALSE) {
  outcomes[[as.character(id)]] <<- list(id = id, kind = kind, msg = msg, launches = launches, true = true)
}

# The stderr a culprit left (after its "== case" line): the first lines say what happened
# (" *** caught segfault ***", the address), the last ones how the process ended.
culprit_output <- function(dir, id) {
  err <- read_lines(file.path(dir, "err"))
  at <- grep(sprintf("^== case %d:", id), err)
  if (length(at)) err <- err[-seq_len(at[length(at)])]
  err <- err[nzchar(trimws(err))]
  one_line(if (length(err) > 6L) c(head(err, 3L), "...", tail(err, 2L)) else err)
}

# Reads what a finished child reported; returns the cases still to run.
finish_job <- function(job) {
  kill_marked(job$mark)
  lines <- read_lines(file.path(job$dir, "results"))
  status <- suppressWarnings(as.integer(read_lines(file.path(job$dir, "status"))[1L]))
  started <- NA_integer_
  for (line in lines) {
    f <- strsplit(line, "\t", fixed = TRUE)[[1L]]
    if (f[1L] == "S") started <- as.integer(f[2L])
    if (f[1L] == "R") {
      record(as.integer(f[2L]), f[3L], if (length(f) >= 6L) f[6L] else "", as.integer(f[5L]), f[4L] == "TRUE")
      started <- NA_integer_
    }
    if (f[1L] == "H") {
      for (id in job$rows$id) record(id, "harness", paste("child could not start:", f[2L]))
      return(job$rows[0L, ])
    }
  }
  done <- as.integer(names(outcomes))
  if (!is.na(started)) {
    n_launch <- length(read_lines(file.path(job$dir, "launches")))
    kind <- if (!is.na(job$stalled)) job$stalled else if (n_launch > MAX_LAUNCHES) "runaway" else "crash"
    why <- switch(kind, hang = sprintf("no result after %d s", CASE_SECONDS),
                  runaway = sprintf("%d daemon launches (or %d+ processes) before it was killed", n_launch, MAX_PROCESSES),
                  sprintf("child exited with status %s", status))
    record(started, kind, paste0(why, " | ", culprit_output(job$dir, started)), n_launch)
    done <- c(done, started)
  } else if (!identical(status, 0L)) {
    rest <- setdiff(job$rows$id, done)
    if (!length(rest)) {
      # Every case ran, yet the child died: at exit (finalizers), after its last case.
      exit_failures[[length(exit_failures) + 1L]] <<- sprintf("child of cases %d-%d exited with status %s | %s",
        min(job$rows$id), max(job$rows$id), status, one_line(tail(read_lines(file.path(job$dir, "err")), 6L)))
    } else if (!length(lines)) {
      for (id in rest) record(id, "harness", sprintf("child died before starting (status %s)", status))
      return(job$rows[0L, ])
    }
  }
  job$rows[!job$rows$id %in% done, ]
}
exit_failures <- list()

run_all <- function(rows, chunk) {
  queue <- split(rows, (seq_len(nrow(rows)) - 1L) %/% chunk)
  running <- list()
  last_scan <- Sys.time()
  deadline <- Sys.time() + 900
  while (length(queue) || length(running)) {
    while (length(running) < PARALLEL && length(queue)) {
      running[[length(running) + 1L]] <- start_job(queue[[1L]])
      queue <- queue[-1L]
    }
    Sys.sleep(0.1)
    scan <- difftime(Sys.time(), last_scan, units = "secs") > 1
    if (scan) last_scan <- Sys.time()
    keep <- list()
    for (job in running) {
      if (file.exists(file.path(job$dir, "status")) && length(read_lines(file.path(job$dir, "status")))) {
        rest <- finish_job(job)
        if (nrow(rest)) queue <- c(list(rest), queue)
        next
      }
      lines <- read_lines(file.path(job$dir, "results"))
      last <- if (length(lines)) strsplit(lines[length(lines)], "\t", fixed = TRUE)[[1L]] else "P"
      now <- if (last[1L] == "S") as.integer(last[2L]) else NA_integer_
      if (!identical(now, job$current)) {
        job$current <- now
        job$since <- Sys.time()
      }
      pid <- as.integer(sub("^P\t", "", grep("^P\t", lines, value = TRUE)[1L]))
      stuck <- !is.na(now) && difftime(Sys.time(), job$since, units = "secs") > CASE_SECONDS
      runaway <- scan && length(marked(job$mark)) > MAX_PROCESSES
      if (is.na(job$stalled) && !is.na(pid) && (stuck || runaway || Sys.time() > deadline)) {
        job$stalled <- if (runaway) "runaway" else "hang"
        tools::pskill(pid, tools::SIGKILL)
      }
      keep[[length(keep) + 1L]] <- job
    }
    running <- keep
  }
}

t0 <- Sys.time()
run_all(cases, CHUNK)
# Each crash, hang or runaway that was not the first case of its child is run again alone, so
# its reproduction needs nothing that ran before it.
bad <- Filter(function(o) o$kind %in% c("crash", "hang", "runaway"), outcomes)
first_ids <- vapply(list.files(work, pattern = "^job", full.names = TRUE), function(d) {
  min(readRDS(file.path(d, "cases.rds"))$id)
}, 0)
again <- setdiff(vapply(bad, `[[`, 0L, "id"), first_ids)
alone <- list()
if (length(again)) {
  saved <- outcomes
  run_all(cases[cases$id %in% again, ], 1L)
  for (id in again) alone[[as.character(id)]] <- outcomes[[as.character(id)]]$kind
  outcomes <- saved
}
# Nothing a child started may outlive the test (each job's processes went when it ended; this
# catches one that was starting just then).
for (k in seq_len(jobs)) kill_marked(sprintf("%s_%04d", run_id, k))

# ---- judging ------------------------------------------------------------------------------

# Messages that say nothing about which argument is wrong or why: R internals showing through.
UNCLEAR <- paste(c(
  "use of NULL environment", "invalid 'type' \\(", "not subsettable", "\\$ operator is invalid",
  "can only be applied to a", "unimplemented type", "missing value where TRUE/FALSE needed",
  "argument is of length zero", "the condition has length", "in coercion to 'logical\\(1\\)'",
  "argument is not interpretable as logical", "attempt to select (less|more) than one element",
  "subscript out of bounds", "non-character argument", "non-numeric argument", "invalid argument to unary",
  "cannot coerce type", "cannot be coerced to type", "default method not implemented", "invalid 'envir'",
  "invalid first argument", "first argument has length", "EXPR must be a length 1", "subsetting an environment",
  "attempt to apply non-function", "Incorrect number of arguments", "invalid 'times' argument",
  "attempt to set an attribute on NULL", "argument of length 0", "zero-length variable name",
  "invalid subscript type", "requires vector arguments", "NA/NaN argument", "no applicable method",
  "could not find function", "object '.*' not found", "invalid argument type", "non-function",
  "invalid 'length' argument", "invalid 'x' argument", "must be coercible to non-negative integer",
  "replacement has length zero", "arguments imply differing number"
), collapse = "|")
STACK <- "C stack usage|nested too deeply|infinite recursion|protection stack overflow"
# R's check on what STRING_ELT() returned: the C code read element 0 of a zero-length vector
# (past its end); that it found R's NULL this time is luck, not a check.
OUT_OF_BOUNDS <- "CHAR\\(\\) can only be applied to a 'CHARSXP'"

unclear <- list()
report <- character()
for (i in seq_len(nrow(cases))) {
  cs <- cases[i, ]
  o <- outcomes[[as.character(cs$id)]]
  if (is.null(o)) o <- list(kind = "harness", msg = "never ran", launches = 0L, true = FALSE)
  kind <- o$kind
  if (kind == "error" && grepl(STACK, o$msg)) kind <- "stack"
  if (kind == "error" && grepl(OUT_OF_BOUNDS, o$msg)) kind <- "out-of-bounds read"
  if (kind == "value" && o$launches > MAX_LAUNCHES) kind <- "runaway"
  bad_kind <- kind %in% c("crash", "hang", "runaway", "stack", "out-of-bounds read", "harness", "setup")
  fail_why <- if (bad_kind) kind
              else if (cs$expect == "true" && !isTRUE(o$true)) paste("expected TRUE, got", kind)
              else if (cs$expect == "error" && kind != "error") "expected an error, got a value"
              else NA_character_
  repro <- if (nzchar(setups[[cs$setup]])) paste0(setups[[cs$setup]], "; ", cs$code) else cs$code
  if (is.na(fail_why)) {
    passed <- passed + 1L
    if (kind == "error" && grepl(UNCLEAR, o$msg)) {
      key <- paste(cs$fun, "|", gsub("[0-9]+", "N", o$msg))
      unclear[[key]] <- c(unclear[[key]], repro)
    }
  } else {
    failed <- failed + 1L
    note <- if (!is.null(alone[[as.character(cs$id)]])) paste0(" [alone: ", alone[[as.character(cs$id)]], "]") else ""
    cat(sprintf("FAILED [%s] %s: %s :: %s%s\n", fail_why, cs$fun, repro, o$msg, note))
  }
  report <- c(report, paste(cs$id, cs$fun, cs$formal, cs$setup, cs$code, kind, o$launches, o$msg, sep = "\t"))
}
for (e in exit_failures) {
  failed <- failed + 1L
  cat("FAILED [exit]", e, "\n")
}
if (length(unclear)) {
  cat(sprintf("Unclear errors (not counted as failures), %d kinds:\n", length(unclear)))
  for (key in names(unclear)) cat(sprintf("  UNCLEAR %s  [%d case(s), e.g. %s]\n", key, length(unclear[[key]]), unclear[[key]][1L]))
}
if (nzchar(Sys.getenv("WA_REPORT"))) writeLines(report, Sys.getenv("WA_REPORT"))
cat(sprintf("(%d cases, %d children, %.0f s)\n", nrow(cases), jobs, as.numeric(difftime(Sys.time(), t0, units = "secs"))))
finish("wrong_args")
