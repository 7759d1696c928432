# A `parallel` cluster backed by mirai daemons: parLapply, clusterApplyLB and friends work on it.

#' Create a cluster of `n` daemons, a compute profile of its own: local daemons, or with `url`
#' daemons that dial in (launched with `remote`, or by hand: the commands are printed). With
#' `url`, `n` defaults to the number of launches `remote` makes, else 1.
make_cluster <- function(n, url = NULL, remote = NULL, ...) {
  if (missing(n)) {
    if (is.null(url)) stop("`n` must be supplied for a local cluster")
    n <- if (is.list(remote) && is.list(remote$args)) length(remote$args) else 1L
  }
  if (!is.numeric(n) || length(n) != 1L || is.na(n) || n < 1) stop("`n` must be 1 or greater")
  # IDs only grow: a stopped cluster's ID is never handed to another.
  .state$clusters <- .state$clusters + 1L
  id <- sprintf("`%d`", .state$clusters)
  if (is.null(url)) {
    daemons(n, dispatcher = FALSE, cleanup = FALSE, ..., .compute = id)
  } else {
    daemons(url = url, remote = remote, dispatcher = FALSE, cleanup = FALSE, ..., .compute = id)
    if (is.null(remote)) {
      cat("Shell commands for deployment on nodes:\n\n", file = stdout())
      print(launch_remote(n, .compute = id))
    }
  }
  nodes <- lapply(seq_len(n), function(i) {
    node <- new.env(parent = emptyenv())
    node$id <- id
    node$index <- i
    structure(node, class = "miraiNode")
  })
  structure(nodes, class = c("miraiCluster", "cluster"), id = id)
}

#' Stop a cluster (its daemons exit).
stop_cluster <- function(cl) {
  daemons(0L, .compute = attr(cl, "id"))
  invisible()
}

stopCluster.miraiCluster <- function(cl) stop_cluster(cl)

`[.miraiCluster` <- function(x, ...) .subset(x, ...)

print.miraiCluster <- function(x, ...) {
  cat(sprintf("< miraiCluster | ID: %s nodes: %d active: %s >\n", attr(x, "id"), length(x), daemons_set(attr(x, "id"))))
  invisible(x)
}

print.miraiNode <- function(x, ...) {
  cat(sprintf("< miraiNode | node: %d cluster ID: %s >\n", x$index, x$id))
  invisible(x)
}

# parallel's worker protocol: an EXEC message becomes a mirai of `fun(args)` on the node.
sendData.miraiNode <- function(node, data) {
  if (!daemons_set(node$id)) stop("cluster is no longer active")
  if (!is.list(data) || !is.list(data$data) || !is.function(data$data$fun)) stop("`data` must be a message from the parallel package")
  value <- data$data
  node$tag <- value$tag
  node$received <- FALSE
  node$mirai <- mirai(do.call(fun, args, quote = TRUE), .args = list(fun = value$fun, args = value$args),
                      .compute = node$id)
  invisible()
}

recvData.miraiNode <- function(node) {
  value <- collect_value(node$mirai)
  node$received <- TRUE
  list(type = "VALUE", value = value, success = !is_error_value(value), tag = node$tag)
}

recvOneData.miraiCluster <- function(cl) {
  pending <- Filter(function(node) !is.null(node$mirai) && !isTRUE(node$received), unclass(cl))
  if (!length(pending)) stop("no node of this cluster has a result pending")
  i <- race_mirai(lapply(pending, `[[`, "mirai"), .compute = attr(cl, "id"))
  node <- pending[[i]]
  list(node = node$index, value = recvData.miraiNode(node))
}
