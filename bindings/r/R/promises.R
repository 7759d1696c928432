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

settle <- function(entry) {
  value <- collect_value(entry$mirai)
  if (is_mirai_interrupt(value)) entry$resolve(value)
  else if (is_mirai_error(value)) entry$reject(simpleError(as.character(value)))
  else if (is_error_value(value)) entry$reject(simpleError(error_text(value)))
  else entry$resolve(value)
}

as.promise.mirai <- function(x) {
  if (!is.null(x$promise)) return(x$promise)
  x$promise <- promises::promise(function(resolve, reject) {
    entry <- list(mirai = x, resolve = resolve, reject = reject)
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
  x$promise
}

as.promise.mirai_map <- function(x) {
  if (is.null(attr(x, "promise"))) attr(x, "promise") <- promises::promise_all(.list = lapply(x, as.promise.mirai))
  attr(x, "promise")
}

is.promising.mirai <- function(x) TRUE
is.promising.mirai_map <- function(x) TRUE
