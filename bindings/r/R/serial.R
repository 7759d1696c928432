# Custom serialization for reference objects (external pointers such as torch tensors or Arrow
# tables): a class's `sfunc` turns an object into raw bytes and its `ufunc` turns them back.
# Configurations travel to daemons in their init bundle, and apply in both directions.

.state$serial <- NULL

#' Custom serialization configuration
#'
#' @description
#' Makes a configuration that tells mirai how to send objects of the given classes, for objects
#' that R's own serialization cannot carry usefully, typically those holding external pointers
#' (torch tensors, Arrow tables): `sfunc` turns such an object into a raw vector, and `ufunc`
#' rebuilds the object from it. Give it to `daemons(serial =)`, or register it for every
#' profile with [register_serial()].
#'
#' @param class the class names, a character vector.
#' @param sfunc a function taking an object of the class and returning a raw vector; for
#'   several classes, a list of such functions, one per class, in the same order.
#' @param ufunc a function taking that raw vector and returning the object; for several
#'   classes, a list of them, one per class.
#'
#' @return The unnamed list `list(class, sfunc, ufunc)`, the form R's mirai uses.
#'
#' @details
#' The configuration applies in both directions: to what is sent to daemons (the expression,
#' `...` and `.args`) and to the results they send back. Daemons receive it when they connect.
#' R consults it for the objects it treats as references, that is environments and external
#' pointers, and an object is matched to the first of the classes it inherits from. The raw
#' vector is carried hex-encoded in R's persistent-reference hook, so the bytes sent differ
#' from R's mirai's, though the values arrive the same. `sfunc` must return a raw vector:
#' anything else is an error when the object is serialized.
#'
#' @seealso [register_serial()], [daemons()].
#'
#' @examples
#' # Objects of class "counter" are environments: send the values they hold.
#' cfg <- serial_config(
#'   "counter",
#'   sfunc = function(x) serialize(as.list.environment(x), NULL),
#'   ufunc = function(bytes) structure(list2env(unserialize(bytes)), class = "counter")
#' )
#' \donttest{
#' daemons(1, serial = cfg)
#' obj <- structure(list2env(list(n = 41)), class = "counter")
#' res <- mirai({ x$n <- x$n + 1; x }, x = obj)[]
#' class(res)
#' res$n
#' daemons(0)
#' }
serial_config <- function(class, sfunc, ufunc) {
  if (!is.character(class) || !length(class) || anyNA(class)) stop("`class` must be a character string")
  fs <- c(if (is.function(sfunc)) list(sfunc) else sfunc, if (is.function(ufunc)) list(ufunc) else ufunc)
  if (!is.list(fs) || !all(vapply(fs, is.function, logical(1L)))) stop("both `sfunc` and `ufunc` must be functions")
  if (length(if (is.function(sfunc)) 1L else sfunc) != length(class) || length(if (is.function(ufunc)) 1L else ufunc) != length(class)) {
    stop("`class`, `sfunc` and `ufunc` must be the same length")
  }
  list(class, sfunc, ufunc)
}

# A configuration (ours, nanonext's, or the named form) as list(class, sfunc = list, ufunc = list);
# NULL for none.
as_serial <- function(cfg) {
  if (is.null(cfg) || !length(cfg)) return(NULL)
  if (!is.list(cfg) || length(cfg) != 3L) stop("`serial` must be a configuration made by serial_config()")
  cfg <- serial_config(cfg[[1L]], cfg[[2L]], cfg[[3L]])
  as_list <- function(f) if (is.function(f)) list(f) else f
  list(class = cfg[[1L]], sfunc = as_list(cfg[[2L]]), ufunc = as_list(cfg[[3L]]))
}

#' Register a custom serialization configuration
#'
#' @description
#' Registers custom serialization (see [serial_config()]) for the given classes, for every
#' compute profile set afterwards by a [daemons()] call without `serial`. Packages that define
#' such classes can call it when they are loaded.
#'
#' @inheritParams serial_config
#'
#' @return `NULL`, invisibly.
#'
#' @details
#' Registrations add up for the rest of the session: each call appends its classes to those
#' registered before. Profiles already set keep the configuration they were given, and a
#' `serial` given to [daemons()] is used in place of the registered ones.
#'
#' @seealso [serial_config()].
#'
#' @examples
#' register_serial(
#'   "example_counter",
#'   sfunc = function(x) serialize(as.list.environment(x), NULL),
#'   ufunc = function(bytes) structure(list2env(unserialize(bytes)), class = "example_counter")
#' )
register_serial <- function(class, sfunc, ufunc) {
  cfg <- as_serial(serial_config(class, sfunc, ufunc))
  old <- .state$serial
  .state$serial <- list(class = c(old$class, cfg$class), sfunc = c(old$sfunc, cfg$sfunc),
                        ufunc = c(old$ufunc, cfg$ufunc))
  invisible()
}

hex <- function(x) paste(as.character(x), collapse = "")
unhex <- function(s) {
  n <- nchar(s)
  if (n == 0L) return(raw())
  as.raw(strtoi(substring(s, seq.int(1L, n, 2L), seq.int(2L, n, 2L)), 16L))
}

# R's persistent-reference hooks for a configuration: an object of the i-th class is written as
# c(i, hex of sfunc[[i]](object)) and read back with ufunc[[i]].
serial_writer <- function(cfg) {
  if (!length(cfg$class)) return(NULL)
  function(x) {
    for (i in seq_along(cfg$class)) {
      if (inherits(x, cfg$class[i])) {
        bytes <- cfg$sfunc[[i]](x)
        if (!is.raw(bytes)) stop(sprintf("Serialization function for `%s` did not return a raw vector", cfg$class[i]))
        return(c(as.character(i), hex(bytes)))
      }
    }
    NULL
  }
}

serial_reader <- function(cfg) {
  if (!length(cfg$class)) return(NULL)
  function(x) cfg$ufunc[[as.integer(x[1L])]](unhex(x[2L]))
}
