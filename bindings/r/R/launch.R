# Remote daemons: launch configurations and launch_remote, on libmirai's launchers (which pass the
# host's secret and TLS CA without putting them on a command line).

#' A generic launcher: `command args`, where the element "." of `args` becomes the daemon command.
remote_config <- function(command = NULL, args = c("", "."), rscript = "Rscript", quote = FALSE) {
  if (!"." %in% unlist(args)) stop("`.` must be an element of the character vector(s) supplied to `args`")
  list(command = command, args = args, rscript = rscript, quote = quote, tunnel = FALSE)
}

#' One daemon per `ssh://[user@]host[:port]` remote, optionally through a reverse tunnel.
ssh_config <- function(remotes, tunnel = FALSE, timeout = 10, command = "ssh", rscript = "Rscript") {
  list(command = command, remotes = remotes, rscript = rscript, quote = TRUE, tunnel = tunnel,
       timeout = timeout, type = "ssh")
}

#' HPC job arrays: `command` is "sbatch", "qsub" (with `scheduler = "sge"` or "pbs") or "bsub";
#' `options` are directive lines such as "#SBATCH --mem=1G" (the prefix is optional).
cluster_config <- function(command = "sbatch", options = "", rscript = "Rscript", scheduler = NULL) {
  scheduler <- if (is.null(scheduler)) switch(command, sbatch = "slurm", qsub = "sge", bsub = "lsf", "slurm") else scheduler
  lines <- trimws(strsplit(options, "\n", fixed = TRUE)[[1L]])
  lines <- sub("^#(SBATCH|\\$|PBS|BSUB)[[:space:]]*", "", lines[nzchar(lines)])
  list(command = command, options = lines, rscript = rscript, quote = NULL, type = "cluster",
       scheduler = match(scheduler, c("slurm", "sge", "pbs", "lsf")) - 1L)
}

# `rscript` may be a vector, e.g. c("env", "R_LIBS=/lib", "Rscript"), for remotes that need it.
daemon_argv <- function(p, rscript, url = "{url}") c(rscript, "-e", daemon_call(url, p$dots))

#' Launch daemons with a remote configuration; waits until they are connected.
launch_remote <- function(n = 1L, remote = remote_config(), ..., .compute = NULL) {
  p <- get_profile(.compute)
  if (is.null(p)) stop("daemons must be set to launch daemons")
  dots <- list(...)
  if (length(dots)) p$dots <- Filter(function(x) is.logical(x) || is.numeric(x), dots)
  argv <- daemon_argv(p, remote$rscript)
  before <- .Call(rmirai_counters, p$host)[1L]
  if (identical(remote$type, "ssh")) {
    options <- Sys.getenv("MIRAI_SSH_OPTIONS")
    options <- if (nzchar(options)) strsplit(options, " ", fixed = TRUE)[[1L]] else character()
    .Call(rmirai_launch_ssh, p$host, remote$remotes, remote$tunnel, 0L, as.integer(remote$timeout), options, argv)
    n <- length(remote$remotes)
  } else if (identical(remote$type, "cluster")) {
    p$jobs <- c(p$jobs, .Call(rmirai_launch_cluster, p$host, remote$scheduler, remote$options, argv, as.integer(n)))
  } else {
    if (is.null(remote$command)) stop("`command` must be given to launch with a remote_config")
    .Call(rmirai_launch_remote, p$host, remote$command, as.character(unlist(remote$args)), isTRUE(remote$quote), argv, as.integer(n))
  }
  if (!identical(remote$type, "cluster")) .Call(rmirai_wait_launched, p$host, before + n, 120000)
  invisible(n)
}
