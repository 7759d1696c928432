# The daemon: libmirai's runtime calling back into R to evaluate each task.

#' Run a daemon
#'
#' @description
#' Connects to the host listening at `url` and evaluates the tasks it sends, one after the
#' other, until the connection ends or a limit set here is reached. Every daemon process runs
#' this: the commands that [daemons()], [launch_local()] and [launch_remote()] use are
#' `Rscript -e 'mirai::daemon("<url>", ...)'`. Call it yourself to start a daemon by hand.
#'
#' @param url the host's URL, a character string: `"tcp://10.0.0.5:5555"`,
#'   `"tls+tcp://login.example.org:5555"`, `"ipc:///tmp/mirai.sock"` or
#'   `"abstract://name"`, as `nextget("url")` reports it on the host. A string without
#'   `"://"` is an error.
#' @param dispatcher accepted so that calls written for R's mirai work; it has no effect, as
#'   every host here does its own dispatching.
#' @param ... accepted for the same reason and ignored.
#' @param asyncdial if `FALSE` (the default), give up with an error when the first attempt to
#'   connect fails. If `TRUE`, keep trying (with waits growing to a second between attempts)
#'   until the host answers, which suits a daemon started before its host.
#' @param autoexit what the daemon does when its host goes away: `TRUE` (the default) exits,
#'   interrupting a task it is running; `NA` finishes the running task, then exits; `FALSE`
#'   stays, and connects again as soon as a host listens at `url` again. In every case the
#'   daemon exits when the host is reset with `daemons(NULL)`.
#' @param cleanup if `TRUE` (the default), each task's traces are removed before the next one:
#'   objects it created in the global environment, packages it attached, and options it
#'   changed. What [everywhere()] sets up is kept. If `FALSE`, each task sees what the earlier
#'   ones left.
#' @param output if `FALSE` (the default), what tasks print to standard output or standard
#'   error is discarded. If `TRUE` it is shown wherever the daemon's own output goes: for
#'   daemons started with `daemons(n)` or [launch_local()], that is this session's console.
#' @param idletime the number of milliseconds to wait for a task before exiting (exit code 1);
#'   `Inf` (the default) waits for ever.
#' @param walltime a soft limit in milliseconds on the daemon's life, checked as tasks arrive:
#'   a task arriving after it has passed is the last the daemon evaluates (exit code 2). An idle
#'   daemon also waits no longer than this for its next task. `Inf` (the default) for none.
#' @param maxtasks the number of tasks after which the daemon exits (exit code 3); `Inf` (the
#'   default) for no limit.
#' @param tlscert for a `tls+tcp://` URL, the certificate authority to trust: the path of a PEM
#'   file with the certificate chain, or `c(<PEM text>, "")`. With `NULL` (the default) the
#'   daemon trusts the certificate passed in the environment variable `MIRAI_TLS_CA`, which the
#'   launchers of this package set; the commands [launch_remote()] returns include
#'   `tlscert = c(<PEM>, "")` themselves.
#' @param rs a 7-integer L'Ecuyer-CMRG `.Random.seed` from which to start the daemon's
#'   random-number stream. With `NULL` (the default) the daemon uses the stream the host assigns
#'   it when it connects.
#'
#' @return The daemon's exit code, invisibly, once it stops: 0 the connection ended, 1 no task
#'   came within `idletime`, 2 `walltime` passed, 3 `maxtasks` tasks were done ([nextcode()]
#'   says the same in words). A daemon that cannot connect, or that the host refuses, stops
#'   with an error instead.
#'
#' @details
#' First of all, `daemon()` takes the session's secret out of its environment variable
#' `MIRAI_SECRET` and removes the variable, so neither a task nor a process a task starts can
#' read it. The daemon proves to the host that it holds this secret; a daemon without it (or
#' with another session's) is refused, and stops with an error mentioning `AuthFailed` and how
#' to get the secret. A host set up with `daemons(auth = FALSE)` asks for no secret.
#'
#' A task is evaluated in an environment holding its `.args`, whose parent is the global
#' environment, where the objects given in `...` of [mirai()] are assigned. An error becomes
#' the task's value as a `miraiError`, and the daemon goes on to the next task; a warning is
#' shown when it happens (see `output`), unless `options(warn = 2)` makes it an error.
#'
#' @seealso [daemons()], [launch_local()] and [launch_remote()], which start daemons;
#'   [nextcode()] for the exit codes.
#'
#' @examples
#' \donttest{
#' # A host waits for daemons at a URL; a daemon is started by hand in another R process.
#' daemons(url = local_url())
#' rscript <- file.path(R.home("bin"), "Rscript")
#' call <- sprintf("mirai::daemon('%s', maxtasks = 1)", nextget("url"))
#' system2(rscript, c("-e", shQuote(call)), wait = FALSE)
#' mirai(Sys.getpid(), .timeout = 30000)[]
#' daemons(0)
#' }
daemon <- function(url, dispatcher = TRUE, ..., asyncdial = FALSE, autoexit = TRUE,
                   cleanup = TRUE, output = FALSE, idletime = Inf, walltime = Inf,
                   maxtasks = Inf, tlscert = NULL, rs = NULL) {
  if (!is.character(url) || length(url) != 1L || is.na(url) || !grepl("://", url, fixed = TRUE)) stop("`url` must be a valid URL")
  check_daemon_args(list(idletime = idletime, walltime = walltime, maxtasks = maxtasks, autoexit = autoexit,
                         asyncdial = asyncdial, cleanup = cleanup, output = output))
  if (!is.null(rs) && (!is.numeric(rs) || length(rs) != 7L)) stop("`rs` must be a 7-integer L'Ecuyer-CMRG .Random.seed")
  serve(url, asyncdial = asyncdial, autoexit = autoexit, cleanup = cleanup, output = output,
        idletime = idletime, walltime = walltime, maxtasks = maxtasks, tls_ca = tlscert_pem(tlscert),
        rs = rs, secret = take_secret())
}

