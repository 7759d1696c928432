# Promises for mirai: settled from libmirai's completion callback on R's event loop (later),
# never by polling.

.state$promises <- new.env(parent = emptyenv())
.state$key <- 0

# A new key to announce a task's completion under, through later (loaded, and its thread-safe
# scheduler handed to libmirai, the first time).
promise_key <- function() {
  if (is.null(.state$later)) {
    requireNamespace("later")
    .Call(rmirai_use_later, promise_ready)
    .state$later <- TRUE
  }
  .state$key <- .state$key + 1
  .state$key
}

# Called on the event loop when the task with `key` resolves.
promise_ready <- function(key) {
  name <- format(key, scientific = FALSE)
  entry <- .state$promises[[name]]
  if (is.null(entry)) return(invisible())
  rm(list = name, envir = .state$promises)
  settle(entry)
}

settle <- function(entry) entry$resolve(collect_value(entry$mirai))

# A failed mirai's value as the promise's rejection: raised inside a `then` handler, where
# promises (and Shiny's stack-trace capture) expect errors to arise, not from a bare later
# callback (Shiny 1.7 then cannot print the error and drops the session).
reject_failure <- function(value) {
  if (is_mirai_interrupt(value)) return(value)
  if (is_mirai_error(value)) stop(simpleError(as.character(value), call = NULL))
  if (is_error_value(value)) stop(simpleError(error_text(value), call = NULL))
  value
}

as.promise.mirai <- function(x) {
  if (!is.null(x$promise)) return(x$promise)
  settled <- promises::promise(function(resolve, reject) {
    entry <- list(mirai = x, resolve = resolve)
    if (!unresolved(x)) {
      later::later(function() settle(entry))
    } else {
      # Only now does the task's completion need announcing: libmirai calls back (at once if
      # it has resolved meanwhile) and later runs `promise_ready` on the event loop.
      key <- promise_key()
      assign(format(key, scientific = FALSE), entry, envir = .state$promises)
      .Call(rmirai_on_done, x$handle, key)
    }
  })
  x$promise <- promises::then(settled, onFulfilled = reject_failure)
  x$promise
}

as.promise.mirai_map <- function(x) {
  if (is.null(attr(x, "promise"))) attr(x, "promise") <- promises::promise_all(.list = lapply(x, as.promise.mirai))
  attr(x, "promise")
}

is.promising.mirai <- function(x) TRUE
is.promising.mirai_map <- function(x) TRUE
