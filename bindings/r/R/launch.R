# Remote daemons: launch configurations and launch_remote, on libmirai's launchers (which pass the
# host's secret and TLS CA without putting them on a command line).

#' Launch configuration for any command
#'
#' @description
#' Describes how to start daemons with a command of your choice, for [launch_remote()] or
#' `daemons(remote =)`. Each daemon is started by running `command` with `args`, in which the
#' element `"."` is replaced by the daemon's own command line (`Rscript -e
#' 'mirai::daemon(...)'`).
#'
#' @param command the program to run (found on the PATH, or a path), such as `"ssh"`,
#'   `"docker"` or a script of your own. With `NULL` (the default) nothing is run:
#'   [launch_remote()] then just returns the commands that start the daemons, for you to run
#'   wherever they should run.
#' @param args the program's arguments: a character vector with `"."` as one element, or a list
#'   of such vectors, in which case there is one launch per element (see [launch_remote()]).
#' @param rscript how to run Rscript where the daemon starts: `"Rscript"` (the default) if it
#'   is on the PATH there, a full path, or a character vector of several words such as
#'   `c("env", "R_LIBS=/opt/R/library", "Rscript")`.
#' @param quote if `TRUE`, the daemon's command line is quoted for a shell when it replaces
#'   `"."`; this is needed when `command` hands it on to another shell, as `ssh` does. If
#'   `FALSE` (the default), it is passed as a single argument, unquoted.
#'
#' @return A list with the elements `command`, `args`, `rscript`, `quote` and `tunnel`
#'   (always `FALSE`), to be used as `remote`.
#'
#' @details
#' `command` runs with this session's environment, which includes `MIRAI_SECRET`, the secret
#' the daemons need to be accepted (see [daemons()]). When the daemon runs behind a barrier
#' that does not pass the environment on, such as a container, pass the variable explicitly
#' (as `-e MIRAI_SECRET` does for `docker run`). Launching does not wait for anything: a
#' command that fails shows only as a daemon that never connects (see [status()]).
#'
#' @seealso [ssh_config()], [cluster_config()] and [http_config()] for the usual launchers;
#'   [launch_remote()].
#'
#' @examples
#' # Launch nothing: launch_remote() will return the commands instead.
#' remote_config()
#'
#' # Daemons in containers; sh -c runs the daemon's command line inside.
#' remote_config(
#'   command = "docker",
#'   args = c("run", "--rm", "--network=host", "-e", "MIRAI_SECRET",
#'            "my-r-image", "sh", "-c", "."),
#'   rscript = "Rscript"
#' )
#'
#' # One launch for each element of a list.
#' remote_config(command = "ssh", args = list(c("node1", "."), c("node2", ".")), quote = TRUE)
#'
#' \dontrun{
#' daemons(url = host_url()[1])
#' launch_remote(2, remote = remote_config(command = "ssh", args = c("node1", "."),
#'                                         quote = TRUE))
#' daemons(0)
#' }
remote_config <- function(command = NULL, args = c("", "."), rscript = "Rscript", quote = FALSE) {
  if (!is.null(command) && (!is.character(command) || length(command) != 1L || is.na(command))) stop("`command` must be a character string or NULL")
  if (!is.character(args) && !(is.list(args) && all(vapply(args, is.character, NA)))) stop("`args` must be a character vector, or a list of them")
  check_rscript(rscript)
  if (!"." %in% unlist(args)) stop("`.` must be an element of the character vector(s) supplied to `args`")
  list(command = command, args = args, rscript = rscript, quote = quote, tunnel = FALSE)
}

