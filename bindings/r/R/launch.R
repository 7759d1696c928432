# Remote daemons: launch configurations and launch_remote, on libmirai's launchers (which pass the
# host's secret and TLS CA without putting them on a command line).

#' A generic launcher: `command args`, where the element "." of `args` becomes the daemon command.
remote_config <- function(command = NULL, args = c("", "."), rscript = "Rscript", quote = FALSE) {
  if (!is.null(command) && (!is.character(command) || length(command) != 1L || is.na(command))) stop("`command` must be a character string or NULL")
  if (!is.character(args) && !(is.list(args) && all(vapply(args, is.character, NA)))) stop("`args` must be a character vector, or a list of them")
  check_rscript(rscript)
  if (!"." %in% unlist(args)) stop("`.` must be an element of the character vector(s) supplied to `args`")
  list(command = command, args = args, rscript = rscript, quote = quote, tunnel = FALSE)
}

#' One daemon per `ssh://[user@]host[:port]` remote, optionally through a reverse tunnel. The
#' fields are R mirai's (`command`, `args` as one `c(options, host, ".")` per remote, `rscript`,
#' `quote`, `tunnel`) plus `remotes` and `timeout`. With `command = "ssh"` libmirai's SSH
#' launcher runs it (the secret and CA travel on ssh's stdin); any other command is run as
#' `command args` with the secret in its environment.
ssh_config <- function(remotes, tunnel = FALSE, timeout = 10, command = "ssh", rscript = "Rscript") {
  if (!is.character(remotes) || !length(remotes) || anyNA(remotes)) stop("`remotes` must be a character vector of ssh:// URLs")
  if (!isTRUE(tunnel) && !isFALSE(tunnel)) stop("`tunnel` must be either TRUE or FALSE")
  check_number(timeout, "timeout", 1, 86400)
  check_rscript(rscript)
  if (!is.character(command) || length(command) != 1L || is.na(command)) stop("`command` must be a character string")
  args <- lapply(remotes, function(r) {
    parts <- regmatches(r, regexec("^(ssh://)?([^:/]+)(:([0-9]+))?/?$", r))[[1L]]
    if (!length(parts)) stop(sprintf("`remotes` must be ssh://[user@]host[:port] URLs, not '%s'", r))
    port <- if (nzchar(parts[5L])) parts[5L] else "22"
    c(sprintf("-o ConnectTimeout=%d -fTp %s", as.integer(timeout), port), parts[3L], ".")
  })
  list(command = command, args = args, rscript = rscript, quote = TRUE, tunnel = tunnel,
       remotes = remotes, timeout = timeout, type = "ssh")
}

#' HPC job arrays. With `command` "sbatch", "qsub" (`scheduler = "sge"` or "pbs") or "bsub",
#' libmirai submits one job array; any other command (srun, a wrapper) gets R mirai's shell
#' form: the job script on its standard input. `options` are lines of the job script:
#' directives such as "#SBATCH --mem=1G" (or "--mem=1G") and commands such as "module load R",
#' run before the daemon. The fields are R mirai's (`command` "/bin/sh", `args` holding the
#' script, `rscript`, `quote`) plus `submit`, `options` (the lines) and `scheduler`.
cluster_config <- function(command = "sbatch", options = "", rscript = "Rscript", scheduler = NULL) {
  if (!is.character(command) || length(command) != 1L || is.na(command) || !nzchar(command)) stop("`command` must be a character string")
  if (!is.character(options) || length(options) != 1L || is.na(options)) stop("`options` must be a character string")
  check_rscript(rscript)
  known <- c(sbatch = "slurm", qsub = "sge", bsub = "lsf")
  if (is.null(scheduler)) {
    if (basename(command) %in% names(known)) scheduler <- known[[basename(command)]]
  } else if (!is.character(scheduler) || length(scheduler) != 1L || !scheduler %in% c("slurm", "sge", "pbs", "lsf")) {
    stop("`scheduler` must be one of \"slurm\", \"sge\", \"pbs\" or \"lsf\"")
  }
  lines <- trimws(strsplit(options, "\n", fixed = TRUE)[[1L]])
  lines <- lines[nzchar(lines)]
  list(command = "/bin/sh",
       args = c(sprintf("%s<<'EOF'\n#!/bin/sh\n%s\n", command, paste(lines, collapse = "\n")), ".", "\nEOF"),
       rscript = rscript, quote = NULL, type = "cluster", submit = command, options = lines,
       scheduler = if (!is.null(scheduler)) match(scheduler, c("slurm", "sge", "pbs", "lsf")) - 1L)
}

check_rscript <- function(rscript) {
  if (!is.character(rscript) || !length(rscript) || anyNA(rscript)) stop("`rscript` must be a character vector (the command running Rscript)")
}

# `rscript` may be a vector, e.g. c("env", "R_LIBS=/lib", "Rscript"), for remotes that need it.
daemon_argv <- function(p, rscript, url = "{url}") c(rscript, "-e", daemon_call(url, p))

