# mirai for R on libmirai: compute profiles, daemons, mirai objects.

.state <- new.env(parent = emptyenv())
.state$cp <- "default"
.state$profiles <- new.env(parent = emptyenv())
.state$daemon <- FALSE
.state$clusters <- 0L # make_cluster IDs issued

nng_messages <- c(
  "Interrupted", "Out of memory", "Invalid argument", "Resource busy", "Timed out",
  "Connection refused", "Object closed", "Try again", "Not supported", "Address in use",
  "Incorrect state", "Entry not found", "Protocol error", "Destination unreachable",
  "Address invalid", "Permission denied", "Message too large", "Connection aborted",
  "Connection reset", "Operation canceled", "Out of files", "Out of space",
  "Resource already exists", "Read only resource", "Write only resource", "Cryptographic error",
  "Peer could not be authenticated", "Option requires argument", "Ambiguous option",
  "Incorrect type", "Connection shutdown"
)

profile_name <- function(.compute) {
  if (is.null(.compute)) return(.state$cp)
  if (!is.character(.compute) || length(.compute) != 1L || is.na(.compute) || !nzchar(.compute)) {
    stop("`.compute` must be a character string (a compute profile's name)", call. = FALSE)
  }
  .compute
}

get_profile <- function(.compute) get0(profile_name(.compute), envir = .state$profiles, inherits = FALSE)

# A single TRUE or FALSE, or an error naming the argument.
check_flag <- function(x, what) {
  if (!isTRUE(x) && !isFALSE(x)) stop(sprintf("`%s` must be either TRUE or FALSE", what), call. = FALSE)
}

# A single number in [lo, hi] (NA refused), or an error naming the argument.
check_number <- function(x, what, lo = 0, hi = Inf) {
  if (!is.numeric(x) || length(x) != 1L || is.na(x) || x < lo || x > hi) {
    stop(sprintf("`%s` must be a number from %s to %s", what, format(lo), format(hi)), call. = FALSE)
  }
}

# From the system's random source, not R's RNG: sessions that set the same seed must not pick the
# same socket name, and taking a name must not move the user's random stream.
random_name <- function(n = 12L) .Call(rmirai_random_name, as.integer(n))

#' URL for local daemons: an abstract socket (Linux) or a TCP loopback address.
local_url <- function(tcp = FALSE, port = 0) {
  check_flag(tcp, "tcp")
  check_number(port, "port", 0, 65535)
  if (tcp) sprintf("tcp://127.0.0.1:%d", as.integer(port))
  else if (Sys.info()[["sysname"]] == "Linux") sprintf("abstract://%s", random_name())
  else sprintf("ipc:///tmp/%s", random_name())
}

#' URL at which remote daemons can reach this machine.
#' One per local IPv4 interface (loopback excluded), named by interface; the node name when
#' there is none.
host_url <- function(tls = FALSE, port = 0) {
  check_flag(tls, "tls")
  check_number(port, "port", 0, 65535)
  addresses <- .Call(rmirai_interfaces)
  if (!length(addresses)) addresses <- `names<-`(Sys.info()[["nodename"]], Sys.info()[["nodename"]])
  `names<-`(sprintf("%s://%s:%d", if (tls) "tls+tcp" else "tcp", addresses, as.integer(port)), names(addresses))
}

# The R call a launched daemon runs: `mirai::daemon("<url>", <args>)`. A `tlscert` path is passed
# on (the daemon reads it on its own machine). CA text reaches daemons started by libmirai's
# launchers in MIRAI_TLS_CA; for a command run elsewhere (`embed_ca`) it goes into the call as
# `tlscert = c(<PEM>, "")`.
daemon_call <- function(url, p, embed_ca = FALSE) {
  dots <- p$dots
  args <- if (length(dots)) paste0(",", names(dots), "=", vapply(dots, deparse, ""), collapse = "") else ""
  if (length(p$tlscert) == 1L) {
    args <- paste0(args, ",tlscert=", deparse(p$tlscert))
  } else if (embed_ca && !is.null(ca <- profile_ca(p))) {
    args <- paste0(args, ",tlscert=c(", deparse1(ca), ",\"\")")
  }
  sprintf("mirai::daemon(\"%s\"%s)", url, args)
}

