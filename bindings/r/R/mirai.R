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
# The host's timing settings in seconds, NA for off, checked: c(cancel_grace, heartbeat,
# peer_timeout). The defaults are libmirai's.
host_timing <- function(cancel_grace = 30, heartbeat = 10, peer_timeout = 120) {
  timing <- list(cancel_grace = cancel_grace, heartbeat = heartbeat, peer_timeout = peer_timeout)
  for (what in names(timing)) {
    if (!is.null(timing[[what]])) check_number(timing[[what]], what, 0.001, 4e6)
  }
  vapply(timing, function(x) if (is.null(x)) NA_real_ else as.numeric(x), numeric(1))
}

check_number <- function(x, what, lo = 0, hi = Inf) {
  if (!is.numeric(x) || length(x) != 1L || is.na(x) || x < lo || x > hi) {
    stop(sprintf("`%s` must be a number from %s to %s", what, format(lo), format(hi)), call. = FALSE)
  }
}

# From the system's random source, not R's RNG: sessions that set the same seed must not pick the
# same socket name, and taking a name must not move the user's random stream.
random_name <- function(n = 12L) .Call(rmirai_random_name, as.integer(n))

#' URL for daemons on this machine
#'
#' @description
#' Makes a URL for a host that only daemons on this machine need to reach: a new abstract
#' socket on Linux (an IPC socket under `/tmp` elsewhere), or with `tcp = TRUE` a TCP address
#' on the loopback interface.
#'
#' @param tcp `FALSE` (the default) for a socket; `TRUE` for `tcp://127.0.0.1:<port>`, which
#'   an SSH tunnel (`ssh_config(tunnel = TRUE)`) also needs.
#' @param port with `tcp = TRUE`, the port, from 0 to 65535. With 0 (the default) the system
#'   picks a free port when the host starts listening; `nextget("url")` then shows it.
#'
#' @return A URL, as a character string.
#'
#' @details
#' The socket's name is made of 12 characters from the system's random source, not from R's
#' random numbers: sessions that set the same seed do not collide, and R's random-number
#' stream is left as it was.
#'
#' @seealso [host_url()] for URLs that other machines can reach; [daemons()].
#'
#' @examples
#' local_url()
#' local_url(tcp = TRUE, port = 5555)
local_url <- function(tcp = FALSE, port = 0) {
  check_flag(tcp, "tcp")
  check_number(port, "port", 0, 65535)
  if (tcp) sprintf("tcp://127.0.0.1:%d", as.integer(port))
  else if (Sys.info()[["sysname"]] == "Linux") sprintf("abstract://%s", random_name())
  else sprintf("ipc:///tmp/%s", random_name())
}