# An ephemeral daemon (a mirai without daemons set): one task, then exit.
.daemon <- function(url) daemon(url, maxtasks = 1, cleanup = FALSE)

# The CA chain of `tlscert`: a PEM file, or c(chain, "").
tlscert_pem <- function(tlscert) {
  if (is.null(tlscert)) return(NULL)
  check_tlscert(tlscert)
  if (length(tlscert) > 1L) return(tlscert[1L])
  pem_file(tlscert, "tlscert")
}

check_tlscert <- function(tlscert) {
  if (!is.character(tlscert) || !length(tlscert) || anyNA(tlscert)) stop("`tlscert` must be a file path or c(<PEM chain>, \"\")")
}

pem_file <- function(path, what) {
  if (!file.exists(path)) stop(sprintf("`%s`: file not found: %s", what, path))
  paste(readLines(path, warn = FALSE), collapse = "\n")
}

# The daemon loop on libmirai's runtime; `tls_ca` NULL reads MIRAI_TLS_CA (set by the
# launcher); `secret` NULL means none.
serve <- function(url, asyncdial = FALSE, autoexit = TRUE, cleanup = TRUE, output = FALSE,
                  idletime = Inf, walltime = Inf, maxtasks = Inf, tls_ca = NULL, rs = NULL,
                  secret = NULL) {
  res <- serve_loop(url, asyncdial, autoexit, cleanup, output, idletime, walltime, maxtasks, tls_ca, rs, secret)
  # Raised only now: R prints an error where it is raised, which inside the loop is the sink.
  if (inherits(res, "error")) {
    msg <- conditionMessage(res)
    if (grepl("AuthFailed", msg, fixed = TRUE)) {
      msg <- paste0(msg, "\nThe host asks daemons for its secret: run the command launch_remote() prints ",
                    "(it sets MIRAI_SECRET), or set daemons(auth = FALSE) on the host for a trusted network.")
    }
    stop(simpleError(msg, sys.call(-1L)))
  }
  invisible(res)
}