# The CA certificate daemons are given to trust: `tlscert` as PEM, or the host's (generated, or
# the last certificate of the user's chain).
profile_ca <- function(p) {
  if (length(p$tlscert) > 1L) p$tlscert[1L] else .Call(rmirai_tls_ca, p$host)
}

#' Set or reset daemons for a compute profile.
#' Daemons prove they hold the session's secret (see auth.R) unless `auth = FALSE`.
daemons <- function(n, url = NULL, remote = NULL, dispatcher = TRUE, ..., sync = FALSE,
                    seed = NULL, memory = NULL, serial = NULL, tls = NULL, pass = NULL,
                    .compute = NULL, auth = TRUE) {
  if (!is.null(.compute) && (!is.character(.compute) || length(.compute) != 1L || is.na(.compute))) {
    stop("`.compute` must be a character string")
  }
  name <- profile_name(.compute)
  check_flag(auth, "auth")
  check_flag(sync, "sync")
  if (!is.null(seed) && (!is.numeric(seed) || length(seed) != 1L || is.na(seed))) stop("`seed` must be a single number")
  if (sync) return(sync_profile(name, seed))
  if (missing(n) && is.null(url)) stop("argument \"n\" is missing, with no default")
  if (!missing(n) && is.null(n)) return(reset_profile(name, exit = TRUE))
  if (!missing(n) && (!is.numeric(n) || length(n) != 1L || is.na(n))) stop("`n` must be numeric, did you mean to provide `url`?")
  if (!missing(n) && n < 0) stop("the number of daemons must be zero or greater")
  if (!is.null(url) && (!is.character(url) || length(url) != 1L || is.na(url))) {
    stop(sprintf("`url` must be of type character, not %s", typeof(url)))
  }
  if (!isTRUE(dispatcher) && !isFALSE(dispatcher)) stop("`dispatcher` must be either TRUE or FALSE")
  if (!is.null(memory) && (!is.numeric(memory) || length(memory) != 1L)) stop("`memory` must be a number of MB, or NULL")
  if (!missing(n) && n == 0 && is.null(url)) return(reset_profile(name, exit = FALSE))
  if (is.null(url) && in_map()) stop("cannot create local daemons from within mirai map")
  dots <- check_daemon_args(list(...))
  reset_profile(name, exit = FALSE)
  memory <- if (is.null(memory) || !is.finite(memory) || is.na(memory) || memory <= 0) 0 else memory
  stream <- init_stream(seed)
  serial <- if (is.null(serial)) .state$serial else as_serial(serial)
  blob <- if (length(serial$class)) serialize(serial, NULL) else NULL
  host <- .Call(rmirai_listen, if (is.null(url)) local_url() else url, memory, stream, blob,
                tls_material(tls, pass, dots$tlscert), if (auth) session_secret())
  p <- new.env(parent = emptyenv())
  p$host <- host
  p$read_hook <- serial_reader(serial)
  p$write_hook <- serial_writer(serial)
  p$stream <- stream
  p$seed <- seed
  p$name <- name
  p$url <- .Call(rmirai_url, host)
  p$dispatcher <- dispatcher
  p$n <- if (missing(n)) NULL else as.integer(n)
  set_launch_args(p, dots)
  assign(name, p, envir = .state$profiles)
  if (is.null(url) && !missing(n) && n > 0) {
    tryCatch({
      launch_local(n, .compute = name)
      .Call(rmirai_wait_connections, host, n)
    }, error = function(e) {
      daemons(0L, .compute = name)
      stop(simpleError(sprintf("daemons could not be started: %s", conditionMessage(e)), call = NULL))
    })
  } else if (!is.null(remote)) {
    tryCatch(launch_remote(if (missing(n)) 1L else n, remote = remote, .compute = name), error = function(e) {
      daemons(0L, .compute = name)
      stop(e)
    })
  }
  invisible(structure(TRUE, class = c("miraiDaemons", name)))
}