#' Launch configuration for SSH
#'
#' @description
#' Describes daemons to be started over SSH, one on each of the machines in `remotes`, for
#' [launch_remote()] or `daemons(remote =)`. The daemons connect straight back to the host's
#' URL or, with `tunnel = TRUE`, through a reverse tunnel in the SSH connection.
#'
#' @param remotes the machines, a character vector of URLs of the form
#'   `"ssh://[user@]host[:port]"` (the `ssh://` may be left out; the port is 22 unless given).
#'   One daemon is launched on each, whatever `n` is given to [launch_remote()].
#' @param tunnel if `TRUE`, each SSH connection carries a reverse tunnel (`ssh -R`) from the
#'   port of the host's URL on the remote machine back to this one, and the daemon dials that,
#'   for machines that can reach this one by SSH only. The host must then listen on
#'   `127.0.0.1`, as with `daemons(url = local_url(tcp = TRUE, port = 5555))`; other URLs make
#'   [launch_remote()] stop with an error. `FALSE` by default.
#' @param timeout the number of seconds SSH may take to connect (its `ConnectTimeout`), from 1
#'   to 86400; 10 by default.
#' @param command the SSH program, `"ssh"` by default. With `"ssh"`, libmirai's own SSH
#'   launcher starts the daemons and hands them the secret (and, for TLS, the certificate to
#'   trust) on SSH's standard input, where no process listing shows it. Any other program is
#'   run as `command args`, with the secret in its environment (which reaches the remote
#'   daemon only if the program passes it on), and cannot tunnel.
#' @param rscript how to run Rscript on the remote machines: `"Rscript"` (the default) if on
#'   their PATH, a full path, or several words such as `c("env", "R_LIBS=/opt/lib", "Rscript")`.
#'
#' @return A list with the elements of R's mirai: `command`, `args` (for each remote, a
#'   character vector of SSH options, the host, and `"."`), `rscript`, `quote` (`TRUE`) and
#'   `tunnel`; and of this package: `remotes`, `timeout` and `type` (`"ssh"`). Use it as
#'   `remote`.
#'
#' @details
#' SSH must be able to log in without a password prompt (a key, or an agent). The environment
#' variable `MIRAI_SSH_OPTIONS` adds options, separated by spaces, to each `ssh` command
#' libmirai runs. The launch returns without waiting; the daemons appear in [status()] once
#' they have connected and authenticated.
#'
#' @seealso [launch_remote()], [host_url()] for a URL the remote machines can reach,
#'   [remote_config()] for other launchers.
#'
#' @examples
#' ssh_config(c("ssh://node1", "ssh://user@node2:2222"))
#' ssh_config("ssh://node1", tunnel = TRUE, timeout = 30, rscript = "/opt/R/bin/Rscript")
#'
#' \dontrun{
#' # The remote machines dial this one directly.
#' daemons(url = host_url(port = 5555)[1], remote = ssh_config(c("ssh://node1", "ssh://node2")))
#' status()
#' daemons(0)
#'
#' # Only SSH gets through: a tunnel, and a host on 127.0.0.1.
#' daemons(url = local_url(tcp = TRUE, port = 5555))
#' launch_remote(remote = ssh_config("ssh://node1", tunnel = TRUE))
#' daemons(0)
#' }
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

