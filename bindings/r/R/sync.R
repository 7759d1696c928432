# Synchronous compute profiles (`daemons(sync = TRUE)`): each mirai is evaluated in this process,
# by the daemon runtime itself dialing the profile's host, before `mirai()` returns. That keeps
# every semantic of a daemon (serialization, cleanup, RNG streams, everywhere) and lets
# `browser()` work inside tasks.

# Runs queued tasks of profile `p` in this process, one daemon connection each. The "daemon"
# sees the profile's own global environment (what `everywhere` left there), swapped in for the
# user's for the duration.
run_sync <- function(p, n = 1L) {
  user <- swap_globals(p$globals)
  on.exit(p$globals <- swap_globals(user))
  # A queued task goes to a daemon the moment it connects; one that is gone already (a timeout
  # shorter than the dial) leaves the daemon idle, so it gives up after a second rather than
  # wait forever (libmirai's loop is not interruptible from R). autoexit = NA: no signal, no redial.
  for (i in seq_len(n)) {
    serve(p$url, autoexit = NA, cleanup = TRUE, output = TRUE, maxtasks = 1, idletime = 1000, secret = p$secret)
  }
}

# Moves the global environment's contents into a new environment and `incoming`'s contents into
# the global environment; returns the former.
swap_globals <- function(incoming) {
  out <- new.env(parent = emptyenv())
  names <- ls(.GlobalEnv, all.names = TRUE)
  if (length(names)) {
    list2env(mget(names, envir = .GlobalEnv), envir = out)
    rm(list = names, envir = .GlobalEnv)
  }
  list2env(as.list.environment(incoming, all.names = TRUE), envir = .GlobalEnv)
  out
}
