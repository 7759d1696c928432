# A `parallel` cluster backed by mirai daemons: parLapply, clusterApplyLB and friends work on it.

#' Make a cluster of daemons for the parallel package
#'
#' @description
#' `make_cluster()` sets up `n` daemons in a compute profile reserved for the cluster, and
#' returns them as a cluster object that [parallel::parLapply()], [parallel::clusterApplyLB()],
#' [parallel::clusterEvalQ()] and the other functions of the `parallel` package accept.
#' `stop_cluster()` ends the cluster, and its daemons exit.
#'
#' @param n the number of nodes (daemons), 1 or more. Required for a cluster on this machine.
#'   With `url`, it may be left out: it is then the number of launches `remote` makes (the
#'   length of its `args` when that is a list, as for [ssh_config()]), or 1.
#' @param url `NULL` (the default) to start the daemons on this machine at once. Otherwise the
#'   URL the cluster's host listens at for daemons dialling in from elsewhere, for instance
#'   `host_url()[1]` (the forms accepted are those of `daemons(url =)`).
#' @param remote with `url`, a launch configuration from [ssh_config()], [cluster_config()],
#'   [http_config()] or [remote_config()] with which the daemons are started. Left `NULL`,
#'   nothing is launched: the shell commands that start the daemons are printed instead, to be
#'   run by hand on the machines concerned.
#' @param ... further named arguments for [daemons()], and through it for [daemon()] (such as
#'   `idletime`, `output` or `tls`). `dispatcher` and `cleanup` are set by `make_cluster()`
#'   itself, both to `FALSE`.
#'
#' @return `make_cluster()` returns an object of class `miraiCluster` (and `cluster`): a list of
#'   `n` nodes of class `miraiNode`. `stop_cluster()` returns `NULL`, invisibly.
#'
#' @details
#' Each cluster gets a profile of its own, named by a number in backquotes (`` `1` ``, `` `2` ``,
#' ...) that is never reused, so clusters do not interfere with each other or with the profiles
#' set with [daemons()]. Its daemons keep what tasks leave in their global environment
#' (`cleanup = FALSE`), as the workers of `parallel` do, so [parallel::clusterExport()] and
#' [parallel::clusterEvalQ()] have a lasting effect. A node works on one call at a time;
#' `parallel::recvData()` on a node gives `parallel`'s `list(type, value, success, tag)`.
#'
#' The cluster object can stand in for a profile name in a few places: [status()] accepts it
#' as `.compute`, and [launch_remote()] as `n` (to start further daemons for the cluster).
#' Subsetting it with `[` gives a plain list of nodes.
#'
#' @seealso [daemons()] for the compute profile behind a cluster, [launch_remote()] and the
#'   launch configurations.
#'
#' @examples
#' \donttest{
#' cl <- make_cluster(2)
#' cl
#' parallel::parLapply(cl, 1:4, function(x) x^2)
#' parallel::clusterApplyLB(cl, c(4, 9), sqrt)
#' status(cl)$connections
#' stop_cluster(cl)
#' daemons(0)
#' }
#' \dontrun{
#' # Daemons that dial in from other machines: the commands to run there are printed.
#' cl <- make_cluster(4, url = host_url()[1])
#' stop_cluster(cl)
#'
#' # One node on each of two machines, started over SSH.
#' cl <- make_cluster(url = host_url(port = 5555)[1],
#'                    remote = ssh_config(c("ssh://node1", "ssh://node2")))
#' stop_cluster(cl)
#' }
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
    do.call(daemons, c(list(n, dispatcher = FALSE, .compute = id), cluster_daemon_args(...)))
  } else {
    do.call(daemons, c(list(url = url, remote = remote, dispatcher = FALSE, .compute = id), cluster_daemon_args(...)))
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

# Daemon arguments for a cluster's daemons: a cluster restores nothing between tasks (as
# parallel's workers), unless the caller asks for `cleanup`.
cluster_daemon_args <- function(...) {
  dots <- list(...)
  if (is.null(dots$cleanup)) dots$cleanup <- FALSE
  dots
}

#' @rdname make_cluster
#' @param cl a `miraiCluster`, as returned by `make_cluster()`.
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
# What a node evaluates: parallel's worker call, `fun` and `args` coming in the task's `.args`.
node_call <- quote(do.call(fun, args, quote = TRUE))

sendData.miraiNode <- function(node, data) {
  if (!daemons_set(node$id)) stop("cluster is no longer active")
  if (!is.list(data) || !is.list(data$data) || !is.function(data$data$fun)) stop("`data` must be a message from the parallel package")
  value <- data$data
  node$tag <- value$tag
  node$received <- FALSE
  node$mirai <- mirai(node_call, .args = list(fun = value$fun, args = value$args), .compute = node$id)
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