#' Launch configuration for HPC schedulers
#'
#' @description
#' Describes daemons to be submitted as jobs to a cluster's batch scheduler, for
#' [launch_remote()] or `daemons(remote =)`. With `sbatch` (Slurm), `qsub` (SGE, or PBS with
#' `scheduler = "pbs"`) or `bsub` (LSF), the `n` daemons of a launch go in one job array.
#' Any other submit command is accepted as well: it is given a job script on its standard
#' input, once for each daemon.
#'
#' @param command the submit command, `"sbatch"` by default. For `"sbatch"`, `"qsub"` and
#'   `"bsub"` (or when `scheduler` is given), libmirai writes the job array script and runs that
#'   scheduler's own submit command, found on the PATH. Anything else (`srun` with its options,
#'   a site's wrapper script) is a command line run by `/bin/sh` with the job script on its
#'   standard input, as R's mirai does it.
#' @param options the job script's lines before the daemon, as one character string with one
#'   line each: scheduler directives written in full (`"#SBATCH --mem=8G"`, `"#$ -l h_rt=2:00:00"`,
#'   `"#PBS -l walltime=02:00:00"`, `"#BSUB -W 2:00"`), and shell commands run before the daemon
#'   starts (`"module load R"`). For the known schedulers a line beginning with `-`, such as
#'   `"--mem=8G"`, becomes a directive with the scheduler's prefix. Leading spaces and empty
#'   lines are dropped. `""` (the default) for none.
#' @param rscript how to run Rscript on the compute nodes: `"Rscript"` (the default) if on their
#'   PATH, a full path (the usual way to choose an R installation), or several words.
#' @param scheduler the scheduler whose job array syntax to use: `"slurm"`, `"sge"`, `"pbs"` or
#'   `"lsf"`. With `NULL` (the default) it follows from `command`: `sbatch` Slurm, `qsub` SGE,
#'   `bsub` LSF, none for other commands. Give `"pbs"` for PBS's `qsub`.
#'
#' @return A list with the elements of R's mirai: `command` (`"/bin/sh"`), `args` (the job
#'   script around the daemon's `"."`), `rscript` and `quote`; and of this package: `type`
#'   (`"cluster"`), `submit` (the submit command), `options` (the lines, one element each) and
#'   `scheduler` (libmirai's number for it, or `NULL`). Use it as `remote`.
#'
#' @details
#' With a scheduler libmirai knows (`scheduler`, or `sbatch`, `qsub`, `bsub` as `command`),
#' each job reads the session's secret from a file of its own that only you can read (in a
#' private directory under `~/.mirai`, which the compute nodes must see) and deletes it before
#' the daemon starts: the secret is in neither the job script nor the environment the
#' scheduler stores. Another submit command passes the secret on in its environment, which
#' schedulers keep with the job. For a job array submitted by libmirai, `daemons(0)`
#' cancels what is left of it (`scancel`, `qdel` or `bkill`). The launch does not wait for the
#' daemons: they connect when the scheduler starts the jobs, which [status()] shows.
#'
#' @seealso [launch_remote()], [host_url()] for a URL the compute nodes can reach,
#'   [remote_config()] for other launchers.
#'
#' @examples
#' cluster_config(
#'   command = "sbatch",
#'   options = "#SBATCH --partition=short
#'              #SBATCH --mem=8G
#'              module load openssl",
#'   rscript = "/opt/R/4.4.1/bin/Rscript"
#' )
#' cluster_config("qsub", "#$ -l h_rt=2:00:00")
#' cluster_config("qsub", "#PBS -l walltime=02:00:00", scheduler = "pbs")
#' cluster_config("bsub", "#BSUB -W 2:00")
#' cluster_config("srun --partition=short")
#'
#' \dontrun{
#' daemons(50, url = host_url()[1], remote = cluster_config(options = "#SBATCH --mem=2G"))
#' status()
#' daemons(0)
#' }
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

#' @rdname launch_local
#' @param remote a launch configuration: from [remote_config()] (the default, which launches
#'   nothing and only returns the commands), [ssh_config()], [cluster_config()] or
#'   [http_config()].
#' @usage NULL
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
  } else if (identical(remote$type, "ssh")) {
    # Another ssh program (a full path, a wrapper): run as `command <options> <host> <daemon>`,
    # the secret in its environment, which reaches the remote only if the command passes it on.
    if (isTRUE(remote$tunnel)) stop("ssh_config(tunnel = TRUE) needs command = \"ssh\" (libmirai's SSH launcher)")
    for (args in remote$args) {
      words <- c(strsplit(args[1L], " ", fixed = TRUE)[[1L]], args[-1L])
      .Call(rmirai_launch_remote, p$host, remote$command, words, TRUE, argv, 1L)
    }
  } else if (identical(remote$type, "cluster") && !is.null(remote$scheduler)) {
    profile$jobs <- c(profile$jobs, .Call(rmirai_launch_cluster, p$host, remote$scheduler, remote$options, remote$submit, argv, as.integer(n)))
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
  # Launched: the commands (which carry the secret) are not printed unless asked for.
  invisible(commands)
}

#' @rdname launch_local
#' @param x a `miraiLaunchCmd`, as returned by `launch_remote()`.
#' @usage NULL
print.miraiLaunchCmd <- function(x, ...) {
  for (i in seq_along(x)) cat(sprintf("[%d]\n%s\n\n", i, x[i]))
  invisible(x)
}

