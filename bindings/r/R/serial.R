# Custom serialization for reference objects (external pointers such as torch tensors or Arrow
# tables): a class's `sfunc` turns an object into raw bytes and its `ufunc` turns them back.
# Configurations travel to daemons in their init bundle, and apply in both directions.

.state$serial <- NULL

#' A serialization configuration for one or more classes: as R's mirai (nanonext) makes it, the
#' unnamed list(class, sfunc, ufunc), `sfunc` and `ufunc` a function or a list of one per class.
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

#' Registers a configuration for every later `daemons()` call that gives no `serial`.
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
