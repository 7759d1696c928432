# Promises for mirai: settled from libmirai's completion callback on R's event loop (later),
# never by polling.

.state$promises <- new.env(parent = emptyenv())
.state$key <- 0

# A key announcing the next task's completion through later, when later is installed (it is then
# loaded once, and libmirai gets its thread-safe scheduler).
promise_key <- function() {
  if (is.null(.state$later)) {
    .state$later <- requireNamespace("later", quietly = TRUE)
    if (.state$later) .Call(rmirai_use_later, promise_ready)
  }
  if (!.state$later) return(NULL)
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
  else if (is_error_value(value)) entry$reject(simpleError(nextcode(value)))
  else entry$resolve(value)
}

as.promise.mirai <- function(x) {
  if (!is.null(x$promise)) return(x$promise)
  x$promise <- promises::promise(function(resolve, reject) {
    entry <- list(mirai = x, resolve = resolve, reject = reject)
    if (!unresolved(x)) {
      later::later(function() settle(entry))
    } else if (is.null(x$key)) {
      stop("this mirai was created before the 'later' package was available")
    } else {
      assign(format(x$key, scientific = FALSE), entry, envir = .state$promises)
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
