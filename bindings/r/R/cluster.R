# A `parallel` cluster backed by mirai daemons: parLapply, clusterApplyLB and friends work on it.

#' Create a cluster of `n` local daemons (a compute profile of its own).
make_cluster <- function(n, url = NULL, remote = NULL, ...) {
  id <- sprintf("`%d`", length(ls(.state$profiles, all.names = TRUE)))
  daemons(n, url = url, dispatcher = FALSE, cleanup = FALSE, ..., .compute = id)
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

`[.miraiCluster` <- function(x, i) structure(unclass(x)[i], class = c("miraiCluster", "cluster"), id = attr(x, "id"))

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
  i <- race_mirai(lapply(pending, `[[`, "mirai"), .compute = attr(cl, "id"))
  node <- pending[[i]]
  list(node = node$index, value = recvData.miraiNode(node))
}