# The shell command starting one daemon by hand: the host's secret in the environment and the
# TLS CA, if any, in the call (R's `tlscert = c(<PEM>, "")`).
launch_command <- function(p, rscript) {
  call <- daemon_call(p$url, p, embed_ca = TRUE)
  secret <- .Call(rmirai_secret, p$host)
  env <- if (is.null(secret)) "" else sprintf("MIRAI_SECRET=%s ", secret)
  sprintf("%s%s -e %s", env, paste(rscript, collapse = " "), shQuote(call))
}

#' Launch daemons with a remote configuration. Returns the launch commands (class
#' `miraiLaunchCmd`), which are also yours to run by hand when the configuration has no
#' `command`. Fires and forgets, as R's mirai does: daemons join when they start (a launcher's
#' failure shows as daemons that never connect: see `status()`).
launch_remote <- function(n = 1L, remote = remote_config(), ..., .compute = NULL) {
  if (inherits(n, "miraiCluster")) {
    .compute <- attr(n, "id")
    n <- length(n)
  } else if (inherits(n, "miraiNode")) {
    .compute <- n$id
    n <- 1L
  }
  check_count(n)
  if (!is.list(remote) || (is.null(remote$rscript) && !identical(remote$type, "http"))) {
    stop("`remote` must be made by remote_config(), ssh_config(), cluster_config() or http_config()")
  }
  profile <- launchable_profile(.compute)
  p <- with_launch_args(profile, list(...))
  if (identical(remote$type, "http")) return(launch_http(p, remote, n))
  if (identical(remote$type, "ssh")) n <- length(remote$remotes)
  # `args` as a list: one launch per element (n must be 1 or match); otherwise n launches.
  sets <- if (is.list(remote$args)) remote$args else list(remote$args)
  if (length(sets) > 1L) {
    if (n != 1L && n != length(sets)) stop("`n` must equal the length of `args`, or either must be 1")
    n <- length(sets)
  }
  commands <- structure(rep(launch_command(p, remote$rscript), n), class = "miraiLaunchCmd")
  if (is.null(remote$command)) return(commands)
  argv <- daemon_argv(p, remote$rscript)
  if (identical(remote$type, "ssh") && isTRUE(remote$tunnel) && !grepl("^[a-z+]+://127\\.0\\.0\\.1:", p$url)) {
    stop("SSH tunnelling requires daemons `url` hostname to be `127.0.0.1`")
  }
  if (identical(remote$type, "ssh") && identical(remote$command, "ssh")) {
    options <- Sys.getenv("MIRAI_SSH_OPTIONS")
    options <- if (nzchar(options)) strsplit(options, " ", fixed = TRUE)[[1L]] else character()
    .Call(rmirai_launch_ssh, p$host, remote$remotes, remote$tunnel, 0L, as.integer(remote$timeout), options, argv)
  } else if (identical(remote$type, "cluster") && !is.null(remote$scheduler)) {
    profile$jobs <- c(profile$jobs, .Call(rmirai_launch_cluster, p$host, remote$scheduler, remote$options, argv, as.integer(n)))
  } else if (identical(remote$type, "cluster")) {
    # The job script on the submit command's stdin: the daemon's command line and the directive
    # lines come in as positional parameters, so the shell expands nothing inside them.
    script <- sprintf("%s <<EOF\n#!/bin/sh\n$2\n$1\nEOF", remote$submit)
    .Call(rmirai_launch_remote, p$host, "/bin/sh", c("-c", script, "sh", ".", paste(remote$options, collapse = "\n")),
          FALSE, argv, as.integer(n))
  } else {
    each <- if (length(sets) > 1L) 1L else as.integer(n)
    for (args in sets) .Call(rmirai_launch_remote, p$host, remote$command, as.character(args), isTRUE(remote$quote), argv, each)
  }
  commands
}

print.miraiLaunchCmd <- function(x, ...) {
  for (i in seq_along(x)) cat(sprintf("[%d]\n%s\n\n", i, x[i]))
  invisible(x)
}

#' An HTTP API that starts daemons (for example Posit Workbench's job launcher, the default).
#' Every field may be a function, called at launch time; `data(...)` gets `...`, and its `%s`
#' receives the daemon's R call, JSON-escaped.
http_config <- function(url = posit_workbench_url, method = "POST", headers = posit_workbench_headers,
                        data = posit_workbench_data, ..., cookie = NULL, token = NULL) {
  list(type = "http", url = url, method = method, headers = headers, data = data, dots = list(...),
       cookie = cookie, token = token)
}

