# The daemon: libmirai's runtime calling back into R to evaluate each task.

#' Run a daemon: dial `url` and evaluate tasks until a limit is reached or the host goes.
#' Returns the exit code invisibly: 0 connection ended, 1 idletime, 2 walltime, 3 maxtasks.
#' `tlscert` is the CA chain to trust for a tls+tcp:// host: a PEM file, or c(chain PEM, "").
daemon <- function(url, dispatcher = TRUE, ..., asyncdial = FALSE, autoexit = TRUE,
                   cleanup = TRUE, output = FALSE, idletime = Inf, walltime = Inf,
                   maxtasks = Inf, tlscert = NULL, rs = NULL) {
  if (!is.character(url) || length(url) != 1L || is.na(url) || !grepl("://", url, fixed = TRUE)) stop("`url` must be a valid URL")
  for (limit in list(idletime, walltime, maxtasks)) {
    if (!is.numeric(limit) || length(limit) != 1L || is.na(limit) || limit < 0) stop("`idletime`, `walltime` and `maxtasks` must be non-negative numbers")
  }
  if (!is.logical(autoexit) || length(autoexit) != 1L) stop("`autoexit` must be TRUE, FALSE or NA")
  for (flag in c("asyncdial", "cleanup", "output")) check_flag(get(flag), flag)
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
  # Restores what the task changed (the usual task changes nothing, which is checked cheaply).
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
run_task <- function(task) {
  .state$failure <- NULL
  globals <- task[["._globals_."]]
  for (name in names(globals)) assign(name, globals[[name]], envir = .GlobalEnv)
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