# Whether this runs inside a task of a mirai_map, whose evaluation frame holds
# `.mirai_within_map` (see mirai_map).
in_map <- function() isTRUE(dynGet(".mirai_within_map", ifnotfound = FALSE))

# Closes a profile's host (first telling its daemons to exit, with `exit`): pending mirai resolve
# to 19; cluster jobs are cancelled.
reset_profile <- function(name, exit) {
  p <- get_profile(name)
  if (is.null(p)) return(invisible(FALSE))
  for (jobs in p$jobs) .Call(rmirai_cancel_jobs, jobs)
  .Call(rmirai_close, p$host, exit)
  rm(list = name, envir = .state$profiles)
  invisible(FALSE)
}

# A synchronous profile: tasks run in this process as `mirai()` is called (see sync.R).
sync_profile <- function(name, seed) {
  reset_profile(name, exit = FALSE)
  stream <- init_stream(seed)
  host <- .Call(rmirai_listen, local_url(), 0, stream, NULL, NULL, session_secret())
  p <- new.env(parent = emptyenv())
  p$host <- host
  p$stream <- stream
  p$seed <- seed
  p$name <- name
  p$url <- .Call(rmirai_url, host)
  p$secret <- .Call(rmirai_secret, host)
  p$sync <- TRUE
  p$n <- 1L
  p$globals <- new.env(parent = emptyenv())
  p$dispatcher <- FALSE
  assign(name, p, envir = .state$profiles)
  invisible(structure(TRUE, class = c("miraiDaemons", name)))
}

# Arguments for daemon() given in `...`: named, and those with a meaning checked as daemon()
# would (a daemon refusing its arguments would otherwise leave its host waiting for it).
check_daemon_args <- function(dots) {
  if (length(dots) && (is.null(names(dots)) || !all(nzchar(names(dots))))) {
    stop("`...` arguments must be named (they are arguments for daemon())", call. = FALSE)
  }
  for (name in intersect(names(dots), c("idletime", "walltime", "maxtasks"))) check_number(dots[[name]], name)
  for (name in intersect(names(dots), c("asyncdial", "cleanup", "output"))) check_flag(dots[[name]], name)
  if (!is.null(dots$autoexit) && (!is.logical(dots$autoexit) || length(dots$autoexit) != 1L)) stop("`autoexit` must be TRUE, FALSE or NA", call. = FALSE)
  dots
}

# Daemon arguments for launch commands: logical and numeric values, and `tlscert` (the CA chain
# daemons trust: a file path, given to daemons as is, or c(PEM, "")).
set_launch_args <- function(p, dots) {
  if (!is.null(dots$tlscert)) {
    check_tlscert(dots$tlscert)
    p$tlscert <- dots$tlscert
  }
  p$dots <- Filter(function(x) is.logical(x) || is.numeric(x), dots)
}

# c(chain, key, ca, password) for a TLS host with the user's certificate: `tls` is a PEM file
# holding the certificate (chain) followed by the key, or c(cert, key); `pass` the key's password
# (or a function returning it). Daemons trust `tlscert` when given as PEM or as a file on this
# machine; otherwise libmirai takes the chain's last certificate (right for a self-signed one).
# NULL when `tls` is NULL: a tls+tcp:// URL then gets a generated certificate.
tls_material <- function(tls, pass, tlscert) {
  if (is.null(tls)) return(NULL)
  if (!is.character(tls) || !length(tls) || anyNA(tls)) stop("`tls` must be a file path or c(<PEM cert>, <PEM key>)")
  if (length(tls) > 1L) {
    chain <- tls[1L]
    key <- tls[2L]
  } else {
    chain <- key <- pem_file(tls, "tls")
  }
  if (is.function(pass)) pass <- pass()
  if (!is.null(pass) && (!is.character(pass) || length(pass) != 1L)) stop("`pass` must be a character string (or a function returning one)")
  if (!is.null(tlscert)) check_tlscert(tlscert)
  ca <- if (length(tlscert) > 1L) tlscert[1L] else if (length(tlscert) == 1L && file.exists(tlscert)) pem_file(tlscert, "tlscert") else NA_character_
  c(chain, key, ca, if (is.null(pass)) NA_character_ else pass)
}