# One request per daemon. Returns the responses, each list(status, data), or an errorValue when
# the API could not be reached.
launch_http <- function(p, remote, n) {
  field <- function(x, ...) if (is.function(x)) x(...) else x
  responses <- vector("list", n)
  for (i in seq_len(n)) {
    headers <- field(remote$headers)
    if (!is.null(headers) && (!is.character(headers) || is.null(names(headers)))) stop("`headers` must be a named character vector")
    cookie <- field(remote$cookie)
    token <- field(remote$token)
    for (v in list(cookie, token)) if (!is.null(v) && (!is.character(v) || length(v) != 1L || is.na(v))) stop("`cookie` and `token` must be character strings")
    if (!is.null(cookie)) headers <- c(headers, Cookie = cookie)
    if (!is.null(token)) headers <- c(headers, Authorization = paste("Bearer", token))
    data <- do.call(field, c(list(remote$data), remote$dots))
    if (!is.character(data) || length(data) != 1L || !grepl("%s", data, fixed = TRUE)) {
      stop("`data` must be a character string containing %s, where the daemon call goes")
    }
    body <- sub("%s", json_escape(api_daemon_call(p)), data, fixed = TRUE)
    responses[[i]] <- http_request(field(remote$url), remote$method, headers, body)
  }
  invisible(responses)
}

# The daemon call for an API that runs `Rscript -e <call>` itself: the secret, and a generated
# TLS certificate, travel inside the call.
api_daemon_call <- function(p) {
  call <- daemon_call(p$url, p, embed_ca = TRUE)
  secret <- .Call(rmirai_secret, p$host)
  if (is.null(secret)) call else sprintf("{Sys.setenv(MIRAI_SECRET=\"%s\");%s}", secret, call)
}

json_escape <- function(x) gsub("\n", "\\n", gsub("\"", "\\\"", gsub("\\", "\\\\", x, fixed = TRUE), fixed = TRUE), fixed = TRUE)

# An HTTP request through libmirai (plain http://, 5 s timeout): list(status, data), or an
# errorValue when there is no answer.
http_request <- function(url, method, headers = NULL, body = "") {
  lines <- if (length(headers)) paste0(names(headers), ": ", headers) else character()
  res <- .Call(rmirai_http_request, url, method, lines, body)
  if (is.integer(res)) return(error_value(res))
  res
}

posit_workbench_url <- function() paste0(Sys.getenv("RS_SERVER_ADDRESS"), "/api/launch_job")

posit_workbench_headers <- function() {
  cookie <- Sys.getenv("RS_SESSION_RPC_COOKIE")
  c(`Content-Type` = "application/json", Cookie = cookie, `X-RS-Session-Server-RPC-Cookie` = cookie)
}

# The launch_job request. Without `cluster` or resources, the first cluster and resource profile
# that Workbench lists are used (reading that list needs the jsonlite package).
posit_workbench_data <- function(rscript = "Rscript", job_name = "mirai_daemon", cluster = NULL,
                                 resource_profile = NULL, cpus = NULL, memory = NULL, image = NULL) {
  if (is.null(cluster) || (is.null(resource_profile) && is.null(cpus) && is.null(memory))) {
    envs <- posit_compute_envs()
    if (is.null(cluster)) cluster <- envs$cluster
    if (is.null(resource_profile) && is.null(cpus) && is.null(memory)) resource_profile <- envs$profile
    if (is.null(image)) image <- envs$image
  }
  resources <- if (!is.null(cpus) || !is.null(memory)) {
    sprintf("\"resources\":{\"cpus\":%s,\"memory\":%s}", if (is.null(cpus)) 1 else cpus, if (is.null(memory)) 512 else memory)
  } else {
    sprintf("\"resourceProfile\":\"%s\"", json_escape(resource_profile))
  }
  container <- if (is.null(image)) "" else sprintf("\"container\":{\"image\":\"%s\"},", json_escape(image))
  libs <- paste(sprintf("\\\"%s\\\"", json_escape(.libPaths())), collapse = ",")
  sprintf(paste0("{\"method\":\"launch_job\",\"kwparams\":{\"job\":{\"cluster\":\"%s\",%s\"name\":\"%s\",",
                 "\"exe\":\"%s\",\"args\":[\"-e\",\"{.libPaths(c(%s));%%s}\"],%s}}}"),
          json_escape(cluster), container, json_escape(job_name), json_escape(rscript), libs, resources)
}

posit_compute_envs <- function() {
  if (!requireNamespace("jsonlite", quietly = TRUE)) {
    stop("give `cluster` and `resource_profile` (or `cpus`/`memory`): listing Workbench's clusters needs the jsonlite package")
  }
  res <- http_request(paste0(Sys.getenv("RS_SERVER_ADDRESS"), "/api/get_compute_envs"), "GET", posit_workbench_headers())
  if (is_error_value(res) || res$status != 200L) stop("Posit Workbench's get_compute_envs could not be read")
  envs <- jsonlite::fromJSON(res$data, simplifyVector = FALSE)$result
  cluster <- envs$clusters[[1L]]
  list(cluster = cluster$name, profile = cluster$resourceProfiles[[1L]]$name, image = cluster$defaultImage)
}