#' Launch configuration for HTTP APIs
#'
#' @description
#' Describes daemons to be started by requests to an HTTP API that runs processes, such as a
#' job launcher, for [launch_remote()] or `daemons(remote =)`. The defaults fit the job
#' launcher of Posit Workbench, used from a Workbench session.
#'
#' @param url the API's URL, or a function returning it, called at each launch. The default
#'   is Workbench's `launch_job` endpoint at the server in the environment variable
#'   `RS_SERVER_ADDRESS`. `https://` (the server verified against the system's CA bundle, or
#'   the file in the environment variable `SSL_CERT_FILE`), or plain `http://` to this machine
#'   only (a loopback address), since the requests carry credentials and the secret.
#' @param method the HTTP method, `"POST"` by default.
#' @param headers a named character vector of request headers, or a function returning one.
#'   The default sends a JSON content type and the Workbench session's cookie (the environment
#'   variable `RS_SESSION_RPC_COOKIE`).
#' @param data the request body, a character string with `%s` where the daemon's R call goes
#'   (escaped for JSON) and `%e` where the environment the API should give the daemon goes (a
#'   JSON array of `{"name": ..., "value": ...}`, the shape of a Workbench job's
#'   `environment`), or a function returning such a string, called with `...`. `%e` is needed
#'   when the profile authenticates daemons (the default). The default makes a Workbench
#'   `launch_job` request.
#' @param ... arguments for `data` when it is a function. The default one takes `rscript`
#'   (`"Rscript"`), `job_name` (`"mirai_daemon"`), `cluster`, `resource_profile`, `cpus`,
#'   `memory` (in MB) and `image`.
#' @param cookie a character string sent as the `Cookie` header, or a function returning one;
#'   `NULL` (the default) for none.
#' @param token a character string sent as `Authorization: Bearer <token>`, or a function
#'   returning one; `NULL` (the default) for none.
#'
#' @return A list with `type = "http"` and the settings, to be used as `remote`. With it,
#'   [launch_remote()] makes one request for each daemon and returns, invisibly, a list of the
#'   responses: each `list(status, data)`, or an `errorValue` when no answer came (requests
#'   give up after 5 seconds).
#'
#' @details
#' Each field that is a function is called when the daemons are launched, so tokens and
#' cookies can be read at that time. The API is expected to run the call it is sent as
#' `Rscript -e <call>`, with the environment in `%e`. Since the processes it starts do not
#' inherit this session's environment, `MIRAI_SECRET` travels in `%e`, never in the call, which
#' APIs store and show; a `data` without `%e` is refused unless the profile was set with
#' `daemons(auth = FALSE)`. For a `tls+tcp://` URL the call includes the certificate daemons
#' should trust (which is public).
#'
#' With the Workbench default and no `cluster`, or no `resource_profile` (nor `cpus` or
#' `memory`), the first cluster and resource profile Workbench lists are used; reading that
#' list needs the jsonlite package.
#'
#' @seealso [launch_remote()], [remote_config()].
#'
#' @examples
#' cfg <- http_config(
#'   url = "https://launcher.example.org:8443/jobs",
#'   method = "POST",
#'   headers = c(`Content-Type` = "application/json"),
#'   data = '{"exe": "Rscript", "args": ["-e", "%s"], "environment": %e}',
#'   token = function() Sys.getenv("LAUNCHER_TOKEN")
#' )
#' cfg$type
#'
#' \dontrun{
#' daemons(url = host_url()[1])
#' launch_remote(2, remote = cfg)
#'
#' # From a Posit Workbench session:
#' launch_remote(2, remote = http_config(cluster = "Kubernetes", resource_profile = "small"))
#' daemons(0)
#' }
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
    secret <- .Call(rmirai_secret, p$host)
    if (!is.null(secret) && !grepl("%e", data, fixed = TRUE)) {
      stop("`data` has no %e for the daemon's environment (e.g. \"environment\": %e): the secret ",
           "would have to travel in the call, which the API stores; add %e, or use daemons(auth = FALSE)")
    }
    # %e first: the call inserted next may hold any text.
    body <- sub("%e", api_environment(secret), data, fixed = TRUE)
    body <- sub("%s", json_escape(daemon_call(p$url, p, embed_ca = TRUE)), body, fixed = TRUE)
    responses[[i]] <- http_request(field(remote$url), remote$method, headers, body)
  }
  invisible(responses)
}

# The daemon's environment for an API that sets it on the process it starts (`%e`): a JSON
# array of {"name", "value"}, as a Workbench job's `environment`.
api_environment <- function(secret) {
  if (is.null(secret)) "[]" else sprintf("[{\"name\": \"MIRAI_SECRET\", \"value\": \"%s\"}]", secret)
}

json_escape <- function(x) gsub("\n", "\\n", gsub("\"", "\\\"", gsub("\\", "\\\\", x, fixed = TRUE), fixed = TRUE), fixed = TRUE)

# An HTTP request through libmirai (https://, or http:// to loopback; 5 s timeout):
# list(status, data), or an errorValue when there is no answer.
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
                 "\"exe\":\"%s\",\"args\":[\"-e\",\"{.libPaths(c(%s));%%s}\"],\"environment\":%%e,%s}}}"),
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
