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

#' Make a mirai a promise
#'
#' @description
#' Methods for `promises::as.promise()`: a mirai, or a whole `mirai_map`, becomes a promise
#' that settles when the value comes in, for the promises package and for Shiny (an
#' `ExtendedTask`, for instance, takes a mirai directly). The methods for
#' `promises::is.promising()` answer `TRUE` for both classes.
#'
#' @param x a mirai, or a `mirai_map`.
#'
#' @return `as.promise()` returns a promise. A mirai's promise is fulfilled with the value, or
#'   rejected with an error when the value is a `miraiError` (the error's message, as
#'   printed) or an `errorValue` (the text of its code, such as `"5 | Timed out"`); a
#'   `miraiInterrupt` fulfils it. A map's promise is fulfilled with the list of the values,
#'   or rejected with the first rejection (it is made with `promises::promise_all()`). Asking
#'   again returns the same promise. `is.promising()` returns `TRUE`.
#'
#' @details
#' The promise settles on R's event loop, run by the later package: asking for it sets a
#' completion callback in libmirai, which passes the finished task to later's thread-safe
#' scheduler, so nothing polls. Its handlers therefore run only when the event loop does:
#' Shiny runs it; a script can call `later::run_now()`. The promises and later packages must be
#' installed.
#'
#' @method as.promise mirai
#' @seealso [mirai()], [mirai_map()] and its `.promise` argument.
#'
#' @examples
#' \donttest{
#' if (requireNamespace("promises", quietly = TRUE) &&
#'     requireNamespace("later", quietly = TRUE)) {
#'   daemons(1)
#'   result <- NULL
#'   p <- promises::then(promises::as.promise(mirai(6 * 7)), function(value) result <<- value)
#'   for (i in 1:100) if (is.null(result)) later::run_now(0.1)
#'   print(result)
#'   daemons(0)
#' }
#' }
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

#' @rdname as.promise.mirai
#' @method as.promise mirai_map
as.promise.mirai_map <- function(x) {
  if (is.null(attr(x, "promise"))) attr(x, "promise") <- promises::promise_all(.list = lapply(x, as.promise.mirai))
  attr(x, "promise")
}

#' @rdname as.promise.mirai
#' @method is.promising mirai
is.promising.mirai <- function(x) TRUE
#' @rdname as.promise.mirai
#' @method is.promising mirai_map
is.promising.mirai_map <- function(x) TRUE
