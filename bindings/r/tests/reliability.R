# Tasks lost with a daemon that died: daemons(retry =) runs them again elsewhere, mirai(.retry =)
# overrides it per task, and a task that keeps killing daemons is given up (errorValue 18).
# Run: Rscript bindings/r/tests/reliability.R
library(mirai)
tests_dir <- dirname(normalizePath(sub("^--file=", "", grep("^--file=", commandArgs(FALSE), value = TRUE)[1L])))
source(file.path(tests_dir, "harness.R"))

# Kills the daemon evaluating it the first time (a flag file says whether it has), then returns 42.
first_time_kills <- function(flag) {
  if (!file.exists(flag)) {
    file.create(flag)
    tools::pskill(Sys.getpid(), tools::SIGKILL)
  }
  42
}

daemons(2, retry = 2)
flag <- tempfile()
m <- mirai(first_time_kills(flag), first_time_kills = first_time_kills, flag = flag)
check("retried after its daemon was killed", identical(m[], 42))
check("the killer ran once", file.exists(flag))

flag <- tempfile()
m <- mirai(first_time_kills(flag), first_time_kills = first_time_kills, flag = flag, .retry = 0)
check(".retry = 0 overrides the profile: errorValue 19", identical(unclass(m[]), 19L))
daemons(0)

daemons(4, retry = 5)
m <- mirai(tools::pskill(Sys.getpid(), tools::SIGKILL))
check("a task that kills every daemon it meets is quarantined: errorValue 18", identical(unclass(m[]), 18L))
check("quarantine stopped it at 3 daemons", {
  t0 <- Sys.time()
  while (status()$connections != 1L && difftime(Sys.time(), t0, units = "secs") < 20) Sys.sleep(0.05)
  status()$connections == 1L
})
check("the daemon left still serves", identical(mirai(1 + 1)[], 2))
daemons(0)

daemons(1)
flag <- tempfile()
m <- mirai(first_time_kills(flag), first_time_kills = first_time_kills, flag = flag)
check("without retry (R's mirai), a task lost with its daemon is errorValue 19", identical(unclass(m[]), 19L))
daemons(0)

# A task that catches every interrupt and carries on: stop_mirai() resolves it at once, and the
# daemon, which never stops it, is dropped and ended after the grace period.
daemons(2, cancel_grace = 1)
pids <- unlist(collect_mirai(everywhere(Sys.getpid())))
m <- mirai(repeat tryCatch(Sys.sleep(0.05), interrupt = function(e) NULL))
Sys.sleep(0.5)
stopped_at <- Sys.time()
stop_mirai(m)
check("a cancelled task resolves to errorValue 20 at once", identical(unclass(m$data), 20L))
check("the daemon that ignored the interrupt is dropped", {
  while (status()$connections != 1L && difftime(Sys.time(), stopped_at, units = "secs") < 20) Sys.sleep(0.05)
  status()$connections == 1L
})
check("not before its grace period", difftime(Sys.time(), stopped_at, units = "secs") >= 0.9)
check("and its process was ended", {
  alive <- function(pid) tryCatch(tools::pskill(pid, 0L), error = function(e) FALSE)
  t0 <- Sys.time()
  while (sum(vapply(pids, alive, logical(1))) != 1L && difftime(Sys.time(), t0, units = "secs") < 10) Sys.sleep(0.05)
  sum(vapply(pids, alive, logical(1))) == 1L
})
check("the other daemon still serves", identical(mirai(1 + 1)[], 2))
# One that stops when told keeps its daemon.
m <- mirai(Sys.sleep(60))
Sys.sleep(0.3)
stop_mirai(m)
Sys.sleep(2)
check("a daemon that stops in time is kept", status()$connections == 1L)
daemons(0)

# A daemon that goes silent (SIGSTOP: a suspended job, a frozen machine) is dropped after the
# peer timeout, and its task resolves to errorValue 19 instead of waiting for it.
daemons(1, heartbeat = 0.1, peer_timeout = 0.5)
pid <- mirai(Sys.getpid())[]
m <- mirai(Sys.sleep(30))
Sys.sleep(0.3)
tools::pskill(pid, tools::SIGSTOP)
stopped_at <- Sys.time()
check("a stopped daemon's task resolves to errorValue 19", identical(unclass(m[]), 19L))
waited <- as.numeric(difftime(Sys.time(), stopped_at, units = "secs"))
# The timeout counts from the last heartbeat heard, which may precede the SIGSTOP by up to one
# interval (0.1 s), so 0.4 s is the earliest correct drop; 0.35 leaves room for clock granularity.
check(sprintf("after the peer timeout (%.2f s)", waited), waited >= 0.35 && waited < 10)
check("and the daemon is dropped", status()$connections == 0L)
tools::pskill(pid, tools::SIGKILL)
daemons(0)
check("daemons(peer_timeout = 0.2, heartbeat = 0.1) is refused (three heartbeats at least)",
      inherits(tryCatch(daemons(1, heartbeat = 0.1, peer_timeout = 0.2), error = identity), "error"))
check("daemons(heartbeat = NULL, peer_timeout = 5) is refused",
      inherits(tryCatch(daemons(1, heartbeat = NULL, peer_timeout = 5), error = identity), "error"))
daemons(1, heartbeat = NULL)
check("daemons(heartbeat = NULL) runs without liveness checks", identical(mirai(1 + 1)[], 2))
daemons(0)

check("daemons(cancel_grace = 0) is refused",
      inherits(tryCatch(daemons(1, cancel_grace = 0), error = identity), "error"))
check("daemons(cancel_grace = 'a') is refused",
      inherits(tryCatch(daemons(1, cancel_grace = "a"), error = identity), "error"))

check("daemons(retry = -1) is refused", inherits(tryCatch(daemons(1, retry = -1), error = identity), "error"))
check("daemons(retry = NA) is refused", inherits(tryCatch(daemons(1, retry = NA), error = identity), "error"))
check("mirai(.retry = 'a') is refused", inherits(tryCatch(mirai(1, .retry = "a"), error = identity), "error"))
check("no profile was left behind", is.null(nextget("url")))

finish("reliability")