#' Launch more local daemons for a profile.
launch_local <- function(n = 1L, ..., .compute = NULL) {
  check_count(n)
  p <- with_launch_args(launchable_profile(.compute), list(...))
  .Call(rmirai_launch, p$host, c(rscript_path(), "-e", daemon_call("{url}", p)), as.integer(n), TRUE)
  n
}

# A number of daemons to launch: one whole number, 0 or more (a bounded one: each is a process).
check_count <- function(n) {
  if (!is.numeric(n) || length(n) != 1L || is.na(n) || n < 0 || n != trunc(n) || n > 1e5) {
    stop("`n` must be a whole number of daemons, 0 or more")
  }
}

# The profile as launches see it, with daemon arguments given to this launch only.
with_launch_args <- function(p, dots) {
  if (!length(dots)) return(p)
  check_daemon_args(dots)
  q <- list2env(as.list.environment(p, all.names = TRUE), parent = emptyenv())
  set_launch_args(q, dots)
  q
}

launchable_profile <- function(.compute) {
  p <- get_profile(.compute)
  if (is.null(p)) stop("daemons must be set to use this function")
  if (isTRUE(p$sync)) stop("daemons cannot be launched for synchronous compute profiles")
  p
}

rscript_path <- function() file.path(R.home("bin"), "Rscript")

# A profile's L'Ecuyer-CMRG stream: from `set.seed(seed)` when a seed is given, otherwise from
# a draw of the session's RNG, which that draw advances (so successive calls get different
# streams, and after `set.seed()` the same ones). The session's RNG kind, and its
# `.Random.seed` after that draw, are left as they were.
init_stream <- function(seed) {
  if (is.null(seed)) seed <- sample.int(.Machine$integer.max, 1L)
  old <- get0(".Random.seed", envir = .GlobalEnv, inherits = FALSE)
  kind <- RNGkind()
  on.exit({
    RNGkind(kind[1L], kind[2L], kind[3L])
    if (is.null(old)) rm(".Random.seed", envir = .GlobalEnv) else assign(".Random.seed", old, envir = .GlobalEnv)
  })
  RNGkind("L'Ecuyer-CMRG")
  set.seed(seed)
  get(".Random.seed", envir = .GlobalEnv)
}

#' The profile's current stream, then advanced (parallel::nextRNGStream).
nextstream <- function(.compute = "default") {
  p <- get_profile(.compute)
  if (is.null(p)) return(NULL)
  stream <- p$stream
  p$stream <- parallel::nextRNGStream(stream)
  stream
}

daemons_set <- function(.compute = NULL) !is.null(get_profile(.compute))

#' Errors unless daemons are set, attributed to `call` (a frame, as `environment()` of the
#' function calling this, or a call).
require_daemons <- function(.compute = NULL, call = environment()) {
  if (daemons_set(.compute)) return(invisible(TRUE))
  name <- profile_name(.compute)
  first <- if (name == "default") "No daemons set." else sprintf("No daemons set for the '%s' compute profile.", name)
  if (requireNamespace("cli", quietly = TRUE)) {
    cli::cli_abort(c(first, "Use e.g. {.run mirai::daemons(6)} to set 6 local daemons."), call = call)
  }
  if (is.environment(call)) call <- frame_call(call)
  stop(simpleError(sprintf("%s\nUse e.g. mirai::daemons(6) to set 6 local daemons.", first), call))
}

# The call that made frame `env`, or NULL when it is not on the stack.
frame_call <- function(env) {
  frames <- sys.frames()
  for (i in rev(seq_along(frames))) if (identical(frames[[i]], env)) return(sys.call(i))
  NULL
}