serve_loop <- function(url, asyncdial, autoexit, cleanup, output, idletime, walltime, maxtasks,
                       tls_ca, rs, secret) {
  if (!output) {
    devnull <- file(nullfile(), open = "w")
    sink(devnull)
    sink(devnull, type = "message")
    on.exit({ sink(type = "message"); sink(); close(devnull) }, add = TRUE)
  }
  was_daemon <- .state$daemon
  .state$daemon <- TRUE
  on.exit(.state$daemon <- was_daemon, add = TRUE)
  snapshot <- NULL
  take_snapshot <- function() {
    snapshot <<- list(globals = ls(.GlobalEnv, all.names = TRUE), search = search(), options = options(),
                      state = .Call(rmirai_state))
  }
  take_snapshot()
  # Read by the C layer from this frame: the serialization hooks (from the init bundle's
  # serial_config) and the functions below.
  read_hook <- NULL
  write_hook <- NULL
  evaluate <- function(task, everywhere) {
    # What an everywhere task changed stays, even when it fails part way (as in R's mirai).
    if (everywhere) on.exit(take_snapshot())
    run_task(task)
  }
  init <- function(id, stream, blob) {
    if (length(blob)) {
      serial <- unserialize(blob)
      read_hook <<- serial_reader(serial)
      write_hook <<- serial_writer(serial)
    }
    if (!is.null(rs)) assign(".Random.seed", as.integer(rs), envir = .GlobalEnv)
    else assign(".Random.seed", c(10407L, as.integer(ifelse(stream > .Machine$integer.max, stream - 2^32, stream))), envir = .GlobalEnv)
  }
  # Restores what the task changed. The usual task changes nothing: the C layer checks that
  # against `snapshot$state` first, with `cleans` set, and calls this only when something did.
  cleans <- isTRUE(cleanup)
  cleanup_task <- function() {
    if (!isTRUE(cleanup)) return(invisible())
    changed <- .Call(rmirai_state_changed, snapshot$state)
    if (!any(changed)) return(invisible())
    if (changed[1L]) rm(list = setdiff(ls(.GlobalEnv, all.names = TRUE), c(snapshot$globals, ".Random.seed")), envir = .GlobalEnv)
    if (changed[2L]) for (s in setdiff(search(), snapshot$search)) detach(s, character.only = TRUE)
    if (changed[3L]) options(snapshot$options)
    snapshot$state <<- .Call(rmirai_state)
  }
  opts <- c(as.numeric(isTRUE(asyncdial)), if (isTRUE(autoexit)) 0 else if (is.na(autoexit)) 1 else 2,
            as.numeric(maxtasks), as.numeric(idletime), as.numeric(walltime))
  tryCatch(.Call(rmirai_daemon, url, opts, environment(), secret, tls_ca), error = identity)
}

#' Evaluates one task: `._globals_.` into the global environment, the rest of the list as the
#' local environment of `._expr_.`. An error or interrupt is recorded as a miraiError or
#' miraiInterrupt by a calling handler (no exiting handler to pay for on every task), which then
#' unwinds to the C layer with the "abort" restart: that skips R's top-level error handling
#' (`options(error =)`, the traceback), as an exiting handler would.
#' @noRd
run_task <- function(task) {
  .state$failure <- NULL
  globals <- task[["._globals_."]]
  if (length(globals)) list2env(globals, envir = .GlobalEnv)
  expr <- task[["._expr_."]]
  task[["._expr_."]] <- NULL
  task[["._globals_."]] <- NULL
  frames <- sys.nframe() + 3L # this call, withCallingHandlers() and eval() (two frames): not the task's
  withCallingHandlers(
    eval(expr, envir = list2env(task, parent = .GlobalEnv)),
    error = function(e) {
      .state$failure <- mirai_error(e, sys.calls()[-seq_len(frames)])
      invokeRestart("abort")
    },
    interrupt = function(e) {
      .state$failure <- structure("", class = c("miraiInterrupt", "errorValue", "try-error"))
      invokeRestart("abort")
    },
    # Shown as it happens (R would keep it for the top level, which a daemon reaches only when
    # it exits): to the output sink, or to the daemon's stderr with `output = TRUE`. Under
    # options(warn = 2) it goes on to become the task's error.
    warning = function(w) {
      if (getOption("warn", 0) < 2) {
        message("Warning: ", conditionMessage(w))
        invokeRestart("muffleWarning")
      }
    }
  )
}

# What to send for a task that failed with R error `message`: the failure recorded by
# run_task's handlers, else (unserializing or serializing failed) a miraiError of the message.
failed <- function(message) {
  failure <- .state$failure
  .state$failure <- NULL
  if (!is.null(failure)) return(failure)
  mirai_error(simpleError(sub("^Error[^:]*: *", "", sub("\n$", "", message))), NULL)
}

mirai_error <- function(e, calls) {
  call <- conditionCall(e)
  # An error raised by the expression itself carries the evaluator's own call: report none.
  if (is.call(call) && identical(call[[1L]], quote(eval))) call <- NULL
  msg <- if (is.null(call)) sprintf("Error: %s", conditionMessage(e))
         else sprintf("Error in %s: %s", paste(deparse(call, nlines = 1L), collapse = ""), conditionMessage(e))
  trace <- lapply(rev(calls)[-seq_len(2L)], function(x) { attributes(x) <- NULL; x })
  out <- structure(msg, class = c("miraiError", "errorValue", "try-error"))
  for (name in names(e)) attr(out, name) <- if (name == "call") { attributes(call) <- NULL; call } else e[[name]]
  attr(out, "condition.class") <- class(e)
  attr(out, "stack.trace") <- trace
  out
}