#' URLs at which other machines can reach this one
#'
#' @description
#' Gives a URL for each of this machine's IPv4 network interfaces, except loopback, for a host
#' that daemons on other machines should connect to: `daemons(url = host_url()[1])`.
#'
#' @param tls `FALSE` (the default) for `tcp://` URLs; `TRUE` for `tls+tcp://` ones, whose
#'   connections are encrypted (see the `tls` argument of [daemons()]).
#' @param port the port, from 0 to 65535. With 0 (the default) the system picks a free port
#'   when the host starts listening; `nextget("url")` then shows it.
#' @param ws `TRUE` for WebSocket URLs (`ws://`, or `wss://` with `tls`), which pass HTTP
#'   reverse proxies and firewalls that allow only HTTP(S); `FALSE` (the default) for TCP.
#'
#' @return A character vector of URLs, named by their interfaces (`eth0`, for example). When
#'   no interface is found, a single URL with the machine's node name.
#'
#' @seealso [local_url()] for daemons on this machine; [daemons()], [launch_remote()].
#'
#' @examples
#' host_url()
#' host_url(tls = TRUE, port = 5555)
#' host_url(ws = TRUE)
host_url <- function(tls = FALSE, port = 0, ws = FALSE) {
  check_flag(tls, "tls")
  check_flag(ws, "ws")
  check_number(port, "port", 0, 65535)
  addresses <- .Call(rmirai_interfaces)
  if (!length(addresses)) addresses <- `names<-`(Sys.info()[["nodename"]], Sys.info()[["nodename"]])
  scheme <- if (ws) { if (tls) "wss" else "ws" } else if (tls) "tls+tcp" else "tcp"
  `names<-`(sprintf("%s://%s:%d%s", scheme, addresses, as.integer(port), if (ws) "/" else ""), names(addresses))
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

#' Set or reset daemons
#'
#' @description
#' Sets up the daemons of a compute profile: background R processes, each running [daemon()],
#' that evaluate the tasks of [mirai()], [mirai_map()] and [everywhere()]. `daemons(n)`
#' starts `n` of them on this machine. `daemons(url = )` listens at a URL for daemons that
#' connect from anywhere, started with `remote`, [launch_remote()] or by hand.
#' `daemons(0)` resets the profile.
#'
#' @param n the number of daemons to start on this machine (when `url` is `NULL`). `0`
#'   resets the profile: its host closes, mirai still pending resolve to `errorValue` 19, and
#'   the daemons exit, unless they were told to stay (`autoexit = FALSE`). `NULL` resets it as
#'   well and makes every connected daemon exit, even those. With `url`, the number of daemons
#'   for `remote` to launch (1 if left out).
#' @param url `NULL` (the default) for local daemons, at a [local_url()]. Otherwise the URL at
#'   which the host listens for daemons: `"tcp://host:port"`, `"tls+tcp://host:port"`,
#'   `"ws://host:port/path"`, `"wss://host:port/path"` (WebSocket, through HTTP proxies; the
#'   path is optional), `"ipc:///path"` or `"abstract://name"`. Port 0 picks a free port
#'   (`nextget("url")` shows it). [host_url()] and [local_url()] make suitable URLs.
#'   `inproc://` is not supported.
#' @param remote with `url`, a launch configuration from [ssh_config()], [cluster_config()],
#'   [http_config()] or [remote_config()], with which daemons are launched at once, as
#'   [launch_remote()] would; `NULL` (the default) launches none.
#' @param dispatcher `TRUE` (the default) or `FALSE`. libmirai's host always queues tasks first
#'   in, first out, gives each daemon one task at a time and can cancel them; `FALSE` changes
#'   only how the profile reports, as R's mirai does without a dispatcher: [status()] gives
#'   `connections` and `daemons` only, [info()] `NA` for the task counts, and
#'   `nextget("dispatcher")` `NULL`.
#' @param ... named arguments for [daemon()], used by the daemons this profile launches:
#'   `idletime`, `walltime`, `maxtasks`, `autoexit`, `cleanup`, `output`, `asyncdial`,
#'   `tlscert`. They are checked here as `daemon()` would check them. Only logical and
#'   numeric values, and `tlscert`, reach the launch commands.
#' @param sync if `TRUE`, a synchronous profile: each mirai is evaluated in this R process, by
#'   the daemon's own code, before [mirai()] returns, in a global environment that belongs to
#'   the profile (what [everywhere()] defines stays there). `browser()` then works inside a
#'   task, which helps debugging. Of the other arguments, only `seed` and `.compute` count.
#'   `FALSE` by default.
#' @param seed `NULL` (the default) or a single number. With `NULL`, each daemon takes its own
#'   L'Ecuyer-CMRG random-number stream (the k-th daemon to connect the k-th stream after the
#'   profile's, itself drawn from the session's random numbers). With a number, the profile's
#'   streams follow from `set.seed(seed)` and each mirai takes the next one: random results are
#'   then the same whatever the number of daemons and whichever daemon evaluates which task.
#' @param memory `NULL` (the default) for no limit, or a number of megabytes (of 10^6 bytes)
#'   capping the size of the serialized tasks waiting in the queue. At the cap, [mirai()] waits
#'   for room and [try_mirai()] returns `NULL`. Zero, negative and infinite values mean no
#'   limit.
#' @param serial a configuration from [serial_config()] for sending objects that need custom
#'   serialization; the daemons receive it when they connect. `NULL` (the default) uses the
#'   configurations registered with [register_serial()], if any.
#' @param tls for a `tls+tcp://` URL, your own certificate: the path of a PEM file holding the
#'   certificate (chain) followed by the private key, or `c(<certificate PEM>, <key PEM>)` as
#'   text. With `NULL` (the default), the host generates a certificate authority and a
#'   certificate for the URL's host name, valid for 30 days; daemons receive only the
#'   authority's certificate.
#' @param pass the password of an encrypted private key in `tls` (PKCS#8, as
#'   `openssl genpkey -aes256` writes it), as a character string or a function returning one
#'   (for instance asking for it), so that it need not appear in code. `NULL` (the default) for
#'   a key that is not encrypted.
#' @param .compute the name of the compute profile to set or reset; `NULL` (the default) for the
#'   current profile, which is `"default"` unless [with_daemons()] or [local_daemons()] has
#'   made another current.
#' @param auth `TRUE` (the default): daemons must prove that they hold the session's secret
#'   before they are counted or given tasks. `FALSE` turns the check off for this profile, so
#'   that whoever reaches `url` is given tasks: for trusted networks only. This argument is
#'   specific to this package.
#' @param retry how many times a task runs again on another daemon when the daemon evaluating
#'   it dies (killed, crashed, or silent for two minutes): 0 (the default) for never, as in R's
#'   mirai, where such a task resolves to `errorValue` 19. A task at 3 daemons that died is
#'   given up whatever its retries left (`errorValue` 18), so one task that crashes R cannot
#'   take every daemon down. [mirai()]'s `.retry` overrides it per task. Specific to this
#'   package.
#' @param cancel_grace seconds a daemon has to stop a task cancelled by [stop_mirai()] or
#'   timed out (`.timeout`) before it is dropped: a task that ignores the interrupt (catches
#'   it and carries on, or sits in compiled code that never checks) would otherwise keep its
#'   daemon busy for ever. A daemon this session started is then ended, and the profile has
#'   one daemon fewer (see [status()]; [launch_local()] adds one back). The task resolves to
#'   `errorValue` 20 (or 5) at once either way. 30 by default; `NULL` never drops a daemon,
#'   as in R's mirai. Specific to this package.
#' @param heartbeat seconds after which host and daemons send each other a heartbeat when they
#'   have sent nothing else (10 by default); `NULL` for none, and then no `peer_timeout` unless
#'   one is given (which is refused: without heartbeats every idle daemon would time out).
#'   Specific to this package.
#' @param peer_timeout seconds after which a daemon that has sent nothing, heartbeats included,
#'   is dropped (120 by default, at least three heartbeats): a daemon killed without its
#'   connection closing, a stopped process or job, a machine gone from the network. Its task
#'   resolves to `errorValue` 19, or runs again with `retry`. `NULL` never drops one. Specific
#'   to this package.
#'
#' @return Invisibly, when setting daemons: `TRUE`, of class `miraiDaemons`, which can be
#'   passed to [with()] (see [with_daemons()]). When resetting: `FALSE`.
#'
#' @details
#' ## Compute profiles
#' A profile has its own host, daemons, settings and random-number streams, so that, for
#' instance, a few large-memory daemons can be kept apart from many small ones; every function
#' that submits or inspects work takes `.compute`. Setting daemons for a profile that has some
#' resets it first.
#'
#' ## Local daemons
#' `daemons(n)` starts `n` processes with this R installation's `Rscript` and returns once all
#' of them have connected. When they cannot start or connect, the profile is reset and the
#' error says why. Calling `daemons(n)` for local daemons from within a [mirai_map()] task is
#' an error.
#'
#' ## Authentication
#' The session's secret is 64 random hex digits, chosen when the first profile is set and kept
#' in this process's environment variable `MIRAI_SECRET`; if you set that variable beforehand
#' (at least 32 hex digits, an even number of them), your value is used, which lets daemons
#' started elsewhere share it. A host asks each daemon for an HMAC of a fresh random challenge
#' made with the secret, which therefore never crosses the network. Daemons started by
#' `daemons(n)`, [launch_local()] and the SSH and cluster launchers receive the secret without
#' it appearing on a command line; any other process this session starts inherits it; and the
#' commands [launch_remote()] returns start with `MIRAI_SECRET=...`, so they work when run
#' on another machine (keep them private). A daemon without the secret is refused: it stops
#' with an `AuthFailed` error, and the host writes a `mirai: WARN` line to this session's
#' standard error.
#'
#' ## TLS
#' Authentication keeps strangers out but does not encrypt. For networks you do not trust,
#' use a `tls+tcp://` URL. The launchers pass the certificate daemons must trust on to them,
#' and the commands [launch_remote()] returns include it; with a certificate of your own
#' signed by your own authority, give that authority as `tlscert` (in `...`), as a file path
#' (read on the daemon's machine) or as `c(<PEM>, "")`.
#'
#' @seealso [mirai()] and [mirai_map()] to send work; [status()] and [info()]; [launch_local()]
#'   and [launch_remote()]; [with_daemons()].
#'
#' @examples
#' \donttest{
#' daemons(2)
#' status()
#' mirai(Sys.getpid())[]
#' daemons(0)
#'
#' # A second profile, with reproducible random numbers.
#' daemons(2, seed = 42, .compute = "rng")
#' mirai_map(1:3, function(i) runif(1), .compute = "rng")[.flat]
#' daemons(0, .compute = "rng")
#'
#' # A synchronous profile: tasks are evaluated in this process.
#' daemons(sync = TRUE)
#' mirai(Sys.getpid())[] == Sys.getpid()
#' daemons(0)
#'
#' # Listening at a URL, with arguments for the daemons in `...`.
#' daemons(url = local_url(), maxtasks = 10)
#' launch_local(1)
#' mirai(1 + 1)[]
#' daemons(0)
#' }
#' \dontrun{
#' # Daemons on two other machines, over SSH, with TLS.
#' daemons(url = host_url(tls = TRUE, port = 5555)[1],
#'         remote = ssh_config(c("ssh://node1", "ssh://node2")))
#' daemons(0)
#' }
daemons <- function(n, url = NULL, remote = NULL, dispatcher = TRUE, ..., sync = FALSE,
                    seed = NULL, memory = NULL, serial = NULL, tls = NULL, pass = NULL,
                    .compute = NULL, auth = TRUE, retry = 0L, cancel_grace = 30, heartbeat = 10,
                    peer_timeout = 120) {
  name <- profile_name(.compute)
  check_flag(auth, "auth")
  check_retry(retry, "retry")
  if (is.null(retry)) stop("`retry` must be a number")
  # Without heartbeats, a silent daemon is not a dead one: no peer timeout unless one is asked.
  if (is.null(heartbeat) && missing(peer_timeout)) peer_timeout <- NULL
  timing <- host_timing(cancel_grace, heartbeat, peer_timeout)
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
                tls_material(tls, pass, dots$tlscert), if (auth) session_secret(), retry, timing)
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
  host <- .Call(rmirai_listen, local_url(), 0, stream, NULL, NULL, session_secret(), 0, host_timing())
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

#' Launch daemons
#'
#' @description
#' Start more daemons for a compute profile whose daemons are set (with [daemons()]):
#' `launch_local()` on this machine, `launch_remote()` with a launch configuration, which may
#' also just return the commands that start them, for you to run where you like. Neither
#' waits for the daemons to connect.
#'
#' @usage
#' launch_local(n = 1L, ..., .compute = NULL)
#'
#' launch_remote(n = 1L, remote = remote_config(), ..., .compute = NULL)
#'
#' \method{print}{miraiLaunchCmd}(x, ...)
#'
#' @param n the number of daemons to start, a whole number (0 or more). For
#'   `launch_remote()`, ignored with an [ssh_config()] (one daemon for each remote), and when
#'   the configuration's `args` is a list it must be 1 or the length of that list. For
#'   `launch_remote()` it may also be a cluster from [make_cluster()], or one of its nodes, to
#'   start daemons for that cluster: one for each node.
#' @param ... named arguments for [daemon()] for these daemons only (for example
#'   `idletime = 60000`), in place of those given to [daemons()]. Only logical and numeric
#'   values, and `tlscert`, reach the daemons' command lines. For `print()`, ignored.
#' @param .compute the name of the compute profile; `NULL` (the default) for the current one.
#'
#' @return `launch_local()` returns `n`. `launch_remote()` returns the shell commands that start
#'   the daemons, one for each daemon, as a character vector of class `miraiLaunchCmd` (printed
#'   one by one): visibly when the configuration has no `command` (for you to run), invisibly
#'   once it has launched them, since they carry the secret; with an [http_config()], instead,
#'   invisibly, the API's responses. `print()` returns `x`, invisibly.
#'
#' @details
#' `launch_local()` runs this R installation's `Rscript`. The processes receive the secret
#' and, for TLS, the certificate to trust in their environment, and share this session's
#' console, where what tasks print appears if the daemons have `output = TRUE`.
#'
#' `launch_remote()` fires and forgets, as R's mirai does: it returns as soon as the launcher
#' has been started, and the daemons join when they are up. A launcher that fails shows only as
#' daemons that never connect, so look at [status()]. With [remote_config()] and no
#' `command` (the default), nothing is launched.
#'
#' Each returned command reads `MIRAI_SECRET=<secret> Rscript -e 'mirai::daemon("<url>", ...)'`
#' (with the `rscript` of the configuration): it carries the session's secret, and for TLS the
#' certificate to trust, so it works on any machine that reaches the URL; keep it private.
#' Daemons started this way get their random-number stream from the host when they connect.
#'
#' Synchronous profiles (`daemons(sync = TRUE)`) cannot launch daemons; neither can a profile
#' whose daemons are not set.
#'
#' @seealso [daemons()], [remote_config()], [ssh_config()], [cluster_config()],
#'   [http_config()], [status()].
#'
#' @examples
#' \donttest{
#' daemons(url = local_url())
#'
#' # The commands, to run by hand: here one of them, on this machine.
#' rscript <- file.path(R.home("bin"), "Rscript")
#' cmd <- launch_remote(1, remote = remote_config(rscript = rscript))
#' class(cmd)
#' substr(cmd[1], 1, 13)
#' system(cmd[1], wait = FALSE)
#' mirai(Sys.getpid(), .timeout = 30000)[]
#'
#' # Two more daemons on this machine, which leave after a minute without tasks.
#' launch_local(2, idletime = 60000)
#' for (i in 1:100) if (status()$connections < 3) Sys.sleep(0.1)
#' status()$connections
#' daemons(0)
#' }
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

#' @rdname nextget
#' @usage NULL
nextstream <- function(.compute = "default") {
  p <- get_profile(.compute)
  if (is.null(p)) return(NULL)
  stream <- p$stream
  p$stream <- parallel::nextRNGStream(stream)
  stream
}

#' Query whether daemons are set
#'
#' @description
#' Tells whether daemons are set for a compute profile, that is whether [daemons()] has set
#' it up (local, remote or synchronous) and it has not been reset since. The daemons need not
#' have connected yet.
#'
#' @param .compute the name of the compute profile; `NULL` (the default) for the current one.
#'
#' @return `TRUE` or `FALSE`.
#'
#' @seealso [require_daemons()] to stop with an error instead; [status()].
#'
#' @examples
#' daemons_set()
#' \donttest{
#' daemons(sync = TRUE)
#' daemons_set()
#' daemons(0)
#' daemons_set()
#' }
daemons_set <- function(.compute = NULL) !is.null(get_profile(.compute))

#' Require daemons
#'
#' @description
#' Stops with an error unless daemons are set for a compute profile, for code (in packages,
#' for instance) that must not start its work without them. The error suggests a call such
#' as `mirai::daemons(6)`; with cli installed, it is an rlang error in which the call is a
#' clickable link.
#'
#' @param .compute the name of the compute profile; `NULL` (the default) for the current one.
#' @param call what the error is attributed to: the frame of a running function (pass
#'   `environment()` from your function, so that the message names it), or a call. By default,
#'   `require_daemons()`'s own call.
#'
#' @return `TRUE`, invisibly, when daemons are set; an error otherwise.
#'
#' @seealso [daemons_set()], [daemons()].
#'
#' @examples
#' try(require_daemons())
#' analyse <- function() {
#'   require_daemons(call = environment())
#'   mirai(1 + 1)[]
#' }
#' try(analyse())
#' \donttest{
#' daemons(sync = TRUE)
#' analyse()
#' daemons(0)
#' }
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

#' Status of a compute profile
#'
#' @description
#' Reports on the daemons and tasks of a compute profile.
#'
#' @param .compute the name of the compute profile, or a cluster from [make_cluster()]; `NULL`
#'   (the default) for the current profile.
#'
#' @return A list:
#'   - `connections`: the number of daemons connected now (and authenticated);
#'   - `daemons`: the URL the host listens at;
#'   - `mirai`: the numbers of tasks `awaiting` a daemon, `executing` and `completed`;
#'   - `memory`: the size in megabytes of the tasks waiting in the queue: `used` now, the
#'     `peak`, and the `capacity` set by `daemons(memory =)` (`NA` without a cap).
#'
#'   `mirai` and `memory` are left out for a profile set with `dispatcher = FALSE`. When no
#'   daemons are set, `list(connections = 0L, daemons = 0L)`.
#'
#' @seealso [info()] for the same counts as a vector; [daemons()].
#'
#' @examples
#' status()
#' \donttest{
#' daemons(2)
#' status()
#' daemons(0)
#' }
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

#' Counters of a compute profile
#'
#' @description
#' Gives the counts of a compute profile's daemons and tasks as one integer vector, which is
#' handy for programs that watch the profile.
#'
#' @param .compute the name of the compute profile; `NULL` (the default) for the current one.
#'
#' @return A named integer vector: `connections` (daemons connected now), `cumulative` (daemons
#'   that have connected since the profile was set), `awaiting`, `executing` and `completed`
#'   (tasks). With `dispatcher = FALSE` all but `connections` are `NA`. `NULL` when no daemons
#'   are set.
#'
#' @seealso [status()], [daemons()].
#'
#' @examples
#' info()
#' \donttest{
#' daemons(1)
#' mirai(1)[]
#' info()
#' daemons(0)
#' }
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

#' @rdname with_daemons
#' @param data the value of a [daemons()] call that set daemons up (of class `miraiDaemons`).
#' @param ... ignored.
with.miraiDaemons <- function(data, expr, ...) {
  name <- class(data)[2L]
  prev <- .state$cp
  .state$cp <- name
  on.exit({ daemons(0L, .compute = name); .state$cp <- prev })
  expr
}

#' Evaluate code with another compute profile
#'
#' @description
#' These make a compute profile the current one, used by [mirai()], [mirai_map()],
#' [everywhere()] and the other functions when they are not given `.compute`:
#' - `with_daemons()` for the evaluation of `expr`;
#' - `local_daemons()` for the rest of the function that calls it;
#' - `with(daemons(...), expr)` for the evaluation of `expr`, with daemons set up for it: the
#'   profile that `daemons()` sets is reset when `expr` is done.
#'
#' @param .compute the name of a compute profile whose daemons are set; an error (as from
#'   [require_daemons()]) otherwise.
#' @param expr the code to evaluate.
#'
#' @return `with_daemons()` and `with()` return the value of `expr`. `local_daemons()` returns
#'   `NULL`, invisibly.
#'
#' @details
#' The profile that was current before is restored when `expr` finishes, or the calling
#' function returns, whether normally or by an error.
#'
#' @seealso [daemons()] for compute profiles.
#'
#' @examples
#' \donttest{
#' daemons(sync = TRUE, .compute = "here")
#' with_daemons("here", mirai(Sys.getpid())[] == Sys.getpid())
#'
#' where <- function() {
#'   local_daemons("here")
#'   mirai(Sys.getpid())[] == Sys.getpid()
#' }
#' where()
#' daemons(0, .compute = "here")
#'
#' # Daemons for one piece of work only.
#' with(daemons(1, .compute = "once"), mirai(6 * 7)[])
#' daemons_set("once")
#' daemons(0)
#' }
with_daemons <- function(.compute, expr) {
  require_daemons(.compute)
  prev <- .state$cp
  .state$cp <- profile_name(.compute)
  on.exit(.state$cp <- prev)
  expr
}

#' @rdname with_daemons
#' @param frame the frame whose exit restores the previous profile; by default that of the
#'   function calling `local_daemons()`.
local_daemons <- function(.compute, frame = parent.frame()) {
  require_daemons(.compute)
  prev <- .state$cp
  .state$cp <- profile_name(.compute)
  # The function itself goes into the exit expression: `frame` cannot see the package's names.
  do.call(on.exit, list(as.call(list(set_current, prev)), add = TRUE), envir = frame)
  invisible()
}

set_current <- function(name) .state$cp <- name

#' Query whether code runs on a daemon
#'
#' @description
#' Tells whether the code calling it is being evaluated as a task by a daemon, for functions
#' that should behave differently there (for instance not start daemons of their own).
#'
#' @return `TRUE` inside a task, including a task of a synchronous profile evaluated in this
#'   process (`daemons(sync = TRUE)`); `FALSE` otherwise.
#'
#' @seealso [daemon()].
#'
#' @examples
#' on_daemon()
#' \donttest{
#' daemons(1)
#' mirai(mirai::on_daemon())[]
#' daemons(0)
#' }
on_daemon <- function() isTRUE(.state$daemon)

#' Settings, random-number streams and exit codes of compute profiles
#'
#' @description
#' `nextget()` returns one setting of a compute profile. `nextstream()` hands out the profile's
#' next L'Ecuyer-CMRG random-number stream. `nextcode()` explains daemon exit codes. They serve
#' packages built on this one (crew, for instance) more than everyday use.
#'
#' @usage
#' nextget(x, .compute = "default")
#'
#' nextstream(.compute = "default")
#'
#' nextcode(xc)
#'
#' @param x the name of the setting, a character string:
#'   - `"n"`: the number of daemons asked for (`NULL` when only `url` was given);
#'   - `"url"`: the URL the host listens at, with the port the system chose for port 0;
#'   - `"dispatcher"`: the host itself, an external pointer; `NULL` for profiles set with
#'     `dispatcher = FALSE` and for synchronous ones;
#'   - `"tls"`: the certificate authority daemons are given to trust, as `c(<PEM>, "")` (the
#'     form `daemon(tlscert =)` takes), or the `tlscert` path given to [daemons()]; `NULL`
#'     without TLS;
#'   - `"stream"`: the profile's current random-number stream, a 7-integer `.Random.seed`;
#'   - `"seed"`: the `seed` given to [daemons()], or `NULL`;
#'   - `"dots"`: the daemon arguments in the launch commands, as a named list;
#'   - `"sync"`: whether the profile is synchronous;
#'   - `"compute"`: the profile's name.
#'
#'   Any other name gives `NULL`; among them `"cv"`, since there are no nanonext condition
#'   variables here.
#' @param .compute the name of the compute profile, `"default"` by default (that profile, even
#'   where [with_daemons()] has made another current).
#' @param xc an exit code returned by [daemon()], or a vector of them.
#'
#' @return `nextget()`: the setting, as above, or `NULL` when the profile is not set.
#'   `nextstream()`: the stream, a 7-integer `.Random.seed`, or `NULL` when the profile is not
#'   set. `nextcode()`: a character vector with `"<code> | <meaning>"` for each code.
#'
#' @details
#' `nextstream()` returns the profile's current stream and moves the profile on to the next
#' one ([parallel::nextRNGStream()]), as happens when a daemon connects, or with
#' `daemons(seed =)` when a mirai is created.
#'
#' The exit codes of [daemon()]: 0 the connection to the host ended, 1 the idle time limit
#' (`idletime`) was reached, 2 the wall time limit (`walltime`), 3 the task limit (`maxtasks`);
#' any other code is "Unknown exit code".
#'
#' @seealso [daemons()], [daemon()].
#'
#' @examples
#' nextcode(0:3)
#' nextget("url", .compute = "not-set")
#' \donttest{
#' daemons(1, .compute = "cfg")
#' nextget("url", .compute = "cfg")
#' nextget("n", .compute = "cfg")
#' s <- nextstream("cfg")
#' identical(nextstream("cfg"), parallel::nextRNGStream(s))
#' daemons(0, .compute = "cfg")
#' }
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

#' @rdname nextget
#' @usage NULL
nextcode <- function(xc) {
  if (!is.numeric(xc)) stop("`xc` must be a daemon's exit code (a number)")
  xc <- as.integer(xc)
  why <- c("Daemon connection terminated", "Daemon idletime limit reached", "Daemon walltime limit reached",
           "Daemon task limit reached")[ifelse(xc %in% 0:3, xc + 1L, NA_integer_)]
  sprintf("%d | %s", xc, ifelse(is.na(why), "Unknown exit code", why))
}

# What an errorValue's code means: NNG's text, as R's mirai prints it.
error_text <- function(code) {
  code <- as.integer(code)
  msg <- nng_messages[code]
  sprintf("%d | %s", code, ifelse(is.na(msg), "Unknown error", msg))
}