#' Status of a compute profile.
status <- function(.compute = NULL) {
  if (inherits(.compute, "miraiCluster")) .compute <- attr(.compute, "id")
  p <- get_profile(.compute)
  if (is.null(p)) return(list(connections = 0L, daemons = 0L))
  info <- .Call(rmirai_counters, p$host)
  # Without a dispatcher R's mirai reports connections and the URL only.
  if (!isTRUE(p$dispatcher)) return(list(connections = info[1L], daemons = p$url))
  list(connections = info[1L], daemons = p$url,
       mirai = c(awaiting = info[3L], executing = info[4L], completed = info[5L]),
       memory = `names<-`(.Call(rmirai_memory, p$host), c("used", "peak", "capacity")))
}

#' Counters of a compute profile.
info <- function(.compute = NULL) {
  p <- get_profile(.compute)
  if (is.null(p)) return(NULL)
  out <- .Call(rmirai_counters, p$host)
  if (!isTRUE(p$dispatcher)) out[-1L] <- NA_integer_
  `names<-`(out, c("connections", "cumulative", "awaiting", "executing", "completed"))
}

print.miraiDaemons <- function(x, ...) {
  print(unclass(x)[1L])
  invisible(x)
}

with.miraiDaemons <- function(data, expr, ...) {
  name <- class(data)[2L]
  prev <- .state$cp
  .state$cp <- name
  on.exit({ daemons(0L, .compute = name); .state$cp <- prev })
  expr
}

with_daemons <- function(.compute, expr) {
  require_daemons(.compute)
  prev <- .state$cp
  .state$cp <- .compute
  on.exit(.state$cp <- prev)
  expr
}

local_daemons <- function(.compute, frame = parent.frame()) {
  require_daemons(.compute)
  prev <- .state$cp
  .state$cp <- .compute
  # The function itself goes into the exit expression: `frame` cannot see the package's names.
  do.call(on.exit, list(as.call(list(set_current, prev)), add = TRUE), envir = frame)
  invisible()
}

set_current <- function(name) .state$cp <- name

on_daemon <- function() isTRUE(.state$daemon)

#' A field of a compute profile (the default one unless `.compute` names another): "n" (the
#' number of daemons asked for), "url", "dispatcher" (the host, or NULL without a dispatcher),
#' "tls" (what daemons trust, as `c(<PEM chain>, "")`), "stream", "seed", "dots" (daemon
#' arguments), "sync", "compute". Anything else is NULL.
nextget <- function(x, .compute = "default") {
  if (!is.character(x) || length(x) != 1L) stop("`x` must be a character string")
  p <- get_profile(.compute)
  if (is.null(p)) return(NULL)
  switch(x, n = p$n, url = p$url, dispatcher = if (isTRUE(p$dispatcher)) p$host,
         tls = profile_tls(p), stream = p$stream, seed = p$seed, dots = p$dots,
         sync = isTRUE(p$sync), compute = p$name, NULL)
}

# The CA daemons of `p` trust, as daemon(tlscert =) takes it; NULL without TLS.
profile_tls <- function(p) {
  if (length(p$tlscert) == 1L) return(p$tlscert) # a file path, given to daemons as is
  ca <- profile_ca(p)
  if (is.null(ca)) NULL else c(ca, "")
}

#' What a daemon's exit code means (the value `daemon()` returns).
nextcode <- function(xc) {
  if (!is.numeric(xc)) stop("`xc` must be a daemon's exit code (a number)")
  xc <- as.integer(xc)
  why <- c("Daemon connection terminated", "Daemon idletime limit reached", "Daemon walltime limit reached",
           "Daemon task limit reached")[xc + 1L]
  sprintf("%d | %s", xc, ifelse(is.na(why), "Unknown exit code", why))
}

# What an errorValue's code means: NNG's text, as R's mirai prints it.
error_text <- function(code) {
  code <- as.integer(code)
  msg <- nng_messages[code]
  sprintf("%d | %s", code, ifelse(is.na(msg), "Unknown error", msg))
}
