# Custom serialization for reference objects (external pointers such as torch tensors or Arrow
# tables): a class's `sfunc` turns an object into raw bytes and its `ufunc` turns them back.
# Configurations travel to daemons in their init bundle, and apply in both directions.

.state$serial <- NULL

#' A serialization configuration for one or more classes.
serial_config <- function(class, sfunc, ufunc) {
  if (!is.character(class)) stop("`class` must be a character vector")
  if (is.function(sfunc)) sfunc <- list(sfunc)
  if (is.function(ufunc)) ufunc <- list(ufunc)
  if (length(class) != length(sfunc) || length(class) != length(ufunc) ||
      !all(vapply(c(sfunc, ufunc), is.function, logical(1)))) {
    stop("`sfunc` and `ufunc` must be functions, one of each per class")
  }
  list(class = class, sfunc = sfunc, ufunc = ufunc)
}

#' Registers a configuration for every later `daemons()` call that gives no `serial`.
register_serial <- function(class, sfunc, ufunc) {
  cfg <- serial_config(class, sfunc, ufunc)
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
