#' mirai: asynchronous evaluation in persistent R daemons, on libmirai
#'
#' @description
#' This package offers R the interface of the mirai package (version 2.7.1) with a different
#' engine underneath: libmirai, written in Rust and reached through its C interface, takes the
#' place of nanonext and NNG. A call to [mirai()] hands an expression to a daemon, a background R
#' process that stays up between tasks, and returns straight away; the value can be collected
#' once the daemon is done. Daemons run on this machine, or on other machines reached over SSH,
#' through an HPC scheduler or through an HTTP API, and every daemon must authenticate before it
#' is given work.
#'
#' @section Main functions:
#' - [daemons()] sets up daemons for a compute profile; `daemons(0)` resets the profile again.
#' - [mirai()] evaluates an expression asynchronously; `m[]` waits for the value.
#' - [mirai_map()] applies a function to each element of a list or vector, or to each row of a
#'   data frame or matrix; `mp[]` collects the results, and [.flat], [.progress] and [.stop]
#'   change how.
#' - [everywhere()] prepares every daemon (packages, options, shared objects).
#' - [status()] and [info()] report on a profile; [unresolved()], [race_mirai()] and
#'   [stop_mirai()] check, race and cancel tasks.
#' - [launch_local()] and [launch_remote()] start more daemons, the latter with a configuration
#'   from [ssh_config()], [cluster_config()], [http_config()] or [remote_config()]; each daemon
#'   runs [daemon()].
#' - [with_daemons()] and [local_daemons()] switch between compute profiles.
#' - [make_cluster()] gives the `parallel` package a cluster made of daemons.
#'
#' A guided tour, including remote daemons, promises, Shiny and TLS, is in the vignette:
#' `vignette("mirai", package = "mirai")`.
#'
#' @section Authentication:
#' Each R session holds a secret in its environment variable `MIRAI_SECRET`, and the hosts of
#' the session accept a daemon only once it has answered an HMAC challenge made with that
#' secret, so the secret itself never crosses the network. Daemons started by this session and
#' any process it launches inherit the secret, the commands [launch_remote()] returns carry it,
#' and `daemons(auth = FALSE)` switches the check off for one profile on a trusted network.
#'
#' @seealso [daemons()] and [mirai()] to begin with.
#' @aliases NULL mirai-package
#' @keywords internal
"_PACKAGE"
